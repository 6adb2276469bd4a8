"""``vaanet verify STUDY``: verify a study, one trial per row (:func:`vaanet.verify.verify` on each).

STUDY is a study folder (``<output>/<experiment>``: ``study.json`` and ``train/<trial>/``) or the MLflow run id
of a study's parent run. The first split and seed of each row is retrained, or the trial whose name ends with
``--trial``; one table of row, trial, metric, recorded, reproduced and difference; a trial whose record is
refused counts as failed.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .train.store import default_tracking_uri
from .tune.request import run_folder_name
from .verify import DEFAULT_TOLERANCE, Comparison, Refused, verify

STUDY_FILE = "study.json"  # in a study folder (<output>/<experiment>), written by vaanet.tune.study


@dataclass
class StudyTrial:
    row: str  # the table row (tag ``row``)
    name: str  # the trial's run name, e.g. VS+VCW_split_00_seed0
    run: str  # what :func:`verify` takes: its run folder, or its MLflow run id


def _labels(uri: str | None, parent: str | None) -> dict[str, tuple[str, str]]:
    """Trial folder -> (row, run name) as the tables and MLflow name them (``VS+VCW``, not the folder's
    ``VS-VCW``), from the study's MLflow runs; empty when its store cannot be read (the folder names stand)."""
    if not (uri and parent):
        return {}
    try:
        from mlflow.tracking import MlflowClient

        runs = MlflowClient(uri).search_runs(
            [MlflowClient(uri).get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'",
            max_results=10000)
    except Exception:  # noqa: BLE001 - labels only: the folder spelling is still unambiguous
        return {}
    return {run_folder_name(r.info.run_name): (r.data.tags.get("row", r.info.run_name), r.info.run_name) for r in runs}


def _study_trials(study: str, uri: str | None) -> tuple[str, list[StudyTrial]]:
    """(what was read, every finished trial of ``study``): a study folder (``study.json`` and ``train/<trial>/``)
    or the MLflow run id of a study's parent run (its child runs); empty when ``study`` is neither."""
    folder = Path(study)
    if folder.is_dir():
        if not (folder / STUDY_FILE).is_file():
            return "", []  # a run folder
        record = json.loads((folder / STUDY_FILE).read_text())
        points = record.get("request", {}).get("points") or {}
        labels = _labels(record.get("request", {}).get("mlflow_uri"), record.get("parent_run_id"))
        trials = []
        for name, overrides in sorted(points.items()):  # name: the trial's folder under train/
            run = folder / "train" / name
            if not (run / "artifacts" / "config.yaml").is_file():
                continue  # not finished
            suffix = f"_{Path(str(overrides.get('data.split', ''))).stem}_seed{overrides.get('run.seed', '')}"
            row, run_name = labels.get(name, (name.removesuffix(suffix), name))
            trials.append(StudyTrial(row, run_name, str(run)))
        return f"study folder {folder}", trials
    from mlflow.tracking import MlflowClient

    uri = uri or default_tracking_uri()
    client = MlflowClient(uri)
    try:
        parent = client.get_run(study)
    except Exception:  # noqa: BLE001 - not a run id: the caller treats it as a run
        return "", []
    if parent.data.tags.get("role") != "study":
        return "", []
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{study}'",
                                  max_results=10000)
    trials = [StudyTrial(r.data.tags.get("row", r.info.run_name), r.info.run_name, r.info.run_id)
              for r in children if r.info.status == "FINISHED"]
    return f"study {parent.data.tags.get('experiment', parent.info.run_name)} (MLflow run {study} at {uri})", \
        sorted(trials, key=lambda t: t.name)


def choose_trials(trials: list[StudyTrial], trial: str | None = None) -> list[StudyTrial]:
    """One trial per row, rows in their first appearance: the first by name (the first split, the first seed),
    or the one whose name ends with ``trial`` (e.g. ``split_01_seed0``). A row without such a trial is an error
    naming the trials it has."""
    rows: dict[str, list[StudyTrial]] = {}
    for t in sorted(trials, key=lambda t: t.name):
        rows.setdefault(t.row, []).append(t)
    chosen = []
    for row, ts in rows.items():
        match = [t for t in ts if trial is None or t.name.endswith(trial) or t.name == trial]
        if not match:
            raise Refused(f"row {row} has no finished trial named ...{trial} (it has {', '.join(t.name for t in ts)}); "
                          "give --trial a suffix every row has, e.g. split_00_seed0")
        chosen.append(match[0])
    return chosen


def verify_study(study: str, uri: str | None = None, trial: str | None = None, epochs: int | None = None,
                 scratch: str | Path | None = None, tolerance: float = DEFAULT_TOLERANCE,
                 code_root: str | Path | None = None, log=print) -> "StudyComparison | None":
    """Verify one trial per row of ``study`` (a study folder, or its parent run's MLflow id); None when
    ``study`` is not a study (then it is a single run). A trial whose record is refused counts as failed."""
    source, trials = _study_trials(study, uri)
    if not source:
        return None
    if not trials:
        raise Refused(f"{source} has no finished trial to verify (a study folder holds {STUDY_FILE} and train/<trial>/ "
                      "with artifacts/config.yaml); finish the study first (rerun its command with --resume)")
    chosen = choose_trials(trials, trial)
    log(f"verifying {source}: {len(chosen)} trial(s), one per row: {', '.join(t.name for t in chosen)}", flush=True)
    results = []
    for i, t in enumerate(chosen):
        folder = Path(scratch) / f"{i:02d}" if scratch else None
        try:
            results.append((t, verify(t.run, uri, epochs, folder, tolerance, code_root, log), ""))
        except Refused as e:
            log(f"refused: {t.name}: {e}")
            results.append((t, None, str(e)))
    return StudyComparison(results)


@dataclass
class StudyComparison:
    results: list[tuple[StudyTrial, Comparison | None, str]]  # (trial, its comparison, why refused)

    @property
    def ok(self) -> bool:
        return all(c is not None and c.ok for _, c, _ in self.results)

    @property
    def failed(self) -> list[str]:
        return [t.name for t, c, _ in self.results if c is None or not c.ok]

    def table(self) -> str:
        w_row = max([len("row")] + [len(t.row) for t, _, _ in self.results]) + 2
        w_trial = max([len("trial")] + [len(t.name) for t, _, _ in self.results]) + 2
        lines = [f"{'row':<{w_row}}{'trial':<{w_trial}}{'metric':<30}{'recorded':>14}{'reproduced':>14}{'difference':>12}"]
        for t, c, why in self.results:
            if c is None:
                lines.append(f"{t.row:<{w_row}}{t.name:<{w_trial}}refused: {why[:200]}  <-")
                continue
            for key, _, rec, rep, diff in c.rows:
                rep_s = f"{rep:>14.6g}" if rep is not None else f"{'missing':>14}"
                lines.append(f"{t.row:<{w_row}}{t.name:<{w_trial}}{key:<30}{rec:>14.6g}{rep_s}{diff:>12.3g}"
                             + ("  <-" if key in c.failed else ""))
        return "\n".join(lines)
