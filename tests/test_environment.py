"""The environment record of a run: environment.json in the run folder and as an MLflow artifact, its gist as
env.* params and dirty / precision / deterministic tags; the git diff beside it when the tree is dirty."""
import json

from mlflow.tracking import MlflowClient

from vaanet.train.environment import git_state


def test_a_cpu_run_records_its_environment(reference_run, tmp_path):
    cfg, _, ref = reference_run
    folder = ref / "run"
    env = json.loads((folder / "environment.json").read_text())
    assert set(env) >= {"git", "software", "device", "precision", "determinism", "data"}
    assert set(env["software"]) >= {"python", "torch", "torchvision", "torchaudio", "ray", "mlflow", "numpy", "av", "ffmpeg"}
    assert all(env["software"][k] for k in ("python", "torch", "numpy", "mlflow", "av")) and env["software"]["ffmpeg"]
    assert env["device"]["type"] == "cpu" and env["device"]["cpu_count"] >= 1 and env["device"]["cpu_model"]
    assert set(env["device"]) >= {"gpu_model", "driver", "cuda", "cudnn"}
    # run.bf16 is on by default but takes effect only on CUDA: this CPU run computed in fp32
    assert cfg.run.bf16 and env["precision"] == "fp32"
    assert env["determinism"]["deterministic"] is True and env["determinism"]["seed"] == cfg.run.seed
    assert env["determinism"]["torch_threads"] == cfg.run.threads == 1
    assert env["data"]["split"] == cfg.data.split and len(env["data"]["split_sha256"]) == 64
    git = git_state()
    assert env["git"]["commit"] == git["commit"] and len(git["commit"]) == 40
    assert (folder / "git_diff.patch").is_file() == env["git"]["dirty"]

    client = MlflowClient(cfg.run.mlflow_uri)
    run_id = (folder / "mlflow_run_id").read_text().strip()
    run = client.get_run(run_id)
    assert run.data.tags["dirty"] == str(env["git"]["dirty"]).lower()
    assert run.data.tags["precision"] == "fp32" and run.data.tags["deterministic"] == "true"
    assert run.data.params["env.torch"] == env["software"]["torch"] and run.data.params["env.precision"] == "fp32"
    stored = json.loads(open(client.download_artifacts(run_id, "environment.json", str(tmp_path))).read())
    assert stored == env


def test_git_state_of_a_dirty_tree(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "a.py").write_text("a = 1\n")
    git("add", "a.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "a.py").write_text("a = 2\n")
    (tmp_path / "untracked.py").write_text("b = 1\n")  # not code the run imported unless added: not in the diff
    state = git_state(tmp_path)
    assert state["dirty"] is True and "+a = 2" in state["diff"] and "untracked" not in state["diff"]
    assert len(state["diff_sha256"]) == 64
