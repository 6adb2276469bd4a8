"""``vaanet verify RUN``: retrain a finished run from its record and compare every metric it logged.

RUN is an MLflow run id (its ``config.yaml`` and ``environment.json`` artifacts, its params and metric
histories) or a run folder (``artifacts/config.yaml``, ``environment.json``, ``best_model.pt``,
``metrics.jsonl``). Before any training the record is checked, and verification refused (naming what)
when it cannot reproduce the run:

* the config artifact must agree with what the run trained with (the MLflow params, or the config
  saved with the folder's selected weights): an edited ``config.yaml`` is refused, naming the key;
* the code must be the commit the run recorded; uncommitted changes (the run's or this checkout's) are
  warned about, since the commit alone then does not say what ran;
* the data must have the digests the run recorded (split file, cache index, prepare manifest).

The run is then retrained with :func:`vaanet.train.fit_local` in a scratch folder (its own MLflow store,
so the original store is untouched), and each logged metric is compared at every step: identical (0
difference) when both the record and the reproduction say the run is deterministic on its device (a
CPU), else within ``tolerance`` (``|a - b| <= tolerance * max(1, |a|)``). ``epochs`` verifies the first
epochs only (the test metrics, which follow the last epoch, are then not compared).
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

from .config import Config, load_config
from .data.ingest import MANIFEST_FILE
from .train.environment import DIFF_FILE, ENVIRONMENT_FILE, data_digest, git_state
from .train.store import default_tracking_uri
from .train.tracking import without_study_tags

DEFAULT_TOLERANCE = 0.05  # relative (absolute below 1) where the run is not deterministic on its device (GPU)
NOT_COMPARED = ("epoch_seconds",)  # wall time; MLflow's system/* metrics are not compared either


class Refused(ValueError):
    """The record cannot be reproduced here (edited config, other code, other data)."""


@dataclass
class Record:
    source: str  # what was read: the run folder or 'MLflow run ID at URI'
    config: Config  # from the config artifact
    trained_with: dict  # the flat config the run trained with (params / the selected weights' config)
    environment: dict | None
    metrics: dict[tuple[str, int], float]  # (metric, step) -> value
    warnings: list[str] = field(default_factory=list)
    legacy: dict | None = None  # a run without environment record: its git commit tag and dataset input digest


def _config_from_yaml(path: Path) -> Config:
    return load_config(path)


def _folder_record(folder: Path) -> Record:
    import torch

    config_file = folder / "artifacts" / "config.yaml"
    if not config_file.is_file():
        raise Refused(f"{config_file} is missing: {folder} is not a finished run folder (its config artifact is "
                      "written when the run ends); finish the run (rerun its command) or pass its MLflow run id")
    best = folder / "best_model.pt"
    if not best.is_file():
        raise Refused(f"{best} is missing: the config the run trained with cannot be checked; pass its MLflow run id")
    trained = Config.from_dict(torch.load(best, map_location="cpu", weights_only=True)["config"]).flat()
    env_file = folder / ENVIRONMENT_FILE
    if not env_file.is_file():
        raise Refused(f"{env_file} is missing: the run predates environment records, so neither the code nor the data "
                      "it trained with can be checked from its folder; pass its MLflow run id instead "
                      f"(`vaanet verify $(cat {folder / 'mlflow_run_id'})`: its git commit tag and dataset digest are "
                      "checked)")
    return Record(str(folder), _config_from_yaml(config_file), trained,
                  json.loads(env_file.read_text()) if env_file.is_file() else None, _folder_metrics(folder))


def _mlflow_record(run_id: str, uri: str | None) -> Record:
    from mlflow.tracking import MlflowClient

    uri = uri or default_tracking_uri()
    client = MlflowClient(uri)
    try:
        run = client.get_run(run_id)
    except Exception as e:  # noqa: BLE001
        raise Refused(f"no run folder and no MLflow run {run_id} at {uri} ({type(e).__name__}); pass a run folder, "
                      "or the run's store with --mlflow-uri") from None
    with tempfile.TemporaryDirectory(prefix="vaanet-verify-") as tmp:
        names = {a.path for a in client.list_artifacts(run_id)}
        if "config.yaml" not in names:
            raise Refused(f"MLflow run {run_id} has no config.yaml artifact (it did not finish); nothing to rebuild from")
        config = _config_from_yaml(Path(client.download_artifacts(run_id, "config.yaml", tmp)))
        env = (json.loads(Path(client.download_artifacts(run_id, ENVIRONMENT_FILE, tmp)).read_text())
               if ENVIRONMENT_FILE in names else None)
    metrics: dict[tuple[str, int], float] = {}
    for key in run.data.metrics:
        if key.startswith("system/"):
            continue
        for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.timestamp):
            metrics[key, m.step] = m.value  # the latest value of a step is the one MLflow shows
    legacy = None
    if env is None:  # a run from before environment records: what MLflow itself kept of its code and data
        inputs = getattr(run.inputs, "dataset_inputs", None) or []
        legacy = {"commit": run.data.tags.get("mlflow.source.git.commit", ""),
                  "dataset_digest": inputs[0].dataset.digest if inputs else ""}
    return Record(f"MLflow run {run_id} at {uri}", config, dict(run.data.params), env, metrics, legacy=legacy)


def load_record(run: str, uri: str | None = None) -> Record:
    """The record of ``run``: a run folder, or an MLflow run id in the store at ``uri``."""
    return _folder_record(Path(run)) if Path(run).is_dir() else _mlflow_record(run, uri)


def check_config(record: Record) -> None:
    """The config artifact agrees with what the run trained with, key by key (MLflow params are strings)."""
    flat = record.config.flat()
    differ = [f"{k}: config artifact {flat[k]!r}, trained with {record.trained_with[k]!r}"
              for k in sorted(flat) if k in record.trained_with
              and str(flat[k])[:6000] != str(record.trained_with[k])[:6000]]
    if differ:
        raise Refused(f"the config artifact of {record.source} differs from what the run trained with "
                      f"({'; '.join(differ[:5])}): it was edited after the run; restore it to verify the run")


def check_code(environment: dict | None, root: str | Path | None = None) -> list[str]:
    """Refuse when this checkout (``root``, default vaanet's own) is at another commit than the run; return
    warnings about uncommitted changes."""
    if environment is None:
        return ["the run has no environment record (it predates them): its code, data and device are not checked"]
    recorded, now = environment["git"], git_state(root)
    if recorded["commit"] and now["commit"] != recorded["commit"]:
        raise Refused(f"the run was trained with the code at commit {recorded['commit'][:12]}, this checkout is at "
                      f"{now['commit'][:12] or '(no git checkout)'}; check out {recorded['commit'][:12]} "
                      "(e.g. `git worktree add ../verify-run <commit>`) and verify from there")
    warnings = []
    if recorded["dirty"] and recorded.get("diff_sha256") != now["diff_sha256"]:
        warnings.append(f"the run was trained from a tree with uncommitted changes (its {DIFF_FILE} artifact) that this "
                        "checkout does not have: apply them (git apply) for an exact reproduction")
    if now["dirty"] and recorded.get("diff_sha256") != now["diff_sha256"]:
        warnings.append(f"this checkout has uncommitted changes ({now['diff'].count('diff --git')} file(s)) that the run "
                        "did not have: the reproduction runs them")
    return warnings


def split_digest(split: str | Path) -> str:
    """The digest MLflow gives the split file as a run's dataset input (vaanet.train.tracking's log_split)."""
    import warnings

    import mlflow.data
    import pandas as pd

    with warnings.catch_warnings():  # MLflow's hints on the source's kind and the integer columns' schema
        warnings.simplefilter("ignore")
        return mlflow.data.from_pandas(pd.read_csv(split, dtype={"video_id": str}), source=str(split)).digest


def check_legacy(record: Record, root: str | Path | None = None) -> list[str]:
    """A run without an environment record (it predates them): refuse unless its MLflow git commit tag names
    this checkout's commit and its dataset input has the digest of the split file there now; return warnings
    about what cannot be checked."""
    legacy = record.legacy or {}
    if not legacy.get("commit"):
        raise Refused(f"{record.source} has neither an {ENVIRONMENT_FILE} artifact nor a mlflow.source.git.commit tag: "
                      "the code it trained with is unknown, so it cannot be verified; retrain it with this vaanet "
                      "(`vaanet train`), which records both")
    warnings = check_code({"git": {"commit": legacy["commit"], "dirty": False}}, root)
    cfg = record.config
    if legacy.get("dataset_digest"):
        now = split_digest(cfg.data.split) if Path(cfg.data.split).is_file() else "absent"
        if now != legacy["dataset_digest"]:
            raise Refused(f"the data differ from the run's: {cfg.data.split} (MLflow dataset digest "
                          f"{legacy['dataset_digest']} when trained, {now} now); point data.split at the split the "
                          "run used")
    return ["the run has no environment record (it predates them): its commit tag and split digest match; "
            "uncommitted changes, the cache's contents and the device are not checked, and the metrics are compared "
            "within --tolerance", *warnings]


def check_data(environment: dict | None, cfg: Config) -> None:
    """The split file, cache index and prepare manifest have the digests the run recorded."""
    if environment is None or "data" not in environment:
        return
    recorded, now = environment["data"], data_digest(cfg.data.split, cfg.data.cache)
    files = {"split_sha256": cfg.data.split, "index_sha256": Path(cfg.data.cache) / "index.csv",
             "manifest_sha256": Path(cfg.data.cache) / MANIFEST_FILE}
    differ = [f"{files[k]} (sha256 {recorded[k][:12] or 'absent'} when trained, {now[k][:12] or 'absent'} now)"
              for k in files if recorded.get(k, now[k]) != now[k]]
    if differ:
        raise Refused(f"the data differ from the run's: {'; '.join(differ)}; point data.cache / data.split at the "
                      "data the run used (or prepare it again with the run's prepare.* params)")


@dataclass
class Comparison:
    rows: list[tuple[str, int, float, float | None, float]]  # metric, steps, recorded, reproduced (last step), max |diff|
    tolerance: float  # 0: identical required
    failed: list[str]

    @property
    def ok(self) -> bool:
        return not self.failed

    def table(self) -> str:
        lines = [f"{'metric':<34}{'steps':>6}{'recorded':>14}{'reproduced':>14}{'difference':>12}"]
        for key, steps, rec, rep, diff in self.rows:
            rep_s = f"{rep:>14.6g}" if rep is not None else f"{'missing':>14}"
            lines.append(f"{key:<34}{steps:>6}{rec:>14.6g}{rep_s}{diff:>12.3g}" + ("  <-" if key in self.failed else ""))
        return "\n".join(lines)


def compare(recorded: dict, reproduced: dict, tolerance: float, epochs: int | None = None) -> Comparison:
    """Every (metric, step) of ``recorded`` (up to step ``epochs``) against ``reproduced``."""
    keys = sorted({k for k, s in recorded if k not in NOT_COMPARED and not k.startswith("system/")
                   and (epochs is None or s <= epochs)})
    rows, failed = [], []
    for key in keys:
        steps = sorted(s for k, s in recorded if k == key and (epochs is None or s <= epochs))
        diffs = [abs(recorded[key, s] - reproduced[key, s]) if (key, s) in reproduced else math.inf for s in steps]
        bad = any(d > tolerance * max(1.0, abs(recorded[key, s])) for d, s in zip(diffs, steps))
        rows.append((key, len(steps), recorded[key, steps[-1]], reproduced.get((key, steps[-1])), max(diffs)))
        if bad:
            failed.append(key)
    return Comparison(rows, tolerance, failed)


def verify(run: str, uri: str | None = None, epochs: int | None = None, scratch: str | Path | None = None,
           tolerance: float = DEFAULT_TOLERANCE, code_root: str | Path | None = None, log=print) -> Comparison:
    """Check ``run``'s record, retrain it in ``scratch`` (default: a temporary folder) and compare. Raises
    :class:`Refused` when the record cannot be reproduced here."""
    from .train import fit_local

    record = load_record(run, uri)
    check_config(record)
    warnings = (check_code(record.environment, code_root) if record.environment is not None
                else check_legacy(record, code_root))
    cfg = record.config
    cfg.check_files()
    check_data(record.environment, cfg)
    for w in warnings:
        log(f"warning: {w}")
    if epochs is not None and epochs < 1:
        raise ValueError(f"--epochs {epochs}: give at least 1 epoch")
    if epochs is not None and epochs >= cfg.optim.epochs:
        epochs = None  # the whole run
    with tempfile.TemporaryDirectory(prefix="vaanet-verify-") as tmp:
        folder = Path(scratch or tmp)
        threads = cfg.run.threads or (record.environment or {}).get("determinism", {}).get("torch_threads", 0)
        again = replace(without_study_tags(cfg), optim=replace(cfg.optim, epochs=epochs or cfg.optim.epochs),
                        run=replace(cfg.run, name="verify", output=str(folder), experiment="verify", threads=threads,
                                    mlflow_uri=default_tracking_uri(folder), fail_at_epoch=-1, system_metrics=False,
                                    tags={}))
        log(f"verifying {record.source}: retraining {again.optim.epochs} of {cfg.optim.epochs} epoch(s) in {folder}",
            flush=True)
        fit_local(again, folder / "run")
        reproduced = _folder_metrics(folder / "run")
        env_now = json.loads((folder / "run" / ENVIRONMENT_FILE).read_text())
    deterministic = (record.environment is not None and record.environment["determinism"]["deterministic"]
                     and env_now["determinism"]["deterministic"]
                     and record.environment["device"]["type"] == env_now["device"]["type"])
    if record.environment is not None:
        changed = [f"{k} {v} -> {env_now['software'].get(k)}" for k, v in record.environment["software"].items()
                   if k != "ffmpeg" and env_now["software"].get(k) != v]
        if changed:
            log(f"warning: software differs from the run's ({', '.join(changed)}): numbers may differ in the last digits")
    result = compare(record.metrics, reproduced, 0.0 if deterministic else tolerance, epochs)
    log(f"{'identical required' if deterministic else f'tolerance {tolerance:g} (relative; absolute below 1)'}: "
        f"the run is {'deterministic on this device (CPU)' if deterministic else 'not deterministic on its device'}")
    return result


def _folder_metrics(folder: Path) -> dict[tuple[str, int], float]:
    """(metric, step) -> value of a run folder's ``metrics.jsonl`` (a later line for a step wins, as in MLflow)."""
    metrics: dict[tuple[str, int], float] = {}
    path = folder / "metrics.jsonl"
    for line in filter(str.strip, path.read_text().splitlines() if path.is_file() else []):
        d = json.loads(line)
        metrics.update({(k, int(d.get("step") or 0)): float(v) for k, v in d.items() if k != "step"})
    return metrics


__all__ = ["verify", "load_record", "check_config", "check_code", "check_data", "compare", "Refused", "DEFAULT_TOLERANCE"]
