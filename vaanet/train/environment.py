"""The environment record of a run: what its numbers depend on besides the config and the code's commit.

:func:`collect` returns one JSON-able dict (``environment.json``, an artifact of every run and of a study's
parent run): the code (commit, whether the tree had uncommitted changes and their digest; the ``git diff``
itself is written beside as ``git_diff.patch``), the data (digests of the split file and of the cache's
index and prepare manifest), the software (Python, torch, torchvision, torchaudio, ray, mlflow, numpy,
PyAV and its FFmpeg libraries), the device (CPU model and count, GPU model, driver, CUDA, cuDNN), the
precision actually used (``run.bf16`` takes effect only on a CUDA device) and the determinism settings.
``vaanet verify`` reads it back (:mod:`vaanet.verify`). Also the code's provenance for the run's tags
(:func:`git_commit`, :func:`code_version`) and :func:`record_environment`, the record of a run created
outside the tracker (a study's parent run).
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

import vaanet

ENVIRONMENT_FILE = "environment.json"  # in the run folder and as the run's artifact
DIFF_FILE = "git_diff.patch"  # the uncommitted changes of tracked files, when the tree was dirty
PACKAGES = ("torch", "torchvision", "torchaudio", "ray", "mlflow", "numpy", "av")


def code_root() -> Path:
    """The checkout vaanet runs from."""
    return Path(vaanet.__file__).resolve().parent.parent


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=20)
    except Exception:  # noqa: BLE001 - no git is fine
        return None
    return out.stdout if out.returncode == 0 else None


def git_state(root: str | Path | None = None) -> dict:
    """``{"commit", "dirty", "diff_sha256", "diff"}`` of the checkout at ``root`` (default: vaanet's own);
    ``diff`` is ``git diff HEAD`` of the tracked files (untracked files are not code the run imported
    unless added). Outside a git checkout: commit ''."""
    root = Path(root) if root is not None else code_root()
    commit = (_git(root, "rev-parse", "HEAD") or "").strip()
    diff = _git(root, "diff", "HEAD", "--no-color", "--no-ext-diff") if commit else None
    diff = diff or ""
    return {"commit": commit, "dirty": bool(diff), "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff else "",
            "diff": diff}


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file ('' when it does not exist)."""
    path = Path(path)
    if not path.is_file():
        return ""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_digest(split: str | Path, cache: str | Path) -> dict:
    """Digests of what a run reads: the split file, the cache's index (one line per prepared video, with its
    frame count and class) and its prepare manifest."""
    from ..data.ingest import MANIFEST_FILE

    return {"split": str(split), "split_sha256": file_sha256(split),
            "index_sha256": file_sha256(Path(cache) / "index.csv"),
            "manifest_sha256": file_sha256(Path(cache) / MANIFEST_FILE)}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return ""


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def software() -> dict:
    out = {"python": platform.python_version(), **{name: _version(name) for name in PACKAGES}}
    try:
        import av

        out["ffmpeg"] = {lib: ".".join(map(str, v)) for lib, v in av.library_versions.items()}
    except Exception:  # noqa: BLE001 - PyAV missing: the record says so
        out["ffmpeg"] = {}
    return out


def device_info(device: str) -> dict:
    """The CPU always; on a CUDA device also its GPU model, count, driver, CUDA and cuDNN versions."""
    import torch

    out = {"type": device, "cpu_model": _cpu_model(), "cpu_count": os.cpu_count(),
           "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
           "gpu_model": "", "gpu_count": 0, "driver": "", "cuda": torch.version.cuda or "",
           "cudnn": str(torch.backends.cudnn.version() or "") if torch.backends.cudnn.is_available() else ""}
    if device == "cuda" and torch.cuda.is_available():
        out["gpu_model"] = torch.cuda.get_device_name(0)
        out["gpu_count"] = torch.cuda.device_count()
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.split()
            out["driver"] = smi[0] if smi else ""
        except Exception:  # noqa: BLE001 - no nvidia-smi
            pass
    return out


def precision(device: str, bf16: bool) -> str:
    """The precision training computes in: bf16 autocast only on a CUDA device (vaanet/train/loop.py)."""
    return "bf16-autocast" if (device == "cuda" and bf16) else "fp32"


def determinism(device: str, seed) -> dict:
    """The settings that decide whether a rerun gives the same numbers. On a CPU the loop is bit-for-bit
    repeatable (seeded weights and batches, no autotuning); on a GPU cuDNN autotuning and atomics are not."""
    import torch

    return {"seed": seed, "torch_threads": torch.get_num_threads(),
            "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
            "cudnn_deterministic": bool(torch.backends.cudnn.deterministic),
            "deterministic_algorithms": bool(torch.are_deterministic_algorithms_enabled()),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
            "deterministic": device == "cpu" or (bool(torch.are_deterministic_algorithms_enabled())
                                                 and not torch.backends.cudnn.benchmark)}


def collect(device: str = "cpu", bf16: bool = False, seed=None, split=None, cache=None, git: dict | None = None) -> dict:
    """The environment record (without the diff text itself: that is ``git_diff.patch``)."""
    git = git if git is not None else git_state()
    record = {"vaanet": vaanet.__version__,
              "git": {k: v for k, v in git.items() if k != "diff"},
              "software": software(), "device": device_info(device), "precision": precision(device, bool(bf16)),
              "determinism": determinism(device, seed), "host": platform.node(), "platform": platform.platform()}
    if split is not None and cache is not None:
        record["data"] = data_digest(split, cache)
    return record


def summary(record: dict) -> tuple[dict, dict]:
    """(params, tags) that put the record's gist in MLflow's run table: ``env.*`` params, ``dirty`` /
    ``precision`` / ``deterministic`` tags."""
    sw, dev = record["software"], record["device"]
    params = {"env.python": sw["python"], "env.torch": sw["torch"], "env.device": dev["gpu_model"] or dev["cpu_model"],
              "env.precision": record["precision"]}
    tags = {"dirty": str(record["git"]["dirty"]).lower(), "precision": record["precision"],
            "deterministic": str(record["determinism"]["deterministic"]).lower()}
    return params, tags


def write(folder: str | Path, record: dict, diff: str = "") -> list[Path]:
    """``environment.json`` (and ``git_diff.patch`` when ``diff``) in ``folder``; returns the paths."""
    import json

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / ENVIRONMENT_FILE]
    paths[0].write_text(json.dumps(record, indent=1, sort_keys=True))
    if diff:
        paths.append(folder / DIFF_FILE)
        paths[1].write_text(diff)
    return paths


def git_commit() -> str:
    """The full commit of the vaanet checkout ('' when it is not a git checkout)."""
    root = Path(vaanet.__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001 - no git is fine
        return ""


def code_version() -> str:
    """vaanet's version and the checkout's short commit (``0.1.0+abc1234``; the version alone outside git)."""
    root = Path(vaanet.__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except Exception:  # noqa: BLE001 - no git is fine
        sha = ""
    return f"{vaanet.__version__}+{sha}" if sha else vaanet.__version__


def record_environment(client, run_id: str, cfg) -> None:
    """The environment record of a run created outside :class:`~vaanet.train.tracking.Tracker` (a study's parent
    run): the driver's device, ``cfg``'s (a :class:`vaanet.config.Config`) precision, seed and data, logged as
    :meth:`~vaanet.train.tracking.Tracker.start` logs a trial's."""
    import tempfile

    import torch
    from mlflow.entities import Param, RunTag

    device = "cuda" if torch.cuda.is_available() else "cpu"
    git = git_state()
    record = collect(device, cfg.run.bf16, cfg.run.seed, cfg.data.split, cfg.data.cache, git)
    params, tags = summary(record)
    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    with tempfile.TemporaryDirectory(prefix="vaanet-env-") as tmp:
        for path in write(tmp, record, git["diff"]):
            client.log_artifact(run_id, str(path))


__all__ = ["collect", "git_state", "data_digest", "summary", "write", "ENVIRONMENT_FILE", "DIFF_FILE", "code_root",
           "git_commit", "code_version", "record_environment"]
