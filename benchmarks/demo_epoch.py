"""Seconds per training epoch of the demo's network (configs/synth_quick.yaml) on this CPU, per preset,
for the two CPU switches the demo uses: ``model.channels_last`` (channels_last_3d for the 3D
convolutions) and ``model.audio_width`` (the audio ResNet-18's channels). One torch thread, the demo's
real data loader (the synthetic set under data/synth, as the demo prepares it), forward + backward +
Adam step over one epoch of the training split; the second of two epochs is printed (the first warms up).

    python benchmarks/demo_epoch.py [--presets AT,VS,VS+VCW+VT+AT] [--cache data/synth/cache]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VARIANTS = {
    "paper widths, default memory format": ["model.channels_last=false", "model.audio_width=1.0"],
    "+ channels_last": ["model.channels_last=true", "model.audio_width=1.0"],
    "+ audio_width 0.25 (the demo)": ["model.channels_last=true", "model.audio_width=0.25"],
}


def epoch_seconds(overrides: list[str]) -> float:
    import torch

    from vaanet.config import load_config
    from vaanet.losses import PCCELoss
    from vaanet.models import VAANet
    from vaanet.train.loop import _loaders

    cfg = load_config(REPO / "configs" / "synth_quick.yaml", overrides)
    loaders, _, _ = _loaders(cfg, 0, 1, False)
    batches = list(loaders["train"])  # decoded once: the epoch times the network, not the loader
    torch.manual_seed(0)
    model = VAANet(cfg.model)
    opt = torch.optim.Adam(model.parameters(), cfg.optim.lr)
    loss_fn = PCCELoss(cfg.data.classes, lam=cfg.optim.lam)
    for _ in range(2):
        start = time.perf_counter()
        for b in batches:
            loss = loss_fn(model(b.get("visual"), b.get("audio")).logits, b["label"])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="AT,VS,VS+VCW+VT,VS+VCW+VT+AT")
    ap.add_argument("--cache", default="data/synth/cache")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    cache = Path(a.cache)
    if not (cache / "index.csv").is_file():
        sys.exit(f"{cache}/index.csv not found: run the demo once (python experiments/ablation.py), or vaanet "
                 "synth/prepare/splits as in configs/synth_quick.yaml, or pass --cache")
    split = sorted((cache / "splits").glob("split_*.csv"))[0]
    data = [f"data.cache={cache}", f"data.split={split}", "data.truth=null", "data.num_workers=0"]
    presets = a.presets.split(",")
    print(f"s per training epoch ({split.name}, 1 thread), synth_quick network")
    print(f"{'variant':40s}" + "".join(f"{p:>14s}" for p in presets))
    for name, overrides in VARIANTS.items():
        row = [epoch_seconds(data + overrides + [f"model.preset={p}"]) for p in presets]
        print(f"{name:40s}" + "".join(f"{s:14.2f}" for s in row), flush=True)


if __name__ == "__main__":
    main()
