"""The training function: one configuration, one split, start to finish.

``train_fn(config)`` is what Ray Train's TorchTrainer runs on every worker (DDP when there are several);
``fit_local(cfg)`` runs the very same function in this process without Ray, for debugging.
Paper defaults: Adam lr 2e-4, 32 videos per step, 150 epochs, PCCE lambda 0.5. Model selection on the
validation subset; the selected model is evaluated once on test at the end.

The run's state (model, optimizer, epochs, history, best weights, tracker) is one
:class:`~vaanet.train.state.TrainState`, which also writes the checkpoints (see :mod:`vaanet.train.state`);
where they go depends on the session the loop runs in (:mod:`vaanet.train.session`). The final checkpoint
holds the selected weights too: ``vaanet predict --checkpoint`` takes it or the run folder.
"""
from __future__ import annotations

import itertools
import shutil
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ..config import Config, divisors
from ..data.dataset import EpochSampler, VideoEmotionDataset
from ..faults import hold
from ..losses import PCCELoss
from ..models.vaanet import build_model, feature_size
from .errors import InjectedFailure, NonFiniteLoss, Stopped, is_deterministic  # noqa: F401  (imported from here)
from .metrics import attention_metrics, check_truth, classification_metrics, predict
from .session import STATE, LocalSession, RaySession, latest_checkpoint  # noqa: F401  (latest_checkpoint: idem)
from .state import RESUME_RUN_KEYS, TrainState, prepare_manifest  # noqa: F401  (RESUME_RUN_KEYS: idem)
from .environment import code_version, git_commit
from .tracking import Tracker, without_study_tags


# ---- pieces ---------------------------------------------------------------------------------------
def _loaders(cfg: Config, rank: int, world: int, pin: bool):
    s, d = cfg.sampling, cfg.data
    kw = dict(sampling=s, seed=cfg.run.seed, visual=cfg.model.visual, audio=cfg.model.audio, classes=d.classes)
    train = VideoEmotionDataset(d.cache, d.split, "train", **kw)
    val = VideoEmotionDataset(d.cache, d.split, "val", **kw)
    test = VideoEmotionDataset(d.cache, d.split, "test", **kw)
    # every step trains on exactly optim.batch_size videos: batch_size / world per worker, in equal micro-batches
    if cfg.optim.batch_size % world:
        raise ValueError(f"optim.batch_size={cfg.optim.batch_size} does not split over {world} workers: each step "
                         f"would train on {max(1, cfg.optim.batch_size // world) * world} videos; use a multiple of {world}")
    per_worker = cfg.optim.batch_size // world
    micro = min(cfg.optim.micro_batch or per_worker, per_worker)
    if per_worker % micro:
        raise ValueError(f"optim.micro_batch={micro} does not divide the {per_worker} videos per worker "
                         f"(optim.batch_size={cfg.optim.batch_size} over {world} workers): each step would train on "
                         f"{-(-per_worker // micro) * micro * world} videos; use a divisor ({divisors(per_worker)})")
    common = dict(num_workers=d.num_workers, pin_memory=pin, persistent_workers=d.num_workers > 0)
    if d.num_workers > 0:
        common["prefetch_factor"] = 2
    train_sampler = EpochSampler(train, shuffle=True, seed=cfg.run.seed, rank=rank, world_size=world)
    loaders = dict(
        train=DataLoader(train, batch_size=micro, sampler=train_sampler, **common),
        val=DataLoader(val, batch_size=micro, sampler=EpochSampler(val, False, rank=rank, world_size=world), **common),
        test=DataLoader(test, batch_size=micro, sampler=EpochSampler(test, False, rank=rank, world_size=world), **common),
    )
    return loaders, train_sampler, -(-per_worker // micro)


def _gather(pred: dict, world: int) -> dict:
    """Collect the per-rank predictions (eval sets are sharded over the workers); de-duplicate the
    wrap-around padding by video id."""
    if world == 1:
        return pred
    import torch.distributed as dist

    parts = [None] * world
    dist.all_gather_object(parts, pred)
    merged = {k: [] for k in pred}
    seen = set()
    for p in parts:
        for i, vid in enumerate(p["video_ids"]):
            if vid in seen:
                continue
            seen.add(vid)
            for k, v in p.items():
                if k == "video_ids":
                    merged[k].append(vid)
                elif len(v):
                    merged[k].append(v[i])
    return {k: (np.stack(v) if v and k != "video_ids" else v) for k, v in merged.items()}


def _epoch_line(epoch: int, epochs: int, m: dict, seconds: float) -> str:
    return (f"epoch {epoch:>3}/{epochs}  train loss {m['train_loss']:.4f} acc {m['train_acc']:.3f} | "
            f"val loss {m['val_loss']:.4f} acc {m['val_acc']:.3f} polarity {m['val_polarity_acc']:.3f}"
            f"{'  *best' if m.get('is_best') else ''}  ({seconds:.1f} s)")


def _logger(out_dir: Path):
    """Print, and keep the line in ``<run>/train.log`` (a study's console shows only its own progress)."""
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(*args, **kwargs):
        print(*args, **kwargs)
        with (out_dir / "train.log").open("a") as f:
            print(time.strftime("%Y-%m-%d %H:%M:%S"), *args, file=f)
    return log


def _progress(iterable, total, enabled):
    if not enabled or not sys.stderr.isatty():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, leave=False, unit="step")


def _compile(model, log):
    """torch.compile the visual backbone; any graph that cannot be compiled runs eagerly instead."""
    try:
        import torch._dynamo as dynamo

        dynamo.config.suppress_errors = True  # fall back to eager per graph, never fail the run
        if hasattr(model, "backbone"):
            model.backbone.features = torch.compile(model.backbone.features)
        log("torch.compile: backbone compiled (falls back to eager where it cannot)")
    except Exception as e:  # noqa: BLE001
        log(f"torch.compile unavailable ({type(e).__name__}: {e}); running eagerly")
    return model


def _write_artifacts(folder: Path, cfg: Config, classes, test: dict, pred: dict) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..figures import draw_confusion

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "config.yaml", folder / "per_class_accuracy.csv", folder / "confusion_matrix.csv",
             folder / "confusion_matrix.png", folder / "test_predictions.csv"]
    paths[0].write_text(without_study_tags(cfg).to_yaml())  # the run's config, not its study membership
    # one row per test video: what paired tests across runs and `vaanet predict` checks compare against
    probs = pd.DataFrame(pred["probs"], columns=[f"p_{c}" for c in classes])
    pd.concat([pd.DataFrame({"video_id": pred["video_ids"], "label": [classes[i] for i in pred["labels"]],
                             "prediction": [classes[i] for i in pred["probs"].argmax(1)]}), probs],
              axis=1).to_csv(paths[4], index=False)
    pd.DataFrame({"class": list(classes), "accuracy": [test["per_class"][c] for c in classes],
                  "support": test["confusion"].sum(1)}).to_csv(paths[1], index=False)
    pd.DataFrame(test["confusion"], index=list(classes), columns=list(classes)).to_csv(paths[2])
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * len(classes), 1.5 + 0.6 * len(classes)))
    draw_confusion(ax, test["confusion"], list(classes), f"{cfg.run.name}: test accuracy {test['acc']:.3f}")
    fig.tight_layout()
    fig.savefig(paths[3], dpi=100)
    plt.close(fig)
    split = Path(cfg.data.split)
    if split.is_file():
        shutil.copy(split, folder / split.name)
        paths.append(folder / split.name)
    return paths


def run_tags(cfg: Config) -> dict[str, str]:
    """Analysis tags (preset, loss, lam, split, seed, dataset; a study adds study/table/row) and MLflow's
    standard ones: source commit and entry point, user, and the run described in words."""
    import getpass

    tags = dict(preset=cfg.model.preset or "custom", loss=cfg.optim.loss, lam=f"{cfg.optim.effective_lambda:g}",
                split=Path(cfg.data.split).stem, seed=str(cfg.run.seed), dataset=cfg.data.dataset)
    tags = {**tags, **cfg.run.tags}
    words = (f"{tags.get('study', 'single')} run" + (f", row {tags['row']}" if "row" in tags else "")
             + f": preset {tags['preset']}, {cfg.optim.loss.upper()} (lambda {tags['lam']}), {tags['split']}, "
             f"seed {tags['seed']}, {cfg.optim.epochs} epochs, lr {cfg.optim.lr:g}, depth {cfg.model.depth}, "
             f"attention style {cfg.model.attention_style}")
    standard = {"mlflow.source.git.commit": git_commit(), "mlflow.source.name": "vaanet train",
                "mlflow.source.type": "LOCAL", "mlflow.user": getpass.getuser(), "mlflow.note.content": words}
    return {**{k: v for k, v in standard.items() if v}, **tags}


# ---- the loop ---------------------------------------------------------------------------------------
def train_fn(config: dict) -> dict:
    """Train one configuration. ``config = {"cfg": Config.to_dict(), "out_dir": str, "ray": bool}``; without
    Ray Train workers (``ray`` false), optionally the :class:`LocalSession` hooks ``on_report`` and ``stop``."""
    cfg = Config.from_dict(config["cfg"])
    cfg.check_files()
    out_dir = Path(config["out_dir"])
    session = RaySession(out_dir) if config.get("ray") else LocalSession(out_dir, config.get("on_report"), config.get("stop"))
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = session.device
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    amp = torch.bfloat16 if (cuda and cfg.run.bf16) else None
    log = _logger(out_dir) if session.rank == 0 else (lambda *a, **k: None)

    state, criterion, loaders, accumulate = _build(cfg, session, out_dir, device, log)
    with session.checkpoint() as folder:
        if folder is not None:
            state.load_state_dict(torch.load(folder / STATE, map_location="cpu", weights_only=True))
            log(f"resumed from checkpoint after epoch {state.epoch} (best val acc {state.best['val_acc']:.3f} "
                f"at epoch {state.best['epoch'] + 1})")
    tracker = state.tracker = _tracker(state, session, device)
    if state.test is not None:
        log("this run already finished; nothing to train")
        tracker.finish("FINISHED")  # closes a run left open by a kill after the final checkpoint
        return state.test
    if state.epoch:
        tracker.resume_at(state.epoch)
    tracker.running()  # a resumed run trains again: RUNNING until it ends
    if cfg.run.system_metrics if cfg.run.system_metrics is not None else cuda:
        tracker.start_system_metrics()
    try:
        return _train_and_test(state, session, loaders, criterion, accumulate, device, amp, log)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM (vaanet.signals) or Stopped: nothing finished is lost
        if session.rank == 0:
            state.save_reached(log)
        if not state.finished:  # after the test results the run stays FINISHED
            tracker.finish("KILLED")  # a rerun continues this MLflow run from that checkpoint
        raise
    except BaseException:
        tracker.finish("FAILED")  # a retry or a rerun continues this MLflow run from the last checkpoint
        raise


def _build(cfg: Config, session, out_dir: Path, device: torch.device, log):
    """A fresh run: the model (seeded), its optimizer and the train sampler as a :class:`TrainState` (of the
    effective config), with the loss, the data loaders and the micro-batches per step."""
    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model)
    cfg = replace(cfg, model=model.cfg)  # the effective config (pixel normalisation of the weights) is saved
    criterion = PCCELoss(cfg.data.classes, lam=cfg.optim.effective_lambda).to(device)
    loaders, train_sampler, accumulate = _loaders(cfg, session.rank, session.world_size, pin=device.type == "cuda")
    if cfg.data.truth:  # before any training: the test metrics would score the attention against it
        check_truth(pd.read_csv(cfg.data.truth, dtype={"video_id": str}), loaders["test"].dataset.items,
                    cfg.data.truth, cfg.data.cache)
    if cfg.run.compile:
        model = _compile(model, log)
    model = session.wrap(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    return TrainState(cfg, model, optimizer, train_sampler, out_dir), criterion, loaders, accumulate


def _tracker(state: TrainState, session, device: torch.device) -> Tracker:
    """The run's MLflow run: its checkpoint's, or a new one with the run's params and tags."""
    cfg = state.cfg
    tracker = Tracker(cfg.run.mlflow_uri, cfg.run.experiment, cfg.run.name, state.out_dir, enabled=session.rank == 0,
                      run_id=state.run_id)
    if tracker.new_run:
        params_flat = {**cfg.flat(), "code_version": code_version(), "workers": session.world_size,
                       "device": device.type, **{f"prepare.{k}": v for k, v in prepare_manifest(cfg).items()}}
        tags = run_tags(cfg)
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():  # a Ray Train worker, or a Tune trial in local mode
            tags["ray_node_id"] = ray.get_runtime_context().get_node_id()
        tracker.start(params_flat, tags)
        tracker.log_split(cfg.data.split, cfg.data.cache)
    return tracker


def _train_and_test(state: TrainState, session, loaders: dict, criterion, accumulate: int, device: torch.device,
                    amp, log) -> dict:
    """Train from ``state.epoch``, then test. After each epoch ``state.reached`` holds its resumable state
    (see :class:`TrainState`): an interrupted run writes it then (:func:`train_fn`), so that only the
    interrupted epoch is redone."""
    cfg, world, classes = state.cfg, session.world_size, state.cfg.data.classes
    while state.epoch < cfg.optim.epochs:
        epoch, t0 = state.epoch, time.time()
        if epoch == cfg.run.fail_at_epoch and not (state.out_dir / ".failure_injected").exists():
            (state.out_dir / ".failure_injected").touch()
            raise InjectedFailure(f"injected failure at epoch {epoch} (run.fail_at_epoch)")
        stats = _train_epoch(state, session, loaders["train"], criterion, accumulate, device, amp)
        val_pred = _gather(predict(state.model, loaders["val"], device, amp), world)
        val = classification_metrics(val_pred["probs"], val_pred["labels"], classes)
        val_loss = float(PCCELoss(classes, lam=cfg.optim.effective_lambda)(
            torch.log(torch.as_tensor(val_pred["probs"]).clamp_min(1e-12)), torch.as_tensor(val_pred["labels"])))
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(stats)
        is_best = val["acc"] > state.best["val_acc"]
        weights = state.weights()
        if is_best:
            state.best = {"epoch": epoch, "val_acc": val["acc"]}
            state.best_weights = weights
        # epochs are counted from 1 everywhere a user sees them (console, MLflow steps, best_epoch)
        metrics = dict(epoch=epoch + 1, train_loss=float(stats[0] / stats[2]), train_acc=float(stats[1] / stats[2]),
                       val_loss=val_loss, val_acc=val["acc"], val_mean_class_acc=val["mean_class_acc"],
                       val_polarity_acc=val["polarity_acc"], best_val_acc=state.best["val_acc"],
                       epoch_seconds=time.time() - t0)
        state.history.append(metrics)
        state.epoch = epoch + 1
        log(_epoch_line(epoch + 1, cfg.optim.epochs, {**metrics, "is_best": is_best}, time.time() - t0), flush=True)
        state.tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch + 1)
        if is_best and session.rank == 0:
            state.save_best()
        state.reach(weights)
        # every N-th epoch; after the last one the final checkpoint (with the test results) follows at once
        state.report(session, metrics, due=(epoch + 1) % cfg.run.checkpoint_every == 0 and epoch < cfg.optim.epochs - 1)
    return _test(state, session, loaders["test"], device, amp, log)


def _train_epoch(state: TrainState, session, loader, criterion, accumulate: int, device: torch.device, amp):
    """One epoch of training steps, ``accumulate`` micro-batches each; this worker's summed loss, correct
    predictions and videos seen (one tensor)."""
    cfg, model, optimizer, epoch = state.cfg, state.model, state.optimizer, state.epoch
    model.train()
    state.sampler.set_epoch(epoch)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device)
    seen = 0
    batches = iter(loader)
    steps = -(-len(loader) // accumulate)
    for step in _progress(range(steps), steps, session.rank == 0):
        session.poll()
        group = list(itertools.islice(batches, accumulate))
        total = sum(len(b["label"]) for b in group)
        optimizer.zero_grad(set_to_none=True)
        for i, batch in enumerate(group):
            visual = batch["visual"].to(device, non_blocking=True) if "visual" in batch else None
            audio = batch["audio"].to(device, non_blocking=True) if "audio" in batch else None
            target = batch["label"].to(device, non_blocking=True)
            sync = nullcontext() if (i == len(group) - 1 or not hasattr(model, "no_sync")) else model.no_sync()
            with sync:
                with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                    logits = model(visual, audio).logits
                loss = criterion(logits.float(), target)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(f"training loss is {float(loss.detach())} at epoch {epoch + 1}, batch {step + 1} "
                                        f"(optim.lr={cfg.optim.lr:g}); lower the learning rate or check the inputs")
                (loss * len(target) / total).backward()
            loss_sum += loss.detach() * len(target)
            correct += (logits.detach().argmax(1) == target).sum()
            seen += len(target)
        optimizer.step()
        if step == 0:
            hold(f"epoch{epoch + 1}", session.poll)  # fault injection (tests only)
    return torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)])


def _test(state: TrainState, session, loader, device: torch.device, amp, log) -> dict:
    """The selected model, once, on test: the final metrics, the artifacts, and the final checkpoint (which
    holds the last epoch's weights, as its epoch says; the selected ones travel as best_model.pt beside)."""
    cfg, classes = state.cfg, state.cfg.data.classes
    last_weights = state.weights()
    state.module.load_state_dict(state.best_weights)
    hold("test", session.poll)
    pred = _gather(predict(state.model, loader, device, amp), session.world_size)
    test = classification_metrics(pred["probs"], pred["labels"], classes)
    truth = pd.read_csv(cfg.data.truth, dtype={"video_id": str}) if cfg.data.truth else None
    side = feature_size(cfg.model.crop_size, cfg.model.no_max_pool) if cfg.model.visual else None
    attn = attention_metrics(pred, truth, side, cfg.model.crop_size)
    best = state.best
    final = {"test_acc": test["acc"], "test_mean_class_acc": test["mean_class_acc"],
             "test_polarity_acc": test["polarity_acc"], "best_epoch": best["epoch"] + 1, "best_val_acc": best["val_acc"],
             "epochs": cfg.optim.epochs, **{f"test_acc_{c}": v for c, v in test["per_class"].items()},
             **{f"test_{k}": v for k, v in attn.items()}}
    if session.rank == 0:
        artifacts = _write_artifacts(state.out_dir / "artifacts", cfg, classes, test, pred)
        state.tracker.log_final(final, artifacts, step=cfg.optim.epochs)
        state.tracker.log_model(state.keep_best())  # the selected weights, in the run folder
        log(f"test (model of epoch {best['epoch'] + 1}): accuracy {test['acc']:.3f}  mean class accuracy "
            f"{test['mean_class_acc']:.3f}  polarity {test['polarity_acc']:.3f}"
            + "".join(f"  {k} {v:.3f}" for k, v in attn.items() if not k.startswith("temporal_attention_seg")), flush=True)
        state.tracker.finish("FINISHED")
    state.test = final
    state.reach(last_weights)
    hold("final")
    state.module.load_state_dict(last_weights)
    state.report(session, {**final, "val_acc": best["val_acc"]}, due=True)
    return final


def fit_local(cfg: Config, out_dir: str | Path | None = None) -> dict:
    """Run ``train_fn`` in this process (no Ray): the latest checkpoint under ``<out_dir>/checkpoints/last``,
    the selected weights in ``<out_dir>/best_model.pt``; rerunning with the same ``out_dir`` resumes."""
    out_dir = Path(out_dir or Path(cfg.run.output) / cfg.run.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    return train_fn({"cfg": cfg.to_dict(), "out_dir": str(out_dir), "ray": False})


__all__ = ["train_fn", "fit_local", "InjectedFailure", "NonFiniteLoss", "Stopped", "run_tags"]
