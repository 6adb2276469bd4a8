"""Training throughput (videos/s, forward + backward + Adam step) per attention preset at the paper's
sampling (t=10 segments x k=16 frames, 112x112, 256 MFCC frames per segment), on synthetic tensors.

CPU: a small backbone (depth 10, width 1/4 by default). With a GPU: also depth 101 at full width,
bf16 autocast on and off.

    python benchmarks/train_throughput.py [--batch 4] [--steps 3] [--depth 10 --width 0.25]
"""
from __future__ import annotations

import argparse
import time
from contextlib import nullcontext

import torch

from vaanet.classes import VE8_CLASSES
from vaanet.losses import PCCELoss
from vaanet.models import PRESETS, ModelConfig, VAANet

ABLATION = ["AT", "VS", "VS+VCW", "VS+VCW+VT", "VS+VCW+VT+AT"]


def time_steps(model, cfg: ModelConfig, batch: int, steps: int, device: torch.device, bf16: bool,
               step_context=nullcontext) -> float:
    """Videos/s of ``steps`` Adam steps on random inputs after one warm-up step; each forward pass runs
    inside ``step_context()`` (a fresh context per step)."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-4)
    loss_fn = PCCELoss(VE8_CLASSES, 0.5).to(device)
    visual = torch.randint(0, 256, (batch, cfg.segments, 3, cfg.frames, cfg.crop_size, cfg.crop_size), dtype=torch.uint8, device=device)
    audio = torch.randn(batch, cfg.segments, 1, 256, 32, device=device)
    target = torch.randint(0, 8, (batch,), device=device)
    for i in range(steps + 1):
        if i == 1:  # the first step warms up kernels and allocators
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16), step_context():
            logits = model(visual if cfg.visual else None, audio if cfg.audio else None).logits
        loss = loss_fn(logits.float(), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def throughput(cfg: ModelConfig, batch: int, steps: int, device: torch.device, bf16: bool) -> float:
    return time_steps(VAANet(cfg).to(device).train(), cfg, batch, steps, device, bf16)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--depth", type=int, default=10)
    ap.add_argument("--width", type=float, default=0.25)
    ap.add_argument("--presets", default=",".join(ABLATION))
    a = ap.parse_args()
    presets = a.presets.split(",")
    unknown = [p for p in presets if p not in PRESETS]
    if unknown:
        ap.error(f"unknown presets {unknown}; choose from {list(PRESETS)}")
    rows = [("cpu", a.depth, a.width, False)]
    if torch.cuda.is_available():
        rows += [("cuda", a.depth, a.width, False), ("cuda", 101, 1.0, False), ("cuda", 101, 1.0, True)]
    print(f"t=10 k=16 112x112, batch {a.batch}, {a.steps} timed steps; torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads")
    print(f"{'device':<8}{'depth':>6}{'width':>7}{'bf16':>6}" + "".join(f"{p:>15}" for p in presets) + "   (videos/s)")
    for device, depth, width, bf16 in rows:
        cells = []
        for p in presets:
            cfg = ModelConfig.from_preset(p, depth=depth, width=width)
            cells.append(throughput(cfg, a.batch, a.steps, torch.device(device), bf16))
        print(f"{device:<8}{depth:>6}{width:>7.2f}{str(bf16):>6}" + "".join(f"{c:>15.2f}" for c in cells))


if __name__ == "__main__":
    main()
