"""One study trial: a grid point's configuration trained by Ray Train and reported to Ray Tune epoch by epoch.

Two shapes, one behaviour:

- :class:`LocalTrial` (one worker per trial, the default): a class trainable whose own process runs Ray
  Train's local mode (``ScalingConfig(num_workers=0)``). The train function runs in a thread of the
  trial's actor; each epoch's report becomes one Tune result, so schedulers such as ASHA see every
  epoch, and a stop from Tune (a scheduler, the study's Ctrl-C) ends the run KILLED within one batch.
  No Train controller, worker group or placement group is started per trial, and the actor is reused by
  the next trial (``reuse_actors``): this is where most of a trial's start-up time went. A stop the study's
  driver asks for (``<train>/.stop``, written on SIGTERM) is seen within half a second: the run writes the
  checkpoint of its last finished epoch and ends KILLED, and trials not started yet do not start.
- :func:`trial` (``--workers-per-trial`` > 1, DDP): a function trainable that builds a ``TorchTrainer``
  with that many workers and fits it with ``TuneReportCallback`` (Ray's Train-in-Tune pattern).

Either way the latest checkpoint lives in the run folder, so a retried or rerun trial resumes from it;
an error that a retry cannot fix (bad config, missing or corrupt file, non-finite loss) is written to
``<run>/error.txt`` and the trial ends at once, without a retry (attempts are counted once, by Tune).
"""
from __future__ import annotations

import queue
import threading
from dataclasses import replace
from pathlib import Path

from ray import tune

from ..config import Config, with_overrides
from ..train.loop import Stopped, is_deterministic

ERROR_FILE = "error.txt"  # in a run folder: why its last attempt failed for good
STOP_FILE = ".stop"  # in a study's train folder: the driver asks its trials to checkpoint and end (SIGTERM)


def trial_config(config: dict, trial_id: str) -> tuple[Config, Path]:
    """The run's config and folder. ``config["point"]`` is a grid point; a search algorithm instead
    samples ``config["search"]`` (overrides), turned into a point named after the trial."""
    if "search" in config:
        overrides = {k.replace("__", "."): v for k, v in config["search"].items()}
        name = f"search_{trial_id}"
        config = {**config, "point": {"name": name, "overrides": {**config["fixed"], **overrides, "run.name": name},
                                      "tags": {**config["tags"], "row": name}}}
    cfg = with_overrides(Config.from_dict(config["base"]), config["point"]["overrides"])
    cfg = replace(cfg, run=replace(cfg.run, tags={**cfg.run.tags, **config["point"]["tags"]}))
    folder = Path(cfg.run.output) / cfg.run.name
    (folder / ERROR_FILE).unlink(missing_ok=True)
    return cfg, folder


def first_line(error: BaseException) -> str:
    """The root cause of a (Ray Train) error in one line."""
    causes = getattr(error, "worker_failures", None) or {}
    err = next(iter(causes.values()), error)
    err = getattr(err, "cause", None) or err
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1] if lines else ''}"[:500]


def _give_up(folder: Path, error: BaseException) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR_FILE).write_text(first_line(error))


class LocalTrial(tune.Trainable):
    """A single-worker trial in this actor's process: Ray Train's local mode, one Tune result per epoch."""

    def setup(self, config: dict) -> None:
        from ..train.ray_train import make_trainer

        self.cfg, self.folder = trial_config(config, self.trial_id)
        self.reports: queue.Queue = queue.Queue()
        self.stop_event = threading.Event()
        self.stop_file = Path(self.cfg.run.output) / STOP_FILE
        self.thread = None
        if self.stop_file.exists():  # the study is stopping: a trial not started yet does not start
            return
        hooks = {"on_report": lambda metrics, done: self.reports.put(("report", metrics, done)), "stop": self.stop_event}

        def fit() -> None:
            try:  # every error, even one building the trainer, is judged in step(): retry or give up
                make_trainer(self.cfg, workers=0, max_failures=0, local_hooks=hooks).fit()
                self.reports.put(("end", None, True))
            except BaseException as e:  # noqa: BLE001 - handed to step(), in Tune's thread
                self.reports.put(("error", e, True))

        self.thread = threading.Thread(target=fit, name=f"train-{self.cfg.run.name}", daemon=True)
        self.thread.start()

    def step(self) -> dict:
        if self.thread is None:
            return {"done": True, "stopped": True}
        while True:
            try:
                kind, value, done = self.reports.get(timeout=0.5)
                break
            except queue.Empty:  # Tune's own stop cannot reach this actor while step() waits: the driver's can
                if self.stop_file.exists():
                    self.stop_event.set()  # the run checkpoints its last finished epoch and ends KILLED

        if kind == "report":
            return {**value, "done": done}
        if kind == "end":  # ended without a final report: an already finished run reran as a no-op
            return {"done": True}
        if isinstance(value, Stopped):
            return {"done": True, "stopped": True}
        if is_deterministic(value):
            _give_up(self.folder, value)
            return {"done": True, "error": first_line(value)}
        raise value  # Tune retries (FailureConfig), and the rerun resumes from the run's checkpoint

    def save_checkpoint(self, checkpoint_dir: str) -> dict:
        # the run folder holds the real checkpoint (<run>/checkpoints/last), and setup() resumes from it
        return {"run_folder": str(self.folder)}

    def load_checkpoint(self, checkpoint: dict) -> None:
        pass

    def cleanup(self) -> None:
        self.stop_event.set()  # a trial stopped early ends its run KILLED, within one batch
        if self.thread is not None:
            self.thread.join()

    def reset_config(self, new_config: dict) -> bool:  # reuse_actors: the next trial in this process
        self.cleanup()
        self.setup(new_config)
        return True


def trial(config: dict) -> None:
    """A multi-worker (DDP) trial: Ray Train's TorchTrainer with TuneReportCallback."""
    from ray.train import TrainingFailedError
    from ray.tune.integration.ray_train import TuneReportCallback

    from ..train.ray_train import make_trainer

    cfg, folder = trial_config(config, tune.get_context().get_trial_id())
    r = config["resources"]
    # Train does not retry (max_failures=0): attempts are counted once, by Tune
    trainer = make_trainer(cfg, workers=r["workers"], gpus=r["gpus"], cpus_per_worker=r["cpus_per_worker"],
                           max_failures=0, callbacks=[TuneReportCallback()])
    try:
        error = trainer.fit().error
    except TrainingFailedError as e:
        error = e
    if error is None:
        return
    if is_deterministic(error):
        _give_up(folder, error)
        return
    raise error


def trainable(resources: dict):
    """The trainable for a study's resources, with what it asks of Ray. A local trial holds its own
    CPUs/GPU. A DDP trial's driver only waits on its TorchTrainer, whose workers hold them: it asks for
    1 MB of memory and no CPU (a CPU share per driver would fragment the nodes so that no Train worker
    fits: on 2 CPUs, two drivers holding 0.01 each leave no whole CPU and every trial waits forever)."""
    if resources["workers"] <= 1:
        return tune.with_resources(LocalTrial, {"CPU": resources["cpus_per_worker"], "GPU": resources["gpus"]})
    return tune.with_resources(trial, {"CPU": 0, "memory": 1e6})
