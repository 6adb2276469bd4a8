"""Figures from runs (lambda sweep, per-class bars, confusion matrices, attention vs truth) and from a
checkpoint (the paper's Figure 3 for several videos). The suffix of each path picks the format: png, or
vector pdf / svg."""
from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bar per downloaded artifact

import numpy as np
import pandas as pd


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


def per_class_figure(runs: pd.DataFrame, classes: list[str], order: list[str], path: Path) -> Path:
    plt = _plt()
    ok = runs[runs["status"] == "FINISHED"]
    presets = [p for p in order if p in set(ok["preset"])]
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2, 3.2))
    width = 0.8 / max(len(presets), 1)
    for i, p in enumerate(presets):
        part = ok[ok["preset"] == p]
        means = [part[f"test_acc_{c}"].mean() * 100 if f"test_acc_{c}" in part else np.nan for c in classes]
        ax.bar(np.arange(len(classes)) + i * width, means, width, label=p)
    ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2, classes, rotation=30, ha="right")
    ax.set_ylabel("test accuracy (%)")
    ax.legend(fontsize=7, title="attentions", title_fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # off bars
    fig.tight_layout()
    return _save(fig, path)


def confusion_figures(runs: pd.DataFrame, uri: str | None, out: Path, fmt: str = "png") -> list[Path]:
    """Summed test confusion matrix per configuration (data set, study, preset, loss, lambda: only runs of one
    configuration are summed), from the runs' confusion_matrix.csv artifacts. A file is named by its preset,
    plus whichever of the other keys differ between the report's runs (e.g. confusion_VS_ve8.png)."""
    import mlflow

    from vaanet.figures import draw_confusion

    plt = _plt()
    paths = []
    ok = runs[runs["status"] == "FINISHED"]
    keys = [k for k in ("preset", "dataset", "study", "loss", "lam") if k in ok]
    varying = [k for k in keys[1:] if ok[k].astype(str).nunique() > 1]
    for values, part in ok.groupby(keys, dropna=False):
        meta = dict(zip(keys, values))
        preset = " ".join([str(meta["preset"])] + [f"{k} {meta[k]}" for k in varying])
        stem = "_".join([str(meta["preset"]).replace("+", "-")] + [str(meta[k]) for k in varying])
        total = None
        for run_id in part["run_id"]:
            try:
                local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="confusion_matrix.csv",
                                                            tracking_uri=uri)
            except Exception:  # noqa: BLE001 - a run without the artifact is skipped
                continue
            m = pd.read_csv(local, index_col=0)
            total = m if total is None else total + m
        if total is None:
            continue
        fig, ax = plt.subplots(figsize=(1.5 + 0.55 * len(total), 1.5 + 0.55 * len(total)))
        draw_confusion(ax, total.values, list(total.columns), f"{preset}: summed over {len(part)} runs")
        fig.tight_layout()
        paths.append(_save(fig, out / f"confusion_{stem}.{fmt}"))
    return paths


def attention_truth_figure(runs: pd.DataFrame, order: list[str], path: Path) -> Path | None:
    """Learned vs uniform share (%) of temporal attention on the key segments and of spatial attention inside the
    evidence box, per preset: mean over the preset's runs (splits), error bars = std where a preset has more
    than one run, each bar labelled with its value; the legend sits below the axes, off the bars."""
    plt = _plt()
    ok = runs[runs["status"] == "FINISHED"]
    if "test_temporal_on_key" not in ok:
        return None
    scored = ok.dropna(subset=["test_temporal_on_key"])  # audio-only presets have no visual attention
    presets = [p for p in order if p in set(scored["preset"])]
    counts = [int((scored["preset"] == p).sum()) for p in presets]
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 2.2 * len(presets) + 4), 3.6))
    for ax, (metric, chance, title) in zip(axes, [
            ("test_temporal_on_key", "test_temporal_on_key_uniform", "temporal attention on key segments"),
            ("test_spatial_in_box", "test_spatial_in_box_uniform", "spatial attention inside the evidence box")]):
        x = np.arange(len(presets))
        top = 0.0
        for offset, column, label, colour in ((-0.2, metric, "learned", "tab:blue"),
                                              (0.2, chance, "uniform (chance)", "lightgrey")):
            values = [scored.loc[scored["preset"] == p, column].dropna() * 100 if column in scored else pd.Series(dtype=float)
                      for p in presets]
            means = np.array([v.mean() if len(v) else np.nan for v in values])
            stds = np.array([v.std() if len(v) > 1 else np.nan for v in values])  # std over splits
            bars = ax.bar(x + offset, means, 0.4, label=label, color=colour, edgecolor="dimgrey", linewidth=0.5,
                          yerr=np.nan_to_num(stds), capsize=4 if np.isfinite(stds).any() else 0,
                          error_kw=dict(elinewidth=1, ecolor="black"))
            ax.bar_label(bars, labels=[f"{m:.1f}" + (f"\n±{sd:.1f}" if np.isfinite(sd) else "") if np.isfinite(m) else ""
                                       for m, sd in zip(means, stds)], padding=2, fontsize=7)
            top = max(top, np.nanmax(np.nan_to_num(means) + np.nan_to_num(stds)) if len(means) else 0.0)
        ax.set_ylim(0, top * 1.25 if top > 0 else 1)
        ax.set_xlim(-0.7, len(presets) - 0.3)
        ax.set_xticks(x, [f"{p}\n(n={n})" for p, n in zip(presets, counts)], fontsize=7)
        ax.set_ylabel("share (%)")
        ax.set_title(title, fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()
    spread = "error bars: std over splits" if max(counts, default=0) > 1 else "one run per preset: no error bars"
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False,
               title=f"mean over the runs (n = runs per preset); {spread}", title_fontsize=7)
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return _save(fig, path)


def run_title(checkpoint: str | Path) -> str:
    """``run <name>, <preset> attention, selected at epoch <k>`` from a checkpoint's config (not its folder name or
    timestamp). ``best_model.pt`` stores the epoch of its weights counted from 1 (as ``best_epoch``)."""
    import torch

    from vaanet.config import Config

    path = Path(checkpoint)
    path = path / "best_model.pt" if path.is_dir() else path
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    cfg = Config.from_dict(ckpt["config"])
    epoch = f", selected at epoch {int(ckpt['epoch'])}" if "epoch" in ckpt else ""
    return f"run {cfg.run.name}, {cfg.model.preset or 'custom'} attention{epoch}"


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
