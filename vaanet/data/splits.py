"""``vaanet splits``: train / validation / test partitions written to CSV files that runs name.

* VE-8: ``n`` stratified random splits, per class 2/3 train and 1/3 test (the paper's protocol).
* Ekman-6: the official split from its train/test lists.
In both, a stratified validation subset is carved out of train, so model selection never looks at
the test set (the reference code selected its best epoch on test). Everything is a pure function of
the index and the seed; the files are sorted, so the same seed gives the same bytes.

Checked when written: no video in two subsets, and a validation subset that is not empty (training
selects its epoch on it) unless ``val_fraction`` is 0; classes left without a validation video are
named in a warning.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SUBSETS = ("train", "val", "test")


def _carve(ids: list[str], fraction: float, rng: np.random.Generator, minimum: int) -> tuple[list[str], list[str]]:
    """Split sorted ``ids`` into (rest, carved) with round(fraction * n) carved (at least ``minimum``
    when fraction > 0 and at least two ids remain)."""
    ids = sorted(ids)
    perm = [ids[i] for i in rng.permutation(len(ids))]
    k = int(round(fraction * len(ids)))
    if fraction > 0 and len(ids) >= 2:
        k = min(max(k, minimum), len(ids) - 1)
    return perm[k:], perm[:k]


def stratified_split(index: pd.DataFrame, seed: int, split: int, test_fraction: float = 1 / 3,
                     val_fraction: float = 0.1) -> pd.DataFrame:
    """One random stratified split: columns video_id, label, class_name, subset."""
    if not 0 < test_fraction < 1 or not 0 <= val_fraction < 1:
        raise ValueError(f"need 0 < test_fraction < 1 and 0 <= val_fraction < 1, got {test_fraction}, {val_fraction}")
    rng = np.random.default_rng([seed, split])
    rows = []
    for label, group in index.groupby("label", sort=True):
        train, test = _carve(group["video_id"].tolist(), test_fraction, rng, minimum=1)
        train, val = _carve(train, val_fraction, rng, minimum=1)
        name = group["class_name"].iloc[0]
        rows += [(v, int(label), name, s) for s, vs in (("train", train), ("val", val), ("test", test)) for v in vs]
    return pd.DataFrame(rows, columns=["video_id", "label", "class_name", "subset"]).sort_values("video_id", ignore_index=True)


def _read_list(path: Path) -> list[tuple[str, str]]:
    """UCF101-style list: lines 'Class/video.ext' with an optional trailing label number."""
    if not path.is_file():
        raise FileNotFoundError(f"split list {path} not found")
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        rel = line.split()[0]
        if "/" not in rel:
            raise ValueError(f"{path}: line {line!r} is not of the form Class/video.ext")
        cls, name = rel.split("/", 1)
        out.append((cls.lower(), Path(name).stem))
    return out


def official_split(index: pd.DataFrame, train_list: str | Path, test_list: str | Path, seed: int = 0,
                   val_fraction: float = 0.1, log=print) -> pd.DataFrame:
    """The data set's own train/test lists (Ekman-6), with validation carved from train."""
    key = {(c.lower(), Path(p).stem): v for c, p, v in zip(index["class_name"], index["path"], index["video_id"])}
    subsets: dict[str, str] = {}
    missing = []
    for subset, path in (("train", Path(train_list)), ("test", Path(test_list))):
        for entry in _read_list(path):
            if entry in key:
                subsets[key[entry]] = subset
            else:
                missing.append(f"{entry[0]}/{entry[1]}")
    if missing:
        log(f"warning: {len(missing)} listed videos are not in the index (failed or absent): {missing[:5]}")
    if not subsets:
        raise ValueError(f"none of the videos in {train_list} / {test_list} is in the index; wrong data root?")
    frame = index[index["video_id"].isin(subsets)].copy()
    frame["subset"] = frame["video_id"].map(subsets)
    rng = np.random.default_rng([seed, 0])
    val_ids = set()
    for _, group in frame[frame["subset"] == "train"].groupby("label", sort=True):
        val_ids |= set(_carve(group["video_id"].tolist(), val_fraction, rng, minimum=1)[1])
    frame.loc[frame["video_id"].isin(val_ids), "subset"] = "val"
    return frame[["video_id", "label", "class_name", "subset"]].sort_values("video_id", ignore_index=True)


def check_disjoint(frame: pd.DataFrame, path: str | Path) -> None:
    """Raise when a video id is listed more than once (so possibly in two subsets) in split ``path``."""
    dups = frame.loc[frame["video_id"].duplicated(keep=False)]
    if len(dups):
        where = {v: sorted(set(g["subset"])) for v, g in dups.groupby("video_id")}
        raise ValueError(f"{path}: {len(where)} video ids occur more than once (subsets {dict(list(where.items())[:5])}); "
                         f"a video must be in one subset only - the index has duplicate ids, prepare it again "
                         f"with this version of vaanet and make the splits anew")


def _check_val(frame: pd.DataFrame, path: Path, val_fraction: float, log) -> None:
    if val_fraction == 0:  # asked for: no model selection data (benchmarks); training needs one
        log(f"note: {path} has no validation subset (val_fraction 0); training needs one")
        return
    has_val = set(frame.loc[frame["subset"] == "val", "class_name"])
    if not has_val:
        raise ValueError(f"{path}: the validation subset would be empty (val_fraction {val_fraction} of "
                         f"{int((frame['subset'] == 'train').sum())} training videos); raise --val-fraction or add videos")
    train = frame.loc[frame["subset"] == "train", "class_name"]
    lacking = sorted(set(train) - has_val)
    if lacking:
        log(f"WARNING: {path}: no validation video of class(es) {lacking} (too few videos); validation "
            f"accuracy will not see them - raise --val-fraction or add videos of these classes")


def write_split(frame: pd.DataFrame, path: str | Path) -> Path:
    path = Path(path)
    check_disjoint(frame, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    frame.to_csv(tmp, index=False, lineterminator="\n")
    tmp.replace(path)
    return path


def make_splits(index: pd.DataFrame, out_dir: str | Path, n: int = 10, seed: int = 0, val_fraction: float = 0.1,
                test_fraction: float = 1 / 3, train_list=None, test_list=None, log=print) -> list[Path]:
    """Write ``split_00.csv`` ... (random) or ``official.csv`` (lists given) under ``out_dir``. Raises
    before writing anything when a split would be unusable (see the module doc)."""
    out_dir = Path(out_dir)
    if train_list or test_list:
        if not (train_list and test_list):
            raise ValueError("an official split needs both --train-list and --test-list")
        frames = {out_dir / "official.csv": official_split(index, train_list, test_list, seed, val_fraction, log)}
    else:
        if n < 1:
            raise ValueError(f"number of splits must be >= 1, got {n}")
        frames = {out_dir / f"split_{i:02d}.csv": stratified_split(index, seed, i, test_fraction, val_fraction)
                  for i in range(n)}
    for p, frame in frames.items():
        check_disjoint(frame, p)
        _check_val(frame, p, val_fraction, log)
    paths = [write_split(frame, p) for p, frame in frames.items()]
    for p in paths:
        counts = pd.read_csv(p)["subset"].value_counts().reindex(list(SUBSETS), fill_value=0)
        log(f"{p}: " + ", ".join(f"{s} {c}" for s, c in counts.items()))
    return paths


def load_split(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"split file {path} not found: run `vaanet splits` first")
    frame = pd.read_csv(path, dtype={"video_id": str})
    bad = set(frame["subset"]) - set(SUBSETS)
    if bad or not {"video_id", "label", "subset"} <= set(frame.columns):
        raise ValueError(f"{path} is not a split file (columns video_id,label,class_name,subset; subsets {SUBSETS})")
    return frame
