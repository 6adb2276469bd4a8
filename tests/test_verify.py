"""vaanet verify: a finished run reproduces to the last digit on a CPU; an edited config, other code or
other data is refused naming what; a changed metric fails with its difference in the table."""
import json
import shutil
import subprocess

import pytest
import yaml

from vaanet.cli import main
from vaanet.train.environment import git_state
from vaanet.verify import Refused, check_code, verify


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
