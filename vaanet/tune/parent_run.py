"""The study's MLflow parent run: one per study, holding its arguments, summary, tables and figures.

:class:`ParentRun` is its life from open to close; :func:`shared_settings` (its params) and
:func:`study_description` (its Markdown description) say what the study is and what its rows differ in.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pandas as pd

from ..config import Config, with_overrides
from ..train.environment import git_commit, record_environment
from ..train.replay import complete_finished_run, replay_pending, run_id_of
from .request import Study
from .summary import COMPARED, DONE


SEARCHED = ("optim.lam", "optim.lr")  # what the Optuna search samples per trial

# The runs list the printed link opens: a saved view of MLflow 3's experiment page (an experiment tag
# ``mlflow.sharedViewState.<key>`` that the UI loads for ``?viewStateShareKey=<key>``, as its own "Share" button
# writes it): the runs grouped by the tag ``row``, the test accuracies as columns, every run shown (MLflow shows
# the first 10 runs otherwise).
VIEW_KEY = "vaanet-rows"
VIEW_TAG = f"mlflow.sharedViewState.{VIEW_KEY}"
VIEW_METRICS = ("test_acc", "test_mean_class_acc", "test_polarity_acc", "best_val_acc")  # columns, in this order
RUN_NAME_COLUMN = "attributes.`Run Name`"  # the UI's key of the run-name column (widened: whole row labels)
VIEW_TAGS = ("split", "seed")


VIEW_CHARTS = (("test_acc", "BAR"), ("val_acc", "LINE"), ("train_loss", "LINE"), ("val_loss", "LINE"),
               ("test_mean_class_acc", "BAR"), ("test_polarity_acc", "BAR"))  # first in the chart view
PARENT_ONLY = ("test_acc_std", "test_acc_ci_low", "test_acc_ci_high", "trials_finished", "trials_total",
               "comparisons_significant")  # the parent's headline metrics: one bar each, no chart


def _chart(metric: str, kind: str, deleted: bool = False) -> dict:
    """One chart card of the chart view, with the fields the UI gives a new one (BAR or LINE over the step)."""
    card = {"uuid": f"vaanet-{metric}", "type": kind, "runsCountToCompare": 10, "metricSectionId": "vaanet-metrics",
            "deleted": deleted, "isGenerated": True, "metricKey": metric, "displayName": metric,
            "selectedMetricKeys": [metric]}
    if kind == "LINE":
        card.update({"lineSmoothness": 0, "xAxisScaleType": "linear", "scaleType": "linear", "range": {},
                     "xAxisKey": "step", "selectedXAxisMetricKey": "", "yAxisKey": "METRIC", "yAxisExpressions": [],
                     "ignoreOutliers": False, "useGlobalXaxisKey": True, "useGlobalLineSmoothing": True})
    return card


def rows_view(created_ms: int | None = None) -> str:
    """The saved view's tag value: MLflow 3.x's envelope (name, createdAt, state as a JSON string) around the
    experiment page's state: ``groupBy`` (runs grouped by the tag ``row``, charts showing each row's mean),
    ``selectedColumns`` (``metrics.`test_acc``` ... in the UI's own key format), ``runsHiddenMode`` SHOW_ALL."""
    import json

    state = {"groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "row"}]},
             "useGroupedValuesInCharts": True,
             "selectedColumns": [f"metrics.`{m}`" for m in VIEW_METRICS] + [f"tags.`{t}`" for t in VIEW_TAGS],
             "columnOrder": [RUN_NAME_COLUMN] + [f"metrics.`{m}`" for m in VIEW_METRICS],
             "columnWidths": {RUN_NAME_COLUMN: 270},
             "runsHiddenMode": "SHOW_ALL", "hideEmptyCharts": True,
             "orderByKey": "tags.`row`", "orderByAsc": True,  # the rows in name order (the ablation's: grid order)
             # the chart view opens with the test accuracy per row and the learning curves (each row's mean and
             # spread); the other metrics follow (the UI adds them), the parent's headline metrics are left out
             "compareRunSections": [{"uuid": "vaanet-metrics", "name": "Model metrics", "display": True,
                                     "isReordered": True, "deleted": False, "isGenerated": True}],
             "compareRunCharts": [_chart(m, kind) for m, kind in VIEW_CHARTS] +
                                 [_chart(m, "BAR", deleted=True) for m in PARENT_ONLY]}
    created = created_ms if created_ms is not None else int(time.time() * 1000)
    return json.dumps({"name": "rows: grouped by row, test accuracy", "createdAt": created, "updatedAt": created,
                       "state": json.dumps(state)})


def shared_settings(study: Study, base: Config, points: list[dict]) -> tuple[dict, dict[str, dict]]:
    """(the settings every trial shares, as flat ``section.key`` params; each row's settings that differ
    between rows). A trial's own keys (split, seed, name) differ between trials and are in neither; a model
    without a pixel normalization set uses the model's default, named as such. A search (no points) shares
    its fixed overrides; the searched keys are left out."""
    from ..models.vaanet import DEFAULT_PIXEL_NORMALIZATION

    def flat(overrides: dict) -> dict:
        config = with_overrides(base, overrides)
        cfg = {"model.preset": config.model.preset or "(none: switches as listed)", **config.flat()}
        if cfg.get("model.pixel_normalization") is None:
            cfg["model.pixel_normalization"] = f"{DEFAULT_PIXEL_NORMALIZATION} (the model's default)"
        return cfg

    if not points:
        fixed = flat(study.extra)
        return {k: v for k, v in fixed.items() if k not in SEARCHED + ("data.split", "run.seed", "run.name")}, {}
    trials = [flat(p["overrides"]) for p in points]
    own = ("data.split", "run.seed", "run.name")  # a trial's own, even where one split or seed makes them equal
    shared = {k: v for k, v in trials[0].items() if k not in own and all(t.get(k) == v for t in trials[1:])}
    by_row: dict[str, dict] = {}
    for p, t in zip(points, trials):
        by_row.setdefault(p["tags"]["row"], t)
    varying = [k for k in trials[0] if k not in shared and k not in own
               and len({repr(t.get(k)) for t in by_row.values()}) > 1]
    return shared, {row: {k: t.get(k) for k in varying} for row, t in by_row.items()}


def study_description(study: Study, args, base: Config, n_points: int, split_files: list[Path],
                      differences: dict[str, dict]) -> str:
    """The parent run's description (Markdown, as MLflow renders ``mlflow.note.content``): the command with its
    arguments, the grid, the splits and seeds, the rows' differences, and where the summary is. No text in
    angle brackets outside the code block (Markdown would read it as HTML and drop it)."""
    import shlex

    rows = [study.row_name(r) for r in study.grid]
    seeds = [x for x in str(args.seeds).split(",") if x]
    table = study.tables.get(args.dataset, "")
    lines = [f"**{study.name}** study on **{args.dataset}**" + (f" (paper table {table})" if table else "") + ".", "",
             "Command:", "", "```", shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]), "```", ""]
    if getattr(args, "search", None) == "optuna":
        lines.append(f"Grid: {n_points} configurations searched (Optuna TPE over {', '.join(SEARCHED)}, ASHA) on "
                     f"split {split_files[0].stem}, seed {seeds[0] if seeds else '0'}; up to {base.optim.epochs} "
                     "epochs each.")
    else:
        lines.append(f"Grid: {n_points} trials = {len(rows)} row(s) ({', '.join(rows)}) x {len(split_files)} "
                     f"split(s) x {len(seeds)} seed(s); {base.optim.epochs} epoch(s) each.")
        lines += ["", f"Splits: {', '.join(f.stem for f in split_files)}. Seeds: {', '.join(seeds)}."]
    if args.dataset == "synth":
        lines += ["", "Data set: the generated synthetic set (tag `dataset=synth`); it uses the VE-8 class list, "
                  "hence the param `data.dataset=ve8`."]
    keys = list(next(iter(differences.values()), {}))
    if keys:  # a one-row study has nothing that differs between rows
        lines += ["", "What the rows differ in (everything else is the same in every trial: the params):", "",
                  "| row | " + " | ".join(f"`{k}`" for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {row} | " + " | ".join(str(v) for v in d.values()) + " |" for row, d in differences.items()]
    lines += ["", "Summary: `summary.json` (the closing table as printed: mean ± std [95 % CI] per row, the paired "
              "accuracy comparisons with Holm-corrected p, † significant), `summary_stats.json` and "
              "`comparisons.json` (unrounded), `reports/` (the paper tables, their `_stats.csv` files, figures). "
              "Metrics: `test_acc` (mean over trials, a fraction as in each trial), `test_acc_std`, "
              "`test_acc_ci_low`/`_ci_high` of the row in the tag `headline_row` (the full model, else the best)."]
    if args.dataset == "synth":
        lines += ["", "temporal_x_uniform / spatial_x_uniform: attention mass on the planted evidence (key segments, "
                  "evidence box) divided by what uniform attention gives; 1 = no better than uniform."]
    return "\n".join(lines) + "\n"


def _log_table(client, run_id: str, table: pd.DataFrame, name: str) -> None:
    """``client.log_table`` the first time; a rerun of the study replaces the file in the same format
    (``log_table`` would append the rerun's rows to the old ones)."""
    import tempfile

    if name not in {a.path for a in client.list_artifacts(run_id)}:
        client.log_table(run_id, data=table, artifact_file=name)
        return
    with tempfile.TemporaryDirectory() as tmp:
        table.to_json(Path(tmp) / name, orient="split", index=False, date_format="iso")  # log_table's own format
        client.log_artifact(run_id, str(Path(tmp) / name))


class ParentRun:
    """The study's MLflow parent run, from open to close: opened once the request is accepted (:meth:`open`:
    its params, description and environment; reopened RUNNING on a rerun), its trials' runs closed
    (:meth:`close_leftovers`), and at the end its summary, headline metrics, reports and status (:meth:`finish`,
    :meth:`close`), or KILLED on an interrupted report (:meth:`kill`). ``run_id`` is None until it is opened
    (or taken from study.json)."""

    def __init__(self, uri: str, experiment: str, run_id: str | None = None):
        self.uri, self.experiment, self.run_id = uri, experiment, run_id

    def open(self, study: Study, args, base: Config, n_points: int, split_files: list[Path],
             points: list[dict] | None = None) -> str:
        """Open the study's parent run (created once, its id kept in study.json; RUNNING while the study
        runs): its params are what every trial shares (:func:`shared_settings`), its description
        (:func:`study_description`) says what the study is and what its rows differ in."""
        import getpass

        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri, experiment = self.uri, self.experiment
        client = MlflowClient(uri)
        exp_id = client.get_experiment_by_name(experiment).experiment_id
        client.set_experiment_tag(exp_id, VIEW_TAG, rows_view())  # the view the printed link opens (ui_link)
        if self.run_id:  # the study's run kept in study.json
            try:
                client.update_run(self.run_id, status="RUNNING")
                return self.run_id
            except Exception:  # noqa: BLE001 - deleted: make a new one
                pass
        shared, differences = shared_settings(study, base, points or [])
        words = study_description(study, args, base, n_points, split_files, differences)
        run = client.create_run(
            exp_id, run_name=f"{study.name} study ({args.dataset})",
            tags={"role": "study", "study_name": study.name, "dataset": args.dataset, "mlflow.note.content": words,
                  "mlflow.user": getpass.getuser(), "mlflow.source.name": Path(sys.argv[0]).name,
                  "mlflow.source.type": "LOCAL", **({"mlflow.source.git.commit": git_commit()} if git_commit() else {})})
        rows = [study.row_name(r) for r in study.grid]
        params = {"study": study.name, "dataset": args.dataset, "rows": " | ".join(rows)[:6000], "trials": n_points,
                  "splits": len(split_files), "seeds": args.seeds, "quick": args.quick, **shared}
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run.info.run_id, params=items[i:i + 100])
        record_environment(client, run.info.run_id, base)  # the environment the study ran in, once
        self.run_id = run.info.run_id
        return self.run_id

    def close_leftovers(self, train_root: Path, frame: pd.DataFrame) -> None:
        """No MLflow run of this study stays RUNNING once the driver is done: a trial stopped early (ASHA),
        interrupted or killed ends KILLED, one that failed for good FAILED."""
        from mlflow.tracking import MlflowClient

        uri = self.uri
        client = MlflowClient(uri)
        pending = [row["run.name"] for _, row in frame.iterrows()
                   if not replay_pending(train_root / row["run.name"], uri)]
        if pending:
            frame.attrs["reported"] = False
            print(f"WARNING: MLflow did not answer; {len(pending)} trials keep unsent results in their run folders "
                  f"(tracking_pending.json), re-sent by the next run of this command: {pending}", file=sys.stderr)
        for _, row in frame.iterrows():
            if row["status"] == "ok":  # finished on disk; its MLflow run too, unless a kill came in between
                try:
                    if complete_finished_run(train_root / row["run.name"], client):
                        print(f"MLflow: {row['run.name']} had finished in its run folder while a kill left its run "
                              "RUNNING; completed FINISHED from the folder", flush=True)
                except Exception:  # noqa: BLE001 - deleted or unreachable: nothing to complete here
                    pass
                continue
            run_id = run_id_of(train_root / row["run.name"])
            try:
                if run_id and client.get_run(run_id).info.status == "RUNNING":
                    client.set_terminated(run_id, "FAILED" if row["status"] == "error" else "KILLED")
            except Exception:  # noqa: BLE001 - deleted or unreachable: nothing to close here
                pass

    def close(self, stats: pd.DataFrame, frame: pd.DataFrame, report_dir: Path, reported: bool,
              summary: tuple | None = None) -> str:
        """The study's summary in one place: the console table as MLflow shows tables (``summary.json``, the cells
        as printed) with its unrounded numbers beside it (``summary_stats.json``, in the trials' units;
        ``comparisons.json``, in percent points), a handful of headline metrics, the reports as artifacts, and the
        study's status. Headline metrics (no row name in a key: MLflow refuses '+' in metric names): ``test_acc``,
        ``test_acc_std``, ``test_acc_ci_low`` / ``_ci_high`` of the headline row (tag ``headline_row``: the full
        model, else the only row, else the row with the best mean), as fractions like each trial's ``test_acc``
        (the runs list shows parent and trials in one column); ``trials_finished``, ``trials_total``; and
        ``comparisons_significant`` (the † of the table). Every comparison's diff and p_holm are in
        ``comparisons.json`` and ``reports/*_stats.csv``, not metrics: one metric per comparison was the flood of
        one-bar charts the UI opened with."""
        from mlflow.entities import Metric, RunTag
        from mlflow.tracking import MlflowClient

        client, parent = MlflowClient(self.uri), self.run_id
        ts = int(time.time() * 1000)
        metrics = [Metric("trials_finished", float((frame["status"] == "ok").sum()), ts, 0),
                   Metric("trials_total", float(len(frame)), ts, 0)]
        if summary is not None:
            table, comparisons, full = summary
            _log_table(client, parent, table, "summary.json")
            _log_table(client, parent, stats, "summary_stats.json")
            if len(comparisons):
                _log_table(client, parent, comparisons, "comparisons.json")
                significant = float((comparisons["significant"] == True).sum())  # noqa: E712
                metrics.append(Metric("comparisons_significant", significant, ts, 0))
            acc = stats[(stats["metric"] == COMPARED) & (stats["n"] > 0)]
            if len(acc):
                head = acc[acc["row"] == full] if full in set(acc["row"]) else acc.loc[[acc["mean"].idxmax()]]
                h = head.iloc[0]
                metrics += [Metric(f"{COMPARED}{suffix}", float(h[col]), ts, 0) for suffix, col in
                            (("", "mean"), ("_std", "std"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high"))
                            if h[col] == h[col]]
                client.log_batch(parent, tags=[RunTag("headline_row", str(h["row"]))])
        client.log_batch(parent, metrics=metrics)
        client.log_artifacts(parent, str(report_dir), "reports")
        status = "FINISHED" if reported and (frame["status"].isin(DONE)).all() else (
            "FAILED" if (frame["status"] == "error").any() else "KILLED")
        client.set_terminated(parent, status)
        return status

    def finish(self, stats, frame, report_dir, summary=None) -> None:
        """Close the run (:meth:`close`) and say where to look; a failure is a warning (the tables are on disk)."""
        try:
            status = self.close(stats, frame, report_dir, frame.attrs.get("reported", True), summary)
            print(f"MLflow: study run {self.run_id} {status}; {self.ui_link()}")
        except Exception as e:  # noqa: BLE001 - the tables are on disk; say what could not be recorded
            print(f"WARNING: the study's MLflow parent run was not completed ({type(e).__name__}: {str(e)[:200]})",
                  file=sys.stderr)

    def kill(self) -> None:
        """Ctrl-C during the report: the study's parent run ends KILLED, not RUNNING."""
        from mlflow.tracking import MlflowClient

        MlflowClient(self.uri).set_terminated(self.run_id, "KILLED")

    def ui_link(self) -> str:
        """Where to look: the experiment's runs list in MLflow's model-training view (not the GenAI page MLflow 3
        opens by default), grouped by row with the test accuracies as columns (the saved view :func:`rows_view`,
        when the experiment holds it; else the parent run's page). Clicking the experiment in MLflow's list
        opens the GenAI page instead (docs/tracking.md)."""
        from mlflow.tracking import MlflowClient

        uri, experiment, parent = self.uri, self.experiment, self.run_id
        exp = MlflowClient(uri).get_experiment_by_name(experiment)
        if VIEW_TAG in exp.tags:
            path = f"#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}"
        else:  # written before the view existed, or by a user who may not tag the experiment
            path = f"#/experiments/{exp.experiment_id}/runs/{parent}?workflowType=machine_learning"
        if uri.startswith(("http://", "https://")):
            return f"{uri.rstrip('/')}/{path}"
        return f"mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000/{path}"
