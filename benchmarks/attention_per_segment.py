"""Where do the trained attentions look? Per run folder of benchmarks/attention_recovery.py, on the split's
validation videos (the selected weights, best_model.pt): the spatial mass in the evidence box over uniform
separately in the key and the other segments (the benchmark's metric averages all segments), the mean
spatial map over videos and segments (positional preferences), and the mean largest temporal share.
Diagnosis only: reads the truth after training, like the benchmark.

    python benchmarks/attention_per_segment.py --cache data/synth/cache --truth data/synth/videos/synth_truth.csv \
        runs/attention_recovery/runs/paper_VS_split_00 ...
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


def measure(folder: Path, cache: str, truth_path: str) -> dict:
    """The figures of one run folder (``<style>_<preset>_split_NN``), on its split's validation videos.

    The network and the data settings are the run's own (its checkpoint's effective config): a ``--set`` of
    the benchmark such as ``model.spatial_init=saliency`` changes more than the weights, so a network rebuilt
    from a yaml would compute other attention maps from the same weights. Only the paths come from here."""
    from vaanet.models.vaanet import feature_size
    from vaanet.predict import load_checkpoint
    from vaanet.train.loop import _loaders
    from vaanet.train.metrics import _intervals, box_overlap, predict

    split = Path(cache) / "splits" / ("_".join(folder.name.split("_")[-2:]) + ".csv")
    model, trained, _ = load_checkpoint(folder / "best_model.pt")
    cfg = replace(trained, data=replace(trained.data, cache=str(cache), split=str(split), truth=str(truth_path),
                                        num_workers=0))
    loaders, _, _ = _loaders(cfg, 0, 1, False)
    pred = predict(model, loaders["val"], torch.device("cpu"))
    out = {"val_acc": float((pred["probs"].argmax(1) == pred["labels"]).mean())}
    if len(pred["spatial"]):
        truth = pd.read_csv(truth_path, dtype={"video_id": str}).set_index("video_id")
        s = feature_size(cfg.model.crop_size, cfg.model.no_max_pool)
        key, other, ceiling = [], [], []
        for r, vid in enumerate(pred["video_ids"]):
            t = truth.loc[vid]
            overlap = box_overlap(t, pred["crop"][r], s, cfg.model.crop_size)
            keys = _intervals(t["key_times"])
            is_key = np.array([any(a <= c < b for a, b in keys) for c in pred["centres"][r]])
            a = pred["spatial"][r] / pred["spatial"][r].sum(-1, keepdims=True)
            ratio = (a * overlap).sum(-1) / overlap.mean()
            key += list(ratio[is_key])
            other += list(ratio[~is_key])
            ceiling.append(overlap.max() / overlap.mean())
        A = pred["spatial"] / pred["spatial"].sum(-1, keepdims=True)
        out.update(key=float(np.mean(key)), other=float(np.mean(other)), ceiling=float(np.mean(ceiling)),
                   mean_map=A.mean((0, 1)).reshape(s, s))
    if len(pred["temporal"]):
        T = pred["temporal"] / np.clip(pred["temporal"].sum(1, keepdims=True), 1e-12, None)
        out["largest_temporal_share"] = float(T.max(1).mean())
    return out


def analyse(folder: Path, cache: str, truth_path: str) -> str:
    m = measure(folder, cache, truth_path)
    line = f"{folder.name}: val acc {m['val_acc']:.3f}"
    if "key" in m:
        line += (f"; spatial in box / uniform: key segments {m['key']:.2f}, other segments {m['other']:.2f} "
                 f"(all mass on the best cell: {m['ceiling']:.2f}); mean map "
                 + " / ".join(" ".join(f"{v:.2f}" for v in row) for row in m["mean_map"]))
    if "largest_temporal_share" in m:
        line += f"; mean largest temporal share {m['largest_temporal_share']:.2f}"
    return line


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+")
    p.add_argument("--cache", default="data/synth/cache")
    p.add_argument("--truth", default="data/synth/videos/synth_truth.csv")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    for f in a.folders:
        print(analyse(Path(f), a.cache, a.truth), flush=True)


if __name__ == "__main__":
    main()
