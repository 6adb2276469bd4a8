"""A study's data, prepared once before any trial, and its digest.

:func:`ensure_data` makes the cache and split files (generating the synthetic set when it is missing or was
made with other settings); :func:`data_digest` hashes what the trials read, so that a study rerun on other
data is a changed request; :func:`stored_digest` reads the digest of a study.json written by an older version.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd


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

