"""Figures from runs (lambda sweep, per-class bars, confusion matrices, attention vs truth) and from a
checkpoint (the paper's Figure 3 for several videos). The suffix of each path picks the format: png, or
vector pdf / svg."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per downloaded artifact

import numpy as np
import pandas as pd

from vaanet.figures import PALETTE
from vaanet.train.metrics import TEMPORAL_TARGET  # the demo verdict's target (vaanet.tune.summary): one number


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 150) -> Path:
    """Save (the format from the suffix; dpi only matters for png) and close."""
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    _plt().close(fig)
    return path


def lambda_figure(runs: pd.DataFrame, path: Path) -> Path:
    plt = _plt()
    ok = runs[runs["status"] == "FINISHED"].dropna(subset=["lam"])
    g = ok.groupby("lam")["test_acc"].agg(["mean", "std", "count"]).reset_index()
    fig, ax = plt.subplots(figsize=(4.5, 3))
    # one run has no std: no error bar (NaN draws none; 0 would read as no spread), and the point says n = 1
    ax.errorbar(g["lam"], g["mean"] * 100, yerr=g["std"] * 100, marker="o", capsize=3)
    for lam, mean, n in zip(g["lam"], g["mean"], g["count"]):
        if n < 2:
            ax.annotate("n = 1", (lam, mean * 100), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("PCCE λ (0 = cross-entropy)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("accuracy vs λ (mean ± std over splits)", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def per_class_values(runs: pd.DataFrame, classes: list[str], order: list[str]) -> pd.DataFrame:
    """What :func:`per_class_figure` draws: per preset (in ``order``) and class, the test accuracy (%) as mean and
    std over the preset's finished runs (std NaN for one run) and n, the runs that have a value (0: mean NaN)."""
    ok = runs[runs["status"] == "FINISHED"]
    rows = []
    for p in [p for p in order if p in set(ok["preset"])]:
        part = ok[ok["preset"] == p]
        for c in classes:
            v = part[f"test_acc_{c}"].dropna() * 100 if f"test_acc_{c}" in part else pd.Series(dtype=float)
            rows.append(dict(preset=p, cls=c, mean=v.mean() if len(v) else np.nan,
                             std=v.std() if len(v) > 1 else np.nan, n=len(v)))
    return pd.DataFrame(rows, columns=["preset", "cls", "mean", "std", "n"])


def per_class_figure(runs: pd.DataFrame, classes: list[str], order: list[str], path: Path) -> Path:
    """Per-class test accuracy per preset: mean over runs with std error bars (none for one run), the chance
    line 1/classes, n per preset in the legend; a class without a value is marked "n/a", a zero "0"."""
    plt = _plt()
    values = per_class_values(runs, classes, order)
    presets = list(dict.fromkeys(values["preset"]))
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 3.4))
    width = 0.8 / max(len(presets), 1)
    x = np.arange(len(classes))
    for i, p in enumerate(presets):
        v = values[values["preset"] == p]
        ns = sorted(set(v["n"]))
        n = f"n={ns[0]}" if len(ns) == 1 else f"n={ns[0]}-{ns[-1]}"
        # std error bars clipped to what an accuracy can be (0-100 %): a bar never points past 100
        yerr = np.vstack([np.minimum(v["std"], v["mean"]), np.minimum(v["std"], 100 - v["mean"])])
        ax.bar(x + i * width, v["mean"], width, yerr=yerr, label=f"{p} ({n})", color=PALETTE[i % len(PALETTE)],
                      edgecolor="black", linewidth=0.4, capsize=2, error_kw=dict(elinewidth=0.8, ecolor="black"))
        for xi, m in zip(x + i * width, v["mean"]):
            if not np.isfinite(m) or m == 0:  # a missing class and a zero one differ: "n/a" vs "0"
                ax.text(xi, 1, "n/a" if not np.isfinite(m) else "0", ha="center", va="bottom", fontsize=6,
                        rotation=90, color="dimgrey" if not np.isfinite(m) else "black")
    chance = 100 / len(classes)
    ax.axhline(chance, color="black", linestyle="--", linewidth=1, label=f"chance (1/{len(classes)} = {chance:.1f} %)")
    ax.set_xticks(x + 0.4 - width / 2, classes, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.set_title("per-class test accuracy: mean ± std over runs (n = runs per preset; error bars clipped to 0–100 %)",
                 fontsize=9)
    ax.legend(fontsize=7, title="attentions", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # off bars
    fig.tight_layout()
    return _save(fig, path)


def confusion_figures(runs: pd.DataFrame, uri: str | None, out: Path, fmt: str = "png",
                      order: list[str] | None = None) -> list[Path]:
    """Test confusion matrices summed over the runs of one configuration (data set, study, loss, lambda: only runs
    of one configuration are summed), from the runs' confusion_matrix.csv artifacts: one figure per configuration
    with one panel per preset (in ``order``), each normalised per true class (row %) and titled with its accuracy
    on the summed counts; the summed counts also go to one CSV per preset. Files are named by whichever keys
    differ between the report's runs (``confusion.png``, ``confusion_ve8.png``; ``confusion_VS[_ve8].csv``)."""
    import mlflow

    from vaanet import figures as vfig

    plt = _plt()
    paths = []
    ok = runs[runs["status"] == "FINISHED"]
    keys = [k for k in ("dataset", "study", "loss", "lam") if k in ok]
    varying = [k for k in keys if ok[k].astype(str).nunique() > 1]
    for values, group in ok.groupby(varying, dropna=False) if varying else [((), ok)]:
        values = values if isinstance(values, tuple) else (values,)
        suffix = "".join(f"_{v}" for v in values)
        panels = []
        present = set(group["preset"])
        for preset in [p for p in (order or []) if p in present] + sorted(present - set(order or [])):
            part = group[group["preset"] == preset]  # the keys that do not vary are the same in every run
            total = None
            for run_id in part["run_id"]:
                try:
                    local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="confusion_matrix.csv",
                                                                tracking_uri=uri)
                except Exception:  # noqa: BLE001 - a run without the artifact is skipped
                    continue
                m = pd.read_csv(local, index_col=0)
                total = m if total is None else total + m
            if total is not None:
                csv = out / f"confusion_{str(preset).replace('+', '-')}{suffix}.csv"
                total.to_csv(csv)
                paths.append(csv)
                panels.append((preset, total, len(part)))
        if not panels:
            continue
        k = len(panels[0][1])
        side = 1.2 + 0.45 * k
        fig, axes = plt.subplots(1, len(panels), figsize=(side * len(panels) + 1.2, side + 0.8), squeeze=False,
                                 layout="constrained")
        for i, (ax, (preset, total, n)) in enumerate(zip(axes[0], panels)):
            counts = total.to_numpy(float)
            acc = np.trace(counts) / counts.sum() * 100 if counts.sum() else np.nan
            image = vfig.draw_confusion(ax, counts, list(total.columns),
                                        f"{preset}: accuracy {acc:.1f} %\n({n} runs, {int(counts.sum())} videos)",
                                        normalize=True)
            if i:  # the class names once, on the left
                ax.set_ylabel("")
                ax.tick_params(labelleft=False)
        fig.colorbar(image, ax=list(axes[0]), shrink=0.8, label="% of the true class")
        where = ", ".join(f"{k} {v}" for k, v in zip(varying, values))
        fig.suptitle("test confusion, summed over runs, row-normalised" + (f" ({where})" if where else ""), fontsize=9)
        paths.append(_save(fig, out / f"confusion{suffix}.{fmt}"))
    return paths


ATTENTION_PANELS = {"temporal": ("test_temporal_on_key", "temporal_attention", "temporal attention on key segments"),
                    "spatial": ("test_spatial_in_box", "spatial_attention", "spatial attention inside the evidence box")}


def attention_truth_values(runs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """What :func:`attention_truth_figure` draws: per panel (temporal, spatial) and preset (in ``order``), the
    learned share (%) as mean and std over the finished runs (NaN for one run), n the preset's finished runs, the
    uniform share beside it, and
    ``applies``: False where the preset has no such attention (no temporal attention in VS, VS+VCW; no visual
    attention in AT), whose metric only scores the uniform weights it falls back to: drawn as n/a, not a value."""
    from vaanet.models.vaanet import PRESETS

    ok = runs[runs["status"] == "FINISHED"]
    rows = []
    for panel, (metric, switch, _) in ATTENTION_PANELS.items():
        for p in [p for p in order if p in set(ok["preset"])]:
            part = ok[ok["preset"] == p]
            v = part[metric].dropna() * 100 if metric in part else pd.Series(dtype=float)
            u = part[f"{metric}_uniform"].dropna() * 100 if f"{metric}_uniform" in part else pd.Series(dtype=float)
            applies = bool(PRESETS[p][switch]) if p in PRESETS else len(v) > 0
            v = v if applies else v.iloc[:0]
            applies = applies and len(v) > 0
            rows.append(dict(panel=panel, preset=p, applies=applies, mean=v.mean() if len(v) else np.nan,
                             std=v.std() if len(v) > 1 else np.nan, n=len(part),
                             uniform=u.mean() if applies and len(u) else np.nan))
    return pd.DataFrame(rows, columns=["panel", "preset", "applies", "mean", "std", "n", "uniform"])


def attention_truth_figure(runs: pd.DataFrame, order: list[str], path: Path) -> Path | None:
    """Learned share (%) of temporal attention on the key segments and of spatial attention inside the evidence
    box, per preset (bars: mean over its runs, error bars std where it has more than one), the uniform share as a
    reference line over each bar, the temporal target (2x uniform) dotted; "n/a" where a preset has no such
    attention. None without attention-vs-truth metrics."""
    plt = _plt()
    if "test_temporal_on_key" not in runs and "test_spatial_in_box" not in runs:
        return None
    values = attention_truth_values(runs, order)
    presets = list(dict.fromkeys(values["preset"]))
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(presets) + 4), 3.6))
    x = np.arange(len(presets))
    for ax, (panel, (_, _, title)) in zip(axes, ATTENTION_PANELS.items()):
        v = values[values["panel"] == panel].set_index("preset").loc[presets]
        means = v["mean"].where(v["applies"])
        ax.bar(x, means, 0.6, yerr=v["std"], color=PALETTE[0], edgecolor="black", linewidth=0.5,
                      label="learned (mean ± std)", capsize=4, error_kw=dict(elinewidth=1, ecolor="black"))
        # the value above everything drawn in its column: error bar, uniform line, temporal target
        lines = v["uniform"] * (TEMPORAL_TARGET if panel == "temporal" else 1)
        for xi, m, s, line in zip(x, means, v["std"], lines):
            if np.isfinite(m):
                ax.annotate(f"{m:.1f}" + (f" ± {s:.1f}" if np.isfinite(s) else ""),
                            (xi, np.nanmax([m + np.nan_to_num(s), line])), textcoords="offset points", xytext=(0, 3),
                            ha="center", fontsize=7)
        ax.hlines(v["uniform"], x - 0.4, x + 0.4, colors="black", linestyles="--", linewidth=1.2,
                  label="uniform attention (chance)")
        top = np.nanmax(np.r_[means + v["std"].fillna(0), v["uniform"], 1.0])
        if panel == "temporal":
            ax.hlines(TEMPORAL_TARGET * v["uniform"], x - 0.4, x + 0.4, colors=PALETTE[1], linestyles=":",
                      linewidth=2, label=f"target: {TEMPORAL_TARGET:g}× uniform")
            top = np.nanmax(np.r_[top, TEMPORAL_TARGET * v["uniform"]])
        for xi, ok in zip(x, v["applies"]):
            if not ok:
                ax.text(xi, top * 0.04, f"n/a\n(no {panel}\nattention)", ha="center", va="bottom", fontsize=7,
                        color="dimgrey")
        ax.set_ylim(0, top * 1.2)
        ax.set_xlim(-0.7, len(presets) - 0.3)
        ax.set_xticks(x, [f"{p}\n(n={n})" for p, n in zip(presets, v["n"])], fontsize=7)
        ax.set_ylabel("share (%)")
        ax.set_title(title, fontsize=9)
    handles = {h.get_label(): h for ax in axes for h in ax.get_legend_handles_labels()[0]}
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=3, fontsize=8, frameon=False,
               title="n = runs per preset; error bars: std over runs (none for one run)", title_fontsize=7)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return _save(fig, path)


def run_title(checkpoint: str | Path) -> str:
    """The header of a checkpoint's attention figure (:func:`vaanet.predict.run_title`)."""
    import torch

    from vaanet.config import Config
    from vaanet.predict import run_title as title

    path = Path(checkpoint)
    path = path / "best_model.pt" if path.is_dir() else path
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return title(Config.from_dict(ckpt["config"]), ckpt)


def figure3(checkpoint: str | Path, videos: list[str | Path], path: str | Path, truth: str | Path | None = None) -> Path:
    """The paper's Figure 3 for several videos: frames with spatial heat maps and temporal colour cells; on the
    synthetic set (``truth``, default the run's ``data.truth``) key segments and evidence boxes. A video not in
    the truth file is named in one line on stdout."""
    from vaanet.figures import attention_figure
    from vaanet.predict import attention_rows

    notes: list[str] = []
    rows = attention_rows(checkpoint, videos, truth, notes)
    for note in notes:
        print(note)
    return attention_figure(rows, path, title=run_title(checkpoint))
