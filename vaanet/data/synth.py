"""A planted-evidence synthetic emotion-video set, written as real mp4 files (H.264 + AAC), with ground truth.

It exists so that every path of vaanet (decode, resize, MFCC, splits, training, attention scoring)
runs on real video files anywhere, and so that the paper's attention claims are testable: the label
can be read only from planted evidence, and uniform pooling dilutes that evidence.

* Class evidence = a solid patch inside a box, in its full colour only in the ``key_segments`` of the
  video's ``segments`` equal segments. Its colour names the class's *pair* (two classes of the same
  polarity share a colour: a polarity-consistent pair), so vision alone can reach at most 1/2.
* Everything else carries no class information: the background (grey, random tint, noise), moving
  squares in a second, less saturated palette drawn independently of the label, and in the other
  segments the box shows a random pair colour (``confuser``: at full strength by default, so a non-key
  segment looks like a key segment with a wrong colour). Uniform temporal pooling mixes the key segment
  with label-free look-alikes; uniform spatial pooling mixes the patch with the background and the
  label-free squares.
* Key segments are marked by a cue that carries no class information (the background brightens by
  ``key_flash``; with ``confuser < 1`` the patch is also at full strength only there), so temporal
  attention can find them without knowing the class.
* Optional (off by default; the set of ``benchmarks/attention_recovery.py --preset spatial``, docs/attention.md):
  ``distractor_colours="pairs"`` draws the moving squares in random pair colours, ``distractor_motion=0`` makes
  them static (placed clear of the box), ``distractor_size`` sets the squares' side as a share of the box's,
  ``confuser_same`` shows one label-free confuser colour in all other segments, ``exposure`` scales each video's
  whole frame by a gain drawn from a range and ``key_exposure`` the key segments by a further factor (a key cue
  relative to the video's own brightness).
* Audio decides within the pair: during the key segments the soundtrack carries a low or a high tone
  (first or second class of the pair, ``TONES``) in noise. Audio alone names only which half of the
  classes (at most 2/C accuracy, above chance 1/C); with the visual evidence it names the class.

The sidecar ``synth_truth.csv`` records per video the key segments (indices and seconds), the evidence
box as fractions of width and height, the pair and the audio bit, so attention can be scored against the
truth (nothing in training reads it).
"""
from __future__ import annotations

import ast
import colorsys
import csv
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from dataclasses import asdict, dataclass
from pathlib import Path

import av
import numpy as np

from ..classes import DATASET_CLASSES, POLARITY, POSITIVE

TRUTH_FILE = "synth_truth.csv"
SETTINGS_FILE = "synth_config.txt"  # the SynthConfig a set was made with (repr of its dict)
SAMPLE_RATE = 44100
TONES = (440.0, 1760.0)  # Hz: first / second class of a pair


@dataclass
class SynthConfig:
    dataset: str = "ve8"  # class list: ve8 (8 classes) or e6 (6 classes)
    videos_per_class: int = 24
    duration: float = 4.0  # seconds; each video draws from [0.8, 1.2] x duration
    fps: int = 8
    resolutions: tuple[tuple[int, int], ...] = ((80, 60), (96, 72))  # (width, height), drawn per video
    segments: int = 4  # the video is cut into this many equal segments ...
    key_segments: int = 1  # ... of which this many carry the evidence
    patch: float = 0.3  # evidence box side, as a fraction of the frame's short side
    box_region: tuple[float, float] = (0.64, 0.86)  # the box lies in this centred share of (width, height)
    distractors: int = 3  # moving label-free solid squares outside the box
    distractor_colours: str = "between"  # "between": a second, less saturated palette; "pairs": random pair colours
    distractor_motion: float = 1.0  # the squares' speed x this; 0: static squares, placed clear of the box
    distractor_size: tuple[float, float] = (0.7, 1.0)  # each square's side, as a fraction of the box's, from this range
    key_flash: float = 90.0  # background brightening in key segments (0-255), the label-free key cue
    exposure: tuple[float, float] = (1.0, 1.0)  # each video's whole frame x a gain drawn from this range ...
    key_exposure: float = 1.0  # ... and x this in the key segments (box and squares too: a key cue the box shows)
    confuser: float = 1.0  # other segments: a random pair colour in the box at this strength (0 = none)
    confuser_same: bool = False  # other segments all show one random pair colour (label-free: drawn from all
    # pairs): the majority colour misleads uniform temporal pooling whenever it is not the class's
    no_audio_fraction: float = 0.0
    audio_snr_db: float = 6.0  # tone power over noise power in key segments
    noise: float = 6.0  # std of per-pixel noise (0-255 scale)
    seed: int = 0

    def __post_init__(self):
        if self.dataset not in DATASET_CLASSES:
            raise ValueError(f"dataset must be one of {sorted(DATASET_CLASSES)}, got {self.dataset!r}")
        if not 1 <= self.key_segments < self.segments:
            raise ValueError(f"need 1 <= key_segments < segments, got {self.key_segments} of {self.segments}")
        if self.videos_per_class < 1 or self.fps < 1 or self.duration <= 0:
            raise ValueError("videos_per_class, fps and duration must be positive")
        if not 0 < self.patch < 1:
            raise ValueError(f"patch must be in (0, 1), got {self.patch}")
        if self.distractor_colours not in ("between", "pairs"):
            raise ValueError(f"distractor_colours must be 'between' or 'pairs', got {self.distractor_colours!r}")
        if not 0 < self.distractor_size[0] <= self.distractor_size[1]:
            raise ValueError(f"need 0 < distractor_size[0] <= distractor_size[1] (fractions of the box's side), got "
                             f"{self.distractor_size}")
        if not 0 < self.exposure[0] <= self.exposure[1] or not self.key_exposure > 0:
            raise ValueError(f"need 0 < exposure[0] <= exposure[1] and key_exposure > 0, got {self.exposure}, "
                             f"{self.key_exposure}")
        if not self.distractor_motion >= 0:
            raise ValueError(f"distractor_motion must be >= 0, got {self.distractor_motion}")


def class_pairs(classes: tuple[str, ...]) -> list[tuple[str, str]]:
    """Polarity-consistent pairs, in class-index order: negatives paired among themselves, positives too
    (an odd one out is paired with itself)."""
    pairs = []
    for positive in (False, True):
        same = [c for c in classes if (POLARITY[c] == POSITIVE) == positive]
        pairs += [tuple(same[i:i + 2]) if i + 1 < len(same) else (same[i], same[i]) for i in range(0, len(same), 2)]
    return pairs


def palette(n: int, distractor: bool = False) -> np.ndarray:
    """n well-separated saturated colours [n, 3] (0-255), one per pair; ``distractor=True`` gives the
    label-free squares' colours: the hues half-way between, less saturated."""
    hues = (np.arange(n) + (0.5 if distractor else 0.0)) / n
    sat = 0.45 if distractor else 0.9
    return np.array([[255 * v for v in colorsys.hsv_to_rgb(h, sat, 0.95)] for h in hues], np.float32)


def class_code(name: str, classes: tuple[str, ...]) -> tuple[int, int]:
    """(pair index, audio bit) of a class: the colour names the pair, the tone the member."""
    for p, pair in enumerate(class_pairs(classes)):
        if name in pair:
            return p, pair.index(name)
    raise ValueError(name)


def _render(rng, cfg: SynthConfig, colours, pair, n_frames, width, height, seg_of_frame, keys, box):
    """The video's frames [n_frames, height, width, 3] (uint8): class pair ``pair``, key segments ``keys``, the
    evidence box ``box`` = (x0, y0, side) in pixels; everything else as ``cfg`` says."""
    x0, y0, side = box
    motion, confuser, exposure = cfg.distractor_motion, cfg.confuser, tuple(cfg.exposure)
    base = rng.uniform(90.0, 150.0) + rng.uniform(-10, 10, 3).astype(np.float32)  # greyish, lightly tinted
    background = np.zeros((height, width, 3), np.float32) + base
    others = palette(len(colours), distractor=True) if cfg.distractor_colours == "between" else colours
    squares = [(rng.uniform(0, width), rng.uniform(0, height), rng.uniform(-2, 2), rng.uniform(-2, 2),
                int(round(side * rng.uniform(*cfg.distractor_size))), others[int(rng.integers(len(others)))])
               for _ in range(cfg.distractors)]
    if motion != 1.0:  # the speeds scaled (no new draw: the default set's draws are unchanged)
        squares = [(sx, sy, vx * motion, vy * motion, sz, c) for sx, sy, vx, vy, sz, c in squares]
    if motion == 0.0:  # static squares look like the box: place each clear of it (a gap of half its side; the
        # new draws happen only here, so the default set's draws are unchanged)
        placed = []
        for sx, sy, vx, vy, sz, c in squares:
            for _ in range(100):
                if (sx + sz + side / 2 <= x0 or sx >= x0 + side + side / 2 or sy + sz + side / 2 <= y0
                        or sy >= y0 + side + side / 2) and sx + sz <= width and sy + sz <= height:
                    break
                sx, sy = rng.uniform(0, width - sz), rng.uniform(0, height - sz)
            placed.append((sx, sy, vx, vy, sz, c))
        squares = placed
    # the box: the class pair's colour in key segments; elsewhere a random pair colour (label-free),
    # blended with the background at strength ``confuser``
    grey = background[y0, x0]
    n_seg = int(seg_of_frame.max()) + 1
    # confuser_same: one label-free colour for all other segments (drawn only then: the default set's draws are
    # unchanged); otherwise one per segment
    same = int(rng.integers(len(colours))) if cfg.confuser_same else None
    patch_colour = {s: colours[pair] for s in keys}
    for s in (s for s in range(n_seg) if s not in keys):  # a draw per other segment, in order, unless confuser_same
        c = same if same is not None else int(rng.integers(len(colours)))
        patch_colour[s] = confuser * colours[c] + (1 - confuser) * grey
    # the whole frame's gain: drawn only when it varies, so that the default set's draws are unchanged
    gain = float(rng.uniform(*exposure)) if exposure != (1.0, 1.0) else 1.0
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for f in range(n_frames):
        s = int(seg_of_frame[f])
        img = background + (cfg.key_flash if s in keys else 0.0)
        for (sx, sy, vx, vy, sz, c) in squares:
            cx, cy = int(sx + vx * f) % width, int(sy + vy * f) % height
            img[cy:cy + sz, cx:cx + sz] = c
        img[y0:y0 + side, x0:x0 + side] = patch_colour[s]
        if gain != 1.0 or cfg.key_exposure != 1.0:
            img *= gain * (cfg.key_exposure if s in keys else 1.0)
        img += rng.normal(0, cfg.noise, img.shape).astype(np.float32)
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
    pair, bit = class_code(name, classes)
    colours = palette(len(class_pairs(classes)))
    vid = f"{name.lower()}_{v:03d}"
    width, height = cfg.resolutions[int(rng.integers(len(cfg.resolutions)))]
    duration = float(cfg.duration * rng.uniform(0.8, 1.2))
    n_frames = max(1, int(round(duration * cfg.fps)))
    duration = n_frames / cfg.fps
    seg_of_frame = np.minimum((np.arange(n_frames) * cfg.segments) // n_frames, cfg.segments - 1)
    keys = set(int(k) for k in rng.choice(cfg.segments, cfg.key_segments, replace=False))
    side = int(round(min(width, height) * cfg.patch))
    # the box lies inside the centred region of box_region x (width, height): a centre crop sees it
    rw, rh = int(width * cfg.box_region[0]), int(height * cfg.box_region[1])
    lx, ly = (width - rw) // 2, (height - rh) // 2
    x0 = lx + int(rng.integers(0, max(rw - side, 0) + 1))
    y0 = ly + int(rng.integers(0, max(rh - side, 0) + 1))
    frames = _render(rng, cfg, colours, pair, n_frames, width, height, seg_of_frame, keys, (x0, y0, side))
    has_audio = bool(rng.uniform() >= cfg.no_audio_fraction)
    audio = None
    if has_audio:
        n_samples = int(duration * SAMPLE_RATE)
        seg_of_sample = np.minimum((np.arange(n_samples) * cfg.segments) // n_samples, cfg.segments - 1)
        audio = _audio(rng, n_samples, seg_of_sample, keys, TONES[bit], cfg.audio_snr_db)
    write_mp4(root / name / f"{vid}.mp4", frames, cfg.fps, audio)
    seg_len = duration / cfg.segments
    return dict(
        video_id=vid, class_name=name, label=ci, file=f"{name}/{vid}.mp4", duration=round(duration, 4),
        fps=cfg.fps, width=width, height=height, has_audio=has_audio, segments=cfg.segments,
        key_segments=";".join(str(k) for k in sorted(keys)),
        key_times=";".join(f"{k * seg_len:.3f}-{(k + 1) * seg_len:.3f}" for k in sorted(keys)),
        box_x0=round(x0 / width, 5), box_y0=round(y0 / height, 5),
        box_x1=round((x0 + side) / width, 5), box_y1=round((y0 + side) / height, 5),
        pair=pair, audio_bit=bit,
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
    (root / SETTINGS_FILE).write_text(repr(asdict(cfg)) + "\n")
    return truth


# Options removed after vaanet 0.1.0 (commit 6ee84a4), with the value that was their default: a set made with one of
# them at that value is the same set as one made now (its draws never depended on it).
REMOVED_OPTIONS = {"box_ring": 0, "ring_flash": 0.0, "background": (90.0, 150.0), "isoluminant": False,
                   "exposure_on": "frame", "segment_flash": 0.0, "flash_all": False, "offset": (0.0, 0.0),
                   "confuser_tint": 0.0, "tint_key_segments": False}


def canonical_settings(text: str) -> str:
    """The text :func:`generate` writes to ``synth_config.txt`` for the settings in ``text``, a
    ``synth_config.txt`` of any vaanet version: a field that an older version did not write gets its default,
    since options are added off by default with the default set's draws unchanged (each is tested so); a removed
    option (``REMOVED_OPTIONS``) at its old default is dropped, since the set's draws never depended on it (at
    another value it stays: that set is not one this version makes). Text that is not a settings dict is
    returned as it is."""
    try:
        made = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text
    if not isinstance(made, dict):
        return text
    made = {k: v for k, v in made.items() if not (k in REMOVED_OPTIONS and _same(v, REMOVED_OPTIONS[k]))}
    return repr({**asdict(SynthConfig()), **made}) + "\n"


def _same(value, default) -> bool:
    """A settings value equals an option's default (tuples and lists alike, as repr/literal_eval keep them)."""
    if isinstance(default, tuple):
        return isinstance(value, (tuple, list)) and len(value) == len(default) and all(
            _same(v, d) for v, d in zip(value, default))
    return type(value) is type(default) and value == default or (
        isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool)
        and value == default)
