"""The training function: one configuration, one split, start to finish.

``train_fn(config)`` is what Ray Train's TorchTrainer runs on every worker (DDP when there are several);
``fit_local(cfg)`` runs the very same function in this process without Ray, for debugging.
Paper defaults: Adam lr 2e-4, 32 videos per step, 150 epochs, PCCE lambda 0.5. Model selection on the
validation subset; the selected model is evaluated once on test at the end.

Checkpoint I/O is sized for shared storage:
* the resumable state (``state.pt``: model, optimiser, epoch, RNG, history, MLflow run id) is a
  checkpoint every ``run.checkpoint_every`` epochs and after the last one; only the latest is kept;
* the selected weights (``best_model.pt``: weights, effective config, prepare manifest; no optimiser)
  are written only when validation accuracy improves, as ``<run>/best/epoch_NNNN.pt``; older ones are
  dropped once a checkpoint no longer needs them (a resume reloads the best of its own checkpoint, so
  resume is exact). At the end the selected weights are ``<run>/best_model.pt`` and are also in the
  last checkpoint: ``vaanet predict --checkpoint`` takes either folder.
"""
from __future__ import annotations

import itertools
import json
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from ..config import Config, divisors
from ..data.dataset import EpochSampler, VideoEmotionDataset
from ..data.ingest import MANIFEST_FILE
from ..losses import PCCELoss
from ..models.vaanet import build_model, feature_size
from .metrics import attention_metrics, check_truth, classification_metrics, predict
from ..faults import hold
from .tracking import Tracker, code_version, git_commit, without_study_tags

STATE, BEST = "state.pt", "best_model.pt"


class InjectedFailure(RuntimeError):
    """Raised once at ``run.fail_at_epoch`` to test recovery."""


class Stopped(KeyboardInterrupt):
    """Training was stopped from outside (a Tune scheduler, the study's Ctrl-C): the run ends KILLED and a
    rerun resumes it from its latest checkpoint."""


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite: the run stops as FAILED, naming where."""


# Errors that recur on every retry: a bad config, a missing or corrupt file, bad weights, a diverging loss.
DETERMINISTIC_ERRORS = (ValueError, FileNotFoundError, NonFiniteLoss)


def is_deterministic(error: BaseException) -> bool:
    """True when ``error`` (or, for a Ray Train failure, every worker's error) is one a retry cannot fix."""
    causes = list((getattr(error, "worker_failures", None) or {}).values()) or [error]
    return all(isinstance(getattr(c, "cause", None) or c, DETERMINISTIC_ERRORS) for c in causes)


# ---- where the loop runs: Ray Train worker or this process ------------------------------------------
def latest_checkpoint(out_dir: Path) -> Path | None:
    """The newest checkpoint of a run folder, whichever way it was written: ``checkpoints/last`` (this
    process, Ray Train's local mode) or Ray Train's ``checkpoint_<time>`` folders (workers). A run
    therefore resumes whether it is rerun with one worker or several."""
    found = [f for f in [out_dir / "checkpoints" / "last", *out_dir.glob("checkpoint_*")] if (f / STATE).is_file()]
    return max(found, key=lambda f: (f / STATE).stat().st_mtime) if found else None


class LocalSession:
    """In this process (``vaanet train``, or Ray Train's local mode inside a Tune trial): the latest
    checkpoint is copied to ``<run>/checkpoints/last``. ``on_report(metrics, done)`` receives each
    epoch's report (a Tune trial turns them into results); once ``stop`` (a threading.Event) is set,
    training ends with :class:`Stopped` within one batch."""

    rank, world_size = 0, 1

    def __init__(self, out_dir: Path, on_report=None, stop=None):
        self.root = out_dir / "checkpoints"
        self.on_report, self.stop = on_report, stop

    def poll(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise Stopped("stopped by Ray Tune (a scheduler, or the study was interrupted); a rerun resumes")

    @property
    def device(self) -> torch.device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def wrap(self, model):
        return model.to(self.device)

    @contextmanager
    def checkpoint(self):
        yield latest_checkpoint(self.root.parent)

    def store(self, folder: Path) -> None:
        """Make ``folder`` the run's latest checkpoint, ``<run>/checkpoints/last``."""
        tmp = self.root / ".last.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(folder, tmp)
        shutil.rmtree(self.root / "last", ignore_errors=True)
        tmp.rename(self.root / "last")

    def report(self, metrics: dict, folder: Path | None, done: bool = False) -> None:
        if folder is not None:
            self.store(folder)
        if self.on_report is not None:
            self.on_report(metrics, done)
        if not done:  # after the final report the run is FINISHED: nothing to stop
            self.poll()


class RaySession:
    """In Ray Train workers: Ray Train keeps the checkpoints (``<run>/checkpoint_<time>``)."""

    def __init__(self, out_dir: Path):
        import ray.train

        self.out_dir = out_dir
        self.ctx = ray.train.get_context()
        self.rank, self.world_size = self.ctx.get_world_rank(), self.ctx.get_world_size()

    @property
    def device(self) -> torch.device:
        import ray.train.torch

        return ray.train.torch.get_device()

    def wrap(self, model):
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    @contextmanager
    def checkpoint(self):
        import ray.train

        # the run folder is storage every worker reads; its newest checkpoint wins, whichever mode wrote it
        # (a run continued in one process after Ray Train's last checkpoint has a newer checkpoints/last)
        local = latest_checkpoint(self.out_dir)
        ckpt = ray.train.get_checkpoint() if local is None else None
        if ckpt is None:
            yield local
        else:  # Ray Train's checkpoint in storage other than the run folder
            with ckpt.as_directory() as d:
                yield Path(d)

    def poll(self) -> None:  # Ray Train stops its workers itself
        pass

    def report(self, metrics: dict, folder: Path | None, done: bool = False) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(str(folder)) if folder is not None and self.rank == 0 else None
        ray.train.report(metrics, checkpoint=ckpt)


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


RESUME_RUN_KEYS = ("seed", "bf16", "compile")  # run.* keys a run folder must match to be resumed or reused


def _check_same_config(saved: dict, cfg: Config, out_dir: Path) -> None:
    """A run folder resumes only the configuration it was started with."""
    now = cfg.to_dict()
    try:  # a key added to the config since the run started compares as its default (the old behaviour)
        saved = Config.from_dict(saved).to_dict()
    except (TypeError, ValueError):
        pass  # compared as stored
    diff = [f"{section}.{k}: {saved[section].get(k)!r} -> {v!r}" for section in ("model", "data", "optim")
            for k, v in now[section].items() if saved.get(section, {}).get(k) != v]
    # what the run computes depends on these too (the seed draws the initial weights and the batches); the rest
    # of run.* (name, folders, tracking, threads, checkpoint interval, tags, fault injection) does not
    diff += [f"run.{k}: {saved.get('run', {}).get(k)!r} -> {now['run'][k]!r}" for k in RESUME_RUN_KEYS
             if saved.get("run", {}).get(k, now["run"][k]) != now["run"][k]]
    if diff:
        raise ValueError(f"{out_dir} holds a run of another configuration ({'; '.join(diff[:4])}); "
                         "give this one its own run.name (or delete the folder to start over)")


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


def _state_dict(model) -> dict:
    m = model.module if hasattr(model, "module") else model
    return {k: v.detach().cpu().clone() for k, v in m.state_dict().items()}


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
    rank, world = session.rank, session.world_size
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)
    device = session.device
    cuda = device.type == "cuda"
    if cuda:
        torch.backends.cudnn.benchmark = True
    amp = torch.bfloat16 if (cuda and cfg.run.bf16) else None
    log = _logger(out_dir) if rank == 0 else (lambda *a, **k: None)

    torch.manual_seed(cfg.run.seed)
    model = build_model(cfg.model)
    cfg = replace(cfg, model=model.cfg)  # the effective config (pixel normalisation of the weights) is saved
    classes = cfg.data.classes
    criterion = PCCELoss(classes, lam=cfg.optim.effective_lambda).to(device)
    loaders, train_sampler, accumulate = _loaders(cfg, rank, world, pin=cuda)
    if cfg.data.truth:  # before any training: the test metrics would score the attention against it
        check_truth(pd.read_csv(cfg.data.truth, dtype={"video_id": str}), loaders["test"].dataset.items,
                    cfg.data.truth, cfg.data.cache)
    if cfg.run.compile:
        model = _compile(model, log)
    model = session.wrap(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

    start_epoch, history, best, best_weights, run_id, finished = 0, [], {"epoch": -1, "val_acc": -1.0}, None, None, None
    with session.checkpoint() as folder:
        if folder is not None:
            state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
            _check_same_config(state["config"], cfg, out_dir)  # before the weights: a clear error, not a shape one
            (model.module if hasattr(model, "module") else model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            torch.set_rng_state(state["torch_rng"])
            start_epoch, history, best, run_id = state["epoch"] + 1, state["history"], state["best"], state["mlflow_run_id"]
            finished = state.get("test")
            best_weights = _load_best(out_dir, best["epoch"])
            log(f"resumed from checkpoint after epoch {start_epoch} (best val acc {best['val_acc']:.3f} at epoch {best['epoch'] + 1})")

    tracker = Tracker(cfg.run.mlflow_uri, cfg.run.experiment, cfg.run.name, out_dir, enabled=rank == 0, run_id=run_id)
    if tracker.new_run:
        params_flat = {**cfg.flat(), "code_version": code_version(), "workers": world, "device": device.type,
                       **{f"prepare.{k}": v for k, v in _prepare_manifest(cfg).items()}}
        tags = run_tags(cfg)
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():  # a Ray Train worker, or a Tune trial in local mode
            tags["ray_node_id"] = ray.get_runtime_context().get_node_id()
        tracker.start(params_flat, tags)
        tracker.log_split(cfg.data.split, cfg.data.cache)
    if finished is not None:
        log("this run already finished; nothing to train")
        tracker.finish("FINISHED")  # closes a run left open by a kill after the final checkpoint
        return finished
    if start_epoch:
        tracker.resume_at(start_epoch)
    tracker.running()  # a resumed run trains again: RUNNING until it ends
    if cfg.run.system_metrics if cfg.run.system_metrics is not None else cuda:
        tracker.start_system_metrics()
    reached: dict = {}  # the state of the last finished epoch, and whether a checkpoint holds it already
    try:
        return _train_and_test(cfg, session, model, optimizer, criterion, loaders, train_sampler, accumulate, device,
                               amp, start_epoch, history, best, best_weights, tracker, out_dir, log, reached)
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM (vaanet.signals) or Stopped: nothing finished is lost
        if reached and not reached["saved"] and session.rank == 0:
            _save_reached(session, reached["state"], out_dir, log)
        if not reached.get("finished"):  # after the test results the run stays FINISHED
            tracker.finish("KILLED")  # a rerun continues this MLflow run from that checkpoint
        raise
    except BaseException:
        tracker.finish("FAILED")  # a retry or a rerun continues this MLflow run from the last checkpoint
        raise


def _train_and_test(cfg, session, model, optimizer, criterion, loaders, train_sampler, accumulate, device, amp,
                    start_epoch, history, best, best_weights, tracker, out_dir, log, reached: dict):
    """Train from ``start_epoch``, then test. ``reached`` always holds the resumable state of the last epoch
    whose metrics and selected weights are recorded (``state``), and whether a checkpoint holds it (``saved``):
    an interrupted run writes it then (:func:`train_fn`), so that only the interrupted epoch is redone."""
    rank, world, classes = session.rank, session.world_size, cfg.data.classes
    for epoch in range(start_epoch, cfg.optim.epochs):
        t0 = time.time()
        if epoch == cfg.run.fail_at_epoch and not (out_dir / ".failure_injected").exists():
            (out_dir / ".failure_injected").touch()
            raise InjectedFailure(f"injected failure at epoch {epoch} (run.fail_at_epoch)")
        model.train()
        train_sampler.set_epoch(epoch)
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        seen = 0
        batches = iter(loaders["train"])
        steps = -(-len(loaders["train"]) // accumulate)
        for step in _progress(range(steps), steps, rank == 0):
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
        val_pred = _gather(predict(model, loaders["val"], device, amp), world)
        val = classification_metrics(val_pred["probs"], val_pred["labels"], classes)
        val_loss = float(PCCELoss(classes, lam=cfg.optim.effective_lambda)(
            torch.log(torch.as_tensor(val_pred["probs"]).clamp_min(1e-12)), torch.as_tensor(val_pred["labels"])))
        stats = torch.stack([loss_sum, correct, torch.tensor(float(seen), device=device)])
        if world > 1:
            import torch.distributed as dist

            dist.all_reduce(stats)
        is_best = val["acc"] > best["val_acc"]
        weights = _state_dict(model)
        if is_best:
            best = {"epoch": epoch, "val_acc": val["acc"]}
            best_weights = weights
        # epochs are counted from 1 everywhere a user sees them (console, MLflow steps, best_epoch)
        metrics = dict(epoch=epoch + 1, train_loss=float(stats[0] / stats[2]), train_acc=float(stats[1] / stats[2]),
                       val_loss=val_loss, val_acc=val["acc"], val_mean_class_acc=val["mean_class_acc"],
                       val_polarity_acc=val["polarity_acc"], best_val_acc=best["val_acc"], epoch_seconds=time.time() - t0)
        history.append(metrics)
        log(_epoch_line(epoch + 1, cfg.optim.epochs, {**metrics, "is_best": is_best}, time.time() - t0), flush=True)
        tracker.log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step=epoch + 1)
        if is_best and rank == 0:
            _save_best(out_dir, cfg, best, best_weights)
        # every N-th epoch; after the last one the final checkpoint (with the test results) follows at once
        due = (epoch + 1) % cfg.run.checkpoint_every == 0 and epoch < cfg.optim.epochs - 1
        state = _resume_state(weights, optimizer, epoch, history, best, cfg, tracker, None)
        reached.update(state=state, saved=False)  # one assignment each: an interrupt sees the old or the new
        _checkpoint_and_report(session, state, best, out_dir, metrics, None, due)
        reached["saved"] = due

    # ---- test: the selected model, once ----
    m = model.module if hasattr(model, "module") else model
    last_weights = _state_dict(model)  # the final checkpoint holds the last epoch's weights, as its epoch says
    m.load_state_dict(best_weights)
    hold("test", session.poll)
    pred = _gather(predict(model, loaders["test"], device, amp), world)
    test = classification_metrics(pred["probs"], pred["labels"], classes)
    truth = pd.read_csv(cfg.data.truth, dtype={"video_id": str}) if cfg.data.truth else None
    side = feature_size(cfg.model.crop_size, cfg.model.no_max_pool) if cfg.model.visual else None
    attn = attention_metrics(pred, truth, side, cfg.model.crop_size)
    final = {"test_acc": test["acc"], "test_mean_class_acc": test["mean_class_acc"],
             "test_polarity_acc": test["polarity_acc"], "best_epoch": best["epoch"] + 1, "best_val_acc": best["val_acc"],
             "epochs": cfg.optim.epochs, **{f"test_acc_{c}": v for c, v in test["per_class"].items()},
             **{f"test_{k}": v for k, v in attn.items()}}
    if rank == 0:
        artifacts = _write_artifacts(out_dir / "artifacts", cfg, classes, test, pred)
        tracker.log_final(final, artifacts, step=cfg.optim.epochs)
        shutil.copy(_best_path(out_dir, best["epoch"]), out_dir / f".{BEST}.tmp")
        (out_dir / f".{BEST}.tmp").replace(out_dir / BEST)  # the selected weights, in the run folder
        tracker.log_model(out_dir / BEST)
        log(f"test (model of epoch {best['epoch'] + 1}): accuracy {test['acc']:.3f}  mean class accuracy "
            f"{test['mean_class_acc']:.3f}  polarity {test['polarity_acc']:.3f}"
            + "".join(f"  {k} {v:.3f}" for k, v in attn.items() if not k.startswith("temporal_attention_seg")), flush=True)
        tracker.finish("FINISHED")
    # the final checkpoint holds the last epoch's weights; the selected ones travel as best_model.pt beside state.pt
    state = _resume_state(last_weights, optimizer, cfg.optim.epochs - 1, history, best, cfg, tracker, final)
    reached.update(state=state, saved=False, finished=True)
    hold("final")
    m.load_state_dict(last_weights)
    _checkpoint_and_report(session, state, best, out_dir, {**final, "val_acc": best["val_acc"]}, final, True)
    reached["saved"] = True
    return final


def _best_path(out_dir: Path, epoch: int) -> Path:
    return out_dir / "best" / f"epoch_{epoch + 1:04d}.pt"


def _prepare_manifest(cfg: Config) -> dict:
    """How the cache was prepared (short side, fps, frame format, MFCC settings): saved with the weights,
    logged as ``prepare.*`` params."""
    manifest = Path(cfg.data.cache) / MANIFEST_FILE
    prepare = json.loads(manifest.read_text()) if manifest.exists() else {}
    return {"frames": "raw", **prepare}  # a manifest without a format is a raw cache


def _save_best(out_dir: Path, cfg: Config, best: dict, weights: dict) -> None:
    """The selected weights, written when validation accuracy improves (atomically)."""
    prepare = _prepare_manifest(cfg)
    path = _best_path(out_dir, best["epoch"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"model": weights, "config": cfg.to_dict(), "epoch": best["epoch"] + 1, "val_acc": best["val_acc"],
                "prepare": prepare}, tmp)
    tmp.replace(path)


def _load_best(out_dir: Path, epoch: int) -> dict | None:
    if epoch < 0:
        return None
    path = _best_path(out_dir, epoch)
    if not path.is_file():
        raise FileNotFoundError(f"{path} (the weights selected before this run's last checkpoint) is missing; "
                                f"the run cannot resume exactly: delete {out_dir} to start it over")
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def _copy(value):
    """A detached CPU copy of a (nested) state: the optimizer's own state dict holds its live tensors."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value


def _resume_state(weights: dict, optimizer, epoch: int, history: list, best: dict, cfg: Config, tracker,
                  final: dict | None) -> dict:
    """What ``state.pt`` holds after ``epoch``: a copy, unchanged by the training that goes on (the model's
    and optimizer's tensors are copied to CPU memory once per epoch: ~3x the weights)."""
    return {"model": weights, "optimizer": _copy(optimizer.state_dict()), "epoch": epoch, "history": list(history),
            "best": dict(best), "torch_rng": torch.get_rng_state(), "config": cfg.to_dict(),
            "mlflow_run_id": tracker.run_id, "test": final}


def _save_reached(session, state: dict, out_dir: Path, log) -> None:
    """On an interrupt: the checkpoint of the last finished epoch (or, after the test, the final one), as
    ``<run>/checkpoints/last``, which a rerun resumes from whichever way it runs (see :func:`latest_checkpoint`)."""
    with tempfile.TemporaryDirectory(prefix="vaanet-ckpt-") as tmp:
        torch.save(state, Path(tmp) / STATE)
        if state["test"] is not None:
            shutil.copy(out_dir / BEST, Path(tmp) / BEST)
        LocalSession(out_dir).store(Path(tmp))
    log(f"interrupted: checkpoint of epoch {state['epoch'] + 1} written; a rerun resumes from it", flush=True)


def _checkpoint_and_report(session, state: dict, best: dict, out_dir: Path, metrics: dict, final, due: bool):
    """Report the epoch's metrics (every epoch, for Tune's schedulers); with a checkpoint of ``state`` when ``due``."""
    if not due:
        session.report(metrics, None)
        return
    with tempfile.TemporaryDirectory(prefix="vaanet-ckpt-") as tmp:
        folder = None
        if session.rank == 0:
            folder = Path(tmp)
            torch.save(state, folder / STATE)
            if final is not None:  # the selected model travels with the last checkpoint too
                shutil.copy(out_dir / BEST, folder / BEST)
        session.report(metrics, folder, done=final is not None)
    if session.rank == 0:  # only the best of the latest checkpoint can be needed again
        for path in (out_dir / "best").glob("epoch_*.pt"):
            if path != _best_path(out_dir, best["epoch"]):
                path.unlink(missing_ok=True)


def fit_local(cfg: Config, out_dir: str | Path | None = None) -> dict:
    """Run ``train_fn`` in this process (no Ray): the latest checkpoint under ``<out_dir>/checkpoints/last``,
    the selected weights in ``<out_dir>/best_model.pt``; rerunning with the same ``out_dir`` resumes."""
    out_dir = Path(out_dir or Path(cfg.run.output) / cfg.run.name)
    out_dir.mkdir(parents=True, exist_ok=True)
    return train_fn({"cfg": cfg.to_dict(), "out_dir": str(out_dir), "ray": False})


__all__ = ["train_fn", "fit_local", "InjectedFailure", "NonFiniteLoss", "Stopped", "run_tags"]
