"""The trials' results and the study's summary: the console table, its statistics and the attention verdict.

:func:`results_frame` reads one row per trial from the run folders (a trial that never ran counts as missing);
:func:`summary_stats`, :func:`summary_comparisons`, :func:`summary_table` and :func:`summary_note` make the
closing table (:mod:`vaanet.stats`, as the paper tables compute it); :func:`attention_verdict`
judges the planted evidence on the synthetic set.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .request import Study
from ..train.metrics import TEMPORAL_TARGET
from .trial import ERROR_FILE


DONE = ("ok", "stopped")  # a trial trained to the end, or was stopped early by the scheduler (a search)


def _trial_state(folder: Path) -> tuple[str, dict, str]:
    """(status, final metrics, error) of one run folder: ok | error | missing."""
    final = folder / "final_metrics.json"
    if final.is_file():
        return "ok", json.loads(final.read_text()), ""
    error = folder / ERROR_FILE
    if error.is_file():
        return "error", {}, error.read_text().strip()
    return "missing", {}, ""


def results_frame(points: list[dict], train_root: Path, errors: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per grid point x split x seed, read from the run folders: every point of the study is a
    row, so a trial that never ran is counted as missing."""
    rows = []
    for p in points:
        status, metrics, error = _trial_state(train_root / p["name"])
        if status == "missing" and (errors or {}).get(p["name"]):
            status, error = "error", errors[p["name"]]
        rows.append({**p["tags"], **p["overrides"],
                     **{k: v for k, v in metrics.items() if k.startswith(("test_", "best_"))},
                     "status": status, "error": error})
    return pd.DataFrame(rows)


ATTENTION_TRUTH = {"temporal_on_key": "temporal_x_uniform", "spatial_in_box": "spatial_x_uniform"}


ACCURACIES = ("test_acc", "test_mean_class_acc", "test_polarity_acc")
STATS_COLUMNS = ["row", "metric", "n", "trials", "missing", "mean", "std", "ci_low", "ci_high"]
COMPARED = "test_acc"  # the metric the console table compares between rows


def _sample(part: pd.DataFrame, values: pd.Series) -> pd.Series:
    """A row's values indexed by (split, seed), as :mod:`vaanet.stats` pairs them."""
    index = pd.MultiIndex.from_arrays([[Path(str(s)).stem for s in part["data.split"]], part["run.seed"].astype(int)],
                                      names=["split", "seed"]) if len(part) else \
        pd.MultiIndex.from_tuples([], names=["split", "seed"])
    return pd.Series(values.to_numpy(float), index=index).dropna()


def _row_samples(frame: pd.DataFrame, study: Study) -> dict[tuple[str, str], pd.Series]:
    """(row, metric) -> the finished trials' values indexed by (split, seed), in the trials' own units:
    accuracies as fractions (the trials' ``test_acc``...), and on the synthetic set the attention mass on the
    planted evidence as a ratio to uniform attention (``temporal_x_uniform``, ``spatial_x_uniform``)."""
    ok = frame[frame["status"] == "ok"]
    out = {}
    for row in study.grid:
        name = study.row_name(row)
        part = ok[ok["row"] == name]
        values = {c: part[c].astype(float) if c in part else pd.Series(float("nan"), index=part.index)
                  for c in ACCURACIES}
        for metric, column in ATTENTION_TRUTH.items():
            if f"test_{metric}" in ok:
                values[column] = part[f"test_{metric}"].astype(float) / part[f"test_{metric}_uniform"].astype(float)
        for metric, vals in values.items():
            out[(name, metric)] = _sample(part, vals)
    return out


def summary_stats(frame: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The study's numbers, one line per (grid row, metric): mean, std (ddof 1; 0 for a single run), n and the
    95 % Student-t interval of the mean (:func:`vaanet.stats.describe`; NaN below 2 runs) over the finished
    trials (splits x seeds), in the trials' own units: accuracies as fractions (the trials' ``test_acc``...),
    and on the synthetic set the attention mass on the planted evidence as a ratio to uniform attention
    (``temporal_x_uniform``, ``spatial_x_uniform``; 1.00 = no better than uniform).
    The console table, the parent run's summary and the verdict all read these, never a rounded cell."""
    from .. import stats as st  # scipy, statsmodels: imported when a study ends

    out = []
    for (name, metric), vals in _row_samples(frame, study).items():
        d = st.describe(vals.to_numpy())
        trials = int(((frame["row"] == name) & (frame["status"] == "ok")).sum())
        out.append({"row": name, "metric": metric, "n": d["n"], "trials": trials,
                    "missing": int((frame["row"] == name).sum() - trials), "mean": d["mean"],
                    "std": (d["std"] if d["n"] > 1 else 0.0) if d["n"] else float("nan"),
                    "ci_low": d["ci_low"], "ci_high": d["ci_high"]})
    return pd.DataFrame(out, columns=STATS_COLUMNS)


def full_model_row(study: Study) -> str | None:
    """The grid row with every attention (VS+VCW+VT+AT), when the study has one and other rows besides."""
    presets = row_presets(study)
    full = [r for r, p in presets.items() if set(p.split("+")) == {"VS", "VCW", "VT", "AT"}]
    return full[0] if len(full) == 1 and len(presets) > 1 else None


def summary_comparisons(frame: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The console table's comparisons of ``test_acc`` (:mod:`vaanet.stats`, in percent points): each row
    against the full model when the study has one, else against the row above; paired on (split, seed), with
    the difference's 95 % t interval, the paired t-test p and its Holm correction over these comparisons
    (``significant``: p_holm < 0.05). Empty for a one-row study."""
    from .. import stats as st  # scipy, statsmodels: imported when a study ends

    samples = _row_samples(frame, study)
    names = [study.row_name(r) for r in study.grid]
    full = full_model_row(study)
    pairs = [(n, full) for n in names if n != full] if full else list(zip(names[1:], names[:-1]))
    rows = [st.comparison_row(study.name, row, ref, "acc", COMPARED, st.percent(samples[(row, COMPARED)]),
                              st.percent(samples[(ref, COMPARED)])) for row, ref in pairs]
    return st.finish(rows) if rows else pd.DataFrame(columns=st.COLUMNS)


def summary_table(frame: pd.DataFrame, study: Study, stats: pd.DataFrame | None = None,
                  comparisons: pd.DataFrame | None = None) -> pd.DataFrame:
    """Mean ± std [95 % CI of the mean] over splits and seeds of the test metrics, one row per grid row:
    accuracies in %, and on the synthetic set the attention mass on the planted evidence as a ratio to uniform
    attention (1.00 = no better than uniform). With several rows, ``Δ acc`` is the paired accuracy difference
    against the row named in ``vs`` (:func:`summary_comparisons`) with its 95 % CI, the Holm-corrected p, and
    † where that is below 0.05 (:func:`summary_note` says it in words)."""
    stats = summary_stats(frame, study) if stats is None else stats
    comparisons = summary_comparisons(frame, study) if comparisons is None else comparisons
    by_row = comparisons.set_index("row") if len(comparisons) else None
    out = []
    for name, part in stats.groupby("row", sort=False):
        cells = {"row": name, "n": int(part["trials"].iloc[0]), "missing": int(part["missing"].iloc[0])}
        for _, m in part.iterrows():
            scale, digits = (100, 1) if m["metric"] in ACCURACIES else (1, 2)
            cells[m["metric"].removeprefix("test_")] = _cell(m, scale, digits)
        if by_row is not None:
            c = by_row.loc[name] if name in by_row.index else None
            cells["Δ acc [95 % CI], p Holm"] = _delta(c) if c is not None else ""
            cells["vs"] = c["ref_row"] if c is not None else ""
        out.append(cells)
    return pd.DataFrame(out)


def _cell(m, scale: float, digits: int) -> str:
    if not m["n"]:
        return "—"
    text = f"{m['mean'] * scale:.{digits}f} ± {m['std'] * scale:.{digits}f}"
    if m["ci_low"] == m["ci_low"]:  # an interval needs 2 runs
        text += f" [{m['ci_low'] * scale:.{digits}f}, {m['ci_high'] * scale:.{digits}f}]"
    return text


def _delta(c) -> str:
    if not c["n"]:
        return "no pairs"
    text = f"{c['diff']:+.1f}"
    if c["diff_ci_low"] == c["diff_ci_low"]:
        text += f" [{c['diff_ci_low']:+.1f}, {c['diff_ci_high']:+.1f}]"
    text += f", p {c['p_holm']:.3f}" if c["p_holm"] == c["p_holm"] else ", p n/a"
    return text + (" †" if c["significant"] is True else "")


def summary_note(comparisons: pd.DataFrame, n_splits: int, n_seeds: int) -> str:
    """The lines under the console table: what the brackets, Δ and † mean."""
    from .. import stats as st  # scipy, statsmodels: imported when a study ends

    text = (f"[a, b]: 95 % Student-t interval of the mean over the {n_splits} split(s) x {n_seeds} seed(s) "
            "(none below 2 runs).")
    if len(comparisons):
        text += (f"\nΔ acc: paired difference (row - vs, points) over the (split, seed) points both finished, with its "
                 f"95 % t interval; p n/a where the differences have no variance or fewer than 2 pairs.\n{st.TEST_NOTE}"
                 f"\nHolm's family here: these {len(comparisons)} comparisons; the report's tables (reports/) also "
                 "compare each row with the row above, a larger family, so their corrected p can be larger.")
        unpaired = comparisons[comparisons["unpaired"] > 0]
        for _, c in unpaired.iterrows():
            text += f"\n{c['row']} vs {c['ref_row']}: unpaired points left out: {c['unpaired_points']}"
    return text


def row_presets(study: Study) -> dict[str, str]:
    """Each grid row's model preset (from the row, else the study's fixed overrides), by row name."""
    return {study.row_name(row): str({**study.extra, **row}.get("model.preset", "")) for row in study.grid}


def attention_verdict(stats: pd.DataFrame, target: float = TEMPORAL_TARGET, presets: dict[str, str] | None = None,
                      chance: float | None = None) -> str | None:
    """One line: are the targets this scale can show met? Judged on :func:`summary_stats` (unrounded); None when
    the study has no attention-vs-truth metrics. The targets (issue #27): temporal attention on the key segments
    >= ``target`` x uniform in every row with VT; the full model (VS+VCW+VT+AT) above every other row by more than
    the larger of the two rows' split stds; AT above ``chance`` (1 / number of classes). Spatial attention is
    reported as measured, not judged: at the demo's crop a conv5 cell sees nearly the whole frame, so localisation
    is not expected; benchmarks/attention_recovery.py --preset spatial and docs/attention.md show it. Which
    attentions a row has comes from its preset (``presets``, row name -> preset, see :func:`row_presets`), else
    from the row name's part before any "_" (a row "VS+VCW+VT_ce" of the loss comparison has temporal attention)."""
    def attentions(row) -> list[str]:
        preset = (presets or {}).get(str(row)) or str(row).split("_")[0]
        return preset.split("+")

    def rows_of(metric: str) -> list[tuple[str, float, float]]:
        part = stats[(stats["metric"] == metric) & (stats["n"] > 0)]
        return [(str(r["row"]), float(r["mean"]), float(r["std"])) for _, r in part.iterrows()]

    if not any(stats["metric"].isin(["temporal_x_uniform", "spatial_x_uniform"]) & (stats["n"] > 0)):
        return None
    checks = []
    temporal = [(n, v) for n, v, _ in rows_of("temporal_x_uniform") if "VT" in attentions(n)]
    if temporal:
        checks.append((min(v for _, v in temporal) >= target,
                       f"temporal attention on the key segments {', '.join(f'{n} {v:.2f}x' for n, v in temporal)} "
                       f"uniform (target >= {target:g}x in every row with VT)"))
    acc = rows_of("test_acc")
    full = [r for r in acc if set(attentions(r[0])) == {"VS", "VCW", "VT", "AT"}]
    if len(full) == 1 and len(acc) > 1:
        name, mean, std = full[0]
        gaps = [(n, mean - m, max(std, s)) for n, m, s in acc if n != name]
        checks.append((all(gap > margin for _, gap, margin in gaps),
                       f"full model {mean:.3f} ± {std:.3f} above every other row by more than the larger split std ("
                       + ", ".join(f"{n} +{gap:.3f} > {margin:.3f}" if gap > margin else f"{n} +{gap:.3f} <= {margin:.3f}"
                                   for n, gap, margin in gaps) + ")"))
    audio = [(n, m) for n, m, _ in acc if attentions(n) == ["AT"]]
    if audio and chance is not None:
        checks.append((all(m > chance for _, m in audio),
                       f"{', '.join(f'{n} {m:.3f}' for n, m in audio)} above chance {chance:.3f}"))
    spatial = [(n, v) for n, v, _ in rows_of("spatial_x_uniform") if "VS" in attentions(n)]
    verdict = "RECOVERED" if all(ok for ok, _ in checks) else "NOT recovered"
    line = (f"planted evidence {verdict} where this scale can show it: "
            + "; ".join(f"{text} ({'met' if ok else 'not met'})" for ok, text in checks))
    if spatial:
        line += (f"; spatial attention in the evidence box {', '.join(f'{n} {v:.2f}x' for n, v in spatial)} uniform "
                 "(reported, not judged: localisation is not expected at this crop, where a conv5 cell sees nearly "
                 "the whole frame; it is shown by benchmarks/attention_recovery.py --preset spatial, docs/attention.md)")
    return line

