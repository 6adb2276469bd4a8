"""What a study prints while it runs: one line per finished trial (its name and test accuracy) carrying
the study's state (trials done / running / pending / failed, elapsed, ETA, best validation accuracy so
far per row). On a terminal a live line at the bottom is redrawn in place with each trial's latest
epoch; epoch lines, prefixed with the trial's name, are printed with ``--verbose`` and always kept in
each run's ``train.log``.

A Ray Tune ``Callback`` in the driver: the metrics come from the trials' reports, so the workers' own
output (and Ray's internals) can stay in the log files (``<run>/train.log``, Ray's session logs) unless
the study runs with ``--verbose``.
"""
from __future__ import annotations

import sys
import time

from ray.tune import Callback


def _clock(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


class StudyProgress(Callback):
    """One line per finished trial, carrying the study's state; epoch lines only live (terminal) or with
    ``verbose``, so that a study's console fits on one screen."""

    def __init__(self, total: int, done: int = 0, concurrent: int = 1, verbose: bool = False, stream=None):
        self.total, self.done_before, self.concurrent, self.verbose = total, done, max(1, concurrent), verbose
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.start = time.time()
        self.running: dict[str, float] = {}  # trial name -> start time
        self.finished: list[float] = []  # durations of the trials finished in this run
        self.failed = 0
        self.stopped = 0  # trials the study's stop ended before their end (a rerun with --resume continues them)
        self.reported: set[str] = set()  # trials whose test result was printed (on_trial_complete skips them)
        self.best: dict[str, float] = {}  # row -> best validation accuracy so far

    @staticmethod
    def _name(trial) -> tuple[str, str]:
        point = (trial.config or {}).get("point")
        if point:
            return point["tags"].get("mlflow.runName", point["name"]), point["tags"].get("row", point["name"])
        return f"search_{trial.trial_id}", "search"

    def _line(self, news: str = "") -> str:
        done = self.done_before + len(self.finished)
        pending = self.total - done - len(self.running) - self.failed - self.stopped
        eta = "?"
        if self.finished:
            mean = sum(self.finished) / len(self.finished)
            eta = _clock(mean * (max(pending, 0) + len(self.running) / 2) / self.concurrent)
        best = "  ".join(f"{row} {acc:.3f}" for row, acc in self.best.items())
        return (f"study: {done}/{self.total} trials done, {len(self.running)} running, {max(pending, 0)} pending, "
                f"{self.failed} failed{f', {self.stopped} stopped' if self.stopped else ''} | {_clock(time.time() - self.start)} elapsed, ETA {eta}"
                + (f" | {news}" if news else "") + (f" | best val acc: {best}" if best else ""))

    def _print(self, text: str) -> None:
        self.stream.write(("\r\033[K" if self.tty else "") + text + "\n")
        self.stream.flush()

    def _live(self, text: str) -> None:
        if self.tty:  # redrawn in place, never scrolls
            self.stream.write("\r\033[K" + text[: 200])
            self.stream.flush()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running[self._name(trial)[0]] = time.time()
        self._live(self._line())

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name, row = self._name(trial)
        if result.get("stopped"):  # the study is stopping (SIGTERM): checkpointed, or not started
            self.running.pop(name, None)
            self.stopped += 1
            self.reported.add(name)
            self._print(self._line(f"[{name}] stopped"))
        elif "train_loss" in result and "epoch" in result:
            self.best[row] = max(self.best.get(row, 0.0), float(result.get("val_acc", 0.0)))
            epoch = (f"[{name}] epoch {int(result['epoch'])}: train loss {result['train_loss']:.4f} "
                     f"acc {result['train_acc']:.3f} | val acc {result['val_acc']:.3f} "
                     f"polarity {result.get('val_polarity_acc', float('nan')):.3f}")
            if self.verbose:
                self._print(epoch)
            self._live(self._line(epoch))
        elif "test_acc" in result:
            self.finished.append(time.time() - self.running.pop(name, self.start))
            self._print(self._line(f"[{name}] test acc {result['test_acc']:.3f} polarity "
                                   f"{result['test_polarity_acc']:.3f}"))
            self.reported.add(name)

    def on_trial_complete(self, iteration, trials, trial, **info):
        name = self._name(trial)[0]
        if name in self.reported:
            return
        started = self.running.pop(name, self.start)
        self.finished.append(time.time() - started)
        self._print(self._line(f"[{name}] done"))

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.pop(self._name(trial)[0], None)
        self.failed += 1
        self._print(self._line(f"[{self._name(trial)[0]}] failed"))

    def on_experiment_end(self, trials, **info):
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()
