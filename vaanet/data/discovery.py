"""Finding the videos of a data set tree, ``<root>/<Class>/<video file>``, and giving each a unique id.

Class folders match the canonical class names case-insensitively, one folder per class (two spellings of
one class are refused, naming both). A video's id is a pure function of the tree (:func:`_video_ids`), so a
resumed ``vaanet prepare`` and any worker count agree on it. Used by :mod:`vaanet.data.ingest`.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

VIDEO_EXTENSIONS = {".mp4", ".flv", ".avi", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp"}


@dataclass
class Job:
    video_id: str
    class_name: str
    label: int
    path: str


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _clashes(ids: list[str]) -> list[bool]:
    # case-insensitive: an id names a folder, and 'Clip' and 'clip' are one folder on macOS/Windows
    counts = Counter(i.lower() for i in ids)
    return [counts[i.lower()] > 1 for i in ids]


def _video_ids(found: list[tuple[str, Path]], root: Path) -> tuple[list[str], list[str]]:
    """Unique ids, a pure function of the tree (so resumed runs and any worker count agree): the file
    name; qualified by class (<Class>__<name>) when the name occurs more than once; plus a hash of the
    path inside ``root`` when still ambiguous (``clip.mp4`` + ``clip.avi``, ``a b.mp4`` + ``a_b.mp4``).
    Returns the ids and notes."""
    ids = [_safe(p.stem) for _, p in found]
    qualified = _clashes(ids)
    ids = [f"{c}__{i}" if q else i for (c, _), i, q in zip(found, ids, qualified)]
    hashed = _clashes(ids)
    ids = [f"{i}__{hashlib.sha1(p.relative_to(root).as_posix().encode()).hexdigest()[:8]}" if h else i
           for (_, p), i, h in zip(found, ids, hashed)]
    if any(_clashes(ids)):  # a hash collision: not expected in practice, never silently merged
        raise RuntimeError(f"could not make unique video ids under {root}: {sorted(set(ids))[:5]}; rename the files")
    notes = []
    if any(qualified):
        names = sorted({_safe(p.stem) for (_, p), q in zip(found, qualified) if q})
        notes.append(f"{len(names)} video names occur more than once and were kept as class-qualified ids "
                     f"(<Class>__<name>): {names[:5]}")
    if any(hashed):
        notes.append(f"{sum(hashed)} videos share a name within a class (other extension or characters) "
                     f"and got a path hash in their id: {[i for i, h in zip(ids, hashed) if h][:4]}")
    return ids, notes


def discover(root: str | Path, classes: tuple[str, ...]) -> tuple[list[Job], list[dict], list[str]]:
    """Find ``<root>/<Class>/<video>``. Returns jobs (absolute paths, unique ids), failures (empty or
    missing class folders, files that are not videos by extension) and notes. Raises ValueError when two
    folders are one class (``Anger/`` and ``anger/``): which one to use, or whether they hold copies, is
    for the researcher to say."""
    root = Path(os.path.abspath(root))  # absolute: the index must not depend on the working directory
    if not root.is_dir():
        raise FileNotFoundError(f"data root {root} does not exist; expected <root>/<Class>/<video files>")
    canonical = {c.lower(): c for c in classes}
    matches: dict[str, list[Path]] = {}
    unknown = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name.lower() in canonical:
            matches.setdefault(canonical[d.name.lower()], []).append(d)
        elif not d.name.startswith("."):
            unknown.append(d.name)
    twice = {c: ds for c, ds in matches.items() if len(ds) > 1}
    if twice:  # one would replace the other and drop its videos; merged, copies would count twice (or leak)
        named = "; ".join(f"{c}: {', '.join(repr(d.name) for d in ds)}" for c, ds in twice.items())
        raise ValueError(
            f"more than one folder under {root} is the same class (class folders match case-insensitively): "
            f"{named}; merge each class's videos into one folder (or rename a folder that holds another class)"
        )
    folders = {c: ds[0] for c, ds in matches.items()}
    if not folders:
        raise FileNotFoundError(
            f"no class folders under {root}: expected folders named like {list(classes)} "
            f"(case-insensitive){'; found ' + str(unknown) if unknown else ''}"
        )
    failures, notes, found = [], [], []
    if unknown:
        notes.append(f"ignored folders that are not classes of this data set: {unknown}")
    for c in classes:
        if c not in folders:
            failures.append(dict(video_id="", class_name=c, path=str(root / c), reason="class folder missing"))
            continue
        files = sorted(p for p in folders[c].rglob("*") if p.is_file() and not p.name.startswith("."))
        videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS]
        for p in files:
            if p.suffix.lower() not in VIDEO_EXTENSIONS:
                failures.append(dict(video_id="", class_name=c, path=str(p),
                                     reason=f"not a video file (extension {p.suffix or 'none'})"))
        if not videos:
            failures.append(dict(video_id="", class_name=c, path=str(folders[c]), reason="class folder is empty"))
        found += [(c, p) for p in videos]
    ids, id_notes = _video_ids(found, root)
    jobs = [Job(vid, c, classes.index(c), str(p)) for vid, (c, p) in zip(ids, found)]
    return jobs, failures, notes + id_notes
