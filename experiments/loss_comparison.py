"""Table 5: cross-entropy vs polarity-consistent cross-entropy (lambda 0.5) for the visual attentions
(VS+VCW+VT) and visual + audio attentions (VS+VCW+VT+AT), over the splits.

    python experiments/loss_comparison.py --dataset ve8 --data-root /data/VideoEmotion8 --gpus-per-trial 1
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.report import write_reports  # noqa: E402
from vaanet.tune import Study, main  # noqa: E402

LOSSES = Study(
    name="loss_comparison",
    tables={"ve8": "5", "e6": "5", "synth": "5"},
    grid=[{"model.preset": p, "optim.loss": loss} for p in ("VS+VCW+VT", "VS+VCW+VT+AT") for loss in ("ce", "pcce")],
    row_keys=("model.preset", "optim.loss"),
    extra={"optim.lam": 0.5},
)

if __name__ == "__main__":
    main(LOSSES, __doc__, report=write_reports)
