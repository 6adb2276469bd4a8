import atexit
import inspect
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import lru_cache
from pathlib import Path

import pytest
import torch

os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
# under pytest-xdist (pyproject: -n 2) each worker process gets one of the cores
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)

# Tests never share a Ray. Every test runs with a Ray temp folder of its own (RAY_TMPDIR, a short path: Ray's
# sockets live there) and a token file of its own (RAY_AUTH_TOKEN_PATH); a local study or run starts its own
# Ray (never ray.init() without an address), and a cluster a test starts with `ray start --block` is stopped
# by its own process ids (:func:`stop_ray`), never by `ray stop`. So two tests that start Ray may run at once
# (one on each xdist worker); the modules that hold such tests run first, where their minutes spread over both
# workers, and the quick modules fill in at the end.
RAY_USE = re.compile(r"\bray\b|experiments|_study|study\(|TorchTrainer|ablation|comparison|lambda_sweep|"
                     r"make_trainer|trainable|tune\.")
# What starts Ray (a cluster of the test's, a study or a Ray Train run): the modules that hold such tests run
# first. RAY_USE above, broader, sorts tests into the slow tier.
RAY_START = re.compile(r"ray_start\(|ray\.init|init_ray|TorchTrainer|make_trainer|trainable|Tuner|ray\W+(up|exec)|"
                       r"experiments[\"']\s*/|experiments/\w+\.py|_study\(|run_study")


# For a client a test expects to be refused: Ray tries to reach the GCS 20 times, 1 s apart, before it gives up
# (a refused client fails each try); two tries say the same in 2 s
GIVE_UP_SOON = {"RAY_NUM_REDIS_GET_RETRIES": "2"}


def private_ray_env(env: dict | None = None) -> dict:
    """``env`` (default: this process's) with a fresh Ray temp folder and token file path of its own."""
    folder = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    atexit.register(shutil.rmtree, folder, True)
    return {**(os.environ if env is None else env), "RAY_TMPDIR": folder,
            "RAY_AUTH_TOKEN_PATH": os.path.join(folder, "auth_token")}


os.environ.update({k: v for k, v in private_ray_env().items() if k.startswith("RAY_")})  # module fixtures


@pytest.fixture(autouse=True)
def _private_ray(monkeypatch):
    """Each test's Ray (and its subprocesses') gets a temp folder and token file of its own."""
    env = private_ray_env()
    for key in ("RAY_TMPDIR", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.setenv(key, env[key])
    yield
    shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)


def ray_start(args: list[str], env: dict, log: Path, timeout: float = 180) -> "subprocess.Popen":
    """``ray start --block ARGS`` as a process of this test (its own session), started once Ray says so.
    ``env`` should come from :func:`private_ray_env`; stop it with :func:`stop_ray`."""
    import subprocess
    import time

    ray_bin = str(Path(sys.executable).parent / "ray")
    env = {"RAY_DISABLE_USAGE_STATS": "1", "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", **env}
    with open(log, "ab") as out:
        proc = subprocess.Popen([ray_bin, "start", "--block", "--disable-usage-stats", *args], env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    proc.ray_tmpdir = env["RAY_TMPDIR"]
    deadline = time.time() + timeout
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.time() > deadline:
            stop_ray(proc)
            raise AssertionError(f"ray start {' '.join(args)} did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)
    return proc


def stop_ray(proc) -> None:
    """Stop a Ray node of :func:`ray_start` by its own process ids: SIGTERM to its process group (``ray start
    --block`` stops the processes it started), SIGKILL to the group if it is not gone within 10 s (its SIGTERM
    handler can hang), then SIGKILL to any process still running in its session or from its temp folder (Ray's
    agents rename themselves, ``ray::DashboardAgent``, and outlive their raylet by a minute or more). Nobody
    else's Ray is touched."""
    import psutil

    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 30)):
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
            break
        except ProcessLookupError:
            break
        except subprocess.TimeoutExpired:
            continue
    mine = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.info["pid"] != os.getpid() and (os.getsid(p.info["pid"]) == proc.pid or
                                                  any(proc.ray_tmpdir in part for part in p.info["cmdline"] or ())):
                mine.append(p)
        except (OSError, psutil.Error, TypeError):
            continue
    kill_processes(mine)


def kill_processes(procs: list) -> None:
    """SIGKILL each of these psutil processes (this test's own, found by their ids) and wait for them."""
    import psutil

    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(procs, timeout=30)


def _uses_ray(item, pattern: re.Pattern = RAY_USE) -> bool:
    sources = [getattr(item, "function", None)]
    for name in getattr(item, "fixturenames", ()):
        for fixture in item._fixtureinfo.name2fixturedefs.get(name, ()):
            sources.append(fixture.func)
    for obj in sources:
        try:
            if obj is not None and pattern.search(inspect.getsource(obj)):
                return True
        except (OSError, TypeError):
            continue
    return False


# The fast tier (`./run.sh test -m "not slow"`) leaves out every test that starts Ray, a server, a cluster or a
# study, the tests that kill a process pool (marked slow where they are) and these modules of such tests (kills,
# benchmarks at a tiny size, ray up, SLURM, MLflow outages)
SLOW_MODULES = {"test_benchmark_smoke", "test_cluster_security", "test_faults", "test_kills", "test_local_ray",
                "test_ray_up", "test_slurm", "test_tracking_load", "test_estimate_calibration", "test_verify"}


def pytest_collection_modifyitems(config, items):
    starts_ray, slow = set(), set()
    for item in items:
        ray = _uses_ray(item)
        if ray and _uses_ray(item, RAY_START):
            starts_ray.add(item.module.__name__)
        if ray or item.module.__name__ in SLOW_MODULES or item.get_closest_marker("slurm"):
            item.add_marker(pytest.mark.slow)
            slow.add(item.module.__name__)
    # the long tests first, the quick ones last (xdist's loadgroup hands out one test at a time, in this
    # order); a module's tests stay together, so that its module fixtures are set up once per worker
    items.sort(key=lambda item: (item.module.__name__ not in starts_ray, item.module.__name__ not in slow))


@pytest.fixture
def tiny_model_kwargs():
    """A small network for fast CPU tests: depth 10, 1/8 width, 2 segments of 4 frames at 64x64 (m = 4)."""
    return dict(depth=10, width=0.125, segments=2, frames=4, crop_size=64, num_classes=8)


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A tiny synthetic VE-8 set of real mp4 files: 3 videos per class, 2 s at 10 fps, 64x48."""
    from vaanet.data.synth import SynthConfig, generate

    root = tmp_path_factory.mktemp("synth") / "videos"
    generate(root, SynthConfig(videos_per_class=3, duration=2.0, fps=10, resolutions=((64, 48), (80, 60)),
                               segments=4, no_audio_fraction=0.25, seed=3), workers=2)
    return root


@pytest.fixture(scope="session")
def synth_cache(synth_root, tmp_path_factory):
    from vaanet.data.ingest import PrepareConfig, prepare
    from vaanet.data.splits import make_splits

    cache = tmp_path_factory.mktemp("cache")
    index = prepare(synth_root, cache, PrepareConfig(short_side=40, workers=2, frames="raw"), log=lambda *_: None)
    make_splits(index, cache / "splits", n=2, seed=0, val_fraction=0.2, log=lambda *_: None)
    return cache


@lru_cache(maxsize=None)
def _empty_store() -> Path:
    """One empty MLflow SQLite store per test session: creating one runs MLflow's schema migrations
    (~7 s on this machine), which every test would otherwise pay again."""
    from mlflow.tracking import MlflowClient

    folder = Path(tempfile.mkdtemp(prefix="vaanet-store-"))
    atexit.register(shutil.rmtree, folder, True)
    MlflowClient(f"sqlite:///{folder / 'mlflow.db'}").search_experiments()
    return folder / "mlflow.db"


def mlflow_store(path: Path) -> str:
    """The URI of a SQLite MLflow store at ``path``, created empty (a copy of the session's) if missing."""
    path = Path(path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(_empty_store(), path)
    return f"sqlite:///{path}"


def tiny_config(synth_root, synth_cache, tmp_path, **overrides):
    """A seconds-long training configuration on the tiny synthetic set."""
    from vaanet.config import load_config

    sets = [
        f"data.cache={synth_cache}", f"data.split={synth_cache / 'splits' / 'split_00.csv'}",
        f"data.truth={synth_root / 'synth_truth.csv'}", "data.audio_frames=8", "data.num_workers=0",
        "model.depth=10", "model.width=0.125", "model.segments=2", "model.frames=4", "model.crop_size=32",
        "model.attention_style=reference", "optim.epochs=3", "optim.batch_size=4", "optim.lr=1e-3",
        f"run.mlflow_uri={mlflow_store(tmp_path / 'mlflow.db')}", "run.experiment=test", "run.threads=1", "run.checkpoint_every=1",
        f"run.output={tmp_path / 'runs'}", "run.tags={study: unit, table: '3'}",
    ] + [f"{k}={v}" for k, v in overrides.items()]
    return load_config(None, sets)


@pytest.fixture(scope="session")
def reference_run(synth_root, synth_cache, tmp_path_factory):
    """An uninterrupted local run of the tiny configuration: (config, final metrics, folder)."""
    from vaanet.train import fit_local

    tmp = tmp_path_factory.mktemp("ref")
    cfg = tiny_config(synth_root, synth_cache, tmp)
    return cfg, fit_local(cfg, tmp / "run"), tmp


def as_from_a_terminal() -> None:
    """``preexec_fn`` for a command a test will Ctrl-C: start it as a shell would, with no signal blocked
    and SIGINT at its default (Python then turns it into KeyboardInterrupt). A child inherits both from
    the test process, where libraries loaded in-process (Ray, gRPC) may have blocked or ignored SIGINT."""
    signal.pthread_sigmask(signal.SIG_SETMASK, [])
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on loopback that a test can stop and start again (same store)."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, _free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
               "--backend-store-uri", mlflow_store(self.folder / "store.db"),
               "--artifacts-destination", str(self.folder / "artifacts")]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        for _ in range(360):
            try:
                urllib.request.urlopen(f"{self.url}/health", timeout=2).close()
                return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("mlflow server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None
