"""Evaluation: classification metrics and attention statistics (against the synthetic ground truth)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..losses import polarity_vector

TEMPORAL_TARGET = 2.0  # attention on the planted key segments, as a multiple of uniform: the demo's target


@torch.no_grad()
def predict(model, loader, device, autocast_dtype=None) -> dict[str, np.ndarray | list]:
    """Run ``model`` over ``loader``; multi-view items ([B, V, ...]) have their class probabilities
    and attention maps averaged over the views. Returns numpy arrays keyed by name."""
    was_training = model.training
    model.eval()
    out: dict[str, list] = {k: [] for k in ("probs", "labels", "video_ids", "temporal", "spatial", "audio_temporal", "crop",
                                            "centres", "spatial_views", "crop_views", "temporal_views", "centres_views")}
    for batch in loader:
        visual, audio = batch.get("visual"), batch.get("audio")
        multi = (visual is not None and visual.dim() == 7) or (audio is not None and audio.dim() == 6)
        B = len(batch["label"])
        V = (visual if visual is not None else audio).shape[1] if multi else 1
        if multi:
            visual = visual.flatten(0, 1) if visual is not None else None
            audio = audio.flatten(0, 1) if audio is not None else None
        visual = visual.to(device, non_blocking=True) if visual is not None else None
        audio = audio.to(device, non_blocking=True) if audio is not None else None
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            res = model(visual, audio)
        probs = torch.softmax(res.logits.float(), dim=1).view(B, V, -1).mean(1)
        out["probs"].append(probs.cpu().numpy())
        out["labels"].append(batch["label"].numpy())
        out["video_ids"] += list(batch["video_id"])
        for name in ("temporal", "spatial", "audio_temporal"):
            a = getattr(res, name)
            if a is not None:
                out[name].append(a.float().view(B, V, *a.shape[1:]).mean(1).cpu().numpy())
                if multi and name in ("temporal", "spatial"):  # each view's map, scored against its own crop/snippets
                    out[f"{name}_views"].append(a.float().view(B, V, *a.shape[1:]).cpu().numpy())
        if "crop" in batch:
            crop = batch["crop"][:, 0] if multi else batch["crop"]
            out["crop"].append(crop.numpy())
            if multi:
                out["crop_views"].append(batch["crop"].numpy())
        centres = batch["centres"][:, 0] if multi else batch["centres"]
        out["centres"].append(centres.numpy())
        if multi:
            out["centres_views"].append(batch["centres"].numpy())
    model.train(was_training)
    return {k: (np.concatenate(v) if v and k != "video_ids" else v) for k, v in out.items()}


def classification_metrics(probs: np.ndarray, labels: np.ndarray, classes, polarity=None) -> dict:
    """accuracy (the paper's 'Average'), mean class accuracy, per-class accuracy, polarity accuracy,
    and the confusion matrix (rows: true class, columns: predicted)."""
    C = len(classes)
    pred = probs.argmax(1)
    confusion = np.zeros((C, C), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    support = confusion.sum(1)
    per_class = np.divide(np.diag(confusion), support, out=np.full(C, np.nan), where=support > 0)
    pol = polarity_vector(classes, polarity).numpy()
    return dict(
        acc=float((pred == labels).mean()) if len(labels) else float("nan"),
        mean_class_acc=float(np.nanmean(per_class)) if np.isfinite(per_class).any() else float("nan"),
        polarity_acc=float((pol[pred] == pol[labels]).mean()) if len(labels) else float("nan"),
        per_class={c: float(a) for c, a in zip(classes, per_class)},
        confusion=confusion,
    )


def _intervals(text) -> list[tuple[float, float]]:
    if not isinstance(text, str) or not text:
        return []
    return [tuple(float(x) for x in part.split("-")) for part in text.split(";")]


def box_overlap(truth_row, crop, feature_side: int, crop_size: int) -> np.ndarray:
    """Share of each of the feature_side**2 conv5 cells (row-major) inside the evidence box of ``truth_row``
    (box_x0..box_y1 as fractions of the frame), for a crop ``(y0, x0, H, W)``: offset and resized frame size."""
    y0, x0, H, W = crop
    cell = crop_size / feature_side
    edges = np.arange(feature_side + 1) * cell
    by0, by1 = truth_row["box_y0"] * H, truth_row["box_y1"] * H
    bx0, bx1 = truth_row["box_x0"] * W, truth_row["box_x1"] * W
    ys = np.clip(np.minimum(y0 + edges[1:], by1) - np.maximum(y0 + edges[:-1], by0), 0, None)
    xs = np.clip(np.minimum(x0 + edges[1:], bx1) - np.maximum(x0 + edges[:-1], bx0), 0, None)
    return (ys[:, None] * xs[None, :]).reshape(-1) / cell**2


def check_truth(truth: pd.DataFrame, items: pd.DataFrame, truth_path, cache) -> None:
    """The ground truth describes the cached videos: every one of ``items`` (index rows) is in it, with the
    same class and duration. A truth file of another generated set (same names, other draws) would score
    the attention against boxes and key segments that are not in the frames."""
    t = truth.set_index("video_id")
    absent = [v for v in items["video_id"] if v not in t.index]
    if absent:
        raise ValueError(f"{truth_path} has no row for {len(absent)} videos of {cache} (first: {absent[:3]}); "
                         "point data.truth at the synth_truth.csv of the videos this cache was prepared from")
    joined = items.set_index("video_id")[["class_name", "duration"]].join(t[["class_name", "duration"]], rsuffix="_truth")
    wrong = joined[(joined["class_name"] != joined["class_name_truth"])
                   | ((joined["duration"] - joined["duration_truth"]).abs() > 0.2)]
    if len(wrong):
        v = wrong.index[0]
        raise ValueError(f"{truth_path} does not describe the videos of {cache}: {len(wrong)} differ (first: {v}, "
                         f"{wrong.loc[v, 'class_name']} {wrong.loc[v, 'duration']:.3f} s cached vs "
                         f"{wrong.loc[v, 'class_name_truth']} {wrong.loc[v, 'duration_truth']:.3f} s in the truth); "
                         "prepare the cache again from the videos of this truth file, or use their truth file")


def attention_metrics(pred: dict, truth: pd.DataFrame | None, feature_side: int | None = None,
                      crop_size: int | None = None) -> dict[str, float]:
    """Mean temporal attention per segment (normalised per video); with ground truth, the share of
    temporal attention on the key segments and of spatial attention inside the evidence box, each
    beside the share a uniform attention would give (chance level)."""
    out: dict[str, float] = {}
    temporal = pred.get("temporal")
    has_temporal = temporal is not None and len(temporal) > 0
    if has_temporal:
        norm = temporal / np.clip(temporal.sum(1, keepdims=True), 1e-12, None)
        for i, v in enumerate(norm.mean(0)):
            out[f"temporal_attention_seg{i}"] = float(v)
    if truth is None:
        return out
    truth = truth.set_index("video_id")
    position = {v: i for i, v in enumerate(pred["video_ids"])}
    ids = [v for v in pred["video_ids"] if v in truth.index]
    if not ids:
        return out
    # multi-view evaluation: each view's map is scored against its own snippets and crop, then averaged (a map
    # averaged over crops at other offsets has no box to be scored against)
    def views(name, like):
        per_view = pred.get(f"{name}_views")
        return per_view if per_view is not None and len(per_view) else like[:, None]

    if has_temporal:
        t_views, c_views = views("temporal", temporal), views("centres", pred["centres"])
        on_key, chance = [], []
        for vid in ids:
            r = position[vid]
            keys = _intervals(truth.loc[vid, "key_times"])
            for a, centres in zip(t_views[r], c_views[r]):
                is_key = np.array([any(lo <= c < hi for lo, hi in keys) for c in centres], dtype=float)
                on_key.append(float((a / max(a.sum(), 1e-12) * is_key).sum()))
                chance.append(float(is_key.mean()))
        out["temporal_on_key"], out["temporal_on_key_uniform"] = float(np.mean(on_key)), float(np.mean(chance))
    spatial = pred.get("spatial")
    if spatial is not None and len(spatial) and feature_side and crop_size and len(pred["crop"]):
        s_views, crops = views("spatial", spatial), views("crop", pred["crop"])
        in_box, chance = [], []
        for vid in ids:
            r = position[vid]
            for a, crop in zip(s_views[r], crops[r]):
                overlap = box_overlap(truth.loc[vid], crop, feature_side, crop_size)
                a = a / np.clip(a.sum(-1, keepdims=True), 1e-12, None)  # [t, m]
                in_box.append(float((a * overlap[None]).sum(-1).mean()))
                chance.append(float(overlap.mean()))
        out["spatial_in_box"], out["spatial_in_box_uniform"] = float(np.mean(in_box)), float(np.mean(chance))
    return out
