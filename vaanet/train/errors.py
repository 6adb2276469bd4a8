"""How a training run fails: the errors the loop raises, and which of them a retry cannot fix."""
from __future__ import annotations


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
