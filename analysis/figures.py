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
    ax.errorbar(g["lam"], g["mean"] * 100, yerr=g["std"].fillna(0) * 100, marker="o", capsize=3)
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
    """Summed test confusion matrix per preset, from the runs' confusion_matrix.csv artifacts."""
    import mlflow

    from vaanet.figures import draw_confusion

    plt = _plt()
    paths = []
    ok = runs[runs["status"] == "FINISHED"]
    for preset, part in ok.groupby("preset"):
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
        paths.append(_save(fig, out / f"confusion_{preset.replace('+', '-')}.{fmt}"))
    return paths


def attention_truth_figure(runs: pd.DataFrame, order: list[str], path: Path) -> Path | None:
    plt = _plt()
    ok = runs[runs["status"] == "FINISHED"]
    if "test_temporal_on_key" not in ok:
        return None
    scored = ok.dropna(subset=["test_temporal_on_key"])  # audio-only presets have no visual attention
    presets = [p for p in order if p in set(scored["preset"])]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, (metric, chance, title) in zip(axes, [
            ("test_temporal_on_key", "test_temporal_on_key_uniform", "temporal attention on key segments"),
            ("test_spatial_in_box", "test_spatial_in_box_uniform", "spatial attention inside the evidence box")]):
        means = [ok.loc[ok["preset"] == p, metric].mean() * 100 for p in presets]
        chances = [ok.loc[ok["preset"] == p, chance].mean() * 100 for p in presets]
        x = np.arange(len(presets))
        ax.bar(x - 0.2, means, 0.4, label="learned")
        ax.bar(x + 0.2, chances, 0.4, label="uniform", color="lightgrey")
        ax.set_xticks(x, presets, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("share (%)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def run_title(checkpoint: str | Path) -> str:
    """``run <name>, <preset>, epoch <k>`` from a checkpoint's config (not its folder name or timestamp)."""
    import torch

    from vaanet.config import Config

    path = Path(checkpoint)
    path = path / "best_model.pt" if path.is_dir() else path
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    cfg = Config.from_dict(ckpt["config"])
    epoch = f", epoch {ckpt['epoch'] + 1}" if "epoch" in ckpt else ""
    return f"run {cfg.run.name}, {cfg.model.preset or 'custom'} attention{epoch}"


def figure3(checkpoint: str | Path, videos: list[str | Path], path: str | Path) -> Path:
    """The paper's Figure 3 for several videos: frames with spatial heat maps and temporal colour cells."""
    from vaanet.figures import attention_figure
    from vaanet.predict import attention_rows

    rows = attention_rows(checkpoint, videos)
    return attention_figure(rows, path, title=run_title(checkpoint))
