"""Do the attentions find the planted evidence? Accuracy and attention-on-truth per style x preset.

For each attention style and ablation preset, trains the synth_quick network with ``fit_local`` (no Ray)
on each split of the planted-evidence synthetic set and prints one row per (style, preset): test accuracy
(mean +- std over splits), temporal attention mass on the key segments and spatial attention mass inside
the evidence box, each as a ratio to what uniform attention gives (1.0 = chance). The attention metrics are
read from the ground truth only at test time (vaanet.train.metrics.attention_metrics); training never
sees it.

    python benchmarks/attention_recovery.py                       # paper + reference, 5 presets, 3 splits
    python benchmarks/attention_recovery.py --diagnose            # scales through eq. 2-9 at initialisation
    python benchmarks/attention_recovery.py --styles paper_literal,paper --presets VS+VCW+VT
    python benchmarks/attention_recovery.py --select-on val       # the validation table (for choosing settings)
    python benchmarks/attention_recovery.py --select-on test      # the test table (report only)
    python benchmarks/attention_recovery.py --synth confuser=0.8 --set optim.epochs=8   # a variant set

Settings are chosen on the validation table only: validation accuracy of the selected model and the
attention metrics on the validation videos (computed after training from the selected weights
best_model.pt; the truth file is read only for these metrics, never in training). Every run records
both; ``--select-on`` picks which table is printed (``both`` prints the two).

Data: the demo's set (SynthConfig() defaults, prepared like the demo) under --data-root/--cache,
generated on first use; ``--synth KEY=VALUE`` (repeatable) generates a variant of SynthConfig under
--variants-root/<name> instead.
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

PRESETS = ("AT", "VS", "VS+VCW", "VS+VCW+VT", "VS+VCW+VT+AT")


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
def ensure_data(data_root: Path, cache: Path, n_splits: int):
    from vaanet.tune.study import ensure_data as study_data

    args = SimpleNamespace(dataset="synth", data_root=str(data_root), cache=str(cache))
    return study_data(args, n_splits)


def synth_variant(pairs, variants_root: Path) -> tuple[Path, Path]:
    """Generate (once) the synthetic set of SynthConfig(**pairs) under variants_root/<name>; returns
    (data root, cache)."""
    import ast
    from dataclasses import fields

    from vaanet.data.synth import SynthConfig, generate

    types = {f.name: f.type for f in fields(SynthConfig)}
    kw = {}
    for pair in pairs:
        k, v = pair.split("=", 1)
        if k not in types:
            raise SystemExit(f"--synth: SynthConfig has no field {k!r}")
        try:
            kw[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            kw[k] = v
    name = "_".join(f"{k}={kw[k]}" for k in sorted(kw)).replace(" ", "").replace("/", "-") or "default"
    root = variants_root / name
    if not (root / "videos" / "synth_truth.csv").exists():
        print(f"generating {SynthConfig(**kw)} under {root} ...", flush=True)
        generate(root / "videos", SynthConfig(**kw), workers=1)
    return root / "videos", root / "cache"


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


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "synth_quick.yaml"))
    p.add_argument("--styles", default="paper,reference")
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--splits", type=int, default=3)
    p.add_argument("--only-split", type=int, default=None, help="run only this split index (to shard the runs)")
    p.add_argument("--data-root", default="data/synth/videos")
    p.add_argument("--cache", default="data/synth/cache")
    p.add_argument("--out", default="runs/attention_recovery", help="runs are kept here; a finished run is reused")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override")
    p.add_argument("--diagnose", action="store_true", help="only print the scales at initialisation")
    p.add_argument("--table-only", action="store_true", help="print the table of the runs already finished")
    p.add_argument("--select-on", choices=("val", "test", "both"), default="both",
                   help="which table to print: val (for choosing settings), test (report only), both")
    p.add_argument("--synth", action="append", default=[], metavar="KEY=VALUE",
                   help="generate and use a variant of the synthetic set (SynthConfig field); repeatable")
    p.add_argument("--variants-root", default="data/synth_variants")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    styles = [s for s in a.styles.split(",") if s]
    if a.diagnose:
        diagnose(a.config, styles)
        return
    presets = [s for s in a.presets.split(",") if s]
    data_root, cache = Path(a.data_root), Path(a.cache)
    if a.synth:
        data_root, cache = synth_variant(a.synth, Path(a.variants_root))
    cache, splits, truth = ensure_data(data_root, cache, a.splits)
    if a.only_split is not None:
        splits = [splits[a.only_split]]
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {}
    t0 = time.time()
    for style in styles:
        for preset in presets:
            for split in splits:
                r = run_one(a.config, style, preset, cache, split, truth, out, a.set, a.table_only)
                if r is None:
                    continue
                results.setdefault((style, preset), []).append(r)
                line = f"[{time.time() - t0:6.0f} s] {style:<14} {preset:<13} {split.stem}:"
                for subset in (("val", "test") if a.select_on == "both" else (a.select_on,)):
                    if f"{subset}_acc" in r:
                        line += (f" {subset} acc {r[f'{subset}_acc']:.3f} temporal/uniform "
                                 f"{_ratio(r, 'temporal_on_key', subset):.2f} spatial/uniform "
                                 f"{_ratio(r, 'spatial_in_box', subset):.2f};")
                print(line + f" ({r['seconds']:.0f} s, best epoch {r.get('best_epoch')})", flush=True)
    from vaanet.config import load_config

    chance = 1.0 / load_config(a.config).model.num_classes
    for subset in (("val", "test") if a.select_on == "both" else (a.select_on,)):
        print()
        print(f"{subset} ({'settings are chosen on this table' if subset == 'val' else 'report only; not used to choose'}):")
        print(table(results, styles, presets, chance, subset))


if __name__ == "__main__":
    main()
