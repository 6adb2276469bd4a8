"""Figure 3 of the paper: sampled frames with the spatial attention as a heat map and the temporal
attention as a colour bar (red = more attention)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def attention_figure(rows: list[dict], path: str | Path, title: str | None = None) -> Path:
    """rows: one dict per video with ``frames`` uint8 [t, S, S, 3] (the centre frame of each snippet, as
    cropped), ``spatial`` [t, m] (or None), ``temporal`` [t] (or None) and ``label`` text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = rows[0]["frames"].shape[0]
    fig = plt.figure(figsize=(1.6 * t, 2.1 * len(rows) + (0.4 if title else 0)))
    grid = fig.add_gridspec(2 * len(rows), t, height_ratios=[6, 1] * len(rows), hspace=0.35, wspace=0.05)
    for r, row in enumerate(rows):
        frames, spatial, temporal = row["frames"], row.get("spatial"), row.get("temporal")
        S = frames.shape[1]
        for i in range(t):
            ax = fig.add_subplot(grid[2 * r, i])
            ax.imshow(frames[i])
            if spatial is not None:
                side = int(round(np.sqrt(spatial.shape[1])))
                heat = spatial[i].reshape(side, side)
                ax.imshow(heat, cmap="jet", alpha=0.45, extent=(-0.5, S - 0.5, S - 0.5, -0.5), interpolation="bilinear")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(row.get("label", ""), fontsize=8)
        bar = fig.add_subplot(grid[2 * r + 1, :])
        weights = np.asarray(temporal if temporal is not None else np.ones(t), dtype=float)
        weights = weights / max(weights.sum(), 1e-12)
        bar.imshow(weights[None, :], cmap="jet", aspect="auto", vmin=0, vmax=max(weights.max(), 2.0 / t))  # uniform = mid-scale
        bar.set_yticks([])
        bar.set_xticks(range(t), [f"{w:.2f}" for w in weights], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
