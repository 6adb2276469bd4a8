"""Ray Train driver: one configuration on ``workers`` Ray Train workers (DDP when more than one).

Thin glue: a TorchTrainer over :func:`vaanet.train.loop.train_fn`, CheckpointConfig keeping the latest
checkpoint (the loop keeps the selected weights itself), FailureConfig for retries. Rerunning with the same
``run.output`` / ``run.name`` resumes from the latest checkpoint (Ray Train restores the run from its
storage folder).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import Config
from .loop import train_fn
from .tracking import default_tracking_uri, ensure_experiment


def resolve_paths(cfg: Config) -> Config:
    """Absolute data/output paths and tracking URI: Ray workers do not run in this folder."""
    data = replace(cfg.data, cache=str(Path(cfg.data.cache).resolve()), split=str(Path(cfg.data.split).resolve()),
                   truth=str(Path(cfg.data.truth).resolve()) if cfg.data.truth else None)
    model = cfg.model
    for key in ("visual_weights", "audio_weights"):
        value = getattr(model, key)
        if value:
            model = replace(model, **{key: str(Path(value).resolve())})
    uri = cfg.run.mlflow_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = "sqlite:///" + str(Path(uri[len("sqlite:///"):]).resolve())
    run = replace(cfg.run, output=str(Path(cfg.run.output).resolve()), mlflow_uri=uri)
    cfg = replace(cfg, data=data, model=model, run=run)
    cfg.check_files()
    return cfg


def make_trainer(cfg: Config, workers: int = 1, gpus: int = 0, cpus_per_worker: float = 1.0, max_failures: int = 1,
                 callbacks=None):
    """The TorchTrainer for one run (also used by the Tune studies)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = resolve_paths(cfg)
    out_dir = Path(cfg.run.output) / cfg.run.name
    resources = {"CPU": cpus_per_worker}
    if gpus:
        resources["GPU"] = gpus / workers
    return TorchTrainer(
        train_fn,
        train_loop_config={"cfg": cfg.to_dict(), "out_dir": str(out_dir), "ray": True},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources),
        run_config=RunConfig(
            name=cfg.run.name, storage_path=cfg.run.output,
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # the latest; the selected weights: <run>/best
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=callbacks,
        ),
    )


def fit_with_ray(cfg: Config, workers: int = 1, gpus: int = 0, cpus_per_worker: float = 1.0, max_failures: int = 1,
                 address: str | None = None):
    """Train one configuration through Ray Train; returns the ray.train.Result."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=True,
                 configure_logging=True, logging_level="WARNING")
    cfg = resolve_paths(cfg)
    ensure_experiment(cfg.run.mlflow_uri, cfg.run.experiment)
    return make_trainer(cfg, workers, gpus, cpus_per_worker, max_failures).fit()
