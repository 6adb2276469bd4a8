"""Cluster security (issue 14): the commands of ray_cluster.yaml, run here as the launcher runs them.

Ray's head starts with token authentication on and refuses a client without the token; the MLflow
server answers only with the admin password; credentials given in a tracking URI are never written
to a config, an MLflow param, a checkpoint or any other file of a run."""
import os
import secrets
import shlex
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
import yaml

from conftest import GIVE_UP_SOON, ray_start, stop_ray

REPO = Path(__file__).resolve().parents[1]
CLUSTER = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(section: str, marker: str) -> str:
    return next(c for c in CLUSTER[section] if marker in c)


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "MLFLOW_TRACKING_"))}
    return {**env, "HOME": str(home), "PATH": f"{BIN}:{env['PATH']}", "RAY_DISABLE_USAGE_STATS": "1", **extra}


CLIENT = "import ray; ray.init(address='127.0.0.1:{port}'); print('connected', ray.cluster_resources().get('CPU'))"


def test_head_started_as_the_yaml_says_refuses_a_client_without_the_token(tmp_path):
    head, stranger = tmp_path / "head", tmp_path / "stranger"
    (head / ".ray").mkdir(parents=True)
    stranger.mkdir()
    (head / ".ray" / "auth_token").write_text(secrets.token_hex(32))  # what file_mounts copies to each node
    port, dash = _free_port(), _free_port()
    start = _command("head_start_ray_commands", "ray start --head")
    assert "export RAY_AUTH_MODE=token;" in start  # the yaml's login shells and its `ray start` have it
    args = [a for a in shlex.split(start.split("ray start", 1)[1])
            if not a.startswith(("--port=", "--autoscaling-config=", "--disable-usage-stats"))]
    args += [f"--port={port}", f"--dashboard-port={dash}", "--num-cpus=1", "--node-ip-address=127.0.0.1"]
    node = ray_start(args, _env(head, RAY_AUTH_MODE="token"), tmp_path / "head.log")  # this test's own temp dir
    try:
        for who, env in [("no token, auth mode unset", _env(stranger, **GIVE_UP_SOON)),
                         ("auth mode token, no token", _env(stranger, RAY_AUTH_MODE="token", **GIVE_UP_SOON)),
                         ("a wrong token", _env(stranger, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64,
                                                **GIVE_UP_SOON))]:
            try:
                r = subprocess.run([sys.executable, "-c", CLIENT.format(port=port)], env=env, capture_output=True,
                                   text=True, timeout=60)
                assert r.returncode != 0 and "connected" not in r.stdout, f"{who}: {r.stdout}"
            except subprocess.TimeoutExpired:
                pass  # still refused after a minute: not connected either
        with pytest.raises(urllib.error.HTTPError) as e:  # the dashboard too
            urllib.request.urlopen(f"http://127.0.0.1:{dash}/api/version", timeout=10)
        assert e.value.code in (401, 403)
        # a driver on the head (the yaml's login shell: RAY_AUTH_MODE=token, the token file) connects
        r = subprocess.run([sys.executable, "-c", CLIENT.format(port=port)], env=_env(head, RAY_AUTH_MODE="token"),
                           capture_output=True, text=True, timeout=120)
        assert "connected" in r.stdout, r.stdout + r.stderr
    finally:
        stop_ray(node)


def _get(url: str, auth: tuple[str, str] | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        request.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0  # not listening (yet)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """The head's MLflow server as ray_cluster.yaml sets it up and starts it (paths moved under a temporary
    folder, bound to loopback here): yields (url, admin password). Started once for this module."""
    tmp_path = tmp_path_factory.mktemp("mlflow_head")
    home, shared = tmp_path / "head", tmp_path / "shared"
    home.mkdir()
    shared.mkdir()
    env = _env(home)
    for cmd in CLUSTER["head_setup_commands"]:
        subprocess.run(["bash", "-c", cmd.replace("/mnt/shared", str(shared))], env=env, check=True, timeout=60)
    password = (home / ".mlflow_admin_password").read_text().strip()
    assert len(password) >= 24 and (home / ".mlflow_admin_password").stat().st_mode & 0o077 == 0
    port = _free_port()
    cmd = _command("head_start_ray_commands", "mlflow server").replace("/mnt/shared", str(shared))
    cmd = cmd.replace("--host 0.0.0.0", "--host 127.0.0.1").replace("--port 5000", f"--port {port}")
    cmd = cmd.replace("nohup ", "").replace("> /tmp/mlflow.log 2>&1 &", f"> {tmp_path / 'mlflow.log'} 2>&1")
    server = subprocess.Popen(["bash", "-c", cmd], env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(360):  # mlflow server takes ~10 s to answer (longer on a busy machine)
            if _get(f"{url}/health"):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the MLflow server did not start: " + (tmp_path / "mlflow.log").read_text()[-2000:])
        yield url, password
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_mlflow_server_answers_only_with_the_admin_password(mlflow_server):
    url, password = mlflow_server
    api = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(api) == 401
    assert _get(api, ("admin", "wrong")) == 401
    assert _get(api, ("admin", password)) == 200


def test_credentials_in_the_tracking_uri_are_never_stored(mlflow_server, synth_root, synth_cache, tmp_path,
                                                           monkeypatch):
    from mlflow.tracking import MlflowClient

    from conftest import tiny_config
    from vaanet.train import fit_local

    url, password = mlflow_server
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(key, raising=False)
    with_credentials = url.replace("http://", f"http://admin:{password}@")
    cfg = tiny_config(synth_root, synth_cache, tmp_path, **{"optim.epochs": 1, "run.mlflow_uri": with_credentials})
    assert cfg.run.mlflow_uri == url and os.environ["MLFLOW_TRACKING_PASSWORD"] == password
    fit_local(cfg, tmp_path / "run")
    client = MlflowClient(url)  # the credentials come from the environment
    (run,) = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["run.mlflow_uri"] == url
    leaks = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert leaks == []  # config.yaml, best_model.pt, state.pt, metrics: none holds the password
    assert all(password not in str(v) for v in run.data.params.values())


def _rsync_excluded(path: str, pattern: str) -> bool:
    """Does an rsync exclude pattern (as the cluster launcher passes them) drop ``path`` or a folder above it?"""
    parts = path.split("/")
    if pattern.startswith("/"):  # anchored at the transfer's root
        return path == pattern[1:] or path.startswith(pattern[1:] + "/")
    return any(part == pattern.removeprefix("**/") for part in parts)


def test_cluster_files_copy_every_file_of_the_package():
    """`rsync_exclude: ["data"]` also dropped vaanet/data: the study on the head failed with ModuleNotFoundError."""
    tracked = subprocess.run(["git", "ls-files", "vaanet", "analysis", "experiments", "configs"], cwd=REPO,
                             capture_output=True, text=True, check=True).stdout.split()
    assert "vaanet/data/ingest.py" in tracked
    for name in ("ray_cluster.yaml", "cluster/onprem.yaml"):
        patterns = yaml.safe_load((REPO / name).read_text())["rsync_exclude"]
        dropped = [p for p in tracked if any(_rsync_excluded(p, x) for x in patterns)]
        assert dropped == [], f"{name} rsync_exclude drops {dropped[:5]}"
        assert any(_rsync_excluded("data/synth/cache/index.csv", x) for x in patterns)  # local data stays home
