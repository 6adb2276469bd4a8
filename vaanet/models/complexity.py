"""Parameter and FLOP counts per video, computed on the meta device (no memory, no compute)."""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch.utils.flop_counter import FlopCounterMode

from .vaanet import ModelConfig, VAANet


@dataclass(frozen=True)
class Complexity:
    params: int
    trainable_params: int
    flops_per_video: int  # forward pass, multiply-add = 2 FLOPs
    audio_frames: int

    @property
    def gflops(self) -> float:
        return self.flops_per_video / 1e9

    def __str__(self) -> str:
        return (
            f"params {self.params / 1e6:.2f} M ({self.trainable_params / 1e6:.2f} M trainable), "
            f"forward {self.gflops:.1f} GFLOPs per video"
        )


def count_complexity(cfg: ModelConfig, audio_frames: int = 32, n_mfcc: int = 32) -> Complexity:
    """Count for one video of ``cfg.segments`` x ``cfg.frames`` frames; weights files are not read."""
    cfg = replace(cfg, visual_weights=None, audio_weights=None)
    with torch.device("meta"):
        model = VAANet(cfg).eval()
        visual = torch.empty(1, cfg.segments, 3, cfg.frames, cfg.crop_size, cfg.crop_size) if cfg.visual else None
        audio = torch.empty(1, cfg.segments, 1, audio_frames, n_mfcc) if cfg.audio else None
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(visual, audio)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Complexity(params, trainable, int(counter.get_total_flops()), audio_frames)
