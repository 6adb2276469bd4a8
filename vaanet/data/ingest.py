"""``vaanet prepare``: decode a data set of video files once into the caches that training reads.

Input layout (as VE-8 and Ekman-6 are distributed): ``<root>/<Class>/<video file>``; class folders
match the canonical class names case-insensitively, one folder per class (two spellings of one class are
refused, naming both: :mod:`vaanet.data.discovery`). Decoding is :mod:`vaanet.data.decode`'s.

Per video, under ``<out>/videos/<video_id>/``:
* ``frames.jpegs`` (default) or ``frames.npy`` - the frames, uint8 [T, H, W, 3], upright (the
  container's display matrix applied, as ffmpeg does: phone videos are stored sideways with a rotation
  flag), short side resized to ``short_side``, at a constant ``fps`` (the stream's average rate when
  None) sampled by presentation time: frame t shows what the video shows at t / fps seconds, also for
  variable-frame-rate files. The storage format (:mod:`vaanet.data.frames`, ``PrepareConfig.frames``,
  recorded in the manifest) was chosen by ``benchmarks/data_throughput.py``: ``jpeg`` (packed JPEG
  frames, quality 90) takes ~9-13x less disk than ``raw`` (a memory-mapped array, ~5.9 GB per hour of
  25 fps video at 128 x 171) and loads at ~60 % of its speed per core.
* ``mfcc.npy`` - float32 [frames, 32] of the whole soundtrack (see :mod:`vaanet.data.mfcc`); zeros of
  the video's duration when there is no audio track (``has_audio`` false). On the frames' clock: MFCC
  frame m is the sound at m * hop / sample_rate seconds after the first video frame, also where the audio
  stream starts later or earlier than the video (``-itsoffset``, edited clips: padded with silence or
  trimmed) or has timestamp gaps (filled with silence); ``meta.json`` records the shift and gaps.
* ``meta.json`` - written last; its presence marks the video as done, so a killed run resumes.
Every file is written under a temporary name and renamed, so no half-written file is ever read.

``<out>/index.csv`` lists every prepared video (source ``path`` absolute; cache files relative to
``<out>``, resolved by :func:`load_index`, so the cache folder can be moved); ``<out>/failures.csv``
every video or class folder that could not be used, with the reason. Ctrl-C stops the workers and
writes the index of the videos done so far; the same command resumes. Workers die with the parent.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pandas as pd

from ..classes import DATASET_CLASSES
from .decode import audio_shift, decode_audio_aligned, decode_video_and_start, source_fingerprint
from .discovery import Job, discover
from .frames import check_format, write_frames
from .mfcc import HOP, N_FFT, N_MFCC, SAMPLE_RATE, mfcc

INDEX_FILE, FAILURES_FILE, MANIFEST_FILE = "index.csv", "failures.csv", "prepare.json"
INDEX_COLUMNS = ["video_id", "class_name", "label", "path", "duration", "fps", "frames", "height", "width",
                 "has_audio", "mfcc_frames", "frames_file", "mfcc_file"]


@dataclass
class PrepareConfig:
    dataset: str = "ve8"
    short_side: int = 128
    fps: float | None = None  # None keeps the native frame rate
    n_mfcc: int = N_MFCC
    n_fft: int = N_FFT
    hop: int = HOP
    sample_rate: int = SAMPLE_RATE
    drop_no_audio: bool = False
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    frames: str = "jpeg"  # frame storage format (vaanet.data.frames; jpeg: ~10x less disk, chosen by measurement)

    def __post_init__(self):
        check_format(self.frames, "PrepareConfig.frames")
        if self.dataset not in DATASET_CLASSES:
            raise ValueError(f"dataset must be one of {sorted(DATASET_CLASSES)}, got {self.dataset!r}")
        if self.short_side < 8:
            raise ValueError(f"short_side must be >= 8, got {self.short_side}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"fps must be > 0 or None, got {self.fps}")


class NothingPrepared(RuntimeError):
    pass


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.save(f, array)
    tmp.replace(path)


def _finished(job: Job, out: Path) -> dict | None:
    """The index row of a video whose cache folder is complete and was made from this very file, else None."""
    folder = out / "videos" / job.video_id
    if not all((folder / f).exists() for f in ("meta.json", "mfcc.npy")):
        return None
    row = json.loads((folder / "meta.json").read_text())
    if not (out / row.get("frames_file", "-")).is_file():
        return None
    if (row.get("class_name"), Path(row.get("path", "")).name) != (job.class_name, Path(job.path).name):
        return None
    source = row.pop("source", None)  # absent in caches of older versions: those are trusted by name
    if source is not None and source != source_fingerprint(job.path):
        return None  # another file under the same name: prepared again
    if "audio_offset" not in row and row.get("has_audio") and audio_shift(job.path) != 0:
        return None  # an older version's cache, its audio not shifted to the video's start: prepared again
    return {**row, "path": job.path}  # the data root may have moved since



def prepare_video(job: Job, out: Path, cfg: PrepareConfig) -> dict:
    """Decode one video into its cache folder; returns its index row. Raises on unusable input."""
    folder = out / "videos" / job.video_id
    meta_file = folder / "meta.json"
    row = _finished(job, out)
    if row is not None:  # finished by an earlier (possibly killed) run
        return row
    if folder.exists():  # partial, or another video's (ids of an older version collided): redo
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    frames, fps, duration, t0 = decode_video_and_start(job.path, cfg.short_side, cfg.fps)
    samples, alignment = decode_audio_aligned(job.path, cfg.sample_rate, start=t0)  # on the frames' clock
    has_audio = samples is not None and bool(np.any(samples))
    if has_audio:
        coeffs = mfcc(samples, cfg.sample_rate, cfg.n_mfcc, cfg.n_fft, cfg.hop)
    else:
        n = int(duration * cfg.sample_rate / cfg.hop) + 1
        coeffs = np.zeros((n, cfg.n_mfcc), np.float32)
    frames_name = write_frames(folder, frames, cfg.frames)
    _save(folder / "mfcc.npy", coeffs.astype(np.float32))
    row = dict(
        video_id=job.video_id, class_name=job.class_name, label=job.label, path=job.path,
        duration=round(duration, 4), fps=round(fps, 4), frames=int(frames.shape[0]),
        height=int(frames.shape[1]), width=int(frames.shape[2]), has_audio=has_audio,
        mfcc_frames=int(coeffs.shape[0]), frames_file=f"videos/{job.video_id}/{frames_name}",
        mfcc_file=f"videos/{job.video_id}/mfcc.npy",
    )
    tmp = meta_file.with_name("meta.json.tmp")
    tmp.write_text(json.dumps({**row, "source": source_fingerprint(job.path), **alignment}))
    tmp.replace(meta_file)
    return {**row, **alignment}


def _run(args):
    job, out, cfg = args
    try:
        return job, prepare_video(job, out, cfg), None
    except Exception as e:  # noqa: BLE001 - any decoder error is a per-video failure
        shutil.rmtree(out / "videos" / job.video_id, ignore_errors=True)
        return job, None, f"{type(e).__name__}: {e}".strip()[:300]


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _init_worker(parent: int) -> None:
    """Workers ignore Ctrl-C and SIGTERM, which reach the whole process group (the parent stops them and
    writes the index), and die with the parent, also on kill -9, instead of decoding on as orphans."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    else:  # no parent-death signal: poll
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def _progress(iterable, total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, total=total, desc="prepare", unit="video", disable=not sys.stderr.isatty())


def _results(args: list, workers: int):
    """Yields ``_run`` results as they complete. On Ctrl-C (KeyboardInterrupt in the parent) the
    pending videos are cancelled and the running ones killed at once, not finished."""
    if workers <= 1 or len(args) <= 1:
        yield from (_run(a) for a in args)
        return
    pool = ProcessPoolExecutor(min(workers, len(args)), mp_context=get_context("spawn"),
                               initializer=_init_worker, initargs=(os.getpid(),))
    try:
        yield from (f.result() for f in as_completed([pool.submit(_run, a) for a in args]))
    except BaseException:
        # before shutdown, which forgets the processes; Python < 3.14 has no public kill_workers()
        if hasattr(pool, "kill_workers"):
            pool.kill_workers()
        else:
            for proc in list((pool._processes or {}).values()):
                proc.kill()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def prepare(root: str | Path, out: str | Path, cfg: PrepareConfig = PrepareConfig(), log=print) -> pd.DataFrame:
    """Prepare every video under ``root`` into ``out``; returns the index. Raises NothingPrepared
    when not a single video could be prepared. On Ctrl-C writes the index of the videos done and
    re-raises KeyboardInterrupt; running it again resumes."""
    out = Path(out)
    classes = DATASET_CLASSES[cfg.dataset]
    jobs, failures, notes = discover(root, classes)  # before creating anything: a wrong root leaves no trace
    manifest = out / MANIFEST_FILE
    settings = {k: v for k, v in asdict(cfg).items() if k != "workers"}
    if manifest.exists():
        old = {"frames": "raw", **json.loads(manifest.read_text())}  # no format recorded = raw
        if old != settings:
            raise ValueError(
                f"{out} was prepared with other settings {old}; use another output folder or delete it "
                f"to prepare with {settings}"
            )
    out.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps(settings, indent=1))
    rows, finished = [], set()

    def collect(job: Job, row: dict | None, error: str | None) -> None:
        finished.add(job.video_id)
        if error:
            failures.append(dict(video_id=job.video_id, class_name=job.class_name, path=job.path, reason=error))
        elif cfg.drop_no_audio and not row["has_audio"]:
            failures.append(dict(video_id=job.video_id, class_name=job.class_name, path=job.path,
                                 reason="no audio track (dropped: drop_no_audio)"))
        else:
            rows.append(row)

    interrupted = False
    results = _results([(j, out, cfg) for j in jobs], cfg.workers)
    try:
        for result in _progress(results, len(jobs)):
            collect(*result)
    except KeyboardInterrupt:
        interrupted = True
        results.close()  # kills the workers, if Ctrl-C came while this loop (not the pool) was running
        for job in (j for j in jobs if j.video_id not in finished):
            row = _finished(job, out)  # completed on disk, its result not yet received
            if row is not None:
                collect(job, row, None)
            else:  # cut off mid-way: not done, and no partial folder left behind
                shutil.rmtree(out / "videos" / job.video_id, ignore_errors=True)
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS).sort_values(["label", "video_id"]).reset_index(drop=True)
    pd.DataFrame(failures, columns=["video_id", "class_name", "path", "reason"]).to_csv(out / FAILURES_FILE, index=False)
    tmp = out / (INDEX_FILE + ".tmp")
    index.to_csv(tmp, index=False)
    tmp.replace(out / INDEX_FILE)
    if interrupted:
        log(f"interrupted: {out / INDEX_FILE} lists the {len(index)} of {len(jobs)} videos done; "
            f"run the same command again to prepare the rest")
        raise KeyboardInterrupt
    notes += _alignment_notes(rows)
    n_audio = int((~index["has_audio"].astype(bool)).sum()) if len(index) else 0
    per_class = index["class_name"].value_counts().reindex(classes, fill_value=0)
    log(f"prepared {len(index)} videos into {out} ({n_audio} without audio track, zero MFCC); "
        f"{len(failures)} failures -> {out / FAILURES_FILE}")
    log("per class: " + ", ".join(f"{c} {n}" for c, n in per_class.items()))
    for f in failures[:10]:
        log(f"  failed: {f['path']}: {f['reason']}")
    for n in notes:
        log(f"  note: {n}")
    if index.empty:
        raise NothingPrepared(f"no video under {root} could be prepared; see {out / FAILURES_FILE}")
    return _resolve(index, out)


def _alignment_notes(rows: list[dict]) -> list[str]:
    """What was done to put soundtracks on their video's clock, said (the details are in each meta.json)."""
    notes = []
    shifted = [(r["video_id"], r["audio_offset"]) for r in rows if r.get("audio_offset")]
    if shifted:
        late = max(shifted, key=lambda v: abs(v[1]))
        notes.append(f"{len(shifted)} videos' audio starts later or earlier than their first frame (up to "
                     f"{late[1]:+.3f} s, {late[0]}): padded with silence or trimmed, so the MFCC frames are on "
                     f"the video's clock (audio_offset in their meta.json)")
    gapped = [r["video_id"] for r in rows if r.get("audio_gaps")]
    if gapped:
        notes.append(f"{len(gapped)} videos have gaps in their audio timestamps, filled with silence so the "
                     f"sound after them stays at its time (audio_gaps, audio_gap_s in meta.json): {gapped[:5]}")
    overlapped = [r["video_id"] for r in rows if r.get("audio_overlap_s")]
    if overlapped:
        notes.append(f"{len(overlapped)} videos have audio timestamps that go back; the overlapping audio was "
                     f"dropped (audio_overlap_s in meta.json): {overlapped[:5]}")
    return notes


def _resolve(index: pd.DataFrame, cache: Path) -> pd.DataFrame:
    for col in ("frames_file", "mfcc_file"):
        index[col] = [str(cache.absolute() / f) for f in index[col]]
    return index


def load_index(cache: str | Path) -> pd.DataFrame:
    """The index with its cache files as absolute paths (stored relative to ``cache``, so a cache
    folder that was moved or renamed still loads)."""
    cache = Path(cache)
    path = cache / INDEX_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `vaanet prepare --root <videos> --out {cache}` first")
    index = pd.read_csv(path, dtype={"video_id": str})
    dups = sorted(set(index.loc[index["video_id"].duplicated(), "video_id"]))
    if dups:
        raise ValueError(f"{path} lists video ids more than once (two videos shared one cache folder): {dups[:5]}; "
                         f"prepare again into a new folder with this version, which gives unique ids")
    index = _resolve(index, cache)
    missing = [f for f in index["frames_file"] if not os.path.exists(f)]
    if missing:
        raise FileNotFoundError(f"{path}: {len(missing)} cache files are missing (first: {missing[0]}); "
                                f"run `vaanet prepare` again with --out {cache} to redo them")
    return index
