"""Fault-injection points, for the kill tests (tests/test_faults.py).

With ``VAANET_HOLD=<phase>:<file>`` in the environment, the first process that reaches ``<phase>`` writes
its pid to ``<file>`` and waits there, so that a test can kill the run or the study at exactly that
moment. Phases: ``epoch<N>`` (inside epoch N, after its first batch), ``test`` (before the test
evaluation), ``final`` (test results logged, final checkpoint not yet written) and ``report`` (the
study's closing report). Without the variable (always, outside tests) a phase costs one lookup.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable


def hold(phase: str, poll: Callable[[], None] | None = None) -> None:
    """Wait here forever if the environment asks to hold at ``phase``; ``poll`` (which may raise, e.g.
    a stop requested by Ray Tune) is called while waiting."""
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
    while True:
        if poll is not None:
            poll()
        time.sleep(0.05)
