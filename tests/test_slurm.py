"""cluster/slurm/vaanet.sbatch: its input checks (always), and an opt-in end-to-end run on a real single-node
SLURM started by tests/slurm_fixture.sh (`pytest -m slurm`; needs root and Debian's slurm-wlm + munge,
installed by the fixture when missing; several minutes): a Ray cluster with token authentication, the
--quick ablation on a tiny synthetic set, the MLflow store on the shared folder, nothing left running."""
import os
import socket
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SBATCH = REPO / "cluster" / "slurm" / "vaanet.sbatch"
FIXTURE = REPO / "tests" / "slurm_fixture.sh"
PRESETS = {"AT", "VS", "VS+VCW", "VS+VCW+VT", "VS+VCW+VT+AT"}
TINY = ["--set", "model.width=0.125", "--set", "model.segments=2", "--set", "model.frames=4", "--set",
        "model.crop_size=32", "--set", "data.audio_frames=8", "--set", "optim.batch_size=4", "--set",
        "model.attention_style=reference", "--set", "run.threads=1"]


def _bare(*args, env=None, cwd=REPO):
    """The batch script run by bash directly (no SLURM): only its checks before any srun can answer."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return subprocess.run(["bash", str(SBATCH), *args], cwd=cwd, env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def test_batch_script_refuses_to_run_outside_slurm():
    r = _bare("experiments/ablation.py", "--quick")
    assert r.returncode == 2 and "not inside a SLURM job; submit it: sbatch cluster/slurm/vaanet.sbatch" in r.stderr


def test_batch_script_names_the_fix_for_a_missing_or_wrong_study_script(tmp_path):
    job = {"SLURM_JOB_ID": "1", "SLURM_SUBMIT_DIR": str(REPO)}
    r = _bare(env=job)
    assert r.returncode == 2 and "no study script; usage: sbatch cluster/slurm/vaanet.sbatch" in r.stderr
    r = _bare("experiments/nope.py", env=job)
    assert r.returncode == 2 and "study script 'experiments/nope.py' not found" in r.stderr
    # submitted from a folder that is not a checkout, without VAANET_REPO
    r = _bare("experiments/ablation.py", env={"SLURM_JOB_ID": "1", "SLURM_SUBMIT_DIR": str(tmp_path)}, cwd=tmp_path)
    assert r.returncode == 2 and "not a vaanet checkout" in r.stderr and "set VAANET_REPO" in r.stderr
    r = _bare("experiments/ablation.py", env={**job, "VAANET_PYTHON": str(tmp_path / "nopython")})
    assert r.returncode == 2 and "set VAANET_PYTHON to the Python of your vaanet environment" in r.stderr


def test_batch_script_follows_the_ray_slurm_pattern():
    text = SBATCH.read_text()
    assert "scontrol show hostnames \"$SLURM_JOB_NODELIST\"" in text
    assert "srun --nodes=1 --ntasks=1 -w \"$head_node\"" in text and "start --head --block" in text
    assert "export RAY_AUTH_MODE=token" in text and "export RAY_AUTH_TOKEN" in text
    assert "--dashboard-host=127.0.0.1" in text and "RAY_AUTH_MODE=disabled" not in text.replace('"disabled"', "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd:
                found.append(f"{p.name} {cmd[:150]}")
    return found


@pytest.fixture
def slurm(tmp_path_factory):
    """A running single-node SLURM; yields the environment for its clients; stops the daemons after."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM fixture runs the daemons as root; run this test as root")
    folder = tmp_path_factory.mktemp("slurm")
    ports = {"SLURM_FIXTURE_CTLD_PORT": str(_free_port()), "SLURM_FIXTURE_SLURMD_PORT": str(_free_port())}
    env = {**os.environ, **ports}
    r = subprocess.run(["bash", str(FIXTURE), "start", str(folder)], env=env, capture_output=True, text=True,
                       timeout=900)
    print(r.stdout[-2000:], r.stderr[-2000:], sep="\n")
    if r.returncode == 77:
        pytest.skip(f"slurm-wlm and munge cannot be installed here: {r.stderr.strip()[-500:]}")
    try:
        assert r.returncode == 0, f"SLURM did not start:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        yield {**env, "SLURM_CONF": str(folder / "slurm.conf")}
    finally:
        s = subprocess.run(["bash", str(FIXTURE), "stop", str(folder)], capture_output=True, text=True, timeout=120)
        print(s.stdout, s.stderr)


@pytest.mark.slurm
def test_sbatch_runs_the_quick_ablation_on_a_token_auth_ray_cluster(slurm, tmp_path):
    videos, cache, shared = tmp_path / "videos", tmp_path / "cache", tmp_path / "shared"
    subprocess.run([sys.executable, "-c", "import sys; from vaanet.cli import main; sys.exit(main())", "synth",
                    "--out", str(videos), "--videos-per-class", "3", "--duration", "2", "--fps", "10",
                    "--resolutions", "64x48", "--workers", "2"],
                   cwd=REPO, env={**slurm, "PYTHONPATH": str(REPO)}, check=True, timeout=600)
    env = {**slurm, "VAANET_REPO": str(REPO), "VAANET_PYTHON": sys.executable, "VAANET_SHARED": str(shared),
           "VAANET_RAY_PORT": str(_free_port()), "VAANET_DASHBOARD_PORT": str(_free_port()),
           "VAANET_RAY_CLIENT_PORT": str(_free_port()),
           "VAANET_RAY_START_ARGS": f"--dashboard-agent-listen-port={_free_port()}"}
    study = ["experiments/ablation.py", "--quick", "--dataset", "synth", "--data-root", str(videos),
             "--cache", str(cache), *TINY]
    # submitted from a folder outside the checkout (VAANET_REPO names it); one node, its 2 CPUs
    r = subprocess.run(["sbatch", "--wait", "--parsable", "--nodes=1", f"--cpus-per-task={os.cpu_count() or 1}",
                        "--time=00:40:00", str(SBATCH), *study],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=2700)
    job = r.stdout.strip().split(";")[0]
    logs = list(tmp_path.glob("vaanet-*.log"))
    log = logs[0].read_text() if logs else ""
    print(f"---- job {job} log tail:\n{log[-4000:]}")
    assert r.returncode == 0, f"sbatch --wait exit {r.returncode}: {r.stderr[-2000:]}\n{log[-6000:]}"
    assert logs == [tmp_path / f"vaanet-{job}.log"]

    # the Ray cluster started with token authentication, and refused a client without the token
    assert "Ray token authentication: RAY_AUTH_MODE=token" in log
    assert "Ray cluster up: 1 node(s)" in log
    assert "Ray token authentication on: a client without the token is refused (InvalidAuthToken)" in log
    assert f"--address 127.0.0.1:{env['VAANET_RAY_PORT']}" in log  # the driver joined this cluster
    # the data was prepared once, by the driver, into the given cache
    assert (cache / "index.csv").exists() and (cache / "splits" / "split_00.csv").exists()

    # the MLflow store on the shared folder: one FINISHED run per preset of the --quick ablation (1 split)
    db = shared / "mlflow.db"
    assert db.exists(), f"no MLflow store at {db}"
    with sqlite3.connect(db) as con:
        rows = con.execute(
            "SELECT r.status, t.value FROM runs r JOIN experiments e ON r.experiment_id = e.experiment_id "
            "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'row' WHERE e.name = 'ablation-synth'").fetchall()
    assert len(rows) == 5 and {s for s, _ in rows} == {"FINISHED"}, rows
    assert {row for _, row in rows} == PRESETS
    assert (shared / "runs" / "ablation-synth" / "study.json").exists()
    with sqlite3.connect(db) as con:
        uris = [u for (u,) in con.execute(
            "SELECT r.artifact_uri FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'row' "
            "WHERE r.status = 'FINISHED'")]  # the trials' runs (the study's parent run has no 'row' tag)
    assert len(uris) == 5 and all((Path(u.removeprefix("file://")) / "config.yaml").exists() for u in uris), uris

    # the token lived in a user-only file that is gone with the job; no Ray process of the job is left
    token_dir = shared / ".ray-auth"
    assert stat.S_IMODE(token_dir.stat().st_mode) == 0o700 and not list(token_dir.iterdir())
    assert _processes_mentioning(f"/tmp/ray-vaanet-{job}") == []
    # each `ray start --block` stopped its processes on its own SIGTERM: no step cancelled, no task SIGKILLed
    assert "Ray cluster stopped" in log and "CANCELLED" not in log and ": Killed" not in log
