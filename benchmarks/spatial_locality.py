"""Is the evidence box visible *locally* in the conv5 map, and would a parameter-free saliency find it?
Per run folder of benchmarks/attention_recovery.py (or ``init`` for an untrained network), on the split's
validation videos:

* locality: the box's pixels are replaced by the frame's grey in every frame; the change of each
  position's conv5 feature, ||F_i - F_i'|| / mean ||F_i||, for positions more than half inside the box
  against positions outside it (ratio >> 1: the map is local enough for spatial attention to use);
* saliency: the mean activation per position (inside vs outside the box), and Softmax(tau x mean
  activation) scored like the benchmark's metric (box mass / uniform), in the key and the other segments.

Diagnosis only (issue #12, docs/attention.md "round 3"); reads the truth after training, like the benchmark.

    python benchmarks/spatial_locality.py --preset VS init runs/attention_recovery/runs/paper_VS_split_00
"""
from __future__ import annotations

import argparse
from dataclasses import replace
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

TAUS = (1, 3, 10)


def analyse(folder: str, preset: str, cache: str, truth_path: str, config: str, sets: list[str]) -> str:
    from vaanet.config import load_config
    from vaanet.models.vaanet import VAANet, feature_size
    from vaanet.predict import load_checkpoint
    from vaanet.train.loop import _loaders
    from vaanet.train.metrics import _intervals, box_overlap

    split = Path(cache) / "splits" / ("split_00.csv" if folder == "init" else "_".join(Path(folder).name.split("_")[-2:]) + ".csv")
    cfg = load_config(config, [f"model.preset={preset}", f"data.cache={cache}", f"data.split={split}",
                               f"data.truth={truth_path}", "data.num_workers=0", *sets])
    if folder == "init":
        torch.manual_seed(0)
        model = VAANet(cfg.model)
    else:  # the network as the run built it (its checkpoint's effective config), not the yaml's
        model, trained, _ = load_checkpoint(Path(folder) / "best_model.pt")
        cfg = replace(cfg, model=trained.model)
    model.eval()
    truth = pd.read_csv(truth_path, dtype={"video_id": str}).set_index("video_id")
    loaders, _, _ = _loaders(cfg, 0, 1, False)
    side = feature_size(cfg.model.crop_size, cfg.model.no_max_pool)
    change = {"in": [], "out": []}
    act = {"in": [], "out": []}
    sal = {(tau, key): [] for tau in TAUS for key in (True, False)}
    with torch.no_grad():
        for batch in loaders["val"]:
            v = batch["visual"].float()  # [B, t, 3, k, S, S]
            for b, vid in enumerate(batch["video_id"]):
                y0, x0, H, W = (float(x) for x in batch["crop"][b])
                t = truth.loc[vid]
                by0, by1, bx0, bx1 = t.box_y0 * H - y0, t.box_y1 * H - y0, t.box_x0 * W - x0, t.box_x1 * W - x0
                overlap = box_overlap(t, (y0, x0, H, W), side, cfg.model.crop_size)
                greyed = v[b:b + 1].clone()
                grey = greyed[..., :3, :3].mean(dim=(-1, -2), keepdim=True)  # the frame's corner: background
                greyed[..., max(int(by0), 0):int(np.ceil(by1)), max(int(bx0), 0):int(np.ceil(bx1))] = grey
                F = model.visual_features(v[b:b + 1])[0]  # [t, m, n]
                d = ((F - model.visual_features(greyed)[0]).norm(dim=-1) / F.norm(dim=-1).mean()).mean(0).numpy()
                a = F.mean(-1).numpy()  # [t, m] mean activation per position
                inside, outside = overlap > 0.5, overlap == 0
                if inside.any():
                    change["in"] += list(d[inside])
                    act["in"] += list(a[:, inside].ravel())
                change["out"] += list(d[outside])
                act["out"] += list(a[:, outside].ravel())
                keys = _intervals(t.key_times)
                is_key = [any(lo <= c < hi for lo, hi in keys) for c in batch["centres"][b].numpy()]
                for tau in TAUS:
                    w = torch.softmax(torch.from_numpy(tau * a), -1).numpy()
                    for j, key in enumerate(is_key):
                        sal[(tau, key)].append(float((w[j] * overlap).sum() / overlap.mean()))
    ci, co = np.mean(change["in"]), np.mean(change["out"])
    line = (f"{folder} ({preset}): greying the box changes conv5 features {ci:.3f} inside it, {co:.3f} outside "
            f"(ratio {ci / co:.2f}); mean activation {np.mean(act['in']):.3f} inside, {np.mean(act['out']):.3f} outside; "
            "Softmax(tau x mean activation), box / uniform in key | other segments: "
            + ", ".join(f"tau {tau}: {np.mean(sal[(tau, True)]):.2f} | {np.mean(sal[(tau, False)]):.2f}" for tau in TAUS))
    return line


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", help="run folders of attention_recovery.py, or 'init'")
    p.add_argument("--preset", default="VS")
    p.add_argument("--cache", default="data/synth/cache")
    p.add_argument("--truth", default="data/synth/videos/synth_truth.csv")
    p.add_argument("--config", default=str(REPO / "configs" / "synth_quick.yaml"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (as the run had)")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    for f in a.folders:
        print(analyse(f, a.preset, a.cache, a.truth, a.config, a.set), flush=True)


if __name__ == "__main__":
    main()
