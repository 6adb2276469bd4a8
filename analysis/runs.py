"""MLflow runs -> one tidy row per run."""
from __future__ import annotations

import warnings

import pandas as pd

from vaanet.train.store import default_tracking_uri

TAGS = ("study", "table", "dataset", "preset", "loss", "lam", "split", "seed", "row", "experiment", "role",
        "study_name", "mlflow.parentRunId")  # a study's parent run: role "study", its study in study_name
METRICS = ("test_acc", "test_mean_class_acc", "test_polarity_acc", "best_val_acc")
POINT = ["mlflow_experiment", "study", "dataset", "row", "split", "seed"]  # one trial of a study


def load_runs(experiments: str | list[str], uri: str | None = None, parent: str | None = None,
              all_studies: bool = False) -> pd.DataFrame:
    """The runs of the named MLflow experiments: tags, status and final metrics (in [0, 1]).

    A study's trials are its parent run's children (``mlflow.parentRunId``). A table holds one study: of the
    trials of each (experiment, study), only those of the study run ``parent``, else of the latest one, are
    kept (a rerun with other settings, e.g. after its folder was deleted, would otherwise be averaged with
    the old one's trials); the others are left out with a warning. ``all_studies=True`` pools them all."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri or default_tracking_uri())
    names = [experiments] if isinstance(experiments, str) else list(experiments)
    found = {n: client.get_experiment_by_name(n) for n in names}
    missing = [n for n, e in found.items() if e is None]
    if missing:
        known = sorted(e.name for e in client.search_experiments())
        raise ValueError(f"no MLflow experiment named {missing} at {uri or default_tracking_uri()}; known: {known}")
    rows = []
    for name, exp in found.items():
        for run in client.search_runs([exp.experiment_id], max_results=50000):
            row = {"run_id": run.info.run_id, "mlflow_experiment": name, "status": run.info.status,
                   "start_time": run.info.start_time}
            row.update({t: run.data.tags.get(t) for t in TAGS})
            row.update(run.data.metrics)
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=["run_id", "mlflow_experiment", "status", *TAGS])
    for metric in METRICS:  # runs that never finished have none: the column exists, empty
        if metric not in frame:
            frame[metric] = float("nan")
    frame["lam"] = pd.to_numeric(frame["lam"], errors="coerce")
    frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce")
    frame = frame.rename(columns={"mlflow.parentRunId": "parent"})
    if not all_studies:
        frame = _one_study(frame, parent)
    return one_run_per_point(frame[frame["role"] != "study"])  # a study's parent run holds its summary


def _one_study(frame: pd.DataFrame, parent: str | None) -> pd.DataFrame:
    """Drop the trials of every study run but ``parent`` (else the latest) of each (experiment, study)."""
    studies = frame[frame["role"] == "study"]
    studies = studies.assign(study=studies["study_name"].fillna(studies["study"]))
    if parent is not None and parent not in set(studies["run_id"]):
        raise ValueError(f"study run {parent} is not among the runs of {sorted(set(frame['mlflow_experiment']))}")
    chosen = studies.sort_values(["start_time", "run_id"]).groupby(["mlflow_experiment", "study"]).tail(1)
    if parent is not None:
        mine = studies[studies["run_id"] == parent].iloc[0]
        chosen = pd.concat([chosen[(chosen["mlflow_experiment"] != mine["mlflow_experiment"])
                                   | (chosen["study"] != mine["study"])], studies[studies["run_id"] == parent]])
    other = frame["parent"].isin(set(studies["run_id"]) - set(chosen["run_id"]))
    if other.any():
        left = frame[other]
        warnings.warn(f"left out {len(left)} runs of {left['parent'].nunique()} other study run(s) in "
                      f"{sorted(set(left['mlflow_experiment']))} (an earlier or another run of the same study): a "
                      "table holds one study's trials; pass --all-studies to pool them", stacklevel=3)
    return frame[~other]


def one_run_per_point(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per study trial (grid point x split x seed): the latest FINISHED run of it, else its latest
    run, so reruns and retries are never counted twice. Runs outside a study are kept as they are."""
    trials = frame[frame["row"].notna()]
    chosen = (trials.assign(_finished=trials["status"].eq("FINISHED"))
              .sort_values(["_finished", "start_time", "run_id"]).drop_duplicates(POINT, keep="last")
              .drop(columns="_finished"))
    return pd.concat([chosen, frame[frame["row"].isna()]]).sort_index()
