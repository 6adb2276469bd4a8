"""Fault-injection points, for the kill tests (tests/test_kills.py) and the two-node test.

With ``VAANET_HOLD=<phase>:<file>`` in the environment, the first process that reaches ``<phase>`` writes
its pid to ``<file>`` and waits there, so that a test can kill the run or the study at exactly that
moment. With ``VAANET_MEET=<phase>:<n>:<folder>``, every process that reaches ``<phase>`` leaves its pid in
``<folder>`` and waits there until ``<n>`` processes have: ``n`` trials then run at the same time, whatever
the machine's load (a trial that ended first would hand its process to the next trial, ``reuse_actors``).
Phases: ``epoch<N>`` (inside epoch N, after its first batch), ``test`` (before the test evaluation),
``final`` (test results logged, final checkpoint not yet written) and ``report`` (the study's closing
report). Without the variables (always, outside tests) a phase costs two lookups.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable


def hold(phase: str, poll: Callable[[], None] | None = None) -> None:
    """Wait here if the environment asks to hold (forever) or to meet (until enough have come) at ``phase``;
    ``poll`` (which may raise, e.g. a stop requested by Ray Tune) is called while waiting."""
    meet = os.environ.get("VAANET_MEET")
    if meet:
        _meet(phase, meet, poll)
    spec = os.environ.get("VAANET_HOLD")
    if not spec:
        return
    want, _, path = spec.partition(":")
    if want != phase or not path:
        return
    marker = Path(path)
    try:  # only the first process to get here holds (a study may run several trials)
        with open(marker, "x") as f:
            f.write(str(os.getpid()))
    except FileExistsError:
        return
    _wait(lambda: False, poll)


def _meet(phase: str, spec: str, poll: Callable[[], None] | None) -> None:
    want, n, folder = spec.split(":", 2)
    if want != phase:
        return
    n, folder = int(n), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / str(os.getpid())).touch()
    _wait(lambda: len(list(folder.iterdir())) >= n, poll)


def _wait(done: Callable[[], bool], poll: Callable[[], None] | None) -> None:
    while not done():
        if poll is not None:
            poll()
        time.sleep(0.05)
