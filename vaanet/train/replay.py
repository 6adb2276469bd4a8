"""Sending MLflow what a run folder kept and the store did not get: after an outage, or after a kill.

A run folder keeps everything it tracked (``metrics.jsonl`` per epoch, ``final_metrics.json``, the MLflow run id
in ``mlflow_run_id``). :func:`replay` re-sends a run's params, tags, the metric steps MLflow lacks (idempotent
by step), artifacts and status; :class:`~vaanet.train.tracking.Tracker` calls it when the store answers again.
A run that ended while the store was away leaves ``tracking_pending.json``, which :func:`replay_pending` sends
later; :func:`complete_finished_run` ends a run that finished in its folder but was killed before MLflow heard
(the study driver calls both).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from .store import check_reachable

RUN_ID_FILE = "mlflow_run_id"  # in the run folder: the MLflow run this folder's training writes to
PENDING_FILE = "tracking_pending.json"  # in the run folder: what could not be sent before the run ended


def run_id_of(out_dir: str | Path) -> str | None:
    """The MLflow run id a run folder started, or None."""
    path = Path(out_dir) / RUN_ID_FILE
    return path.read_text().strip() or None if path.is_file() else None


def replay(client, run_id: str, out_dir: Path, sent: dict) -> int:
    """Re-send a run's params, tags, metrics (only steps MLflow lacks), artifacts and status; returns the
    number of metric values sent."""
    from mlflow.entities import Metric, Param, RunTag

    params = [Param(k, v) for k, v in sent.get("params", {}).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i:i + 100])
    if sent.get("tags"):
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in sent["tags"].items()])
    lines = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()] \
        if (out_dir / "metrics.jsonl").is_file() else []
    have: dict[str, set] = {}
    batch, ts = [], int(time.time() * 1000)
    for line in lines:
        step = line.get("step") or 0
        for key, value in line.items():
            if key == "step":
                continue
            if key not in have:
                have[key] = {m.step for m in client.get_metric_history(run_id, key)}
            if step not in have[key]:
                batch.append(Metric(key, float(value), ts, step))
                have[key].add(step)
    for i in range(0, len(batch), 200):
        client.log_batch(run_id, metrics=batch[i:i + 200])
    for path, folder in sent.get("artifacts", []):
        if Path(path).exists():
            client.log_artifact(run_id, path, folder)
    if sent.get("status"):
        client.set_terminated(run_id, sent["status"])
    return len(batch)


def complete_finished_run(out_dir: str | Path, client) -> bool:
    """A run whose folder says it finished (``final_metrics.json``) while its MLflow run is still RUNNING: the
    process was stopped between the two (a SIGKILL, a job's time limit). Send what MLflow lacks of the epochs
    (``metrics.jsonl``) and of the test metrics, tag the selected weights, and end it FINISHED. True when a
    run was completed."""
    from mlflow.entities import Metric

    out_dir = Path(out_dir)
    run_id = run_id_of(out_dir)
    if run_id is None or not (out_dir / "final_metrics.json").is_file():
        return False
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    replay(client, run_id, out_dir, {})
    lines = [json.loads(x) for x in (out_dir / "metrics.jsonl").read_text().splitlines() if x.strip()] \
        if (out_dir / "metrics.jsonl").is_file() else []
    step = max((line.get("step") or 0 for line in lines), default=0)
    final = json.loads((out_dir / "final_metrics.json").read_text())
    ts = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), ts, step) for k, v in final.items()
                                      if isinstance(v, (int, float)) and not isinstance(v, bool)])
    if (out_dir / "best_model.pt").is_file():
        client.set_tag(run_id, "checkpoint", str(out_dir / "best_model.pt"))
    client.set_terminated(run_id, "FINISHED")
    return True


def replay_pending(out_dir: str | Path, uri: str) -> bool:
    """Send what a run left in ``tracking_pending.json`` (its store was away when it ended); True when
    nothing is pending any more."""
    from mlflow.tracking import MlflowClient

    path = Path(out_dir) / PENDING_FILE
    if not path.is_file():
        return True
    sent = json.loads(path.read_text())
    try:
        check_reachable(uri, timeout=5)
        replay(MlflowClient(uri), sent["run_id"], Path(out_dir), sent)
    except Exception:  # noqa: BLE001 - still away: the file stays
        return False
    path.unlink()
    return True
