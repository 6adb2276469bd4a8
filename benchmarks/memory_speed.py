"""Each memory/speed switch on and off: training videos/s, activation memory kept for backward
(measured from the tensors autograd saves) and, on a GPU, peak allocated memory.

GPU: depth 101 at the paper's sampling (t=10, k=16, 112x112). CPU: a small backbone, same sampling.

    python benchmarks/memory_speed.py [--batch 4] [--steps 3] [--depth 101 --width 1.0] [--no-compile]
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from train_throughput import time_steps  # benchmarks/ is on sys.path when run as a script
from vaanet.models import ModelConfig, VAANet


def run(cfg: ModelConfig, batch: int, steps: int, device: torch.device, bf16: bool, compile_: bool):
    model = VAANet(cfg).to(device).train()
    if compile_:
        import torch._dynamo as dynamo

        dynamo.config.suppress_errors = True
        model.backbone.features = torch.compile(model.backbone.features)
    saved = {"bytes": 0}

    def pack(t):
        saved["bytes"] += t.numel() * t.element_size()
        return t

    def record_saved():  # the bytes autograd keeps for backward, counted afresh each step
        saved["bytes"] = 0
        return torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rate = time_steps(model, cfg, batch, steps, device, bf16, record_saved)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    return rate, saved["bytes"] / 2**20, peak


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--depth", type=int, default=None, help="default: 101 on a GPU, 10 on CPU")
    ap.add_argument("--width", type=float, default=None, help="default: 1.0 on a GPU, 0.25 on CPU")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile rows (compiling takes "
                    "minutes on a CPU)")
    a = ap.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    depth = a.depth or (101 if cuda else 10)
    width = a.width or (1.0 if cuda else 0.25)
    base = ModelConfig(depth=depth, width=width)
    rows = [("baseline (fp32)", base, False, False), ("+ checkpoint_segments", replace(base, checkpoint_segments=True), False, False),
            ("+ channels_last_3d", replace(base, channels_last=True), False, False), ("+ torch.compile", base, False, True)]
    if cuda:
        rows.insert(1, ("+ bf16 autocast", base, True, False))
        rows.append(("all switches", replace(base, checkpoint_segments=True, channels_last=True), True, True))
    if a.no_compile:
        rows = [row for row in rows if not row[3]]
    print(f"{device.type}: depth {depth} width {width}, t=10 k=16 112x112, batch {a.batch}, {a.steps} timed steps, "
          f"torch {torch.__version__}")
    print(f"{'switch':<24}{'videos/s':>10}{'saved act. MiB':>16}{'peak GiB':>10}")
    for name, cfg, bf16, comp in rows:
        rate, act, peak = run(cfg, a.batch, a.steps, device, bf16, comp)
        print(f"{name:<24}{rate:>10.2f}{act:>16.0f}{peak:>10.2f}")


if __name__ == "__main__":
    main()
