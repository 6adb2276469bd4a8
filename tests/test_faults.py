"""Faults (issue 14): a tracking server that goes away for longer than the client's retries and comes
back loses nothing and doubles nothing; one still away when the run ends leaves its results pending in
the run folder, re-sent later."""

import pytest

from conftest import MlflowServer as Server, mlflow_store, tiny_config



@pytest.fixture
def server(tmp_path, monkeypatch):
    # the client gives up at once (its own retry budget, ~4 minutes by default, shortened to nothing)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")  # a down server refuses at once; a loaded one may be slow
    monkeypatch.setenv("VAANET_TRACKING_RETRY_S", "0")  # ask again at every call
    s = Server(tmp_path / "mlflow")
    s.folder.mkdir()
    s.start()
    yield s
    s.stop()


def _outage(monkeypatch, server, down_after: int, up_before: int | None):
    """Kill the server after epoch ``down_after`` is logged; start it again before epoch ``up_before``."""
    from vaanet.train.tracking import Tracker

    original = Tracker.log_metrics

    def log_metrics(self, metrics, step, **kw):
        if up_before is not None and step == up_before and "train_loss" in metrics:
            server.start()
        original(self, metrics, step, **kw)
        if step == down_after and "train_loss" in metrics:
            server.stop()

    monkeypatch.setattr(Tracker, "log_metrics", log_metrics)


def test_outage_mid_run_is_replayed_once_the_server_is_back(server, synth_root, synth_cache, tmp_path, monkeypatch,
                                                             capsys):
    from mlflow.tracking import MlflowClient

    from vaanet.train import fit_local

    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 4, "run.mlflow_uri": server.url})
    _outage(monkeypatch, server, down_after=1, up_before=3)  # epoch 2 is logged while the server is down
    final = fit_local(cfg, tmp_path / "run")
    err = capsys.readouterr().err
    assert "MLflow tracking lost" in err and "MLflow tracking is back: re-sent" in err
    client = MlflowClient(server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["test_acc"] == pytest.approx(final["test_acc"])
    for key in ("val_acc", "train_loss", "best_val_acc"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [1, 2, 3, 4]  # once each
    assert "config.yaml" in {a.path for a in client.list_artifacts(run.info.run_id)}
    assert not (tmp_path / "run" / "tracking_pending.json").exists()


def test_server_still_down_at_the_end_leaves_the_run_pending_then_replays(server, synth_root, synth_cache, tmp_path,
                                                                          monkeypatch):
    from mlflow.tracking import MlflowClient

    from vaanet.train import fit_local
    from vaanet.train.replay import replay_pending

    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 2, "run.mlflow_uri": server.url})
    _outage(monkeypatch, server, down_after=1, up_before=None)
    final = fit_local(cfg, tmp_path / "run")
    pending = tmp_path / "run" / "tracking_pending.json"
    assert pending.is_file()
    assert not replay_pending(tmp_path / "run", server.url) and pending.is_file()  # still away: kept
    server.start()
    assert replay_pending(tmp_path / "run", server.url) and not pending.exists()
    client = MlflowClient(server.url)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["test_acc"] == pytest.approx(final["test_acc"])
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc")) == [1, 2]
    assert replay_pending(tmp_path / "run", server.url)  # nothing left: a second replay changes nothing
    assert sorted(m.step for m in client.get_metric_history(run.info.run_id, "val_acc")) == [1, 2]


def test_final_metrics_of_a_resumed_run_replace_what_mlflow_held(tmp_path):
    """Killed after the final MLflow log and before the final checkpoint, a resumed run trains its last
    epochs again; where the result differs (GPU: cudnn autotuning, bf16), MLflow must show the new one,
    which the run folder keeps, not the first."""
    import time

    from mlflow.tracking import MlflowClient

    from vaanet.train.tracking import Tracker

    uri, out = mlflow_store(tmp_path / "mlflow.db"), tmp_path / "run"
    out.mkdir()
    first = Tracker(uri, "test", "r", out)
    first.start({}, {})
    for step in (1, 2, 3):
        first.log_metrics({"val_acc": 0.1 * step, "best_val_acc": 0.5}, step=step)
    first.log_final({"test_acc": 0.4, "best_epoch": 3, "best_val_acc": 0.5}, [], step=3)
    client = MlflowClient(uri)
    history = client.get_metric_history(first.run_id, "best_val_acc")
    assert [m.step for m in history] == [1, 2, 3]  # a run that was not resumed logs best_val_acc once per step
    time.sleep(0.01)  # MLflow shows the value with the latest timestamp of the latest step
    again = Tracker(uri, "test", "r", out, run_id=first.run_id)  # resumed from the checkpoint of epoch 2
    again.resume_at(2)
    again.log_metrics({"val_acc": 0.9, "best_val_acc": 0.9}, step=3)  # epoch 3 recomputed: not sent twice
    again.log_final({"test_acc": 0.7, "best_epoch": 3, "best_val_acc": 0.9}, [], step=3)
    metrics = client.get_run(first.run_id).data.metrics
    assert metrics["test_acc"] == pytest.approx(0.7) and metrics["best_val_acc"] == pytest.approx(0.9)
    assert sorted(m.value for m in client.get_metric_history(first.run_id, "val_acc") if m.step == 3) == [
        pytest.approx(0.3)]  # the epoch curve keeps one value per step
