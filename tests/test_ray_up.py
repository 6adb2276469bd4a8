"""`ray up` for real (issue 25): the on-prem cluster file (cluster/onprem.yaml, Ray's `local` provider) brought up
over SSH on this machine, the quick study run on it with `ray exec`, and `ray down` leaving no process behind.

Nothing of the machine's own SSH setup is used or changed: the test runs an sshd of its own on 127.0.0.1 (a free
port; its own config, host key and authorized_keys in a temp folder; `-D`, a child stopped by its pid), and the
cluster logs in as a throwaway UNIX user the test creates and removes. `ray down` runs `ray stop` on the head, and
`ray stop` signals only the processes its user may signal: that user's, this cluster's. The launcher reaches the
sshd's port through `auth.ssh_proxy_command` (Ray has no SSH port option). Packages: openssh-server and rsync
(.ci/run installs them); without them the test fails when CI=true, is skipped elsewhere unless run as root (it then
installs them)."""
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import GIVE_UP_SOON, kill_processes

REPO = Path(__file__).resolve().parents[1]
ONPREM = REPO / "cluster" / "onprem.yaml"
BIN = Path(sys.executable).parent
RAY = str(BIN / "ray")
SHARED_IN_YAML = "/shared/vaanet"
TINY = ["--set", "model.width=0.125", "--set", "model.segments=2", "--set", "model.frames=4", "--set",
        "model.crop_size=32", "--set", "data.audio_frames=8", "--set", "optim.batch_size=4", "--set",
        "model.attention_style=reference", "--set", "run.threads=1"]
# the relay behind `ssh -o ProxyCommand=...`: stdin/stdout <-> 127.0.0.1:port (no netcat needed)
RELAY = """import os, selectors, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
sel = selectors.DefaultSelector(); sel.register(0, selectors.EVENT_READ); sel.register(s, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj == 0:
            data = os.read(0, 65536)
            if not data:
                s.shutdown(socket.SHUT_WR); sel.unregister(0); continue
            s.sendall(data)
        else:
            data = s.recv(65536)
            if not data:
                sys.exit(0)
            os.write(1, data)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sshd() -> str | None:
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd",) if os.access(p, os.X_OK)), None)


def _require_tools() -> None:
    """openssh-server and rsync: CI must have them (.ci/run installs them); root here installs them."""
    missing = [name for name, found in (("openssh-server", _sshd()), ("rsync", shutil.which("rsync"))) if not found]
    if missing and os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {' and '.join(missing)} missing: .ci/run installs them (apt-get)")
    if os.geteuid() != 0:  # a throwaway user needs root (useradd)
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but not root: the ray up test creates a throwaway user")
        pytest.skip("the ray up test needs root (it creates a throwaway user and runs its own sshd)")
    if missing:
        subprocess.run("apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server rsync",
                       shell=True, check=True, timeout=600, capture_output=True)
        assert _sshd() and shutil.which("rsync")


def _run(args, log: Path, timeout: float, env: dict, check: bool = True) -> subprocess.CompletedProcess:
    """Run a launcher command, its output appended to ``log`` (the transcript) and echoed."""
    r = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    with open(log, "a") as out:
        out.write(f"$ {shlex.join(str(a) for a in args)}\n{r.stdout}{r.stderr}[exit {r.returncode}]\n")
    print(f"$ {shlex.join(str(a) for a in args)}\n{r.stdout[-4000:]}{r.stderr[-4000:]}[exit {r.returncode}]")
    if check:
        assert r.returncode == 0, f"{args[:3]} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _user_processes(uid: int) -> list[psutil.Process]:
    procs = []
    for p in psutil.process_iter(["pid", "uids"]):
        try:
            if p.info["uids"] and p.info["uids"].real == uid:
                procs.append(p)
        except psutil.Error:
            continue
    return procs


def _describe(procs) -> list[str]:
    out = []
    for p in procs:
        try:
            out.append(f"{p.pid} {' '.join(p.cmdline())[:160]}")
        except psutil.Error:
            continue
    return out


def _python_for(user: str, site: str) -> str:
    """An interpreter of this Python's version that ``user`` can run (this one may sit in root's home) and
    with which the shared environment imports."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [os.path.realpath(sys.executable), os.path.realpath(getattr(sys, "_base_executable", "")),
                  f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    tried = []
    for py in dict.fromkeys(c for c in candidates if c and os.path.exists(c)):
        r = subprocess.run(["runuser", "-u", user, "--", py, "-c",
                            f"import sys; sys.path.append({site!r}); import ray, mlflow; "
                            f"assert sys.version_info[:2] == {tuple(sys.version_info[:2])}"],
                           capture_output=True, text=True, timeout=300, cwd="/")
        if r.returncode == 0:
            return py
        tried.append(f"{py}: {r.stderr.strip().splitlines()[-1:] or r.returncode}")
    raise AssertionError(f"no Python {version} that user {user} can run with {site}: {tried}")


def _cluster_config(name: str, user: str, key: Path, proxy: str, token: Path, shared: Path, install: str,
                    ports: dict) -> dict:
    """cluster/onprem.yaml pointed at this machine: head 127.0.0.1 (no workers), the throwaway user and key,
    the test's sshd port through a proxy command, the test's token and shared folder, free ports, and the
    environment this machine already has (instead of a pip install)."""
    config = yaml.safe_load(ONPREM.read_text())
    text = yaml.safe_dump(config).replace(SHARED_IN_YAML, str(shared))
    config = yaml.safe_load(text)
    config["cluster_name"] = name
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["min_workers"] = config["max_workers"] = 0
    config["auth"] = {"ssh_user": user, "ssh_private_key": str(key), "ssh_proxy_command": proxy}
    config["file_mounts"] = {"~/vaanet": str(REPO), "~/.ray/auth_token": str(token)}
    setup = config["setup_commands"]
    (i,) = [n for n, c in enumerate(setup) if "pip install" in c]
    setup[i] = install
    starts = config["head_start_ray_commands"]
    (i,) = [n for n, c in enumerate(starts) if "ray start --head" in c]
    starts[i] = starts[i].replace("--port=6379", f"--port={ports['gcs']}") + (
        f" --node-ip-address=127.0.0.1 --num-cpus=2 --dashboard-port={ports['dashboard']}"
        f" --ray-client-server-port={ports['client']} --dashboard-agent-listen-port={ports['agent']}"
        f" --dashboard-agent-grpc-port={ports['agent_grpc']} --metrics-export-port={ports['metrics']}"
        f" --runtime-env-agent-port={ports['runtime_env']}")
    (i,) = [n for n, c in enumerate(starts) if "mlflow server" in c]
    assert "--host 0.0.0.0 --port 5000" in starts[i]
    starts[i] = starts[i].replace("--host 0.0.0.0 --port 5000", f"--host 127.0.0.1 --port {ports['mlflow']}")
    return config


def test_ray_up_onprem_runs_the_quick_study_and_ray_down_leaves_nothing(synth_root, synth_cache, tmp_path):
    from mlflow.tracking import MlflowClient

    _require_tools()
    tag = secrets.token_hex(4)
    user, name = f"vaanet-rayup-{tag}", f"vaanet-rayup-{tag}"
    base = Path(tempfile.mkdtemp(prefix="rayup", dir="/tmp"))  # short: the user's Ray sockets live under it
    base.chmod(0o755)
    home, shared, ssh = base / "h", base / "shared", base / "ssh"
    ssh.mkdir()
    transcript = tmp_path / "transcript.log"
    sshd = None
    uid = None
    opened = []
    launcher_env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "RAY_DISABLE_USAGE_STATS": "1"}
    try:
        # the throwaway user: its own home, a password no one can use (`*`, not a locked `!`: sshd refuses those)
        subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/bash", "-p", "*", user], check=True,
                       timeout=60)
        uid = pwd.getpwnam(user).pw_uid
        # sshd of its own: loopback, a free port, a throwaway host key, authorized_keys and client key
        for key in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vaanet-rayup-{key}", "-f",
                            str(ssh / key)], check=True, timeout=60)
        (ssh / "authorized_keys").write_text((ssh / "client.pub").read_text())
        (ssh / "authorized_keys").chmod(0o644)  # sshd reads it as the user; a public key
        port = _free_port()
        (ssh / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {ssh / 'host'}\nAuthorizedKeysFile {ssh / 'authorized_keys'}\n"
            f"PidFile none\nAllowUsers {user}\nPermitRootLogin no\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\nStrictModes no\nX11Forwarding no\n"
            "AllowTcpForwarding yes\nPermitUserEnvironment no\n")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder (the package's)
        sshd = subprocess.Popen([_sshd(), "-D", "-e", "-f", str(ssh / "sshd_config")], stdout=open(base / "sshd.log", "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert sshd.poll() is None, (base / "sshd.log").read_text()
                time.sleep(0.1)
        (ssh / "relay.py").write_text(RELAY)
        proxy = f"{sys.executable} {ssh / 'relay.py'} 127.0.0.1 {port}"

        # shared storage (here a folder on this machine): the data set, the study's output and MLflow store
        shutil.copytree(synth_root, shared / "synth" / "videos")
        shutil.copytree(synth_cache, shared / "synth" / "cache")
        ray_tmp = base / "r"
        ray_tmp.mkdir()
        subprocess.run(["chown", "-R", f"{user}:", str(shared), str(ray_tmp)], check=True, timeout=60)
        ray_tmp.chmod(0o700)

        # the cluster's token, made on the launcher (ray get-auth-token --generate writes such a file, mode 600)
        token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
        token.parent.mkdir(parents=True, exist_ok=True)
        token.write_text(secrets.token_hex(32))
        token.chmod(0o600)

        # instead of onprem.yaml's `pip install` (no network here): a venv of the user's own on the environment this
        # machine has; the repo copy first on PYTHONPATH (what `pip install -e ~/vaanet` gives), Ray's temp folder
        site = sysconfig.get_paths()["purelib"]
        for folder in [*reversed(Path(site).parents), Path(site)]:  # a clone in root's home: let the user pass
            mode = folder.stat().st_mode
            if not mode & 0o001:  # through (o+x, no listing) while the test runs; restored below
                opened.append((folder, mode))
                folder.chmod(mode | 0o001)
        py = _python_for(user, site)
        install = base / "install.sh"
        install.write_text(
            "set -e\n"
            f"test -x ~/venv/bin/python || {py} -m venv --without-pip ~/venv\n"
            f"echo {site} > ~/venv/lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages/shared.pth\n"
            "for cli in 'ray ray.scripts.scripts main' 'mlflow mlflow.cli cli'; do set -- $cli\n"
            "  printf '#!%s\\nimport sys\\nfrom %s import %s\\nsys.exit(%s())\\n' ~/venv/bin/python $2 $3 $3 > ~/venv/bin/$1\n"
            "  chmod 755 ~/venv/bin/$1\ndone\n"
            "grep -q PYTHONPATH ~/.bashrc || echo 'export PYTHONPATH=~/vaanet' >> ~/.bashrc\n"
            f"grep -q RAY_TMPDIR ~/.bashrc || echo 'export RAY_TMPDIR={ray_tmp}' >> ~/.bashrc\n")
        install.chmod(0o644)
        ports = {k: _free_port() for k in ("gcs", "dashboard", "client", "agent", "agent_grpc", "metrics",
                                           "runtime_env", "mlflow")}
        config = _cluster_config(name, user, ssh / "client", proxy, token, shared, f"bash {install}", ports)
        cluster = base / "cluster.yaml"
        cluster.write_text(yaml.safe_dump(config, sort_keys=False))

        # up
        t0 = time.time()
        _run([RAY, "up", "-y", "--no-config-cache", str(cluster)], transcript, 600, launcher_env)
        print(f"ray up: {time.time() - t0:.0f} s")
        # the token on the head: the launcher's, mode 600; the head's Ray refuses a client without it
        remote_token = home / ".ray" / "auth_token"
        assert remote_token.read_text() == token.read_text() and remote_token.stat().st_mode & 0o777 == 0o600
        password = home / ".mlflow_admin_password"
        assert password.stat().st_mode & 0o077 == 0 and len(password.read_text().strip()) >= 24
        r = subprocess.run([sys.executable, "-c", f"import ray; ray.init(address='127.0.0.1:{ports['gcs']}')"],
                           env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")},
                                "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64, **GIVE_UP_SOON},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode != 0
        deadline = time.time() + 180  # the MLflow server answers ~10 s after it starts (longer on a busy machine)
        while True:
            listening = {(c.laddr.ip, c.laddr.port) for p in _user_processes(uid)
                         for c in _connections(p) if c.status == psutil.CONN_LISTEN}
            if ("127.0.0.1", ports["mlflow"]) in listening or time.time() > deadline:
                break
            time.sleep(1)
        print(f"the head's Ray dashboard and MLflow server listen on: "
              f"{sorted(a for a in listening if a[1] in (ports['dashboard'], ports['mlflow']))}")
        assert ("127.0.0.1", ports["dashboard"]) in listening and ("127.0.0.1", ports["mlflow"]) in listening, listening
        assert not any(port_ == ports["dashboard"] and ip != "127.0.0.1" for ip, port_ in listening)

        # the quick study, driven on the head through `ray exec`, trials on the cluster, MLflow through the head's server
        study = (f"cd ~/vaanet && python experiments/lambda_sweep.py --lambdas 0,0.5 --quick --address auto "
                 f"--dataset synth "
                 f"--data-root {shared}/synth/videos --cache {shared}/synth/cache --output {shared}/runs "
                 f"--mlflow-uri http://127.0.0.1:{ports['mlflow']} " + shlex.join(TINY))
        t0 = time.time()
        r = _run([RAY, "exec", str(cluster), study], transcript, 900, launcher_env, check=False)
        print(f"study: {time.time() - t0:.0f} s")
        assert r.returncode == 0, f"the study failed:\n{r.stdout[-5000:]}\n{r.stderr[-3000:]}"
        assert "lambda_sweep on synth" in r.stdout, r.stdout[-3000:]

        # its MLflow store (on the shared folder): one FINISHED run per grid point and one parent run
        client = MlflowClient(f"sqlite:///{shared / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("lambda_sweep-synth")
        runs = client.search_runs([experiment.experiment_id])
        parents = [run for run in runs if run.data.tags.get("role") == "study"]
        trials = [run for run in runs if run.data.tags.get("role") != "study"]
        assert len(parents) == 1 and parents[0].info.status == "FINISHED"
        grid = re.search(r"(\d+) trials = (\d+) row\(s\) .* x (\d+) split\(s\) x (\d+) seed\(s\)",
                         parents[0].data.tags["mlflow.note.content"])
        assert grid, parents[0].data.tags["mlflow.note.content"]
        points = int(grid[1])
        assert points == int(grid[2]) * int(grid[3]) * int(grid[4]) and points == 2  # 2 values of lambda, 1 split
        assert len(trials) == points and all(t.info.status == "FINISHED" for t in trials), \
            [(t.data.tags.get("mlflow.runName"), t.info.status) for t in trials]
        assert len({t.data.tags.get("mlflow.runName") for t in trials}) == points  # one per grid point
        assert all(t.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id for t in trials)
        print(f"MLflow: {len(parents)} parent run, {len(trials)} FINISHED trial runs of {points} grid points")

        # down: nothing of the cluster is left (the user's processes: Ray, the MLflow server, SSH sessions)
        before = _describe(_user_processes(uid))
        print(f"processes of the cluster before ray down ({len(before)}):\n" + "\n".join(before))
        _run([RAY, "down", "-y", str(cluster)], transcript, 300, launcher_env)
        deadline = time.time() + 60  # the launcher's SSH master connection lingers 10 s (ControlPersist)
        while _user_processes(uid) and time.time() < deadline:
            time.sleep(1)
        left = _describe(_user_processes(uid))
        print(f"processes of the cluster after ray down ({len(left)}): {left}")
        assert left == [], f"ray down left {left}"
    finally:
        print(f"transcript: {transcript}")
        if uid is not None:
            kill_processes(_user_processes(uid))
        if sshd is not None:
            sshd.terminate()
            try:
                sshd.wait(timeout=30)
            except subprocess.TimeoutExpired:
                sshd.kill()
        if uid is not None:
            subprocess.run(["userdel", "-r", user], capture_output=True, timeout=60)
            for left in Path(tempfile.gettempdir()).iterdir():  # e.g. torch's /tmp/torchinductor_<user>
                try:
                    if left.lstat().st_uid == uid:
                        shutil.rmtree(left) if left.is_dir() and not left.is_symlink() else left.unlink()
                except OSError:
                    pass
        for folder, mode in reversed(opened):
            folder.chmod(mode)
        shutil.rmtree(base, ignore_errors=True)


def _connections(p: psutil.Process):
    try:
        return p.net_connections(kind="inet")
    except psutil.Error:
        return []


def test_onprem_yaml_matches_the_launcher_schema_and_keeps_the_security_of_ray_cluster_yaml():
    """Static checks of cluster/onprem.yaml (cheap; the test above runs it for real)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(ONPREM.read_text())
    validate_config(prepare_config(config))
    assert config["provider"]["type"] == "local" and {"head_ip", "worker_ips"} <= set(config["provider"])
    assert {"ssh_user", "ssh_private_key"} <= set(config["auth"])
    # the user's token on every node, readable by its owner alone; token auth in drivers' shells and every ray start
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert "chmod 600 ~/.ray/auth_token" in config["setup_commands"]
    assert any("export RAY_AUTH_MODE=token" in c and ".bashrc" in c for c in config["setup_commands"])
    for section in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[section] if "ray start" in c]
        assert starts and all("export RAY_AUTH_MODE=token;" in c for c in starts)
    (head,) = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    assert "--dashboard-host=127.0.0.1" in head
    # MLflow on the head: basic auth, admin password and secret made with umask 077, store on the shared folder
    (server,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert "--app-name basic-auth" in server and "sqlite:///" + SHARED_IN_YAML + "/mlflow.db" in server
    assert "MLFLOW_AUTH_ADMIN_PASSWORD=\"$(cat ~/.mlflow_admin_password)\"" in server  # never the password itself
    assert "pgrep" in server and "raylet" in server  # it stops with the head's Ray (ray down)
    made = [c for c in config["head_setup_commands"] if "> ~/.mlflow_admin_password" in c or "> ~/.mlflow_flask" in c]
    assert len(made) == 2 and all("umask 077" in c for c in made)
    # never the package folder vaanet/data: exclusions anchored at the repo root
    assert "data" not in config["rsync_exclude"] and "/data" in config["rsync_exclude"]
    assert "SHARED STORAGE" in ONPREM.read_text() and "--address auto" in ONPREM.read_text()
