"""Do the attentions find the planted evidence? Accuracy and attention-on-truth per preset row, two named presets.

For each row (an ablation preset of the model) trains the network with ``fit_local`` (no Ray) on each of 3
splits of a planted-evidence synthetic set and prints one line per run and a table per subset: accuracy (mean
+- std over splits), temporal attention mass on the key segments and spatial attention mass inside the evidence
box, each as a ratio to what uniform attention gives (1.0 = chance). The attention metrics are read from the
ground truth only after training (vaanet.train.metrics.attention_metrics); training never sees it. Settings
were chosen on the validation table only; the test table is a report.

    python benchmarks/attention_recovery.py --preset demo      # the demo's set and config, 5 rows
    python benchmarks/attention_recovery.py --preset spatial   # spatial attention alone (VS), where it localises
    python benchmarks/attention_recovery.py --diagnose         # scales through eq. 2-9 at initialisation
    python benchmarks/attention_recovery.py --preset spatial --out runs/attention_recovery_paper_scale \
        --set model.depth=101 --set model.width=1.0 --set model.no_max_pool=false   # the paper's backbone (a GPU)

Presets (docs/attention.md has their tables):

* ``demo``: SynthConfig() defaults prepared at short side 56 (the demo's set, data/synth), configs/synth_quick.yaml
  (crop 48: a 3 x 3 conv5 map), rows AT, VS, VS+VCW, VS+VCW+VT, VS+VCW+VT+AT.
* ``spatial``: the set SPATIAL_SET (issue #12's "R15": static squares in the pair colours at 0.4-0.6 of the box's
  side, one label-free confuser colour in the other segments, a per-video exposure and a brighter key segment
  instead of the background flash) prepared at short side 128, synth_quick with crop 112 (a 7 x 7 map), width
  0.125 and the saliency start of the spatial attention; row VS (spatial attention is its only attention).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROWS = ("AT", "VS", "VS+VCW", "VS+VCW+VT", "VS+VCW+VT+AT")
# issue #12's set R15 (docs/attention.md); every other SynthConfig field at its default
SPATIAL_SET = dict(distractor_colours="pairs", distractor_motion=0.0, distractor_size=(0.4, 0.6), confuser_same=True,
                   key_flash=0.0, exposure=(0.35, 0.9), key_exposure=1.3)
BENCH_PRESETS = {
    "demo": dict(synth={}, short_side=56, rows=ROWS, sets=(), folder="synth"),
    "spatial": dict(synth=SPATIAL_SET, short_side=128, rows=("VS",), folder="synth_spatial",
                    sets=("model.crop_size=112", "model.width=0.125", "model.spatial_init=saliency")),
}


# ---- diagnosis: scales through the attention block at initialisation ----------------------------------
def diagnose(config: str, styles, seed: int = 0, batch: int = 8) -> list[dict]:
    """Print mean |activation| and |gradient| at each step of eq. 2-9 for the full model, per style, on
    random pixels at initialisation, beside attention-free average pooling (preset V)."""
    from vaanet.config import load_config
    from vaanet.models.vaanet import VAANet, ModelConfig
    from dataclasses import replace

    base = load_config(config).model
    rows = []
    for style in styles:
        for preset in ("V", "VS+VCW+VT"):
            torch.manual_seed(seed)
            cfg = replace(ModelConfig.from_preset(preset, **{k: getattr(base, k) for k in (
                "depth", "width", "segments", "frames", "crop_size", "num_classes", "no_max_pool")}),
                attention_style=style, audio=False, audio_attention=False)
            model = VAANet(cfg).train()
            g = torch.Generator().manual_seed(seed)
            x = torch.randint(0, 256, (batch, cfg.segments, 3, cfg.frames, cfg.crop_size, cfg.crop_size),
                              dtype=torch.uint8, generator=g)
            y = torch.randint(0, cfg.num_classes, (batch,), generator=g)
            saved = {}

            def keep(name, t):
                t.retain_grad()
                saved[name] = t
                return t

            F = keep("F", model.visual_features(x))
            B, t, m, n = F.shape
            paper = style == "paper"
            sums = style != "reference"
            if cfg.spatial_attention:
                A_S = model.spatial(F)
            else:
                A_S = F.new_full((B, t, m), 1.0 / m if sums else 1.0)
            F_S = keep("F_S (eq.3)", F * ((m if paper else 1.0) * A_S).unsqueeze(-1))
            if cfg.channel_attention:
                A_C = model.channel(F_S)
            else:
                A_C = F.new_full((B, t, n), 1.0 / n if sums else 1.0)
            G_C = keep("G_C (eq.6)", F_S * ((n if paper else 1.0) * A_C).unsqueeze(-2))
            P = keep("P (eq.7)", G_C.mean(dim=2))
            if cfg.temporal_attention:
                A_T = model.visual_temporal(P)
                E = keep("E_V (eq.9)", model.visual_temporal.pool(P, A_T))
            else:
                E = keep("E_V (eq.9)", P.mean(dim=1))
            logits = model.fc(E)
            torch.nn.functional.cross_entropy(logits, y).backward()
            row = dict(style=style, preset=preset, m=m, n=n)
            for name, v in saved.items():
                row[name] = (float(v.detach().abs().mean()), float(v.grad.abs().mean()))
            row["|logits|"] = float(logits.detach().abs().mean())
            row["|grad backbone|"] = float(np.mean([p.grad.abs().mean().item() for p in model.backbone.parameters()
                                                    if p.grad is not None]))
            rows.append(row)
    names = ["F", "F_S (eq.3)", "G_C (eq.6)", "P (eq.7)", "E_V (eq.9)"]
    print(f"scales at initialisation (mean |x| / mean |dL/dx|), {batch} random clips, "
          f"m = {rows[0]['m']}, n = {rows[0]['n']}:")
    print(f"{'style':<14}{'preset':<11}" + "".join(f"{k:>20}" for k in names) + f"{'|logits|':>10}{'|grad bb|':>11}")
    for r in rows:
        print(f"{r['style']:<14}{r['preset']:<11}" + "".join(f"{r[k][0]:>9.2e}/{r[k][1]:<9.1e}" + " " for k in names)
              + f"{r['|logits|']:>10.3f}{r['|grad backbone|']:>11.1e}")
    return rows


# ---- training runs --------------------------------------------------------------------------------------
def ensure_data(preset: dict, root: Path, n_splits: int, videos_per_class: int | None = None):
    """The preset's set under root/videos, prepared at its short side into root/cache, with the study's splits
    (made once); returns (cache, split files, truth file)."""
    from vaanet.data.ingest import PrepareConfig, prepare
    from vaanet.data.synth import SynthConfig, generate
    from vaanet.tune.data import ensure_data as study_data

    videos, cache = root / "videos", root / "cache"
    if not (videos / "synth_truth.csv").exists():
        cfg = SynthConfig(**preset["synth"], **({"videos_per_class": videos_per_class} if videos_per_class else {}))
        print(f"generating {cfg} under {videos} ...", flush=True)
        generate(videos, cfg)
    if not (cache / "index.csv").exists():
        prepare(videos, cache, PrepareConfig(short_side=preset["short_side"]))
    return study_data(SimpleNamespace(dataset="synth", data_root=str(videos), cache=str(cache)), n_splits)


@torch.no_grad()
def validation_metrics(cfg, folder: Path) -> dict:
    """Validation accuracy and attention-vs-truth metrics of the selected weights (best_model.pt) on the
    split's validation videos, with the loaders the training used."""
    import pandas as pd

    from vaanet.models.vaanet import VAANet, feature_size
    from vaanet.train.loop import _loaders
    from vaanet.train.metrics import attention_metrics, classification_metrics, predict

    state = torch.load(folder / "best_model.pt", map_location="cpu", weights_only=False)
    model = VAANet(cfg.model)
    model.load_state_dict(state["model"])
    loaders, _, _ = _loaders(cfg, 0, 1, False)
    pred = predict(model, loaders["val"], torch.device("cpu"))
    val = classification_metrics(pred["probs"], pred["labels"], cfg.data.classes)
    truth = pd.read_csv(cfg.data.truth, dtype={"video_id": str}) if cfg.data.truth else None
    side = feature_size(cfg.model.crop_size, cfg.model.no_max_pool) if cfg.model.visual else None
    attn = attention_metrics(pred, truth, side, cfg.model.crop_size)
    return {"val_acc": val["acc"], **{f"val_{k}": v for k, v in attn.items()}}


def run_one(config: str, style: str, preset: str, cache: Path, split: Path, truth: Path, out: Path,
            overrides=(), only_finished: bool = False) -> dict | None:
    from vaanet.config import load_config
    from vaanet.train import fit_local

    sets = [f"model.preset={preset}", f"model.attention_style={style}", f"data.cache={cache}",
            f"data.split={split}", f"data.truth={truth}", f"run.mlflow_uri=sqlite:///{(out / 'mlflow.db').resolve()}",
            "run.experiment=attention-recovery", f"run.output={out}", "data.num_workers=0", "run.threads=1",
            f"run.name={style}-{preset}-{split.stem}"] + list(overrides)
    cfg = load_config(config, sets)
    folder = out / "runs" / f"{style}_{preset.replace('+', '-')}_{split.stem}"
    result = folder / "result.json"
    if result.exists():
        return json.loads(result.read_text())
    if only_finished:
        return None
    t0 = time.time()
    final = fit_local(cfg, folder)
    final = {k: v for k, v in final.items() if isinstance(v, (int, float))}
    final["seconds"] = time.time() - t0
    final.update(validation_metrics(cfg, folder))  # after the fact: not part of s/run
    result.write_text(json.dumps(final))
    return final


def _ratio(r: dict, key: str, subset: str = "test") -> float:
    a, u = r.get(f"{subset}_{key}"), r.get(f"{subset}_{key}_uniform")
    return float(a / u) if a is not None and u else float("nan")


def table(results: dict, styles, presets, chance: float, subset: str = "test") -> str:
    lines = [f"| style | preset | {subset} accuracy (chance {chance:.3f}) | {subset} temporal on key / uniform "
             f"| {subset} spatial in box / uniform | s/epoch | s/run |", "|---|---|---|---|---|---|---|"]
    for style in styles:
        for preset in presets:
            rs = [r for r in results.get((style, preset), []) if f"{subset}_acc" in r]
            if not rs:
                continue
            acc = np.array([r[f"{subset}_acc"] for r in rs])
            tk = np.array([_ratio(r, "temporal_on_key", subset) for r in rs])
            sb = np.array([_ratio(r, "spatial_in_box", subset) for r in rs])
            fmt = lambda v: "-" if np.all(np.isnan(v)) else f"{np.nanmean(v):.2f} ± {np.nanstd(v):.2f}"  # noqa: E731
            lines.append(f"| {style} | {preset} | {acc.mean():.3f} ± {acc.std():.3f} | {fmt(tk)} | {fmt(sb)} "
                         f"| {np.mean([r['seconds'] / r['epochs'] for r in rs]):.1f} "
                         f"| {np.mean([r['seconds'] for r in rs]):.0f} |")
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(BENCH_PRESETS), default="demo")
    p.add_argument("--config", default=str(REPO / "configs" / "synth_quick.yaml"))
    p.add_argument("--styles", default="paper", help="attention styles, comma-separated (paper, reference, ...)")
    p.add_argument("--rows", default=None, help="model presets to train (default: the preset's rows)")
    p.add_argument("--splits", type=int, default=3)
    p.add_argument("--only-split", type=int, default=None, help="run only this split index (to shard the runs)")
    p.add_argument("--data", default=None, help="the set's folder (default data/<the preset's folder>)")
    p.add_argument("--videos-per-class", type=int, default=None, help="a smaller set (the smoke test)")
    p.add_argument("--out", default=None, help="runs are kept here (default runs/attention_recovery_<preset>); a "
                                               "finished run is reused")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--diagnose", action="store_true", help="only print the scales at initialisation")
    p.add_argument("--table-only", action="store_true", help="print the table of the runs already finished")
    p.add_argument("--select-on", choices=("val", "test", "both"), default="both",
                   help="which table to print: val (for choosing settings), test (report only), both")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    styles = [s for s in a.styles.split(",") if s]
    if a.diagnose:
        diagnose(a.config, styles)
        return
    preset = BENCH_PRESETS[a.preset]
    rows = [s for s in a.rows.split(",") if s] if a.rows else list(preset["rows"])
    overrides = list(preset["sets"]) + a.set
    t0 = time.time()
    cache, splits, truth = ensure_data(preset, Path(a.data or f"data/{preset['folder']}"), a.splits,
                                       a.videos_per_class)
    print(f"[{time.time() - t0:6.0f} s] data ready: {cache}", flush=True)
    if a.only_split is not None:
        splits = [splits[a.only_split]]
    out = Path(a.out or f"runs/attention_recovery_{a.preset}").resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    for style in styles:
        for row in rows:
            for split in splits:
                r = run_one(a.config, style, row, cache, split, truth, out, overrides, a.table_only)
                if r is None:
                    continue
                results.setdefault((style, row), []).append(r)
                line = f"[{time.time() - t0:6.0f} s] {style:<14} {row:<13} {split.stem}:"
                for subset in (("val", "test") if a.select_on == "both" else (a.select_on,)):
                    if f"{subset}_acc" in r:
                        line += (f" {subset} acc {r[f'{subset}_acc']:.3f} temporal/uniform "
                                 f"{_ratio(r, 'temporal_on_key', subset):.2f} spatial/uniform "
                                 f"{_ratio(r, 'spatial_in_box', subset):.2f};")
                print(line + f" ({r['seconds']:.0f} s, best epoch {r.get('best_epoch')})", flush=True)
    from vaanet.config import load_config

    chance = 1.0 / load_config(a.config, overrides).model.num_classes
    for subset in (("val", "test") if a.select_on == "both" else (a.select_on,)):
        print()
        print(f"preset {a.preset}, {subset} ({'settings are chosen on this table' if subset == 'val' else 'report only; not used to choose'}):")
        print(table(results, styles, rows, chance, subset))
    print(f"\n{a.preset}: {time.time() - t0:.0f} s in all (data included)")
    return results


if __name__ == "__main__":
    main()
