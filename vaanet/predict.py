"""``vaanet predict VIDEO --checkpoint CKPT``: emotion distribution, polarity and an attention figure
for one video file, from a checkpoint written by training (``best_model.pt`` or its folder)."""
from __future__ import annotations

import json
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd
import torch

from .config import Config
from .data.dataset import VideoEmotionDataset
from .data.discovery import Job
from .data.ingest import INDEX_COLUMNS, MANIFEST_FILE, PrepareConfig, prepare_video
from .figures import attention_figure
from .losses import polarity_vector
from .models.pretrained import CheckpointError
from .models.vaanet import VAANet


def checkpoint_of_run(run_id: str, uri: str | None = None) -> Path:
    """The selected weights of an MLflow run: its ``model/best_model.pt`` artifact, else the file its
    ``checkpoint`` tag names."""
    from mlflow.tracking import MlflowClient

    from .train.store import default_tracking_uri

    uri = uri or default_tracking_uri()
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"no MLflow run {run_id} in {uri} ({type(e).__name__}); pass --mlflow-uri of its store") from e
    if any(a.path == "model/best_model.pt" for a in client.list_artifacts(run_id, "model")):
        import mlflow.artifacts

        return Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model/best_model.pt",
                                                        tracking_uri=uri))
    path = run.data.tags.get("checkpoint")
    if path and Path(path).is_file():
        return Path(path)
    raise FileNotFoundError(f"MLflow run {run_id} ({run.info.run_name}, {run.info.status}) has no selected weights "
                            f"{'at ' + path if path else '(it did not finish)'}; pass --checkpoint <run folder>")


def load_checkpoint(path: str | Path) -> tuple[VAANet, Config, dict]:
    """Model (eval mode) and config from ``best_model.pt`` (or a checkpoint folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "best_model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} not found; pass best_model.pt or the checkpoint folder that holds it")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from e
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path} is not a vaanet checkpoint (expected keys 'model' and 'config'; "
                              "a backbone weight file goes into model.visual_weights instead)")
    try:
        cfg = Config.from_dict(ckpt["config"])
    except ValueError as e:
        raise CheckpointError(f"{path} holds an incompatible config: {e}") from e
    if cfg.model.visual and cfg.model.pixel_normalization is None:  # written before configs were saved complete
        raise CheckpointError(f"{path} does not record the pixel normalisation its model was trained with; "
                              "retrain with this vaanet version (checkpoints now store the effective config)")
    model = VAANet(replace(cfg.model, visual_weights=None, audio_weights=None))  # weights come from the checkpoint
    missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{path} does not fit the model of its own config: missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]}")
    return model.eval(), cfg, ckpt


def run_title(cfg: Config, ckpt: dict) -> str:
    """``run <name>, <preset> attention, selected at epoch <k>`` from a checkpoint's config (not its folder name or
    timestamp); ``best_model.pt`` stores the epoch of its weights counted from 1 (as ``best_epoch``). The header of
    the attention figures of ``vaanet predict`` and ``analysis.figure3``."""
    epoch = f", selected at epoch {int(ckpt['epoch'])}" if "epoch" in ckpt else ""
    return f"run {cfg.run.name}, {cfg.model.preset or 'custom'} attention{epoch}"


def _check_is_video(video: Path) -> None:
    """Refuse what is not a video (text, subtitles, an image) before it gets classified."""
    import av

    from .data.containers import check_container

    if not video.is_file():
        raise FileNotFoundError(f"video {video} not found")
    try:
        container = av.open(str(video))
    except Exception as e:  # noqa: BLE001 - PyAV raises many types for a non-video
        raise ValueError(f"{video} is not a video file ({type(e).__name__}: {str(e)[:120]}); pass an mp4/avi/mkv/... file") from e
    with container:
        check_container(container, video)


def _infer(model, cfg: Config, ckpt: dict, video: Path):
    """Decode one video exactly as training did (prepare + evaluation sampling) and run the model."""
    _check_is_video(video)
    prep = {k: v for k, v in (ckpt.get("prepare") or {}).items() if k in {f.name for f in fields(PrepareConfig)}}
    prep.setdefault("short_side", round(cfg.model.crop_size * 8 / 7))
    prep.setdefault("frames", "raw")  # a cache prepared before formats existed stored raw frames
    pc = PrepareConfig(**{**prep, "dataset": cfg.data.dataset, "workers": 1})
    classes = cfg.data.classes
    with tempfile.TemporaryDirectory(prefix="vaanet-predict-") as tmp:
        tmp = Path(tmp)
        try:
            row = prepare_video(Job("video", classes[0], 0, str(video)), tmp, pc)
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"cannot read {video} as a video ({type(e).__name__}: {e}); is it a complete video file?") from e
        if row["frames"] < 2:
            raise ValueError(f"{video} holds a single still frame, not a video; pass a video file")
        pd.DataFrame([row], columns=INDEX_COLUMNS).to_csv(tmp / "index.csv", index=False)
        (tmp / MANIFEST_FILE).write_text(json.dumps({k: v for k, v in vars(pc).items() if k != "workers"}))
        split = pd.DataFrame({"video_id": ["video"], "label": [0], "class_name": [classes[0]], "subset": ["test"]})
        # the run's own evaluation views (data.temporal_views / spatial_views), so that the probabilities are
        # those its test predictions were computed with (averaged over the views, as in training's evaluation)
        item = VideoEmotionDataset(tmp, split, "test", cfg.sampling, visual=cfg.model.visual, audio=cfg.model.audio)[0]
    views = cfg.sampling.temporal_views * cfg.sampling.spatial_views
    batch = {k: (v if views > 1 else v[None]) for k, v in item.items() if k in ("visual", "audio")}
    with torch.no_grad():
        out = model(batch.get("visual"), batch.get("audio"))
    probs = torch.softmax(out.logits.float(), 1).mean(0).numpy()
    if views > 1:  # the figure shows the first view: its snippets, crop and attention maps
        item = {k: (v[0] if torch.is_tensor(v) and v.dim() > 0 and len(v) == views else v) for k, v in item.items()}
        out = out._replace(**{f: (None if getattr(out, f) is None else getattr(out, f)[:1]) for f in out._fields})
    return probs, item, out


def read_truth(path: str | Path) -> pd.DataFrame:
    """A ``synth_truth.csv`` indexed by video id (its path kept in ``attrs["path"]`` for messages)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"truth file {path} not found; pass the synth_truth.csv written with the synthetic videos")
    table = pd.read_csv(path, dtype={"video_id": str}).set_index("video_id")
    table.attrs["path"] = str(path)
    return table


def key_segments(truth_row, centres) -> list[int]:
    """Indices of the shown segments that are key segments of the truth: those whose snippet centre (seconds)
    falls in one of the row's ``key_times`` intervals - the mapping the attention metrics score
    (:func:`vaanet.train.metrics.attention_metrics`)."""
    from .train.metrics import _intervals

    keys = _intervals(truth_row["key_times"])
    return [i for i, c in enumerate(list(centres)) if any(a <= float(c) < b for a, b in keys)]


def true_class(truth: pd.DataFrame | None, video: Path) -> str | None:
    """The video's class in a ``synth_truth.csv`` (its ``class_name``); None without one or when not in it."""
    if truth is None or video.stem not in truth.index or "class_name" not in truth:
        return None
    return str(truth.loc[video.stem, "class_name"])


def _truth_overlay(truth: pd.DataFrame | None, video: Path, item: dict, crop_size: int,
                   notes: list[str] | None = None) -> dict:
    """Key segments (indices of the shown segments) and the evidence box (fractions of the shown crop)
    of a synthetic video, from its ``synth_truth.csv`` row; {} for any other video (with a line in ``notes``)."""
    if truth is None:
        return {}
    if video.stem not in truth.index:
        if notes is not None:
            notes.append(f"note: {video.stem} is not in the truth file {truth.attrs.get('path', '')}: "
                         "no key segments or evidence box drawn")
        return {}
    row = truth.loc[video.stem]
    keys = key_segments(row, item["centres"].tolist())
    y0, x0, H, W = (float(v) for v in item["crop"]) if "crop" in item else (0.0, 0.0, crop_size, crop_size)
    box = [(row["box_x0"] * W - x0) / crop_size, (row["box_y0"] * H - y0) / crop_size,
           (row["box_x1"] * W - x0) / crop_size, (row["box_y1"] * H - y0) / crop_size]
    return {"key_segments": keys, "box": [min(max(v, 0.0), 1.0) for v in box]}


def _figure_row(cfg: Config, item: dict, out, probs, video: Path, truth: pd.DataFrame | None = None,
                notes: list[str] | None = None) -> dict:
    """One Figure 3 row (see :func:`vaanet.figures.draw_attention`): the true class is the truth file's
    (:func:`true_class`), else the video's class folder when it names one (``<root>/<Class>/<video>``)."""
    k, classes = cfg.model.frames, cfg.data.classes
    true = true_class(truth, video) or next((c for c in classes if c.lower() == video.parent.name.lower()), None)
    return dict(frames=item["visual"][:, :, k // 2].permute(0, 2, 3, 1).numpy(),  # centre frame of each snippet
                spatial=out.spatial[0].numpy() if out.spatial is not None else None,
                temporal=out.temporal[0].numpy() if out.temporal is not None else None,
                predicted=classes[int(probs.argmax())], probability=float(probs.max()), true=true, name=video.stem,
                **_truth_overlay(truth, video, item, cfg.model.crop_size, notes))


def attention_rows(checkpoint: str | Path, videos, truth: str | Path | None = None,
                   notes: list[str] | None = None) -> list[dict]:
    """One figure row (frames, spatial and temporal attention, true and predicted class, and on the
    synthetic set its key segments and evidence box) per video. ``truth`` defaults to the training
    run's ``data.truth`` when that file exists; a video not in it gets a line in ``notes``."""
    model, cfg, ckpt = load_checkpoint(checkpoint)
    if not cfg.model.visual:
        raise ValueError(f"{checkpoint} is an audio-only model ({cfg.model.preset}): it has no spatial attention to draw")
    if truth:
        table = read_truth(truth)
    else:
        table = read_truth(cfg.data.truth) if cfg.data.truth and Path(cfg.data.truth).is_file() else None
    rows = []
    for video in videos:
        probs, item, out = _infer(model, cfg, ckpt, Path(video))
        rows.append(_figure_row(cfg, item, out, probs, Path(video), table, notes))
    return rows


def predict_video(video: str | Path, checkpoint: str | Path, figure: str | Path | None = None,
                  truth: str | Path | None = None) -> dict:
    """Class probabilities, prediction and polarity of ``video``; with ``figure``, its attention figure headed by
    the run and epoch (:func:`run_title`); with ``truth`` (a ``synth_truth.csv``), the video's true class
    (``result["true"]``) and, on the figure, its key segments and evidence box, when the video is in it (else
    ``result["note"]`` says it is not)."""
    model, cfg, ckpt = load_checkpoint(checkpoint)
    video = Path(video)
    table = read_truth(truth) if truth else None
    probs, item, out = _infer(model, cfg, ckpt, video)
    classes = cfg.data.classes
    pol = polarity_vector(classes).numpy()
    result = {
        "probabilities": {c: float(p) for c, p in zip(classes, probs)},
        "prediction": classes[int(probs.argmax())],
        "polarity": "positive" if pol[int(probs.argmax())] == 1 else "negative",
        "p_positive": float(probs[pol == 1].sum()),
    }
    if true_class(table, video) is not None:
        result["true"] = true_class(table, video)
    notes: list[str] = []
    if figure is not None and "visual" in item:
        result["figure"] = str(attention_figure([_figure_row(cfg, item, out, probs, video, table, notes)], figure,
                                                title=run_title(cfg, ckpt)))
    elif table is not None and video.stem not in table.index:
        notes.append(f"note: {video.stem} is not in the truth file {table.attrs['path']}")
    if notes:
        result["note"] = notes[0]
    return result


def format_result(result: dict) -> str:
    lines = [f"{c:<14}{p:6.3f}  {'#' * int(round(30 * p))}" for c, p in
             sorted(result["probabilities"].items(), key=lambda kv: -kv[1])]
    lines.append(f"prediction: {result['prediction']}  polarity: {result['polarity']} "
                 f"(P(positive) = {result['p_positive']:.3f})")
    if "true" in result:
        verdict = "right" if result["true"] == result["prediction"] else "WRONG"
        lines.append(f"true class: {result['true']} (truth file): prediction {verdict}")
    if "figure" in result:
        lines.append(f"attention figure: {result['figure']}")
    if "note" in result:
        lines.append(result["note"])
    return "\n".join(lines)


