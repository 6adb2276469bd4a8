"""Does the training loss pull the spatial attention towards the evidence box, or push it away?

Per run folder of benchmarks/attention_recovery.py (its selected weights, best_model.pt, or ``--init``: the
same network untrained), on the split's training videos (training crops, two passes): the gradient
dL/dbeta of the cross-entropy when the spatial logits get ``+ beta x overlap`` (overlap: each conv5 cell's
share inside the box, / its largest), separately for the key and the other segments, at beta = 0.
Negative: more mass on the box would lower the loss; positive: the loss pushes the attention off the box.
``--detach-temporal`` stops the gradient through the temporal attention's weights A^T, so only the path
through the pooled content remains (A^T reads the spatially attended features, eq. 7-8, so the spatial
attention also steers the temporal weights).

Diagnosis (docs/attention.md, "Channel attention pulls the spatial map off the box"); reads the truth after training,
like the benchmark; runs in tests/test_attention_recovery.py.

    python benchmarks/box_pressure.py --cache data/synth_spatial/cache --truth data/synth_spatial/videos/synth_truth.csv \\
        runs/attention_recovery_spatial/runs/paper_VS_split_00 [--init] [--detach-temporal]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402


def measure(folder: Path, cache: str, truth_path: str, init: bool = False, detach_temporal: bool = False,
            passes: int = 2) -> dict:
    from vaanet.models.vaanet import VAANet, feature_size
    from vaanet.predict import load_checkpoint
    from vaanet.train.loop import _loaders
    from vaanet.train.metrics import _intervals, box_overlap

    model, cfg, _ = load_checkpoint(folder / "best_model.pt")  # the run's own network and data settings
    if not cfg.model.spatial_attention:
        raise SystemExit(f"{folder}: preset {cfg.model.preset} has no spatial attention")
    split = Path(cache) / "splits" / ("_".join(folder.name.split("_")[-2:]) + ".csv")
    cfg = replace(cfg, data=replace(cfg.data, cache=str(cache), split=str(split), truth=str(truth_path), num_workers=0))
    if init:
        torch.manual_seed(cfg.run.seed)
        model = VAANet(cfg.model)
    model.train()
    truth = pd.read_csv(truth_path, dtype={"video_id": str}).set_index("video_id")
    loaders, _, _ = _loaders(cfg, 0, 1, False)
    side = feature_size(cfg.model.crop_size, cfg.model.no_max_pool)
    shift = {}
    attend = model.spatial.forward
    model.spatial.forward = lambda F: torch.softmax(
        torch.log(attend(F).clamp_min(1e-30)) + shift["key"] * shift["on_key"] + shift["other"] * shift["on_other"], -1)
    if detach_temporal and getattr(model, "visual_temporal", None) is not None:
        weigh = model.visual_temporal.forward
        model.visual_temporal.forward = lambda P: weigh(P).detach()
    grads, n = np.zeros(2), 0
    for _ in range(passes):
        for batch in loaders["train"]:
            overlap, is_key = [], []
            for b, vid in enumerate(batch["video_id"]):
                t = truth.loc[vid]
                o = box_overlap(t, [float(x) for x in batch["crop"][b]], side, cfg.model.crop_size)
                overlap.append(o / max(o.max(), 1e-9))
                keys = _intervals(t["key_times"])
                is_key.append([any(a <= c < e for a, e in keys) for c in batch["centres"][b].numpy()])
            overlap = torch.tensor(np.array(overlap), dtype=torch.float32)[:, None, :]  # [B, 1, m]
            is_key = torch.tensor(np.array(is_key), dtype=torch.float32)[:, :, None]  # [B, t, 1]
            shift.update(on_key=overlap * is_key, on_other=overlap * (1 - is_key),
                         key=torch.zeros((), requires_grad=True), other=torch.zeros((), requires_grad=True))
            audio = batch["audio"].float() if cfg.model.audio else None
            loss = torch.nn.functional.cross_entropy(model(batch["visual"].float(), audio).logits, batch["label"])
            grads += [float(g) for g in torch.autograd.grad(loss, [shift["key"], shift["other"]])]
            n += 1
    return {"key": grads[0] / n, "other": grads[1] / n}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+")
    p.add_argument("--cache", default="data/synth/cache")
    p.add_argument("--truth", default="data/synth/videos/synth_truth.csv")
    p.add_argument("--init", action="store_true", help="the run's network untrained (seed run.seed)")
    p.add_argument("--detach-temporal", action="store_true", help="no gradient through A^T")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    for f in a.folders:
        g = measure(Path(f), a.cache, a.truth, a.init, a.detach_temporal)
        print(f"{Path(f).name}{' (untrained)' if a.init else ''}{' (A^T detached)' if a.detach_temporal else ''}: "
              f"dL/dbeta key segments {g['key']:+.4f}, other segments {g['other']:+.4f} "
              "(negative: more mass on the box lowers the loss)", flush=True)


if __name__ == "__main__":
    main()
