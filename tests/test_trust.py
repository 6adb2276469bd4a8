"""Results you can trust (issue 10): prediction sees the pixels training saw, non-videos are refused,
MLflow statuses and epoch numbers say what happened, and a wrong request is refused before it runs."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_config
from vaanet.config import flag_overrides, load_config
from vaanet.models import ModelConfig, VAANet, build_model, resnet3d
from vaanet.predict import predict_video
from vaanet.train import fit_local

REPO = Path(__file__).resolve().parents[1]


def _old_format_weights(path: Path) -> Path:
    """A fake resnet-10-kinetics.pth in Hara's old layout: random tensors, 'module.' keys, 400-way fc."""
    torch.manual_seed(7)
    net = resnet3d(10, width=0.125, num_classes=400)
    sd = {f"module.{k}": v for k, v in net.state_dict().items()}
    torch.save({"epoch": 200, "arch": "resnet-10", "state_dict": sd, "optimizer": {}}, path)
    return path


def test_predict_sees_the_pixels_training_saw(synth_root, synth_cache, tmp_path):
    from mlflow.tracking import MlflowClient

    weights = _old_format_weights(tmp_path / "resnet-10-kinetics.pth")
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 1, "model.visual_weights": str(weights)})
    assert cfg.model.pixel_normalization is None  # nothing set: the weights decide
    fit_local(cfg, tmp_path / "run")
    best = tmp_path / "run" / "best_model.pt"
    saved = torch.load(best, weights_only=True)["config"]["model"]
    assert saved["pixel_normalization"] == "kinetics400_0_255"  # the effective config is what is saved
    client = MlflowClient(cfg.run.mlflow_uri)
    run = client.search_runs([client.get_experiment_by_name("test").experiment_id])[0]
    assert run.data.params["model.pixel_normalization"] == "kinetics400_0_255"
    # every test video: `vaanet predict` gives the class probabilities the evaluation inside training gave
    evaluated = pd.read_csv(tmp_path / "run" / "artifacts" / "test_predictions.csv", dtype={"video_id": str})
    index = pd.read_csv(synth_cache / "index.csv", dtype={"video_id": str}).set_index("video_id")
    classes = cfg.data.classes
    for _, row in evaluated.head(3).iterrows():
        result = predict_video(index.loc[row["video_id"], "path"], best)
        np.testing.assert_allclose([result["probabilities"][c] for c in classes],
                                   [row[f"p_{c}"] for c in classes], atol=1e-4)


def test_predict_averages_the_views_the_evaluation_averaged(synth_root, synth_cache, tmp_path):
    """A run evaluated on several views (data.temporal_views / spatial_views): `vaanet predict` gives the
    probabilities of its test predictions (the views' average), not those of the centre view alone."""
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 1, "data.temporal_views": 2,
                                                           "data.spatial_views": 3})
    fit_local(cfg, tmp_path / "run")
    best = tmp_path / "run" / "best_model.pt"
    evaluated = pd.read_csv(tmp_path / "run" / "artifacts" / "test_predictions.csv", dtype={"video_id": str})
    index = pd.read_csv(synth_cache / "index.csv", dtype={"video_id": str}).set_index("video_id")
    classes = cfg.data.classes
    for _, row in evaluated.head(2).iterrows():
        result = predict_video(index.loc[row["video_id"], "path"], best, figure=tmp_path / "fig.png")
        np.testing.assert_allclose([result["probabilities"][c] for c in classes],
                                   [row[f"p_{c}"] for c in classes], atol=1e-4)
    assert (tmp_path / "fig.png").is_file()  # the figure shows the first view


def test_constructor_reads_no_file_and_builder_records_normalization(tmp_path):
    weights = _old_format_weights(tmp_path / "w.pth")
    kw = dict(depth=10, width=0.125, segments=2, frames=4, crop_size=32, audio=False, audio_attention=False)
    with pytest.raises(ValueError, match="use vaanet.models.build_model"):
        VAANet(ModelConfig(visual_weights=str(weights), **kw))
    model = build_model(ModelConfig(visual_weights=str(weights), **kw))
    assert model.cfg.pixel_normalization == "kinetics400_0_255" and model.cfg.visual_weights == str(weights)
    assert build_model(ModelConfig(**kw)).cfg.pixel_normalization == "kinetics700_0_1"  # the default, recorded
    rebuilt = VAANet(model.cfg.__class__(**{**model.cfg.__dict__, "visual_weights": None}))
    torch.testing.assert_close(rebuilt.pixel_mean, model.pixel_mean)


def _write_video(path: Path, frames: int) -> Path:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            img = np.full((48, 64, 3), 20 * i % 255, np.uint8)
            for packet in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def test_predict_refuses_what_is_not_a_video(reference_run, tmp_path):
    import matplotlib.pyplot as plt

    _, _, ref_tmp = reference_run
    ckpt = ref_tmp / "run"
    (tmp_path / "notes.txt").write_text("hello")
    plt.imsave(tmp_path / "photo.png", np.random.default_rng(0).random((48, 64, 3)))
    still = _write_video(tmp_path / "still.mp4", frames=1)
    for path, message in [(tmp_path / "notes.txt", "is not a video file"), (tmp_path / "photo.png", "is an image"),
                          (still, "single still frame")]:
        with pytest.raises(ValueError, match=message):
            predict_video(path, ckpt)
        r = subprocess.run([sys.executable, "-m", "vaanet.cli", "predict", str(path), "--checkpoint", str(ckpt)],
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
        assert not list(Path.cwd().glob(f"{path.stem}_attention.png"))


def test_text_files_are_never_classified_as_videos(reference_run, tmp_path):
    """FFmpeg's tty demuxer draws a .txt file as ANSI-art video (a copy of the README became a 106-frame
    "video" classified as Joy): predict, figure3 and prepare's decoder refuse text and subtitles alike."""
    from analysis.figures import figure3
    from vaanet.data.decode import decode_video

    _, _, ref_tmp = reference_run
    ckpt = ref_tmp / "run"
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    files = {"notes.txt": readme, "art.ans": "\x1b[31mHELLO\x1b[0m world\n" * 50, "renamed.mp4": readme,
             "talk.srt": "1\n00:00:01,000 --> 00:00:02,000\nHello\n\n2\n00:00:03,000 --> 00:00:04,000\nWorld\n",
             "talk.vtt": "WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nHello\n"}
    messages = {"notes.txt": "is a text file", "art.ans": "is a text file", "renamed.mp4": "is not a video file",
                "talk.srt": "has no video stream", "talk.vtt": "has no video stream"}
    for name, text in files.items():
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(ValueError, match=messages[name]):
            predict_video(path, ckpt)
        with pytest.raises(ValueError, match=messages[name]):
            figure3(ckpt, [path], tmp_path / "figure3.png")
        r = subprocess.run([sys.executable, "-m", "vaanet.cli", "predict", str(path), "--checkpoint", str(ckpt)],
                           capture_output=True, text=True, cwd=tmp_path)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and messages[name] in r.stderr, r.stderr
        assert "prediction" not in r.stdout
    for name in ("notes.txt", "art.ans"):  # what prepare decodes with
        with pytest.raises(ValueError, match="is a text file"):
            decode_video(str(tmp_path / name), 48, None)
    assert not (tmp_path / "figure3.png").exists()


def test_resumed_run_is_running_while_it_trains_and_epochs_count_from_one(synth_root, synth_cache, tmp_path,
                                                                           monkeypatch, capsys):
    from mlflow.tracking import MlflowClient

    from vaanet.train import InjectedFailure
    from vaanet.train.tracking import Tracker

    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"run.fail_at_epoch": 1})
    with pytest.raises(InjectedFailure):
        fit_local(cfg, tmp_path / "run")
    client = MlflowClient(cfg.run.mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FAILED"
    seen = []
    original = Tracker.log_metrics

    def spy(self, metrics, step, **kw):
        seen.append(client.get_run(self.run_id).info.status)
        return original(self, metrics, step, **kw)

    monkeypatch.setattr(Tracker, "log_metrics", spy)
    final = fit_local(cfg, tmp_path / "run")
    assert seen and set(seen) == {"RUNNING"}  # while the resumed run trains
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    # one convention: epochs count from 1 on the console, in MLflow steps and in best_epoch
    out = capsys.readouterr().out
    assert "epoch   3/3" in out and "epoch   0/" not in out
    assert f"test (model of epoch {final['best_epoch']})" in out and 1 <= final["best_epoch"] <= 3
    for key in ("val_acc", "best_val_acc"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3]  # no stray step 0
    assert client.get_run(run.info.run_id).data.metrics["best_epoch"] == final["best_epoch"]


def test_non_finite_values_and_unsafe_names_are_refused():
    for bad in ("optim.lr=.inf", "optim.lr=nan", "optim.lam=-.inf"):
        with pytest.raises(ValueError, match="must be a finite number"):
            load_config(None, [bad])
    for name in ("../../etc", "a/b", ".hidden", "x..y"):
        with pytest.raises(ValueError, match="not a valid name"):
            load_config(None, [f"run.name={name}"])
    with pytest.raises(ValueError, match="temporal_views must be >= 1"):
        load_config(None, ["data.temporal_views=0"])  # sampling values: found here, not in a loader worker


def test_set_preset_on_a_saved_config_trains_that_preset(tmp_path):
    """A run's saved config.yaml lists every switch; --set model.preset=VS on it must give VS, not the saved
    preset (its explicit switches used to win); a switch given with --set still wins over the preset."""
    import yaml

    from vaanet.config import Config

    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(load_config(None, ["model.preset=VS+VCW+VT+AT"]).to_dict()))
    assert yaml.safe_load(saved.read_text())["model"]["audio"] is True
    vs = load_config(saved, ["model.preset=VS"]).model
    assert (vs.audio, vs.channel_attention, vs.temporal_attention, vs.spatial_attention) == (False, False, False, True)
    both = load_config(saved, ["model.preset=VS", "model.audio=true"]).model
    assert both.audio and not both.channel_attention
    assert load_config(saved).model == Config.from_dict(yaml.safe_load(saved.read_text())).model  # no --set: as saved


def test_integers_read_as_written_not_as_yaml_1_1_octal_or_base_60(tmp_path):
    """YAML 1.1 (PyYAML) reads 010 as octal 8 and 1:30 as 90: `--set run.seed=010` silently ran seed 8. In --set
    values and config files alike, 010 is 10, and 1:30 is refused for an integer key."""
    from vaanet.config import load_config, parse_overrides

    assert dict(parse_overrides(["run.seed=010", "a=0x1F", "b=-12", "c=1_000", "d=+7", "e=0"])) == {
        "run.seed": 10, "a": 31, "b": -12, "c": 1000, "d": 7, "e": 0}
    assert load_config(None, ["run.seed=010"]).run.seed == 10
    config = tmp_path / "c.yaml"
    config.write_text("run:\n  seed: 010\noptim:\n  epochs: 012\n")
    cfg = load_config(config)
    assert (cfg.run.seed, cfg.optim.epochs) == (10, 12)
    with pytest.raises(ValueError, match="run.seed must be an integer, got '1:30'"):
        load_config(None, ["run.seed=1:30"])


def test_flags_are_set_shorthands_and_conflicts_are_errors():
    assert flag_overrides(["optim.lr=0.1"], {"optim.epochs": ("--epochs", 3), "run.mlflow_uri": ("--mlflow-uri", None)}) \
        == ["optim.lr=0.1", "optim.epochs=3"]
    assert flag_overrides(["optim.epochs=3"], {"optim.epochs": ("--epochs", 3)}) == ["optim.epochs=3", "optim.epochs=3"]
    with pytest.raises(ValueError, match="--epochs 3 and --set optim.epochs=5 disagree"):
        flag_overrides(["optim.epochs=5"], {"optim.epochs": ("--epochs", 3)})


def test_non_finite_loss_stops_the_run_as_failed(synth_root, synth_cache, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from vaanet.losses import PCCELoss
    from vaanet.train.loop import NonFiniteLoss

    monkeypatch.setattr(PCCELoss, "forward", lambda self, logits, target: logits.sum() * float("nan"))
    cfg = tiny_config(synth_root, synth_cache, tmp_path)
    with pytest.raises(NonFiniteLoss, match="epoch 1, batch 1"):
        fit_local(cfg, tmp_path / "run")
    client = MlflowClient(cfg.run.mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FAILED"


STUDY_ERRORS = [
    (["--set", "model.preset=VSX"], "sets model.preset per row"),
    (["--set", "model.depth=7"], "depth must be one of"),
    (["--set", "optim.lr=nan"], "must be a finite number"),
    (["--set", "optim.lr=.inf"], "must be a finite number"),
    (["--set", "data.temporal_views=0"], "temporal_views must be >= 1"),
    (["--set", "run.name=../../etc"], "use (one per trial)"),
    (["--experiment", "../x"], "not a valid name"),
    (["--epochs", "3", "--set", "optim.epochs=5"], "disagree"),
    (["--dataset", "ve8"], "pass --data-root"),
    (["--seeds", "0,1,0"], "names a seed more than once"),
]


@pytest.mark.parametrize("extra,message", STUDY_ERRORS, ids=[" ".join(e) for e, _ in STUDY_ERRORS])
def test_study_request_errors_are_one_line_before_any_work(tmp_path, monkeypatch, capsys, extra, message):
    import runpy

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ablation.py", "--output", str(tmp_path / "runs"), *extra])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(REPO / "experiments" / "ablation.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error:") and err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()  # nothing generated or started


def test_lambda_sweep_keeps_what_set_asks_for(tmp_path, monkeypatch, capsys):
    """The sweep fixes model.preset for every trial: a preset switch given with --set would be set again by
    the preset in every trial (silently lost), so it is refused; --set model.preset replaces the preset in the
    grid's trials and in a search's trials alike."""
    import runpy

    from vaanet.tune.request import _check_sets
    from vaanet.tune.search import search_fixed

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lambda_sweep.py", "--output", str(tmp_path / "runs"), "--set", "model.audio=false"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(REPO / "experiments" / "lambda_sweep.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "fixes model.preset=VS+VCW+VT+AT, which sets model.audio" in err, err
    sweep = runpy.run_path(str(REPO / "experiments" / "lambda_sweep.py"))["study"]((0.5,))
    replaced = _check_sets(sweep, ["model.preset=VS+VCW+VT"])
    assert replaced == {"model.preset": "VS+VCW+VT"}
    fixed = search_fixed(sweep, replaced, Path("s/split_00.csv"), 3)
    assert fixed["model.preset"] == "VS+VCW+VT" and fixed["run.seed"] == 3 and fixed["optim.loss"] == "pcce"


def test_a_study_request_holds_precision_workers_device_and_a_searchs_split_and_seed(tmp_path, monkeypatch, capsys):
    """A finished study rerun with another run.bf16 / run.compile, DDP workers, device, or (a search) seed is a
    changed request, refused with the differing keys, not the stored table; a study.json from before these were
    stored takes the rerun's. A search with several seeds is refused before any work (it runs one)."""
    import runpy
    from types import SimpleNamespace

    from vaanet.config import load_config
    from vaanet.tune.request import CONFIGS, LATER_REQUEST_KEYS, _differences, _request

    sweep = runpy.run_path(str(REPO / "experiments" / "lambda_sweep.py"))["study"]((0.5,))
    base = load_config(CONFIGS["synth"])
    splits = [Path("s/split_00.csv"), Path("s/split_01.csv")]

    def request(base=base, **kw):
        args = SimpleNamespace(**{"dataset": "synth", "search": "optuna", "samples": 4, "workers_per_trial": 1,
                                  "gpus_per_trial": 0, "seeds": "0", **kw})
        return _request(sweep, args, base, [], splits)

    first = request()
    assert first["search_point"] == {"split": "s/split_00.csv", "seed": 0}
    for changed, key in ((request(seeds="1"), "search_point.seed"), (request(workers_per_trial=2), "trials.workers"),
                         (request(gpus_per_trial=0.5), "trials.gpu"),
                         (request(base=load_config(CONFIGS["synth"], ["run.bf16=false"])), "run.bf16"),
                         (request(base=load_config(CONFIGS["synth"], ["run.compile=true"])), "run.compile")):
        assert [d.split(":")[0] for d in _differences(first, changed)] == [key], _differences(first, changed)
    older = {k: v for k, v in first.items() if k not in LATER_REQUEST_KEYS}
    for key in LATER_REQUEST_KEYS:  # as run_study reads an older study.json
        older.setdefault(key, first[key])
    assert _differences(older, first) == []

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lambda_sweep.py", "--output", str(tmp_path / "runs"), "--search", "optuna",
                                      "--seeds", "0,1"])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(REPO / "experiments" / "lambda_sweep.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert e.value.code == 2 and "runs one seed" in err, err
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_study_request_error_from_the_shell_has_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "experiments" / "ablation.py"), "--set", "optim.lr=nan"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120,
                       env={**os.environ, "RAY_DISABLE_USAGE_STATS": "1"})
    assert r.returncode == 2 and r.stdout == "" and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


def test_system_metrics_when_asked(synth_root, synth_cache, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 2, "run.system_metrics": True})
    fit_local(cfg, tmp_path / "run")
    client = MlflowClient(cfg.run.mlflow_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics), sorted(run.data.metrics)


def test_study_refuses_a_truth_file_of_other_videos_before_ray(synth_root, synth_cache, tmp_path, monkeypatch,
                                                               capsys):
    """The study driver checks the ground truth against the cache before Ray starts (each trial checks it
    too, but only once it has started): one line naming the file, nothing started."""
    import runpy

    import ray

    videos = tmp_path / "videos"
    videos.mkdir()
    truth = pd.read_csv(synth_root / "synth_truth.csv", dtype={"video_id": str})
    truth["class_name"] = truth["class_name"].iloc[::-1].to_numpy()  # the same ids, other classes
    truth.to_csv(videos / "synth_truth.csv", index=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["ablation.py", "--output", str(tmp_path / "runs"), "--data-root", str(videos),
                                      "--cache", str(synth_cache)])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(REPO / "experiments" / "ablation.py"), run_name="__main__")
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1, err
    assert f"error: {videos / 'synth_truth.csv'} does not describe the videos of {synth_cache}" in err, err
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()


def test_a_resumed_study_accepts_its_store_at_another_address_only_if_it_holds_the_parent_run(tmp_path):
    """A SLURM job requeued onto another head node reaches the same store through a new server address:
    the study goes on when that store holds its parent run, and is refused otherwise (another store)."""
    from mlflow.tracking import MlflowClient

    from conftest import mlflow_store
    from vaanet.tune.request import _holds_parent

    uri = mlflow_store(tmp_path / "a" / "mlflow.db")
    client = MlflowClient(uri)
    parent = client.create_run(client.create_experiment("ablation-synth")).info.run_id
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "mlflow.db").symlink_to(tmp_path / "a" / "mlflow.db")  # the same store, another address
    other = mlflow_store(tmp_path / "c" / "mlflow.db")
    assert _holds_parent(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}", parent, "ablation-synth")
    assert not _holds_parent(other, parent, "ablation-synth")  # another store: refused as before
    assert not _holds_parent(uri, parent, "lambda_sweep-synth")  # the run of another study
    assert not _holds_parent(uri, None, "ablation-synth")
    assert not _holds_parent("http://127.0.0.1:9", parent, "ablation-synth")  # nothing answers there
