"""Where the training loop runs, and where its checkpoints live: a Ray Train worker (:class:`RaySession`)
or this process (:class:`LocalSession`).

A checkpoint is a folder holding ``state.pt`` (the resumable state, :class:`vaanet.train.state.TrainState`'s
``state_dict``) and, after the test, ``best_model.pt`` (the selected weights). Both sessions report each
epoch's metrics with or without such a folder; :func:`latest_checkpoint` finds a run folder's newest one
whichever way it was written.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import torch

from .errors import Stopped

STATE, BEST = "state.pt", "best_model.pt"


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
