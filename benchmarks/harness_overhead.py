"""Harness overhead: wall time of N small trainings run directly (one after the other, in this process)
vs the same N as a study through Ray Tune + Ray Train with 1 and 2 concurrent trials. Printed: the
study's wall time, the overhead per trial ((wall - direct / concurrency) / N: the study's time beyond
perfectly parallel direct training, per trial, with its fixed costs (Ray start, MLflow parent run,
report) spread over the N trials) and the parallel efficiency (direct / (wall x concurrency)).

    python benchmarks/harness_overhead.py [--trials 4] [--epochs 2] [--concurrent 1,2]
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TINY = ["model.width=0.125", "model.segments=2", "model.frames=4", "model.crop_size=32", "data.audio_frames=8",
        "optim.batch_size=4", "model.attention_style=reference", "run.threads=1"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=4, help="number of trainings (= splits of a 1-row study)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--concurrent", default="1,2", help="the study's concurrent trials, one study per value")
    a = ap.parse_args()
    from vaanet.config import load_config
    from vaanet.data import PrepareConfig, SynthConfig, generate, make_splits, prepare
    from vaanet.train import fit_local

    work = Path(tempfile.mkdtemp(prefix="vaanet-overhead-"))
    root, cache = work / "videos", work / "cache"
    generate(root, SynthConfig(videos_per_class=3, duration=2.0, resolutions=((64, 48),)))
    index = prepare(root, cache, PrepareConfig(short_side=40, frames="raw"), log=lambda *_: None)
    splits = make_splits(index, cache / "splits", n=a.trials, val_fraction=0.34, log=lambda *_: None)

    start = time.perf_counter()
    for i, split in enumerate(splits):
        cfg = load_config(REPO / "configs" / "synth_quick.yaml",
                          TINY + [f"data.cache={cache}", f"data.split={split}", f"data.truth={root / 'synth_truth.csv'}",
                                  f"optim.epochs={a.epochs}", f"run.mlflow_uri=sqlite:///{work / 'direct.db'}"])
        fit_local(cfg, work / "direct" / str(i))
    direct = time.perf_counter() - start

    rows = []
    for concurrent in (int(c) for c in a.concurrent.split(",")):
        out = work / f"tune{concurrent}"
        args = [sys.executable, str(REPO / "experiments" / "main_comparison.py"), "--dataset", "synth", "--data-root",
                str(root), "--cache", str(cache), "--splits", str(a.trials), "--epochs", str(a.epochs),
                "--max-concurrent", str(concurrent), "--mlflow-uri", f"sqlite:///{work / f'tune{concurrent}.db'}",
                "--output", str(out)] + [x for s in TINY for x in ("--set", s)]
        start = time.perf_counter()
        done = subprocess.run(args, cwd=work, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"the study failed (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        rows.append((concurrent, time.perf_counter() - start))
    print(f"{a.trials} trainings of {a.epochs} epochs (tiny model); direct, sequential in one process: {direct:.1f} s "
          f"({direct / a.trials:.1f} s each)")
    print(f"{'concurrent':>10}{'wall s':>10}{'overhead s/trial':>18}{'efficiency':>12}")
    for c, wall in rows:
        print(f"{c:>10}{wall:>10.1f}{(wall - direct / c) / a.trials:>18.1f}{direct / (wall * c):>12.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
