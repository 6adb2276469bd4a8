"""The MLflow tracking store: where it is by default, whether it answers, and the experiment runs go into.

:func:`default_tracking_uri` is MLflow 3's own default (a SQLite database in the working folder, made
absolute for Ray workers); :func:`check_reachable` reports a server that does not answer in one line within
seconds; :func:`ensure_experiment` creates the store and the experiment once, in the driver, and
:func:`experiment_id` gives an experiment opening in MLflow's training-runs view with its artifacts beside a
SQLite database. Used by :mod:`vaanet.train.tracking` (a run's :class:`~vaanet.train.tracking.Tracker`),
:mod:`vaanet.train.replay`, and by the study driver and the analysis to reach the same store.
"""
from __future__ import annotations

from pathlib import Path

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # MLflow 3 opens the training-runs view


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """A tracking server that does not answer is reported in one line within seconds, not after the
    client's retries (minutes)."""
    import urllib.error
    import urllib.request

    if not uri.startswith(("http://", "https://")):
        return
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return  # it answered (a proxy or auth in front of /health): reachable
    except OSError as e:
        raise ConnectionError(f"the MLflow server at {uri} does not answer ({getattr(e, 'reason', e)}); start it "
                              "(mlflow server ...) or pass another --mlflow-uri") from None


def default_tracking_uri(folder: str | Path = ".") -> str:
    """MLflow 3's own default store: a SQLite database in the working folder (absolute, so that Ray
    workers, which run elsewhere, write to the same file)."""
    return f"sqlite:///{(Path(folder) / 'mlflow.db').resolve()}"


def ensure_experiment(uri: str | None, experiment: str) -> str:
    """Create the tracking store and the experiment once, in the driver, before parallel trials race to."""
    from mlflow.tracking import MlflowClient

    check_reachable(uri or "")
    return experiment_id(MlflowClient(tracking_uri=uri or default_tracking_uri()), experiment)


def experiment_id(client, experiment: str) -> str:
    """The experiment's id, created if needed: opening in MLflow's training-runs view, and with a SQLite
    store its artifacts beside the database (``mlartifacts/``), not in whatever folder the first run
    happened to start in - so a store on shared storage keeps its artifacts there too."""
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        return exp.experiment_id
    uri = client.tracking_uri
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()
    return client.create_experiment(experiment, artifact_location=location, tags=EXPERIMENT_KIND)
