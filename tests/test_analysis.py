"""MLflow runs with known metrics -> exactly the expected table cells, bolding, p-values and warnings."""
import re

import numpy as np
import pytest
from pathlib import Path
from scipy import stats

from analysis.render import delta, to_latex, to_markdown
from analysis.report import main as report_main
from analysis.report import write_reports
from analysis.runs import load_runs
from analysis.tables import ablation_table, loss_table
from statsmodels.stats.multitest import multipletests
from conftest import mlflow_store
from vaanet.classes import VE8_CLASSES

PRESETS = ["AT", "VS", "VS+VCW", "VS+VCW+VT", "VS+VCW+VT+AT"]
ACC = {"AT": [0.40, 0.42, 0.41], "VS": [0.50, 0.53, 0.52], "VS+VCW": [0.51, 0.55, 0.52],
       "VS+VCW+VT": [0.53, 0.56, 0.54], "VS+VCW+VT+AT": [0.55, 0.57, None]}  # None: that run failed


def _log(client, exp_id, tags, metrics, status="FINISHED"):
    from mlflow.entities import Metric, RunTag

    run = client.create_run(exp_id)
    client.log_batch(run.info.run_id, metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
                     tags=[RunTag(k, str(v)) for k, v in tags.items()])
    client.set_terminated(run.info.run_id, status)


@pytest.fixture
def store(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    exp = client.create_experiment("ablation-ve8")
    for preset, accs in ACC.items():
        for split, acc in enumerate(accs):
            tags = dict(study="ablation", table="3", dataset="ve8", preset=preset, loss="pcce", lam="0.5",
                        split=f"split_{split:02d}", seed="0")
            if acc is None:
                _log(client, exp, tags, {}, status="FAILED")
                continue
            per_class = {f"test_acc_{c}": acc + 0.01 * i for i, c in enumerate(VE8_CLASSES)}
            _log(client, exp, tags, {"test_acc": acc, "test_mean_class_acc": acc - 0.02, **per_class})
    exp5 = client.create_experiment("loss-ve8")
    for preset in ["VS+VCW+VT", "VS+VCW+VT+AT"]:
        for loss, accs in (("ce", [0.50, 0.52, 0.49]), ("pcce", [0.53, 0.56, 0.50])):
            for split, acc in enumerate(accs):
                _log(client, exp5, dict(study="loss_comparison", dataset="ve8", preset=preset, loss=loss,
                                        split=f"split_{split:02d}", seed="0"), {"test_acc": acc})
    return uri


def test_ablation_cells_bold_pvalues_and_missing(store):
    runs = load_runs("ablation-ve8", store)
    assert len(runs) == 15 and (runs["status"] == "FAILED").sum() == 1
    table = ablation_table(runs, "ve8", list(VE8_CLASSES))
    assert [r["label"] for r in table.rows] == PRESETS
    vs = table.rows[1]["cells"]["Accuracy"]
    assert vs[0] == pytest.approx(np.mean([50, 53, 52])) and vs[1] == pytest.approx(np.std([50, 53, 52], ddof=1))
    assert vs[2] == 3
    p = stats.ttest_rel([0.50, 0.53, 0.52], [0.40, 0.42, 0.41]).pvalue
    vs_at = delta(table, table.rows[1]["cells"]["Δ prev."])
    assert vs_at["p_t"] == pytest.approx(p) and vs_at["diff"] == pytest.approx(np.mean([10, 11, 11]))
    # the full model (2 of 3 runs) against the row above: 2 pairs, split_02 unpaired and left out
    last = delta(table, full_delta := table.rows[4]["cells"]["Δ prev."])
    assert last["n"] == 2 and last["unpaired"] == 1 and last["unpaired_points"] == "split_02/seed 0"
    assert last["diff"] == pytest.approx(np.mean([55 - 53, 57 - 56])) and full_delta.ref == "VS+VCW+VT"
    # VS+VCW+VT against the full model is that same pair, reversed: one test, not two
    assert delta(table, table.rows[3]["cells"]["Δ full"])["diff"] == pytest.approx(-last["diff"])
    comps = table.stats[(table.stats["kind"] == "comparison") & (table.stats["metric"] == "test_acc")]
    defined = comps[comps["p_t"].notna()]  # an undefined test (no variance in the differences) is not corrected for
    assert len(comps) == 7 and len(defined) < 7 and comps.loc[comps["p_t"].isna(), "p_holm"].isna().all()
    assert defined["p_holm"].to_numpy() == pytest.approx(multipletests(defined["p_t"], method="holm")[1])
    full = table.rows[4]
    assert full["cells"]["Accuracy"][2] == 2 and full["missing"] == ["split_02/seed 0"]
    md = to_markdown(table, compare_paper=True)
    # the best accuracy (VS+VCW+VT+AT) has 2 of 3 runs: not bold; the best of the full rows (VS+VCW+VT) is
    assert "| 56.0 ± 1.4 (" in md and "**56.0" not in md and "| **54.3 ± 1.5** (" in md
    assert "missing: split_02/seed 0" in md
    # the Markdown table spells the classes out: no note on abbreviations it does not use (LaTeX's headers do)
    assert "| Anger |" in md.splitlines()[2] and "Classes:" not in md and "Ang." not in md
    assert "Ang." in to_latex(table) and "Classes: Ang. Anger" in to_latex(table)
    assert f"{np.mean([50, 53, 52]) - 51.7:+.1f}" in md.split("| VS |")[1].split("\n")[0]


def test_latex_is_a_well_formed_booktabs_tabular(store):
    table = ablation_table(load_runs("ablation-ve8", store), "ve8", list(VE8_CLASSES))
    tex = to_latex(table)
    spec = re.search(r"\\begin\{tabular\}\{([lc]+)\}", tex).group(1)
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    header = tex.split(r"\toprule")[1].split(r"\midrule")[0].strip()
    assert len(spec) == 1 + 8 + 3 + 1  # classes, accuracy, mean class acc., Δ (vs the row above), n
    assert "Δ full" not in tex and r"$\Delta$ &" in tex  # Δ full: in the Markdown table (no room on the page)
    for line in [header] + body:
        assert line.endswith(r"\\") and line.count("&") == len(spec) - 1
    assert "\\caption{" in tex and "\\label{tab:table3_ve8}" in tex and tex.startswith(r"\begin{table*}")
    assert tex.count(r"\begin{") == tex.count(r"\end{")
    full = next(i for i, line in enumerate(body) if line.startswith("VS+VCW+VT+AT &"))
    assert " & 56.0 & " in body[full] and r"{\scriptsize$\pm$1.4}" in body[full + 1]  # std in the row below
    assert r"\textbf{54.3}" in body[full - 2] and r"\textbf{56.0}" not in tex  # 2 of 3 runs: not bold
    assert r" 56.0{\scriptsize$\pm$1.4}" in to_latex(table, std="inline")
    assert r"\pm" not in to_latex(table, std="none").split(r"\midrule")[1].split(r"\bottomrule")[0]
    vs_at = delta(table, table.rows[1]["cells"]["Δ prev."])  # VS - AT: +10.7 points, Holm p < .05: dagger
    assert vs_at["p_holm"] < 0.05 and "\nVS & 51.7 & 52.7" in tex and r"{\scriptsize+10.7}$^\dagger$ & 3 \\" in tex
    assert r"{\scriptsize+1.0} & 3 \\" in tex  # VS+VCW - VS: not significant, no dagger
    assert r"& {\scriptsize$\pm$" + f"{(vs_at['diff_ci_high'] - vs_at['diff_ci_low']) / 2:.1f}" + "} &" in tex
    paper_row = next(line for line in to_latex(table, compare_paper=True).splitlines()
                     if line.startswith(r"\quad\textit{paper}"))
    assert r"\textit{41.4}" in paper_row  # Table 3: AT's average in the paper


def test_loss_table_paired_test(store):
    table = loss_table(load_runs("loss-ve8", store))
    assert [r["label"] for r in table.rows] == [("VS+VCW+VT", "CE"), ("VS+VCW+VT", "PCCE"),
                                                ("VS+VCW+VT+AT", "CE"), ("VS+VCW+VT+AT", "PCCE")]
    p = stats.ttest_rel([0.53, 0.56, 0.50], [0.50, 0.52, 0.49]).pvalue
    c = delta(table, table.rows[1]["cells"]["Δ VE8"])
    assert c["p_t"] == pytest.approx(p) and c["diff"] == pytest.approx(np.mean([3, 4, 1]))
    both = table.stats[table.stats["kind"] == "comparison"]  # the two presets' PCCE vs CE: Holm over both
    assert len(both) == 2 and c["p_holm"] == pytest.approx(multipletests(both["p_t"], method="holm")[1][0])
    assert table.rows[1]["paper"]["VE8"] == 53.6


def test_report_files_and_cli(store, tmp_path, capsys):
    with pytest.warns(UserWarning, match="missing runs"):
        written = write_reports(["ablation-ve8", "loss-ve8"], store, tmp_path / "out", figure_format="pdf")
    names = {p.name for p in written}
    assert {"table3_ve8.tex", "table3_ve8.md", "table5.tex", "table5.md", "per_class_ve8.pdf"} <= names
    assert (tmp_path / "out" / "per_class_ve8.pdf").read_bytes().startswith(b"%PDF")  # vector output
    printed = capsys.readouterr().out
    assert "| VS+VCW+VT+AT | PCCE |" in printed and "**Ablation of the attentions on VE8" in printed  # tables printed
    assert report_main(["--experiment", "nope", "--mlflow-uri", store]) == 2
    err = capsys.readouterr().err
    assert "no MLflow experiment named ['nope']" in err and store in err and "'ablation-ve8'" in err


def test_report_on_a_missing_experiment_writes_nothing(store, tmp_path, monkeypatch, capsys):
    """Neither a missing tracking database nor a missing experiment in an existing one creates files or folders."""
    empty = tmp_path / "here"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert report_main(["--experiment", "nope"]) == 2  # default URI: ./mlflow.db, which does not exist
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'nope'" in err and f"sqlite:///{empty / 'mlflow.db'}" in err
    assert report_main(["--experiment", "nope", "--mlflow-uri", store, "--format", "pdf"]) == 2
    assert "'ablation-ve8', 'loss-ve8']" in capsys.readouterr().err  # the experiments that do exist
    assert list(empty.iterdir()) == []


def _rows():
    rng = np.random.default_rng(0)
    frames = lambda: (rng.random((4, 32, 32, 3)) * 255).astype("uint8")  # noqa: E731
    return [dict(frames=frames(), spatial=rng.dirichlet(np.ones(16), 4), temporal=np.array([0.1, 0.6, 0.2, 0.1]),
                 predicted="Fear", true="Joy", probability=0.61, name="vid_1", key_segments=[1],
                 box=(0.2, 0.3, 0.5, 0.6)),
            dict(frames=frames(), spatial=rng.dirichlet(np.ones(16), 4), temporal=None, predicted="Joy", true="Joy",
                 name="vid_2")]


def test_attention_figure_elements(tmp_path):
    from vaanet.figures import RIGHT, WRONG, attention_figure, draw_attention

    fig = draw_attention(_rows(), title="run demo, VS+VCW+VT+AT attention")
    bars = [ax for ax in fig.axes if hasattr(ax, "_colorbar")]
    from vaanet.figures import SPATIAL_LABEL, spatial_ratio

    assert len(bars) == 1 and bars[0].get_ylabel() == SPATIAL_LABEL and "÷ uniform" in SPATIAL_LABEL
    from vaanet.figures import SPATIAL_SCALE

    norm = bars[0]._colorbar.norm  # one fixed scale, whatever the videos (the rule is tested in test_figures.py)
    assert (norm.vmin, norm.vmax) == SPATIAL_SCALE
    assert [t.get_text() for t in bars[0].get_yticklabels()] == ["≤ ¼", "½", "1 (uniform)", "2", "≥ 4"]
    assert spatial_ratio(np.full((2, 9), 1 / 9)) == pytest.approx(np.ones((2, 9)))  # uniform = 1 in any style
    assert spatial_ratio(np.full((2, 9), 1.0)) == pytest.approx(np.ones((2, 9)))
    wrong, right = (next(ax for ax in fig.axes if ax.get_title(loc="left").startswith(n)) for n in ("vid_1", "vid_2"))
    assert "true Joy" in wrong.get_title(loc="left") and "predicted Fear" in wrong.get_title(loc="left")
    assert wrong._left_title.get_color() == WRONG and right._left_title.get_color() == RIGHT
    frames = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().ndim == 3]
    cells = [ax for ax in fig.axes if ax.images and ax.images[0].get_array().shape == (1, 1)]
    assert len(frames) == len(cells) == 8
    for f, c in zip(frames, cells):  # each temporal weight sits right under its own frame, as wide
        assert c.get_position().x0 == pytest.approx(f.get_position().x0)
        assert c.get_position().width == pytest.approx(f.get_position().width)
    assert frames[1].spines["top"].get_edgecolor()[:3] == pytest.approx((0, 1, 0))  # key segment outlined
    assert frames[0].spines["top"].get_edgecolor()[:3] != pytest.approx((0, 1, 0))
    assert [p.get_label() for p in frames[0].patches] == ["evidence box"] and not frames[4].patches
    assert fig._suptitle.get_text() == "run demo, VS+VCW+VT+AT attention"
    # nothing overlaps: title above the first heading, each video's block (heading, frames, cells) above the next
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    title_box = fig._suptitle.get_window_extent(renderer)
    heading_1, heading_2 = (ax._left_title.get_window_extent(renderer) for ax in (wrong, right))
    assert title_box.y0 > heading_1.y1
    assert cells[0].get_window_extent(renderer).y0 > heading_2.y1
    assert 0 < frames[0].get_position().y0 - cells[0].get_position().y1 < 0.03  # cell right under its frame
    assert cells[1].texts[0].get_text() == "0.60  key" and cells[0].texts[0].get_text() == "0.10"
    assert fig.get_size_inches()[0] >= 7
    for fmt, magic in (("pdf", b"%PDF"), ("svg", b"<?xml")):
        assert attention_figure(_rows(), tmp_path / f"f.{fmt}").read_bytes().startswith(magic)


def test_confusion_matrix_drawing(tmp_path):
    import matplotlib.pyplot as plt

    from vaanet.config import Config
    from vaanet.figures import draw_confusion
    from vaanet.train.loop import _write_artifacts

    fig, ax = plt.subplots()
    draw_confusion(ax, np.array([[9, 1], [0, 5]]), ["Joy", "Fear"])
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    colour = {t.get_text(): t.get_color() for t in ax.texts}
    assert colour["9"] == "white" and colour["0"] == "black"  # white on the darkest cell, black on the lightest
    plt.close(fig)
    test = {"confusion": np.array([[3, 1], [2, 4]]), "per_class": {"Joy": 0.75, "Fear": 0.67}, "acc": 0.7}
    pred = {"video_ids": ["a", "b"], "labels": np.array([0, 1]), "probs": np.array([[0.8, 0.2], [0.4, 0.6]])}
    paths = _write_artifacts(tmp_path, Config(), ["Joy", "Fear"], test, pred)
    assert (tmp_path / "test_predictions.csv").read_text().splitlines()[1].startswith("a,Joy,Joy,0.8")
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 5000 and tmp_path / "confusion_matrix.png" in paths


def test_figure3_several_videos_from_a_checkpoint(reference_run, synth_root, tmp_path):
    from analysis.figure3 import main as figure3_main

    _, _, ref_tmp = reference_run
    videos = [str(p) for p in sorted(synth_root.glob("*/*.mp4"))[:3]]
    out = tmp_path / "figure3.png"
    assert figure3_main(videos + ["--checkpoint", str(ref_tmp / "run"), "--out", str(out)]) == 0
    assert out.stat().st_size > 10000
    from analysis.figures import run_title

    cfg = reference_run[0]
    title = run_title(ref_tmp / "run")
    assert title.startswith(f"run {cfg.run.name}, {cfg.model.preset or 'custom'} attention, selected at epoch ")
    import torch

    stored = torch.load(ref_tmp / "run" / "best_model.pt", map_location="cpu", weights_only=True)["epoch"]
    best_epoch = reference_run[1]["best_epoch"]
    assert stored == best_epoch and title.endswith(f"selected at epoch {best_epoch}")  # counted from 1, as best_epoch
    assert figure3_main([str(tmp_path / "none.mp4"), "--checkpoint", str(ref_tmp / "run")]) == 2
    # each row knows its true class (the class folder) and, on the synthetic set, its planted evidence
    import pandas as pd

    from vaanet.predict import attention_rows

    rows = attention_rows(ref_tmp / "run", videos)
    truth = pd.read_csv(synth_root / "synth_truth.csv", dtype={"video_id": str}).set_index("video_id")
    for video, row in zip(videos, rows):
        assert row["true"] == Path(video).parent.name and row["predicted"] in cfg.data.classes
        assert row["name"] == Path(video).stem and 0 < row["probability"] <= 1
        assert "key_segments" in row and all(0 <= k < cfg.model.segments for k in row["key_segments"])
        x0, y0, x1, y1 = row["box"]
        assert 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1
        assert truth.loc[Path(video).stem, "box_x1"] > truth.loc[Path(video).stem, "box_x0"]


def test_key_segments_use_the_metrics_mapping():
    import pandas as pd

    from vaanet.predict import key_segments
    from vaanet.train.metrics import attention_metrics

    row = pd.Series({"key_times": "1.062-1.594"})  # anger_000 of the synthetic set: key segment 2 of 4
    centres = [0.25, 0.75, 1.25, 1.75]
    assert key_segments(row, centres) == [2]
    assert key_segments(pd.Series({"key_times": "0.000-0.500;1.500-2.000"}), centres) == [0, 3]
    assert key_segments(pd.Series({"key_times": "1.062-1.594"}), [0.5, 1.5]) == [1]
    assert key_segments(pd.Series({"key_times": "0.600-0.700"}), [0.5, 1.5]) == []  # no shown centre inside
    # the same segments the attention metrics score: all temporal weight on them = 100% on key
    truth = pd.DataFrame({"video_id": ["v"], "key_times": ["0.000-0.500;1.500-2.000"]})
    temporal = np.zeros((1, 4))
    temporal[0, key_segments(truth.iloc[0], centres)] = 0.5
    m = attention_metrics({"temporal": temporal, "video_ids": ["v"], "centres": np.array([centres])}, truth)
    assert m["temporal_on_key"] == pytest.approx(1.0) and m["temporal_on_key_uniform"] == pytest.approx(0.5)
    # multi-view evaluation: two crops see the box in other cells; each view's map is scored against its own
    # crop (a map averaged over the views, scored against view 0's crop, put half its mass outside the box)
    box = pd.DataFrame({"video_id": ["v"], "key_times": ["0.000-0.500"], "box_x0": [0.0], "box_x1": [0.25],
                        "box_y0": [0.0], "box_y1": [0.5]})  # the left quarter, top half of a 64x32 frame
    crops = np.array([[[0, 0, 32, 64], [0, 16, 32, 64]]])  # (y0, x0, H, W): 32x32 crops at x 0 and x 16
    maps = np.zeros((1, 2, 4, 4))  # [video, view, t, m]: a 2x2 map of 16-pixel cells
    maps[0, 0, :, 0] = 1.0  # view 0: the box fills cell (0, 0)
    maps[0, 1, :, 0] = 1.0  # view 1: the box (x 0-16) is left of the crop: ...
    crops[0, 1] = [0, 0, 32, 64]  # ... so view 1 uses the same crop here, and a shifted one below
    pred = {"video_ids": ["v"], "centres": np.array([centres]), "centres_views": np.array([[centres, centres]]),
            "spatial": maps.mean(1), "crop": crops[:, 0], "spatial_views": maps, "crop_views": crops}
    same = attention_metrics(pred, box, feature_side=2, crop_size=32)
    assert same["spatial_in_box"] == pytest.approx(1.0) and same["spatial_in_box_uniform"] == pytest.approx(0.25)
    shifted = np.array([[[0, 0, 32, 64], [0, 8, 32, 64]]])  # view 1 crop starts at x 8: box spans x -8..8
    maps[0, 1, :, 0] = 1.0
    pred.update(crop_views=shifted, spatial_views=maps, spatial=maps.mean(1))
    m = attention_metrics(pred, box, feature_side=2, crop_size=32)
    # view 0: all mass in a cell fully inside the box (1.0); view 1: that cell is half inside (0.5)
    assert m["spatial_in_box"] == pytest.approx(0.75) and m["spatial_in_box_uniform"] == pytest.approx((0.25 + 0.125) / 2)


def test_predict_truth_option(reference_run, synth_root, tmp_path, capsys, monkeypatch):
    import shutil

    import pandas as pd

    from vaanet.cli import main as cli_main
    from vaanet.predict import predict_video

    _, _, ref_tmp = reference_run
    truth = synth_root / "synth_truth.csv"
    video = sorted(synth_root.glob("Joy/*.mp4"))[0]
    other = tmp_path / "holiday.mp4"  # a video that is not in the truth file
    shutil.copy(video, other)
    assert cli_main(["predict", str(other), "--checkpoint", str(ref_tmp / "run"), "--figure", str(tmp_path / "o.png"),
                     "--truth", str(truth)]) == 0
    out = capsys.readouterr().out
    assert "true class" not in out  # not in the truth file: no true class to print
    notes = [line for line in out.splitlines() if "not in the truth file" in line]
    assert notes == [f"note: holiday is not in the truth file {truth}: no key segments or evidence box drawn"]
    assert (tmp_path / "o.png").stat().st_size > 5000
    import vaanet.predict
    from analysis.figures import run_title

    titles = []
    real = vaanet.predict.attention_figure
    monkeypatch.setattr(vaanet.predict, "attention_figure",
                        lambda rows, path, title=None: (titles.append(title), real(rows, path, title))[1])
    result = predict_video(video, ref_tmp / "run", tmp_path / "v.png", truth=truth)
    assert "note" not in result and (tmp_path / "v.png").stat().st_size > 5000
    assert titles == [run_title(ref_tmp / "run")] and "selected at epoch" in titles[0]  # run/epoch header
    assert result["true"] == "Joy"  # the truth file's class
    assert cli_main(["predict", str(video), "--checkpoint", str(ref_tmp / "run"), "--truth", str(truth)]) == 0
    verdict = "right" if result["prediction"] == "Joy" else "WRONG"
    assert f"true class: Joy (truth file): prediction {verdict}" in capsys.readouterr().out.splitlines()
    assert cli_main(["predict", str(video), "--checkpoint", str(ref_tmp / "run"), "--figure", str(tmp_path / "n.png"),
                     "--truth", str(tmp_path / "none.csv")]) == 2
    assert "none.csv not found" in capsys.readouterr().err
    # figure3 marks the same truth: key segments from the row's key_times, box inside the frame
    from vaanet.predict import attention_rows

    notes = []
    rows = attention_rows(ref_tmp / "run", [video, other], truth, notes)
    assert len(notes) == 1 and "holiday" in notes[0] and "key_segments" not in rows[1] and "box" not in rows[1]
    assert "key_segments" in rows[0] and "box" in rows[0]
    assert pd.read_csv(truth, dtype={"video_id": str}).set_index("video_id").loc[video.stem, "key_times"]


def test_summed_confusion_figures(tmp_path, monkeypatch, capfd):
    import pandas as pd
    from mlflow.tracking import MlflowClient

    import vaanet.figures
    from analysis.figures import confusion_figures

    uri = mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    exp = client.create_experiment("cm", artifact_location=str(tmp_path / "artifacts"))
    runs = []
    for k in (1, 2):
        run = client.create_run(exp)
        csv = tmp_path / f"{k}" / "confusion_matrix.csv"
        csv.parent.mkdir()
        pd.DataFrame([[k, 0], [1, k]], index=["Joy", "Fear"], columns=["Joy", "Fear"]).to_csv(csv)
        client.log_artifact(run.info.run_id, str(csv))
        runs.append(dict(run_id=run.info.run_id, status="FINISHED", preset="VS"))
    drawn = []
    real = vaanet.figures.draw_confusion
    monkeypatch.setattr(vaanet.figures, "draw_confusion",
                        lambda ax, m, c, t, normalize: (drawn.append((m, c, t, normalize)), real(ax, m, c, t, normalize))[1])
    csv, path = confusion_figures(pd.DataFrame(runs), uri, tmp_path, "svg")
    assert path.name == "confusion.svg" and b"<svg" in path.read_bytes()[:500]
    assert csv.name == "confusion_VS.csv" and pd.read_csv(csv, index_col=0).values.tolist() == [[3, 0], [2, 3]]
    matrix, classes, title, normalize = drawn[0]
    assert matrix.tolist() == [[3, 0], [2, 3]] and classes == ["Joy", "Fear"] and normalize
    assert title == "VS: accuracy 75.0 %\n(2 runs, 8 videos)"  # (3 + 3) / 8 correct
    assert "Downloading artifacts" not in capfd.readouterr().err  # analysis turns MLflow's progress bars off
    # runs of two data sets (other classes) are never summed: one figure each, named by what differs
    drawn.clear()
    frame = pd.DataFrame([{**r, "dataset": d} for r, d in zip(runs, ("ve8", "e6"))])
    paths = confusion_figures(frame, uri, tmp_path, "svg")
    assert sorted(p.name for p in paths) == ["confusion_VS_e6.csv", "confusion_VS_ve8.csv", "confusion_e6.svg",
                                             "confusion_ve8.svg"]
    assert sorted(m.tolist() for m, _, _, _ in drawn) == [[[1, 0], [1, 1]], [[2, 0], [1, 2]]]
    assert {t.split("\n")[1] for _, _, t, _ in drawn} == {"(1 runs, 3 videos)", "(1 runs, 5 videos)"}


def test_a_table_holds_one_study_run(tmp_path):
    """Two runs of the ablation study in one experiment (the second after its folder was deleted, with one
    split and other settings): a report holds one of them, by default the latest, and says what it left out."""
    import time

    from mlflow.tracking import MlflowClient

    uri = mlflow_store(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    exp = client.create_experiment("ablation-synth")
    studies = []
    for accs in ([0.30, 0.31, 0.32], [0.90]):
        parent = client.create_run(exp, tags={"role": "study", "study_name": "ablation",  # as _parent_run tags it
                                              "dataset": "synth"}).info.run_id
        studies.append(parent)
        for split, acc in enumerate(accs):
            _log(client, exp, {"study": "ablation", "table": "3", "dataset": "synth", "preset": "VS", "row": "VS",
                               "split": f"split_{split:02d}", "seed": "0", "mlflow.parentRunId": parent},
                 {"test_acc": acc})
        client.set_terminated(parent, "FINISHED")
        time.sleep(0.01)  # distinct start times
    with pytest.warns(UserWarning, match=r"left out 3 runs of 1 other study run\(s\) .*--all-studies"):
        latest = load_runs("ablation-synth", uri)
    assert sorted(latest["test_acc"]) == [0.90]
    with pytest.warns(UserWarning, match="left out 1 runs"):
        first = load_runs("ablation-synth", uri, parent=studies[0])
    assert sorted(first["test_acc"]) == [0.30, 0.31, 0.32]
    pooled = load_runs("ablation-synth", uri, all_studies=True)  # one run per split: the latest of each
    assert sorted(pooled["test_acc"]) == [0.31, 0.32, 0.90]
    with pytest.raises(ValueError, match="is not among the runs"):
        load_runs("ablation-synth", uri, parent="0" * 32)


def test_two_experiments_of_one_study_are_never_pooled_into_a_cell(store, tmp_path):
    """A variant of the ablation in its own experiment (another lr, say) reported together with the first: each
    split would count twice (n 6 of 3 splits, a std of the two settings' difference, each split paired twice in
    the t-tests). Refused, naming both experiments; each alone still reports, and a paired test refuses a split
    and seed that appear twice."""
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from analysis.report import build_tables
    from vaanet.stats import sample

    client = MlflowClient(store)
    variant = client.create_experiment("ablation-ve8-lr1e3")
    for preset in PRESETS:
        for split in range(3):
            _log(client, variant, dict(study="ablation", table="3", dataset="ve8", preset=preset, loss="pcce",
                                       lam="0.5", split=f"split_{split:02d}", seed="0"), {"test_acc": 0.3})
    with pytest.raises(ValueError, match=r"ablation study on ve8 has trials in 2 experiments \(ablation-ve8, "
                                         r"ablation-ve8-lr1e3\)"):
        write_reports(["ablation-ve8", "ablation-ve8-lr1e3"], store, tmp_path / "both")
    assert not (tmp_path / "both").exists()
    for name in ("ablation-ve8", "ablation-ve8-lr1e3"):
        assert [t.name for t in build_tables(load_runs(name, store))] == ["table3_ve8"]
    twice = pd.DataFrame({"split": ["split_00", "split_00", "split_01"], "seed": [0, 0, 0], "test_acc": [.5, .6, .7]})
    once = pd.DataFrame({"split": ["split_00", "split_01"], "seed": [0, 0], "test_acc": [.4, .3]})
    with pytest.raises(ValueError, match="split split_00 seed 0 appears twice"):
        sample(twice, "test_acc")
    assert len(sample(once, "test_acc")) == 2


# ---- silent wrong results in the paper's tables: n = 1, bold, Table 5's data sets, tiny p -----------------------
def _frame(rows):
    import pandas as pd

    base = dict(status="FINISHED", dataset="ve8", preset="VS+VCW+VT+AT", loss="pcce", lam=0.5, seed=0)
    return pd.DataFrame([{"run_id": str(i), **base, **r} for i, r in enumerate(rows)])


def test_one_run_has_no_std_not_a_zero_one():
    """n = 1 (every E-6 cell under the paper's protocol: one official split): the std is undefined, the cell
    prints the mean and "± –" with a note, in Markdown and in LaTeX (row and inline), never "± 0.0"."""
    from analysis.tables import lambda_table, summarize

    mean, sd, n = summarize([0.56])
    assert mean == pytest.approx(56.0) and np.isnan(sd) and n == 1
    runs = _frame([dict(lam=0.5, split="official", test_acc=0.56, test_polarity_acc=0.70),
                   dict(lam=1.0, split="official", test_acc=0.55, test_polarity_acc=0.71)])
    table = lambda_table(runs)
    md = to_markdown(table)
    assert "± 0.0" not in md and "nan" not in md
    assert "| 0.5 | **56.0 ± –** | 70.0 ± – | 1 |" in md
    assert "_± –: one run, no std (undefined for n = 1)._" in md
    row = to_latex(table)
    assert r"\pm$0.0" not in row and "nan" not in row
    body = row.split(r"\midrule")[1].strip().splitlines()
    assert body[0] == r"0.5 & \textbf{56.0} & 70.0 & 1 \\"
    assert body[1] == r" & {\scriptsize$\pm$--} & {\scriptsize$\pm$--} &  \\"
    assert r"$\pm$ --: one run, no std" in row
    assert r"\textbf{56.0}{\scriptsize$\pm$--}" in to_latex(table, std="inline")
    none = to_latex(table, std="none")  # mean only: no std to explain, n in its column
    assert r"\pm" not in none.split(r"\midrule")[1] and "one run" not in none
    assert r"0.5 & \textbf{56.0} & 70.0 & 1 \\" in none


def test_bold_compares_printed_means_and_only_full_rows():
    """Two means both printing 55.0 are both bold (before: the larger unrounded one only); a row with 1 of 10
    runs finished does not take the bold from rows with all 10, even where it ties with them."""
    from analysis.tables import lambda_table

    rows = []
    for lam, acc in ((0.1, 0.5501), (0.5, 0.5504), (1.0, 0.601)):
        for s in range(10):
            failed = lam == 1.0 and s > 0
            rows.append(dict(lam=lam, split=f"split_{s:02d}", status="FAILED" if failed else "FINISHED",
                             test_acc=np.nan if failed else acc + (0.001 if s % 2 else -0.001),
                             test_polarity_acc=np.nan if failed else 0.70))
    table = lambda_table(_frame(rows))
    md = to_markdown(table)
    lines = {line.split(" | ")[0]: line for line in md.splitlines() if line.startswith("| ")}
    assert "| **55.0 ± 0.1 [54.9, 55.1]** | **70.0 ± 0.0 [70.0, 70.0]** | 10 |" in lines["| 0.1"]  # no λ = 0: no Δ
    assert "| **55.0 ± 0.1 [55.0, 55.1]** | **70.0 ± 0.0 [70.0, 70.0]** | 10 |" in lines["| 0.5"]
    # the best mean, but 1 of 10 runs finished: not bold
    assert "| 60.0 ± – | 70.0 ± – | 1 (missing: split_01/seed 0" in lines["| 1"]
    assert "_Bold: best mean as printed (ties all bold) among rows with all runs of the column (full n)" in md
    tex = to_latex(table).split(r"\midrule")[1]
    assert tex.count(r"\textbf{55.0}") == 2 and r"\textbf{60.0}" not in tex and tex.count(r"\textbf{70.0}") == 2
    assert r"1 & 60.0 & 70.0 & 1$^\ddagger$" in tex  # ‡: missing runs († marks significance)


def test_loss_table_keys_missing_runs_by_data_set_and_counts_n_per_data_set():
    """A failed split_00 on SYNTH is not hidden by the finished split_00 on VE8: dagger and warning name it; each
    data set has its own n (an E-6-like column of one run says 1, not VE8's 3)."""
    rows = []
    for d, splits in (("ve8", 3), ("synth", 3), ("e6", 1)):
        for preset in ("VS+VCW+VT", "VS+VCW+VT+AT"):
            for loss in ("ce", "pcce"):
                for s in range(splits):
                    failed = d == "synth" and preset == "VS+VCW+VT" and loss == "ce" and s == 0
                    acc = 0.50 + (0.05 if loss == "pcce" else 0) + 0.01 * s
                    rows.append(dict(dataset=d, preset=preset, loss=loss, split=f"split_{s:02d}", lam=0.5,
                                     status="FAILED" if failed else "FINISHED", test_acc=np.nan if failed else acc))
    table = loss_table(_frame(rows))
    ce = table.rows[0]
    assert ce["label"] == ("VS+VCW+VT", "CE") and ce["missing"] == ["SYNTH split_00/seed 0"]
    assert [r["missing"] for r in table.rows[1:]] == [[], [], []]
    assert [ce["cells"][d][2] for d in ("VE8", "E6", "SYNTH")] == [3, 1, 2]
    md = to_markdown(table)
    assert "| Attentions | Loss | VE8 | E6 | SYNTH | Δ VE8 | Δ E6 | Δ SYNTH | n VE8 | n E6 | n SYNTH |" in md
    assert ("| 51.0 ± 1.0 [48.5, 53.5] | 50.0 ± – | 51.5 ± 0.7 [45.1, 57.9] |  |  |  | 3 | 1 | "
            "2 (missing: split_00/seed 0) |") in md
    # PCCE vs CE on SYNTH: split_00 of CE failed, so 2 pairs, the unpaired point said
    assert "| +5.0 [5.0, 5.0] p=– (2 pairs, 1 unpaired) |" in md
    tex = to_latex(table)
    assert r"VS+VCW+VT & CE & 51.0 & 50.0 & 51.5 &  &  &  & 3 & 1 & 2$^\ddagger$ \\" in tex
    assert r"$n$\\VE8" in tex and r"$n$\\SYNTH" in tex  # n of each data set in its own column
    header = tex.split(r"\toprule")[1].split(r"\midrule")[0].strip()
    spec = re.search(r"\\begin\{tabular\}\{([lc]+)\}", tex).group(1)
    for line in [header] + tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines():
        assert line.count("&") == len(spec) - 1
    # SYNTH's CE row (2 of 3 runs) is not bold; the full rows compete
    assert "**51.5" not in md and "| VS+VCW+VT+AT | CE | 51.0 ± 1.0 [48.5, 53.5] | 50.0 ± – | 51.0 ± 1.0" in md


def test_tiny_p_values_print_as_below_a_thousandth():
    """p < .0005 printed as 0.000 would read as p = 0: the Markdown Δ cell prints "p=<0.001"."""
    rows = []
    for loss, shift in (("ce", 0.0), ("pcce", 0.05)):
        for s, noise in enumerate((0.001, -0.002, 0.0, 0.002, -0.001)):
            rows.append(dict(preset="VS+VCW+VT", loss=loss, split=f"split_{s:02d}",
                             test_acc=0.5 + shift + noise * (loss == "pcce")))
    table = loss_table(_frame(rows))
    c = delta(table, table.rows[1]["cells"]["Δ VE8"])
    assert 0 < c["p_holm"] < 0.0005 and c["significant"]
    md = to_markdown(table)
    assert "| +5.0 [4.8, 5.2] p=<0.001† |" in md and "0.000" not in md
    assert r"& {\scriptsize+5.0}$^\dagger$ & 5 \\" in to_latex(table)


def test_a_row_whose_cells_differ_in_n_shows_the_range():
    """A metric missing from some runs (an older run without test_polarity_acc): the row's n is "2–3", not 3."""
    from analysis.tables import lambda_table

    runs = _frame([dict(lam=0.5, split=f"split_{s:02d}", test_acc=0.5 + 0.01 * s,
                        test_polarity_acc=np.nan if s == 2 else 0.7) for s in range(3)])
    table = lambda_table(runs)
    assert "| 0.5 | **51.0 ± 1.0 [48.5, 53.5]** | **70.0 ± 0.0 [70.0, 70.0]** | 2–3 |" in to_markdown(table)
    assert r"0.5 & \textbf{51.0} & \textbf{70.0} & 2--3 \\" in to_latex(table)


def test_lambda_figure_draws_no_error_bar_for_one_run(tmp_path, monkeypatch):
    """A λ point with one run has no std: no error bar (a bar of 0 would read as no spread), marked n = 1."""
    import pandas as pd

    from analysis import figures

    shown = {}

    def keep(fig, path, dpi=150):
        shown["fig"] = fig
        return path

    monkeypatch.setattr(figures, "_save", keep)
    runs = pd.DataFrame({"status": "FINISHED", "lam": [0.5, 0.5, 0.5, 1.0], "test_acc": [0.50, 0.52, 0.54, 0.60]})
    figures.lambda_figure(runs, tmp_path / "l.png")
    ax = shown["fig"].axes[0]
    (container,) = ax.containers
    bars = container.lines[2][0].get_segments()  # one vertical error bar per λ that has a std
    assert len(bars) == 2 and np.isnan(bars[1]).all() and np.allclose(bars[0][:, 1], [50.0, 54.0])
    assert [t.get_text() for t in ax.texts] == ["n = 1"]


def test_an_undefined_p_prints_a_dash_with_a_note():
    """E-6's one official split gives no paired t-test: its Δ cell says so ("p=–", a note), never a blank."""
    rows = []
    for d, splits in (("ve8", 3), ("e6", 1)):
        for loss, shift in (("ce", 0.0), ("pcce", 0.05)):
            for s in range(splits):
                rows.append(dict(dataset=d, preset="VS+VCW+VT", loss=loss, split=f"split_{s:02d}",
                                 test_acc=0.5 + shift + (0.01 * s * (loss == "pcce"))))
    table = loss_table(_frame(rows))
    pcce = [r for r in table.rows if r["label"] == ("VS+VCW+VT", "PCCE")][0]
    e6, ve8 = delta(table, pcce["cells"]["Δ E6"]), delta(table, pcce["cells"]["Δ VE8"])
    assert e6["n"] == 1 and e6["p_holm"] != e6["p_holm"] and 0 < ve8["p_holm"] < 1
    assert ve8["p_holm"] == ve8["p_t"]  # the only defined test of the table: nothing to correct
    md = to_markdown(table)
    line = [ln for ln in md.splitlines() if ln.startswith("| VS+VCW+VT | PCCE |")][0]
    assert f"+6.0 [3.5, 8.5] p={ve8['p_holm']:.3f}† | +5.0 p=– |" in line  # one pair: no interval, no p
    assert "p –: the paired t-test is undefined" in md
    assert "p --: the paired t-test is undefined" in to_latex(table)


def test_report_regenerates_tables_and_stats_byte_identically_from_mlflow_alone(store, tmp_path):
    """Two reports of the same MLflow store (no run folder anywhere) are byte-identical, tables and stats files;
    the stats file holds every cell and comparison with the issue's columns, and the paragraph names them."""
    import pandas as pd

    from vaanet.stats import parent_metrics_of

    outs = []
    for k in (1, 2):
        with pytest.warns(UserWarning, match="missing runs"):
            write_reports(["ablation-ve8", "loss-ve8"], store, tmp_path / f"r{k}", log=lambda *_: None)
        outs.append(tmp_path / f"r{k}")
    files = sorted(p.name for p in outs[0].iterdir() if p.suffix in (".tex", ".md", ".csv"))
    assert {"table3_ve8_stats.csv", "table5_stats.csv", "table3_ve8.md", "table5.tex", "statistics.md"} <= set(files)
    for name in files:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    frame = pd.read_csv(outs[0] / "table3_ve8_stats.csv")
    for column in ("table", "kind", "row", "ref_row", "metric", "n", "mean", "std", "ci_low", "ci_high", "diff",
                   "diff_ci_low", "diff_ci_high", "p_t", "p_wilcoxon", "p_holm", "d_z", "mdd", "splits_for_1pt"):
        assert column in frame
    vs = frame[(frame["kind"] == "comparison") & (frame["row"] == "VS") & (frame["metric"] == "test_acc")].iloc[0]
    assert vs["ref_row"] == "AT" and vs["n"] == 3 and vs["diff"] == pytest.approx(np.mean([10, 11, 11]), abs=1e-5)
    cell = frame[(frame["kind"] == "cell") & (frame["row"] == "VS") & (frame["metric"] == "test_acc")].iloc[0]
    assert cell["mean"] == pytest.approx(np.mean([50, 53, 52]), abs=1e-4) and cell["n"] == 3
    assert len(frame[frame["kind"] == "cell"]) == 5 * 10  # 5 presets x (8 classes, accuracy, mean class acc.)
    text = (outs[0] / "statistics.md").read_text()
    assert "Holm–Bonferroni" in text and "In table3_ve8, " in text and "In table5, " in text
    metrics = parent_metrics_of(outs[0])  # what the study's parent run logs
    assert metrics["diff/table3_ve8/test_acc/VS vs AT"] == pytest.approx(vs["diff"])
    assert "p_holm/table5/test_acc/VS-VCW-VT / PCCE vs VS-VCW-VT / CE" in metrics
