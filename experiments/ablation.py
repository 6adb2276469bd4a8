"""Tables 3 (VE-8) and 4 (Ekman-6): which attentions matter. Presets AT, VS, VS+VCW, VS+VCW+VT and
VS+VCW+VT+AT, all trained with PCCE (lambda 0.5), over the splits.

With no arguments: the quick demo on the synthetic set (generated if missing), a small backbone, 3
splits, local Ray and MLflow (sqlite:///mlflow.db), ending with the table. The paper's protocol:

    python experiments/ablation.py --dataset ve8 --data-root /data/VideoEmotion8 --gpus-per-trial 1
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.report import write_reports  # noqa: E402
from vaanet.tune import Study, main  # noqa: E402

ABLATION = Study(
    name="ablation",
    tables={"ve8": "3", "e6": "4", "synth": "3"},
    grid=[{"model.preset": p} for p in ("AT", "VS", "VS+VCW", "VS+VCW+VT", "VS+VCW+VT+AT")],
    extra={"optim.loss": "pcce", "optim.lam": 0.5},
)

if __name__ == "__main__":
    main(ABLATION, __doc__, report=write_reports)
