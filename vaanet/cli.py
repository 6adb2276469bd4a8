"""``vaanet`` command line: synth, prepare, splits, train, predict, estimate."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .signals import exit_code, sigterm_as_ctrl_c

DESCRIPTION = """VAANet (AAAI 2020) emotion recognition from video and audio: make or prepare a data set, train one
configuration, predict a video, estimate a run's cost. The paper's studies (Tables 1-5, the lambda sweep) are
the scripts in experiments/ (python experiments/ablation.py --help)."""

TRAIN_HELP = """Train one configuration with Ray Train (DDP with --workers > 1), tracked in MLflow: one run with
its params, learning curves, test metrics and the selected weights. A run folder
(run.output/run.name) that already holds this configuration resumes from its checkpoint.

configs (--config):
{configs}

model presets (--set model.preset=NAME): {presets}
  V visual stream only, V+A both streams, no attention; AT audio stream with temporal attention;
  VS spatial, VCW channel-wise, VT temporal attention on the visual stream (VS+VCW+VT+AT: the full model).

example:
  vaanet train --config configs/synth_quick.yaml --set model.preset=VS+VCW+VT --set optim.epochs=3"""


def _synth(a):
    from .data.synth import SynthConfig, generate

    res = tuple(tuple(int(v) for v in r.split("x")) for r in a.resolutions.split(","))
    cfg = SynthConfig(dataset=a.dataset, videos_per_class=a.videos_per_class, duration=a.duration, fps=a.fps,
                      resolutions=res, segments=a.segments, key_segments=a.key_segments,
                      no_audio_fraction=a.no_audio_fraction, seed=a.seed)
    truth = generate(a.out, cfg, workers=a.workers)
    print(f"wrote {cfg.videos_per_class * (8 if a.dataset == 've8' else 6)} videos under {a.out}; truth in {truth}")


def _prepare(a):
    from .data.ingest import NothingPrepared, PrepareConfig, prepare

    cfg = PrepareConfig(dataset=a.dataset, short_side=a.short_side, fps=a.fps, drop_no_audio=a.drop_no_audio,
                        workers=a.workers or PrepareConfig().workers, frames=a.frames)
    try:
        prepare(a.root, a.out, cfg)
    except NothingPrepared as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: prepare stopped its workers and wrote the index of what is done
        print(f"interrupted: {a.out} is consistent; run the same command again to resume", file=sys.stderr)
        return exit_code()


def _splits(a):
    from .data.ingest import load_index
    from .data.splits import make_splits

    make_splits(load_index(a.cache), a.out or f"{a.cache}/splits", n=a.n, seed=a.seed, val_fraction=a.val_fraction,
                train_list=a.train_list, test_list=a.test_list)


def _train(a):
    from .config import flag_overrides, load_config

    cfg = load_config(a.config, flag_overrides(a.set, {"run.mlflow_uri": ("--mlflow-uri", a.mlflow_uri)}))
    if "mlflow.parentRunId" in cfg.run.tags:  # a study trial's config (saved before config.yaml left them out)
        from .train.tracking import STUDY_TAGS, without_study_tags

        dropped = ", ".join(sorted(k for k in cfg.run.tags if k in STUDY_TAGS))
        print(f"note: {a.config} is a study trial's config; its study tags ({dropped}) are dropped, so that this "
              "run is a run of its own and does not replace that trial in the study's tables", flush=True)
        cfg = without_study_tags(cfg)
    try:
        if a.no_ray:
            from .train import fit_local

            final = fit_local(cfg)
        else:
            from .train.ray_train import fit_with_ray

            result = fit_with_ray(cfg, workers=a.workers, gpus=a.gpus, address=a.address)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: the run wrote its last finished epoch and ended KILLED
        print("\ninterrupted: the run's last finished epoch is checkpointed; run the same command again to resume",
              file=sys.stderr)
        return exit_code()
    if not a.no_ray:
        if result.error:
            print(f"error: training failed: {result.error}", file=sys.stderr)
            return 1
        final = result.return_value if getattr(result, "return_value", None) else result.metrics  # local mode: returned
    print(f"test accuracy {final['test_acc']:.4f}  mean class accuracy {final['test_mean_class_acc']:.4f}  "
          f"polarity accuracy {final['test_polarity_acc']:.4f}")


def _predict(a):
    from .predict import checkpoint_of_run, format_result, predict_video

    figure = a.figure or f"{Path(a.video).stem}_attention.png"
    checkpoint = a.checkpoint or checkpoint_of_run(a.run, a.mlflow_uri)
    print(format_result(predict_video(a.video, checkpoint, figure, truth=a.truth)))


def _estimate(a):
    from .config import load_config
    from .estimate import cache_disk_report, checkpoint_report, report

    cfg = load_config(a.config, a.set)
    epochs = a.epochs or cfg.optim.epochs
    print(report(cfg.model, epochs, a.gpu_memory, a.tflops, cfg.data.audio_frames))
    print(checkpoint_report(cfg.model, epochs, cfg.run.checkpoint_every, a.tflops, a.write_gbps))
    print(cache_disk_report())
    if a.calibrate:
        _calibrate(a, cfg, epochs)


# ---- vaanet verify and estimate --calibrate (issue 29) ----
def _verify(a):
    from .verify import Refused, verify
    from .verify_study import verify_study

    try:
        result = verify_study(a.run, a.mlflow_uri, a.trial, a.epochs, a.scratch, a.tolerance)
        if result is None:  # not a study: one run
            if a.trial:
                raise Refused(f"--trial {a.trial}: {a.run} is a run, not a study (a study folder with study.json, or "
                              "a study's parent run id); drop --trial")
            result = verify(a.run, a.mlflow_uri, a.epochs, a.scratch, a.tolerance)
    except Refused as e:
        print(f"refused: {e}", file=sys.stderr)
        return 1
    print(result.table())
    print("reproduced: every compared metric within the required difference" if result.ok else
          f"NOT reproduced: {', '.join(result.failed)}")
    return 0 if result.ok else 1


def _add_verify(sub) -> None:
    from .verify import DEFAULT_TOLERANCE

    s = sub.add_parser("verify", help="retrain a run (or one trial per row of a study) from its record and compare "
                       "every metric it logged")
    s.add_argument("run", help="an MLflow run id or a run folder; or a study: its folder (<output>/<experiment>, with "
                   "study.json) or its parent run's MLflow id, to verify one trial per row")
    s.add_argument("--trial", default=None, help="for a study: verify in each row the trial whose name ends with this "
                   "(e.g. split_01_seed0; default: each row's first split and seed)")
    s.add_argument("--mlflow-uri", default=None, help="tracking URI of the run id (default: sqlite:///mlflow.db here)")
    s.add_argument("--epochs", type=int, default=None, help="verify the first N epochs only (cheap)")
    s.add_argument("--scratch", default=None, help="folder to retrain in (default: a temporary one, removed after)")
    s.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help=f"allowed difference, relative (absolute below 1), where the run is not deterministic on its "
                        f"device (a GPU; default {DEFAULT_TOLERANCE:g}); on a CPU the metrics must be identical")
    s.set_defaults(func=_verify)


def _calibrate(a, cfg, epochs) -> None:
    from .calibrate import calibrate, calibrated_report

    cal = calibrate(cfg, steps=a.steps, eval_batches=a.eval_batches, concurrent=a.concurrent,
                    overhead=not a.no_overhead)
    print(calibrated_report(cal, cfg.model, epochs, a.concurrent, a.nodes, a.tflops, cfg.data.audio_frames))


def _add_calibrate(s) -> None:
    s.add_argument("--calibrate", action="store_true", help="time real training and evaluation steps of the config "
                   "on this machine (GPU when present, else CPU), alone and --concurrent at once, and its per-run and "
                   "per-epoch overhead (when its data exist), and project each study's wall time and device-hours")
    s.add_argument("--steps", type=int, default=12, help="training steps timed by --calibrate (after 2 warm-up steps; "
                   "the median counts)")
    s.add_argument("--eval-batches", type=int, default=4, help="evaluation batches timed by --calibrate (after one)")
    s.add_argument("--no-overhead", action="store_true", help="--calibrate without the runs that measure the per-run "
                   "and per-epoch overhead")
    s.add_argument("--concurrent", type=int, default=1, help="runs at once per node, for --calibrate's wall time "
                   "(timed at once: on a CPU they share its cores)")
    s.add_argument("--nodes", type=int, default=1, help="nodes, for --calibrate's wall time")
# ---- end vaanet verify / estimate --calibrate ----


def _configs() -> str:
    """Each YAML of the repository's configs/ with the first line of its header comment."""
    folder = Path(__file__).resolve().parents[1] / "configs"
    lines = []
    for path in sorted(folder.glob("*.yaml")):
        first = next((line.lstrip("# ").strip() for line in path.read_text().splitlines() if line.startswith("#")), "")
        first = first.split(":")[0].rstrip(".")  # what it is; the rest of the header says how
        lines.append(f"  configs/{path.name:16} {first}")
    return "\n".join(lines) or "  (none found)"


def _presets() -> list[str]:
    from .models.vaanet import PRESETS

    return list(PRESETS)


def build_parser() -> argparse.ArgumentParser:
    from .data.frames import FORMATS as FRAME_FORMATS
    from .data.synth import SynthConfig

    p = argparse.ArgumentParser(prog="vaanet", description=DESCRIPTION)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write the synthetic emotion-video set (real mp4 files with ground truth)")
    s.add_argument("--out", default="data/synth/videos", help="data-set root to write <Class>/<id>.mp4 into")
    s.add_argument("--dataset", choices=["ve8", "e6"], default="ve8", help="class list and layout")
    d = SynthConfig()
    s.add_argument("--videos-per-class", type=int, default=d.videos_per_class)
    s.add_argument("--duration", type=float, default=d.duration, help="mean duration in seconds")
    s.add_argument("--fps", type=int, default=d.fps)
    s.add_argument("--resolutions", default=",".join(f"{w}x{h}" for w, h in d.resolutions),
                   help="WxH list, one drawn per video")
    s.add_argument("--segments", type=int, default=d.segments, help="equal segments per video")
    s.add_argument("--key-segments", type=int, default=d.key_segments, help="segments that carry the class evidence")
    s.add_argument("--no-audio-fraction", type=float, default=d.no_audio_fraction)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--workers", type=int, default=None)
    s.set_defaults(func=_synth)

    s = sub.add_parser("prepare", help="decode videos once into frame/MFCC caches and an index")
    s.add_argument("--root", required=True, help="data-set root: <root>/<Class>/<video files>")
    s.add_argument("--out", required=True, help="cache folder (index.csv, failures.csv, videos/)")
    s.add_argument("--dataset", choices=["ve8", "e6"], default="ve8")
    s.add_argument("--short-side", type=int, default=128, help="resize frames to this short side (>= crop)")
    s.add_argument("--fps", type=float, default=None, help="frame rate to store (default: native)")
    s.add_argument("--drop-no-audio", action="store_true", help="leave out videos without an audio track")
    s.add_argument("--workers", type=int, default=None, help="parallel processes (default: all cores)")
    s.add_argument("--frames", choices=FRAME_FORMATS, default="jpeg",
                   help="frame storage: jpeg (packed JPEG quality 90, ~1/9 of raw's disk; default) or raw (uint8 .npy); "
                        "see docs/performance.md")
    s.set_defaults(func=_prepare)

    s = sub.add_parser("splits", help="write train/val/test split files")
    s.add_argument("--cache", required=True, help="prepared cache folder (holds index.csv)")
    s.add_argument("--out", default=None, help="folder for the split files (default <cache>/splits)")
    s.add_argument("-n", type=int, default=10, help="number of random stratified splits (VE-8 protocol)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--val-fraction", type=float, default=0.1, help="share of train held out for model selection")
    s.add_argument("--train-list", default=None, help="official train list (Ekman-6); with --test-list")
    s.add_argument("--test-list", default=None, help="official test list (Ekman-6)")
    s.set_defaults(func=_splits)

    s = sub.add_parser("train", help="train one configuration (Ray Train), tracked in MLflow",
                       description=TRAIN_HELP.format(configs=_configs(), presets=", ".join(_presets())),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("--config", required=True, help="YAML config: one of configs/ (listed above) or your own")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=1e-4 --set model.preset=VS (repeatable)")
    s.add_argument("--workers", type=int, default=1, help="Ray Train workers (DDP when > 1)")
    s.add_argument("--gpus", type=int, default=0, help="GPUs in total (shared among the workers)")
    s.add_argument("--address", default=None, help="the Ray cluster to run on (default: RAY_ADDRESS; without "
                   "either, a new local Ray of this command's own, never one already running on the machine)")
    s.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db here); "
                   "the same as --set run.mlflow_uri=URI")
    s.add_argument("--no-ray", action="store_true", help="run the same loop in this process (debugging)")
    s.set_defaults(func=_train)

    s = sub.add_parser("predict", help="emotion distribution, polarity and attention figure of one video")
    s.add_argument("video", help="a video file")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="best_model.pt of a training run, its run folder or a checkpoint folder")
    which.add_argument("--run", help="an MLflow run id: its logged model, or the file its 'checkpoint' tag names")
    s.add_argument("--mlflow-uri", default=None, help="tracking URI of --run (default: sqlite:///mlflow.db here)")
    s.add_argument("--figure", default=None, help="where to write the attention figure (PNG)")
    s.add_argument("--truth", default=None, help="synth_truth.csv of synthetic videos: draw the video's key segments "
                   "(outlined, marked 'key') and evidence box (dashed) in the figure")
    s.set_defaults(func=_predict)

    s = sub.add_parser("estimate", help="FLOPs, memory, micro-batch, GPU-hours, checkpoint and cache bytes of a config")
    s.add_argument("--config", required=True, help="YAML config (see configs/)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    s.add_argument("--gpu-memory", type=float, default=80.0, help="GPU memory in GB (default 80)")
    s.add_argument("--tflops", type=float, default=100.0,
                   help="sustained training throughput in TFLOP/s assumed for the GPU-hours (default 100)")
    s.add_argument("--epochs", type=int, default=None, help="epochs per run (default: the config's)")
    s.add_argument("--write-gbps", type=float, default=1.0,
                   help="checkpoint write bandwidth of the run storage in GB/s assumed for checkpoint time (default 1)")
    s.set_defaults(func=_estimate)
    _add_verify(sub)
    _add_calibrate(sub.choices["estimate"])
    return p


def main(argv=None) -> int:
    sigterm_as_ctrl_c()  # SIGTERM (scancel, docker stop, ...) stops train and prepare as Ctrl-C does, exit 143
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError) as e:  # CheckpointError is a ValueError
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
