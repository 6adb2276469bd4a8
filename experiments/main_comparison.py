"""Tables 1 (VE-8) and 2 (Ekman-6): the full VAANet (VS+VCW+VT+AT, PCCE lambda 0.5) over the splits, to
set beside the literature baselines.

    python experiments/main_comparison.py --dataset ve8 --data-root /data/VideoEmotion8 --gpus-per-trial 1
    python experiments/main_comparison.py --dataset e6 --data-root /data/Ekman6 --gpus-per-trial 1
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.report import write_reports  # noqa: E402
from vaanet.tune import Study, main  # noqa: E402

MAIN = Study(
    name="main_comparison",
    tables={"ve8": "1", "e6": "2", "synth": "1"},
    grid=[{"model.preset": "VS+VCW+VT+AT"}],
    extra={"optim.loss": "pcce", "optim.lam": 0.5},
)

if __name__ == "__main__":
    main(MAIN, __doc__, report=write_reports)
