"""cluster/slurm/vaanet.sbatch: its input checks (always), and an opt-in end-to-end run on a real single-node
SLURM started by tests/slurm_fixture.sh (`pytest -m slurm`; needs root and Debian's slurm-wlm + munge,
installed by the fixture when missing; several minutes): a Ray cluster with token authentication, the
--quick ablation on a tiny synthetic set, the MLflow store on the shared folder, nothing left running."""
import json
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
    # locally it skips without root or packages; in CI (CI=true) that is a failure, never a silent skip
    give_up = pytest.fail if os.environ.get("CI", "").lower() in ("true", "1", "yes") else pytest.skip
    if os.geteuid() != 0:
        give_up("the SLURM fixture runs the daemons as root; run this test as root")
    folder = tmp_path_factory.mktemp("slurm")
    ports = {"SLURM_FIXTURE_CTLD_PORT": str(_free_port()), "SLURM_FIXTURE_SLURMD_PORT": str(_free_port())}
    env = {**os.environ, **ports}
    r = subprocess.run(["bash", str(FIXTURE), "start", str(folder)], env=env, capture_output=True, text=True,
                       timeout=900)
    print(r.stdout[-2000:], r.stderr[-2000:], sep="\n")
    if r.returncode == 77:
        give_up(f"slurm-wlm and munge cannot be installed here: {r.stderr.strip()[-500:]}")
    try:
        assert r.returncode == 0, f"SLURM did not start:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        yield {**env, "SLURM_CONF": str(folder / "slurm.conf")}
    finally:
        s = subprocess.run(["bash", str(FIXTURE), "stop", str(folder)], capture_output=True, text=True, timeout=120)
        print(s.stdout, s.stderr)


def _job_state(job: str, env: dict) -> dict:
    """`scontrol show job -o JOB` as a dict (JobState, Restarts, ExitCode, ...); {} once SLURM forgot it."""
    r = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True, timeout=60)
    return dict(f.split("=", 1) for f in r.stdout.split() if "=" in f) if r.returncode == 0 else {}


def _trial_runs(db: Path) -> list[tuple]:
    """(run id, status, row, ray node id, lifecycle) of every trial run of the ablation study."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
            return con.execute(
                "SELECT r.run_uuid, r.status, t.value, n.value, r.lifecycle_stage FROM runs r "
                "JOIN experiments e ON r.experiment_id = e.experiment_id "
                "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'row' "
                "LEFT JOIN tags n ON n.run_uuid = r.run_uuid AND n.key = 'ray_node_id' "
                "WHERE e.name = 'ablation-synth'").fetchall()
    except sqlite3.Error:  # the server is creating the store
        return []


@pytest.mark.slurm
def test_sbatch_study_survives_its_warning_signal_requeues_and_resumes_on_two_ray_nodes(slurm, tmp_path):
    """The job's own MLflow server (basic auth), Ray on two nodes (the head and a worker beside it on this one
    machine), USR1 mid-study (as SLURM sends it before the time limit): the study stops, the job requeues
    itself, the requeued job resumes with --resume and ends with one FINISHED run per grid point and one
    FINISHED parent run, the same ones as before the signal."""
    import time

    videos, cache, shared = tmp_path / "videos", tmp_path / "cache", tmp_path / "shared"
    subprocess.run([sys.executable, "-c", "import sys; from vaanet.cli import main; sys.exit(main())", "synth",
                    "--out", str(videos), "--videos-per-class", "3", "--duration", "2", "--fps", "10",
                    "--resolutions", "64x48", "--workers", "2"],
                   cwd=REPO, env={**slurm, "PYTHONPATH": str(REPO)}, check=True, timeout=600)
    env = {**slurm, "VAANET_REPO": str(REPO), "VAANET_PYTHON": sys.executable, "VAANET_SHARED": str(shared),
           "VAANET_RAY_PORT": str(_free_port()), "VAANET_DASHBOARD_PORT": str(_free_port()),
           "VAANET_RAY_CLIENT_PORT": str(_free_port()), "VAANET_HEAD_WORKERS": "1", "VAANET_MLFLOW_WORKERS": "2",
           # two Ray nodes of one CPU each: two trials at once, one on each node
           "VAANET_RAY_START_ARGS": f"--num-cpus=1 --dashboard-agent-listen-port={_free_port()}"}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    # the quick ablation's grid (1 split, 5 presets) with enough epochs to be stopped mid-study
    study = ["experiments/ablation.py", "--splits", "1", "--epochs", "12", "--dataset", "synth", "--data-root",
             str(videos), "--cache", str(cache), *TINY, "--set", "run.checkpoint_every=2"]
    # submitted from a folder outside the checkout (VAANET_REPO names it); one node
    r = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--time=00:40:00", str(SBATCH), *study],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    log_file = tmp_path / f"vaanet-{job}.log"
    db = shared / "mlflow.db"

    def log() -> str:
        return log_file.read_text(errors="replace") if log_file.exists() else ""

    # the warning signal once a trial finished and others have not: mid-study
    deadline, before = time.time() + 900, []
    while time.time() < deadline:
        runs = [x for x in _trial_runs(db) if x[4] == "active"]
        if any(x[1] == "FINISHED" for x in runs):
            before = runs
            break
        assert _job_state(job, env).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), log()[-6000:]
        time.sleep(0.5)
    assert before, f"no trial finished within 900 s:\n{log()[-6000:]}"
    assert sum(x[1] == "FINISHED" for x in before) < 5, "the study ended before the signal; give it more epochs"
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=env, check=True, timeout=60)

    deadline, state, hurried = time.time() + 1500, {}, False
    while time.time() < deadline:
        state = _job_state(job, env)
        if state.get("JobState") == "PENDING" and state.get("Restarts") == "1" and not hurried:
            # SLURM holds a requeued job back ~2 minutes (Reason=BeginTime); the test waits 10 s of it: a launch
            # within the second of the requeue is refused for good ("Job credential revoked": slurmd revokes the
            # job's credentials at the requeue, by the second), which is what SLURM's hold is for
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now+10"], env=env, timeout=60)
            hurried = True
        if state.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"):
            break
        time.sleep(2)
    text = log()
    print(f"---- job {job} ({state.get('JobState')}, restarts {state.get('Restarts')}) log, vaanet lines:")
    print("\n".join(line for line in text.splitlines()
                    if not line.startswith(("[", "\x1b", " ")) and " INFO " not in line and " SUCC " not in line))
    assert state.get("JobState") == "COMPLETED" and state.get("ExitCode") == "0:0", (state, text[-6000:])
    assert state.get("Restarts") == "1", state

    # one log for both starts (--open-mode=append): signal, graceful stop, requeue, resume
    assert "USR1 (time limit or preemption ahead): stopping the study (SIGTERM to the driver" in text
    assert f"requeueing job {job} (requeue 1 of at most 3, VAANET_MAX_REQUEUES)" in text
    assert "requeued job: start 2 (SLURM_RESTART_COUNT=1, at most 3 requeues); the study resumes (--resume)" in text
    first, second = text.split("requeued job: start 2", 1)
    assert "--resume" not in first.split("running: ", 1)[1].splitlines()[0]
    assert second.split("running: ", 1)[1].splitlines()[0].endswith("--resume")
    assert "resuming study ablation-synth: " in second
    assert (cache / "index.csv").exists() and (cache / "splits" / "split_00.csv").exists()  # prepared once
    # each start: its own MLflow server (basic auth) and two Ray nodes with token authentication
    assert text.count("MLflow server up at http://") == 2 and "a client without the password is refused" in text
    assert text.count("Ray cluster up: 2 node(s), 2 CPUs") == 2
    assert text.count("Ray token authentication on: a client without the token is refused") == 2
    assert text.count("MLflow server stopped") == 2 and text.count("Ray cluster stopped") == 2
    assert "Traceback" not in second, second[-6000:]

    # one FINISHED run per grid point, one FINISHED parent run, nothing RUNNING; the runs of before the
    # signal are the same runs (a trial killed before its first checkpoint restarts in a new run; its
    # first run is deleted by the rerun)
    runs = _trial_runs(db)
    active = [x for x in runs if x[4] == "active"]
    assert sorted(x[2] for x in active) == sorted(PRESETS) and {x[1] for x in active} == {"FINISHED"}, runs
    ids = {x[0] for x in active}
    assert {x[0] for x in before if x[1] == "FINISHED"} <= ids
    with sqlite3.connect(db) as con:
        parents = con.execute("SELECT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                              "AND t.key = 'role' AND t.value = 'study' WHERE r.lifecycle_stage = 'active'").fetchall()
        running = con.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING' AND lifecycle_stage = 'active'"
                              ).fetchone()[0]
    state_file = shared / "runs" / "ablation-synth" / "study.json"
    parent = json.loads(state_file.read_text())["parent_run_id"]
    assert parents == [(parent, "FINISHED")] and running == 0, (parents, running)
    assert text.count(f"MLflow: study run {parent} FINISHED") == 1
    # the artifacts went through the server to the shared folder
    for run_id in ids:
        assert list((shared / "mlartifacts").glob(f"*/{run_id}/artifacts/config.yaml")), run_id
    # trials ran on both Ray nodes of a start
    starts = [set(line.split("node ids ", 1)[1].split()) for line in text.splitlines() if "node ids " in line]
    tagged = {x[3] for x in active}
    assert len(starts) == 2 and any(nodes <= tagged for nodes in starts), (starts, tagged)

    # the token and the MLflow auth folder are gone; no process of the job is left
    assert not list((shared / ".ray-auth").iterdir()) and not list(Path("/tmp").glob(f"vaanet-mlflow-{job}.*"))
    assert _processes_mentioning(f"/tmp/ray-vaanet-{job}") == []
    assert _processes_mentioning(f"sqlite:///{shared}/mlflow.db") == []
    # the only cancellation is SLURM's own message of the requeue; no step SIGKILLed
    assert [line for line in text.splitlines() if "CANCELLED" in line and "DUE TO JOB REQUEUE" not in line] == []
    assert ": Killed" not in text


@pytest.mark.slurm
def test_a_job_past_its_requeue_cap_stops_and_says_how_to_go_on(slurm, tmp_path):
    """VAANET_MAX_REQUEUES=0: the warning signal stops the study and ends the job with exit 3 and the line that
    says how to continue, instead of requeueing it (a study that can never finish does not loop)."""
    import time

    subprocess.run([sys.executable, "-c", "import sys; from vaanet.cli import main; sys.exit(main())", "synth",
                    "--out", str(tmp_path / "videos"), "--videos-per-class", "3", "--duration", "2", "--fps", "10",
                    "--resolutions", "64x48", "--workers", "2"],
                   cwd=REPO, env={**slurm, "PYTHONPATH": str(REPO)}, check=True, timeout=600)
    env = {**slurm, "VAANET_REPO": str(REPO), "VAANET_PYTHON": sys.executable, "VAANET_SHARED": str(tmp_path / "shared"),
           "VAANET_RAY_PORT": str(_free_port()), "VAANET_DASHBOARD_PORT": str(_free_port()),
           "VAANET_RAY_CLIENT_PORT": str(_free_port()), "VAANET_MAX_REQUEUES": "0",
           "VAANET_RAY_START_ARGS": f"--num-cpus=1 --dashboard-agent-listen-port={_free_port()}"}
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(key, None)
    r = subprocess.run(["sbatch", "--parsable", "--nodes=1", "--time=00:20:00", str(SBATCH), "experiments/ablation.py",
                        "--quick", "--dataset", "synth", "--data-root", str(tmp_path / "videos"), *TINY],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    job = r.stdout.strip().split(";")[0]
    log_file = tmp_path / f"vaanet-{job}.log"

    def log() -> str:
        return log_file.read_text(errors="replace") if log_file.exists() else ""

    deadline = time.time() + 600
    while f"vaanet on SLURM: job {job}" not in log() and time.time() < deadline:  # its signal handlers are set
        assert _job_state(job, env).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING", ""), log()[-6000:]
        time.sleep(0.5)
    subprocess.run(["scancel", "--signal=USR1", "--batch", job], env=env, check=True, timeout=60)
    state = {}
    while time.time() < deadline:
        state = _job_state(job, env)
        if state.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"):
            break
        time.sleep(1)
    text = log()
    print(text[-3000:])
    assert state.get("JobState") == "FAILED" and state.get("ExitCode") == "3:0" and state.get("Restarts") == "0", state
    assert f"not requeued: job {job} was already requeued 0 time(s) (VAANET_MAX_REQUEUES=0); resubmit the same " \
           "command with --resume to continue" in text
    assert "requeueing job" not in text
    assert _processes_mentioning(f"/tmp/ray-vaanet-{job}") == []
