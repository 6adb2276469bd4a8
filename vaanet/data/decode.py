"""Decoding one video file with PyAV: its frames upright and on a constant clock, its soundtrack on the same clock.

:func:`decode_video` gives the frames (uint8 [T, H, W, 3]) as the video shows them: the container's display
matrix applied as ffmpeg's autorotate does, the short side resized, sampled at a constant rate by
presentation time (so variable-frame-rate files keep their times). :func:`decode_audio` gives the mono
samples with sample 0 at the first video frame (:func:`video_start`): a soundtrack that starts later or
earlier is padded with silence or trimmed, timestamp gaps are filled with silence
(:func:`decode_audio_aligned` says what was done). :func:`source_fingerprint` tells one source file from
another under the same name; :func:`audio_shift` reads the offset that caches of older versions ignored.
Used by :mod:`vaanet.data.ingest` (``vaanet prepare``) and :mod:`vaanet.predict`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import av
import numpy as np

from .containers import check_container
from .mfcc import SAMPLE_RATE

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
    return decode_video_and_start(path, short_side, fps)[:3]


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


def decode_video_and_start(path: str, short_side: int, fps: float | None) -> tuple[np.ndarray, float, float, float]:
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
    :func:`decode_audio_aligned`."""
    return decode_audio_aligned(path, sample_rate, start)[0]


def decode_audio_aligned(path: str, sample_rate: int, start: float | None = None) -> tuple[np.ndarray | None, dict]:
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


def audio_shift(path: str, sample_rate: int = SAMPLE_RATE) -> int | None:
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
