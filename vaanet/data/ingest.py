"""``vaanet prepare``: decode a data set of video files once into the caches that training reads.

Input layout (as VE-8 and Ekman-6 are distributed): ``<root>/<Class>/<video file>``; class folders
match the canonical class names case-insensitively.

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
  the video's duration when there is no audio track (``has_audio`` false).
* ``meta.json`` - written last; its presence marks the video as done, so a killed run resumes.
Every file is written under a temporary name and renamed, so no half-written file is ever read.

``<out>/index.csv`` lists every prepared video (source ``path`` absolute; cache files relative to
``<out>``, resolved by :func:`load_index`, so the cache folder can be moved); ``<out>/failures.csv``
every video or class folder that could not be used, with the reason. Ctrl-C stops the workers and
writes the index of the videos done so far; the same command resumes. Workers die with the parent.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import av
import numpy as np
import pandas as pd

from ..losses import DATASET_CLASSES
from .frames import check_format, write_frames
from .mfcc import HOP, N_FFT, N_MFCC, SAMPLE_RATE, mfcc

VIDEO_EXTENSIONS = {".mp4", ".flv", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp"}
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


@dataclass
class Job:
    video_id: str
    class_name: str
    label: int
    path: str


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _clashes(ids: list[str]) -> list[bool]:
    # case-insensitive: an id names a folder, and 'Clip' and 'clip' are one folder on macOS/Windows
    counts = Counter(i.lower() for i in ids)
    return [counts[i.lower()] > 1 for i in ids]


def _video_ids(found: list[tuple[str, Path]], root: Path) -> tuple[list[str], list[str]]:
    """Unique ids, a pure function of the tree (so resumed runs and any worker count agree): the file
    name; qualified by class (<Class>__<name>) when the name occurs more than once; plus a hash of the
    path inside ``root`` when still ambiguous (``clip.mp4`` + ``clip.avi``, ``a b.mp4`` + ``a_b.mp4``).
    Returns the ids and notes."""
    ids = [_safe(p.stem) for _, p in found]
    qualified = _clashes(ids)
    ids = [f"{c}__{i}" if q else i for (c, _), i, q in zip(found, ids, qualified)]
    hashed = _clashes(ids)
    ids = [f"{i}__{hashlib.sha1(p.relative_to(root).as_posix().encode()).hexdigest()[:8]}" if h else i
           for (_, p), i, h in zip(found, ids, hashed)]
    if any(_clashes(ids)):  # a hash collision: not expected in practice, never silently merged
        raise RuntimeError(f"could not make unique video ids under {root}: {sorted(set(ids))[:5]}; rename the files")
    notes = []
    if any(qualified):
        names = sorted({_safe(p.stem) for (_, p), q in zip(found, qualified) if q})
        notes.append(f"{len(names)} video names occur more than once and were kept as class-qualified ids "
                     f"(<Class>__<name>): {names[:5]}")
    if any(hashed):
        notes.append(f"{sum(hashed)} videos share a name within a class (other extension or characters) "
                     f"and got a path hash in their id: {[i for i, h in zip(ids, hashed) if h][:4]}")
    return ids, notes


def discover(root: str | Path, classes: tuple[str, ...]) -> tuple[list[Job], list[dict], list[str]]:
    """Find ``<root>/<Class>/<video>``. Returns jobs (absolute paths, unique ids), failures (empty or
    missing class folders, files that are not videos by extension) and notes."""
    root = Path(os.path.abspath(root))  # absolute: the index must not depend on the working directory
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist; expected <root>/<Class>/<video files>")
    canonical = {c.lower(): c for c in classes}
    folders: dict[str, Path] = {}
    unknown = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name.lower() in canonical:
            folders[canonical[d.name.lower()]] = d
        elif not d.name.startswith("."):
            unknown.append(d.name)
    if not folders:
        raise FileNotFoundError(
            f"no class folders under {root}: expected folders named like {list(classes)} "
            f"(case-insensitive){'; found ' + str(unknown) if unknown else ''}"
        )
    failures, notes, found = [], [], []
    if unknown:
        notes.append(f"ignored folders that are not classes of this data set: {unknown}")
    for c in classes:
        if c not in folders:
            failures.append(dict(video_id="", class_name=c, path=str(root / c), reason="class folder missing"))
            continue
        files = sorted(p for p in folders[c].rglob("*") if p.is_file() and not p.name.startswith("."))
        videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
        for p in files:
            if p.suffix.lower() not in VIDEO_EXTENSIONS:
                failures.append(dict(video_id="", class_name=c, path=str(p),
                                     reason=f"not a video file (extension {p.suffix or 'none'})"))
        if not videos:
            failures.append(dict(video_id="", class_name=c, path=str(folders[c]), reason="class folder is empty"))
        found += [(c, p) for p in videos]
    ids, id_notes = _video_ids(found, root)
    jobs = [Job(vid, c, classes.index(c), str(p)) for vid, (c, p) in zip(ids, found)]
    return jobs, failures, notes + id_notes


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.save(f, array)
    tmp.replace(path)


def _target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    if width <= height:
        return short_side, max(1, int(round(height * short_side / width)))
    return max(1, int(round(width * short_side / height))), short_side


def _display_matrix(frame: av.VideoFrame) -> np.ndarray | None:
    """The frame's 3x3 display matrix (FFmpeg layout, 16.16 fixed point), or None. FFmpeg >= 7 (the
    PyAV >= 14 wheels) attaches the container's matrix to every decoded frame."""
    for sd in getattr(frame, "side_data", ()):
        if "DISPLAYMATRIX" in str(sd.type):
            return np.frombuffer(bytes(sd), "<i4")
    return None


def _orient(image: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    """Apply a display matrix as ffmpeg's autorotate does (checked against the ffmpeg CLI for all
    eight rotations/flips): display pixel (x', y') = (a x + c y, b x + d y) + translation."""
    if matrix is None:
        return image
    a, b, c, d = (float(matrix[i]) for i in (0, 1, 3, 4))
    sign = lambda v: -1 if v < 0 else 1  # noqa: E731
    if abs(b) + abs(c) <= 1e-3 * (abs(a) + abs(d)):
        return image[::sign(d), ::sign(a)]
    if abs(a) + abs(d) <= 1e-3 * (abs(b) + abs(c)):
        return image.transpose(1, 0, 2)[::sign(b), ::sign(c)]
    raise ValueError(f"display matrix rotates by {np.degrees(np.arctan2(b, a)):.0f} degrees, not a multiple "
                     f"of 90; re-encode the video upright (ffmpeg -i in.mp4 out.mp4 applies it)")


def decode_video(path: str, short_side: int, fps: float | None) -> tuple[np.ndarray, float, float]:
    """Frames uint8 [T, H, W, 3], upright and resized to the short side, the constant frame rate they
    are at, and duration. Frame t is the video frame on screen at t / fps seconds after the first
    frame (the latest one presented at or before it): frames are repeated over gaps and skipped when
    denser, so times stay true on variable-frame-rate files (counting frames drifted by seconds)."""
    eps = 1e-4  # seconds: a frame presented at a tick (up to timestamp rounding) is shown at it
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        native = float(stream.average_rate or stream.guessed_rate or 25.0)
        out_fps = fps or native
        frames: list[np.ndarray] = []
        prev, prev_t, prev_dur, t0, size = None, 0.0, 1.0 / native, None, None

        def show_prev_until(t: float) -> None:  # prev is on screen at every tick before t
            image = None
            while len(frames) / out_fps < t - eps:
                if image is None:  # converted only when shown at least once
                    image = _orient(prev.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray(),
                                    matrix)
                frames.append(image)

        for n, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else n / native
            t0 = t if t0 is None else t0
            t = max(t - t0, prev_t)  # presentation times never go back
            if prev is None:
                matrix = _display_matrix(frame)
                swap = matrix is not None and abs(float(matrix[0])) < abs(float(matrix[1]))  # 90/270: w <-> h
                w, h = (frame.height, frame.width) if swap else (frame.width, frame.height)
                size = _target_size(w, h, short_side)
                size = (size[1], size[0]) if swap else size  # reformat works on the stored orientation
            else:
                show_prev_until(t)
            dur = getattr(frame, "duration", None)
            prev, prev_t = frame, t
            prev_dur = float(dur * frame.time_base) if dur and frame.time_base else 1.0 / native
        if prev is not None:
            show_prev_until(prev_t + prev_dur)
    if not frames:
        raise ValueError("no decodable video frames")
    return np.stack(frames), out_fps, len(frames) / out_fps


def decode_audio(path: str, sample_rate: int) -> np.ndarray | None:
    """Mono float32 samples at ``sample_rate``, or None when the file has no audio track."""
    with av.open(path) as container:
        if not container.streams.audio:
            return None
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks = []
        for frame in container.decode(container.streams.audio[0]):
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
        chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    if not chunks:
        return None
    samples = np.concatenate(chunks)
    return samples if samples.size else None


def source_fingerprint(path: str | Path, chunk: int = 1 << 16) -> str:
    """The source file's size and its first and last 64 KiB, hashed: another video under the same name (a
    regenerated set, a replaced file) is told apart in milliseconds, and a copied or moved data root is not."""
    size = os.path.getsize(path)
    h = hashlib.sha1(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(chunk))
        if size > chunk:
            f.seek(max(size - chunk, chunk))
            h.update(f.read())
    return h.hexdigest()[:16]


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
    frames, fps, duration = decode_video(job.path, cfg.short_side, cfg.fps)
    samples = decode_audio(job.path, cfg.sample_rate)
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
    tmp.write_text(json.dumps({**row, "source": source_fingerprint(job.path)}))
    tmp.replace(meta_file)
    return row


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
    """Workers ignore Ctrl-C (the parent stops them and writes the index) and die with the parent,
    also on kill -9, instead of decoding on as orphans."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
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
