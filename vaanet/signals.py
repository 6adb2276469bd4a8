"""Stop signals: SIGTERM takes the path of Ctrl-C.

SIGTERM is the stop signal of SLURM (``scancel``, time limit, preemption: SIGTERM, then SIGKILL after
``KillWait``, 30 s by default), Kubernetes, Docker and systemd. :func:`sigterm_as_ctrl_c` makes it do what
Ctrl-C does in this process: it calls the SIGINT handler in place (Ray Tune's while a study's trials run,
which stops them as on Ctrl-C; else Python's, which raises KeyboardInterrupt), so the running run writes a
checkpoint of its last finished epoch, its MLflow run ends KILLED and a rerun resumes. The command then
exits with :func:`exit_code`: 143 (128 + SIGTERM) after a SIGTERM, 130 after Ctrl-C.
"""
from __future__ import annotations

import signal
import threading

_terminated = threading.Event()
_graceful: list = []  # callables tried first on SIGTERM; one returning True has taken the stop in hand


def _on_sigterm(signum, frame) -> None:
    _terminated.set()
    if any(stop() for stop in list(_graceful)):
        return
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):  # Tune's (sets its stop event) or Python's default_int_handler (KeyboardInterrupt)
        handler(signal.SIGINT, frame)
    else:  # SIG_IGN (a background job of a shell) or SIG_DFL: still stop as Ctrl-C would
        raise KeyboardInterrupt


def sigterm_as_ctrl_c() -> None:
    """Install the SIGTERM handler (only the main thread may). Call it again after ``ray.init``, which
    installs its own (an immediate exit that leaves MLflow runs RUNNING)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def terminated() -> bool:
    """True once this process received SIGTERM."""
    return _terminated.is_set()


def exit_code() -> int:
    """The exit status of an interrupted command: 143 after SIGTERM, 130 after Ctrl-C (as a shell reports a
    process killed by that signal)."""
    return 128 + (signal.SIGTERM if terminated() else signal.SIGINT)


class graceful_stop:
    """While active (a ``with`` block), a SIGTERM first calls ``stop()``; when it returns True the stop is in
    hand (e.g. a study's trials checkpoint and end by themselves) and the Ctrl-C path is not taken now."""

    def __init__(self, stop) -> None:
        self.stop = stop

    def __enter__(self):
        _graceful.append(self.stop)
        return self

    def __exit__(self, *exc) -> None:
        _graceful.remove(self.stop)
