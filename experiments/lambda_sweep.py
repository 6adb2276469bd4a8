"""The PCCE penalty lambda: the full model (VS+VCW+VT+AT) over a grid of lambda (0 = cross-entropy),
over the splits. With ``--search optuna``: Optuna's TPE (Ray Tune's OptunaSearch) with ASHA early
stopping over lambda and the learning rate, selecting on validation accuracy only.

    python experiments/lambda_sweep.py --dataset ve8 --data-root /data/VideoEmotion8 --gpus-per-trial 1
    python experiments/lambda_sweep.py --search optuna --samples 20
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.report import write_reports  # noqa: E402
from vaanet.tune import Study, main, study_parser  # noqa: E402

LAMBDAS = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0)


def study(lambdas) -> Study:
    return Study(
        name="lambda_sweep",
        tables={"ve8": "lambda", "e6": "lambda", "synth": "lambda"},
        grid=[{"optim.lam": lam} for lam in lambdas],
        row_keys=("optim.lam",),
        extra={"model.preset": "VS+VCW+VT+AT", "optim.loss": "pcce"},
    )


if __name__ == "__main__":
    parser = study_parser(__doc__)
    parser.add_argument("--lambdas", default=",".join(str(v) for v in LAMBDAS), help="grid of lambda values")
    parser.add_argument("--search", choices=["grid", "optuna"], default="grid", help="grid (default) or optuna TPE + ASHA")
    parser.add_argument("--samples", type=int, default=12, help="trials of the optuna search")
    args, _ = parser.parse_known_args()
    main(study([float(v) for v in args.lambdas.split(",")]), __doc__, parser, report=write_reports)
