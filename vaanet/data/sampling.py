"""Pure sampling functions: which frames, which crop, which MFCC frames. No I/O, no global RNG."""
from __future__ import annotations

import numpy as np


def segment_bounds(n_frames: int, t: int) -> np.ndarray:
    """[t, 2] (start, end) frame bounds of t equal segments."""
    edges = (np.arange(t + 1) * n_frames) // t
    return np.stack([edges[:-1], edges[1:]], axis=1)


def snippet_indices(n_frames: int, t: int, k: int, rng: np.random.Generator | None = None,
                    offset: float = 0.5) -> np.ndarray:
    """[t, k] frame indices: one snippet of k successive frames per equal segment.

    Training (``rng`` given): a uniformly random snippet start inside each segment.
    Evaluation (``rng`` None): the snippet at relative ``offset`` of each segment (0.5 = centre).
    A segment shorter than k borrows the frames that follow it; a video shorter than k frames is
    loop-padded (indices wrap around), as in the reference code.
    """
    if n_frames < 1:
        raise ValueError("a video needs at least one frame")
    bounds = segment_bounds(n_frames, t)
    slack = np.maximum(bounds[:, 1] - bounds[:, 0] - k, 0)
    if rng is None:
        starts = bounds[:, 0] + np.round(offset * slack).astype(np.int64)
    else:
        starts = bounds[:, 0] + rng.integers(0, slack + 1)
    if n_frames >= k:
        starts = np.minimum(starts, n_frames - k)
    return (starts[:, None] + np.arange(k)[None, :]) % n_frames


def crop_origin(height: int, width: int, size: int, rng: np.random.Generator | None = None,
                position: float = 0.5) -> tuple[int, int]:
    """(y0, x0) of a size x size crop: random (training) or at relative ``position`` along both axes."""
    if height < size or width < size:
        raise ValueError(f"frames of {height}x{width} are smaller than the {size}x{size} crop: prepare the "
                         f"data with --short-side >= {size}")
    if rng is None:
        return int(round(position * (height - size))), int(round(position * (width - size)))
    return int(rng.integers(0, height - size + 1)), int(rng.integers(0, width - size + 1))


def aligned_audio_indices(n_mfcc_frames: int, centres_s: np.ndarray, mfcc_fps: float, length: int) -> np.ndarray:
    """[t, length] MFCC frame indices: a window centred on each visual snippet's centre time.
    Indices wrap around (the soundtrack is tiled) where the window leaves the recording."""
    centre = np.round(np.asarray(centres_s) * mfcc_fps).astype(np.int64)
    return (centre[:, None] - length // 2 + np.arange(length)[None, :]) % max(n_mfcc_frames, 1)


def reference_audio_indices(n_mfcc_frames: int, t: int, length: int) -> np.ndarray:
    """The reference code's tiling: the MFCC sequence tiled (short audio) or truncated (long audio) to
    t * length frames and cut into t consecutive pieces, not aligned with the visual segments."""
    return (np.arange(t * length) % max(n_mfcc_frames, 1)).reshape(t, length)
