"""``python -m analysis.figure3 --checkpoint CKPT VIDEO [VIDEO ...] --out fig.png``: the paper's Figure 3
(sampled frames with the spatial attention as a heat map and the temporal attention as a colour bar)
for several videos from one trained model."""
from __future__ import annotations

import argparse
import sys

from .figures import figure3


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.figure3", description=__doc__)
    p.add_argument("videos", nargs="+")
    p.add_argument("--checkpoint", required=True, help="best_model.pt of a training run, or its folder")
    p.add_argument("--out", default="figure3.png")
    a = p.parse_args(argv)
    try:
        print(figure3(a.checkpoint, a.videos, a.out))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
