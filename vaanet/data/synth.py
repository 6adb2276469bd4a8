"""A synthetic emotion-video set with ground truth, written as real mp4 files (H.264 + AAC).

It exists so that every path of vaanet (decode, resize, MFCC, splits, training, attention scoring)
runs on real video files anywhere, and so that the paper's claims are testable:

* sparse keyframes - the class evidence (a textured patch) is visible only in ``key_segments`` of
  the video's ``segments`` equal-length segments; the other segments show a grey distractor patch
  with the texture of a random class, so averaging over time dilutes the evidence;
* spatial evidence - the patch sits at a random place in the frame (recorded as a box), among
  moving grey squares, so where to look matters;
* polarity - the patch colour is warm for positive and cool for negative classes, and the texture
  picks the class within its polarity: classes of one polarity share a visual trait, so the model
  first learns polarity, then the class (the confusions PCCE penalises are the rarer ones);
* weaker audio - during the key segments the soundtrack carries a tone at a class-specific
  frequency, buried in noise; some videos have no audio track at all.

The sidecar ``synth_truth.csv`` records per video the key segments (indices and seconds) and the
evidence box as fractions of width and height, so attention can be scored against the truth.
"""
from __future__ import annotations

import colorsys
import csv
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from ..losses import DATASET_CLASSES, POLARITY, POSITIVE

TRUTH_FILE = "synth_truth.csv"
TEXTURES = ("hstripes", "vstripes", "checker", "disc")
SAMPLE_RATE = 44100


@dataclass
class SynthConfig:
    dataset: str = "ve8"  # class list: ve8 (8 classes) or e6 (6 classes)
    videos_per_class: int = 20
    duration: float = 4.0  # seconds; each video draws from [0.8, 1.2] x duration
    fps: int = 10
    resolutions: tuple[tuple[int, int], ...] = ((80, 60), (96, 72))  # (width, height), drawn per video
    segments: int = 4  # the video is cut into this many equal segments ...
    key_segments: int = 1  # ... of which this many carry the evidence
    patch: float = 0.45  # evidence side, as a fraction of the frame's short side
    no_audio_fraction: float = 0.2
    audio_snr_db: float = -6.0  # tone power over noise power in key segments
    noise: float = 8.0  # std of per-pixel noise (0-255 scale)
    seed: int = 0

    def __post_init__(self):
        if self.dataset not in DATASET_CLASSES:
            raise ValueError(f"dataset must be one of {sorted(DATASET_CLASSES)}, got {self.dataset!r}")
        if not 1 <= self.key_segments < self.segments:
            raise ValueError(f"need 1 <= key_segments < segments, got {self.key_segments} of {self.segments}")
        if self.videos_per_class < 1 or self.fps < 1 or self.duration <= 0:
            raise ValueError("videos_per_class, fps and duration must be positive")


def class_style(name: str, classes: tuple[str, ...]) -> tuple[tuple[float, float, float], str, float]:
    """(RGB colour 0-255, texture, audio frequency Hz) of a class."""
    positive = POLARITY[name] == POSITIVE
    same = [c for c in classes if (POLARITY[c] == POSITIVE) == positive]
    i = same.index(name)
    hue = (0.95, 0.02, 0.09, 0.16)[i % 4] if positive else (0.45, 0.55, 0.64, 0.74)[i % 4]  # warm vs cool
    rgb = tuple(255 * v for v in colorsys.hsv_to_rgb(hue, 0.85, 0.95))
    freq = 300.0 * 2 ** (classes.index(name) / 2)  # half-octave steps
    return rgb, TEXTURES[i % len(TEXTURES)], freq


def texture(kind: str, size: int) -> np.ndarray:
    """Binary pattern [size, size] in {0, 1}."""
    yy, xx = np.mgrid[0:size, 0:size]
    period = max(4, size // 4)
    if kind == "hstripes":
        return ((yy // (period // 2)) % 2).astype(np.float32)
    if kind == "vstripes":
        return ((xx // (period // 2)) % 2).astype(np.float32)
    if kind == "checker":
        return (((yy // (period // 2)) + (xx // (period // 2))) % 2).astype(np.float32)
    r = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2
    return (r < (size * 0.42) ** 2).astype(np.float32)


def _render(rng, cls_rgb, cls_tex, n_frames, width, height, seg_of_frame, keys, box, noise):
    x0, y0, side = box
    base = rng.uniform(70, 170) + rng.uniform(-15, 15, 3).astype(np.float32)  # greyish, lightly tinted
    grad = np.linspace(-30, 30, width, dtype=np.float32)[None, :, None]
    background = np.clip(base + grad + np.zeros((height, 1, 1), np.float32), 0, 255)
    squares = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-3, 3), rng.uniform(-3, 3),
                int(rng.integers(8, 20)), rng.uniform(60, 200)) for _ in range(3)]
    evidence = texture(cls_tex, side)[..., None]
    distractors = {}
    for s in range(seg_of_frame.max() + 1):
        if s not in keys:
            tex = TEXTURES[int(rng.integers(len(TEXTURES)))]
            distractors[s] = texture(tex, side)[..., None]
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for f in range(n_frames):
        img = background.copy()
        for (sx, sy, vx, vy, sz, g) in squares:
            cx, cy = int(sx + vx * f) % width, int(sy + vy * f) % height
            img[cy:cy + sz, cx:cx + sz] = g
        s = seg_of_frame[f]
        region = img[y0:y0 + side, x0:x0 + side]
        if s in keys:
            colour = np.array(cls_rgb, np.float32)
            region[:] = 0.25 * region + 0.75 * (evidence * colour + (1 - evidence) * colour * 0.35)
        else:
            region[:] = 0.25 * region + 0.75 * (distractors[s] * 150.0 + (1 - distractors[s]) * 60.0)
        img += rng.normal(0, noise, img.shape).astype(np.float32)
        frames[f] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def _audio(rng, n_samples, seg_of_sample, keys, freq, snr_db):
    noise = rng.normal(0, 0.05, n_samples).astype(np.float32)
    t = np.arange(n_samples) / SAMPLE_RATE
    amp = 0.05 * np.sqrt(2) * 10 ** (snr_db / 20)
    tone = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return noise + tone * np.isin(seg_of_sample, list(keys))


def write_mp4(path: Path, frames: np.ndarray, fps: int, audio: np.ndarray | None) -> None:
    """Write uint8 frames [T, H, W, 3] (and optional mono float audio at 44.1 kHz) as H.264/AAC mp4."""
    tmp = path.with_name(path.stem + ".part" + path.suffix)
    with av.open(str(tmp), "w") as out:
        vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height, vs.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "20"}
        aus = None
        if audio is not None:
            aus = out.add_stream("aac", rate=SAMPLE_RATE)
            aus.layout = "mono"
        for img in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(vs.encode())
        if aus is not None:
            step = aus.codec_context.frame_size or 1024
            for pts in range(0, len(audio), step):
                fr = av.AudioFrame.from_ndarray(audio[None, pts:pts + step], format="fltp", layout="mono")
                fr.sample_rate, fr.pts = SAMPLE_RATE, pts
                out.mux(aus.encode(fr))
            out.mux(aus.encode())
    tmp.replace(path)


def _make_video(job: dict) -> dict:
    cfg: SynthConfig = job["cfg"]
    classes = DATASET_CLASSES[cfg.dataset]
    name, v, root = job["name"], job["index"], Path(job["root"])
    ci = classes.index(name)
    rng = np.random.default_rng([cfg.seed, ci, v])  # one stream per video: same files in any order
    rgb, tex, freq = class_style(name, classes)
    vid = f"{name.lower()}_{v:03d}"
    width, height = cfg.resolutions[int(rng.integers(len(cfg.resolutions)))]
    duration = float(cfg.duration * rng.uniform(0.8, 1.2))
    n_frames = max(1, int(round(duration * cfg.fps)))
    duration = n_frames / cfg.fps
    seg_of_frame = np.minimum((np.arange(n_frames) * cfg.segments) // n_frames, cfg.segments - 1)
    keys = set(int(k) for k in rng.choice(cfg.segments, cfg.key_segments, replace=False))
    side = int(round(min(width, height) * cfg.patch))
    x0, y0 = int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1))
    frames = _render(rng, rgb, tex, n_frames, width, height, seg_of_frame, keys, (x0, y0, side), cfg.noise)
    has_audio = bool(rng.uniform() >= cfg.no_audio_fraction)
    audio = None
    if has_audio:
        n_samples = int(duration * SAMPLE_RATE)
        seg_of_sample = np.minimum((np.arange(n_samples) * cfg.segments) // n_samples, cfg.segments - 1)
        audio = _audio(rng, n_samples, seg_of_sample, keys, freq, cfg.audio_snr_db)
    write_mp4(root / name / f"{vid}.mp4", frames, cfg.fps, audio)
    seg_len = duration / cfg.segments
    return dict(
        video_id=vid, class_name=name, label=ci, file=f"{name}/{vid}.mp4", duration=round(duration, 4),
        fps=cfg.fps, width=width, height=height, has_audio=has_audio, segments=cfg.segments,
        key_segments=";".join(str(k) for k in sorted(keys)),
        key_times=";".join(f"{k * seg_len:.3f}-{(k + 1) * seg_len:.3f}" for k in sorted(keys)),
        box_x0=round(x0 / width, 5), box_y0=round(y0 / height, 5),
        box_x1=round((x0 + side) / width, 5), box_y1=round((y0 + side) / height, 5),
    )


def generate(root: str | Path, cfg: SynthConfig = SynthConfig(), workers: int | None = None) -> Path:
    """Write the set under ``root/<Class>/<id>.mp4`` with ``root/synth_truth.csv``; returns the truth file.

    Ekman-6 also gets ``trainlist.txt`` / ``testlist.txt`` (an 'official' half/half split, like E-6's).
    Videos are generated in parallel processes; each has its own random stream, so the output does
    not depend on ``workers``.
    """
    root = Path(root)
    classes = DATASET_CLASSES[cfg.dataset]
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
    jobs = [dict(cfg=cfg, name=n, index=v, root=str(root)) for n in classes for v in range(cfg.videos_per_class)]
    workers = workers or os.cpu_count() or 1
    if workers > 1:
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            rows = list(pool.map(_make_video, jobs, chunksize=4))
    else:
        rows = [_make_video(j) for j in jobs]
    truth = root / TRUTH_FILE
    with truth.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if cfg.dataset == "e6":
        for subset, parity in (("trainlist.txt", 0), ("testlist.txt", 1)):
            lines = [r["file"] for i, r in enumerate(rows) if int(r["video_id"][-3:]) % 2 == parity]
            (root / subset).write_text("\n".join(lines) + "\n")
    (root / "synth_config.txt").write_text(repr(asdict(cfg)) + "\n")
    return truth
