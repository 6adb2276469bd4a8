"""Kills (issue 14): a run or a study killed at each phase, by Ctrl-C (SIGINT to the process group, as a
terminal sends it) or SIGKILL of the whole process group, then rerun as a user would. The signals
alternate along each chain, and the two chains alternate the other way round, so that every (signal,
phase) pair is hit once, by a run or by a study. After the rerun:
exactly one FINISHED MLflow run per grid point, nothing left RUNNING, metrics identical to an
uninterrupted run, and (for a study) the same table.

SIGTERM (issue 24: the stop signal of SLURM, Kubernetes, Docker, systemd) to the process group is folded
into the same chains, at each phase once: the command stops as on Ctrl-C well within SLURM's 30 s before
SIGKILL, exits 143, leaves no MLflow run RUNNING, and the checkpoint of the last finished epoch is written
although ``run.checkpoint_every`` (10 in those links) had not come round.

The moment of the kill is exact: ``VAANET_HOLD=<phase>:<file>`` (vaanet/faults.py) makes the process
that reaches the phase write the file and wait there to be killed."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import as_from_a_terminal, mlflow_store, tiny_config

REPO = Path(__file__).resolve().parents[1]
TINY = ["model.width=0.125", "model.segments=2", "model.frames=4", "model.crop_size=32", "data.audio_frames=8",
        "optim.batch_size=4", "model.attention_style=reference", "run.threads=1", "run.checkpoint_every=1"]
SIGNALS = {"SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL, "SIGTERM": signal.SIGTERM}
SIGTERM_DEADLINE = 30  # seconds: SLURM's KillWait, after which SIGKILL follows
SPARSE = ["--set", "run.checkpoint_every=10"]  # SIGTERM links: no periodic checkpoint before the signal
FINAL_KEYS = ("test_acc", "test_mean_class_acc", "test_polarity_acc", "best_epoch", "best_val_acc")


def _kill_at(cmd: list[str], cwd: Path, phase: str, sig: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Start ``cmd`` in its own process group, wait until it holds at ``phase``, send ``sig`` to the group.
    The result's ``seconds``: from the signal until the command and every process of its group were gone."""
    marker = cwd / f"hold-{phase}"
    marker.unlink(missing_ok=True)
    # PYTHONFAULTHANDLER: a command that does not stop is sent SIGABRT, which prints every thread's stack
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1", "VAANET_HOLD": f"{phase}:{marker}", "PYTHONFAULTHANDLER": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, preexec_fn=as_from_a_terminal)
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            out = proc.communicate(timeout=30)[0] if proc.poll() is not None else "(still running)"
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"never reached phase {phase}:\n{out[-3000:]}")
        time.sleep(0.1)
    time.sleep(0.3)  # the marker is written: the process is inside the phase
    os.killpg(proc.pid, SIGNALS[sig])
    sent = time.monotonic()
    try:
        out = proc.communicate(timeout=120)[0]
        while _group_alive(proc.pid) and time.monotonic() - sent < 120:
            time.sleep(0.05)
        seconds = time.monotonic() - sent
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGABRT)
        out = proc.communicate(timeout=30)[0]
        raise AssertionError(f"{sig} at {phase} did not stop the command within 120 s; its threads:\n{out[-6000:]}")
    finally:
        try:  # nothing of the killed command may outlive it (Ray's processes share its group)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    done = subprocess.CompletedProcess(cmd, proc.returncode, out, "")
    done.seconds = seconds
    return done


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


def _checkpointed_epoch(run_folder: Path) -> int:
    """The epoch (counted from 1) of the run folder's latest checkpoint."""
    import torch

    from vaanet.train.loop import STATE, latest_checkpoint

    return torch.load(latest_checkpoint(run_folder) / STATE, map_location="cpu", weights_only=True)["epoch"] + 1


def _check_sigterm(killed, statuses: list[str], phase: str) -> None:
    """SIGTERM: gone within SLURM's deadline, exit 143, the Ctrl-C line, nothing RUNNING."""
    assert killed.returncode == 143, (phase, killed.returncode, killed.stdout[-3000:])
    assert killed.seconds < SIGTERM_DEADLINE, (phase, killed.seconds)
    assert "Traceback" not in killed.stdout, killed.stdout[-3000:]
    assert "--resume" in killed.stdout or "run the same command again" in killed.stdout, killed.stdout[-3000:]
    assert "RUNNING" not in statuses, (phase, statuses, killed.stdout[-3000:])


def _rerun(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}
    env.pop("VAANET_HOLD", None)
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=420)


def _runs(uri: str, experiment: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    return client, (client.search_runs([exp.experiment_id]) if exp else [])


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


# ---- a single run: `vaanet train` -------------------------------------------------------------------
# SIGTERM at each phase once: epoch2 and final in the run, epoch1, test and report in the study
RUN_CHAIN = (("epoch1", "SIGINT"), ("epoch2", "SIGTERM"), ("epoch2", "SIGKILL"), ("test", "SIGINT"),
             ("final", "SIGKILL"), ("final", "SIGTERM"))
STUDY_CHAIN = (("epoch1", "SIGTERM"), ("epoch1", "SIGKILL"), ("epoch2", "SIGINT"), ("test", "SIGTERM"),
               ("test", "SIGKILL"), ("report", "SIGTERM"), ("report", "SIGINT"))


def test_run_killed_at_every_phase_reruns_to_the_uninterrupted_result(synth_root, synth_cache, tmp_path,
                                                                      reference_run):
    """One run killed six times, each rerun killed at the same or the next phase: epoch1 (before the first
    checkpoint), epoch2 (mid-epoch after one: SIGTERM writes it), test (during the test evaluation), final
    (test results logged and the MLflow run FINISHED, final checkpoint not yet written: SIGTERM writes it and
    the run stays FINISHED); then rerun to the end."""
    ref_cfg, ref_final, ref_dir = reference_run
    cfg = tiny_config(synth_root, synth_cache, tmp_path)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(cfg.to_dict()))
    cmd = [sys.executable, "-m", "vaanet.cli", "train", "--config", str(config)]
    folder = Path(cfg.run.output) / cfg.run.name
    for phase, sig in RUN_CHAIN:
        killed = _kill_at(cmd + (SPARSE if sig == "SIGTERM" else []), tmp_path, phase, sig)
        assert killed.returncode != 0
        _, runs = _runs(cfg.run.mlflow_uri, cfg.run.experiment)
        statuses = [r.info.status for r in runs]
        print(f"run   {sig:7} at {phase:7}: exit {killed.returncode:4} after {killed.seconds:4.1f} s, "
              f"MLflow runs {statuses}")
        assert len(runs) == 1, (phase, [(r.info.run_id, r.info.status) for r in runs])  # never doubled
        if sig == "SIGINT":  # Ctrl-C ends the run KILLED at once; a SIGKILL-ed one is closed by the rerun
            assert runs[0].info.status == "KILLED", (phase, killed.stdout[-2000:])
        if sig == "SIGTERM":
            _check_sigterm(killed, statuses, phase)
            # the run's last finished epoch (2 at final: the final checkpoint), and its status: KILLED while it
            # trains, FINISHED once its test results are logged
            assert _checkpointed_epoch(folder) == (1 if phase == "epoch2" else 3), phase
            assert statuses == (["FINISHED"] if phase == "final" else ["KILLED"]), (phase, statuses)

    rerun = _rerun(cmd, tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    print(f"run           rerun     : exit {rerun.returncode:4}, {rerun.stdout.splitlines()[-1]}")
    final = json.loads((folder / "final_metrics.json").read_text())
    assert {k: final[k] for k in FINAL_KEYS} == {k: ref_final[k] for k in FINAL_KEYS}
    client, runs = _runs(cfg.run.mlflow_uri, cfg.run.experiment)
    assert [r.info.status for r in runs] == ["FINISHED"], [(r.info.run_id, r.info.status) for r in runs]
    ref_client, (ref_run,) = _runs(ref_cfg.run.mlflow_uri, ref_cfg.run.experiment)
    for key in ("val_acc", "train_loss", "test_acc"):  # every epoch logged once, with the uninterrupted value
        assert _history(client, runs[0].info.run_id, key) == _history(ref_client, ref_run.info.run_id, key), key
    steps = [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()
             if "train_loss" in line]
    assert steps == [1, 2, 3]


# ---- a study: experiments/main_comparison.py, 1 row x 1 split ------------------------------------------
def _study_cmd(synth_root, synth_cache, tmp_path) -> list[str]:
    return [sys.executable, str(REPO / "experiments" / "main_comparison.py"), "--dataset", "synth",
            "--data-root", str(synth_root), "--cache", str(synth_cache), "--splits", "1", "--epochs", "3",
            "--mlflow-uri", mlflow_store(tmp_path / "tracking.db"), "--output", str(tmp_path / "runs"),
            *[x for s in TINY for x in ("--set", s)]]


def _table_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.strip().startswith("VS+VCW+VT+AT"))


@pytest.fixture(scope="module")
def reference_study(synth_root, synth_cache, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref_study")
    r = _rerun(_study_cmd(synth_root, synth_cache, tmp), tmp)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    trial = next((tmp / "runs" / "main_comparison-synth" / "train").iterdir())
    return _table_line(r.stdout), json.loads((trial / "final_metrics.json").read_text())


def test_study_killed_at_every_phase_resumes_to_the_uninterrupted_table(synth_root, synth_cache, tmp_path,
                                                                        reference_study):
    """One study killed seven times, each rerun (--resume) killed at the same or the next phase: epoch1,
    epoch2, test (in the trial) and report (in the driver, the trials done); then resumed to the end."""
    ref_line, ref_final = reference_study
    cmd = _study_cmd(synth_root, synth_cache, tmp_path) + ["--resume"]
    uri = mlflow_store(tmp_path / "tracking.db")
    trial = tmp_path / "runs" / "main_comparison-synth" / "train" / "VS-VCW-VT-AT_split_00_seed0"
    for phase, sig in STUDY_CHAIN:
        killed = _kill_at(cmd + (SPARSE if sig == "SIGTERM" else []), tmp_path, phase, sig)
        assert killed.returncode != 0
        assert "NoneType" not in killed.stdout and "were not written" not in killed.stdout, killed.stdout[-3000:]
        if sig == "SIGINT":  # Ctrl-C: what is done is reported, and how to go on
            assert "--resume" in killed.stdout and "Traceback" not in killed.stdout, killed.stdout[-3000:]
        _, runs = _runs(uri, "main_comparison-synth")
        trials = [r for r in runs if r.data.tags.get("role") != "study"]
        print(f"study {sig:7} at {phase:7}: exit {killed.returncode:4} after {killed.seconds:4.1f} s, MLflow trial "
              f"runs {[r.info.status for r in trials]}, parent {[r.info.status for r in runs if r not in trials]}")
        assert len(trials) == 1 and len(runs) == 2, (phase, [(r.info.run_name, r.info.status) for r in runs])
        if sig == "SIGINT":  # Ctrl-C leaves nothing RUNNING: the trial and the study's parent run end KILLED
            assert "RUNNING" not in [r.info.status for r in runs], (phase, [r.info.status for r in runs])
        if sig == "SIGTERM":  # the same, and the trial's last finished epoch is checkpointed (none yet at epoch1)
            _check_sigterm(killed, [r.info.status for r in runs], phase)
            assert "--resume" in killed.stdout, killed.stdout[-3000:]
            assert [r.info.status for r in runs if r not in trials] == ["KILLED"]
            assert [r.info.status for r in trials] == (["FINISHED"] if phase == "report" else ["KILLED"])
            if phase == "test":
                assert _checkpointed_epoch(trial) == 3

    rerun = _rerun(cmd, tmp_path)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    print(f"study         rerun     : exit {rerun.returncode:4}, table: {_table_line(rerun.stdout)}")
    print(f"study uninterrupted     :            table: {ref_line}")
    assert _table_line(rerun.stdout) == ref_line  # the same table: n 1, missing 0, the same numbers
    final = json.loads((trial / "final_metrics.json").read_text())
    assert {k: final[k] for k in FINAL_KEYS} == {k: ref_final[k] for k in FINAL_KEYS}
    client, runs = _runs(uri, "main_comparison-synth")
    trials = [r for r in runs if r.data.tags.get("role") != "study"]
    parents = [r for r in runs if r.data.tags.get("role") == "study"]
    assert [r.info.status for r in trials] == ["FINISHED"], [(r.info.run_name, r.info.status) for r in trials]
    assert [r.info.status for r in parents] == ["FINISHED"]
    assert trials[0].data.tags["mlflow.parentRunId"] == parents[0].info.run_id
    assert [s for s, _ in _history(client, trials[0].info.run_id, "val_acc")] == [1, 2, 3]
    assert (tmp_path / "runs" / "main_comparison-synth" / "reports" / "table1_synth.tex").is_file()
