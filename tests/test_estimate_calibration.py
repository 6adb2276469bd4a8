"""vaanet estimate --calibrate: the projection's arithmetic on a fixed timing, a real calibration of the tiny
configuration, the command line, and the calibration benchmark at a tiny size."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import tiny_config
from vaanet.estimate import (DISTINCT, TABLE_RUNS, TRAIN_SHARE, VIDEOS, Calibration, calibrate, calibrated_report,
                             projection, run_seconds)

REPO = Path(__file__).resolve().parents[1]


def test_projection_arithmetic_on_a_fixed_timing():
    cal = Calibration("cpu", train_s=0.5, eval_s=0.1, videos={"train": 10, "val": 2, "test": 4})
    assert run_seconds(cal, 3, 10, 2, 4) == pytest.approx(3 * (10 * 0.5 + 2 * 0.1) + 4 * 0.1)  # 16 s
    assert projection(16.0, 5, 2) == pytest.approx((3 * 16.0, 5 * 16.0 / 3600))  # 3 waves of 2
    assert projection(16.0, 5, 2, nodes=3) == pytest.approx((16.0, 5 * 16.0 / 3600))  # one wave of 6
    from vaanet.models.vaanet import ModelConfig

    report = calibrated_report(cal, ModelConfig(), epochs=2, concurrent=4, nodes=2, sustained_tflops=100)
    # Table 1: 10 VE-8 runs, each 2 epochs of 1101 x 2/3 training and 1101 x 1/3 held-out videos
    per_run = 2 * (VIDEOS["ve8"] * TRAIN_SHARE["ve8"] * 0.5 + VIDEOS["ve8"] * (1 - TRAIN_SHARE["ve8"]) * 0.1)
    row = next(line for line in report.splitlines() if "Table 1" in line).split()
    assert row[-7] == "10" and row[-5] == row[-3] == "min"
    assert float(row[-6]) == pytest.approx(per_run / 60, abs=0.05)
    assert float(row[-4]) == pytest.approx(2 * per_run / 60, abs=0.05)  # 10 runs in waves of 4 x 2 nodes: 2 waves
    assert float(row[-2]) == pytest.approx(10 * per_run / 3600, abs=0.05)  # device-hours
    assert "this config, 1 run of its split" in report and len(report.splitlines()) == 3 + len(TABLE_RUNS) + 1
    assert sum(r for _, r in DISTINCT) == 77


def test_calibrate_times_real_steps_of_the_tiny_config(synth_root, synth_cache, tmp_path):
    cfg = tiny_config(synth_root, synth_cache, tmp_path)
    cal = calibrate(cfg, steps=1, eval_batches=1)
    assert cal.device in ("cpu", "cuda") and cal.train_s > cal.eval_s > 0
    from vaanet.train.loop import _loaders

    assert cal.videos == {k: len(v.dataset) for k, v in _loaders(cfg, 0, 1, False)[0].items()}
    missing = tiny_config(synth_root, synth_cache, tmp_path, **{"data.cache": tmp_path / "none"})
    assert calibrate(missing, steps=1, eval_batches=1).videos is None  # random inputs of the config's shapes


def test_estimate_calibrate_command(synth_root, synth_cache, tmp_path):
    # 64 px crops (the FLOP report's batch-of-1 pass needs more than a 1x1 map), larger than the tiny set's frames:
    # no data, so the calibration times random inputs of the config's shapes
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(synth_root, synth_cache, tmp_path, **{"model.crop_size": 64,
                                                                       "data.cache": tmp_path / "none"}).to_yaml())
    r = subprocess.run([sys.executable, "-m", "vaanet.cli", "estimate", "--config", str(config), "--calibrate",
                        "--steps", "1", "--concurrent", "2"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert re.search(r"calibrated on this machine \((cpu|cuda)\): \d+\.\d+ s per training video", r.stdout)
    assert "2 run(s) at once on each of 1 node(s)" in r.stdout and "FLOP-based GPU-h" in r.stdout
    assert "Table 5" in r.stdout and "this config, 1 run" not in r.stdout


def test_calibration_benchmark_runs_at_a_tiny_size(synth_root, synth_cache, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_config(synth_root, synth_cache, tmp_path).to_yaml())
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "estimate_calibration.py"), "--config", str(config),
                        "--epochs", "1", "--steps", "1"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    row = r.stdout.splitlines()[-1].split()
    assert "projected s" in r.stdout and float(row[-3]) > 0 and float(row[-2]) > 0
    print(r.stdout)
