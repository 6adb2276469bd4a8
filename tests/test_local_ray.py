"""A local study or run starts a Ray of its own (issue 25): never one that `ray start` left on the machine,
with its token file readable by the user alone; what that Ray listens on, and that it refuses a stranger."""
import os
import secrets
import socket
import stat
import subprocess
import sys
from pathlib import Path

from conftest import GIVE_UP_SOON, mlflow_store, private_ray_env, ray_start, stop_ray

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.width=0.125", "model.segments=2", "model.frames=4", "model.crop_size=32", "data.audio_frames=8",
        "optim.batch_size=4", "model.attention_style=reference", "run.threads=1"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_private_token_is_created_or_narrowed_to_mode_600(tmp_path, monkeypatch):
    from vaanet.train.ray_cluster import private_token

    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH")
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    old_umask = os.umask(0o022)  # the default umask, with which Ray itself writes a world-readable file
    try:
        token = private_token()  # missing: created private, in a private ~/.ray
        assert token == tmp_path / ".ray" / "auth_token" and _mode(token) == 0o600
        assert _mode(token.parent) == 0o700 and len(token.read_text()) == 64
        value = token.read_text()
        token.chmod(0o644)  # as Ray leaves it
        assert private_token() == token and _mode(token) == 0o600 and token.read_text() == value  # narrowed, kept
        other = tmp_path / "elsewhere" / "token"
        monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(other))
        other.parent.mkdir()
        assert private_token() == other and _mode(other) == 0o600  # RAY_AUTH_TOKEN_PATH is the file Ray reads
        monkeypatch.setenv("RAY_AUTH_TOKEN", "0" * 64)
        assert private_token() is None  # the token is in the environment: no file involved
        monkeypatch.delenv("RAY_AUTH_TOKEN")
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        assert private_token() is None
    finally:
        os.umask(old_umask)


def test_local_study_beside_a_foreign_head_runs_on_its_own_ray(synth_root, synth_cache, tmp_path):
    """A colleague's `ray start` head (another token) in the same Ray temp folder: `ray.init()` would join it
    (and fail on its token); the study starts its own Ray, and writes its token file at mode 600."""
    port = _free_port()
    foreign_env = private_ray_env({**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)})
    foreign = ray_start(["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                         "--include-dashboard=false"], foreign_env, tmp_path / "foreign.log")
    try:
        assert (Path(foreign_env["RAY_TMPDIR"]) / "ray" / "ray_current_cluster").is_file()  # what ray.init() reads
        home = tmp_path / "home"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
        env.update(HOME=str(home), RAY_TMPDIR=foreign_env["RAY_TMPDIR"], RAY_DISABLE_USAGE_STATS="1")
        cmd = [sys.executable, str(REPO / "experiments" / "main_comparison.py"), "--dataset", "synth",
               "--data-root", str(synth_root), "--cache", str(synth_cache), "--splits", "1", "--epochs", "1",
               "--mlflow-uri", mlflow_store(tmp_path / "tracking.db"), "--output", str(tmp_path / "runs"),
               *[x for s in TINY for x in ("--set", s)]]
        old_umask = os.umask(0o022)
        try:
            r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=420, env=env)
        finally:
            os.umask(old_umask)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        assert "Failed to connect" not in r.stderr and "InvalidAuthToken" not in r.stderr
        token = home / ".ray" / "auth_token"
        assert _mode(token) == 0o600 and token.read_text() != foreign_env["RAY_AUTH_TOKEN"]
        from mlflow.tracking import MlflowClient

        client = MlflowClient(mlflow_store(tmp_path / "tracking.db"))
        runs = client.search_runs([client.get_experiment_by_name("main_comparison-synth").experiment_id])
        assert sorted(x.info.status for x in runs) == ["FINISHED", "FINISHED"]  # the trial and the study
        assert foreign.poll() is None  # the colleague's head is left as it was
    finally:
        stop_ray(foreign)


LISTENERS = """
import os, psutil, ray
from vaanet.train.ray_cluster import init_ray
init_ray(None, num_cpus=1, include_dashboard=False, logging_level="ERROR")
tmp = os.environ["RAY_TMPDIR"]
mine = [p for p in psutil.process_iter(["pid", "name", "cmdline"])
        if p.pid == os.getpid() or any(tmp in c for c in p.info["cmdline"] or ())]
for p in mine:
    for c in p.net_connections("tcp"):
        if c.status == "LISTEN":
            print("LISTEN", p.info["name"], c.laddr.ip, c.laddr.port)
print("GCS", ray.get_runtime_context().gcs_address, flush=True)
import sys; sys.stdin.readline()  # held open until the test has tried the stranger
ray.shutdown()
"""


def test_local_ray_refuses_a_client_without_its_token_and_starts_no_dashboard(tmp_path):
    """What a local Ray listens on (printed for the record: Ray's gRPC servers bind every interface and
    cannot be told otherwise): no dashboard, and its GCS refuses a client without the user's token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS"))}
    env.update(HOME=str(tmp_path), RAY_DISABLE_USAGE_STATS="1")
    p = subprocess.Popen([sys.executable, "-c", LISTENERS], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True)
    try:
        lines = []
        for line in p.stdout:
            lines.append(line.strip())
            if line.startswith("GCS"):
                break
        print("\n".join(lines))
        gcs = lines[-1].split()[1]
        listeners = [line.split()[1:] for line in lines if line.startswith("LISTEN")]
        assert listeners and not [x for x in listeners if x[2] == "8265" or x[0].startswith("dashboard")]
        assert _mode(tmp_path / ".ray" / "auth_token") == 0o600
        stranger = {**env, "HOME": str(tmp_path / "stranger"), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64,
                    **GIVE_UP_SOON}
        try:
            r = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='{gcs}'); print('connected')"],
                               env=stranger, capture_output=True, text=True, timeout=60)
            assert r.returncode != 0 and "connected" not in r.stdout, r.stdout
        except subprocess.TimeoutExpired:
            pass  # still refused after a minute: not connected either
    finally:
        p.communicate("\n", timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
