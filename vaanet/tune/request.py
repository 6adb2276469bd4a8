"""What a study asks for, checked before any data is prepared or Ray started.

A :class:`Study` (name, paper tables, grid of overrides) and this command's flags make the base config
(:func:`_base_config`, ``--set`` checked against the keys the study owns) and the grid points (one per row x
split x seed, :func:`_points`). :func:`_request` is the whole request as plain JSON, stored in ``study.json``
and compared with :func:`_differences` on every rerun; :func:`_holds_parent` tells whether a store reached at
another address still holds the study's parent run.
"""
from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import PRESET_SWITCHES, Config, check_name, flag_overrides, load_config, parse_overrides, with_overrides
from ..train.loop import RESUME_RUN_KEYS
from ..train.store import check_reachable

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

