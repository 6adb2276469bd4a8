"""The report's figures show what the runs hold (issue 30): n/a where a preset has no such attention, error bars
from the runs' spread, chance and target lines, and one colour scale rule for every attention figure."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.container import BarContainer  # noqa: E402

from analysis import figures  # noqa: E402
from vaanet.figures import PALETTE, SCALE_RULE, SPATIAL_SCALE, draw_attention  # noqa: E402


@pytest.fixture
def keep(monkeypatch):
    """The figures the functions save, kept open for inspection."""
    kept = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, dpi=150: (kept.append(fig), path)[1])
    yield kept
    for fig in kept:
        plt.close(fig)


def _attention_runs():
    rows = []
    for preset, on_key in (("AT", [np.nan] * 2), ("VS", [0.25, 0.25]), ("VS+VCW+VT", [0.6, 0.8])):
        for on, box in zip(on_key, (0.2, 0.3)):
            rows.append(dict(preset=preset, status="FINISHED", test_temporal_on_key=on,
                             test_temporal_on_key_uniform=np.nan if preset == "AT" else 0.25,
                             test_spatial_in_box=np.nan if preset == "AT" else box,
                             test_spatial_in_box_uniform=np.nan if preset == "AT" else 0.19))
    return pd.DataFrame(rows + [dict(preset="VS", status="FAILED", test_temporal_on_key=0.9)])


def test_attention_truth_shows_na_not_the_uniform_fallback(tmp_path, keep):
    values = figures.attention_truth_values(_attention_runs(), ["AT", "VS", "VS+VCW", "VS+VCW+VT"])
    t = values[values["panel"] == "temporal"].set_index("preset")
    # VS has no temporal attention: its metric (25 %, the uniform weights it falls back to) is not drawn as a value
    assert list(t.index) == ["AT", "VS", "VS+VCW+VT"] and t["applies"].tolist() == [False, False, True]
    assert t.loc[["AT", "VS"], "mean"].isna().all() and t.loc[["AT", "VS"], "uniform"].isna().all()
    assert t.loc["VS+VCW+VT", "mean"] == pytest.approx(70) and t.loc["VS+VCW+VT", "std"] == pytest.approx(np.std([60, 80], ddof=1))
    assert t["n"].tolist() == [2, 2, 2]  # finished runs only
    sp = values[values["panel"] == "spatial"].set_index("preset")
    assert sp["applies"].tolist() == [False, True, True] and sp.loc["VS", "mean"] == pytest.approx(25)
    figures.attention_truth_figure(_attention_runs(), ["AT", "VS", "VS+VCW+VT"], tmp_path / "a.png")
    temporal, spatial = keep[0].axes[:2]
    assert [x.get_text().split("\n")[0] for x in temporal.texts].count("n/a") == 2
    assert [x.get_text().split("\n")[0] for x in spatial.texts].count("n/a") == 1
    (bars,) = [c for c in temporal.containers if isinstance(c, BarContainer)]
    heights = [b.get_height() for b in bars]
    assert np.isnan(heights[:2]).all() and heights[2] == pytest.approx(70)  # no bar for n/a
    segments = bars.errorbar.lines[2][0].get_segments()  # the error bar of VS+VCW+VT spans mean ± std
    spans = [s[:, 1] for s in segments if len(s) and np.isfinite(s).all()]
    assert len(spans) == 1 and spans[0] == pytest.approx([70 - t.loc["VS+VCW+VT", "std"], 70 + t.loc["VS+VCW+VT", "std"]])
    lines = {c.get_label(): c for c in temporal.collections if c.get_label()}
    uniform = [s[0, 1] for s in lines["uniform attention (chance)"].get_segments() if len(s) and np.isfinite(s).all()]
    target = [s[0, 1] for s in lines[f"target: {figures.TEMPORAL_TARGET:g}× uniform"].get_segments()
              if len(s) and np.isfinite(s).all()]
    assert uniform == [25] and target == [50]  # reference lines, not bars; only where the attention exists
    assert not temporal.patches[0].get_facecolor()[:3] == (0.8, 0.8, 0.8)  # no grey uniform bars


def test_per_class_error_bars_chance_n_and_zero_versus_missing(tmp_path, keep):
    runs = pd.DataFrame([dict(preset="VS", status="FINISHED", test_acc_Joy=0.8, test_acc_Fear=0.0),
                         dict(preset="VS", status="FINISHED", test_acc_Joy=1.0, test_acc_Fear=0.0),
                         dict(preset="AT", status="FINISHED", test_acc_Joy=0.4, test_acc_Fear=np.nan),
                         dict(preset="VS", status="FINISHED", test_acc_Joy=1.0, test_acc_Fear=0.0)])
    values = figures.per_class_values(runs, ["Joy", "Fear"], ["AT", "VS"]).set_index(["preset", "cls"])
    assert values.loc[("VS", "Joy"), "mean"] == pytest.approx(280 / 3)
    assert values.loc[("VS", "Joy"), "std"] == pytest.approx(np.std([80, 100, 100], ddof=1))
    assert np.isnan(values.loc[("AT", "Joy"), "std"])  # one run: no spread, not a zero one
    assert values.loc[("VS", "Fear"), "mean"] == 0 and np.isnan(values.loc[("AT", "Fear"), "mean"])
    assert values.loc[("AT", "Fear"), "n"] == 0 and values.loc[("VS", "Fear"), "n"] == 3
    figures.per_class_figure(runs, ["Joy", "Fear"], ["AT", "VS"], tmp_path / "p.png")
    ax = keep[0].axes[0]
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["chance (1/2 = 50.0 %)", "AT (n=0-1)", "VS (n=3)"]
    (chance,) = [line for line in ax.lines if line.get_label().startswith("chance")]
    assert chance.get_ydata()[0] == pytest.approx(50)
    assert sorted(t.get_text() for t in ax.texts) == ["0", "n/a"]  # zero and missing differ
    (vs,) = [c for c in ax.containers if isinstance(c, BarContainer) and c.get_label().startswith("VS")]
    spans = [sorted(seg[:, 1]) for seg in vs.errorbar.lines[2][0].get_segments()]
    assert spans[0] == pytest.approx([280 / 3 - np.std([80, 100, 100], ddof=1), 100])  # Joy 93.3 ± 11.5: not past 100
    assert spans[1] == pytest.approx([0, 0])  # Fear: 0 ± 0 (a bar never points below 0 or past 100)
    assert ax.get_ylim()[1] <= 105
    colours = [matplotlib.colors.to_hex(c.patches[0].get_facecolor()) for c in ax.containers
               if isinstance(c, BarContainer)]
    assert colours == [c.lower() for c in PALETTE[:2]]  # Okabe-Ito


def test_one_scale_rule_for_every_attention_figure():
    rng = np.random.default_rng(1)
    frames = (rng.random((2, 16, 16, 3)) * 255).astype("uint8")
    mild = np.full((2, 16), 1 / 16)
    mild[:, 0] *= 3
    peaky = np.full((2, 16), 1e-3)
    peaky[:, 0] = 1
    row = dict(frames=frames, spatial=mild, temporal=None, label="mild")
    alone = draw_attention([row])  # vaanet predict: one video
    beside = draw_attention([row, dict(frames=frames, spatial=peaky, temporal=None, label="peaky")])  # figure3
    try:
        maps = [next(im for ax in f.axes for im in ax.images if im.get_array().ndim == 2) for f in (alone, beside)]
        assert maps[0].norm.vmin == maps[1].norm.vmin == SPATIAL_SCALE[0]
        assert maps[0].norm.vmax == maps[1].norm.vmax == SPATIAL_SCALE[1]
        # the mild map gets the same colours whatever it is drawn beside
        assert maps[0].to_rgba(maps[0].get_array()) == pytest.approx(maps[1].to_rgba(maps[1].get_array()))
        for f in (alone, beside):
            assert SCALE_RULE in [t.get_text() for t in f.texts]  # stated on the figure
            under = next(ax.images[0].get_array() for ax in f.axes if ax.images and ax.images[0].get_array().ndim == 3)
            assert (under[..., 0] == under[..., 1]).all() and (under[..., 1] == under[..., 2]).all()  # grey frames
    finally:
        plt.close(alone)
        plt.close(beside)


def test_predict_console_prints_the_true_class():
    from vaanet.predict import format_result

    result = {"probabilities": {"Joy": 0.7, "Fear": 0.3}, "prediction": "Joy", "polarity": "positive", "p_positive": 0.7}
    assert "true class" not in format_result(result)
    assert "true class: Fear (truth file): prediction WRONG" in format_result({**result, "true": "Fear"}).splitlines()
    assert "true class: Joy (truth file): prediction right" in format_result({**result, "true": "Joy"}).splitlines()


def test_attention_values_are_written_above_the_reference_lines(tmp_path, keep):
    """A value below the uniform line (or the temporal target) is written above the line, not across it."""
    runs = pd.DataFrame([dict(preset="VS+VCW+VT", status="FINISHED", test_temporal_on_key=on, test_temporal_on_key_uniform=0.25,
                              test_spatial_in_box=box, test_spatial_in_box_uniform=0.125)
                         for on, box in ((0.30, 0.10), (0.32, 0.11))])
    figures.attention_truth_figure(runs, ["VS+VCW+VT"], tmp_path / "a.png")
    temporal, spatial = keep[0].axes[:2]
    (t_label,) = [a for a in temporal.texts if "±" in a.get_text()]
    (s_label,) = [a for a in spatial.texts if "±" in a.get_text()]
    assert t_label.xy[1] == pytest.approx(50)  # 31 ± 1.4 under the 2x target line (50 %)
    assert s_label.xy[1] == pytest.approx(12.5)  # 10.5 ± 0.7 under the uniform line (12.5 %)
