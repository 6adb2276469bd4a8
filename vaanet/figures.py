"""Figure 3 of the paper: sampled frames (in greyscale) with the spatial attention as a coloured heat map on one
fixed scale (:data:`SPATIAL_SCALE`, the same in ``vaanet predict`` and ``analysis.figure3``) and the temporal
attention as a colour cell under each frame, one row per video, headed by the true and the predicted class (a
misprediction in red); the report's confusion matrices; the colour-blind-safe palette of the figures."""
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


SPATIAL_CMAP, TEMPORAL_CMAP = "inferno", "viridis"  # perceptual: brightness follows the value
# One scale rule for every attention figure (predict's one video, figure3's several): attention as a ratio to
# uniform on a fixed log scale, clipped at both ends, so that a map's colours never depend on the other maps.
SPATIAL_SCALE = (0.25, 4.0)
SPATIAL_LABEL = "spatial attention ÷ uniform\n(1 = spread evenly; fixed log scale)"
SCALE_RULE = ("spatial heat maps (frames in grey): attention ÷ uniform on one fixed log scale, ¼ to 4 (clipped), "
              "the same in every figure")
SPATIAL_ALPHA = 0.55  # the heat map over greyscale frames: colour is attention only
KEY_COLOUR = "lime"
# Okabe & Ito's colour-blind-safe palette (blue, orange, sky blue, bluish green, reddish purple, vermillion, yellow)
PALETTE = ["#0072B2", "#E69F00", "#56B4E9", "#009E73", "#CC79A7", "#D55E00", "#F0E442"]


def spatial_norm():
    """The colour scale of every spatial heat map (:data:`SPATIAL_SCALE`), whatever the figure's videos."""
    from matplotlib.colors import LogNorm

    return LogNorm(*SPATIAL_SCALE, clip=True)


def greyscale(frames) -> np.ndarray:
    """uint8 frames [..., 3] as grey RGB (luma), so that only the heat map is coloured."""
    f = np.asarray(frames, dtype=float)
    return np.repeat((f @ np.array([0.299, 0.587, 0.114]))[..., None], 3, -1).round().astype(np.uint8)


def spatial_ratio(spatial) -> np.ndarray:
    """Spatial attention [t, m] as a ratio to uniform: each map divided by its mean (so 1 = the weight every
    position would get from an even spread, 2 = twice that). The model's maps sum to 1 (paper styles) or to m
    (reference style); the ratio is the same in every style."""
    a = np.asarray(spatial, dtype=float)
    return a / np.clip(a.mean(-1, keepdims=True), 1e-12, None)


def draw_attention(rows: list[dict], title: str | None = None):
    """The figure (matplotlib ``Figure``) for ``rows``, one dict per video:

    * ``frames`` uint8 [t, S, S, 3]: the centre frame of each snippet, as cropped (required);
    * ``spatial`` [t, m] spatial attention (m a square number) and ``temporal`` [t], each or None;
    * ``predicted`` class name, and optionally ``true`` class name, ``probability`` of the prediction and
      ``name`` of the video (without ``predicted``, the free text ``label`` heads the row);
    * on the synthetic set, optionally ``key_segments`` (indices into the t shown segments, outlined in lime
      and marked "key") and ``box`` (x0, y0, x1, y1) of the evidence as fractions of the shown frame (dashed).

    Frames are drawn in greyscale; spatial maps as ratios to uniform (:func:`spatial_ratio`) on the fixed scale
    :func:`spatial_norm` (one colour bar, the rule in its label); temporal weights are normalised to sum to 1 per video and
    printed in the cell under their own frame. The layout is explicit (inches), so headings, frames, cells and
    videos never overlap whatever the number of segments or videos.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.ticker import NullLocator
    from matplotlib.patches import Rectangle

    t, n = rows[0]["frames"].shape[0], len(rows)
    ratios = [spatial_ratio(r["spatial"]) if r.get("spatial") is not None else None for r in rows]
    snorm = spatial_norm()
    tnorm = Normalize(0.0, 1.0)  # temporal weights are shares of 1
    truth = any(r.get("box") is not None or r.get("key_segments") for r in rows)
    # layout in inches
    P, GX, GAP, CELL, HEAD, BETWEEN = 2.0, 0.08, 0.06, 0.32, 0.34, 0.4
    LEFT, BAR, MARGIN = 0.75, 0.14, 1.9
    TOP = 0.36 if title else 0.08
    BOTTOM = 0.56 if truth else 0.32
    block = HEAD + P + GAP + CELL
    W = LEFT + t * P + (t - 1) * GX + 0.15 + BAR + MARGIN
    H = TOP + n * block + (n - 1) * BETWEEN + BOTTOM
    fig = plt.figure(figsize=(W, H))

    def axes(x, y_top, w, h):  # x, y from the top-left corner, in inches
        return fig.add_axes([x / W, 1 - (y_top + h) / H, w / W, h / H])

    cmap_t = plt.get_cmap(TEMPORAL_CMAP)
    for r, row in enumerate(rows):
        frames, spatial, temporal = row["frames"], ratios[r], row.get("temporal")
        keys = set(int(k) for k in row.get("key_segments") or ())
        S = frames.shape[1]
        weights = np.asarray(temporal if temporal is not None else np.ones(t), dtype=float)
        weights = weights / max(weights.sum(), 1e-12)
        y = TOP + r * (block + BETWEEN) + HEAD
        for i in range(t):
            x = LEFT + i * (P + GX)
            ax = axes(x, y, P, P)
            ax.imshow(greyscale(frames[i]))
            if spatial is not None:
                side = int(round(np.sqrt(spatial.shape[1])))
                ax.imshow(spatial[i].reshape(side, side), cmap=SPATIAL_CMAP, norm=snorm, alpha=SPATIAL_ALPHA,
                          extent=(-0.5, S - 0.5, S - 0.5, -0.5), interpolation="bilinear")
            if row.get("box") is not None:
                x0, y0, x1, y1 = row["box"]
                ax.add_patch(Rectangle((x0 * S - 0.5, y0 * S - 0.5), (x1 - x0) * S, (y1 - y0) * S, fill=False,
                                       edgecolor="white", linestyle="--", linewidth=1.5, label="evidence box"))
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlim(-0.5, S - 0.5)
            ax.set_ylim(S - 0.5, -0.5)
            if i in keys:
                for spine in ax.spines.values():
                    spine.set_edgecolor(KEY_COLOUR)
                    spine.set_linewidth(4)
            if i == 0:
                text, colour = _heading(row)
                ax.set_title(text, loc="left", fontsize=10, color=colour, pad=5,
                             fontweight="bold" if colour == WRONG else None)
            cell = axes(x, y + P + GAP, P, CELL)  # this segment's temporal weight, right under its frame
            cell.imshow([[weights[i]]], cmap=cmap_t, norm=tnorm, aspect="auto")
            cell.set_xticks([])
            cell.set_yticks([])
            cell.text(0, 0, f"{weights[i]:.2f}" + ("  key" if i in keys else ""), ha="center", va="center",
                      fontsize=9, color=_ink(cmap_t(tnorm(weights[i]))), fontweight="bold" if i in keys else None)
            if i in keys:
                for spine in cell.spines.values():
                    spine.set_edgecolor(KEY_COLOUR)
                    spine.set_linewidth(2.5)
            if i == 0:
                cell.set_ylabel("temporal\nweight", fontsize=8, rotation=0, ha="right", va="center", labelpad=6)
            if i == t - 1:
                note = (f"share of the video\n(sums to 1; uniform {1 / t:.2f})" if temporal is not None
                        else "no temporal attention\n(uniform weights)")
                cell.text(1.04 + (0.15 + BAR) / P, 0.5, note, transform=cell.transAxes, fontsize=7, va="center",
                          ha="left", color="dimgrey")
    if any(a is not None for a in ratios):
        cax = axes(LEFT + t * P + (t - 1) * GX + 0.15, TOP + HEAD, BAR, P)
        bar = fig.colorbar(ScalarMappable(snorm, SPATIAL_CMAP), cax=cax)
        bar.set_ticks([0.25, 0.5, 1, 2, 4], labels=["≤ ¼", "½", "1 (uniform)", "2", "≥ 4"])
        bar.ax.yaxis.set_minor_locator(NullLocator())
        bar.set_label(SPATIAL_LABEL, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if any(a is not None for a in ratios):
        fig.text(LEFT / W, (0.34 if truth else 0.1) / H, SCALE_RULE, fontsize=8, ha="left", va="bottom")
    if truth:
        fig.text(LEFT / W, 0.1 / H, "ground truth: key segments outlined in lime and marked \"key\"; "
                 "evidence box dashed white", fontsize=8, ha="left", va="bottom")
    if title:
        fig.suptitle(title, x=LEFT / W, y=1 - 0.1 / H, fontsize=11, ha="left", va="top")
    return fig


def attention_figure(rows: list[dict], path: str | Path, title: str | None = None) -> Path:
    """Draw ``rows`` (see ``draw_attention``) into ``path``; its suffix picks the format (png, pdf, svg)."""
    import matplotlib.pyplot as plt

    fig = draw_attention(rows, title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150, bbox_inches="tight", pad_inches=0.1)
    plt.close(fig)
    return path


def draw_confusion(ax, matrix, classes, title: str | None = None, normalize: bool = False):
    """A confusion matrix (rows: true class, columns: predicted class) with its counts, or with ``normalize``
    each row as % of its true class (0-100; a class without videos blank); white on dark cells. Returns the image
    (for a colour bar)."""
    matrix = np.asarray(matrix, dtype=float)
    if normalize:
        sums = matrix.sum(1, keepdims=True)
        matrix = np.divide(matrix * 100, sums, out=np.full_like(matrix, np.nan), where=sums > 0)
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=100 if normalize else None)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    for (i, j), v in np.ndenumerate(matrix):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.0f}" if normalize else f"{v:g}", ha="center", va="center", fontsize=7,
                    color=_ink(image.cmap(image.norm(v))), fontweight="bold" if i == j else None)
    if title:
        ax.set_title(title, fontsize=8)
    return image
