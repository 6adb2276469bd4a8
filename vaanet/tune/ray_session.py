"""Ray for a study's trials: started beside the study's MLflow parent run, sized, stopped.

:func:`_open_while_ray_starts` starts Ray (:func:`_start_ray`: a local one shielded from SIGTERM) while the
parent run opens; :func:`_concurrency` says how many trials the cluster fits; :func:`_tuner` builds the Tune
run of :func:`~vaanet.tune.trial.trainable`; :class:`TrialsStop` turns a SIGTERM into the trials' own stop;
:func:`_stop_ray` shuts Ray down before the report.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ..config import Config
from ..signals import sigterm_as_ctrl_c
from ..train.ray_cluster import init_ray
from ..train.store import check_reachable
from .trial import trainable


def _concurrency(args, per_trial_cpu: float) -> int:
    import ray

    res = ray.cluster_resources()
    if args.gpus_per_trial > 0:
        fit = int(res.get("GPU", 0) // args.gpus_per_trial)
    else:
        fit = int((res.get("CPU", 1) + 1e-9) // per_trial_cpu)
    fit = max(1, fit)
    return min(fit, args.max_concurrent) if args.max_concurrent else fit


def _start_ray(args) -> None:
    import ray

    if ray.is_initialized():
        return
    address = args.address or os.environ.get("RAY_ADDRESS")
    # Per-run costs Ray Train adds that a local study does not need (set before ray.init: the Ray
    # processes inherit this environment; a variable already set by the user wins):
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # notice a finished run sooner (2 s)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # each worker print reached the log twice
    if not args.verbose:  # Tune's own console output (its configuration box, "View detailed results")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    if not address:  # no spot instances on a local machine: no preemption watcher actor per run
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # credentials taken from --mlflow-uri travel in the workers' environment, never in a file
    env = {k: os.environ[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD") if k in os.environ}
    local = {} if address else {"include_dashboard": bool(getattr(args, "ray_dashboard", False))}
    import signal

    # A local Ray's processes (GCS, raylet, and through it the trials' workers) start with SIGTERM blocked, as
    # Ray starts them with SIGINT blocked: a SIGTERM to the whole job (scancel, systemd, kill -TERM -PGID) then
    # reaches only this driver, which stops the trials as on Ctrl-C (each checkpoints and ends KILLED) and
    # shuts Ray down itself. Without it the GCS would die at once and leave every run RUNNING.
    shield = {signal.SIGTERM} if not address and hasattr(signal, "pthread_sigmask") else set()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, shield) if shield else None
    try:
        init_ray(address, log_to_driver=args.verbose, logging_level="WARNING" if args.verbose else "ERROR",
                 runtime_env={"env_vars": env} if env else None, **local)
    finally:
        if shield:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    if shield:
        _kill_at_shutdown()
    sigterm_as_ctrl_c()  # ray.init replaced it with an immediate exit


def _kill_at_shutdown() -> None:
    """The local Ray's processes have SIGTERM blocked (:func:`_start_ray`): the SIGTERM with which ``ray.shutdown()``
    (ours, or Ray's at exit) asks each to stop cannot arrive, and it waited 1 s for each before its SIGKILL (5 s per
    study). Here Ray sends SIGKILL at once (its node's ``allow_graceful=False``; Ray 2.60's private
    ``_global_node``: without it, the plain shutdown), first to what its raylet started (the agents and workers,
    which would otherwise wait ~20 s to report their raylet's death to a GCS that is gone too)."""
    from ray._private import worker

    node = getattr(worker, "_global_node", None)
    kill = getattr(node, "kill_all_processes", None)
    if kill is None:
        return

    def kill_now(*args, **kwargs) -> None:
        import psutil

        try:
            raylets = [p for p in psutil.Process().children() if p.name() == "raylet"]
            started = [c for r in raylets for c in r.children(recursive=True)]
        except psutil.Error:
            started = []
        for p in started:
            try:
                p.kill()
            except psutil.Error:
                pass
        kill(*args, **{**kwargs, "allow_graceful": False})
        psutil.wait_procs(started, timeout=5)

    node.kill_all_processes = kill_now


def _open_while_ray_starts(args, uri: str, open_parent) -> str:
    """Ray's start (~4-8 s) and MLflow's (a new SQLite store migrates its schema for ~7 s) overlap: the
    parent run is opened in a thread while this one starts Ray. Returns the parent run's id."""
    from concurrent.futures import ThreadPoolExecutor

    check_reachable(uri)  # a server that does not answer: one line, before Ray starts
    with ThreadPoolExecutor(1) as pool:
        opened = pool.submit(open_parent)
        try:
            _start_ray(args)
        finally:
            parent = opened.result()  # an MLflow error is raised here, after Ray started or failed
    return parent


class TrialsStop:
    """A SIGTERM while the trials run: ask them to stop by themselves (``stop_file``, which each trial polls),
    so that each writes the checkpoint of its last finished epoch and ends KILLED, and no new one starts. Tune's
    own stop (the Ctrl-C path) force-kills a trial's process 5 s after asking, before it could save: it is
    taken only after ``VAANET_STOP_GRACE_S`` seconds (default 15: within SLURM's 30 s KillWait with the time
    shutting down takes), or at a second SIGTERM."""

    def __init__(self, stop_file: Path):
        self.stop_file, self.timer = stop_file, None

    def __enter__(self):
        self.stop_file.unlink(missing_ok=True)  # an earlier stop's request
        return self

    def __call__(self) -> bool:
        import signal
        import threading

        if self.timer is not None:  # a second SIGTERM: Tune stops the trials now
            return False
        self.stop_file.parent.mkdir(parents=True, exist_ok=True)
        self.stop_file.touch()
        grace = float(os.environ.get("VAANET_STOP_GRACE_S", "15"))
        self.timer = threading.Timer(grace, signal.raise_signal, (signal.SIGINT,))
        self.timer.daemon = True
        self.timer.start()
        print(f"\nSIGTERM: the running trials write their checkpoints and stop (Tune stops what is left in "
              f"{grace:g} s)", file=sys.stderr, flush=True)
        return True

    def __exit__(self, *exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.stop_file.unlink(missing_ok=True)


def _stop_ray() -> None:
    """The trials are over: a local Ray goes before the report, so that an interrupted report (Ctrl-C
    reaches Ray's processes too) leaves nothing waiting on them."""
    import signal

    import ray

    ray.shutdown()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Tune's handler outlives fit(): Ctrl-C works again
    sigterm_as_ctrl_c()  # and ray.shutdown() leaves SIGTERM at its default (an immediate exit)


def _tuner(args, base: Config, space: dict, concurrent: int, output: Path, name: str, tune_config=None,
           callbacks=None):
    from ray import tune

    resources = dict(workers=args.workers_per_trial, gpus=args.gpus_per_trial, cpus_per_worker=args.cpus_per_worker)
    tune_config = tune_config or tune.TuneConfig(max_concurrent_trials=concurrent)
    if args.workers_per_trial <= 1:
        tune_config.reuse_actors = True  # a single-worker trial's process serves the next one
    return tune.Tuner(
        trainable(resources), param_space={"base": base.to_dict(), "resources": resources, **space},
        tune_config=tune_config,
        run_config=tune.RunConfig(name=name, storage_path=str(output), callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=args.max_failures), verbose=0),
    )

