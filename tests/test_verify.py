"""vaanet verify: a finished run reproduces to the last digit on a CPU; an edited config, other code or
other data is refused naming what; a changed metric fails with its difference in the table."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from vaanet.cli import main
from vaanet.train.environment import git_state
from vaanet.verify import Refused, check_code, verify
from vaanet.verify_study import verify_study


def test_verify_reproduces_a_run_folder_identically(reference_run, tmp_path, capsys):
    _, final, ref = reference_run
    assert main(["verify", str(ref / "run"), "--scratch", str(tmp_path / "scratch")]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "identical required" in out and "reproduced: every compared metric" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.startswith(("test_", "val_", "train_"))}
    assert {"test_acc", "val_acc", "train_loss"} <= set(rows)
    assert rows["test_acc"][1] == "1" and float(rows["test_acc"][2]) == pytest.approx(final["test_acc"])
    assert rows["val_acc"][1] == "3" and float(rows["val_acc"][-1]) == 0.0  # every epoch compared, no difference


def test_verify_first_epoch_of_an_mlflow_run(reference_run, tmp_path):
    cfg, _, ref = reference_run
    run_id = (ref / "run" / "mlflow_run_id").read_text().strip()
    result = verify(run_id, cfg.run.mlflow_uri, epochs=1, scratch=tmp_path / "scratch")
    assert result.ok and result.tolerance == 0.0
    assert {r[0] for r in result.rows} >= {"train_loss", "val_acc"} and all(r[1] == 1 for r in result.rows)
    assert not any(r[0].startswith("test_") for r in result.rows)  # the test follows the last epoch only


def test_a_changed_metric_fails_with_its_difference(reference_run, tmp_path, capsys):
    run = shutil.copytree(reference_run[2] / "run", tmp_path / "run")
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    lines[1]["val_loss"] += 0.001  # epoch 2
    (run / "metrics.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lines))
    assert main(["verify", str(run), "--epochs", "2"]) == 1
    out = capsys.readouterr().out
    assert "NOT reproduced: val_loss" in out
    row = next(line for line in out.splitlines() if line.startswith("val_loss"))
    assert row.endswith("<-") and float(row.split()[-2]) == pytest.approx(0.001, rel=1e-3)


def test_an_edited_config_artifact_is_refused_naming_the_key(reference_run, tmp_path, capsys):
    run = shutil.copytree(reference_run[2] / "run", tmp_path / "run")
    path = run / "artifacts" / "config.yaml"
    cfg = yaml.safe_load(path.read_text())
    cfg["optim"]["lr"] = 0.5
    path.write_text(yaml.safe_dump(cfg))
    assert main(["verify", str(run)]) == 1
    err = capsys.readouterr().err
    assert "refused" in err and "optim.lr: config artifact 0.5, trained with 0.001" in err
    assert not (tmp_path / "scratch").exists()


def test_other_data_is_refused_naming_the_file(reference_run, tmp_path):
    cfg, _, ref = reference_run
    run = shutil.copytree(ref / "run", tmp_path / "run")
    env = json.loads((run / "environment.json").read_text())
    env["data"]["split_sha256"] = "0" * 64  # the split file the run read is not the one there now
    (run / "environment.json").write_text(json.dumps(env))
    with pytest.raises(Refused, match=f"{cfg.data.split} \\(sha256 000000000000 when trained"):
        verify(str(run))


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_other_code_is_refused_and_a_dirty_tree_warned(tmp_path):
    repo = tmp_path / "code"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "model.py").write_text("x = 1\n")
    _git(repo, "add", "model.py")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    record = {"git": {k: v for k, v in git_state(repo).items() if k != "diff"}}
    assert record["git"]["dirty"] is False and check_code(record, repo) == []
    (repo / "model.py").write_text("x = 2\n")  # uncommitted change
    warnings = check_code(record, repo)
    assert len(warnings) == 1 and "this checkout has uncommitted changes (1 file(s))" in warnings[0]
    dirty = {"git": {k: v for k, v in git_state(repo).items() if k != "diff"}}
    assert check_code(dirty, repo) == []  # the run had the same uncommitted changes
    (repo / "model.py").write_text("x = 1\n")
    warnings = check_code(dirty, repo)  # a run trained with changes this checkout does not have
    assert len(warnings) == 1 and "uncommitted changes (its git_diff.patch artifact)" in warnings[0]
    (repo / "model.py").write_text("x = 3\n")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    with pytest.raises(Refused, match=f"commit {record['git']['commit'][:12]}, this checkout is at"):
        check_code(record, repo)


def test_a_run_without_environment_record(reference_run, tmp_path):
    """Runs from before environment records: a folder is refused naming the file and the fix; an MLflow run is
    checked against its git commit tag and its dataset input's digest."""
    from vaanet.verify import Record, check_legacy, split_digest

    cfg, _, ref = reference_run
    run = shutil.copytree(ref / "run", tmp_path / "run")
    (run / "environment.json").unlink()
    with pytest.raises(Refused, match=r"environment.json is missing: the run predates .* pass its MLflow run id"):
        verify(str(run))
    commit = git_state()["commit"]
    record = lambda **legacy: Record("MLflow run x", cfg, {}, None, {}, legacy=legacy)  # noqa: E731
    warnings = check_legacy(record(commit=commit, dataset_digest=split_digest(cfg.data.split)))
    assert "commit tag and split digest match" in warnings[0]
    with pytest.raises(Refused, match=f"{cfg.data.split} \\(MLflow dataset digest 0123 when trained"):
        check_legacy(record(commit=commit, dataset_digest="0123"))
    with pytest.raises(Refused, match="commit 0000000000aa, this checkout is at"):
        check_legacy(record(commit="0000000000aa" + "0" * 28, dataset_digest=""))
    with pytest.raises(Refused, match="neither an environment.json artifact nor a mlflow.source.git.commit tag"):
        check_legacy(record(commit="", dataset_digest=""))
    # the digest check_legacy compares is the one the run's MLflow dataset input carries
    from mlflow.tracking import MlflowClient

    logged = MlflowClient(cfg.run.mlflow_uri).get_run((run / "mlflow_run_id").read_text().strip())
    assert logged.inputs.dataset_inputs[0].dataset.digest == split_digest(cfg.data.split)


def test_verify_a_study_one_trial_per_row(synth_root, synth_cache, tmp_path, capsys):
    """A tiny study (2 rows x 2 splits, 1 epoch): its parent run carries the environment record, and `vaanet
    verify` of the study (its folder, its parent run id) retrains each row's first trial: one table, exit 0."""
    import os
    import sys

    from mlflow.tracking import MlflowClient

    from conftest import mlflow_store
    from vaanet.verify_study import StudyTrial, _labels, choose_trials

    uri = mlflow_store(tmp_path / "tracking.db")
    tiny = ["--set", "model.width=0.125", "--set", "model.segments=2", "--set", "model.frames=4", "--set",
            "model.crop_size=32", "--set", "data.audio_frames=8", "--set", "optim.batch_size=4", "--set",
            "model.attention_style=reference", "--set", "run.threads=1"]
    # the loss study's 4 rows, here 2 (VS+VCW+VT with CE and PCCE), through its own small script
    script = tmp_path / "two_rows.py"
    script.write_text("import sys\nsys.path.insert(0, %r)\nfrom vaanet.tune import Study, main\n"
                      "main(Study(name='two_rows', tables={}, grid=[{'model.preset': 'VS+VCW+VT', 'optim.loss': l} "
                      "for l in ('ce', 'pcce')], row_keys=('model.preset', 'optim.loss')), 'two rows')\n"
                      % str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, str(script), "--dataset", "synth", "--data-root", str(synth_root), "--cache",
                        str(synth_cache), "--splits", "2", "--epochs", "1", "--mlflow-uri", uri, "--output",
                        str(tmp_path / "runs"), *tiny], cwd=tmp_path, capture_output=True, text=True, timeout=420,
                       env={**os.environ, "RAY_DISABLE_USAGE_STATS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    study = tmp_path / "runs" / "two_rows-synth"
    parent = json.loads((study / "study.json").read_text())["parent_run_id"]

    client = MlflowClient(uri)  # (d) the study's parent run records the environment it ran in
    run = client.get_run(parent)
    env = json.loads(open(client.download_artifacts(parent, "environment.json", str(tmp_path))).read())
    assert env["git"]["commit"] == git_state()["commit"] and env["device"]["type"] == "cpu"
    assert run.data.params["env.torch"] == env["software"]["torch"] and run.data.params["env.precision"] == "fp32"
    assert run.data.tags["deterministic"] == "true" and run.data.tags["dirty"] == str(env["git"]["dirty"]).lower()

    assert main(["verify", str(study)]) == 0  # the study folder
    out = capsys.readouterr().out
    print(out)
    rows = [line.split() for line in out.splitlines() if line.startswith("VS+VCW+VT_")]  # rows as MLflow names them
    assert {(x[0], x[1]) for x in rows} == {("VS+VCW+VT_ce", "VS+VCW+VT_ce_split_00_seed0"),
                                            ("VS+VCW+VT_pcce", "VS+VCW+VT_pcce_split_00_seed0")}
    assert _labels(f"sqlite:///{tmp_path / 'elsewhere.db'}", parent) == {}  # no store: the folders' spelling stands
    assert {x[2] for x in rows} >= {"test_acc", "val_acc", "train_loss"} and all(float(x[-1]) == 0.0 for x in rows)
    assert out.splitlines()[-1].startswith("reproduced")
    result = verify_study(parent, uri, trial="split_01_seed0", epochs=1)  # the parent run id, the second split
    assert result.ok and [t.name for t, _, _ in result.results] == ["VS+VCW+VT_ce_split_01_seed0",
                                                                     "VS+VCW+VT_pcce_split_01_seed0"]
    with pytest.raises(Refused, match="row a has no finished trial named ...split_09_seed0 .it has a_split_00_seed0"):
        choose_trials([StudyTrial("a", "a_split_00_seed0", "x")], "split_09_seed0")
