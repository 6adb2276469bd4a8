"""One configuration end to end: local loop, resume after a kill, determinism, MLflow, predict."""
import json

import pandas as pd
import pytest
import torch

from vaanet.config import Config, load_config
from conftest import tiny_config
from vaanet.predict import load_checkpoint, predict_video
from vaanet.models.pretrained import CheckpointError
from vaanet.train import InjectedFailure, fit_local


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_local_run_learns_and_is_tracked(reference_run):
    from mlflow.tracking import MlflowClient

    cfg, final, tmp = reference_run
    hist = [h for h in _history(tmp / "run") if "train_loss" in h]  # the epoch lines
    assert [h["step"] for h in hist] == [1, 2, 3]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert 0 <= final["test_acc"] <= 1 and set(final) >= {"test_mean_class_acc", "test_polarity_acc", "test_acc_Joy"}
    assert 0 <= final["test_temporal_on_key"] <= 1 and final["test_temporal_on_key_uniform"] == pytest.approx(0.25, abs=0.26)
    assert "test_spatial_in_box" in final and "test_temporal_attention_seg1" in final
    client = MlflowClient(cfg.run.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["model.depth"] == "10" and run.data.params["optim.lam"] == "0.5"
    assert "code_version" in run.data.params and run.data.params["data.split"].endswith("split_00.csv")
    assert run.data.params["prepare.frames"] == "raw" and run.data.params["prepare.short_side"] == "40"
    assert {k: run.data.tags[k] for k in ("study", "table", "preset", "loss", "lam", "split", "seed")} == {
        "study": "unit", "table": "3", "preset": "VS+VCW+VT+AT", "loss": "pcce", "lam": "0.5", "split": "split_00", "seed": "0"}
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert steps == [1, 2, 3]  # epochs count from 1, as on the console
    assert run.data.metrics["test_acc"] == pytest.approx(final["test_acc"])
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "per_class_accuracy.csv", "confusion_matrix.csv", "confusion_matrix.png", "split_00.csv"} <= artifacts
    conf = pd.read_csv(tmp / "run" / "artifacts" / "confusion_matrix.csv", index_col=0)
    assert conf.values.sum() == 8  # every test video once


def test_final_checkpoint_holds_the_last_epochs_weights_and_best_model_the_selected(reference_run):
    """The last checkpoint says epoch N: its weights are epoch N's (they were the selected model's, loaded
    for the test); the selected weights are best_model.pt, beside it and in the run folder."""
    cfg, final, tmp = reference_run
    folder = tmp / "run" / "checkpoints" / "last"
    state = torch.load(folder / "state.pt", weights_only=True)
    selected = torch.load(tmp / "run" / "best_model.pt", weights_only=True)
    assert state["epoch"] == cfg.optim.epochs - 1
    assert final["best_epoch"] < cfg.optim.epochs  # this run selects an earlier epoch: the two must differ
    assert not all(torch.equal(state["model"][k], selected["model"][k]) for k in selected["model"])
    beside = torch.load(folder / "best_model.pt", weights_only=True)
    assert all(torch.equal(beside["model"][k], selected["model"][k]) for k in selected["model"])


def test_same_seed_same_metrics_and_resume_after_kill(reference_run, synth_root, synth_cache, tmp_path):
    _, final, ref_tmp = reference_run
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"run.fail_at_epoch": 1})
    with pytest.raises(InjectedFailure):
        fit_local(cfg, tmp_path / "run")
    assert [h["step"] for h in _history(tmp_path / "run")] == [1]
    state = torch.load(tmp_path / "run" / "checkpoints" / "last" / "state.pt", weights_only=True)
    assert state["epoch"] == 0
    resumed = fit_local(cfg, tmp_path / "run")  # same command again: continues at epoch 1
    assert resumed == final  # identical to the uninterrupted run with the same seed
    ref_hist = [h for h in _history(ref_tmp / "run") if h["step"] is not None]
    new_hist = [h for h in _history(tmp_path / "run") if h["step"] is not None]
    assert [h["step"] for h in new_hist] == [1, 2, 3, 3]  # three epochs, then the test metrics at the last epoch's step
    for a, b in zip(ref_hist, new_hist):
        assert {k: v for k, v in a.items() if k != "epoch_seconds"} == {k: v for k, v in b.items() if k != "epoch_seconds"}
    from mlflow.tracking import MlflowClient

    client = MlflowClient(cfg.run.mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert len(runs) == 1  # the resumed run continues the same MLflow run
    assert fit_local(cfg, tmp_path / "run") == final  # a finished run does no training


def test_mlflow_lost_mid_run_keeps_training(synth_root, synth_cache, tmp_path, monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    calls = {"n": 0}
    original = MlflowClient.log_batch

    def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 4:
            raise ConnectionError("tracking server went away")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(MlflowClient, "log_batch", flaky)
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 2})
    final = fit_local(cfg, tmp_path / "run")
    assert "MLflow tracking lost" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "final_metrics.json").read_text())["test_acc"] == final["test_acc"]
    assert len([h for h in _history(tmp_path / "run") if h["step"] is not None]) == 3  # two epochs, then the test metrics


def test_unreachable_server_from_the_start(synth_root, synth_cache, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 1, "run.mlflow_uri": "http://127.0.0.1:9"})
    final = fit_local(cfg, tmp_path / "run")
    assert "MLflow tracking lost" in capsys.readouterr().err and "test_acc" in final


def test_missing_inputs_fail_before_training(synth_root, synth_cache, tmp_path):
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"data.truth": str(tmp_path / "nope.csv")})
    with pytest.raises(FileNotFoundError, match="nope.csv not found"):
        fit_local(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_config_validation(tmp_path):
    with pytest.raises(ValueError, match=r"unknown config keys \['optim.lrr'\]"):
        load_config(None, ["optim.lrr=1"])
    with pytest.raises(ValueError, match="optim.epochs must be an integer"):
        load_config(None, ["optim.epochs=many"])
    with pytest.raises(ValueError, match="num_classes=8 but data.dataset='e6'"):
        load_config(None, ["data.dataset=e6"])
    with pytest.raises(ValueError, match="must look like section.key=value"):
        load_config(None, ["optim.lr"])
    cfg = load_config("configs/ve8.yaml", ["model.preset=VS", "optim.loss=ce"])
    assert cfg.model.preset == "VS" and cfg.optim.effective_lambda == 0.0
    flat = cfg.flat()
    assert flat["model.depth"] == 101 and flat["optim.lr"] == 2e-4 and "run.tags" not in flat
    assert Config.from_dict(cfg.to_dict()) == cfg
    (tmp_path / "bad.yaml").write_text("model: [1, 2\n")
    with pytest.raises(ValueError, match="bad.yaml is not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_predict_prints_distribution_and_writes_figure(reference_run, synth_root, tmp_path):
    _, _, ref_tmp = reference_run
    ckpt = ref_tmp / "run"
    video = sorted(synth_root.glob("Joy/*.mp4"))[0]
    result = predict_video(video, ckpt, tmp_path / "fig.png")
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert result["polarity"] in ("positive", "negative") and (tmp_path / "fig.png").stat().st_size > 5000
    model, cfg, _ = load_checkpoint(ckpt)
    assert cfg.model.depth == 10 and not model.training
    with pytest.raises(ValueError, match="notes.txt is not a video file"):
        (tmp_path / "notes.txt").write_text("hello")
        predict_video(tmp_path / "notes.txt", ckpt)
    torch.save({"state_dict": {}}, tmp_path / "weights.pth")
    with pytest.raises(CheckpointError, match="not a vaanet checkpoint"):
        predict_video(video, tmp_path / "weights.pth")
    bad = torch.load(ckpt / "best_model.pt", weights_only=True)
    bad["config"]["model"]["depth"] = 18
    torch.save(bad, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="does not fit the model"):
        predict_video(video, tmp_path / "mismatch.pt")


def test_cli_predict(reference_run, synth_root, tmp_path):
    import subprocess
    import sys

    _, _, ref_tmp = reference_run
    video = sorted(synth_root.glob("Fear/*.mp4"))[0]
    r = subprocess.run([sys.executable, "-m", "vaanet.cli", "predict", str(video), "--checkpoint",
                        str(ref_tmp / "run"), "--figure", str(tmp_path / "f.png")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "prediction:" in r.stdout and (tmp_path / "f.png").exists()
    r = subprocess.run([sys.executable, "-m", "vaanet.cli", "predict", str(video), "--checkpoint", str(tmp_path / "no.pt")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no.pt not found" in r.stderr


def test_a_run_folder_resumes_only_its_own_configuration(synth_root, synth_cache, tmp_path):
    fit_local(tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 1}), tmp_path / "run")
    other = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 1, "optim.lr": 0.01})
    with pytest.raises(ValueError, match=r"another configuration \(optim.lr: 0.001 -> 0.01\)"):
        fit_local(other, tmp_path / "run")
    # another seed is another run: not the finished seed-0 result under seed 1's name (nor, mid-run, a mix)
    with pytest.raises(ValueError, match=r"another configuration \(run.seed: 0 -> 1\)"):
        fit_local(tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 1, "run.seed": 1}), tmp_path / "run")
    # what does not change the numbers may change: threads, checkpoint interval, tags
    assert fit_local(tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 1, "run.threads": 2}),
                     tmp_path / "run")["test_acc"] >= 0
    # a checkpoint written before a config key existed (here model.audio_width) resumes when the key has
    # its default, which is the behaviour of that time
    import torch

    from vaanet.train.loop import STATE, latest_checkpoint

    state_file = latest_checkpoint(tmp_path / "run") / STATE
    state = torch.load(state_file, weights_only=True)
    del state["config"]["model"]["audio_width"]
    torch.save(state, state_file)
    same = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 1})
    assert fit_local(same, tmp_path / "run")["test_acc"] == state["test"]["test_acc"]
    with pytest.raises(ValueError, match=r"another configuration \(model.audio_width: 1.0 -> 0.5\)"):
        fit_local(tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 1, "model.audio_width": 0.5}),
                  tmp_path / "run")


def test_every_step_trains_on_exactly_the_batch_size(synth_root, synth_cache, tmp_path):
    """A micro-batch that does not divide the batch, or a batch that does not split over the workers, would
    make each step train on more (or fewer) videos than optim.batch_size says: refused, naming a divisor."""
    from vaanet.config import OptimConfig
    from vaanet.train.loop import _loaders

    with pytest.raises(ValueError, match=r"micro_batch=10 does not divide optim.batch_size=32: each step would "
                                         r"train on 40 videos; use a divisor \(1, 2, 4, 8, 16, 32\)"):
        OptimConfig(batch_size=32, micro_batch=10)
    assert OptimConfig(batch_size=32, micro_batch=8).micro_batch == 8 and OptimConfig(batch_size=4, micro_batch=8)
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.batch_size": 8, "optim.micro_batch": 4})
    assert _loaders(cfg, 0, 1, False)[2] == 2  # two micro-batches of 4 per step
    with pytest.raises(ValueError, match=r"batch_size=8 does not split over 3 workers: each step would train on 6"):
        _loaders(cfg, 0, 3, False)
    with pytest.raises(ValueError, match=r"micro_batch=4 does not divide the 6 videos per worker .* each step "
                                         r"would train on 16 videos; use a divisor \(1, 2, 3, 6\)"):
        _loaders(tiny_config(synth_root, synth_cache, tmp_path, **{"optim.batch_size": 12, "optim.micro_batch": 4}),
                 0, 2, False)


def test_a_truth_file_of_other_videos_is_refused_before_training(synth_root, synth_cache, tmp_path):
    """A truth file of another generated set (same names, other durations) would score the attention against
    boxes and key segments that are not in the frames: refused before the first epoch."""
    truth = pd.read_csv(synth_root / "synth_truth.csv", dtype={"video_id": str})
    truth["duration"] += 0.5
    truth.to_csv(tmp_path / "other_truth.csv", index=False)
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"data.truth": str(tmp_path / "other_truth.csv")})
    with pytest.raises(ValueError, match=r"does not describe the videos of .*prepare the cache again"):
        fit_local(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # nothing trained
    truth.iloc[:3].to_csv(tmp_path / "short_truth.csv", index=False)
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"data.truth": str(tmp_path / "short_truth.csv")})
    with pytest.raises(ValueError, match=r"has no row for \d+ videos"):
        fit_local(cfg, tmp_path / "run2")


def test_a_trials_config_retrains_as_a_run_of_its_own(reference_run, tmp_path, monkeypatch, capsys):
    """A run's saved config.yaml holds its config, not the study tags it was given (its MLflow run keeps them);
    `vaanet train` on a trial's config saved before that drops them with a note: the new run must not replace
    the study's trial in its tables without a word (analysis keeps the latest run per study point)."""
    import yaml

    import vaanet.train
    from vaanet import cli

    cfg, _, tmp = reference_run
    saved = yaml.safe_load((tmp / "run" / "artifacts" / "config.yaml").read_text())
    assert cfg.run.tags == {"study": "unit", "table": "3"} and saved["run"]["tags"] == {}
    trial = {**saved, "run": {**saved["run"], "tags": {"study": "ablation", "row": "VS", "mine": "kept",
                                                       "mlflow.parentRunId": "0123abcd"}}}
    path = tmp_path / "trial.yaml"
    path.write_text(yaml.safe_dump(trial))
    seen = []

    def fake_fit(c):
        seen.append(c)
        return {"test_acc": 0.5, "test_mean_class_acc": 0.5, "test_polarity_acc": 1.0}

    monkeypatch.setattr(vaanet.train, "fit_local", fake_fit)
    assert cli.main(["train", "--config", str(path), "--no-ray"]) in (0, None)
    assert seen[0].run.tags == {"mine": "kept"}
    assert "study trial's config; its study tags (mlflow.parentRunId, row, study) are dropped" in capsys.readouterr().out
