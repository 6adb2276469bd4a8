"""What a study prints while it runs: one epoch line per trial and epoch, prefixed with the trial's
name, and a study line (trials done / running / pending / failed, elapsed, ETA, best validation accuracy
so far per row) whenever it changes. On a terminal the study line stays at the bottom and is redrawn in
place; elsewhere (a log file, CI) it is printed as a plain line per change.

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
    def __init__(self, total: int, done: int = 0, concurrent: int = 1, stream=None):
        self.total, self.done_before, self.concurrent = total, done, max(1, concurrent)
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.start = time.time()
        self.running: dict[str, float] = {}  # trial name -> start time
        self.finished: list[float] = []  # durations of the trials finished in this run
        self.failed = 0
        self.best: dict[str, float] = {}  # row -> best validation accuracy so far
        self.last = ""

    @staticmethod
    def _name(trial) -> tuple[str, str]:
        point = (trial.config or {}).get("point")
        if point:
            return point["name"], point["tags"].get("row", point["name"])
        return f"search_{trial.trial_id}", "search"

    def _line(self) -> str:
        done = self.done_before + len(self.finished)
        pending = self.total - done - len(self.running) - self.failed
        elapsed = time.time() - self.start
        eta = "?"
        if self.finished:
            mean = sum(self.finished) / len(self.finished)
            eta = _clock(mean * (pending + len(self.running) / 2) / self.concurrent)
        best = "  ".join(f"{row} {acc:.3f}" for row, acc in self.best.items())
        return (f"study: {done}/{self.total} trials done, {len(self.running)} running, {max(pending, 0)} pending, "
                f"{self.failed} failed | {_clock(elapsed)} elapsed, ETA {eta}" + (f" | best val acc: {best}" if best else ""))

    def _emit(self, text: str | None = None) -> None:
        line = self._line()
        if self.tty:
            self.stream.write("\r\033[K" + (text + "\n" if text else "") + line)
        else:
            if text:
                self.stream.write(text + "\n")
            if line != self.last:
                self.stream.write(line + "\n")
        self.last = line
        self.stream.flush()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running[self._name(trial)[0]] = time.time()
        self._emit()

    def on_trial_result(self, iteration, trials, trial, result, **info):
        name, row = self._name(trial)
        if "train_loss" in result and "epoch" in result:
            self.best[row] = max(self.best.get(row, 0.0), float(result.get("val_acc", 0.0)))
            text = (f"[{name}] epoch {int(result['epoch'])}: train loss {result['train_loss']:.4f} "
                    f"acc {result['train_acc']:.3f} | val acc {result['val_acc']:.3f} "
                    f"polarity {result.get('val_polarity_acc', float('nan')):.3f}")
            self._emit(text)
        elif "test_acc" in result:
            self._emit(f"[{name}] test accuracy {result['test_acc']:.3f}  polarity {result['test_polarity_acc']:.3f}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        started = self.running.pop(self._name(trial)[0], time.time())
        self.finished.append(time.time() - started)
        self._emit()

    def on_trial_error(self, iteration, trials, trial, **info):
        self.running.pop(self._name(trial)[0], None)
        self.failed += 1
        self._emit(f"[{self._name(trial)[0]}] failed")

    def on_experiment_end(self, trials, **info):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
