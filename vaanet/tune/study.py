"""What a study is, and how it runs.

A :class:`Study` is a name, the paper tables it fills, and a grid of configuration overrides (e.g.
``{"model.preset": "VS"}``). :func:`run_study` crosses the grid with the splits and seeds, and runs each
point as one Ray Tune trial: a function trainable that builds a Ray Train ``TorchTrainer`` for that
configuration and fits it with ``TuneReportCallback`` (the Train-in-Tune pattern of Ray 2.60). Every trial
is one MLflow run in the study's experiment, tagged with study, table and grid point. Ray does the
scheduling, retries (``FailureConfig``) and resume (``Tuner.restore``); this module is the glue.
"""
from __future__ import annotations

import argparse
import itertools
import os

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import Config, load_config, with_overrides
from ..train.ray_train import make_trainer, resolve_paths
from ..train.tracking import ensure_experiment

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {"synth": REPO / "configs" / "synth_quick.yaml", "ve8": REPO / "configs" / "ve8.yaml",
           "e6": REPO / "configs" / "e6.yaml"}


@dataclass
class Study:
    name: str  # e.g. "ablation"
    tables: dict[str, str]  # dataset -> paper table, e.g. {"ve8": "3", "e6": "4"}
    grid: list[dict[str, Any]]  # configuration overrides, one dict per row of the table
    row_keys: tuple[str, ...] = ("model.preset",)  # overrides that name a row
    extra: dict[str, Any] = field(default_factory=dict)  # overrides applied to every trial


def study_parser(description: str, default_epochs: int | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["synth", "ve8", "e6"], default="synth",
                   help="synth (default; generated if missing), ve8 (10 random splits) or e6 (official split)")
    p.add_argument("--data-root", default=None, help="video folder <root>/<Class>/<file> (prepared once into --cache)")
    p.add_argument("--cache", default=None, help="prepared cache folder (default data/<dataset>/cache); on a "
                   "cluster, a path on storage every node reads")
    p.add_argument("--splits", type=int, default=None, help="number of splits to run (default: synth 3, ve8 10, e6 1)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each split runs once per seed")
    p.add_argument("--epochs", type=int, default=default_epochs, help="epochs per trial (default: the dataset config's)")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial (DDP when > 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial (shared by its workers)")
    p.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs per Ray Train worker")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default: what the cluster fits)")
    p.add_argument("--max-failures", type=int, default=2, help="retries of a failed trial (Tune) and of its workers (Train)")
    p.add_argument("--address", default=None, help="existing Ray cluster (default: RAY_ADDRESS or a local Ray)")
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db here)")
    p.add_argument("--experiment", default=None, help="MLflow experiment and Tune run name (default: <study>-<dataset>)")
    p.add_argument("--output", default="runs", help="folder for the Tune/Train results and checkpoints")
    p.add_argument("--resume", action="store_true", help="resume an interrupted study (finished trials are kept)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 split, 1 epoch")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="extra config override (repeatable)")
    return p


# ---- data, prepared once before any trial ------------------------------------------------------------
def demo_synth_config():
    from ..data.synth import SynthConfig

    return SynthConfig()  # the defaults are the demo's set


def ensure_data(args, n_splits: int) -> tuple[Path, list[Path], Path | None]:
    """Prepare the data set once (cache + split files); returns cache, split files, truth file."""
    from ..data.ingest import PrepareConfig, load_index, prepare
    from ..data.splits import make_splits

    dataset = args.dataset
    cache = Path(args.cache or f"data/{dataset}/cache").resolve()
    truth = None
    if dataset == "synth":
        root = Path(args.data_root or "data/synth/videos").resolve()
        if not (root / "synth_truth.csv").exists():
            from ..data.synth import generate

            print(f"generating the synthetic set under {root} ...", flush=True)
            generate(root, demo_synth_config())
        truth = root / "synth_truth.csv"
    else:
        root = Path(args.data_root).resolve() if args.data_root else None
    if not (cache / "index.csv").exists():
        if root is None:
            raise SystemExit(f"error: {cache}/index.csv not found; pass --data-root <videos> to prepare it once")
        print(f"preparing {root} into {cache} ...", flush=True)
        prepare(root, cache, PrepareConfig(dataset="e6" if dataset == "e6" else "ve8",
                                           short_side=56 if dataset == "synth" else 128))
    split_dir = cache / "splits"
    if dataset == "e6":
        official = split_dir / "official.csv"
        if not official.exists():
            if root is None:
                raise SystemExit(f"error: {official} not found; pass --data-root with trainlist.txt/testlist.txt")
            make_splits(load_index(cache), split_dir, train_list=root / "trainlist.txt", test_list=root / "testlist.txt")
        return cache, [official], truth
    files = sorted(split_dir.glob("split_*.csv"))
    if len(files) < n_splits:
        make_splits(load_index(cache), split_dir, n=max(n_splits, 10 if dataset == "ve8" else n_splits), seed=0,
                    val_fraction=0.2 if dataset == "synth" else 0.1)
        files = sorted(split_dir.glob("split_*.csv"))
    return cache, files[:n_splits], truth


# ---- the trial ---------------------------------------------------------------------------------------
def trial(config: dict) -> None:
    """One Tune trial = one Ray Train run of one configuration. ``config["point"]`` is a grid point; a
    search algorithm instead samples ``config["search"]`` (overrides), turned into a point here."""
    from ray.tune.integration.ray_train import TuneReportCallback

    if "search" in config:
        from ray import tune

        overrides = {k.replace("__", "."): v for k, v in config["search"].items()}
        name = f"search_{tune.get_context().get_trial_id()}"
        config = {**config, "point": {"overrides": {**config["fixed"], **overrides, "run.name": name},
                                      "tags": {**config["tags"], "row": name}}}
    cfg = Config.from_dict(config["base"])
    cfg = with_overrides(cfg, config["point"]["overrides"])
    cfg = replace(cfg, run=replace(cfg.run, tags={**cfg.run.tags, **config["point"]["tags"]}))
    r = config["resources"]
    trainer = make_trainer(cfg, workers=r["workers"], gpus=r["gpus"], cpus_per_worker=r["cpus_per_worker"],
                           max_failures=r["max_failures"], callbacks=[TuneReportCallback()])
    result = trainer.fit()
    if result.error is not None:
        raise result.error


def _points(study: Study, dataset: str, split_files: list[Path], seeds: list[int], experiment: str) -> list[dict]:
    points = []
    for row, split, seed in itertools.product(study.grid, split_files, seeds):
        overrides = {**study.extra, **row, "data.split": str(split), "run.seed": seed}
        row_name = "_".join(str(row[k]) for k in study.row_keys if k in row) or "run"
        name = f"{row_name}_{split.stem}_seed{seed}".replace("+", "-").replace("/", "-")
        tags = {"study": study.name, "table": study.tables.get(dataset, ""), "dataset": dataset,
                "row": row_name, "experiment": experiment}
        points.append({"name": name, "overrides": {**overrides, "run.name": name}, "tags": tags})
    return points


def _concurrency(args, per_trial_cpu: float) -> int:
    import ray

    res = ray.cluster_resources()
    if args.gpus_per_trial > 0:
        fit = int(res.get("GPU", 0) // args.gpus_per_trial)
    else:
        fit = int((res.get("CPU", 1) + 1e-9) // per_trial_cpu)
    fit = max(1, fit)
    return min(fit, args.max_concurrent) if args.max_concurrent else fit


def results_frame(result_grid) -> pd.DataFrame:
    rows = []
    for r in result_grid:
        point = r.config["point"]
        rows.append({**point["tags"], **{k: v for k, v in point["overrides"].items()},
                     **{k: v for k, v in (r.metrics or {}).items() if k.startswith(("test_", "best_val"))},
                     "status": "error" if r.error else ("ok" if r.metrics and "test_acc" in r.metrics else "missing")})
    return pd.DataFrame(rows)


def summary_table(frame: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Mean ± std over splits and seeds of the test metrics, one row per grid row."""
    ok = frame[frame["status"] == "ok"]
    cols = ["test_acc", "test_mean_class_acc", "test_polarity_acc"] + [
        c for c in ("test_temporal_on_key", "test_spatial_in_box") if c in ok]
    out = []
    for row in study.grid:
        name = "_".join(str(row[k]) for k in study.row_keys if k in row) or "run"
        part = ok[ok["row"] == name]
        cells = {"row": name, "n": len(part), "missing": int((frame["row"] == name).sum() - len(part))}
        for c in cols:
            vals = part[c].astype(float) * 100 if c in part else pd.Series(dtype=float)
            vals = vals.dropna()
            cells[c.removeprefix("test_")] = (f"{vals.mean():.1f} ± {vals.std(ddof=1) if len(vals) > 1 else 0:.1f}"
                                              if len(vals) else "—")
        out.append(cells)
    return pd.DataFrame(out)


def main(study: Study, description: str) -> None:
    """Entry point of the experiment scripts: exit status 1 when any trial failed or is missing."""
    frame = run_study(study, study_parser(description).parse_args())
    sys.exit(int((frame["status"] != "ok").any()))


def run_study(study: Study, args: argparse.Namespace) -> pd.DataFrame:
    """Run (or resume, or just report) the study; returns one row per trial with its status."""
    import ray
    from ray import tune

    start = time.time()
    experiment = args.experiment or f"{study.name}-{args.dataset}"
    n_splits = 1 if args.quick else (args.splits or {"synth": 3, "ve8": 10, "e6": 1}[args.dataset])
    seeds = [int(s) for s in str(args.seeds).split(",") if s != ""]
    cache, split_files, truth = ensure_data(args, n_splits)

    base = load_config(CONFIGS[args.dataset], args.set)
    data = replace(base.data, cache=str(cache), truth=str(truth) if truth else None)
    epochs = 1 if args.quick else (args.epochs or base.optim.epochs)
    output = Path(args.output).resolve()
    run = replace(base.run, experiment=experiment, mlflow_uri=args.mlflow_uri or base.run.mlflow_uri,
                  output=str(output / experiment / "train"))
    base = resolve_paths(replace(base, data=replace(data, split=str(split_files[0])),
                                 optim=replace(base.optim, epochs=epochs), run=run))
    points = _points(study, args.dataset, split_files, seeds, experiment)
    ensure_experiment(base.run.mlflow_uri, experiment)

    if not ray.is_initialized():
        address = args.address or os.environ.get("RAY_ADDRESS")
        # Per-run costs Ray Train adds that a local study does not need (set before ray.init: the Ray
        # processes inherit this environment; a variable already set by the user wins):
        os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # notice a finished run sooner (2 s)
        os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # each worker print reached the log twice
        if not address:  # no spot instances on a local machine: no preemption watcher actor per run
            os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
        ray.init(address=address, log_to_driver=True, logging_level="WARNING")
    concurrent = _concurrency(args, args.workers_per_trial * args.cpus_per_worker)
    resources = dict(workers=args.workers_per_trial, gpus=args.gpus_per_trial, cpus_per_worker=args.cpus_per_worker,
                     max_failures=args.max_failures)
    # The trial driver only waits on its TorchTrainer, whose workers hold the CPUs/GPUs. It asks for 1 MB
    # of memory and no CPU: a CPU share per driver would fragment the nodes so that no Train worker fits
    # (on 2 CPUs, two trials holding 0.01 each leave no whole CPU: every trial waits forever).
    trainable = tune.with_resources(trial, {"CPU": 0, "memory": 1e6})
    path = output / experiment / "tune"
    path.parent.mkdir(parents=True, exist_ok=True)
    search = getattr(args, "search", None)
    if search == "optuna" and not tune.Tuner.can_restore(str(path)):
        return _run_search(study, args, base, split_files, trainable, resources, concurrent, experiment, output, start)
    if tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
        previous = tuner.get_results()
        done = sum(1 for r in previous if r.error is None and r.metrics and "test_acc" in r.metrics)
        if done == len(points) and len(previous) == len(points):
            print(f"study {experiment}: all {done} trials already finished in {path}; nothing to train "
                  "(use --experiment NAME for a fresh study)")
            results = previous
        elif not args.resume:
            raise SystemExit(f"error: {path} holds an unfinished study ({done}/{len(points)} trials done); "
                             "pass --resume to continue it, or --experiment NAME for a new one")
        else:
            print(f"resuming study {experiment}: {done}/{len(points)} trials already finished", flush=True)
            results = tuner.fit()
    else:
        print(f"study {experiment}: {len(points)} trials ({len(study.grid)} rows x {len(split_files)} splits x "
              f"{len(seeds)} seeds), {epochs} epochs each, up to {concurrent} at once", flush=True)
        tuner = tune.Tuner(
            trainable,
            param_space={"base": base.to_dict(), "resources": resources, "point": tune.grid_search(points)},
            tune_config=tune.TuneConfig(max_concurrent_trials=concurrent),
            run_config=tune.RunConfig(name="tune", storage_path=str(output / experiment),
                                      failure_config=tune.FailureConfig(max_failures=args.max_failures),
                                      verbose=0),
        )
        results = tuner.fit()
    frame = results_frame(results)
    report_dir = Path("reports") / experiment
    report_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(report_dir / "trials.csv", index=False)
    table = summary_table(frame, study)
    print(f"\n{study.name} on {args.dataset}: test metrics in %, mean ± std over {len(split_files)} split(s) x "
          f"{len(seeds)} seed(s)  [{time.time() - start:.0f} s]")
    print(table.to_string(index=False))
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        print(f"WARNING: {len(failed)} trials failed or are missing: {failed['run.name'].tolist()}",
              file=sys.stderr)
    _write_reports(experiment, args, report_dir)
    return frame


def _run_search(study, args, base, split_files, trainable, resources, concurrent, experiment, output, start):
    """Optuna TPE over lambda and learning rate with ASHA early stopping, selecting on validation
    accuracy only (the test metrics are recorded, never used to choose)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space = {"optim__lam": tune.uniform(0.0, 4.0), "optim__lr": tune.loguniform(1e-5, 1e-2)}
    fixed = {**study.extra, "data.split": str(split_files[0]), "run.seed": int(str(args.seeds).split(",")[0])}
    tags = {"study": study.name, "table": "lambda", "dataset": args.dataset, "experiment": experiment}
    tuner = tune.Tuner(
        trainable,
        param_space={"base": base.to_dict(), "resources": resources, "fixed": fixed, "tags": tags, "search": space},
        tune_config=tune.TuneConfig(
            search_alg=OptunaSearch(metric="val_acc", mode="max", seed=int(str(args.seeds).split(",")[0])),
            scheduler=ASHAScheduler(time_attr="training_iteration", grace_period=1, reduction_factor=2,
                                    max_t=max(base.optim.epochs, 1) + 1),
            metric="val_acc", mode="max", num_samples=args.samples, max_concurrent_trials=concurrent),
        run_config=tune.RunConfig(name="tune", storage_path=str(output / experiment), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=args.max_failures)),
    )
    results = tuner.fit()
    rows = []
    for r in results:
        m = r.metrics or {}
        rows.append({"trial": r.path.split("/")[-1] if r.path else "", "lambda": r.config["search"]["optim__lam"],
                     "lr": r.config["search"]["optim__lr"], "best_val_acc": m.get("best_val_acc", m.get("val_acc")),
                     "epochs_run": m.get("training_iteration"), "test_acc": m.get("test_acc"),
                     "status": "error" if r.error else "ok"})
    frame = pd.DataFrame(rows).sort_values("best_val_acc", ascending=False)
    best = frame.iloc[0]
    print(f"\nOptuna TPE + ASHA over lambda and lr on {args.dataset} ({len(frame)} trials, selected on validation "
          f"accuracy)  [{time.time() - start:.0f} s]")
    print(frame.to_string(index=False))
    print(f"selected: lambda {best['lambda']:.3f}, lr {best['lr']:.2e} (val acc {best['best_val_acc']:.3f})")
    report_dir = Path("reports") / experiment
    report_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(report_dir / "search.csv", index=False)
    return frame


def _write_reports(experiment: str, args, report_dir: Path) -> None:
    try:
        from analysis.report import write_reports
    except ImportError:
        return
    write_reports(experiment, args.mlflow_uri, report_dir)


