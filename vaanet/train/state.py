"""One training run's state, and its checkpoints.

:class:`TrainState` holds what the loop carries from epoch to epoch (the model, its optimizer, the train
sampler, the epochs finished, the history, the best epoch and its weights, the tracker, the run folder);
its ``state_dict`` is ``state.pt``, the resumable checkpoint, and ``load_state_dict`` resumes from one.

Checkpoint I/O is sized for shared storage:
* ``state.pt`` (model, optimiser, epoch, RNG, history, best, MLflow run id, test results once the run
  finished) is a checkpoint every ``run.checkpoint_every`` epochs and after the last one; only the latest
  is kept;
* the selected weights (``best_model.pt``: weights, effective config, prepare manifest; no optimiser) are
  written only when validation accuracy improves, as ``<run>/best/epoch_NNNN.pt``; older ones are dropped
  once a checkpoint no longer needs them (a resume reloads the best of its own checkpoint, so resume is
  exact). At the end the selected weights are ``<run>/best_model.pt`` and are also in the last checkpoint.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Config
from ..data.dataset import EpochSampler
from ..data.ingest import MANIFEST_FILE
from .session import BEST, STATE, LocalSession
from .tracking import Tracker

RESUME_RUN_KEYS = ("seed", "bf16", "compile")  # run.* keys a run folder must match to be resumed or reused


@dataclass
class TrainState:
    """What one run has reached. ``epoch`` counts the finished epochs (the next one to train);
    ``reached`` is the resumable state of the last epoch whose metrics and selected weights are recorded,
    with whether a checkpoint holds it already: an interrupted run writes it then (:meth:`save_reached`),
    so that only the interrupted epoch is redone."""

    cfg: Config
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: EpochSampler
    out_dir: Path
    tracker: Tracker | None = None  # set once the checkpoint (and its MLflow run id) is read
    epoch: int = 0
    history: list = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": -1, "val_acc": -1.0})
    best_weights: dict | None = None
    run_id: str | None = None  # the checkpoint's MLflow run, which the tracker continues
    test: dict | None = None  # the test results, once the run finished
    reached: tuple[dict, bool] | None = None  # (state_dict, saved): replaced in one assignment

    @property
    def module(self) -> torch.nn.Module:
        """The model itself, unwrapped from DDP."""
        return self.model.module if hasattr(self.model, "module") else self.model

    def weights(self) -> dict:
        """A CPU copy of the model's weights."""
        return {k: v.detach().cpu().clone() for k, v in self.module.state_dict().items()}

    def state_dict(self, weights: dict) -> dict:
        """What ``state.pt`` holds after the last finished epoch, with ``weights`` as the model's: a copy,
        unchanged by the training that goes on (the model's and optimizer's tensors are copied to CPU memory
        once per epoch: ~3x the weights)."""
        return {"model": weights, "optimizer": _copy(self.optimizer.state_dict()), "epoch": self.epoch - 1,
                "history": list(self.history), "best": dict(self.best), "torch_rng": torch.get_rng_state(),
                "config": self.cfg.to_dict(), "mlflow_run_id": self.tracker.run_id, "test": self.test}

    def load_state_dict(self, state: dict) -> None:
        """Resume from a checkpoint's ``state.pt`` of this very configuration, with the best weights it selected."""
        _check_same_config(state["config"], self.cfg, self.out_dir)  # before the weights: a clear error, not a shape one
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch, self.history, self.best, self.run_id = (state["epoch"] + 1, state["history"], state["best"],
                                                            state["mlflow_run_id"])
        self.test = state.get("test")
        self.best_weights = self._load_best()

    # ---- the selected weights -----------------------------------------------------------------------
    def best_path(self) -> Path:
        return self.out_dir / "best" / f"epoch_{self.best['epoch'] + 1:04d}.pt"

    def save_best(self) -> None:
        """The selected weights, written when validation accuracy improves (atomically)."""
        path = self.best_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({"model": self.best_weights, "config": self.cfg.to_dict(), "epoch": self.best["epoch"] + 1,
                    "val_acc": self.best["val_acc"], "prepare": prepare_manifest(self.cfg)}, tmp)
        tmp.replace(path)

    def keep_best(self) -> Path:
        """The selected weights as ``<run>/best_model.pt`` (atomically)."""
        shutil.copy(self.best_path(), self.out_dir / f".{BEST}.tmp")
        (self.out_dir / f".{BEST}.tmp").replace(self.out_dir / BEST)
        return self.out_dir / BEST

    def _load_best(self) -> dict | None:
        if self.best["epoch"] < 0:
            return None
        path = self.best_path()
        if not path.is_file():
            raise FileNotFoundError(f"{path} (the weights selected before this run's last checkpoint) is missing; "
                                    f"the run cannot resume exactly: delete {self.out_dir} to start it over")
        return torch.load(path, map_location="cpu", weights_only=True)["model"]

    # ---- checkpoints ----------------------------------------------------------------------------------
    def reach(self, weights: dict) -> None:
        """The epochs finished so far (and the test results, if any) are recorded: ``reached`` becomes their
        state, with ``weights`` as the model's, not yet in a checkpoint."""
        self.reached = (self.state_dict(weights), False)

    def report(self, session, metrics: dict, due: bool) -> None:
        """Report the epoch's metrics (every epoch, for Tune's schedulers); with a checkpoint of ``reached``
        when ``due``, which then holds it."""
        state = self.reached[0]
        final = state["test"]
        if not due:
            session.report(metrics, None)
            return
        with tempfile.TemporaryDirectory(prefix="vaanet-ckpt-") as tmp:
            folder = None
            if session.rank == 0:
                folder = Path(tmp)
                torch.save(state, folder / STATE)
                if final is not None:  # the selected model travels with the last checkpoint too
                    shutil.copy(self.out_dir / BEST, folder / BEST)
            session.report(metrics, folder, done=final is not None)
        if session.rank == 0:  # only the best of the latest checkpoint can be needed again
            for path in (self.out_dir / "best").glob("epoch_*.pt"):
                if path != self.best_path():
                    path.unlink(missing_ok=True)
        self.reached = (state, True)

    def save_reached(self, log) -> None:
        """On an interrupt: the checkpoint of the last finished epoch (or, after the test, the final one), as
        ``<run>/checkpoints/last``, which a rerun resumes from whichever way it runs (see
        :func:`vaanet.train.session.latest_checkpoint`); nothing when a checkpoint holds it already."""
        if self.reached is None or self.reached[1]:
            return
        state = self.reached[0]
        with tempfile.TemporaryDirectory(prefix="vaanet-ckpt-") as tmp:
            torch.save(state, Path(tmp) / STATE)
            if state["test"] is not None:
                shutil.copy(self.out_dir / BEST, Path(tmp) / BEST)
            LocalSession(self.out_dir).store(Path(tmp))
        log(f"interrupted: checkpoint of epoch {state['epoch'] + 1} written; a rerun resumes from it", flush=True)

    @property
    def finished(self) -> bool:
        """Whether the last reached state holds the test results (the run is FINISHED)."""
        return self.reached is not None and self.reached[0]["test"] is not None


def prepare_manifest(cfg: Config) -> dict:
    """How the cache was prepared (short side, fps, frame format, MFCC settings): saved with the weights,
    logged as ``prepare.*`` params."""
    manifest = Path(cfg.data.cache) / MANIFEST_FILE
    prepare = json.loads(manifest.read_text()) if manifest.exists() else {}
    return {"frames": "raw", **prepare}  # a manifest without a format is a raw cache


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


def _copy(value):
    """A detached CPU copy of a (nested) state: the optimizer's own state dict holds its live tensors."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_copy(v) for v in value)
    return value
