"""MLflow tracking that never stops training and never loses what it was given.

Everything is also written to the run's own folder (``metrics.jsonl`` per epoch, ``final_metrics.json``
at the end). When the tracking store stops answering, the loss is reported loudly once and training
goes on; the tracker asks again every ``retry_s`` seconds, and once the store answers it re-sends what
the folder kept (params and tags, every metric step MLflow does not have yet - idempotent by step -,
artifacts, the run's status). A run that ends while the store is still away leaves
``tracking_pending.json``; :func:`vaanet.train.replay.replay_pending` (the study driver calls it) sends
it later. Only rank 0 tracks. The store itself is :mod:`vaanet.train.store`'s; the re-sending,
:mod:`vaanet.train.replay`'s.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from ..credentials import take_credentials  # noqa: F401  (its home before vaanet.credentials)
from .replay import PENDING_FILE, RUN_ID_FILE, replay, run_id_of
from .store import check_reachable, default_tracking_uri, experiment_id

MODEL_ARTIFACT_LIMIT = 50e6  # selected weights up to this size are logged as an artifact; larger: a path tag


# Tags a study gives its trials (vaanet/tune/request.py _points): which study, row and parent run a trial belongs
# to. A run's saved config.yaml leaves them out, and `vaanet train` drops them from a trial's config, so that a
# run retrained from a trial's config is a run of its own: never a silent replacement of that trial in the
# study's tables (analysis keeps the latest finished run per study point).
STUDY_TAGS = ("study", "table", "row", "experiment", "study_overrides", "mlflow.parentRunId", "mlflow.source.name",
              "mlflow.runName")


def without_study_tags(cfg):
    """``cfg`` (a :class:`vaanet.config.Config`) without the tags a study gave it."""
    from dataclasses import replace

    return replace(cfg, run=replace(cfg.run, tags={k: v for k, v in cfg.run.tags.items() if k not in STUDY_TAGS}))


class Tracker:
    """The MLflow run of one run folder. ``run_id`` (from a checkpoint) continues that run; without it a
    new run is created and its id written into the folder at once, so that a run killed before its
    first checkpoint is found again by the rerun (and deleted: it holds nothing the rerun does not
    recompute), never left RUNNING beside a duplicate."""

    def __init__(self, uri: str | None, experiment: str, run_name: str, out_dir: str | Path, enabled: bool = True,
                 run_id: str | None = None, log=print):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.enabled, self.run_id, self.lost, self.log = enabled, run_id, None, log
        self.client, self.new_run, self.lost_at = None, False, 0.0
        self.logged: dict[tuple[str, int], float] = {}  # (metric, step): value MLflow holds from a killed attempt
        self.retry_s = float(os.environ.get("VAANET_TRACKING_RETRY_S", "30"))
        self.sent: dict = {"params": {}, "tags": {}, "artifacts": [], "status": None}  # to re-send after an outage
        if not enabled:
            return
        try:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=uri or default_tracking_uri())
            if run_id is None:
                stale = run_id_of(self.out_dir)
                if stale is not None:  # started, killed before its first checkpoint: start over
                    self.client.delete_run(stale)
                    log(f"MLflow run {stale} of an attempt killed before its first checkpoint deleted; starting over")
                (self.out_dir / "metrics.jsonl").unlink(missing_ok=True)
                exp_id = experiment_id(self.client, experiment)
                self.run_id = self.client.create_run(exp_id, run_name=run_name).info.run_id
                (self.out_dir / RUN_ID_FILE).write_text(self.run_id)
                self.new_run = True
        except Exception as e:  # noqa: BLE001 - any tracking failure must not stop training
            self._lose(e)

    def resume_at(self, step: int) -> None:
        """Resuming after ``step``: forget the local metric lines after it (epochs logged, then killed before
        their checkpoint), and never send MLflow a second value for a step it already has (the resumed
        run recomputes those epochs; with deterministic training, to the same values). That includes the
        test results at ``step`` itself: a run interrupted after the last epoch's checkpoint tests again."""
        path = self.out_dir / "metrics.jsonl"
        if not (self.enabled and path.is_file()):
            return
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(json.dumps(d) + "\n" for d in lines if (d.get("step") or 0) <= step))
        keys = {k for d in lines if (d.get("step") or 0) >= step for k in d if k != "step"}
        if keys and self.active:
            try:
                for key in keys:
                    self.logged |= {(key, m.step): m.value for m in self.client.get_metric_history(self.run_id, key)
                                    if m.step >= step}
            except Exception as e:  # noqa: BLE001
                self._lose(e)

    def running(self) -> None:
        """(Re)open the run: a resumed run is RUNNING while it trains."""
        self._try("update_run", self.run_id, status="RUNNING")

    @property
    def active(self) -> bool:
        return self.enabled and self.client is not None and self.lost is None and self.run_id is not None

    def _lose(self, error: Exception) -> None:
        first = self.lost is None
        self.lost, self.lost_at = error, time.monotonic()
        if first:
            msg = (f"WARNING: MLflow tracking lost ({type(error).__name__}: {str(error)[:200]}). Training goes on; "
                   f"metrics are still written to {self.out_dir} and re-sent when the store answers again")
            print("!" * 100 + "\n" + msg + "\n" + "!" * 100, file=sys.stderr, flush=True)

    def _recover(self, force: bool = False) -> bool:
        """After an outage: ask again (every ``retry_s``, or now when ``force``); when the store answers,
        re-send everything the run folder kept, then carry on."""
        if self.lost is None:
            return True
        if not (self.enabled and self.client is not None and self.run_id is not None):
            return False
        if not force and time.monotonic() - self.lost_at < self.retry_s:
            return False
        try:
            check_reachable(self.client.tracking_uri, timeout=2)
            n = replay(self.client, self.run_id, self.out_dir, self.sent)
        except Exception:  # noqa: BLE001 - still away
            self.lost_at = time.monotonic()
            return False
        self.lost = None
        print(f"MLflow tracking is back: re-sent {n} metric values from {self.out_dir}", file=sys.stderr, flush=True)
        return True

    def _try(self, method: str, *args, **kwargs) -> None:
        """Call ``MlflowClient.<method>`` unless tracking is off; while it is lost, only after it came back
        (what this call carries is then in the run folder, and re-sent with the rest)."""
        if not (self.enabled and self.client is not None and self.run_id is not None):
            return
        if self.lost is not None:  # what this call carries is already in the folder: the replay sends it
            self._recover()
            return
        try:
            getattr(self.client, method)(*args, **kwargs)
        except Exception as e:  # noqa: BLE001
            self._lose(e)

    def _send_start(self, params: dict, tags: dict) -> None:
        from mlflow.entities import Param, RunTag

        self.sent["params"] = {k: str(v)[:6000] for k, v in params.items()}
        self.sent["tags"] = {k: str(v) for k, v in tags.items()}
        params = [Param(k, str(v)[:6000]) for k, v in params.items()]
        tags = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(params), 100):
            self._try("log_batch", self.run_id, params=params[i:i + 100])
        self._try("log_batch", self.run_id, tags=tags)

    def start(self, params: dict, tags: dict) -> None:
        """The run's params and tags, with its environment record (:mod:`vaanet.train.environment`): ``environment.json``
        (and ``git_diff.patch`` when the tree is dirty) in the run folder and as artifacts, its gist as ``env.*``
        params and ``dirty`` / ``precision`` / ``deterministic`` tags. The device and precision are those of
        ``params`` (``device``, ``run.bf16``: what the loop trains with)."""
        from . import environment

        try:
            git = environment.git_state()
            record = environment.collect(str(params.get("device", "cpu")), bool(params.get("run.bf16")),
                                         params.get("run.seed"), params.get("data.split"), params.get("data.cache"), git)
            env_params, env_tags = environment.summary(record)
            paths = environment.write(self.out_dir, record, git["diff"])
        except Exception as e:  # noqa: BLE001 - a record that cannot be collected must not stop training
            print(f"note: environment record incomplete ({type(e).__name__}: {e})", file=sys.stderr)
            env_params, env_tags, paths = {}, {}, []
        self._send_start({**params, **env_params}, {**tags, **env_tags})
        for path in paths:
            self.sent["artifacts"].append([str(path), None])
            self._try("log_artifact", self.run_id, str(path))

    def log_metrics(self, metrics: dict[str, float], step: int, replace: bool = False) -> None:
        """Log to the run folder and MLflow. A value MLflow already has for this step (a resumed run
        recomputing an epoch) is not sent again, unless ``replace`` and the value differs: then it is sent
        with a later timestamp, which MLflow shows as the metric's value."""
        from mlflow.entities import Metric

        finite = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        with (self.out_dir / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": step, **finite}) + "\n")
        ts = int(time.time() * 1000)
        batch = [Metric(k, v, ts, step) for k, v in finite.items()
                 if (k, step) not in self.logged or (replace and self.logged[k, step] != v)]
        for i in range(0, len(batch), 200):
            self._try("log_batch", self.run_id, metrics=batch[i:i + 200])

    def log_split(self, split: str | Path, cache: str | Path) -> None:
        """The split file as the run's dataset input (name, digest, source), context = training."""
        if not self.active:
            return
        try:
            import mlflow.data
            import pandas as pd
            from mlflow.entities import DatasetInput, InputTag

            frame = pd.read_csv(split, dtype={"video_id": str})
            dataset = mlflow.data.from_pandas(frame, source=str(split), name=f"{Path(cache).parent.name}/{Path(split).stem}")
            self.client.log_inputs(self.run_id, [DatasetInput(dataset._to_mlflow_entity(),
                                                              [InputTag("mlflow.data.context", "training")])])
        except Exception as e:  # noqa: BLE001
            self._lose(e)

    def log_model(self, weights: Path) -> None:
        """Where the selected weights are: an artifact (``model/best_model.pt``) when small enough, and
        always the tag ``checkpoint`` with their path, so that ``vaanet predict --run RUN_ID`` finds them."""
        self.sent["tags"]["checkpoint"] = str(weights)
        self._try("set_tag", self.run_id, "checkpoint", str(weights))
        if weights.stat().st_size <= MODEL_ARTIFACT_LIMIT:
            self.sent["artifacts"].append([str(weights), "model"])
            self._try("log_artifact", self.run_id, str(weights), "model")

    def log_final(self, metrics: dict, artifacts: list[Path], step: int) -> None:
        """Test metrics at the last epoch's step (``best_val_acc`` is already on the epoch curve).

        They replace what MLflow holds for that step: a run killed after this log and before its final
        checkpoint trains its last epochs again when resumed, and on a GPU (cudnn autotuning, bf16) the
        result can differ; the tables must read the result the run folder keeps. ``best_val_acc`` is sent
        again only then (MLflow has a value from before the kill), since it decides which epoch was tested."""
        (self.out_dir / "final_metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        self.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float))
                          and (k != "best_val_acc" or (k, step) in self.logged)}, step=step, replace=True)
        for path in artifacts:
            self.sent["artifacts"].append([str(path), None])
            self._try("log_artifact", self.run_id, str(path))

    def start_system_metrics(self, interval: float = 10.0) -> None:
        """MLflow's system metrics (``system/*``: CPU, memory, disk, network, GPU when pynvml finds one)
        sampled every ``interval`` seconds until :meth:`finish`."""
        if not self.active:
            return
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self.monitor = SystemMetricsMonitor(self.run_id, sampling_interval=interval,
                                                tracking_uri=self.client.tracking_uri)
            self.monitor.start()
        except Exception as e:  # noqa: BLE001 - psutil missing or similar: say so, train on
            print(f"note: MLflow system metrics unavailable ({type(e).__name__}: {e})", file=sys.stderr)

    def finish(self, status: str = "FINISHED") -> None:
        """End the run with its true status; if the store is still away, leave what is unsent in the run
        folder (``tracking_pending.json``) for :func:`~vaanet.train.replay.replay_pending`."""
        if getattr(self, "monitor", None) is not None:
            try:
                self.monitor.finish()
            except Exception:  # noqa: BLE001
                pass
            self.monitor = None
        self.sent["status"] = status
        if self.lost is not None:
            self._recover(force=True)
        self._try("set_terminated", self.run_id, status)
        if self.lost is not None and self.enabled and self.run_id is not None:
            (self.out_dir / PENDING_FILE).write_text(json.dumps({"run_id": self.run_id, **self.sent}, indent=1))
            print(f"WARNING: MLflow still unreachable; {self.out_dir / PENDING_FILE} keeps what to send "
                  "(the study driver re-sends it, or call vaanet.train.replay.replay_pending)", file=sys.stderr)
