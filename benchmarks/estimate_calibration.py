"""How close `vaanet estimate --calibrate` comes to a measured wall time on this machine (issue 29).

Calibrates on a configuration (default: the demo's, configs/synth_quick.yaml, on the synthetic set under
data/synth as the demo prepares it), projects one run of it on its split, then trains that very run for
real (``vaanet.train.fit_local``, what ``vaanet train --no-ray`` runs: MLflow tracking, checkpoints, test)
in a temporary folder and prints the projection beside the measured wall time and the error.

    python benchmarks/estimate_calibration.py [--config configs/synth_quick.yaml] [--epochs 2] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "synth_quick.yaml"))
    p.add_argument("--epochs", type=int, default=2, help="epochs of the measured run (and of the projection)")
    p.add_argument("--steps", type=int, default=3, help="training steps the calibration times")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    a = p.parse_args()

    from vaanet.config import load_config
    from vaanet.estimate import calibrate, projection, run_seconds
    from vaanet.train import fit_local

    with tempfile.TemporaryDirectory(prefix="vaanet-calibration-") as tmp:
        cfg = load_config(a.config, [*a.set, f"optim.epochs={a.epochs}", f"run.output={tmp}", "run.name=measured",
                                     f"run.mlflow_uri=sqlite:///{tmp}/mlflow.db", "run.experiment=calibration"])
        t0 = time.perf_counter()
        cal = calibrate(cfg, steps=a.steps)
        calibration_s = time.perf_counter() - t0
        if not cal.videos:
            sys.exit(f"error: {cfg.data.cache} or {cfg.data.split} is missing: prepare the data first (see {a.config})")
        v = cal.videos
        projected, _ = projection(run_seconds(cal, a.epochs, v["train"], v["val"], v["test"]), 1, 1)
        t0 = time.perf_counter()
        fit_local(cfg, Path(tmp) / "measured")
        measured = time.perf_counter() - t0
    print(f"calibration on {cal.device}: {a.steps} steps in {calibration_s:.1f} s: {cal.train_s:.4f} s per training "
          f"video, {cal.eval_s:.4f} s per held-out video; split {v['train']}/{v['val']}/{v['test']} videos")
    print(f"{'run':<40}{'epochs':>7}{'projected s':>13}{'measured s':>12}{'error %':>9}")
    print(f"{Path(a.config).stem + ', 1 run, ' + Path(cfg.data.split).stem:<40}{a.epochs:>7}{projected:>13.1f}"
          f"{measured:>12.1f}{100 * (projected - measured) / measured:>+9.1f}")


if __name__ == "__main__":
    main()
