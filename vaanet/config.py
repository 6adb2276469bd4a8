"""Typed run configuration: model, data, optimisation and run settings in one tree.

Loaded from YAML (``configs/*.yaml``) with ``key=value`` overrides, validated once here, flattened into
``section.key`` pairs for MLflow params. Unknown keys are errors, never silently ignored.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .credentials import take_credentials
from .data.dataset import SamplingConfig
from .classes import DATASET_CLASSES
from .models.vaanet import ModelConfig


@dataclass
class DataConfig:
    dataset: str = "ve8"  # class list: ve8 | e6 (the synthetic set uses one of them)
    cache: str = "data/synth/cache"  # output of `vaanet prepare`
    split: str = "data/synth/cache/splits/split_00.csv"  # output of `vaanet splits`
    truth: str | None = None  # synth_truth.csv: score attention against the ground truth
    audio_frames: int = 256  # MFCC frames per segment
    audio_alignment: str = "aligned"  # aligned | reference
    temporal_views: int = 1  # test-time views (scores averaged)
    spatial_views: int = 1
    samples_per_video: int = 1
    num_workers: int = 2  # DataLoader processes per training worker

    def __post_init__(self):
        if self.dataset not in DATASET_CLASSES:
            raise ValueError(f"data.dataset must be one of {sorted(DATASET_CLASSES)}, got {self.dataset!r}")
        if self.num_workers < 0:
            raise ValueError("data.num_workers must be >= 0")

    @property
    def classes(self) -> tuple[str, ...]:
        return DATASET_CLASSES[self.dataset]


@dataclass
class OptimConfig:
    lr: float = 2e-4  # Adam, as the paper
    weight_decay: float = 0.0
    epochs: int = 150
    batch_size: int = 32  # effective batch (videos per optimiser step, all workers together)
    micro_batch: int = 0  # videos per forward pass and worker; 0 = the whole per-worker batch
    loss: str = "pcce"  # pcce | ce
    lam: float = 0.5  # PCCE lambda

    def __post_init__(self):
        if self.loss not in ("pcce", "ce"):
            raise ValueError(f"optim.loss must be 'pcce' or 'ce', got {self.loss!r}")
        if self.lr <= 0 or self.epochs < 1 or self.batch_size < 1 or self.micro_batch < 0 or self.lam < 0:
            raise ValueError("optim: need lr > 0, epochs >= 1, batch_size >= 1, micro_batch >= 0, lam >= 0")
        if self.micro_batch and self.micro_batch < self.batch_size and self.batch_size % self.micro_batch:
            raise ValueError(f"optim.micro_batch={self.micro_batch} does not divide optim.batch_size={self.batch_size}: "
                             f"each step would train on {-(-self.batch_size // self.micro_batch) * self.micro_batch} "
                             f"videos; use a divisor ({divisors(self.batch_size)})")


    @property
    def effective_lambda(self) -> float:
        return 0.0 if self.loss == "ce" else self.lam


def divisors(n: int) -> str:
    """'1, 2, 4, 8' for 8: the batch sizes a micro-batch may have."""
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


@dataclass
class RunConfig:
    seed: int = 0
    name: str = "vaanet"  # run name (Ray result folder and MLflow run name)
    output: str = "runs"  # where Ray Train writes results and checkpoints
    mlflow_uri: str | None = None  # None: sqlite:///mlflow.db in the working folder
    experiment: str = "vaanet"
    bf16: bool = True  # autocast on CUDA only
    compile: bool = False  # torch.compile the backbone (falls back to eager where it cannot compile)
    threads: int = 0  # torch CPU threads per worker; 0 = torch's default
    checkpoint_every: int = 10  # epochs between resumable checkpoints (the last epoch always); see `vaanet estimate`
    system_metrics: bool | None = None  # MLflow system metrics (CPU, memory, disk, network, GPU); None: on with CUDA
    fail_at_epoch: int = -1  # fault injection for tests: raise once at this epoch
    tags: dict[str, str] = field(default_factory=dict)  # study, table, preset, ... for analysis

    def __post_init__(self):
        if self.mlflow_uri:  # credentials never live in a config (params, checkpoints, Tune's files)
            self.mlflow_uri = take_credentials(self.mlflow_uri)
        for key in ("name", "experiment"):  # both become folder names under run.output
            check_name(getattr(self, key), f"run.{key}")
        if self.threads < 0:
            raise ValueError(f"run.threads must be >= 0, got {self.threads}")
        if self.checkpoint_every < 1:
            raise ValueError(f"run.checkpoint_every must be >= 1 (epochs), got {self.checkpoint_every}")


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=@-]*")


def check_name(value: str, key: str) -> str:
    """A name that becomes a folder: letters, digits and ._+=@- (no path separators, no '..')."""
    if not NAME_PATTERN.fullmatch(value) or ".." in value:
        raise ValueError(f"{key}={value!r} is not a valid name: it becomes a folder, so use letters, digits and "
                         "._+=@- only (no '/', no '..', not starting with '.'), e.g. vs-pcce_lr1e-4")
    return value


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self):
        if self.model.num_classes != len(self.data.classes):
            raise ValueError(f"model.num_classes={self.model.num_classes} but data.dataset={self.data.dataset!r} "
                             f"has {len(self.data.classes)} classes")
        try:
            self.sampling  # noqa: B018 - validates the sampling values here, not inside a data-loader worker
        except ValueError as e:
            raise ValueError(f"invalid sampling (model.segments/frames/crop_size, data.*): {e}") from e

    @property
    def sampling(self) -> SamplingConfig:
        m, d = self.model, self.data
        return SamplingConfig(segments=m.segments, frames=m.frames, crop_size=m.crop_size, audio_frames=d.audio_frames,
                              audio_alignment=d.audio_alignment, temporal_views=d.temporal_views,
                              spatial_views=d.spatial_views, samples_per_video=d.samples_per_video)

    def check_files(self) -> None:
        """Fail before any training when an input file is missing, naming the file and the fix."""
        problems = []
        cache = Path(self.data.cache)
        if not (cache / "index.csv").is_file():
            problems.append(f"data.cache={cache} holds no index.csv: run `vaanet prepare --root <videos> --out {cache}`")
        if not Path(self.data.split).is_file():
            problems.append(f"data.split={self.data.split} not found: run `vaanet splits --cache {cache}`")
        if self.data.truth and not Path(self.data.truth).is_file():
            problems.append(f"data.truth={self.data.truth} not found (synth_truth.csv of `vaanet synth`; or unset it)")
        for key in ("visual_weights", "audio_weights"):
            value = getattr(self.model, key)
            if value and not Path(value).is_file():
                problems.append(f"model.{key}={value} not found: weights are never downloaded; put the file there")
        if problems:
            raise FileNotFoundError("; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        return _build(cls, d, "")

    def flat(self) -> dict[str, Any]:
        """``{'model.depth': 101, ...}`` for MLflow params (tags dict excluded)."""
        out = {}
        for section, values in self.to_dict().items():
            for k, v in values.items():
                if k != "tags":
                    out[f"{section}.{k}"] = v
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _coerce(tp, value, where):
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(args[0], value, where)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, where + ".")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ValueError(f"{where} must be true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads 3e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{where} must be a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be a string, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return {str(k): str(v) for k, v in value.items()}
    return value


# Keys removed after vaanet 0.1.0 (commit 6ee84a4), with the value that was their default (issue #27: research
# options of issue #12 that no config, preset or documented benchmark uses). A config file or checkpoint naming one
# at that value loads (the model it describes is the same), with one note; at any other value it is refused.
REMOVED_KEYS = {"model.": {"spatial_rate": 1.0, "temporal_rate": 1.0, "audio_temporal_inhibition": 0.0,
                           "channel_init": "random"}}
LAST_VERSION = "vaanet 0.1.0 (commit 6ee84a4)"


def _drop_removed(d: dict, prefix: str) -> dict:
    removed = {k: v for k, v in d.items() if k in REMOVED_KEYS.get(prefix, {})}
    if not removed:
        return d
    changed = [f"{prefix}{k}={v!r}" for k, v in removed.items() if v != REMOVED_KEYS[prefix][k]
               or isinstance(v, bool) or type(v) not in (type(REMOVED_KEYS[prefix][k]), int)]
    if changed:
        raise ValueError(f"{', '.join(changed)}: this option was removed (the last version that had it: "
                         f"{LAST_VERSION}); only its old default "
                         f"({', '.join(f'{k}={REMOVED_KEYS[prefix][k]!r}' for k in removed)}) is accepted, as a no-op")
    import warnings

    warnings.warn(f"{', '.join(f'{prefix}{k}' for k in removed)}: removed after {LAST_VERSION}; given at the old "
                  "default, which is what this version does, so ignored", stacklevel=4)
    return {k: v for k, v in d.items() if k not in removed}


def _build(cls, d, prefix: str):
    if not isinstance(d, dict):
        raise ValueError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {d!r}")
    d = _drop_removed(d, prefix)
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown config keys {[prefix + k for k in unknown]}; valid keys under "
                         f"{prefix.rstrip('.') or 'the top level'}: {sorted(known)}")
    return cls(**{k: _coerce(hints[k], v, prefix + k) for k, v in d.items()})


def _set(tree: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ValueError(f"cannot set {dotted}: {k} is not a section")
    node[keys[-1]] = value


def _expand_preset(tree: dict) -> None:
    model = tree.get("model")
    if isinstance(model, dict) and "preset" in model:
        preset = model.pop("preset")
        switches = {k: getattr(ModelConfig.from_preset(preset), k) for k in PRESET_SWITCHES}
        tree["model"] = {**switches, **model}


PRESET_SWITCHES = ("visual", "audio", "spatial_attention", "channel_attention", "temporal_attention", "audio_attention")


class _Loader(yaml.SafeLoader):
    """YAML as PyYAML reads it, except integers: PyYAML follows YAML 1.1, where ``010`` is octal 8 and ``1:30``
    is 90 (base 60), so ``run.seed=010`` silently ran seed 8. Here ``010`` is 10 (as in YAML 1.2 and Python's
    int("010")), and ``1:30`` stays the string it looks like (an integer key then refuses it)."""


def _construct_int(loader, node):
    text = loader.construct_scalar(node)
    if ":" in text:
        return text
    digits = text.replace("_", "")
    sign, digits = (-1, digits[1:]) if digits[0] == "-" else (1, digits.lstrip("+"))
    base = {"0x": 16, "0b": 2}.get(digits[:2].lower(), 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def read_yaml(text: str):
    """A config file's or a --set value's YAML (see :class:`_Loader` for integers)."""
    return yaml.load(text, Loader=_Loader)


def parse_overrides(overrides) -> list[tuple[str, Any]]:
    out = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like section.key=value, e.g. optim.lr=1e-4")
        key, raw = item.split("=", 1)
        out.append((key.strip(), read_yaml(raw)))
    return out


def flag_overrides(sets, flags: dict[str, tuple[str, Any]]) -> list[str]:
    """Command-line flags that name a config key are shorthands for ``--set``: one override mechanism,
    applied over the YAML. ``flags = {"optim.epochs": ("--epochs", 3), ...}`` (value None = not given).
    A flag and a ``--set`` naming the same key with different values is an error, never a silent choice."""
    given = dict(parse_overrides(sets))
    out = list(sets)
    for key, (flag, value) in flags.items():
        if value is None:
            continue
        if key in given and given[key] != value:
            raise ValueError(f"{flag} {value} and --set {key}={given[key]} disagree; give only one of them")
        out.append(f"{key}={json.dumps(value)}")
    return out


def with_overrides(cfg: Config, overrides: dict[str, Any]) -> Config:
    """A copy of ``cfg`` with ``{'section.key': value}`` applied (``model.preset`` expands)."""
    tree = cfg.to_dict()
    if "model.preset" in overrides:
        for k in PRESET_SWITCHES:
            tree["model"].pop(k)
    for key, value in overrides.items():
        _set(tree, key, value)
    _expand_preset(tree)
    return Config.from_dict(tree)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """YAML file (optional) + ``section.key=value`` overrides (values parsed as YAML) -> Config.
    A ``preset: NAME`` key under ``model`` expands to the preset's switches."""
    tree: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found (see configs/ for examples)")
        try:
            tree = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path} is not valid YAML: {e}") from e
    parsed = parse_overrides(overrides)
    if any(key == "model.preset" for key, _ in parsed) and isinstance(tree.get("model"), dict):
        for k in PRESET_SWITCHES:  # the preset asked for sets them (a switch given with --set still wins)
            tree["model"].pop(k, None)
    for key, value in parsed:
        _set(tree, key, value)
    try:
        _expand_preset(tree)
        return Config.from_dict(tree)
    except ValueError as e:
        raise ValueError(f"{path or 'config'}: {e}") from e
