"""What a study is, and how it runs.

A :class:`Study` is a name, the paper tables it fills, and a grid of configuration overrides (e.g.
``{"model.preset": "VS"}``). :func:`run_study` crosses the grid with the splits and seeds, and runs each
point as one Ray Tune trial (:mod:`vaanet.tune.trial`: Ray Train's local mode in the trial's own process
for one worker, a ``TorchTrainer`` with ``TuneReportCallback`` for DDP). Every trial is one MLflow run in
the study's experiment, tagged with study, table and grid point.

Before anything is prepared or started, the driver checks the whole request (the config of every grid
point, flags against ``--set``, keys the study owns) and compares it with the study's own plain-JSON
state ``<output>/<experiment>/study.json``: a finished study prints its table without training, a changed
request is refused with the differing keys, an unfinished one continues only with ``--resume``. A trial is
done when its run folder holds ``final_metrics.json``; unfinished trials rerun in a fresh Tune run and
each resumes from its own checkpoint (Ray Train restores a run folder). Only the Optuna search restores
Tune's own state (``Tuner.restore``, its searcher), and only from a folder no other user can write.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import PRESET_SWITCHES, Config, check_name, flag_overrides, load_config, parse_overrides, with_overrides
from ..train.loop import RESUME_RUN_KEYS
from ..train.ray_cluster import init_ray
from ..train.ray_train import make_trainer, resolve_paths
from ..train.tracking import (check_reachable, complete_finished_run, ensure_experiment, git_commit,
                              record_environment, replay_pending, run_id_of)
from ..faults import hold
from ..signals import exit_code, graceful_stop, sigterm_as_ctrl_c, terminated
from .progress import StudyProgress
from .trial import ERROR_FILE, STOP_FILE, first_line, trainable

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {"synth": REPO / "configs" / "synth_quick.yaml", "ve8": REPO / "configs" / "ve8.yaml",
           "e6": REPO / "configs" / "e6.yaml"}


@dataclass
class Study:
    name: str  # e.g. "ablation"
    tables: dict[str, str]  # dataset -> paper table, e.g. {"ve8": "3", "e6": "4"}
    grid: list[dict[str, Any]]  # configuration overrides, one dict per row of the table
    row_keys: tuple[str, ...] = ("model.preset",)  # overrides that name a row
    extra: dict[str, Any] = field(default_factory=dict)  # overrides applied to every trial

    def row_name(self, row: dict[str, Any]) -> str:
        """The name of a grid row (its tag ``row``), e.g. "VS+VCW"."""
        return "_".join(str(row[k]) for k in self.row_keys if k in row) or "run"


def study_parser(description: str, default_epochs: int | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["synth", "ve8", "e6"], default="synth",
                   help="synth (default; generated if missing), ve8 (10 random splits) or e6 (official split)")
    p.add_argument("--data-root", default=None, help="video folder <root>/<Class>/<file> (prepared once into --cache)")
    p.add_argument("--cache", default=None, help="prepared cache folder (default data/<dataset>/cache); on a "
                   "cluster, a path on storage every node reads")
    p.add_argument("--splits", type=int, default=None, help="number of splits to run (default: synth 3, ve8 10, e6 1)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds; each split runs once per seed")
    p.add_argument("--epochs", type=int, default=default_epochs,
                   help="epochs per trial (default: the dataset config's); the same as --set optim.epochs=N")
    p.add_argument("--workers-per-trial", type=int, default=1, help="Ray Train workers per trial (DDP when > 1)")
    p.add_argument("--gpus-per-trial", type=float, default=0, help="GPUs per trial (shared by its workers)")
    p.add_argument("--cpus-per-worker", type=float, default=1, help="CPUs per Ray Train worker")
    p.add_argument("--max-concurrent", type=int, default=0, help="trials at once (default: what the cluster fits)")
    p.add_argument("--max-failures", type=int, default=2,
                   help="how often a failed trial is restarted from its last checkpoint before it counts as "
                   "failed (default 2; 0: never). Errors a retry cannot fix (bad config, missing or corrupt file, "
                   "non-finite loss) fail at once")
    p.add_argument("--address", default=None, help="the Ray cluster to run on (default: RAY_ADDRESS; without "
                   "either, a new local Ray of this command's own, never one already running on the machine)")
    p.add_argument("--ray-dashboard", action="store_true", help="start the Ray dashboard with a local Ray (off by "
                   "default: it adds ~5 s to a study's start; a cluster started by ray_cluster.yaml has its own)")
    p.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: sqlite:///mlflow.db here); "
                   "the same as --set run.mlflow_uri=URI. Trials, the closing report and reruns all use it")
    p.add_argument("--experiment", default=None, help="MLflow experiment and study folder name (default: "
                   "<study>-<dataset>); the same as --set run.experiment=NAME")
    p.add_argument("--output", default="runs", help="study folder root: <output>/<experiment>/{train,tune,reports}; "
                   "must be trusted storage (only you can write it)")
    p.add_argument("--resume", action="store_true", help="resume an interrupted study (finished trials are kept)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 1 split, 1 epoch")
    p.add_argument("--verbose", action="store_true", help="also show the workers' output and Ray's messages (by "
                   "default they go to each run's train.log and Ray's session logs; the console shows epochs and progress)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (repeatable), applied over the dataset's YAML; may replace a study-wide "
                   "default (announced), never a key the grid or the study sets per trial (an error)")
    return p


# ---- data, prepared once before any trial ------------------------------------------------------------
def demo_synth_config():
    from ..data.synth import SynthConfig

    return SynthConfig()  # the defaults are the demo's set


def ensure_data(args, n_splits: int) -> tuple[Path, list[Path], Path | None]:
    """Prepare the data set once (cache + split files); returns cache, split files, truth file."""
    from ..data.ingest import PrepareConfig, load_index, prepare
    from ..data.splits import make_splits

    dataset = args.dataset
    cache = Path(args.cache or f"data/{dataset}/cache").resolve()
    truth = None
    if dataset == "synth":
        root = Path(args.data_root or "data/synth/videos").resolve()
        if args.data_root is None and args.cache is None and _stale_synth(root):
            import shutil

            print(f"the synthetic set under {root.parent} was generated with other settings than this vaanet's "
                  "(synth_config.txt); generating it again", flush=True)
            shutil.rmtree(root)
            shutil.rmtree(cache, ignore_errors=True)
        if not (root / "synth_truth.csv").exists():
            from ..data.synth import generate

            print(f"generating the synthetic set under {root} ...", flush=True)
            generate(root, demo_synth_config())
        truth = root / "synth_truth.csv"
    else:
        root = Path(args.data_root).resolve() if args.data_root else None
    if not (cache / "index.csv").exists():
        if root is None:
            raise FileNotFoundError(f"{cache}/index.csv not found; pass --data-root <videos> to prepare it once "
                                    "(or --cache <prepared cache>)")
        print(f"preparing {root} into {cache} ...", flush=True)
        prepare(root, cache, PrepareConfig(dataset="e6" if dataset == "e6" else "ve8",
                                           short_side=56 if dataset == "synth" else 128))
    if truth is not None:  # here, not only in each trial: a wrong truth file is refused before Ray starts
        from ..train.metrics import check_truth

        check_truth(pd.read_csv(truth, dtype={"video_id": str}), load_index(cache), truth, cache)
    split_dir = cache / "splits"
    if dataset == "e6":
        official = split_dir / "official.csv"
        if not official.exists():
            if root is None:
                raise FileNotFoundError(f"{official} not found; pass --data-root with trainlist.txt/testlist.txt")
            make_splits(load_index(cache), split_dir, train_list=root / "trainlist.txt", test_list=root / "testlist.txt")
        return cache, [official], truth
    files = sorted(split_dir.glob("split_*.csv"))
    if len(files) < n_splits:
        make_splits(load_index(cache), split_dir, n=max(n_splits, 10 if dataset == "ve8" else n_splits), seed=0,
                    val_fraction=0.2 if dataset == "synth" else 0.1)
        files = sorted(split_dir.glob("split_*.csv"))
    return cache, files[:n_splits], truth


def _stale_synth(root: Path) -> bool:
    """The demo's synthetic set was made with other settings than this version's defaults (its results would
    not be this version's demo). A set made before an option existed is not stale for that option alone."""
    from dataclasses import asdict

    from ..data.synth import SETTINGS_FILE, canonical_settings

    made = root / SETTINGS_FILE
    return made.is_file() and canonical_settings(made.read_text()) != repr(asdict(demo_synth_config())) + "\n"


def data_digest(cache: Path, split_files: list[Path], truth: Path | None, canonical: bool = True) -> str:
    """What the trials read, in one hash: the cache's index, the split files and (synthetic set) how it was
    generated and its ground truth. A study rerun on other data is a changed request, never the old table.
    The settings file is hashed as :func:`~vaanet.data.synth.canonical_settings` reads it (a set made before an
    option existed is the same data); ``canonical=False`` hashes its bytes, as vaanet did before."""
    import hashlib

    from ..data.synth import SETTINGS_FILE, canonical_settings

    h = hashlib.sha256()
    files = [cache / "index.csv", *split_files]
    if truth is not None:
        files += [truth, truth.parent / SETTINGS_FILE]
    for f in files:
        if f.is_file():
            data = f.read_bytes()
            if canonical and f.name == SETTINGS_FILE:
                data = canonical_settings(data.decode("utf-8", "replace")).encode()
            h.update(f.name.encode() + data)
    return h.hexdigest()[:16]


def stored_digest(stored: dict, cache: Path, split_files: list[Path], truth: Path | None, digest: str) -> str:
    """The data digest of a stored study request, as this version computes it: a study.json from before the
    digest has none (it is taken as ``digest``), and one from before the settings file was read canonically
    holds its bytes' hash, which stands for the same data when they still hash so."""
    old = stored.get("data_digest", digest)
    if old != digest and truth is not None and old == data_digest(cache, split_files, truth, canonical=False):
        return digest
    return old


# ---- the request: everything checked in the driver, before data or Ray -----------------------------
# keys a study sets for each trial, and the flag that controls each instead of --set
TRIAL_KEYS = {"data.split": "--splits", "run.seed": "--seeds", "run.name": "(one per trial)", "data.cache": "--cache",
              "data.truth": "(the synthetic set's sidecar)", "run.output": "--output"}


def _check_sets(study: Study, sets: list[str]) -> dict[str, Any]:
    """--set may not touch what the grid or the study sets per trial; returns the study-wide defaults it
    replaces (the user wins there, and is told)."""
    grid_keys = set().union(*study.grid)
    if "model.preset" in grid_keys:
        grid_keys |= {f"model.{k}" for k in PRESET_SWITCHES}
    replaced = {}
    for key, value in parse_overrides(sets):
        if key.removeprefix("model.") in PRESET_SWITCHES and "model.preset" in study.extra:
            # every trial's overrides name the preset, which sets all its switches again: this one would be lost
            raise ValueError(f"--set {key}={value}: the {study.name} study fixes model.preset="
                             f"{study.extra['model.preset']}, which sets {key} in every trial; choose another "
                             "preset with --set model.preset=NAME instead")
        if key in grid_keys:
            rows = sorted({str(r[key]) for r in study.grid if key in r})
            raise ValueError(f"--set {key}={value}: the {study.name} study sets {key} per row "
                             f"({', '.join(rows) or 'through model.preset'}); drop it, or define a study with that grid")
        if key in TRIAL_KEYS:
            raise ValueError(f"--set {key}={value}: the study sets {key} for each trial; use {TRIAL_KEYS[key]}")
        if key in study.extra and study.extra[key] != value:
            replaced[key] = value
    return replaced


def _base_config(study: Study, args) -> tuple[Config, dict[str, Any]]:
    """The dataset's YAML with the flags and --set applied, validated with every row of the grid."""
    experiment = check_name(args.experiment or f"{study.name}-{args.dataset}", "--experiment")
    sets = flag_overrides(args.set, {"optim.epochs": ("--epochs", 1 if args.quick else args.epochs),
                                     "run.mlflow_uri": ("--mlflow-uri", args.mlflow_uri),
                                     "run.experiment": ("--experiment", experiment)})
    replaced = _check_sets(study, args.set)
    base = load_config(CONFIGS[args.dataset], sets)
    for row in study.grid:  # every trial's config is valid before anything starts
        with_overrides(base, {**study.extra, **row, **replaced})
    return base, replaced


# what a trial's numbers depend on besides its config's model/data/optim sections; a study.json written before
# they were stored holds none of them, and takes the rerun's (as before, nothing is checked for it)
REQUEST_RUN_KEYS = tuple(k for k in RESUME_RUN_KEYS if k != "seed")  # run.* keys a run folder checks too (the
# study sets the seed per trial)
LATER_REQUEST_KEYS = ("run", "trials", "search_point")


def _request(study: Study, args, base: Config, points: list[dict], split_files: list[Path] | None = None) -> dict:
    """What this command asks for, as plain JSON: stored in study.json, compared on every rerun. A search
    has no points: its fixed split and seed are stored instead."""
    cfg = base.to_dict()
    search = getattr(args, "search", "grid") or "grid"
    return {"study": study.name, "dataset": args.dataset, "mlflow_uri": base.run.mlflow_uri,
            **{section: cfg[section] for section in ("model", "data", "optim")},
            "run": {k: cfg["run"][k] for k in REQUEST_RUN_KEYS},
            # DDP workers change the per-worker batch (BatchNorm statistics); a GPU changes autocast
            "trials": {"workers": getattr(args, "workers_per_trial", 1), "gpu": getattr(args, "gpus_per_trial", 0) > 0},
            "search": search, "samples": getattr(args, "samples", None),
            "search_point": ({"split": str(split_files[0]), "seed": search_seed(args)}
                             if search == "optuna" and split_files else None),
            "points": {p["name"]: p["overrides"] for p in points}}


def search_seed(args) -> int:
    """The one seed an Optuna search runs (it searches on one split and one seed)."""
    seeds = [s for s in str(args.seeds).split(",") if s.strip()]
    if len(seeds) != 1:
        raise ValueError(f"--seeds {args.seeds}: a --search optuna study runs one seed (on the first split); give "
                         "one seed, and repeat the study with --experiment NAME for another")
    return int(seeds[0])


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _differences(stored: dict, now: dict) -> list[str]:
    a, b = _flat(stored), _flat(now)
    return [f"{k}: {a.get(k, '(absent)')!r} -> {b.get(k, '(absent)')!r}" for k in sorted(set(a) | set(b))
            if a.get(k, "(absent)") != b.get(k, "(absent)")]


def _holds_parent(uri: str, parent: str | None, experiment: str) -> bool:
    """Is ``uri`` the store of a study whose parent run is ``parent``? The same store can be reached at another
    address on a rerun: a SLURM job requeued onto another head node starts its tracking server there."""
    if not parent:
        return False
    from mlflow.tracking import MlflowClient

    try:
        check_reachable(uri, timeout=10)
        client = MlflowClient(uri)
        return client.get_experiment(client.get_run(parent).info.experiment_id).name == experiment
    except Exception:  # noqa: BLE001 - unreachable, or no such run there: another store
        return False


def _check_trusted(folder: Path) -> None:
    """Tune's state is a pickle: restore it only from a folder this user owns and nobody else can write."""
    for path in [folder, *folder.rglob("*.pkl")]:
        st = path.stat()
        if st.st_uid != os.getuid() or st.st_mode & 0o022:
            raise ValueError(f"{path} is owned by another user or writable by others: restoring it would run "
                             "whatever it holds. --output must be trusted storage; fix the permissions or start over")


# ---- the trials ------------------------------------------------------------------------------------
DONE = ("ok", "stopped")  # a trial trained to the end, or was stopped early by the scheduler (a search)


def run_folder_name(run_name: str) -> str:
    """A trial's folder (and config ``run.name``) from its MLflow run name: the one spelling for file names,
    '+' and '/' as '-' (``VS+VCW+VT+AT_split_00_seed0`` -> ``VS-VCW-VT-AT_split_00_seed0``), as the folders of
    studies started before MLflow had the '+' name were named: they still resume. The MLflow run name, the tag
    ``row``, the tables and the console use the row's own label."""
    return run_name.replace("+", "-").replace("/", "-")


def _points(study: Study, dataset: str, split_files: list[Path], seeds: list[int], experiment: str,
            replaced: dict, parent: str | None = None) -> list[dict]:
    points = []
    note = ", ".join(f"{k}={v}" for k, v in replaced.items())
    for row, split, seed in itertools.product(study.grid, split_files, seeds):
        overrides = {**study.extra, **replaced, **row, "data.split": str(split), "run.seed": seed}
        row_name = study.row_name(row)
        name = run_folder_name(f"{row_name}_{split.stem}_seed{seed}")
        tags = {"study": study.name, "table": study.tables.get(dataset, ""), "dataset": dataset,
                "row": row_name, "experiment": experiment, **({"study_overrides": note} if note else {}),
                "mlflow.runName": f"{row_name}_{split.stem}_seed{seed}",  # the row as tags and tables name it
                "mlflow.source.name": Path(sys.argv[0]).name, **({"mlflow.parentRunId": parent} if parent else {})}
        points.append({"name": name, "overrides": {**overrides, "run.name": name}, "tags": tags})
    return points


def _concurrency(args, per_trial_cpu: float) -> int:
    import ray

    res = ray.cluster_resources()
    if args.gpus_per_trial > 0:
        fit = int(res.get("GPU", 0) // args.gpus_per_trial)
    else:
        fit = int((res.get("CPU", 1) + 1e-9) // per_trial_cpu)
    fit = max(1, fit)
    return min(fit, args.max_concurrent) if args.max_concurrent else fit


def _trial_state(folder: Path) -> tuple[str, dict, str]:
    """(status, final metrics, error) of one run folder: ok | error | missing."""
    final = folder / "final_metrics.json"
    if final.is_file():
        return "ok", json.loads(final.read_text()), ""
    error = folder / ERROR_FILE
    if error.is_file():
        return "error", {}, error.read_text().strip()
    return "missing", {}, ""


def results_frame(points: list[dict], train_root: Path, errors: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per grid point x split x seed, read from the run folders: every point of the study is a
    row, so a trial that never ran is counted as missing."""
    rows = []
    for p in points:
        status, metrics, error = _trial_state(train_root / p["name"])
        if status == "missing" and (errors or {}).get(p["name"]):
            status, error = "error", errors[p["name"]]
        rows.append({**p["tags"], **p["overrides"],
                     **{k: v for k, v in metrics.items() if k.startswith(("test_", "best_"))},
                     "status": status, "error": error})
    return pd.DataFrame(rows)


ATTENTION_TRUTH = {"temporal_on_key": "temporal_x_uniform", "spatial_in_box": "spatial_x_uniform"}


ACCURACIES = ("test_acc", "test_mean_class_acc", "test_polarity_acc")
STATS_COLUMNS = ["row", "metric", "n", "trials", "missing", "mean", "std", "ci_low", "ci_high"]
COMPARED = "test_acc"  # the metric the console table compares between rows


def _sample(part: pd.DataFrame, values: pd.Series) -> pd.Series:
    """A row's values indexed by (split, seed), as :mod:`analysis.stats` pairs them."""
    index = pd.MultiIndex.from_arrays([[Path(str(s)).stem for s in part["data.split"]], part["run.seed"].astype(int)],
                                      names=["split", "seed"]) if len(part) else \
        pd.MultiIndex.from_tuples([], names=["split", "seed"])
    return pd.Series(values.to_numpy(float), index=index).dropna()


def _row_samples(frame: pd.DataFrame, study: Study) -> dict[tuple[str, str], pd.Series]:
    """(row, metric) -> the finished trials' values indexed by (split, seed), in the trials' own units:
    accuracies as fractions (the trials' ``test_acc``...), and on the synthetic set the attention mass on the
    planted evidence as a ratio to uniform attention (``temporal_x_uniform``, ``spatial_x_uniform``)."""
    ok = frame[frame["status"] == "ok"]
    out = {}
    for row in study.grid:
        name = study.row_name(row)
        part = ok[ok["row"] == name]
        values = {c: part[c].astype(float) if c in part else pd.Series(float("nan"), index=part.index)
                  for c in ACCURACIES}
        for metric, column in ATTENTION_TRUTH.items():
            if f"test_{metric}" in ok:
                values[column] = part[f"test_{metric}"].astype(float) / part[f"test_{metric}_uniform"].astype(float)
        for metric, vals in values.items():
            out[(name, metric)] = _sample(part, vals)
    return out


def summary_stats(frame: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The study's numbers, one line per (grid row, metric): mean, std (ddof 1; 0 for a single run), n and the
    95 % Student-t interval of the mean (:func:`analysis.stats.describe`; NaN below 2 runs) over the finished
    trials (splits x seeds), in the trials' own units: accuracies as fractions (the trials' ``test_acc``...),
    and on the synthetic set the attention mass on the planted evidence as a ratio to uniform attention
    (``temporal_x_uniform``, ``spatial_x_uniform``; 1.00 = no better than uniform).
    The console table, the parent run's summary and the verdict all read these, never a rounded cell."""
    from analysis import stats as st

    out = []
    for (name, metric), vals in _row_samples(frame, study).items():
        d = st.describe(vals.to_numpy())
        trials = int(((frame["row"] == name) & (frame["status"] == "ok")).sum())
        out.append({"row": name, "metric": metric, "n": d["n"], "trials": trials,
                    "missing": int((frame["row"] == name).sum() - trials), "mean": d["mean"],
                    "std": (d["std"] if d["n"] > 1 else 0.0) if d["n"] else float("nan"),
                    "ci_low": d["ci_low"], "ci_high": d["ci_high"]})
    return pd.DataFrame(out, columns=STATS_COLUMNS)


def full_model_row(study: Study) -> str | None:
    """The grid row with every attention (VS+VCW+VT+AT), when the study has one and other rows besides."""
    presets = row_presets(study)
    full = [r for r, p in presets.items() if set(p.split("+")) == {"VS", "VCW", "VT", "AT"}]
    return full[0] if len(full) == 1 and len(presets) > 1 else None


def summary_comparisons(frame: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The console table's comparisons of ``test_acc`` (:mod:`analysis.stats`, in percent points): each row
    against the full model when the study has one, else against the row above; paired on (split, seed), with
    the difference's 95 % t interval, the paired t-test p and its Holm correction over these comparisons
    (``significant``: p_holm < 0.05). Empty for a one-row study."""
    from analysis import stats as st

    samples = _row_samples(frame, study)
    names = [study.row_name(r) for r in study.grid]
    full = full_model_row(study)
    pairs = [(n, full) for n in names if n != full] if full else list(zip(names[1:], names[:-1]))
    rows = [st.comparison_row(study.name, row, ref, "acc", COMPARED, st.percent(samples[(row, COMPARED)]),
                              st.percent(samples[(ref, COMPARED)])) for row, ref in pairs]
    return st.finish(rows) if rows else pd.DataFrame(columns=st.COLUMNS)


def summary_table(frame: pd.DataFrame, study: Study, stats: pd.DataFrame | None = None,
                  comparisons: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean ± std [95 % CI of the mean] over splits and seeds of the test metrics, one row per grid row:
    accuracies in %, and on the synthetic set the attention mass on the planted evidence as a ratio to uniform
    attention (1.00 = no better than uniform). With several rows, ``Δ acc`` is the paired accuracy difference
    against the row named in ``vs`` (:func:`summary_comparisons`) with its 95 % CI, the Holm-corrected p, and
    † where that is below 0.05 (:func:`summary_note` says it in words)."""
    stats = summary_stats(frame, study) if stats is None else stats
    comparisons = summary_comparisons(frame, study) if comparisons is None else comparisons
    by_row = comparisons.set_index("row") if len(comparisons) else None
    out = []
    for name, part in stats.groupby("row", sort=False):
        cells = {"row": name, "n": int(part["trials"].iloc[0]), "missing": int(part["missing"].iloc[0])}
        for _, m in part.iterrows():
            scale, digits = (100, 1) if m["metric"] in ACCURACIES else (1, 2)
            cells[m["metric"].removeprefix("test_")] = _cell(m, scale, digits)
        if by_row is not None:
            c = by_row.loc[name] if name in by_row.index else None
            cells["Δ acc [95 % CI], p Holm"] = _delta(c) if c is not None else ""
            cells["vs"] = c["ref_row"] if c is not None else ""
        out.append(cells)
    return pd.DataFrame(out)


def _cell(m, scale: float, digits: int) -> str:
    if not m["n"]:
        return "—"
    text = f"{m['mean'] * scale:.{digits}f} ± {m['std'] * scale:.{digits}f}"
    if m["ci_low"] == m["ci_low"]:  # an interval needs 2 runs
        text += f" [{m['ci_low'] * scale:.{digits}f}, {m['ci_high'] * scale:.{digits}f}]"
    return text


def _delta(c) -> str:
    if not c["n"]:
        return "no pairs"
    text = f"{c['diff']:+.1f}"
    if c["diff_ci_low"] == c["diff_ci_low"]:
        text += f" [{c['diff_ci_low']:+.1f}, {c['diff_ci_high']:+.1f}]"
    text += f", p {c['p_holm']:.3f}" if c["p_holm"] == c["p_holm"] else ", p n/a"
    return text + (" †" if c["significant"] is True else "")


def summary_note(comparisons: pd.DataFrame, n_splits: int, n_seeds: int) -> str:
    """The lines under the console table: what the brackets, Δ and † mean."""
    from analysis import stats as st

    text = (f"[a, b]: 95 % Student-t interval of the mean over the {n_splits} split(s) x {n_seeds} seed(s) "
            "(none below 2 runs).")
    if len(comparisons):
        text += (f"\nΔ acc: paired difference (row - vs, points) over the (split, seed) points both finished, with its "
                 f"95 % t interval; p n/a where the differences have no variance or fewer than 2 pairs.\n{st.TEST_NOTE}")
        unpaired = comparisons[comparisons["unpaired"] > 0]
        for _, c in unpaired.iterrows():
            text += f"\n{c['row']} vs {c['ref_row']}: unpaired points left out: {c['unpaired_points']}"
    return text


def row_presets(study: Study) -> dict[str, str]:
    """Each grid row's model preset (from the row, else the study's fixed overrides), by row name."""
    return {study.row_name(row): str({**study.extra, **row}.get("model.preset", "")) for row in study.grid}


def attention_verdict(stats: pd.DataFrame, target: float = 2.0, presets: dict[str, str] | None = None,
                      chance: float | None = None) -> str | None:
    """One line: are the targets this scale can show met? Judged on :func:`summary_stats` (unrounded); None when
    the study has no attention-vs-truth metrics. The targets (issue #27): temporal attention on the key segments
    >= ``target`` x uniform in every row with VT; the full model (VS+VCW+VT+AT) above every other row by more than
    the larger of the two rows' split stds; AT above ``chance`` (1 / number of classes). Spatial attention is
    reported as measured, not judged: at the demo's crop a conv5 cell sees nearly the whole frame, so localisation
    is not expected; benchmarks/attention_recovery.py --preset spatial and docs/attention.md show it. Which
    attentions a row has comes from its preset (``presets``, row name -> preset, see :func:`row_presets`), else
    from the row name's part before any "_" (a row "VS+VCW+VT_ce" of the loss comparison has temporal attention)."""
    def attentions(row) -> list[str]:
        preset = (presets or {}).get(str(row)) or str(row).split("_")[0]
        return preset.split("+")

    def rows_of(metric: str) -> list[tuple[str, float, float]]:
        part = stats[(stats["metric"] == metric) & (stats["n"] > 0)]
        return [(str(r["row"]), float(r["mean"]), float(r["std"])) for _, r in part.iterrows()]

    if not any(stats["metric"].isin(["temporal_x_uniform", "spatial_x_uniform"]) & (stats["n"] > 0)):
        return None
    checks = []
    temporal = [(n, v) for n, v, _ in rows_of("temporal_x_uniform") if "VT" in attentions(n)]
    if temporal:
        checks.append((min(v for _, v in temporal) >= target,
                       f"temporal attention on the key segments {', '.join(f'{n} {v:.2f}x' for n, v in temporal)} "
                       f"uniform (target >= {target:g}x in every row with VT)"))
    acc = rows_of("test_acc")
    full = [r for r in acc if set(attentions(r[0])) == {"VS", "VCW", "VT", "AT"}]
    if len(full) == 1 and len(acc) > 1:
        name, mean, std = full[0]
        gaps = [(n, mean - m, max(std, s)) for n, m, s in acc if n != name]
        checks.append((all(gap > margin for _, gap, margin in gaps),
                       f"full model {mean:.3f} ± {std:.3f} above every other row by more than the larger split std ("
                       + ", ".join(f"{n} +{gap:.3f} > {margin:.3f}" if gap > margin else f"{n} +{gap:.3f} <= {margin:.3f}"
                                   for n, gap, margin in gaps) + ")"))
    audio = [(n, m) for n, m, _ in acc if attentions(n) == ["AT"]]
    if audio and chance is not None:
        checks.append((all(m > chance for _, m in audio),
                       f"{', '.join(f'{n} {m:.3f}' for n, m in audio)} above chance {chance:.3f}"))
    spatial = [(n, v) for n, v, _ in rows_of("spatial_x_uniform") if "VS" in attentions(n)]
    verdict = "RECOVERED" if all(ok for ok, _ in checks) else "NOT recovered"
    line = (f"planted evidence {verdict} where this scale can show it: "
            + "; ".join(f"{text} ({'met' if ok else 'not met'})" for ok, text in checks))
    if spatial:
        line += (f"; spatial attention in the evidence box {', '.join(f'{n} {v:.2f}x' for n, v in spatial)} uniform "
                 "(reported, not judged: localisation is not expected at this crop, where a conv5 cell sees nearly "
                 "the whole frame; it is shown by benchmarks/attention_recovery.py --preset spatial, docs/attention.md)")
    return line


def _close_leftovers(uri: str, train_root: Path, frame: pd.DataFrame) -> None:
    """No MLflow run of this study stays RUNNING once the driver is done: a trial stopped early (ASHA),
    interrupted or killed ends KILLED, one that failed for good FAILED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    pending = [row["run.name"] for _, row in frame.iterrows() if not replay_pending(train_root / row["run.name"], uri)]
    if pending:
        frame.attrs["reported"] = False
        print(f"WARNING: MLflow did not answer; {len(pending)} trials keep unsent results in their run folders "
              f"(tracking_pending.json), re-sent by the next run of this command: {pending}", file=sys.stderr)
    for _, row in frame.iterrows():
        if row["status"] == "ok":  # finished on disk; its MLflow run too, unless a kill came in between
            try:
                complete_finished_run(train_root / row["run.name"], client)
            except Exception:  # noqa: BLE001 - deleted or unreachable: nothing to complete here
                pass
            continue
        run_id = run_id_of(train_root / row["run.name"])
        try:
            if run_id and client.get_run(run_id).info.status == "RUNNING":
                client.set_terminated(run_id, "FAILED" if row["status"] == "error" else "KILLED")
        except Exception:  # noqa: BLE001 - deleted or unreachable: nothing to close here
            pass


# ---- MLflow: one parent run per study, holding its arguments, summary, tables and figures ------------
def _parent_run(uri: str, experiment: str, study: Study, args, base: Config, state: dict | None,
                n_points: int, split_files: list[Path], points: list[dict] | None = None) -> str:
    """The study's parent run (created once, its id kept in study.json; RUNNING while the study runs): its
    params are what every trial shares (:func:`shared_settings`), its description (:func:`study_description`)
    says what the study is and what its rows differ in."""
    import getpass

    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    if state and state.get("parent_run_id"):
        try:
            client.update_run(state["parent_run_id"], status="RUNNING")
            return state["parent_run_id"]
        except Exception:  # noqa: BLE001 - deleted: make a new one
            pass
    shared, differences = shared_settings(study, base, points or [])
    words = study_description(study, args, base, n_points, split_files, differences)
    run = client.create_run(
        client.get_experiment_by_name(experiment).experiment_id, run_name=f"{study.name} study ({args.dataset})",
        tags={"role": "study", "study_name": study.name, "dataset": args.dataset, "mlflow.note.content": words,
              "mlflow.user": getpass.getuser(), "mlflow.source.name": Path(sys.argv[0]).name,
              "mlflow.source.type": "LOCAL", **({"mlflow.source.git.commit": git_commit()} if git_commit() else {})})
    rows = [study.row_name(r) for r in study.grid]
    params = {"study": study.name, "dataset": args.dataset, "rows": " | ".join(rows)[:6000], "trials": n_points,
              "splits": len(split_files), "seeds": args.seeds, "quick": args.quick, **shared}
    items = [Param(k, str(v)[:6000]) for k, v in params.items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    record_environment(client, run.info.run_id, base)  # the environment the study ran in, once
    return run.info.run_id


SEARCHED = ("optim.lam", "optim.lr")  # what the Optuna search samples per trial


def shared_settings(study: Study, base: Config, points: list[dict]) -> tuple[dict, dict[str, dict]]:
    """(the settings every trial shares, as flat ``section.key`` params; each row's settings that differ
    between rows). A trial's own keys (split, seed, name) differ between trials and are in neither; a model
    without a pixel normalization set uses the model's default, named as such. A search (no points) shares
    its fixed overrides; the searched keys are left out."""
    from ..models.vaanet import DEFAULT_PIXEL_NORMALIZATION

    def flat(overrides: dict) -> dict:
        config = with_overrides(base, overrides)
        cfg = {"model.preset": config.model.preset or "(none: switches as listed)", **config.flat()}
        if cfg.get("model.pixel_normalization") is None:
            cfg["model.pixel_normalization"] = f"{DEFAULT_PIXEL_NORMALIZATION} (the model's default)"
        return cfg

    if not points:
        fixed = flat(study.extra)
        return {k: v for k, v in fixed.items() if k not in SEARCHED + ("data.split", "run.seed", "run.name")}, {}
    trials = [flat(p["overrides"]) for p in points]
    own = ("data.split", "run.seed", "run.name")  # a trial's own, even where one split or seed makes them equal
    shared = {k: v for k, v in trials[0].items() if k not in own and all(t.get(k) == v for t in trials[1:])}
    by_row: dict[str, dict] = {}
    for p, t in zip(points, trials):
        by_row.setdefault(p["tags"]["row"], t)
    varying = [k for k in trials[0] if k not in shared and k not in own
               and len({repr(t.get(k)) for t in by_row.values()}) > 1]
    return shared, {row: {k: t.get(k) for k in varying} for row, t in by_row.items()}


def study_description(study: Study, args, base: Config, n_points: int, split_files: list[Path],
                      differences: dict[str, dict]) -> str:
    """The parent run's description (Markdown, as MLflow renders ``mlflow.note.content``): the command with its
    arguments, the grid, the splits and seeds, the rows' differences, and where the summary is. No text in
    angle brackets outside the code block (Markdown would read it as HTML and drop it)."""
    import shlex

    rows = [study.row_name(r) for r in study.grid]
    seeds = [x for x in str(args.seeds).split(",") if x]
    table = study.tables.get(args.dataset, "")
    lines = [f"**{study.name}** study on **{args.dataset}**" + (f" (paper table {table})" if table else "") + ".", "",
             "Command:", "", "```", shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]), "```", ""]
    if getattr(args, "search", None) == "optuna":
        lines.append(f"Grid: {n_points} configurations searched (Optuna TPE over {', '.join(SEARCHED)}, ASHA) on "
                     f"split {split_files[0].stem}, seed {seeds[0] if seeds else '0'}; up to {base.optim.epochs} "
                     "epochs each.")
    else:
        lines.append(f"Grid: {n_points} trials = {len(rows)} row(s) ({', '.join(rows)}) x {len(split_files)} "
                     f"split(s) x {len(seeds)} seed(s); {base.optim.epochs} epoch(s) each.")
        lines += ["", f"Splits: {', '.join(f.stem for f in split_files)}. Seeds: {', '.join(seeds)}."]
    if args.dataset == "synth":
        lines += ["", "Data set: the generated synthetic set (tag `dataset=synth`); it uses the VE-8 class list, "
                  "hence the param `data.dataset=ve8`."]
    keys = list(next(iter(differences.values()), {}))
    if keys:  # a one-row study has nothing that differs between rows
        lines += ["", "What the rows differ in (everything else is the same in every trial: the params):", "",
                  "| row | " + " | ".join(f"`{k}`" for k in keys) + " |", "|---" * (len(keys) + 1) + "|"]
        lines += [f"| {row} | " + " | ".join(str(v) for v in d.values()) + " |" for row, d in differences.items()]
    lines += ["", "Summary: `summary.json` (the closing table as printed: mean ± std [95 % CI] per row, the paired "
              "accuracy comparisons with Holm-corrected p, † significant), `summary_stats.json` and "
              "`comparisons.json` (unrounded), `reports/` (the paper tables, their `_stats.csv` files, figures). "
              "Metrics: `test_acc` (mean over trials, a fraction as in each trial), `test_acc_std`, "
              "`test_acc_ci_low`/`_ci_high` of the row in the tag `headline_row` (the full model, else the best)."]
    if args.dataset == "synth":
        lines += ["", "temporal_x_uniform / spatial_x_uniform: attention mass on the planted evidence (key segments, "
                  "evidence box) divided by what uniform attention gives; 1 = no better than uniform."]
    return "\n".join(lines) + "\n"


def _close_parent(uri: str, parent: str, stats: pd.DataFrame, frame: pd.DataFrame, report_dir: Path,
                  reported: bool, summary: tuple | None = None) -> str:
    """The study's summary in one place: the console table as MLflow shows tables (``summary.json``, the cells
    as printed) with its unrounded numbers beside it (``summary_stats.json``, in the trials' units;
    ``comparisons.json``, in percent points), a handful of headline metrics, the reports as artifacts, and the
    study's status. Headline metrics (no row name in a key: MLflow refuses '+' in metric names): ``test_acc``,
    ``test_acc_std``, ``test_acc_ci_low`` / ``_ci_high`` of the headline row (tag ``headline_row``: the full
    model, else the only row, else the row with the best mean), as fractions like each trial's ``test_acc``
    (the runs list shows parent and trials in one column); ``trials_finished``, ``trials_total``; and
    ``comparisons_significant`` (the † of the table). Every comparison's diff and p_holm are in
    ``comparisons.json`` and ``reports/*_stats.csv``, not metrics: one metric per comparison was the flood of
    one-bar charts the UI opened with."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    ts = int(time.time() * 1000)
    metrics = [Metric("trials_finished", float((frame["status"] == "ok").sum()), ts, 0),
               Metric("trials_total", float(len(frame)), ts, 0)]
    if summary is not None:
        table, comparisons, full = summary
        _log_table(client, parent, table, "summary.json")
        _log_table(client, parent, stats, "summary_stats.json")
        if len(comparisons):
            _log_table(client, parent, comparisons, "comparisons.json")
            metrics.append(Metric("comparisons_significant", float((comparisons["significant"] == True).sum()),  # noqa: E712
                                  ts, 0))
        acc = stats[(stats["metric"] == COMPARED) & (stats["n"] > 0)]
        if len(acc):
            head = acc[acc["row"] == full] if full in set(acc["row"]) else acc.loc[[acc["mean"].idxmax()]]
            h = head.iloc[0]
            metrics += [Metric(f"{COMPARED}{suffix}", float(h[col]), ts, 0) for suffix, col in
                        (("", "mean"), ("_std", "std"), ("_ci_low", "ci_low"), ("_ci_high", "ci_high"))
                        if h[col] == h[col]]
            client.log_batch(parent, tags=[RunTag("headline_row", str(h["row"]))])
    client.log_batch(parent, metrics=metrics)
    client.log_artifacts(parent, str(report_dir), "reports")
    status = "FINISHED" if reported and (frame["status"].isin(DONE)).all() else (
        "FAILED" if (frame["status"] == "error").any() else "KILLED")
    client.set_terminated(parent, status)
    return status


def _log_table(client, run_id: str, table: pd.DataFrame, name: str) -> None:
    """``client.log_table`` the first time; a rerun of the study replaces the file in the same format
    (``log_table`` would append the rerun's rows to the old ones)."""
    import tempfile

    if name not in {a.path for a in client.list_artifacts(run_id)}:
        client.log_table(run_id, data=table, artifact_file=name)
        return
    with tempfile.TemporaryDirectory() as tmp:
        table.to_json(Path(tmp) / name, orient="split", index=False, date_format="iso")  # log_table's own format
        client.log_artifact(run_id, str(Path(tmp) / name))


def _ui_link(uri: str, experiment: str, parent: str) -> str:
    """Where to look: the classic training-runs view of the study's parent run."""
    from mlflow.tracking import MlflowClient

    exp_id = MlflowClient(uri).get_experiment_by_name(experiment).experiment_id
    # MLflow 3's UI opens in its GenAI mode unless the URL asks for the model-training view
    path = f"#/experiments/{exp_id}/runs/{parent}?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{path}"
    return f"mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000/{path}"


INTERRUPTED = "\ninterrupted: finished trials are kept; rerun the same command with --resume to continue"


def main(study: Study, description: str, parser: argparse.ArgumentParser | None = None) -> None:
    """Entry point of the experiment scripts: exit 1 when any trial failed or is missing, 2 (one line,
    no traceback) when the request itself is wrong."""
    sigterm_as_ctrl_c()  # SIGTERM (scancel, preemption, docker stop) stops the study as Ctrl-C does, exit 143
    args = (parser or study_parser(description)).parse_args()
    try:
        frame = run_study(study, args)
    except (ValueError, FileNotFoundError, ConnectionError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(exit_code())
    if terminated():  # stopped by SIGTERM while the trials ran: they stopped, the tables say what is done
        print(INTERRUPTED, file=sys.stderr)
        sys.exit(exit_code())
    sys.exit(int((~frame["status"].isin(DONE)).any() or not frame.attrs.get("reported", True)))


def _start_ray(args) -> None:
    import ray

    if ray.is_initialized():
        return
    address = args.address or os.environ.get("RAY_ADDRESS")
    # Per-run costs Ray Train adds that a local study does not need (set before ray.init: the Ray
    # processes inherit this environment; a variable already set by the user wins):
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # notice a finished run sooner (2 s)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")  # each worker print reached the log twice
    if not args.verbose:  # Tune's own console output (its configuration box, "View detailed results")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    if not address:  # no spot instances on a local machine: no preemption watcher actor per run
        os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    # credentials taken from --mlflow-uri travel in the workers' environment, never in a file
    env = {k: os.environ[k] for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD") if k in os.environ}
    local = {} if address else {"include_dashboard": bool(getattr(args, "ray_dashboard", False))}
    import signal

    # A local Ray's processes (GCS, raylet, and through it the trials' workers) start with SIGTERM blocked, as
    # Ray starts them with SIGINT blocked: a SIGTERM to the whole job (scancel, systemd, kill -TERM -PGID) then
    # reaches only this driver, which stops the trials as on Ctrl-C (each checkpoints and ends KILLED) and
    # shuts Ray down itself. Without it the GCS would die at once and leave every run RUNNING.
    shield = {signal.SIGTERM} if not address and hasattr(signal, "pthread_sigmask") else set()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, shield) if shield else None
    try:
        init_ray(address, log_to_driver=args.verbose, logging_level="WARNING" if args.verbose else "ERROR",
                 runtime_env={"env_vars": env} if env else None, **local)
    finally:
        if shield:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
    sigterm_as_ctrl_c()  # ray.init replaced it with an immediate exit


def _open_while_ray_starts(args, uri: str, open_parent) -> str:
    """Ray's start (~4-8 s) and MLflow's (a new SQLite store migrates its schema for ~7 s) overlap: the
    parent run is opened in a thread while this one starts Ray. Returns the parent run's id."""
    from concurrent.futures import ThreadPoolExecutor

    check_reachable(uri)  # a server that does not answer: one line, before Ray starts
    with ThreadPoolExecutor(1) as pool:
        opened = pool.submit(open_parent)
        try:
            _start_ray(args)
        finally:
            parent = opened.result()  # an MLflow error is raised here, after Ray started or failed
    return parent


class TrialsStop:
    """A SIGTERM while the trials run: ask them to stop by themselves (``stop_file``, which each trial polls),
    so that each writes the checkpoint of its last finished epoch and ends KILLED, and no new one starts. Tune's
    own stop (the Ctrl-C path) force-kills a trial's process 5 s after asking, before it could save: it is
    taken only after ``VAANET_STOP_GRACE_S`` seconds (default 15: within SLURM's 30 s KillWait with the time
    shutting down takes), or at a second SIGTERM."""

    def __init__(self, stop_file: Path):
        self.stop_file, self.timer = stop_file, None

    def __enter__(self):
        self.stop_file.unlink(missing_ok=True)  # an earlier stop's request
        return self

    def __call__(self) -> bool:
        import signal
        import threading

        if self.timer is not None:  # a second SIGTERM: Tune stops the trials now
            return False
        self.stop_file.parent.mkdir(parents=True, exist_ok=True)
        self.stop_file.touch()
        grace = float(os.environ.get("VAANET_STOP_GRACE_S", "15"))
        self.timer = threading.Timer(grace, signal.raise_signal, (signal.SIGINT,))
        self.timer.daemon = True
        self.timer.start()
        print(f"\nSIGTERM: the running trials write their checkpoints and stop (Tune stops what is left in "
              f"{grace:g} s)", file=sys.stderr, flush=True)
        return True

    def __exit__(self, *exc) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.stop_file.unlink(missing_ok=True)


def _stop_ray() -> None:
    """The trials are over: a local Ray goes before the report, so that an interrupted report (Ctrl-C
    reaches Ray's processes too) leaves nothing waiting on them."""
    import signal

    import ray

    ray.shutdown()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Tune's handler outlives fit(): Ctrl-C works again
    sigterm_as_ctrl_c()  # and ray.shutdown() leaves SIGTERM at its default (an immediate exit)


def run_study(study: Study, args: argparse.Namespace) -> pd.DataFrame:
    """Run (or resume, or just report) the study; returns one row per trial with its status."""
    from ray import tune

    start = time.time()
    if not args.verbose:  # "Creating initial MLflow database tables..." of a new store
        import logging

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    base, replaced = _base_config(study, args)  # a wrong request fails here, before data or Ray
    experiment = base.run.experiment
    for key, value in replaced.items():
        print(f"--set {key}={value} replaces the {study.name} study's default {key}={study.extra[key]} "
              "(recorded in every run: param and tag study_overrides)", flush=True)
    n_splits = 1 if args.quick else (args.splits or {"synth": 3, "ve8": 10, "e6": 1}[args.dataset])
    seeds = [int(s) for s in str(args.seeds).split(",") if s != ""]
    if len(set(seeds)) != len(seeds):  # the same trial twice: one run folder trained twice, counted twice
        raise ValueError(f"--seeds {args.seeds} names a seed more than once; give each seed once")
    if getattr(args, "search", None) == "optuna":
        search_seed(args)  # one seed, checked before the data are prepared
    cache, split_files, truth = ensure_data(args, n_splits)

    output = Path(args.output).resolve() / experiment
    train_root = output / "train"
    base = resolve_paths(replace(base, data=replace(base.data, cache=str(cache), split=str(split_files[0]),
                                                    truth=str(truth) if truth else None),
                                 run=replace(base.run, output=str(train_root))))
    search = getattr(args, "search", None) == "optuna"
    points = [] if search else _points(study, args.dataset, split_files, seeds, experiment, replaced)
    request = _request(study, args, base, points, split_files)
    request["data_digest"] = data_digest(cache, split_files, truth)
    state_file = output / "study.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else None
    if state is not None:
        for key in LATER_REQUEST_KEYS:  # a study.json from before these were stored
            state["request"].setdefault(key, request[key])
        state["request"]["data_digest"] = stored_digest(state["request"], cache, split_files, truth,
                                                        request["data_digest"])
        if state["request"].get("mlflow_uri") != request["mlflow_uri"] and \
                _holds_parent(request["mlflow_uri"], state.get("parent_run_id"), experiment):
            print(f"MLflow: the study's store is reached at {request['mlflow_uri']} now (was "
                  f"{state['request']['mlflow_uri']}): it holds the study's run {state['parent_run_id']}", flush=True)
            state["request"]["mlflow_uri"] = request["mlflow_uri"]
        diff = _differences(state["request"], request)
        if diff:
            raise ValueError(f"{state_file} holds a study started with other settings ({'; '.join(diff[:6])}"
                             f"{'; ...' if len(diff) > 6 else ''}); rerun it as it was, or give this one its own "
                             "--experiment NAME")
    report_dir = output / "reports"

    def open_parent() -> str:  # only once the request is accepted: a refused command leaves nothing open
        ensure_experiment(base.run.mlflow_uri, experiment)
        parent = _parent_run(base.run.mlflow_uri, experiment, study, args, base, state, len(points) or args.samples,
                             split_files, points)
        output.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps({"request": request, "parent_run_id": parent}, indent=1))
        return parent

    if search:
        return _run_search(study, args, base, split_files, state, state_file, open_parent, output, report_dir, start,
                           replaced)

    frame = results_frame(points, train_root)
    todo = [p for p, status in zip(points, frame["status"]) if status != "ok"]
    errors: dict[str, str] = {}
    parent = (state or {}).get("parent_run_id")
    if not todo:
        print(f"study {experiment}: all {len(points)} trials already finished in {train_root}; nothing to train "
              "(use --experiment NAME for a fresh study)")
        ensure_experiment(base.run.mlflow_uri, experiment)
        _close_leftovers(base.run.mlflow_uri, train_root, frame)  # re-sends what an outage kept back
    else:
        if state is not None and not args.resume:
            raise ValueError(f"{output} holds an unfinished study ({len(points) - len(todo)}/{len(points)} trials "
                             "done); pass --resume to continue it, or --experiment NAME for a new one")
        parent = _open_while_ray_starts(args, base.run.mlflow_uri, open_parent)
        points = _points(study, args.dataset, split_files, seeds, experiment, replaced, parent)
        todo = [p for p in points if p["name"] in {t["name"] for t in todo}]
        concurrent = _concurrency(args, args.workers_per_trial * args.cpus_per_worker)
        verb = (f"resuming study {experiment}: {len(points) - len(todo)}/{len(points)} trials already finished"
                if state is not None else f"study {experiment}: {len(points)} trials")
        print(f"{verb} ({len(study.grid)} rows x {len(split_files)} splits x {len(seeds)} seeds), "
              f"{base.optim.epochs} epochs each, up to {concurrent} at once", flush=True)
        progress = StudyProgress(len(points), len(points) - len(todo), concurrent, verbose=args.verbose)
        with TrialsStop(train_root / STOP_FILE) as stop, graceful_stop(stop):
            results = _tuner(args, base, {"point": tune.grid_search(todo)}, concurrent, output,
                             f"tune-{time.strftime('%Y%m%d-%H%M%S')}", callbacks=[progress]).fit()
        errors = {r.config["point"]["name"]: first_line(r.error) for r in results
                  if r.error is not None and r.config and "point" in r.config}
        _stop_ray()
        frame = results_frame(points, train_root, errors)
        _close_leftovers(base.run.mlflow_uri, train_root, frame)
    report_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(report_dir / "trials.csv", index=False)
    stats = summary_stats(frame, study)
    comparisons = summary_comparisons(frame, study)
    table = summary_table(frame, study, stats, comparisons)
    table.to_csv(report_dir / "summary.csv", index=False)
    print(f"\n{study.name} on {args.dataset}: test metrics in %, mean ± std [95 % CI] over {len(split_files)} "
          f"split(s) x {len(seeds)} seed(s)  [{time.time() - start:.0f} s]")
    print(table.to_string(index=False))
    print(summary_note(comparisons, len(split_files), len(seeds)))
    verdict = attention_verdict(stats, presets=row_presets(study), chance=1.0 / base.model.num_classes)
    if verdict:
        print(verdict)
    failed = frame[frame["status"] != "ok"]
    if len(failed):
        print(f"WARNING: {len(failed)} trials failed or are missing: {failed['run.name'].tolist()}; rerun the same "
              "command with --resume to train them (finished trials are kept)", file=sys.stderr)
        for _, row in failed[failed["error"] != ""].iterrows():
            print(f"  {row['run.name']}: {row['error']}", file=sys.stderr)
    try:
        frame.attrs["reported"] = _write_reports(experiment, base.run.mlflow_uri, report_dir, parent) and \
            frame.attrs.get("reported", True)
    except KeyboardInterrupt:  # Ctrl-C during the report: the study's parent run ends KILLED, not RUNNING
        if parent:
            from mlflow.tracking import MlflowClient

            MlflowClient(base.run.mlflow_uri).set_terminated(parent, "KILLED")
        raise
    if parent:
        _finish_parent(base.run.mlflow_uri, experiment, parent, stats, frame, report_dir,
                       summary=(table, comparisons, full_model_row(study)))
    return frame


def _finish_parent(uri, experiment, parent, stats, frame, report_dir, summary=None) -> None:
    try:
        status = _close_parent(uri, parent, stats, frame, report_dir, frame.attrs.get("reported", True), summary)
        print(f"MLflow: study run {parent} {status}; {_ui_link(uri, experiment, parent)}")
    except Exception as e:  # noqa: BLE001 - the tables are on disk; say what could not be recorded
        print(f"WARNING: the study's MLflow parent run was not completed ({type(e).__name__}: {str(e)[:200]})",
              file=sys.stderr)


def _tuner(args, base: Config, space: dict, concurrent: int, output: Path, name: str, tune_config=None,
           callbacks=None):
    from ray import tune

    resources = dict(workers=args.workers_per_trial, gpus=args.gpus_per_trial, cpus_per_worker=args.cpus_per_worker)
    tune_config = tune_config or tune.TuneConfig(max_concurrent_trials=concurrent)
    if args.workers_per_trial <= 1:
        tune_config.reuse_actors = True  # a single-worker trial's process serves the next one
    return tune.Tuner(
        trainable(resources), param_space={"base": base.to_dict(), "resources": resources, **space},
        tune_config=tune_config,
        run_config=tune.RunConfig(name=name, storage_path=str(output), callbacks=callbacks,
                                  failure_config=tune.FailureConfig(max_failures=args.max_failures), verbose=0),
    )


def search_fixed(study: Study, replaced: dict, split: Path, seed: int) -> dict:
    """What every trial of a search sets besides the sampled values: the study's fixed overrides, as replaced
    by --set (the user's value wins, as in the grid), the split and the seed."""
    return {**study.extra, **replaced, "data.split": str(split), "run.seed": seed}


def _run_search(study, args, base, split_files, state, state_file, open_parent, output, report_dir, start,
                replaced: dict):
    """Optuna TPE over lambda and learning rate with ASHA early stopping, selecting on validation
    accuracy only (the test metrics are recorded, never used to choose). A finished search prints its
    stored result; an unfinished one continues with --resume (Tune restores the searcher)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    experiment = base.run.experiment
    if state is not None and state.get("complete"):
        frame = pd.read_csv(report_dir / "search.csv")
        print(f"search {experiment}: all {len(frame)} trials already finished; nothing to train")
        _print_search(frame, args, start)
        return frame
    path = output / "search"
    if state is not None and not args.resume:
        raise ValueError(f"{output} holds an unfinished search; pass --resume to continue it, or --experiment NAME")
    seed = search_seed(args)
    parent = _open_while_ray_starts(args, base.run.mlflow_uri, open_parent)
    concurrent = _concurrency(args, args.workers_per_trial * args.cpus_per_worker)
    if state is not None and tune.Tuner.can_restore(str(path)):
        _check_trusted(path)
        print(f"resuming search {experiment}", flush=True)
        resources = dict(workers=args.workers_per_trial, gpus=args.gpus_per_trial,
                         cpus_per_worker=args.cpus_per_worker)
        tuner = tune.Tuner.restore(str(path), trainable=trainable(resources), resume_errored=True)
    else:
        space = {"optim__lam": tune.uniform(0.0, 4.0), "optim__lr": tune.loguniform(1e-5, 1e-2)}
        fixed = search_fixed(study, replaced, split_files[0], seed)
        tags = {"study": study.name, "table": "lambda", "dataset": args.dataset, "experiment": experiment,
                "mlflow.parentRunId": parent, "mlflow.source.name": Path(sys.argv[0]).name}
        tune_config = tune.TuneConfig(
            search_alg=OptunaSearch(metric="val_acc", mode="max", seed=seed),
            scheduler=ASHAScheduler(time_attr="training_iteration", grace_period=1, reduction_factor=2,
                                    max_t=max(base.optim.epochs, 1) + 1),
            metric="val_acc", mode="max", num_samples=args.samples, max_concurrent_trials=concurrent)
        tuner = _tuner(args, base, {"fixed": fixed, "tags": tags, "search": space}, concurrent, output, "search",
                       tune_config, callbacks=[StudyProgress(args.samples, 0, concurrent, verbose=args.verbose)])
    results = tuner.fit()
    _stop_ray()
    train_root = Path(base.run.output)
    rows = []
    for r in results:
        if not r.config or "search" not in r.config:
            continue
        m = r.metrics or {}
        name = f"search_{m.get('trial_id', '')}"
        rows.append({"trial": Path(r.path).name if r.path else "", "lambda": r.config["search"]["optim__lam"],
                     "lr": r.config["search"]["optim__lr"], "best_val_acc": m.get("best_val_acc", m.get("val_acc")),
                     "epochs_run": m.get("training_iteration"), "test_acc": m.get("test_acc"),
                     "status": "error" if r.error else ("ok" if "test_acc" in m else "stopped"),  # stopped: ASHA
                     "run.name": name})
    frame = pd.DataFrame(rows).sort_values("best_val_acc", ascending=False)
    _close_leftovers(base.run.mlflow_uri, train_root, frame.assign(status="stopped"))
    report_dir.mkdir(parents=True, exist_ok=True)
    frame.to_csv(report_dir / "search.csv", index=False)
    complete = len(frame) == args.samples and frame["status"].isin(DONE).all()
    state_file.write_text(json.dumps({**json.loads(state_file.read_text()), "complete": bool(complete)}, indent=1))
    _print_search(frame, args, start)
    _finish_parent(base.run.mlflow_uri, experiment, parent, pd.DataFrame(columns=STATS_COLUMNS), frame.assign(
        status=frame["status"].where(frame["status"] != "stopped", "ok")), report_dir)
    return frame


def _print_search(frame: pd.DataFrame, args, start: float) -> None:
    best = frame.iloc[0]
    print(f"\nOptuna TPE + ASHA over lambda and lr on {args.dataset} ({len(frame)} trials, selected on validation "
          f"accuracy)  [{time.time() - start:.0f} s]")
    print(frame.drop(columns=["run.name"], errors="ignore").to_string(index=False))
    print(f"selected: lambda {best['lambda']:.3f}, lr {best['lr']:.2e} (val acc {best['best_val_acc']:.3f})")


def _write_reports(experiment: str, uri: str, report_dir: Path, parent: str | None = None) -> bool:
    """The paper tables from MLflow, of this study's trials (its parent run's children); False (and one
    warning naming the command to rerun) when they could not be written, which makes the study's exit
    status non-zero."""
    try:
        from analysis.report import write_reports
    except ImportError:
        return True
    hold("report")  # fault injection (tests only)
    try:
        # the study printed its own table: of the report, only its warnings and where it went
        write_reports(experiment, uri, report_dir, parent=parent,
                      log=lambda line: line.startswith(("WARNING", "wrote")) and print(line))
        return True
    except Exception as e:  # noqa: BLE001 - the trials are done and trials.csv is written; say what failed
        print(f"WARNING: the paper tables were not written ({type(e).__name__}: {str(e)[:300]}); rerun "
              f"`python -m analysis.report --experiment {experiment} --mlflow-uri {uri}` once MLflow is reachable",
              file=sys.stderr)
        return False
