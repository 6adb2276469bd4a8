"""The printed link in a real browser: headless chromium opens it on a real `mlflow server` and the page shows the
study's runs grouped by row (without the view the trials are folded under the parent run), every trial listed in
its row's group, with the test accuracy column.
CI installs chromium (.ci/run); without it the test is skipped, as the LaTeX tests are without pdflatex."""
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import MlflowServer

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
ROWS = ("AT", "VS", "VS+VCW")
SPLITS = 4  # 3 rows x 4 splits = 12 trials, more than the 10 runs MLflow draws in charts by default

pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs "
                                                   "it: apt-get install chromium)")]


@pytest.fixture
def server(tmp_path):
    srv = MlflowServer(tmp_path)
    srv.start()
    try:
        yield srv.url
    finally:
        srv.stop()


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--window-size=1600,1000",
                           "--virtual-time-budget=15000", f"--user-data-dir={tmp_path / 'chromium'}", *args],
                          capture_output=True, text=True, timeout=120)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_printed_link_shows_every_trial_grouped_by_row_with_test_accuracy(server, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from PIL import Image

    from vaanet.config import load_config
    from vaanet.train.store import ensure_experiment
    from vaanet.tune.parent_run import ParentRun
    from vaanet.tune.request import Study

    monkeypatch.setattr(sys, "argv", ["ablation.py"])
    study = Study(name="ablation", tables={"synth": "3"}, grid=[{"model.preset": r} for r in ROWS])
    splits = [tmp_path / f"split_{i:02d}.csv" for i in range(SPLITS)]
    points = [{"name": f"{r}_{s.stem}_seed0", "tags": {"row": r},
               "overrides": {"model.preset": r, "data.split": str(s), "run.seed": 0}} for r in ROWS for s in splits]
    ensure_experiment(server, "ablation-synth")
    parent = ParentRun(server, "ablation-synth")
    parent_id = parent.open(study, SimpleNamespace(dataset="synth", seeds="0", quick=False, search=None),
                            load_config(REPO / "configs" / "synth_quick.yaml"), len(points), splits, points)
    client = MlflowClient(server)
    exp_id = client.get_experiment_by_name("ablation-synth").experiment_id
    names = []
    for i, p in enumerate(points):  # the trials as a study logs them: run name, row, parent, test accuracy
        split = Path(p["overrides"]["data.split"]).stem
        name = f"{p['tags']['row']}_{split}_seed0"
        run = client.create_run(exp_id, run_name=name, tags={"row": p["tags"]["row"], "split": split, "seed": "0",
                                                             "mlflow.parentRunId": parent_id})
        client.log_metric(run.info.run_id, "test_acc", round(0.2 + 0.05 * i, 2), step=10)
        client.set_terminated(run.info.run_id)
        names.append(name)
    client.set_terminated(parent_id)
    link = parent.ui_link()
    assert link.startswith(f"{server}/#/experiments/{exp_id}/runs?") and "viewStateShareKey=" in link

    for _ in range(3):  # the page renders within the budget; on a loaded machine it may take a second try
        r = _chromium(tmp_path, "--dump-dom", link)
        text = _text(r.stdout)
        if all(f"Group: {row}" in text for row in ROWS):
            break
    assert all(f"Group: {row}" in text for row in ROWS), text[-3000:]  # grouped by the tag row
    missing = [n for n in names if n not in text]
    assert not missing, missing  # every trial listed
    assert "test_acc" in text and "Sort: row" in text and "Traces 0" not in text  # training view, not GenAI
    assert "0.75" in text  # a trial's test accuracy (0.2 + 0.05 x 11) is a visible cell

    shot = tmp_path / "runs.png"
    _chromium(tmp_path, f"--screenshot={shot}", link)
    image = Image.open(shot).convert("RGB")
    assert image.size == (1600, 1000)
    assert len(image.getcolors(maxcolors=1 << 20)) > 100  # a rendered page, not a blank or error screen
