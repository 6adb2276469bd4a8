"""What a study is, and how it runs.

A :class:`Study` is a name, the paper tables it fills, and a grid of configuration overrides (e.g.
``{"model.preset": "VS"}``). :func:`run_study` crosses the grid with the splits and seeds, and runs each
point as one Ray Tune trial (:mod:`vaanet.tune.trial`: Ray Train's local mode in the trial's own process
for one worker, a ``TorchTrainer`` with ``TuneReportCallback`` for DDP). Every trial is one MLflow run in
the study's experiment, tagged with study, table and grid point.

Before anything is prepared or started, the driver checks the whole request (the config of every grid
point, flags against ``--set``, keys the study owns) and compares it with the study's own plain-JSON
state ``<output>/<experiment>/study.json``: a finished study prints its table without training, a changed
request is refused with the differing keys, an unfinished one continues only with ``--resume``. A trial is
done when its run folder holds ``final_metrics.json``; unfinished trials rerun in a fresh Tune run and
each resumes from its own checkpoint (Ray Train restores a run folder). Only the Optuna search restores
Tune's own state (``Tuner.restore``, its searcher), and only from a folder no other user can write.

This module is the driver (the command line, :func:`run_study`, :func:`main`); its parts, each in its module:
:mod:`.request` (what a study asks, checked and compared), :mod:`.data` (its data, prepared once),
:mod:`.ray_session` (Ray, the Tune run, the SIGTERM stop), :mod:`.parent_run` (the study's MLflow run),
:mod:`.summary` (the trials' results, the closing table and verdict) and :mod:`.search` (the Optuna search).
"""
from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import pandas as pd

from ..faults import hold
from ..signals import exit_code, graceful_stop, sigterm_as_ctrl_c, terminated
from ..train.ray_train import resolve_paths
from ..train.store import ensure_experiment
from .data import data_digest, ensure_data, stored_digest
from .parent_run import ParentRun
from .progress import StudyProgress
from .ray_session import TrialsStop, _concurrency, _open_while_ray_starts, _stop_ray, _tuner
from .request import (LATER_REQUEST_KEYS, Study, _base_config, _differences, _holds_parent, _points, _request,
                      search_seed)
from .search import SearchContext, _run_search
from .summary import (DONE, attention_verdict, full_model_row, results_frame, row_presets, summary_comparisons,
                      summary_note, summary_stats, summary_table)
from .trial import STOP_FILE, first_line

__all__ = ["Study", "main", "run_study", "study_parser"]  # Study is defined in .request; the experiments import it here


def study_parser(description: str, default_epochs: int | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["synth", "ve8", "e6"], default="synth",
                   help="synth (default; generated if missing), ve8 (10 random splits) or e6 (official split)")
    p.add_argument("--data-root", default=None, help="video folder <root>/<Class>/<file> (prepared once into --cache)")
    p.add_argument("--cache", default=None, help="prepared cache folder (default data/<dataset>/cache); on a "
                   "cluster, a path on storage every node reads")
    p.add_argument("--splits", type=int, default=None, help="number of splits to run (default: synth 3, ve8 10, e6 1)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each split runs once per seed")
    p.add_argument("--epochs", type=int, default=default_epochs,
                   help="epochs per trial (default: the dataset config's); the same as --set optim.epochs=N")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial (DDP when > 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial (shared by its workers)")
    p.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs per Ray Train worker")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default: what the cluster fits)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="how often a failed trial is restarted from its last checkpoint before it counts as "
                   "failed (default 2; 0: never). Errors a retry cannot fix (bad config, missing or corrupt file, "
                   "non-finite loss) fail at once")
    p.add_argument("--address", default=None, help="the Ray cluster to run on (default: RAY_ADDRESS; without "
                   "either, a new local Ray of this command's own, never one already running on the machine)")
    p.add_argument("--ray-dashboard", action="store_true", help="start the Ray dashboard with a local Ray (off by "
                   "default: it adds ~5 s to a study's start; a cluster started by ray_cluster.yaml has its own)")
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db here); "
                   "the same as --set run.mlflow_uri=URI. Trials, the closing report and reruns all use it")
    p.add_argument("--experiment", default=None, help="MLflow experiment and study folder name (default: "
                   "<study>-<dataset>); the same as --set run.experiment=NAME")
    p.add_argument("--output", default="runs", help="study folder root: <output>/<experiment>/{train,tune,reports}; "
                   "must be trusted storage (only you can write it)")
    p.add_argument("--resume", action="store_true", help="resume an interrupted study (finished trials are kept)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 split, 1 epoch")
    p.add_argument("--verbose", action="store_true", help="also show the workers' output and Ray's messages (by "
                   "default they go to each run's train.log and Ray's session logs; the console shows epochs and progress)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (repeatable), applied over the dataset's YAML; may replace a study-wide "
                   "default (announced), never a key the grid or the study sets per trial (an error)")
    return p


INTERRUPTED = "\ninterrupted: finished trials are kept; rerun the same command with --resume to continue"


def main(study: Study, description: str, parser: argparse.ArgumentParser | None = None,
         report: Callable[..., object] | None = None) -> None:
    """Entry point of the experiment scripts: exit 1 when any trial failed or is missing, 2 (one line,
    no traceback) when the request itself is wrong. ``report`` writes the paper tables when the study ends
    (the scripts pass :func:`analysis.report.write_reports`: analysis is the layer above the study)."""
    sigterm_as_ctrl_c()  # SIGTERM (scancel, preemption, docker stop) stops the study as Ctrl-C does, exit 143
    args = (parser or study_parser(description)).parse_args()
    try:
        frame = run_study(study, args, report)
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(exit_code())
    if terminated():  # stopped by SIGTERM while the trials ran: they stopped, the tables say what is done
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(exit_code())
    sys.exit(int((~frame["status"].isin(DONE)).any() or not frame.attrs.get("reported", True)))


def run_study(study: Study, args: argparse.Namespace, report: Callable[..., object] | None = None) -> pd.DataFrame:
    """Run (or resume, or just report) the study; returns one row per trial with its status. ``report``:
    see :func:`main`."""
    from ray import tune

    start = time.time()
    if not args.verbose:  # "Creating initial MLflow database tables..." of a new store
        import logging

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    base, replaced = _base_config(study, args)  # a wrong request fails here, before data or Ray
    experiment = base.run.experiment
    for key, value in replaced.items():
        print(f"--set {key}={value} replaces the {study.name} study's default {key}={study.extra[key]} "
              "(recorded in every run: param and tag study_overrides)", flush=True)
    n_splits = 1 if args.quick else (args.splits or {"synth": 3, "ve8": 10, "e6": 1}[args.dataset])
    seeds = [int(s) for s in str(args.seeds).split(",") if s != ""]
    if len(set(seeds)) != len(seeds):  # the same trial twice: one run folder trained twice, counted twice
        raise ValueError(f"--seeds {args.seeds} names a seed more than once; give each seed once")
    if getattr(args, "search", None) == "optuna":
        search_seed(args)  # one seed, checked before the data are prepared
    cache, split_files, truth = ensure_data(args, n_splits)

    output = Path(args.output).resolve() / experiment
    train_root = output / "train"
    base = resolve_paths(replace(base, data=replace(base.data, cache=str(cache), split=str(split_files[0]),
                                                    truth=str(truth) if truth else None),
                                 run=replace(base.run, output=str(train_root))))
    search = getattr(args, "search", None) == "optuna"
    points = [] if search else _points(study, args.dataset, split_files, seeds, experiment, replaced)
    request = _request(study, args, base, points, split_files)
    request["data_digest"] = data_digest(cache, split_files, truth)
    state_file = output / "study.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else None
    if state is not None:
        for key in LATER_REQUEST_KEYS:  # a study.json from before these were stored
            state["request"].setdefault(key, request[key])
        state["request"]["data_digest"] = stored_digest(state["request"], cache, split_files, truth,
                                                        request["data_digest"])
        if state["request"].get("mlflow_uri") != request["mlflow_uri"] and \
                _holds_parent(request["mlflow_uri"], state.get("parent_run_id"), experiment):
            print(f"MLflow: the study's store is reached at {request['mlflow_uri']} now (was "
                  f"{state['request']['mlflow_uri']}): it holds the study's run {state['parent_run_id']}", flush=True)
            state["request"]["mlflow_uri"] = request["mlflow_uri"]
        diff = _differences(state["request"], request)
        if diff:
            raise ValueError(f"{state_file} holds a study started with other settings ({'; '.join(diff[:6])}"
                             f"{'; ...' if len(diff) > 6 else ''}); rerun it as it was, or give this one its own "
                             "--experiment NAME")
    report_dir = output / "reports"
    parent_run = ParentRun(base.run.mlflow_uri, experiment, (state or {}).get("parent_run_id"))

    def open_parent() -> str:  # only once the request is accepted: a refused command leaves nothing open
        ensure_experiment(base.run.mlflow_uri, experiment)
        parent = parent_run.open(study, args, base, len(points) or args.samples, split_files, points)
        output.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"request": request, "parent_run_id": parent}, indent=1))
        return parent

    if search:
        return _run_search(SearchContext(
            study=study, args=args, base=base, split_files=split_files, state=state, state_file=state_file,
            open_parent=open_parent, parent_run=parent_run, output=output, report_dir=report_dir, start=start,
            replaced=replaced))

    frame = results_frame(points, train_root)
    todo = [p for p, status in zip(points, frame["status"]) if status != "ok"]
    errors: dict[str, str] = {}
    parent = parent_run.run_id
    if not todo:
        print(f"study {experiment}: all {len(points)} trials already finished in {train_root}; nothing to train "
              "(use --experiment NAME for a fresh study)")
        ensure_experiment(base.run.mlflow_uri, experiment)
        parent_run.close_leftovers(train_root, frame)  # re-sends what an outage kept back
    else:
        if state is not None and not args.resume:
            raise ValueError(f"{output} holds an unfinished study ({len(points) - len(todo)}/{len(points)} trials "
                             "done); pass --resume to continue it, or --experiment NAME for a new one")
        parent = _open_while_ray_starts(args, base.run.mlflow_uri, open_parent)
        points = _points(study, args.dataset, split_files, seeds, experiment, replaced, parent)
        todo = [p for p in points if p["name"] in {t["name"] for t in todo}]
        concurrent = _concurrency(args, args.workers_per_trial * args.cpus_per_worker)
        verb = (f"resuming study {experiment}: {len(points) - len(todo)}/{len(points)} trials already finished"
                if state is not None else f"study {experiment}: {len(points)} trials")
        print(f"{verb} ({len(study.grid)} rows x {len(split_files)} splits x {len(seeds)} seeds), "
              f"{base.optim.epochs} epochs each, up to {concurrent} at once", flush=True)
        progress = StudyProgress(len(points), len(points) - len(todo), concurrent, verbose=args.verbose)
        with TrialsStop(train_root / STOP_FILE) as stop, graceful_stop(stop):
            results = _tuner(args, base, {"point": tune.grid_search(todo)}, concurrent, output,
                             f"tune-{time.strftime('%Y%m%d-%H%M%S')}", callbacks=[progress]).fit()
        errors = {r.config["point"]["name"]: first_line(r.error) for r in results
                  if r.error is not None and r.config and "point" in r.config}
        _stop_ray()
        frame = results_frame(points, train_root, errors)
        parent_run.close_leftovers(train_root, frame)
    report_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(report_dir / "trials.csv", index=False)
    stats = summary_stats(frame, study)
    comparisons = summary_comparisons(frame, study)
    table = summary_table(frame, study, stats, comparisons)
    table.to_csv(report_dir / "summary.csv", index=False)
    print(f"\n{study.name} on {args.dataset}: test metrics in %, mean ± std [95 % CI] over {len(split_files)} "
          f"split(s) x {len(seeds)} seed(s)  [{time.time() - start:.0f} s]")
    print(table.to_string(index=False))
    print(summary_note(comparisons, len(split_files), len(seeds)))
    verdict = attention_verdict(stats, presets=row_presets(study), chance=1.0 / base.model.num_classes)
    if verdict:
        print(verdict)
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        print(f"WARNING: {len(failed)} trials failed or are missing: {failed['run.name'].tolist()}; rerun the same "
              "command with --resume to train them (finished trials are kept)", file=sys.stderr)
        for _, row in failed[failed["error"] != ""].iterrows():
            print(f"  {row['run.name']}: {row['error']}", file=sys.stderr)
    try:
        frame.attrs["reported"] = _write_reports(report, experiment, base.run.mlflow_uri, report_dir, parent) and \
            frame.attrs.get("reported", True)
    except KeyboardInterrupt:  # Ctrl-C during the report: the study's parent run ends KILLED, not RUNNING
        if parent:
            parent_run.kill()
        raise
    if parent:
        parent_run.finish(stats, frame, report_dir,
                          summary=(table, comparisons, full_model_row(study)))
    return frame


def _write_reports(write_reports: Callable[..., object] | None, experiment: str, uri: str, report_dir: Path,
                   parent: str | None = None) -> bool:
    """The paper tables from MLflow, of this study's trials (its parent run's children), by ``write_reports``
    (none: no tables); False (and one warning naming the command to rerun) when they could not be written,
    which makes the study's exit status non-zero."""
    if write_reports is None:
        return True
    hold("report")  # fault injection (tests only)
    try:
        # the study printed its own table: of the report, only its warnings and where it went
        write_reports(experiment, uri, report_dir, parent=parent,
                      log=lambda line: line.startswith(("WARNING", "wrote")) and print(line))
        return True
    except Exception as e:  # noqa: BLE001 - the trials are done and trials.csv is written; say what failed
        print(f"WARNING: the paper tables were not written ({type(e).__name__}: {str(e)[:300]}); rerun "
              f"`python -m analysis.report --experiment {experiment} --mlflow-uri {uri}` once MLflow is reachable",
              file=sys.stderr)
        return False

