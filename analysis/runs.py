"""MLflow runs -> one tidy row per run."""
from __future__ import annotations

import pandas as pd

from vaanet.train.tracking import default_tracking_uri

TAGS = ("study", "table", "dataset", "preset", "loss", "lam", "split", "seed", "row", "experiment", "role")
METRICS = ("test_acc", "test_mean_class_acc", "test_polarity_acc", "best_val_acc")
POINT = ["mlflow_experiment", "study", "dataset", "row", "split", "seed"]  # one trial of a study


def load_runs(experiments: str | list[str], uri: str | None = None) -> pd.DataFrame:
    """Every run of the named MLflow experiments: tags, status and final metrics (in [0, 1])."""
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
    return one_run_per_point(frame[frame["role"] != "study"])  # a study's parent run holds its summary


def one_run_per_point(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per study trial (grid point x split x seed): the latest FINISHED run of it, else its latest
    run, so reruns and retries are never counted twice. Runs outside a study are kept as they are."""
    trials = frame[frame["row"].notna()]
    chosen = (trials.assign(_finished=trials["status"].eq("FINISHED"))
              .sort_values(["_finished", "start_time", "run_id"]).drop_duplicates(POINT, keep="last")
              .drop(columns="_finished"))
    return pd.concat([chosen, frame[frame["row"].isna()]]).sort_index()
