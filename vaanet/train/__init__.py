"""Training: the per-worker loop, its metrics, MLflow tracking, and the Ray Train driver."""
from .loop import InjectedFailure, fit_local, train_fn

__all__ = ["InjectedFailure", "fit_local", "train_fn"]
