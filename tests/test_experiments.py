"""Studies through Ray Tune: a local study with a failed trial, refused rerun, resume and a no-op rerun;
a real two-node Ray cluster on this machine; the cluster launcher config against Ray's schema."""
import os
import re
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import mlflow_store, private_ray_env, ray_start, stop_ray

REPO = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.width=0.125", "--set", "model.segments=2", "--set", "model.frames=4", "--set", "model.crop_size=32",
        "--set", "data.audio_frames=8", "--set", "optim.batch_size=4", "--set", "model.attention_style=reference",
        "--set", "run.threads=1"]


def _study(script, synth_root, synth_cache, tmp_path, *extra, env=None, timeout=420):
    args = [sys.executable, str(REPO / "experiments" / script), "--dataset", "synth", "--data-root", str(synth_root),
            "--cache", str(synth_cache), "--splits", "2", "--epochs", "1", "--mlflow-uri",
            mlflow_store(tmp_path / "tracking.db"), "--output", str(tmp_path / "runs"), *TINY, *extra]
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1", **(env or {})}
    return subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=env)


def _runs(tmp_path, experiment, role=None):
    """The trial runs of an experiment (``role="study"``: its parent runs)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'tracking.db'}")
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    return [r for r in runs if r.data.tags.get("role") == role]


def test_cluster_config_matches_the_launcher_schema():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load((REPO / "ray_cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["head_node_type"] in config["available_node_types"]
    starts = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in starts and "RAY_AUTH_MODE=disabled" not in yaml.safe_dump(config)


def test_local_study_fails_resumes_and_reruns_as_noop(synth_root, synth_cache, tmp_path):
    # every trial fails once at its first epoch, and no retries are allowed: the study is left unfinished
    # (--set optim.lam=1.0 replaces the study's default 0.5: announced and recorded, never silent)
    lam = ("--set", "optim.lam=1.0")
    r = _study("main_comparison.py", synth_root, synth_cache, tmp_path, "--max-failures", "0",
               "--set", "run.fail_at_epoch=0", *lam)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "2 trials failed or are missing" in r.stderr
    assert "--set optim.lam=1.0 replaces the main_comparison study's default optim.lam=0.5" in r.stdout
    # rerunning without --resume refuses to touch it
    r = _study("main_comparison.py", synth_root, synth_cache, tmp_path, "--max-failures", "0",
               "--set", "run.fail_at_epoch=0", *lam)
    assert r.returncode != 0 and "pass --resume" in r.stdout + r.stderr
    # other settings than the stored study's are refused, naming the differing keys
    r = _study("main_comparison.py", synth_root, synth_cache, tmp_path, "--set", "optim.lr=0.5", *lam, "--resume")
    assert r.returncode == 2 and re.search(r"optim.lr: [0-9.e-]+ -> 0.5", r.stderr), r.stderr
    # --resume reruns the unfinished trials, each from its own run folder; the injected failure does not recur
    r = _study("main_comparison.py", synth_root, synth_cache, tmp_path, "--max-failures", "0",
               "--set", "run.fail_at_epoch=0", *lam, "--resume")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "resuming study main_comparison-synth: 0/2" in r.stdout
    # the console says what happens, and nothing of Ray's internals
    assert "study: 2/2 trials done, 0 running, 0 pending, 0 failed" in r.stdout
    assert "| [VS+VCW+VT+AT_split_00_seed0] test acc" in r.stdout  # one line per finished trial, named as in MLflow
    assert len(r.stdout.splitlines()) < 30  # fits on one screen
    for chatter in ("TrainingReport(", "Checkpoint successfully created", "Traceback", "pid="):
        assert chatter not in r.stdout + r.stderr, chatter
    assert "epoch   1/1" in (tmp_path / "runs" / "main_comparison-synth" / "train" / "VS-VCW-VT-AT_split_00_seed0"
                             / "train.log").read_text()
    table_line = next(line for line in r.stdout.splitlines() if line.strip().startswith("VS+VCW+VT+AT"))
    assert table_line.split()[1] == "2"  # n = 2 splits
    assert re.search(r"\d+\.\d ± \d+\.\d \[-?\d+\.\d, \d+\.\d\]", table_line), table_line  # mean ± std [95 % CI]
    assert "95 % Student-t interval of the mean over the 2 split(s) x 1 seed(s)" in r.stdout
    runs = _runs(tmp_path, "main_comparison-synth")
    finished = [x for x in runs if x.info.status == "FINISHED"]
    assert len(finished) == 2 and {x.data.tags["split"] for x in finished} == {"split_00", "split_01"}
    assert all(x.data.tags["study"] == "main_comparison" and x.data.tags["table"] == "1" for x in finished)
    assert all(x.data.params["optim.lam"] == "1.0" and x.data.tags["study_overrides"] == "optim.lam=1.0"
               for x in finished)
    assert len(runs) == 2  # the attempts killed before their first checkpoint were replaced, not doubled
    # the closing report read the --mlflow-uri store, and went under the study's folder
    reports = tmp_path / "runs" / "main_comparison-synth" / "reports"
    assert (reports / "trials.csv").exists() and "VAANet (this run)" in (reports / "table1_synth.md").read_text()
    this_run = next(line for line in (reports / "table1_synth.md").read_text().splitlines() if "VAANet (this run)" in line)
    assert "missing" not in this_run and "±" in this_run, this_run  # the study's own trials, read back from MLflow
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "reports").exists()
    # MLflow is the home of the study: one parent run with the tables and figures, the trials nested in it
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'tracking.db'}")
    (parent,) = _runs(tmp_path, "main_comparison-synth", role="study")
    assert parent.info.status == "FINISHED" and parent.data.params["study"] == "main_comparison"
    # the link: the training-runs view, the runs list grouped by row (the saved view the study wrote)
    assert "/runs?workflowType=machine_learning&viewStateShareKey=vaanet-rows" in r.stdout
    # the description: the command with its arguments, the grid, splits and seeds, rendered as written (no text in
    # angle brackets outside the code block, which Markdown would take for HTML and drop)
    note = parent.data.tags["mlflow.note.content"]
    assert "2 trials = 1 row(s) (VS+VCW+VT+AT) x 2 split(s) x 1 seed(s)" in note, note
    assert "Splits: split_00, split_01. Seeds: 0." in note and "`data.dataset=ve8`" in note
    command = note.split("```")[1].strip()
    assert command.startswith("main_comparison.py --dataset synth") and "--splits 2 --epochs 1" in command
    assert "optim.lam=1.0" in command
    assert "<" not in "".join(note.split("```")[0::2]) and ">" not in "".join(note.split("```")[0::2])
    # its params: what every trial shares, never one trial's (or the base config's) name, split or seed
    params = parent.data.params
    assert params["model.preset"] == "VS+VCW+VT+AT" and params["optim.lam"] == "1.0" and params["splits"] == "2"
    assert not {"run.name", "data.split", "run.seed"} & set(params)
    assert params["model.pixel_normalization"].startswith("kinetics700_0_1")  # what the trials' model used
    # the summary: a few headline metrics in the children's names and units (the mean of their test_acc, a
    # fraction, unrounded), no metric per row
    assert parent.data.metrics["test_acc"] == pytest.approx(sum(x.data.metrics["test_acc"] for x in finished) / 2)
    assert {"test_acc_std", "test_acc_ci_low", "test_acc_ci_high", "trials_finished"} <= set(parent.data.metrics)
    assert not [k for k in parent.data.metrics if "/" in k] and parent.data.tags["headline_row"] == "VS+VCW+VT+AT"
    reports = {a.path for a in client.list_artifacts(parent.info.run_id, "reports")}
    assert "reports/trials.csv" in reports and "reports/table1_synth.tex" in reports

    def summary():  # the table MLflow shows (log_table's JSON), as the console printed it
        import pandas as pd

        path = client.download_artifacts(parent.info.run_id, "summary.json", str(tmp_path / f"dl{time.time()}"))
        return pd.read_json(path, orient="split")

    shown = summary()
    print(f"parent run: params {params}\nmetrics {parent.data.metrics}\ntags headline_row "
          f"{parent.data.tags['headline_row']}\nartifacts {[a.path for a in client.list_artifacts(parent.info.run_id)]}"
          f"\nsummary.json\n{shown.to_string(index=False)}\ndescription\n{note}\nconsole\n{r.stdout}")
    assert list(shown["row"]) == ["VS+VCW+VT+AT"] and shown["acc"].iloc[0] in table_line
    assert "summary_stats.json" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # one row label: the trials' MLflow run names use the row as tags and tables do (folders: '+' as '-')
    assert {x.info.run_name for x in finished} == {f"VS+VCW+VT+AT_{x.data.tags['split']}_seed0" for x in finished}
    assert client.get_experiment_by_name("main_comparison-synth").tags["mlflow.experimentKind"] == \
        "custom_model_development"
    for run in finished:
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id and tags["mlflow.source.name"] == "main_comparison.py"
        assert tags["mlflow.user"] and "seed 0" in tags["mlflow.note.content"] and tags["checkpoint"].endswith("best_model.pt")
        assert len(tags["mlflow.source.git.commit"]) == 40
        (inp,) = run.inputs.dataset_inputs
        assert inp.dataset.name.endswith(tags["split"]) and inp.dataset.digest
        assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == {"model/best_model.pt"}
    # `vaanet predict --run RUN_ID` finds the run's selected weights
    video = sorted(synth_root.glob("Joy/*.mp4"))[0]
    p = subprocess.run([sys.executable, "-m", "vaanet.cli", "predict", str(video), "--run", finished[0].info.run_id,
                        "--mlflow-uri", f"sqlite:///{tmp_path / 'tracking.db'}", "--figure", str(tmp_path / "f.png")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0 and "prediction:" in p.stdout, p.stderr
    # a finished study does no training
    r = _study("main_comparison.py", synth_root, synth_cache, tmp_path, *lam)
    assert r.returncode == 0 and "nothing to train" in r.stdout
    assert len(_runs(tmp_path, "main_comparison-synth")) == len(runs)
    assert list(summary()["row"]) == ["VS+VCW+VT+AT"]  # the rerun replaced the summary table, never appended to it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_cluster_runs_trials_on_both_nodes(synth_root, synth_cache, tmp_path):
    port, dash = _free_port(), _free_port()
    # token authentication on, as on a real cluster: every node and the driver share one token
    # the two trials meet inside their first epoch (the nodes' environment reaches the trials): each holds its
    # node's one CPU until the other runs. Without it, a trial that ended before the other's process had started
    # on the second node (a loaded machine) gave its process to the other trial (Tune's reuse_actors), and both
    # ran on the head (1 of 8 full runs)
    env = private_ray_env({**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32),
                           "VAANET_MEET": f"epoch1:2:{tmp_path / 'meet'}"})
    nodes = []
    try:
        nodes.append(ray_start(["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                                "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}"], env, tmp_path / "head.log"))
        nodes.append(ray_start([f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1"], env,
                               tmp_path / "worker.log"))
        r = _study("main_comparison.py", synth_root, synth_cache, tmp_path, "--address", f"127.0.0.1:{port}", env=env)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
        runs = [x for x in _runs(tmp_path, "main_comparison-synth") if x.info.status == "FINISHED"]
        assert len(runs) == 2
        assert len(list((tmp_path / "meet").iterdir())) == 2  # both trials met
        assert len({x.data.tags["ray_node_id"] for x in runs}) == 2  # one trial's worker on each node
    finally:
        for node in reversed(nodes):
            stop_ray(node)


def test_optuna_search_resumes_reruns_and_leaves_no_running_run(synth_root, synth_cache, tmp_path):
    search = ("--search", "optuna", "--samples", "2", "--splits", "1", "--epochs", "2")
    # both trials fail once at their first epoch, no retries: the search is left unfinished
    r = _study("lambda_sweep.py", synth_root, synth_cache, tmp_path, *search, "--max-failures", "0",
               "--set", "run.fail_at_epoch=0")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    r = _study("lambda_sweep.py", synth_root, synth_cache, tmp_path, *search, "--set", "run.fail_at_epoch=0")
    assert r.returncode == 2 and "unfinished search; pass --resume" in r.stderr, r.stderr
    # --resume restores Tune's searcher and reruns the errored trials (the injected failure does not recur)
    r = _study("lambda_sweep.py", synth_root, synth_cache, tmp_path, *search, "--set", "run.fail_at_epoch=0", "--resume")
    assert r.returncode == 0 and "resuming search lambda_sweep-synth" in r.stdout, r.stdout[-3000:] + r.stderr[-3000:]
    assert "selected: lambda" in r.stdout
    runs = _runs(tmp_path, "lambda_sweep-synth")
    assert not [x for x in runs if x.info.status == "RUNNING"]  # ASHA-stopped trials end KILLED
    finished = [x for x in runs if x.info.status == "FINISHED"]
    assert finished and all(x.info.status in ("FINISHED", "KILLED", "FAILED") for x in runs)
    assert all("test_acc" not in x.data.metrics for x in runs if x.info.status == "KILLED")
    # a finished search reruns as a no-op that prints its stored result
    r = _study("lambda_sweep.py", synth_root, synth_cache, tmp_path, *search, "--set", "run.fail_at_epoch=0")
    assert r.returncode == 0 and "already finished; nothing to train" in r.stdout and "selected: lambda" in r.stdout
    assert len(_runs(tmp_path, "lambda_sweep-synth")) == len(runs)


def test_an_error_a_retry_cannot_fix_fails_at_once_without_retries(synth_root, synth_cache, tmp_path):
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    # a learning rate this large turns the loss non-finite in the first epoch: deterministic, so the
    # trial fails for good at its first attempt although --max-failures allows 2 retries
    r = _study("main_comparison.py", synth_root, synth_cache, tmp_path, "--splits", "1", "--max-failures", "2",
               "--set", "optim.lr=1e12")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert "NonFiniteLoss" in r.stderr and "lower the learning rate" in r.stderr, r.stderr[-3000:]
    client = MlflowClient(mlflow_store(tmp_path / "tracking.db"))
    exp = client.get_experiment_by_name("main_comparison-synth")
    attempts = [x for x in client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
                if x.data.tags.get("role") != "study"]
    assert [x.info.status for x in attempts] == ["FAILED"]  # one attempt: none deleted and redone by a retry
    folder = tmp_path / "runs" / "main_comparison-synth" / "train" / "VS-VCW-VT-AT_split_00_seed0"
    assert "NonFiniteLoss" in (folder / "error.txt").read_text()


def test_data_digest_changes_with_what_the_trials_read(synth_root, synth_cache, tmp_path):
    import shutil

    from vaanet.tune.data import data_digest

    cache = tmp_path / "cache"
    (cache / "splits").mkdir(parents=True)
    shutil.copy(synth_cache / "index.csv", cache / "index.csv")
    split = shutil.copy(synth_cache / "splits" / "split_00.csv", cache / "splits" / "split_00.csv")
    truth = shutil.copy(synth_root / "synth_truth.csv", tmp_path / "synth_truth.csv")
    shutil.copy(synth_root / "synth_config.txt", tmp_path / "synth_config.txt")
    first = data_digest(cache, [Path(split)], Path(truth))
    assert data_digest(cache, [Path(split)], Path(truth)) == first  # stable
    Path(split).write_text(Path(split).read_text().replace("test", "train", 1))  # one video moved between subsets
    second = data_digest(cache, [Path(split)], Path(truth))
    assert second != first
    (tmp_path / "synth_config.txt").write_text("{'confuser': 0.5}\n")  # generated by other defaults
    assert data_digest(cache, [Path(split)], Path(truth)) not in (first, second)


def test_a_synth_set_made_before_an_option_existed_is_the_same_data(synth_root, synth_cache, tmp_path):
    """A new SynthConfig option (off by default) neither regenerates the demo's set nor changes the data digest
    of a set made before it existed; a changed or unknown setting still does. A study.json holding the old,
    byte-wise digest of the same files is accepted."""
    import ast
    import shutil
    from dataclasses import asdict

    from vaanet.data.synth import SynthConfig
    from vaanet.tune.data import _stale_synth, data_digest, stored_digest

    settings = asdict(SynthConfig())
    older = {k: v for k, v in settings.items() if k != "confuser_same"}  # made before that option existed
    demo = tmp_path / "demo"
    demo.mkdir()
    for made, stale in ((settings, False), (older, False), ({**older, "noise": 2.0}, True),
                        ({**settings, "retired_option": 1}, True)):
        (demo / "synth_config.txt").write_text(repr(made) + "\n")
        assert _stale_synth(demo) is stale, made

    cache = tmp_path / "cache"
    (cache / "splits").mkdir(parents=True)
    shutil.copy(synth_cache / "index.csv", cache / "index.csv")
    split = Path(shutil.copy(synth_cache / "splits" / "split_00.csv", cache / "splits" / "split_00.csv"))
    truth = Path(shutil.copy(synth_root / "synth_truth.csv", tmp_path / "synth_truth.csv"))
    made = ast.literal_eval((synth_root / "synth_config.txt").read_text())  # the fixture's own (non-default) settings
    (tmp_path / "synth_config.txt").write_text(repr(made) + "\n")
    now = data_digest(cache, [split], truth)
    assert made["confuser_same"] is False
    (tmp_path / "synth_config.txt").write_text(repr({k: v for k, v in made.items() if k != "confuser_same"}) + "\n")
    assert data_digest(cache, [split], truth) == now  # the same set, its file written by an older version
    legacy = data_digest(cache, [split], truth, canonical=False)  # what that older version stored
    assert legacy != now and stored_digest({"data_digest": legacy}, cache, [split], truth, now) == now
    assert stored_digest({"data_digest": "0123456789abcdef"}, cache, [split], truth, now) == "0123456789abcdef"
    assert stored_digest({}, cache, [split], truth, now) == now  # a study.json from before the digest
    (tmp_path / "synth_config.txt").write_text(repr({**made, "noise": made["noise"] + 1}) + "\n")
    assert data_digest(cache, [split], truth) != now


def test_summary_reports_attention_as_ratio_to_uniform_and_a_verdict():
    import pandas as pd

    from vaanet.tune.request import Study
    from vaanet.tune.summary import attention_verdict, summary_stats, summary_table

    study = Study(name="ablation", tables={}, grid=[{"model.preset": p} for p in ("AT", "VS", "VS+VCW+VT")])
    rows = []
    for split, (preset, temporal, spatial) in enumerate((("AT", None, None), ("VS", 0.25, 0.5), ("VS", 0.25, 0.6),
                                                         ("VS+VCW+VT", 0.6, 0.3))):
        rows.append({"row": preset, "status": "ok", "data.split": f"/c/splits/split_0{split}.csv", "run.seed": 0,
                     "test_acc": 0.5, "test_mean_class_acc": 0.5,
                     "test_polarity_acc": 0.9, "test_temporal_on_key": temporal, "test_temporal_on_key_uniform": 0.25,
                     "test_spatial_in_box": spatial, "test_spatial_in_box_uniform": 0.25})
    frame = pd.DataFrame(rows)
    stats = summary_stats(frame, study)
    table = summary_table(frame, study, stats).set_index("row")
    # mean ± std [95 % Student-t interval of the mean]: 2.2 ± 12.706 * 0.2828 / sqrt(2) = [-0.34, 4.74]
    assert table.loc["VS", "spatial_x_uniform"] == "2.20 ± 0.28 [-0.34, 4.74]"
    assert table.loc["VS", "temporal_x_uniform"] == "1.00 ± 0.00 [1.00, 1.00]"  # no variance: the mean itself
    assert table.loc["VS+VCW+VT", "temporal_x_uniform"] == "2.40 ± 0.00" and table.loc["AT", "spatial_x_uniform"] == "—"
    assert table.loc["VS", "acc"] == "50.0 ± 0.0 [50.0, 50.0]" and table.loc["VS", "n"] == 2  # one run: no interval
    # no full model here: each row against the row above, paired on (split, seed); the splits differ: no pairs
    assert list(table["vs"]) == ["", "AT", "VS"] and table.loc["VS", "Δ acc [95 % CI], p Holm"] == "no pairs"
    acc = stats.set_index(["row", "metric"]).loc[("VS", "test_acc")]
    assert acc["mean"] == 0.5 and acc["n"] == 2  # the trials' own unit (a fraction), unrounded
    verdict = attention_verdict(stats)
    assert verdict.startswith("planted evidence RECOVERED")  # temporal 2.4x; spatial is reported, not judged
    assert "VS+VCW+VT 2.40x uniform (target >= 2x in every row with VT) (met)" in verdict
    assert "spatial attention in the evidence box VS 2.20x, VS+VCW+VT 1.20x uniform (reported, not judged" in verdict
    assert "--preset spatial" in verdict and "full model" not in verdict  # no full-model row here
    assert attention_verdict(stats[stats["row"] != "VS+VCW+VT"]).startswith("planted evidence RECOVERED")
    assert attention_verdict(stats[~stats["metric"].str.endswith("_x_uniform")]) is None
    # the demo's rows: the full model above every other row by more than the larger of the two split stds, AT above
    # chance; judged unrounded
    demo = Study(name="ablation", tables={}, grid=[{"model.preset": p} for p in
                                                   ("AT", "VS", "VS+VCW+VT", "VS+VCW+VT+AT")])
    accs = {"AT": (0.20, 0.25), "VS": (0.40, 0.42), "VS+VCW+VT": (0.50, 0.60), "VS+VCW+VT+AT": (0.80, 0.90)}
    rows = [{"row": r, "status": "ok", "data.split": f"/c/splits/split_0{i}.csv", "run.seed": 0, "test_acc": acc,
             "test_temporal_on_key": 0.75 if "VT" in r else None,
             "test_temporal_on_key_uniform": 0.25, "test_spatial_in_box": 0.25 if "VS" in r else None,
             "test_spatial_in_box_uniform": 0.25} for r, split_accs in accs.items() for i, acc in enumerate(split_accs)]
    frame = pd.DataFrame(rows)
    # the console table's comparisons: each row against the full model, paired on split, Holm over the defined p
    from scipy.stats import ttest_rel
    from statsmodels.stats.multitest import multipletests

    from vaanet.tune.summary import summary_comparisons, summary_note

    comps = summary_comparisons(frame, demo).set_index("row")
    assert list(comps.index) == ["AT", "VS", "VS+VCW+VT"] and set(comps["ref_row"]) == {"VS+VCW+VT+AT"}
    p = [ttest_rel([20, 25], [80, 90]).pvalue, ttest_rel([40, 42], [80, 90]).pvalue]
    holm = multipletests(p, method="holm")[1]
    assert comps.loc["AT", "diff"] == pytest.approx(-62.5) and comps.loc["VS", "diff"] == pytest.approx(-44.0)
    assert list(comps.loc[["AT", "VS"], "p_holm"]) == pytest.approx(list(holm))
    assert comps.loc["VS+VCW+VT", "diff"] == pytest.approx(-30) and comps.loc["VS+VCW+VT", "p_holm"] != \
        comps.loc["VS+VCW+VT", "p_holm"]  # no variance in the differences: no test, not counted by Holm
    table = summary_table(frame, demo).set_index("row")
    low, high = ttest_rel([20, 25], [80, 90]).confidence_interval()
    assert table.loc["AT", "Δ acc [95 % CI], p Holm"] == (f"-62.5 [{low:+.1f}, {high:+.1f}], p {holm[0]:.3f}"
                                                          + (" †" if holm[0] < 0.05 else ""))
    assert table.loc["VS+VCW+VT", "Δ acc [95 % CI], p Holm"] == "-30.0 [-30.0, -30.0], p n/a"
    assert table.loc["AT", "vs"] == "VS+VCW+VT+AT" and table.loc["VS+VCW+VT+AT", "vs"] == ""
    note = summary_note(comps.reset_index(), 2, 1)
    # the family Holm corrects over is named: the report's tables compare more pairs (also the row above)
    assert "Holm–Bonferroni" in note and f"Holm's family here: these {len(comps)} comparisons" in note
    # † where significant after Holm: three splits of a consistent gap
    three = pd.concat([frame, frame[frame["data.split"].str.endswith("01.csv")].assign(
        **{"data.split": "/c/splits/split_02.csv"}, test_acc=lambda f: f["test_acc"] + 0.01)])
    marked = summary_table(three, demo).set_index("row")["Δ acc [95 % CI], p Holm"]
    significant = summary_comparisons(three, demo).set_index("row")["significant"]
    assert [m.endswith("†") for m in marked[significant.index]] == [x is True for x in significant]
    assert significant.any()
    verdict = attention_verdict(summary_stats(frame, demo), chance=0.125)
    assert verdict.startswith("planted evidence RECOVERED"), verdict
    assert "full model 0.850 ± 0.071 above every other row" in verdict and "AT 0.225 above chance 0.125 (met)" in verdict
    assert "VS+VCW+VT +0.300 > 0.071" in verdict
    assert not attention_verdict(summary_stats(frame, demo), chance=0.25).startswith("planted evidence RECOVERED")
    close = frame.copy()  # the gap to VS+VCW+VT (0.35 - 0.35 = 0.0) is not more than the larger std
    close.loc[close["row"] == "VS+VCW+VT", "test_acc"] = [0.80, 0.90]
    verdict = attention_verdict(summary_stats(close, demo), chance=0.125)
    assert verdict.startswith("planted evidence NOT recovered") and "VS+VCW+VT +0.000 <= 0.071" in verdict
    wide = frame.copy()  # gap 0.30 against VS+VCW+VT, whose split std (0.354) is the larger
    wide.loc[wide["row"] == "VS+VCW+VT", "test_acc"] = [0.30, 0.80]
    assert "VS+VCW+VT +0.300 <= 0.354" in attention_verdict(summary_stats(wide, demo), chance=0.125)
    # judged unrounded: 1.996x is printed as 2.00 but is not >= 2
    frame = pd.DataFrame([{"row": "VS+VCW+VT", "status": "ok", "data.split": "split_00", "run.seed": 0,
                           "test_acc": 0.5, "test_temporal_on_key": 0.499,
                           "test_temporal_on_key_uniform": 0.25}])
    stats = summary_stats(frame, study)
    assert summary_table(frame, study, stats).set_index("row").loc["VS+VCW+VT", "temporal_x_uniform"] == "2.00 ± 0.00"
    assert attention_verdict(stats).startswith("planted evidence NOT recovered")
    # a row named by more than its preset (the loss comparison's "VS+VCW+VT_ce"; a lambda sweep's "0.5" with the
    # preset among the study's fixed overrides) is judged by its preset's attentions
    from vaanet.tune.summary import row_presets

    loss = Study(name="loss_comparison", tables={}, grid=[{"model.preset": "VS+VCW+VT", "optim.loss": "ce"}],
                 row_keys=("model.preset", "optim.loss"))
    lam = Study(name="lambda_sweep", tables={}, grid=[{"optim.lam": 0.5}], row_keys=("optim.lam",),
                extra={"model.preset": "VS+VCW+VT"})
    for st, name in ((loss, "VS+VCW+VT_ce"), (lam, "0.5")):
        assert row_presets(st) == {name: "VS+VCW+VT"}
        weak = pd.DataFrame([{"row": name, "metric": "temporal_x_uniform", "n": 3, "mean": 1.1, "std": 0.0},
                             {"row": name, "metric": "spatial_x_uniform", "n": 3, "mean": 2.5, "std": 0.0}])
        verdict = attention_verdict(weak, presets=row_presets(st))
        assert verdict.startswith("planted evidence NOT recovered") and f"{name} 1.10x uniform (target" in verdict
    assert "VS+VCW+VT_ce 1.10x" in attention_verdict(weak.assign(row="VS+VCW+VT_ce"))  # no presets: the name's prefix
