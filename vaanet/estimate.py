"""``vaanet estimate --config FILE``: what a configuration costs before you run it.

For one config and a GPU memory size it prints FLOPs per video, the activation memory kept for backward
per video with and without per-segment checkpointing (measured by recording the tensors autograd saves
during a forward pass on PyTorch's meta device: exact sizes, no memory, no compute), the largest
micro-batch that fits, and the GPU-hours to reproduce each of the paper's Tables 1-5 at a stated
sustained throughput (runs x epochs x videos x FLOPs).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .models.complexity import count_complexity
from .models.vaanet import ModelConfig, VAANet

# Data set sizes (paper) and the runs behind each table (VE-8: 10 splits; E-6: 1 official split).
VIDEOS = {"ve8": 1101, "e6": 1637}
TRAIN_SHARE = {"ve8": 2 / 3, "e6": 819 / 1637}
TABLE_RUNS = {  # table -> [(dataset, number of runs)]
    "Table 1 (VE-8, full model)": [("ve8", 10)],
    "Table 2 (E-6, full model)": [("e6", 1)],
    "Table 3 (VE-8, 5 attention presets)": [("ve8", 5 * 10)],
    "Table 4 (E-6, 5 attention presets)": [("e6", 5 * 1)],
    "Table 5 (CE vs PCCE, 2 presets, both sets)": [("ve8", 4 * 10), ("e6", 4 * 1)],
}
# Distinct runs: Table 3 contains Table 1's runs, Table 4 Table 2's; Table 5's PCCE rows are in Tables 3/4.
DISTINCT = [("ve8", 5 * 10 + 2 * 10), ("e6", 5 * 1 + 2 * 1)]


@dataclass
class Estimate:
    gflops_forward: float  # per video
    params: int
    activations_plain: float  # bytes kept for backward per video
    activations_checkpointed: float  # bytes kept per video + one segment's recomputed activations
    static_bytes: float  # weights + gradients + Adam state (fp32)


def _saved_bytes(cfg: ModelConfig, batch: int, audio_frames: int) -> float:
    """Bytes of the tensors autograd saves for backward in one training forward pass (meta device)."""
    total = 0
    seen = set()

    def pack(t):
        nonlocal total
        key = (t.data_ptr() if t.device.type != "meta" else id(t))
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
        return t

    with torch.device("meta"):
        model = VAANet(replace(cfg, visual_weights=None, audio_weights=None)).train()
        visual = torch.empty(batch, cfg.segments, 3, cfg.frames, cfg.crop_size, cfg.crop_size) if cfg.visual else None
        audio = torch.empty(batch, cfg.segments, 1, audio_frames, 32) if cfg.audio else None
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(visual, audio)
    return float(total)


def _saved_per_video(cfg: ModelConfig, audio_frames: int) -> float:
    """Bytes autograd saves per video: the difference between batches of 3 and 2 videos. A batch of one
    cannot be traced in training mode where BatchNorm meets a 1x1 map (small crops: "Expected more than 1
    value per channel when training"); the difference also leaves out the weights saved once per pass
    (counted in the static bytes)."""
    return _saved_bytes(cfg, 3, audio_frames) - _saved_bytes(cfg, 2, audio_frames)


def estimate(cfg: ModelConfig, audio_frames: int = 256) -> Estimate:
    c = count_complexity(cfg, audio_frames=audio_frames)
    plain = _saved_per_video(replace(cfg, checkpoint_segments=False), audio_frames)
    ckpt = _saved_per_video(replace(cfg, checkpoint_segments=True), audio_frames)
    one_segment = 0.0
    if cfg.visual:  # the backbone activations of one segment, alive while it is recomputed
        seg = replace(cfg, segments=1, audio=False, audio_attention=False, checkpoint_segments=False,
                      spatial_attention=False, channel_attention=False, temporal_attention=False)
        one_segment = _saved_per_video(seg, audio_frames)
    return Estimate(c.gflops, c.params, plain, ckpt + one_segment, 16.0 * c.trainable_params)


def largest_micro_batch(per_video: float, static: float, gpu_bytes: float, reserve: float = 0.15) -> int:
    """Videos per forward pass that fit, keeping ``reserve`` of the memory for the allocator and workspace."""
    return max(0, int((gpu_bytes * (1 - reserve) - static) // per_video))


def gpu_hours(gflops_forward: float, epochs: int, sustained_tflops: float) -> dict[str, float]:
    """GPU-hours per table: training = 3x forward FLOPs on the train videos, plus one forward pass over
    the held-out videos (validation every epoch, test once) ~ 1/3 of the videos per epoch."""
    def hours(dataset: str, runs: int) -> float:
        n = VIDEOS[dataset]
        per_epoch = 3 * n * TRAIN_SHARE[dataset] + n * (1 - TRAIN_SHARE[dataset])
        return runs * epochs * per_epoch * gflops_forward * 1e9 / (sustained_tflops * 1e12) / 3600

    out = {table: sum(hours(d, r) for d, r in runs) for table, runs in TABLE_RUNS.items()}
    out["all tables (distinct runs)"] = sum(hours(d, r) for d, r in DISTINCT)
    return out


def report(cfg: ModelConfig, epochs: int, gpu_gb: float, sustained_tflops: float, audio_frames: int = 256) -> str:
    e = estimate(cfg, audio_frames)
    gib = 1024**3
    gpu = gpu_gb * gib
    lines = [
        f"config: depth {cfg.depth} width {cfg.width} preset {cfg.preset or 'custom'}, t={cfg.segments} k={cfg.frames} "
        f"{cfg.crop_size}x{cfg.crop_size}, audio {audio_frames} MFCC frames/segment, style {cfg.attention_style}",
        f"parameters: {e.params / 1e6:.1f} M; weights + grads + Adam (fp32): {e.static_bytes / gib:.2f} GiB",
        f"forward FLOPs per video: {e.gflops_forward:.1f} GFLOPs (training step ~3x: {3 * e.gflops_forward:.1f} GFLOPs)",
        f"activations kept for backward per video (fp32): {e.activations_plain / gib:.2f} GiB plain, "
        f"{e.activations_checkpointed / gib:.2f} GiB with per-segment checkpointing",
        f"largest micro-batch on a {gpu_gb:g} GB GPU (15% reserve): "
        f"{largest_micro_batch(e.activations_plain, e.static_bytes, gpu)} videos plain, "
        f"{largest_micro_batch(e.activations_checkpointed, e.static_bytes, gpu)} with checkpointing "
        f"(bf16 autocast roughly halves the activations); the paper's batch of 32 is reached by accumulation",
        f"GPU time at {sustained_tflops:g} sustained TFLOP/s, {epochs} epochs:",
    ]
    for table, h in gpu_hours(e.gflops_forward, epochs, sustained_tflops).items():
        lines.append(f"  {table:<45}{gpu_time(h):>12}")
    return "\n".join(lines)


def gpu_time(hours: float) -> str:
    """A device time with its unit and at least two significant digits, never a misleading "0.0": hours from
    one hour up, else minutes from one minute, else seconds."""
    seconds = hours * 3600
    if seconds >= 3600:
        return f"{hours:.1f} h" if hours < 1000 else f"{hours:.0f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.2g} s" if seconds < 10 else f"{seconds:.0f} s"


def epoch_seconds(gflops_forward: float, dataset: str, sustained_tflops: float) -> float:
    n = VIDEOS[dataset]
    per_epoch = 3 * n * TRAIN_SHARE[dataset] + n * (1 - TRAIN_SHARE[dataset])
    return per_epoch * gflops_forward * 1e9 / (sustained_tflops * 1e12)


def checkpoint_report(cfg: ModelConfig, epochs: int, every: int, sustained_tflops: float, write_gbps: float,
                      dataset: str = "ve8") -> str:
    """Bytes one run and each table's study write as checkpoints (fp32): the resumable state (weights +
    Adam's two moments = 12 bytes per parameter) every ``every`` epochs and after the last, and the
    selected weights (4 bytes per parameter) each time validation accuracy improves (1 to ``epochs``
    times); and checkpoint time against epoch time at the assumed throughputs."""
    c = count_complexity(cfg)
    state, best = 4 * c.params + 8 * c.trainable_params, 4 * c.params
    n_states = (epochs - 1) // every + 1  # every N-th epoch before the last, and the final one
    low, high = n_states * state + best, n_states * state + epochs * best
    ratio = state / (write_gbps * 1e9) / (every * epoch_seconds(c.gflops, dataset, sustained_tflops))
    lines = [f"checkpoints (run.checkpoint_every={every}, {epochs} epochs): state {state / 1e9:.2f} GB (weights + Adam), "
             f"selected weights {best / 1e9:.2f} GB (written only when validation accuracy improves)",
             f"  one run writes {low / 1e9:.1f}-{high / 1e9:.1f} GB ({n_states} states + 1 to {epochs} selected-weight "
             f"files); every epoch, as before, would be {epochs * (state + best) / 1e9:.0f} GB",
             f"  checkpoint time at {write_gbps:g} GB/s: {state / (write_gbps * 1e9):.1f} s per state = "
             f"{100 * ratio:.1f} % of {every} {dataset.upper()} epochs at {sustained_tflops:g} TFLOP/s"]
    for table, runs in TABLE_RUNS.items():
        n = sum(r for _, r in runs)
        lines.append(f"  {table:<45}{n * low / 1e9:>8.0f}-{n * high / 1e9:.0f} GB")
    return "\n".join(lines)


# Frame cache disk (`vaanet prepare --frames`), from resolution x measured compression ratio: raw stores
# T x H x W x 3 bytes; COMPRESSION is raw bytes / format bytes at the same resolution, measured by
# benchmarks/data_throughput.py (see docs/performance.md for the run and its content).
MEAN_DURATION_S = {"ve8": 107.0, "e6": 112.0}  # average video length of the data sets
CACHE_FPS = 30.0  # assumed native frame rate of the web videos (gives the issue's ~230 / ~350 GB raw)
CACHE_ASPECT = 4 / 3  # long side / short side assumed for the frames
# jpeg (quality 90): 9.0x on natural photos panned into 128x171 clips, 13.4x on the synthetic set
# (benchmarks/data_throughput.py, 2026-12-01); the lower, natural-content ratio is used
COMPRESSION = {"raw": 1.0, "jpeg": 9.0}
DATASET_NAMES = {"ve8": "VE-8", "e6": "E-6"}


def bytes_per_video_hour(fmt: str, short_side: int = 128, fps: float = CACHE_FPS) -> float:
    long_side = round(short_side * CACHE_ASPECT)
    return short_side * long_side * 3 * fps * 3600 / COMPRESSION[fmt]


def cache_disk(dataset: str, fmt: str, short_side: int = 128, fps: float = CACHE_FPS) -> float:
    """Bytes of the frame cache of a whole data set (the MFCC cache is < 0.1 % of it)."""
    hours = VIDEOS[dataset] * MEAN_DURATION_S[dataset] / 3600
    return hours * bytes_per_video_hour(fmt, short_side, fps)


def cache_disk_report(short_side: int = 128, fps: float = CACHE_FPS) -> str:
    long_side = round(short_side * CACHE_ASPECT)
    lines = [f"frame cache disk (vaanet prepare --frames; {short_side}x{long_side} at {fps:g} fps, "
             f"raw size / measured compression ratio):",
             f"  {'format':<8}{'ratio':>7}{'GB/video-hour':>15}" + "".join(f"{DATASET_NAMES[d] + ' GB':>10}" for d in VIDEOS)]
    for fmt, ratio in COMPRESSION.items():
        lines.append(f"  {fmt:<8}{ratio:>6.1f}x{bytes_per_video_hour(fmt, short_side, fps) / 1e9:>15.2f}"
                     + "".join(f"{cache_disk(d, fmt, short_side, fps) / 1e9:>10.0f}" for d in VIDEOS))
    return "\n".join(lines)
