"""The Optuna search: TPE over lambda and learning rate with ASHA early stopping, on one split and seed.

:func:`_run_search` runs (or resumes, or just prints) the search from a :class:`SearchContext`, what
:func:`~vaanet.tune.study.run_study` settled before it; :func:`search_fixed` is what every searched trial sets
besides the sampled values. Tune's own state is restored only from a folder nobody else can write
(:func:`_check_trusted`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ..config import Config
from .parent_run import ParentRun
from .progress import StudyProgress
from .ray_session import _concurrency, _open_while_ray_starts, _stop_ray, _tuner
from .request import Study, search_seed
from .summary import DONE, STATS_COLUMNS
from .trial import trainable


@dataclass
class SearchContext:
    """What the driver settled before a search starts: the request, the study's state file and folders, and
    its MLflow parent run (``open_parent`` opens it and records it in ``state_file``)."""
    study: Study
    args: argparse.Namespace
    base: Config
    split_files: list[Path]
    state: dict[str, Any] | None  # study.json as found, None for a new study
    state_file: Path
    open_parent: Callable[[], str]
    parent_run: ParentRun
    output: Path
    report_dir: Path
    start: float  # time.time() when the command started
    replaced: dict[str, Any]  # study-wide defaults --set replaced


def _check_trusted(folder: Path) -> None:
    """Tune's state is a pickle: restore it only from a folder this user owns and nobody else can write."""
    for path in [folder, *folder.rglob("*.pkl")]:
        st = path.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise ValueError(f"{path} is owned by another user or writable by others: restoring it would run "
                             "whatever it holds. --output must be trusted storage; fix the permissions or start over")


def search_fixed(study: Study, replaced: dict, split: Path, seed: int) -> dict:
    """What every trial of a search sets besides the sampled values: the study's fixed overrides, as replaced
    by --set (the user's value wins, as in the grid), the split and the seed."""
    return {**study.extra, **replaced, "data.split": str(split), "run.seed": seed}


def _run_search(ctx: SearchContext) -> pd.DataFrame:
    """Optuna TPE over lambda and learning rate with ASHA early stopping, selecting on validation
    accuracy only (the test metrics are recorded, never used to choose). A finished search prints its
    stored result; an unfinished one continues with --resume (Tune restores the searcher)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    study, args, base, split_files, state = ctx.study, ctx.args, ctx.base, ctx.split_files, ctx.state
    state_file, open_parent, parent_run = ctx.state_file, ctx.open_parent, ctx.parent_run
    output, report_dir, start, replaced = ctx.output, ctx.report_dir, ctx.start, ctx.replaced

    experiment = base.run.experiment
    if state is not None and state.get("complete"):
        frame = pd.read_csv(report_dir / "search.csv")
        print(f"search {experiment}: all {len(frame)} trials already finished; nothing to train")
        _print_search(frame, args, start)
        return frame
    path = output / "search"
    if state is not None and not args.resume:
        raise ValueError(f"{output} holds an unfinished search; pass --resume to continue it, or --experiment NAME")
    seed = search_seed(args)
    parent = _open_while_ray_starts(args, base.run.mlflow_uri, open_parent)
    concurrent = _concurrency(args, args.workers_per_trial * args.cpus_per_worker)
    if state is not None and tune.Tuner.can_restore(str(path)):
        _check_trusted(path)
        print(f"resuming search {experiment}", flush=True)
        resources = dict(workers=args.workers_per_trial, gpus=args.gpus_per_trial,
                         cpus_per_worker=args.cpus_per_worker)
        tuner = tune.Tuner.restore(str(path), trainable=trainable(resources), resume_errored=True)
    else:
        space = {"optim__lam": tune.uniform(0.0, 4.0), "optim__lr": tune.loguniform(1e-5, 1e-2)}
        fixed = search_fixed(study, replaced, split_files[0], seed)
        tags = {"study": study.name, "table": "lambda", "dataset": args.dataset, "experiment": experiment,
                "mlflow.parentRunId": parent, "mlflow.source.name": Path(sys.argv[0]).name}
        tune_config = tune.TuneConfig(
            search_alg=OptunaSearch(metric="val_acc", mode="max", seed=seed),
            scheduler=ASHAScheduler(time_attr="training_iteration", grace_period=1, reduction_factor=2,
                                    max_t=max(base.optim.epochs, 1) + 1),
            metric="val_acc", mode="max", num_samples=args.samples, max_concurrent_trials=concurrent)
        tuner = _tuner(args, base, {"fixed": fixed, "tags": tags, "search": space}, concurrent, output, "search",
                       tune_config, callbacks=[StudyProgress(args.samples, 0, concurrent, verbose=args.verbose)])
    results = tuner.fit()
    _stop_ray()
    train_root = Path(base.run.output)
    rows = []
    for r in results:
        if not r.config or "search" not in r.config:
            continue
        m = r.metrics or {}
        name = f"search_{m.get('trial_id', '')}"
        rows.append({"trial": Path(r.path).name if r.path else "", "lambda": r.config["search"]["optim__lam"],
                     "lr": r.config["search"]["optim__lr"], "best_val_acc": m.get("best_val_acc", m.get("val_acc")),
                     "epochs_run": m.get("training_iteration"), "test_acc": m.get("test_acc"),
                     "status": "error" if r.error else ("ok" if "test_acc" in m else "stopped"),  # stopped: ASHA
                     "run.name": name})
    frame = pd.DataFrame(rows).sort_values("best_val_acc", ascending=False)
    parent_run.close_leftovers(train_root, frame.assign(status="stopped"))
    report_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(report_dir / "search.csv", index=False)
    complete = len(frame) == args.samples and frame["status"].isin(DONE).all()
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "complete": bool(complete)}, indent=1))
    _print_search(frame, args, start)
    parent_run.finish(pd.DataFrame(columns=STATS_COLUMNS), frame.assign(
        status=frame["status"].where(frame["status"] != "stopped", "ok")), report_dir)
    return frame


def _print_search(frame: pd.DataFrame, args, start: float) -> None:
    best = frame.iloc[0]
    print(f"\nOptuna TPE + ASHA over lambda and lr on {args.dataset} ({len(frame)} trials, selected on validation "
          f"accuracy)  [{time.time() - start:.0f} s]")
    print(frame.drop(columns=["run.name"], errors="ignore").to_string(index=False))
    print(f"selected: lambda {best['lambda']:.3f}, lr {best['lr']:.2e} (val acc {best['best_val_acc']:.3f})")

