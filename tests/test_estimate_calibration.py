"""vaanet estimate --calibrate: the projection's arithmetic on a fixed timing, a real calibration of the tiny
configuration (steps, evaluation views, overhead), the command line (also at a 32-pixel crop), the FLOP-based
GPU time never printed as a bare 0.0, and the calibration benchmark at a tiny size."""
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import tiny_config
from vaanet.calibrate import Calibration, _eval_views, calibrate, calibrated_report, projection, run_seconds, schedule
from vaanet.estimate import DISTINCT, TABLE_RUNS, TRAIN_SHARE, VIDEOS, estimate, gpu_time, report

REPO = Path(__file__).resolve().parents[1]


def test_projection_arithmetic_on_a_fixed_timing():
    cal = Calibration("cpu", train_s=0.5, eval_s=0.1, videos={"train": 10, "val": 2, "test": 4}, concurrent=2,
                      train_s_shared=0.8, eval_s_shared=0.15, run_overhead_s=3.0, epoch_overhead_s=0.5)
    # 3 epochs of (10 x 0.5 + 2 x 0.1 + 0.5 epoch overhead) + test 4 x 0.1 + 3 s per run
    assert run_seconds(cal, 3, 10, 2, 4) == pytest.approx(3 * (5 + 0.2 + 0.5) + 0.4 + 3)  # 20.5 s alone
    assert run_seconds(cal, 3, 10, 2, 4, shared=True) == pytest.approx(3 * (8 + 0.3 + 0.5) + 0.6 + 3)  # 30 s shared
    assert projection(30.0, 5, 2, run_s_alone=20.5) == pytest.approx((2 * 30 + 20.5, (4 * 30 + 20.5) / 3600))
    assert projection(16.0, 5, 2, nodes=3) == pytest.approx((16.0, 5 * 16.0 / 3600))  # one wave of 6
    assert projection(16.0, 4, 2) == pytest.approx((32.0, 4 * 16.0 / 3600))
    assert schedule([10, 1, 1, 1, 5], 2) == 10 and schedule([3, 3, 3], 2) == 6 and schedule([2, 2], 1) == 4

    from vaanet.models.vaanet import ModelConfig

    text = calibrated_report(cal, ModelConfig(), epochs=2, concurrent=2, nodes=2, sustained_tflops=100)
    # Table 1: 10 VE-8 runs, each 2 epochs of 1101 x 2/3 training and 1101 x 1/3 held-out videos, 2 x 2 at once
    shared = 3 + 2 * (VIDEOS["ve8"] * TRAIN_SHARE["ve8"] * 0.8 + VIDEOS["ve8"] * (1 - TRAIN_SHARE["ve8"]) * 0.15 + 0.5)
    alone = 3 + 2 * (VIDEOS["ve8"] * TRAIN_SHARE["ve8"] * 0.5 + VIDEOS["ve8"] * (1 - TRAIN_SHARE["ve8"]) * 0.1 + 0.5)
    row = next(line for line in text.splitlines() if "Table 1" in line).split()
    assert row[-8] == "10" and row[-6] == row[-4] == "min"
    assert float(row[-7]) == pytest.approx(shared / 60, abs=0.05)
    assert float(row[-5]) == pytest.approx(2 * shared / 60 + alone / 60, abs=0.05)  # 2 full waves of 4, then 2 on 2 nodes
    assert float(row[-3]) == pytest.approx((8 * shared + 2 * alone) / 3600, rel=5e-3)  # device-hours, 3 digits
    assert "3.0 s per run, 0.50 s per epoch" in text and "with 2 runs at once: 0.8 s per training video" in text
    assert "this config, 1 run of its split" in text and len(text.splitlines()) == 4 + len(TABLE_RUNS) + 1
    assert sum(r for _, r in DISTINCT) == 77


def test_gpu_time_is_never_a_bare_zero():
    assert gpu_time(2.5) == "2.5 h" and gpu_time(0.5) == "30.0 min" and gpu_time(1e-3) == "3.6 s"
    assert gpu_time(1e-6) == "0.0036 s" and gpu_time(2000) == "2000 h"
    from vaanet.models.vaanet import ModelConfig

    small = ModelConfig(depth=10, width=0.125, segments=2, frames=4, crop_size=32, num_classes=8)
    table = report(small, epochs=3, gpu_gb=80, sustained_tflops=100, audio_frames=8).splitlines()
    rows = [line for line in table[table.index(next(x for x in table if x.startswith("GPU time"))) + 1:]]
    assert len(rows) == len(TABLE_RUNS) + 1
    for line in rows:
        value, unit = line.split()[-2:]
        assert unit in ("s", "min", "h") and float(value) > 0 and not re.fullmatch(r"0\.0+", value), line


def test_32_pixel_crops_are_estimated():
    """A 32-pixel crop leaves conv5 a 1x1 map: BatchNorm in training mode cannot take a batch of one there."""
    from vaanet.models.vaanet import ModelConfig

    cfg = ModelConfig(depth=10, width=0.125, segments=2, frames=4, crop_size=32, num_classes=8)
    e = estimate(cfg, audio_frames=8)
    assert 0 < e.activations_checkpointed < e.activations_plain
    assert estimate(replace(cfg, crop_size=64), audio_frames=8).activations_plain > e.activations_plain  # 4x pixels


def test_calibrate_times_real_steps_and_overhead_of_the_tiny_config(synth_root, synth_cache, tmp_path, monkeypatch):
    import importlib

    vaanet_model = importlib.import_module("vaanet.models.vaanet")  # the module (the package exports a function so named)
    # the clips each evaluation forward gets (how much work is timed; times themselves vary with the machine's load)
    eval_clips, build = [], vaanet_model.build_model

    def counting_build(model_cfg):
        model = build(model_cfg)
        model.register_forward_pre_hook(lambda m, args: None if m.training else eval_clips.append(len(args[0])))
        return model

    monkeypatch.setattr(vaanet_model, "build_model", counting_build)
    cfg = tiny_config(synth_root, synth_cache, tmp_path)
    cal = calibrate(cfg, steps=2, eval_batches=1)
    assert cal.device in ("cpu", "cuda") and cal.train_s > 0 and cal.eval_s > 0 and cal.steps == 2
    assert cal.run_overhead_s > 0 and cal.epoch_overhead_s >= 0 and cal.overhead.startswith("measured")
    from vaanet.train.loop import _loaders

    assert cal.videos == {k: len(v.dataset) for k, v in _loaders(cfg, 0, 1, False)[0].items()}
    missing = tiny_config(synth_root, synth_cache, tmp_path, **{"data.cache": tmp_path / "none"})
    eval_clips.clear()
    one = calibrate(missing, steps=1, eval_batches=3)  # random inputs of the config's shapes, no overhead runs
    assert one.videos is None and one.run_overhead_s == 0 and "not measured" in one.overhead
    one_clips = eval_clips.copy()
    views = tiny_config(synth_root, synth_cache, tmp_path, **{"data.cache": tmp_path / "none", "data.temporal_views": 3,
                                                             "data.spatial_views": 3})
    eval_clips.clear()
    nine = calibrate(views, steps=1, eval_batches=3)  # 9 evaluation views per held-out video: 9x the forward work
    assert nine.eval_s > 0 and _eval_views(views) == 9
    assert len(one_clips) == 1 + 3 and eval_clips == [9 * n for n in one_clips], (one_clips, eval_clips)


def test_estimate_calibrate_command(synth_root, synth_cache, tmp_path):
    # the tiny config's 32 px crop (a 1x1 conv5 map); no data, so the calibration times random inputs of its shapes
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(synth_root, synth_cache, tmp_path, **{"data.cache": tmp_path / "none"}).to_yaml())
    r = subprocess.run([sys.executable, "-m", "vaanet.cli", "estimate", "--config", str(config), "--calibrate",
                        "--steps", "1", "--eval-batches", "1", "--concurrent", "2"], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"calibrated on this machine \((cpu|cuda), \d+ core\(s\), 1 torch thread\(s\) per run\): "
                     r"\d+\.?\d* s per training video", r.stdout)
    assert re.search(r"with 2 runs at once: \d", r.stdout) and "not measured: the config's data" in r.stdout
    assert "2 run(s) at once on each of 1 node(s)" in r.stdout and "FLOP-based GPU" in r.stdout
    assert "Table 5" in r.stdout and "this config, 1 run" not in r.stdout


def test_calibration_benchmark_runs_at_a_tiny_size(synth_root, synth_cache, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(synth_root, synth_cache, tmp_path).to_yaml())
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "estimate_calibration.py"), "--config", str(config),
                        "--epochs", "1", "--steps", "1"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    row = r.stdout.splitlines()[-1].split()
    assert "projected s" in r.stdout and float(row[-3]) > 0 and float(row[-2]) > 0
    assert re.search(r"overhead \d+\.\d s per run", r.stdout)
    print(r.stdout)
