"""``vaanet prepare``: decode a data set of video files once into the caches that training reads.

Input layout (as VE-8 and Ekman-6 are distributed): ``<root>/<Class>/<video file>``; class folders
match the canonical class names case-insensitively.

Per video, under ``<out>/videos/<video_id>/``:
* ``frames.npy`` - uint8 [T, H, W, 3], short side resized to ``short_side``, at ``fps`` (native when
  None). Storage format chosen by measurement (``benchmarks/data_throughput.py``): a memory-mapped
  uint8 array serves t snippets of k frames as t contiguous slices with no decoding at all, several
  times faster than decoding JPEG folders (the reference code's format) or re-encoded video. The cost
  is disk: T x H x W x 3 bytes (about 5.9 GB per hour of 25 fps video at 128 x 171); lower ``fps`` to
  trade temporal resolution for space.
* ``mfcc.npy`` - float32 [frames, 32] of the whole soundtrack (see :mod:`vaanet.data.mfcc`); zeros of
  the video's duration when there is no audio track (``has_audio`` false).
* ``meta.json`` - written last; its presence marks the video as done, so a killed run resumes.
Every file is written under a temporary name and renamed, so no half-written file is ever read.

``<out>/index.csv`` lists every prepared video; ``<out>/failures.csv`` every video or class folder
that could not be used, with the reason.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
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
    frames: str = "raw"  # frame storage format (vaanet.data.frames); `vaanet prepare` defaults to jpeg

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


def discover(root: str | Path, classes: tuple[str, ...]) -> tuple[list[Job], list[dict], list[str]]:
    """Find ``<root>/<Class>/<video>``. Returns jobs, failures (empty/missing class folders, files
    that are not videos by extension) and notes (duplicate names made class-qualified)."""
    root = Path(root)
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
    stems = Counter(_safe(p.stem) for _, p in found)
    dups = sorted(s for s, n in stems.items() if n > 1)
    if dups:
        notes.append(f"{len(dups)} video names occur under more than one class and were kept as "
                     f"class-qualified ids (<Class>__<name>): {dups[:5]}")
    jobs = []
    for c, p in found:
        vid = _safe(p.stem)
        if stems[vid] > 1:
            vid = f"{c}__{vid}"
        jobs.append(Job(vid, c, classes.index(c), str(p)))
    return jobs, failures, notes


def _save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.save(f, array)
    tmp.replace(path)


def _target_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    if width <= height:
        return short_side, max(1, int(round(height * short_side / width)))
    return max(1, int(round(width * short_side / height))), short_side


def decode_video(path: str, short_side: int, fps: float | None) -> tuple[np.ndarray, float, float]:
    """Frames uint8 [T, H, W, 3] resized to the short side, the frame rate they are at, and duration."""
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        native = float(stream.average_rate or stream.guessed_rate or 25.0)
        out_fps = fps or native
        frames, next_t, size = [], 0.0, None
        for frame in container.decode(stream):
            if fps is not None:  # keep the first frame at or after each output tick
                t = float(frame.time) if frame.time is not None else len(frames) / native
                if t + 1e-6 < next_t:
                    continue
                next_t += 1.0 / out_fps
            if size is None:
                size = _target_size(frame.width, frame.height, short_side)
            frames.append(frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray())
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


def prepare_video(job: Job, out: Path, cfg: PrepareConfig) -> dict:
    """Decode one video into its cache folder; returns its index row. Raises on unusable input."""
    folder = out / "videos" / job.video_id
    meta_file = folder / "meta.json"
    if meta_file.exists():  # finished by an earlier (possibly killed) run
        return json.loads(meta_file.read_text())
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
    tmp.write_text(json.dumps(row))
    tmp.replace(meta_file)
    return row


def _run(args):
    job, out, cfg = args
    try:
        return job, prepare_video(job, out, cfg), None
    except Exception as e:  # noqa: BLE001 - any decoder error is a per-video failure
        shutil.rmtree(out / "videos" / job.video_id, ignore_errors=True)
        return job, None, f"{type(e).__name__}: {e}".strip()[:300]


def _progress(iterable, total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        return iterable
    return tqdm(iterable, total=total, desc="prepare", unit="video", disable=not sys.stderr.isatty())


def prepare(root: str | Path, out: str | Path, cfg: PrepareConfig = PrepareConfig(), log=print) -> pd.DataFrame:
    """Prepare every video under ``root`` into ``out``; returns the index. Raises NothingPrepared
    when not a single video could be prepared."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / MANIFEST_FILE
    settings = {k: v for k, v in asdict(cfg).items() if k != "workers"}
    if manifest.exists():
        old = {"frames": "raw", **json.loads(manifest.read_text())}  # no format recorded = raw
        if old != settings:
            raise ValueError(
                f"{out} was prepared with other settings {old}; use another output folder or delete it "
                f"to prepare with {settings}"
            )
    manifest.write_text(json.dumps(settings, indent=1))
    classes = DATASET_CLASSES[cfg.dataset]
    jobs, failures, notes = discover(root, classes)
    rows = []
    args = [(j, out, cfg) for j in jobs]
    if cfg.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(cfg.workers, len(jobs)), mp_context=get_context("spawn")) as pool:
            results = _progress(as_completed([pool.submit(_run, a) for a in args]), len(args))
            results = [f.result() for f in results]
    else:
        results = [_run(a) for a in _progress(args, len(args))]
    for job, row, error in results:
        if error:
            failures.append(dict(video_id=job.video_id, class_name=job.class_name, path=job.path, reason=error))
        elif cfg.drop_no_audio and not row["has_audio"]:
            failures.append(dict(video_id=job.video_id, class_name=job.class_name, path=job.path,
                                 reason="no audio track (dropped: drop_no_audio)"))
        else:
            rows.append(row)
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS).sort_values(["label", "video_id"]).reset_index(drop=True)
    pd.DataFrame(failures, columns=["video_id", "class_name", "path", "reason"]).to_csv(out / FAILURES_FILE, index=False)
    tmp = out / (INDEX_FILE + ".tmp")
    index.to_csv(tmp, index=False)
    tmp.replace(out / INDEX_FILE)
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
    return index


def load_index(cache: str | Path) -> pd.DataFrame:
    path = Path(cache) / INDEX_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `vaanet prepare --root <videos> --out {cache}` first")
    return pd.read_csv(path, dtype={"video_id": str})
