"""Every benchmark script runs, at a tiny size, so that none rots (issue 28): each prints its table's header and
at least one row of numbers. The figures themselves are measured by running the scripts (docs/performance.md)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NUMBER_ROW = re.compile(r"^\S.*\s\d+\.\d+(\s|$)", re.M)


def _bench(script: str, *args: str, cwd=None, timeout: int = 600) -> str:
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                       timeout=timeout, cwd=cwd)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert NUMBER_ROW.search(r.stdout), r.stdout
    return r.stdout


def test_data_throughput_runs_at_a_tiny_size(tmp_path):
    out = _bench("data_throughput.py", "--videos-per-class", "1", "--duration", "2", "--fps", "8", "--workers", "0",
                 "--repeats", "1", "--work", str(tmp_path))
    for row in ("raw (npy, memory-mapped)", "jpeg q90 (packed, decode_jpeg)", "jpeg q75 (packed, decode_jpeg)",
                "reference (JPEG files + PIL)"):
        assert row in out


@pytest.mark.parametrize("script, args", [
    ("train_throughput.py", ["--batch", "1", "--steps", "1", "--width", "0.125", "--presets", "VS"]),
    ("memory_speed.py", ["--batch", "1", "--steps", "1", "--depth", "10", "--width", "0.125", "--no-compile"]),
])
def test_model_benchmarks_run_at_a_tiny_size(script, args):
    _bench(script, *args)


def test_demo_epoch_runs_on_a_small_set(tmp_path):
    from vaanet.data import PrepareConfig, SynthConfig, generate, make_splits, prepare

    root, cache = tmp_path / "videos", tmp_path / "cache"
    generate(root, SynthConfig(videos_per_class=3, duration=1.0, resolutions=((64, 48),)), workers=1)
    index = prepare(root, cache, PrepareConfig(short_side=56, workers=1), log=lambda *_: None)
    make_splits(index, cache / "splits", n=1, val_fraction=0.34, log=lambda *_: None)
    out = _bench("demo_epoch.py", "--presets", "VS", "--cache", str(cache))
    assert "+ audio_width 0.25 (the demo)" in out


def test_harness_overhead_runs_at_a_tiny_size():
    """Two 1-epoch trainings directly, then as a study through Ray Tune (2 at once: one study is enough here)."""
    out = _bench("harness_overhead.py", "--trials", "2", "--epochs", "1", "--concurrent", "2")
    table = out.split("overhead s/trial", 1)[1].splitlines()[1:]
    assert [line.split()[0] for line in table if line.strip()] == ["2"]  # one study, at 2 at once
