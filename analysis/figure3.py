"""``python -m analysis.figure3 --checkpoint CKPT VIDEO [VIDEO ...] --out fig.png``: the paper's Figure 3
(sampled frames with the spatial attention as a heat map and the temporal attention as a colour cell under each frame)
for several videos from one trained model. ``--format pdf|svg|png`` overrides the suffix of ``--out``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .figures import figure3

DESCRIPTION = """\
Draw the paper's Figure 3 (Zhao et al., AAAI 2020): what a trained VAANet model looks at. One row per
video: the centre frame of each of its segments in grey, the spatial attention over the frame as a
coloured heat map (attention divided by uniform attention, on one fixed log scale from 1/4 to 4, the
same as in `vaanet predict`'s figure), and under each frame a cell with that segment's temporal
attention (the segments' weights sum to 1). Each row is headed by the predicted class, its probability
and the true class (from --truth, or the video's class folder); on synthetic videos the key segments and the evidence box are marked.
The model must have visual attention: an audio-only model (preset AT) has no frames to draw."""

EPILOG = """\
example, after the demo (./run.sh demo):
  python -m analysis.figure3 \\
      --checkpoint runs/ablation-synth/train/VS-VCW-VT-AT_split_00_seed0 \\
      data/synth/videos/Joy/joy_000.mp4 data/synth/videos/Fear/fear_000.mp4 --out figure3.pdf"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m analysis.figure3", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", nargs="+", metavar="VIDEO",
                   help="one or more video files (e.g. .mp4) to draw, one figure row each, in the order given")
    p.add_argument("--checkpoint", required=True,
                   help="the trained model: best_model.pt of a training run, or the run folder that holds it "
                   "(a study's trials are under <output>/<experiment>/train/)")
    p.add_argument("--out", default="figure3.png",
                   help="the figure file to write (default: figure3.png in the current folder; missing folders are "
                   "created); its suffix .png, .pdf or .svg picks the file format")
    p.add_argument("--truth", default=None, help="synth_truth.csv of the synthetic set: outline each video's key "
                   "segments and dash its evidence box (default: the training run's data.truth when that file "
                   "exists; real data sets have none)")
    p.add_argument("--format", choices=("png", "pdf", "svg"), default=None,
                   help="file format, replacing the suffix of --out (default: the suffix of --out)")
    return p


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    out = Path(a.out).with_suffix(f".{a.format}") if a.format else Path(a.out)
    try:
        print(figure3(a.checkpoint, a.videos, out, a.truth))
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
