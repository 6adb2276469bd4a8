"""How close `vaanet estimate --calibrate` comes to measured wall times on this machine (issue 29).

Calibrates on a configuration (default: the demo's, configs/synth_quick.yaml, on the synthetic set as the demo
prepares it: give its folders with --data, default data/synth): training and evaluation seconds per video, alone
and with --concurrent runs at once, and the per-run and per-epoch overhead. Then:

1. projects one run of the config on its split and trains that very run for real (``vaanet.train.fit_local``,
   what ``vaanet train --no-ray`` runs: MLflow tracking, checkpoints, test) in a temporary folder;
2. with --study: projects the demo study (experiments/ablation.py: 5 rows x 3 splits, --concurrent trials at once
   on this machine's Ray) and runs it for real, with its own output folder and MLflow store in a temporary folder.
   The study's fixed cost (Ray start, its MLflow run, the reports) is calibrated once from a tiny study of the
   same script (--quick: 1 split, 1 epoch), measured first: what its projected trials do not explain.

Prints each projection beside the measured wall time and the error.

    python benchmarks/estimate_calibration.py [--config configs/synth_quick.yaml] [--data data/synth] [--epochs 2]
        [--steps 12] [--study] [--concurrent 2] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
STUDY_SPLITS = 3  # experiments/ablation.py on the synthetic set


def study_command(tmp: Path, name: str, data: Path, *extra: str) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / "ablation.py"), "--data-root", str(data / "videos"),
            "--cache", str(data / "cache"), "--output", str(tmp / "runs"), "--experiment", name,
            "--mlflow-uri", f"sqlite:///{tmp / 'study.db'}", *extra]


def timed(cmd: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as out:
        r = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed (exit {r.returncode}); its output: {log}\n{log.read_text()[-3000:]}")
    return time.perf_counter() - t0


def row(name: str, epochs: int, projected: float, measured: float) -> str:
    return f"{name:<44}{epochs:>7}{projected:>13.1f}{measured:>12.1f}{100 * (projected - measured) / measured:>+9.1f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "synth_quick.yaml"))
    p.add_argument("--data", default=None, help="the synthetic set's folder with videos/ and cache/ (default: the "
                   "config's data.cache parent); the demo generates it with `./run.sh demo` or `vaanet synth` + prepare")
    p.add_argument("--epochs", type=int, default=2, help="epochs of the measured single run (and of its projection)")
    p.add_argument("--steps", type=int, default=12, help="training steps the calibration times (after 2 warm-up)")
    p.add_argument("--concurrent", type=int, default=2, help="trials at once in the study (the demo: Ray's CPUs)")
    p.add_argument("--study", action="store_true", help="also project and run the demo study (minutes)")
    p.add_argument("--study-epochs", type=int, default=None, help="epochs of the study's trials (default: the config's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    a = p.parse_args()

    from experiments.ablation import ABLATION
    from vaanet.config import load_config
    from dataclasses import replace

    from vaanet.calibrate import calibrate, run_seconds, schedule
    from vaanet.train import fit_local

    keep = []
    if a.data:
        data = Path(a.data).resolve()
        keep = [f"data.cache={data / 'cache'}", f"data.split={data / 'cache' / 'splits' / 'split_00.csv'}",
                f"data.truth={data / 'videos' / 'synth_truth.csv'}"]
    with tempfile.TemporaryDirectory(prefix="vaanet-calibration-") as tmp_name:
        tmp = Path(tmp_name)
        cfg = load_config(a.config, [*keep, *a.set, f"optim.epochs={a.epochs}", f"run.output={tmp}", "run.name=measured",
                                     f"run.mlflow_uri=sqlite:///{tmp}/mlflow.db", "run.experiment=calibration"])
        data = Path(a.data).resolve() if a.data else Path(cfg.data.cache).resolve().parent
        t0 = time.perf_counter()
        cal = calibrate(cfg, steps=a.steps, concurrent=a.concurrent if a.study else 1)
        calibration_s = time.perf_counter() - t0
        if not cal.videos:
            sys.exit(f"error: {cfg.data.cache} or {cfg.data.split} is missing: prepare the data first (see {a.config}), "
                     "or give its folder with --data")
        v = cal.videos
        projected = run_seconds(cal, a.epochs, v["train"], v["val"], v["test"])
        from mlflow.tracking import MlflowClient

        MlflowClient(cfg.run.mlflow_uri).search_experiments()  # the store exists (as for a run of a study), its
        t0 = time.perf_counter()  # one-time schema migration is not timed: the calibrated overhead leaves it out too
        fit_local(cfg, tmp / "measured")
        measured = time.perf_counter() - t0
        rows = [row(f"{Path(a.config).stem}, 1 run, {Path(cfg.data.split).stem}", a.epochs, projected, measured)]
        if a.study:
            epochs = a.study_epochs or load_config(a.config).optim.epochs
            # the study's trials see each split's own sizes; the splits of the synthetic set are stratified alike
            # each row (attention preset) its own seconds per video, timed alone; sharing the cores slows it as
            # much as it slowed the config's own model (timed alone and at once)
            slow_train, slow_eval = cal.train_s_shared / cal.train_s, cal.eval_s_shared / cal.eval_s
            per_row = []
            for preset in (row["model.preset"] for row in ABLATION.grid):  # the rows, in the study's order
                alone = calibrate(load_config(a.config, [*keep, *a.set, f"model.preset={preset}"]), steps=a.steps,
                                  overhead=False)
                per_row.append(replace(cal, train_s=alone.train_s * slow_train, eval_s=alone.eval_s * slow_eval,
                                       concurrent=1))

            def trials(n_epochs: int, splits: int) -> float:  # rows x splits in the study's order, concurrently
                return schedule([run_seconds(c, n_epochs, v["train"], v["val"], v["test"]) for c in per_row
                                 for _ in range(splits)], a.concurrent)

            quick = trials(1, 1)
            quick_measured = timed(study_command(tmp, "quick", data, "--quick"), tmp / "quick.log")
            fixed = max(0.0, quick_measured - quick)
            n = len(ABLATION.grid) * STUDY_SPLITS
            study = fixed + trials(epochs, STUDY_SPLITS)
            study_measured = timed(study_command(tmp, "demo", data, "--epochs", str(epochs)), tmp / "demo.log")
            rows.append(row(f"ablation demo, {n} trials, {a.concurrent} at once", epochs, study, study_measured))
    print(f"calibration on {cal.device} in {calibration_s:.1f} s: {cal.train_s:.4f} s per training video (mean of "
          f"{cal.steps} steps, spread {100 * cal.spread:.0f} %), {cal.eval_s:.4f} s per held-out video; "
          f"overhead {cal.run_overhead_s:.1f} s per run + {cal.epoch_overhead_s:.2f} s per epoch; "
          f"split {v['train']}/{v['val']}/{v['test']} videos")
    if a.study:
        print(f"with {a.concurrent} runs at once: {cal.train_s_shared:.4f} s per training video, {cal.eval_s_shared:.4f} s "
              f"per held-out video; study fixed cost {fixed:.1f} s (a --quick study: {quick_measured:.1f} s measured, "
              f"{quick:.1f} s of it its trials, projected)")
    print(f"{'run':<44}{'epochs':>7}{'projected s':>13}{'measured s':>12}{'error %':>9}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
