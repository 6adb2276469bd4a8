"""``vaanet prepare``: decode a data set of video files once into the caches that training reads.

Input layout (as VE-8 and Ekman-6 are distributed): ``<root>/<Class>/<video file>``; class folders
match the canonical class names case-insensitively, one folder per class (two spellings of one class are
refused, naming both).

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
from .containers import check_container
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
    missing class folders, files that are not videos by extension) and notes. Raises ValueError when two
    folders are one class (``Anger/`` and ``anger/``): which one to use, or whether they hold copies, is
    for the researcher to say."""
    root = Path(os.path.abspath(root))  # absolute: the index must not depend on the working directory
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist; expected <root>/<Class>/<video files>")
    canonical = {c.lower(): c for c in classes}
    matches: dict[str, list[Path]] = {}
    unknown = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name.lower() in canonical:
            matches.setdefault(canonical[d.name.lower()], []).append(d)
        elif not d.name.startswith("."):
            unknown.append(d.name)
    twice = {c: ds for c, ds in matches.items() if len(ds) > 1}
    if twice:  # one would replace the other and drop its videos; merged, copies would count twice (or leak)
        named = "; ".join(f"{c}: {', '.join(repr(d.name) for d in ds)}" for c, ds in twice.items())
        raise ValueError(
            f"more than one folder under {root} is the same class (class folders match case-insensitively): "
            f"{named}; merge each class's videos into one folder (or rename a folder that holds another class)"
        )
    folders = {c: ds[0] for c, ds in matches.items()}
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
    return _decode_video(path, short_side, fps)[:3]


def _frame_time(frame, n: int, rate: float) -> float:
    """A decoded video frame's presentation time in seconds (its index / rate where it has none): the
    clock of :func:`decode_video`, whose time 0 is the first frame's."""
    return float(frame.time) if frame.time is not None else n / rate


def video_start(path: str) -> float | None:
    """The file time (seconds) of the first video frame, time 0 of :func:`decode_video`'s frames; None
    when the file has no (decodable) video stream."""
    with av.open(path) as container:
        if not container.streams.video:
            return None
        stream = container.streams.video[0]
        native = float(stream.average_rate or stream.guessed_rate or 25.0)
        for frame in container.decode(stream):
            return _frame_time(frame, 0, native)
    return None


def _decode_video(path: str, short_side: int, fps: float | None) -> tuple[np.ndarray, float, float, float]:
    """:func:`decode_video`, plus the file time of its time 0 (the first frame's), which the audio is
    aligned to."""
    eps = 1e-4  # seconds: a frame presented at a tick (up to timestamp rounding) is shown at it
    with av.open(path) as container:
        check_container(container, path)
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
            t = _frame_time(frame, n, native)
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
    return np.stack(frames), out_fps, len(frames) / out_fps, t0


GAP_TOLERANCE_S = 0.005  # audio timestamps this far (or 2 ticks of the stream's time base) from the samples' count


def decode_audio(path: str, sample_rate: int, start: float | None = None) -> np.ndarray | None:
    """Mono float32 samples at ``sample_rate``, or None when the file has no audio track (or none of it
    overlaps the video). Sample 0 is the sound at file time ``start`` (seconds; default: the first video
    frame's, time 0 of :func:`decode_video`), so the MFCC frames are on the video frames' clock: see
    :func:`_decode_audio`."""
    return _decode_audio(path, sample_rate, start)[0]


def _decode_audio(path: str, sample_rate: int, start: float | None = None) -> tuple[np.ndarray | None, dict]:
    """:func:`decode_audio`, and what was done to put the samples on the video's clock: ``audio_offset``
    (seconds the audio stream starts after ``start``; negative: before. Padded with that much silence at
    the front, or that much trimmed off; None: no audio or no timestamps), ``audio_gaps`` and
    ``audio_gap_s`` (forward jumps in the audio timestamps, filled with silence so the sound after them
    stays at its time) and ``audio_overlap_s`` (audio whose timestamps went back over sound already placed:
    dropped). Timestamps within :data:`GAP_TOLERANCE_S` of the running sample count are rounding, not gaps."""
    info = dict(audio_offset=None, audio_gaps=0, audio_gap_s=0.0, audio_overlap_s=0.0)
    if start is None:
        start = video_start(path)
    with av.open(path) as container:
        if not container.streams.audio:
            return None, info
        stream = container.streams.audio[0]
        tick = float(stream.time_base) if stream.time_base else 0.0
        tol = int(round(max(GAP_TOLERANCE_S, 2 * tick) * sample_rate))
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks: list[np.ndarray] = []
        first = pos = None  # sample positions relative to ``start``: of the first chunk, after the last one
        gaps, gap, overlap = 0, 0, 0

        def place(resampled) -> None:
            nonlocal start, first, pos, gaps, gap, overlap
            for f in resampled:
                x = f.to_ndarray().reshape(-1)
                t = None if f.pts is None or f.time is None else float(f.time)
                if start is None and first is None:  # no video: the audio's own clock
                    start = t
                at = None if t is None or start is None else int(round((t - start) * sample_rate))
                if first is None:
                    first = pos = at if at is not None else 0
                    info["audio_offset"] = None if at is None else round(at / sample_rate, 6)
                elif at is not None and at - pos > tol:  # a gap in the timestamps: silence
                    chunks.append(np.zeros(at - pos, np.float32))
                    gaps, gap, pos = gaps + 1, gap + at - pos, at
                elif at is not None and pos - at > tol:  # timestamps went back: keep what was placed first
                    cut = min(pos - at, x.size)
                    x, overlap = x[cut:], overlap + cut
                chunks.append(x)
                pos += x.size

        for frame in container.decode(stream):
            place(resampler.resample(frame))
        place(resampler.resample(None))
    info.update(audio_gaps=gaps, audio_gap_s=round(gap / sample_rate, 6),
                audio_overlap_s=round(overlap / sample_rate, 6))
    if not chunks:
        return None, info
    samples = np.concatenate(chunks)
    if first > 0:  # the audio starts after the video: silence until it does
        samples = np.concatenate([np.zeros(first, np.float32), samples])
    elif first < 0:  # the audio starts before the video: the part before time 0 is not on the frames' clock
        samples = samples[-first:]
    return (samples if samples.size else None), info


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
    if "audio_offset" not in row and row.get("has_audio") and _audio_shift(job.path) != 0:
        return None  # an older version's cache, its audio not shifted to the video's start: prepared again
    return {**row, "path": job.path}  # the data root may have moved since


def _audio_shift(path: str, sample_rate: int = SAMPLE_RATE) -> int | None:
    """Samples (at ``sample_rate``) between the first video frame and the first audio frame, which
    versions before the alignment ignored; None where that cannot be read (the file is prepared again)."""
    try:
        t0 = video_start(path)
        with av.open(path) as container:
            frame = next(container.decode(container.streams.audio[0]), None) if container.streams.audio else None
        if t0 is None or frame is None or frame.time is None:
            return 0 if frame is None or frame.time is None else None
        return int(round((float(frame.time) - t0) * sample_rate))
    except Exception:  # noqa: BLE001 - unreadable now: prepared again, where the error is reported
        return None


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
    frames, fps, duration, t0 = _decode_video(job.path, cfg.short_side, cfg.fps)
    samples, alignment = _decode_audio(job.path, cfg.sample_rate, start=t0)  # on the frames' clock
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
