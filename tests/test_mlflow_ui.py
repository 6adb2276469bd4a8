"""What the link a study prints opens in the MLflow UI, checked without a browser: the saved view it names is in
the experiment, in the format the installed MLflow UI reads (its JavaScript bundle is searched for each name the
view uses, so an MLflow upgrade that renames one fails here), grouped by row, test accuracy as columns, all runs."""
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]


def _bundle() -> str:
    import mlflow

    js = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    return "".join(p.read_text(errors="replace") for p in sorted(js.glob("*.js")))


def test_the_rows_view_is_in_the_format_the_installed_mlflow_ui_reads():
    from vaanet.tune.parent_run import VIEW_KEY, VIEW_TAG, rows_view

    envelope = json.loads(rows_view(created_ms=1))
    assert isinstance(envelope["name"], str) and envelope["createdAt"] == 1 and isinstance(envelope["state"], str)
    state = json.loads(envelope["state"])
    assert state["groupBy"] == {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "row"}]}
    assert "metrics.`test_acc`" in state["selectedColumns"] and state["runsHiddenMode"] == "SHOW_ALL"
    js = _bundle()
    # the URL parameter and the experiment tag prefix the UI loads a shared view from
    assert '"viewStateShareKey"' in js and '"mlflow.sharedViewState."' in js
    assert VIEW_TAG == f"mlflow.sharedViewState.{VIEW_KEY}"
    assert re.fullmatch(r"[A-Za-z0-9-]+", VIEW_KEY)  # no URL escaping needed
    # the saved-view envelope: an object with a string name, a number createdAt, a string state
    assert "Invalid saved-view envelope" in js and "createdAt" in js
    # every key of the state is one the UI takes from a shared view (its lists of UI-state keys and of the
    # search facets: filter, sort) ...
    ui_state = re.search(r'\["selectedColumns","columnOrder",[^\]]*\]', js)
    facets = re.search(r'\["searchFilter","orderByKey",[^\]]*\]', js)
    assert ui_state and facets, "the MLflow UI's lists of experiment-page state keys were not found in its bundle"
    known = set(json.loads(ui_state.group(0))) | set(json.loads(facets.group(0)))
    assert set(state) <= known, set(state) - known
    assert state["orderByKey"] == "tags.`row`" and state["orderByAsc"] is True  # rows in name order
    # the chart view: the test accuracy and the learning curves first, in the UI's chart vocabulary
    charts = state["compareRunCharts"]
    assert [c["metricKey"] for c in charts[:2]] == ["test_acc", "val_acc"] and not charts[0]["deleted"]
    assert 'e.BAR="BAR",e.LINE="LINE"' in js and 'e.MODEL_METRICS="Model metrics"' in js
    assert {c["metricSectionId"] for c in charts} == {s["uuid"] for s in state["compareRunSections"]}
    assert [s["name"] for s in state["compareRunSections"]] == ["Model metrics"]
    # ... and each value is in its vocabulary: group modes, aggregate functions, hidden-run modes, column keys
    assert 'e.Tag="tag"' in js and 'e.Average="average"' in js and 'e.SHOWALL="SHOW_ALL"' in js
    assert state["columnOrder"][:2] == ["attributes.`Run Name`", "metrics.`test_acc`"]  # test_acc the first metric
    assert 'ATTRIBUTES:"attributes"' in js and 'RUN_NAME:"Run Name"' in js
    assert 'METRICS:"metrics"' in js and 'TAGS:"tags"' in js and '(e,t)=>e+".`"+t+"`"' in js


def test_a_study_parent_run_stores_the_view_and_the_printed_link_opens_it(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from conftest import mlflow_store
    from vaanet.config import load_config
    from vaanet.train.store import ensure_experiment
    from vaanet.tune.parent_run import VIEW_KEY, VIEW_TAG, ParentRun
    from vaanet.tune.request import Study

    monkeypatch.setattr(sys, "argv", ["ablation.py", "--quick"])
    uri = mlflow_store(tmp_path / "mlflow.db")
    study = Study(name="ablation", tables={"synth": "3"}, grid=[{"model.preset": p} for p in ("VS", "VS+VCW")])
    base = load_config(REPO / "configs" / "synth_quick.yaml")
    split = tmp_path / "split_00.csv"
    points = [{"name": f"{row.replace('+', '-')}_split_00_seed0", "tags": {"row": row},
               "overrides": {"model.preset": row, "data.split": str(split), "run.seed": 0}} for row in ("VS", "VS+VCW")]
    ensure_experiment(uri, "ablation-synth")
    parent = ParentRun(uri, "ablation-synth")
    args = SimpleNamespace(dataset="synth", seeds="0", quick=True, search=None)
    run_id = parent.open(study, args, base, len(points), [split], points)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("ablation-synth")
    view = json.loads(json.loads(exp.tags[VIEW_TAG])["state"])
    assert view["groupBy"]["groupByKeys"] == [{"mode": "tag", "groupByData": "row"}]
    link = parent.ui_link()
    print(link)
    url = link.split("then open ")[1]
    assert url == (f"http://127.0.0.1:5000/#/experiments/{exp.experiment_id}/runs"
                   f"?workflowType=machine_learning&viewStateShareKey={VIEW_KEY}")
    assert link.startswith(f"mlflow ui --backend-store-uri {uri} ")
    # the URL names no facet of its own (searchFilter, orderByKey, ...): the UI ignores a shared view beside one
    assert not re.search(r"[?&](searchFilter|orderByKey|orderByAsc|startTime|lifecycleFilter|datasetsFilter)=", url)
    # the parent's own headline metrics get no chart (one bar each was the flood the chart view opened with):
    # every metric close() logs, but test_acc (a column of the trials too), is a deleted chart of the view
    import pandas as pd

    stats = pd.DataFrame([{"row": r, "metric": "test_acc", "n": 2, "trials": 2, "missing": 0, "mean": m, "std": 0.1,
                           "ci_low": m - 0.2, "ci_high": m + 0.2} for r, m in (("VS", 0.4), ("VS+VCW", 0.5))])
    frame = pd.DataFrame({"row": ["VS", "VS", "VS+VCW", "VS+VCW"], "status": ["ok"] * 4})
    comparisons = pd.DataFrame([{"row": "VS", "vs": "VS+VCW", "diff": -10.0, "p_holm": 0.04, "significant": True}])
    (tmp_path / "reports").mkdir()
    parent.close(stats, frame, tmp_path / "reports", True, (stats, comparisons, None))
    logged = set(client.get_run(run_id).data.metrics)
    deleted = {c["metricKey"] for c in view["compareRunCharts"] if c["deleted"]}
    assert "comparisons_significant" in logged and logged - {"test_acc"} == deleted, (logged, deleted)
    # a rerun reopens the same run and keeps the view; an experiment without it links to the parent run's page
    assert ParentRun(uri, "ablation-synth", run_id).open(study, args, base, len(points), [split], points) == run_id
    assert VIEW_TAG in client.get_experiment_by_name("ablation-synth").tags
    client.delete_experiment_tag(exp.experiment_id, VIEW_TAG)
    assert parent.ui_link().endswith(f"/runs/{run_id}?workflowType=machine_learning")
