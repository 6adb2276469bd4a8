"""Figure 3 of the paper: sampled frames with the spatial attention as a heat map (with its colour scale)
and the temporal attention as a colour cell under each frame (red = more attention), one row per video,
headed by the true and the predicted class (a misprediction in red)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

RIGHT, WRONG, UNKNOWN = "darkgreen", "red", "black"


def _heading(row: dict) -> tuple[str, str]:
    """Row heading and its colour: ``name: true X, predicted Y (p)``; red when Y != X."""
    pred, true = row.get("predicted"), row.get("true")
    if pred is None:
        return row.get("label", ""), UNKNOWN
    text = f"{row['name']}: " if row.get("name") else ""
    text += (f"true {true}, " if true is not None else "") + f"predicted {pred}"
    if row.get("probability") is not None:
        text += f" ({row['probability']:.2f})"
    if true is None:
        return text, UNKNOWN
    return (text, RIGHT) if pred == true else (text + " - WRONG", WRONG)


def _ink(rgba) -> str:
    """Readable text colour on a cell of colour ``rgba``."""
    return "black" if 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] > 0.55 else "white"


def draw_attention(rows: list[dict], title: str | None = None):
    """The figure (matplotlib ``Figure``) for ``rows``, one dict per video:

    * ``frames`` uint8 [t, S, S, 3]: the centre frame of each snippet, as cropped (required);
    * ``spatial`` [t, m] spatial attention (m a square number) and ``temporal`` [t], each or None;
    * ``predicted`` class name, and optionally ``true`` class name, ``probability`` of the prediction and
      ``name`` of the video (without ``predicted``, the free text ``label`` heads the row);
    * on the synthetic set, optionally ``key_segments`` (indices into the t shown segments, outlined in lime
      and marked "key") and ``box`` (x0, y0, x1, y1) of the evidence as fractions of the shown frame (dashed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    t = rows[0]["frames"].shape[0]
    peaks = [float(np.max(r["spatial"])) for r in rows if r.get("spatial") is not None]
    snorm = Normalize(0.0, max(peaks) if peaks else 1.0)  # one scale for every heat map: one colour bar
    fig = plt.figure(figsize=(1.6 * t + 0.9, 2.3 * len(rows) + (0.4 if title else 0)))
    grid = fig.add_gridspec(2 * len(rows), t + 1, height_ratios=[6, 1.2] * len(rows),
                            width_ratios=[1] * t + [0.08], hspace=0.3, wspace=0.05)
    for r, row in enumerate(rows):
        frames, spatial, temporal = row["frames"], row.get("spatial"), row.get("temporal")
        keys = set(int(k) for k in row.get("key_segments") or ())
        S = frames.shape[1]
        weights = np.asarray(temporal if temporal is not None else np.ones(t), dtype=float)
        weights = weights / max(weights.sum(), 1e-12)
        tnorm = Normalize(0.0, max(weights.max(), 2.0 / t))  # uniform attention = mid-scale
        for i in range(t):
            ax = fig.add_subplot(grid[2 * r, i])
            ax.imshow(frames[i])
            if spatial is not None:
                side = int(round(np.sqrt(spatial.shape[1])))
                ax.imshow(spatial[i].reshape(side, side), cmap="jet", norm=snorm, alpha=0.45,
                          extent=(-0.5, S - 0.5, S - 0.5, -0.5), interpolation="bilinear")
            if row.get("box") is not None:
                x0, y0, x1, y1 = row["box"]
                ax.add_patch(Rectangle((x0 * S - 0.5, y0 * S - 0.5), (x1 - x0) * S, (y1 - y0) * S, fill=False,
                                       edgecolor="white", linestyle="--", linewidth=1.2, label="evidence box"))
            ax.set_xticks([])
            ax.set_yticks([])
            if i in keys:
                for spine in ax.spines.values():
                    spine.set_edgecolor("lime")
                    spine.set_linewidth(3)
            if i == 0:
                text, colour = _heading(row)
                ax.set_title(text, loc="left", fontsize=8, color=colour, fontweight="bold" if colour == WRONG else None)
            cell = fig.add_subplot(grid[2 * r + 1, i])  # this segment's temporal weight, right under its frame
            cell.imshow([[weights[i]]], cmap="jet", norm=tnorm, aspect="auto")
            cell.set_xticks([])
            cell.set_yticks([])
            cell.text(0, 0, f"{weights[i]:.2f}" + (" key" if i in keys else ""), ha="center", va="center", fontsize=7,
                      color=_ink(plt.get_cmap("jet")(tnorm(weights[i]))), fontweight="bold" if i in keys else None)
            ax.apply_aspect()  # the frame shrank to a square: give the cell exactly its width
            f, c = ax.get_position(), cell.get_position()
            cell.set_position([f.x0, c.y0, f.width, c.height])
            if i == 0:
                cell.set_ylabel("temporal", fontsize=6, rotation=0, ha="right", va="center")
    if peaks:
        bar = fig.colorbar(ScalarMappable(snorm, "jet"), cax=fig.add_subplot(grid[0, t]))
        bar.set_label("spatial attention", fontsize=7)
        bar.ax.tick_params(labelsize=6)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def attention_figure(rows: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Draw ``rows`` (see ``draw_attention``) into ``path``; its suffix picks the format (png, pdf, svg)."""
    import matplotlib.pyplot as plt

    fig = draw_attention(rows, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_confusion(ax, matrix, classes, title: str | None = None) -> None:
    """A confusion matrix (rows: true class, columns: predicted class) with its counts, white on dark cells."""
    matrix = np.asarray(matrix)
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=7,
                color=_ink(image.cmap(image.norm(v))), fontweight="bold" if i == j else None)
    if title:
        ax.set_title(title, fontsize=8)
