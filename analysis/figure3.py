"""``python -m analysis.figure3 --checkpoint CKPT VIDEO [VIDEO ...] --out fig.png``: the paper's Figure 3
(sampled frames with the spatial attention as a heat map and the temporal attention as a colour cell under each frame)
for several videos from one trained model. ``--format pdf|svg|png`` overrides the suffix of ``--out``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .figures import figure3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.figure3", description=__doc__)
    p.add_argument("videos", nargs="+")
    p.add_argument("--checkpoint", required=True, help="best_model.pt of a training run, or its folder")
    p.add_argument("--out", default="figure3.png")
    p.add_argument("--truth", default=None, help="synth_truth.csv: key segments and evidence boxes "
                   "(default: the run's data.truth when that file exists)")
    p.add_argument("--format", choices=("png", "pdf", "svg"), default=None, help="file format (default: from --out)")
    a = p.parse_args(argv)
    out = Path(a.out).with_suffix(f".{a.format}") if a.format else Path(a.out)
    try:
        print(figure3(a.checkpoint, a.videos, out, a.truth))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
