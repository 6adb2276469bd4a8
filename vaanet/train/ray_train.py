"""Ray Train driver: one configuration on ``workers`` Ray Train workers (DDP when more than one).

Thin glue: a TorchTrainer over :func:`vaanet.train.loop.train_fn`, CheckpointConfig keeping the latest
checkpoint (the loop keeps the selected weights itself), FailureConfig for retries. A single worker on
this machine (and every single-worker study trial) uses Ray Train's local mode, ``num_workers=0``: the
train function runs in the calling process and the run folder keeps its checkpoints. Rerunning with the
same ``run.output`` / ``run.name`` resumes from the latest checkpoint, whichever mode wrote it.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..config import Config
from ..signals import sigterm_as_ctrl_c
from .loop import train_fn
from .ray_cluster import init_ray
from .store import default_tracking_uri, ensure_experiment


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
                 callbacks=None, local_hooks: dict | None = None):
    """The TorchTrainer for one run (also used by the Tune studies). ``workers=0`` is Ray Train's local
    mode: the train function runs in the calling process, which holds the resources itself; the run
    folder keeps its checkpoints (``<run>/checkpoints/last``) and ``local_hooks`` (``on_report``,
    ``stop``: see :class:`vaanet.train.session.LocalSession`) connect it to a Tune trial."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    cfg = resolve_paths(cfg)
    out_dir = Path(cfg.run.output) / cfg.run.name
    if workers == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        loop_config, scaling = {"ray": False, **(local_hooks or {})}, ScalingConfig(num_workers=0)
    else:
        resources = {"CPU": cpus_per_worker, **({"GPU": gpus / workers} if gpus else {})}
        loop_config = {"ray": True}
        scaling = ScalingConfig(num_workers=workers, use_gpu=gpus > 0, resources_per_worker=resources)
    return TorchTrainer(
        train_fn,
        train_loop_config={"cfg": cfg.to_dict(), "out_dir": str(out_dir), **loop_config},
        scaling_config=scaling,
        run_config=RunConfig(
            name=cfg.run.name, storage_path=cfg.run.output,
            checkpoint_config=CheckpointConfig(num_to_keep=1),  # the latest; the selected weights: <run>/best
            failure_config=FailureConfig(max_failures=max_failures),
            callbacks=callbacks,
        ),
    )


def fit_with_ray(cfg: Config, workers: int = 1, gpus: int = 0, cpus_per_worker: float = 1.0, max_failures: int = 1,
                 address: str | None = None, local: bool | None = None):
    """Train one configuration through Ray Train; returns the ray.train.Result. One worker on this machine
    runs in Ray Train's local mode (this process: no Ray start, no worker group); more workers, or a
    cluster's address, run on Ray Train workers (``local=False`` forces workers: Ray Train then retries a
    failed worker ``max_failures`` times; in local mode a rerun resumes instead). Either way the run folder
    resumes."""
    import os

    import ray

    if local is None:
        local = workers == 1 and not gpus and not (address or os.environ.get("RAY_ADDRESS"))
    if not local and not ray.is_initialized():
        init_ray(address, log_to_driver=True, configure_logging=True, logging_level="WARNING")
        sigterm_as_ctrl_c()  # ray.init installed its own SIGTERM handler: an immediate exit
    cfg = resolve_paths(cfg)
    ensure_experiment(cfg.run.mlflow_uri, cfg.run.experiment)
    if local:
        return make_trainer(cfg, workers=0).fit()
    return make_trainer(cfg, workers, gpus, cpus_per_worker, max_failures).fit()
