"""The statistics behind the paper tables: how sure each mean is, which differences between rows are real,
how large they are, and what a study of this size can resolve.

Every value is in percent points, as the tables print them. A *sample* is a ``pd.Series`` of one cell's
runs indexed by ``(split, seed)``. Per cell (:func:`describe`): mean, std, n and a 95 % confidence interval
of the mean (Student t, or a bootstrap interval). Per comparison of a row with a reference row
(:func:`compare`): the pairs are the (split, seed) points both finished; points of one side only are counted
as unpaired and left out (never paired with anything else). Over the pairs: the mean difference
row - reference and its 95 % t interval, the paired t-test p, the Wilcoxon signed-rank p, Cohen's d_z,
the minimum detectable difference (α = 0.05, power 0.8, the observed std of the differences and n) and
the number of pairs (splits × seeds) a 1-point difference would need. :func:`holm` corrects the p values
of a table's comparisons of one metric (Holm-Bonferroni). :func:`variance_components` splits a cell's
variance into split-to-split and seed-to-seed parts when a split has several seeds.

The numbers come from scipy.stats and statsmodels; what is undefined (n < 2, no variance in the
differences, every difference zero) is NaN, never a number that looks like a result.
"""
from __future__ import annotations

import gc
import math
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

ALPHA, POWER, CONFIDENCE = 0.05, 0.8, 0.95
CI_METHODS = ("t", "bootstrap")
NAN = float("nan")
COLUMNS = ["table", "kind", "row", "ref_row", "column", "metric", "n", "unpaired", "mean", "std", "ci_low",
           "ci_high", "diff", "diff_ci_low", "diff_ci_high", "p_t", "p_wilcoxon", "p_holm", "significant", "d_z",
           "mdd", "splits_for_1pt", "var_split", "var_seed"]


def sample(part: pd.DataFrame, metric: str) -> pd.Series:
    """One cell's runs: ``metric`` (a fraction in MLflow) in percent points, indexed by (split, seed); runs
    without it are left out. A (split, seed) twice (runs of two studies pooled) would pair wrongly: refused."""
    if metric not in part or not len(part):
        return pd.Series(dtype=float, index=pd.MultiIndex.from_tuples([], names=["split", "seed"]))
    s = part.set_index(["split", "seed"])[metric].astype(float)
    s = percent(s[np.isfinite(s)])
    if not s.index.is_unique:
        split, seed = s.index[s.index.duplicated()][0]
        raise ValueError(f"split {split} seed {seed} appears twice in one row (runs of two studies or experiments "
                         "pooled); keep one run per split and seed")
    return s


def percent(fractions):
    """Fractions (as MLflow holds them) in percent points, rounded to 9 decimals: 0.53 is 53.0, not
    53.00000000000001, so equal values tie and a constant difference has no variance."""
    return np.round(np.asarray(fractions, dtype=float) * 100, 9) if not isinstance(fractions, pd.Series) \
        else (fractions.astype(float) * 100).round(9)


def describe(values, ci: str = "t", confidence: float = CONFIDENCE) -> dict:
    """mean, std (ddof 1), n and the ``confidence`` interval of the mean: Student t (``scipy.stats.
    ttest_1samp``) or a BCa bootstrap (``scipy.stats.bootstrap``, fixed seed: reports are reproducible).
    n = 1: no std, no interval; a std of 0: the interval is the mean itself."""
    if ci not in CI_METHODS:
        raise ValueError(f"ci must be one of {CI_METHODS}, got {ci!r}")
    v = np.asarray(values, dtype=float)
    n = len(v)
    out = dict(n=n, mean=float(v.mean()) if n else NAN, std=float(v.std(ddof=1)) if n > 1 else NAN,
               ci_low=NAN, ci_high=NAN)
    if n < 2:
        return out
    if _constant(v):
        out.update(ci_low=out["mean"], ci_high=out["mean"])
    elif ci == "t":
        low, high = stats.ttest_1samp(v, 0).confidence_interval(confidence)
        out.update(ci_low=float(low), ci_high=float(high))
    else:
        with warnings.catch_warnings():  # a degenerate resample distribution: NaN, said by the value itself
            warnings.simplefilter("ignore")
            res = stats.bootstrap((v,), np.mean, confidence_level=confidence, rng=np.random.default_rng(0))
        out.update(ci_low=float(res.confidence_interval.low), ci_high=float(res.confidence_interval.high))
    return out


def _constant(v: np.ndarray) -> bool:
    """No variance beyond float noise (0.53 * 100 - 0.50 * 100 is 3.0000000000000036, not 3)."""
    return bool(len(v)) and np.allclose(v, v[0], rtol=0, atol=1e-9)


def pairs(row: pd.Series, ref: pd.Series) -> tuple[pd.Series, pd.Series, list]:
    """The (split, seed) points both samples have, as two aligned series, and the points of one side only."""
    common = row.index.intersection(ref.index, sort=False).sort_values()
    unpaired = sorted(row.index.symmetric_difference(ref.index, sort=False), key=str)
    return row.loc[common], ref.loc[common], unpaired


def resolution(sd: float, n: int, alpha: float = ALPHA, power: float = POWER) -> tuple[float, float]:
    """(minimum detectable difference, pairs a 1-point difference needs) of a two-sided paired t-test with
    n pairs whose differences have std ``sd`` (statsmodels ``TTestPower``); NaN where undefined (n < 2 or
    sd 0 or NaN). The pairs needed are at least 2 (a t-test needs a std)."""
    if n < 2 or not sd > 1e-9:
        return NAN, NAN
    power_of = TTestPower()
    effect = power_of.solve_power(effect_size=None, nobs=n, alpha=alpha, power=power, alternative="two-sided")
    needed = power_of.solve_power(effect_size=1 / sd, nobs=None, alpha=alpha, power=power, alternative="two-sided")
    if needed != needed and 1 / sd >= power_of.solve_power(effect_size=None, nobs=2, alpha=alpha, power=power,
                                                           alternative="two-sided"):
        needed = 2  # the solver fails where even 2 pairs have the power (a std far below a point)
    return float(effect * sd), float(max(2, math.ceil(needed))) if needed == needed else NAN


def compare(row: pd.Series, ref: pd.Series, confidence: float = CONFIDENCE) -> dict:
    """Row vs reference over their (split, seed) pairs: diff (row - ref) with its t interval, paired t p,
    Wilcoxon signed-rank p (zeros dropped; NaN when every difference is 0; the exact distribution without
    ties, else the normal approximation with tie correction: scipy's permutation test for ties would be
    slow and, beyond 13 pairs, random), d_z, mdd, splits_for_1pt, and
    the unpaired points. With no variance in the differences the t-test, d_z and the resolution are
    undefined (NaN): the interval is the difference itself."""
    a, b, unpaired = pairs(row, ref)
    d = (a - b).to_numpy(float)
    n = len(d)
    out = dict(n=n, unpaired=len(unpaired), unpaired_points=[f"{s}/seed {_seed(x)}" for s, x in unpaired],
               diff=float(d.mean()) if n else NAN, diff_ci_low=NAN, diff_ci_high=NAN, p_t=NAN, p_wilcoxon=NAN,
               d_z=NAN, mdd=NAN, splits_for_1pt=NAN, sd_diff=float(d.std(ddof=1)) if n > 1 else NAN)
    if n < 2:
        return out
    nonzero = d[np.abs(d) > 1e-9]
    if len(nonzero):
        ties = len(np.unique(np.abs(nonzero))) < len(nonzero)  # exact without ties; else deterministic normal
        out["p_wilcoxon"] = float(stats.wilcoxon(nonzero, method="approx" if ties or len(nonzero) > 50 else
                                                 "exact").pvalue)
    if _constant(d):
        out.update(diff_ci_low=out["diff"], diff_ci_high=out["diff"])
        return out
    t = stats.ttest_rel(a.to_numpy(float), b.to_numpy(float))
    low, high = t.confidence_interval(confidence)
    mdd, needed = resolution(out["sd_diff"], n)
    out.update(diff_ci_low=float(low), diff_ci_high=float(high), p_t=float(t.pvalue),
               d_z=float(t.statistic) / math.sqrt(n), mdd=mdd, splits_for_1pt=needed)
    return out


def _seed(x):
    return int(x) if x == x and float(x).is_integer() else x


def holm(pvalues, alpha: float = ALPHA) -> np.ndarray:
    """Holm-Bonferroni corrected p values (statsmodels ``multipletests``) over the defined ones; NaN stays NaN
    and does not count as a test."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        # statsmodels' Holm branch ends in gc.collect(), a full collection of this process's heap (0.1-0.2 s in
        # a process that holds torch), once per family of a table. Frozen, the objects that already exist are
        # left out of it: the collection looks only at what multipletests made. A process that froze objects
        # itself (gc.freeze) keeps them frozen: then nothing is frozen or unfrozen here
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            out[ok] = multipletests(p[ok], alpha=alpha, method="holm")[1]
        finally:
            if freeze:
                gc.unfreeze()
    return out


def variance_components(values: pd.Series) -> tuple[float, float]:
    """(split-to-split, seed-to-seed) variance of a sample indexed by (split, seed): one-way random-effects
    ANOVA estimates (sums of squares by statsmodels ``anova_lm``; split variance (MS_split - MS_seed) / n0,
    floored at 0, n0 the unbalanced-design group size). NaN unless at least 2 splits and some split with
    several seeds (with one seed per split the two are confounded)."""
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    frame = pd.DataFrame({"y": values.to_numpy(float), "split": [str(k[0]) for k in values.index]})
    sizes = frame.groupby("split").size()
    if len(sizes) < 2 or len(frame) <= len(sizes):
        return NAN, NAN
    table = anova_lm(ols("y ~ C(split)", frame).fit())
    ms_split, ms_seed = table["mean_sq"].iloc[0], table["mean_sq"].iloc[1]
    total = len(frame)
    n0 = (total - (sizes ** 2).sum() / total) / (len(sizes) - 1)
    return float(max(0.0, (ms_split - ms_seed) / n0)), float(ms_seed)


# ---- a table's statistics: one frame row per cell and per comparison -----------------------------------
def cell_rows(table: str, row: str, column: str, metric: str, values: pd.Series, ci: str = "t") -> dict:
    var_split, var_seed = variance_components(values)
    return dict(table=table, kind="cell", row=row, ref_row="", column=column, metric=metric,
                **describe(values, ci), unpaired=0, var_split=var_split, var_seed=var_seed)


def comparison_row(table: str, row: str, ref_row: str, column: str, metric: str, a: pd.Series,
                   b: pd.Series) -> dict:
    c = compare(a, b)
    a_pairs, b_pairs, _ = pairs(a, b)
    var_split, var_seed = variance_components(a_pairs - b_pairs)
    return dict(table=table, kind="comparison", row=row, ref_row=ref_row, column=column, metric=metric,
                **{k: v for k, v in c.items() if k not in ("sd_diff", "unpaired_points")},
                std=c["sd_diff"], unpaired_points="; ".join(c["unpaired_points"]), var_split=var_split,
                var_seed=var_seed)


def finish(rows: list[dict], alpha: float = ALPHA) -> pd.DataFrame:
    """The frame of a table's cells and comparisons, with ``p_holm`` over the comparisons of each metric
    and ``significant`` (p_holm < alpha)."""
    frame = pd.DataFrame(rows)
    for c in COLUMNS + ["unpaired_points"]:
        if c not in frame:
            frame[c] = np.nan
    frame["p_holm"] = np.nan
    comps = frame["kind"] == "comparison"
    for _, idx in frame[comps].groupby("metric", sort=False).groups.items():
        frame.loc[idx, "p_holm"] = holm(frame.loc[idx, "p_t"])
    frame["significant"] = ((frame["p_holm"] < alpha) & comps).astype(object).where(comps, None)
    frame["unpaired_points"] = frame["unpaired_points"].fillna("")
    return frame[COLUMNS + ["unpaired_points"]]


def write_csv(frame: pd.DataFrame, path: str | Path) -> Path:
    """The stats file: fixed column order and float format, so the same runs give the same bytes."""
    out = frame.copy()
    out["significant"] = out["significant"].map({True: "yes", False: "no"}).fillna("")
    out.to_csv(path, index=False, float_format="%.10g", lineterminator="\n")
    return Path(path)


def parent_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """What a study's MLflow parent run logs as metrics: ``diff/<table>/<metric>/<row> vs <ref_row>`` and
    ``p_holm/...`` of each comparison (in percent points; names cleaned of characters MLflow refuses)."""
    out = {}
    for _, r in frame[frame["kind"] == "comparison"].iterrows():
        name = re.sub(r"[^A-Za-z0-9_.\-/ ]", "-", f"{r['table']}/{r['metric']}/{r['row']} vs {r['ref_row']}")
        for key in ("diff", "p_holm"):
            if r[key] == r[key]:
                out[f"{key}/{name}"] = float(r[key])
    return out


def parent_metrics_of(report_dir: str | Path) -> dict[str, float]:
    """:func:`parent_metrics` of every ``*_stats.csv`` that ``analysis.report`` wrote into ``report_dir``."""
    frames = [pd.read_csv(p, keep_default_na=False, na_values=[""]) for p in sorted(Path(report_dir).glob("*_stats.csv"))]
    return parent_metrics(pd.concat(frames)) if frames else {}


# ---- words: the table notes and the paragraph for a paper ------------------------------------------------
TEST_NOTE = ("†: significant at α = 0.05 after Holm–Bonferroni correction over the table's comparisons of the same "
             "metric (two-sided paired t-test over the (split, seed) pairs; p: corrected).")


def _span(values, fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if format(lo, fmt) == format(hi, fmt) else f"{format(lo, fmt)}–{format(hi, fmt)}"


def _grid(splits: int, seeds: int) -> str:
    return f"{splits} split{'s' * (splits != 1)} × {seeds} seed{'s' * (seeds != 1)}"


def resolution_sentence(frame: pd.DataFrame, metric: str, splits: int, seeds: int) -> str | None:
    """What a study of this size resolves on ``metric``, in words, from its comparisons' mdd and pairs needed."""
    comps = frame[(frame["kind"] == "comparison") & (frame["metric"] == metric)]
    if comps.empty:
        return None
    ok = comps[np.isfinite(comps["mdd"].astype(float)) & np.isfinite(comps["splits_for_1pt"].astype(float))]
    if ok.empty:
        return (f"With {_grid(splits, seeds)} this study resolves no {metric} difference: its comparisons have fewer "
                "than 2 pairs or no variance in the paired differences.")
    return (f"With {_grid(splits, seeds)} ({_span(ok['n'].astype(int), 'd')} pairs) this study resolves {metric} "
            f"differences of ≥ {_span(ok['mdd'], '.1f')} points (α = {ALPHA:g}, power {POWER:g}, from the observed "
            f"std of each comparison's paired differences); a 1-point difference would need "
            f"{_span(ok['splits_for_1pt'].astype(int), 'd')} splits × seeds.")


def variance_sentence(frame: pd.DataFrame, metric: str) -> str | None:
    """Where ``metric``'s variance comes from (median over the rows' cells), when splits have several seeds."""
    cells = frame[(frame["kind"] == "cell") & (frame["metric"] == metric)]
    cells = cells[np.isfinite(cells["var_split"].astype(float))]
    if cells.empty:
        return None
    split, seed = float(cells["var_split"].median()), float(cells["var_seed"].median())
    advice = ("more splits, not more seeds, would narrow the intervals" if split > seed else
              "seeds vary at least as much as splits: more seeds per split would narrow the intervals too")
    return (f"Variance of {metric} (median over rows): split-to-split {split:.2f}, seed-to-seed {seed:.2f} "
            f"points²; {advice}.")


def paragraph(frames: list[pd.DataFrame]) -> str:
    """A paragraph for a paper's experimental section: how the numbers were computed, then each table's
    significant differences (after correction) and what the study resolves, from the tables' stats frames."""
    text = ["Each number is the mean over the (split, seed) runs of a configuration, with the sample std and a "
            "95 % Student-t confidence interval of the mean. Configurations are compared on the (split, seed) "
            "runs both finished (a run of one side only is left out), by the paired mean difference with its "
            "95 % t interval, a two-sided paired t-test (Wilcoxon signed-rank test as a check) and Cohen's d_z; "
            f"p values are Holm–Bonferroni-corrected over each table's comparisons of one metric (α = {ALPHA:g})."]
    for frame in frames:
        comps = frame[frame["kind"] == "comparison"]
        if comps.empty:
            continue
        name, metric = comps["table"].iloc[0], comps["metric"].iloc[0]
        mine = comps[comps["metric"] == metric]
        real = mine[mine["significant"] == True]  # noqa: E712 - an object column of True/False/None
        found = "; ".join(f"{r['row']} vs {r['ref_row']} ({r['column']}) {r['diff']:+.1f} points (95 % CI [{r['diff_ci_low']:.1f}, {r['diff_ci_high']:.1f}], "
                          f"d_z = {r['d_z']:.2f}, p_Holm = {r['p_holm']:.3g}, n = {int(r['n'])})"
                          for _, r in real.iterrows())
        text.append(f"In {name}, {len(real)} of {len(mine)} {metric} comparisons are significant after correction"
                    + (f": {found}." if found else "."))
        ok = mine[np.isfinite(mine["mdd"].astype(float)) & np.isfinite(mine["splits_for_1pt"].astype(float))]
        if len(ok):
            text.append(f"With {_span(ok['n'].astype(int), 'd')} pairs it resolves differences of "
                        f"≥ {_span(ok['mdd'], '.1f')} points at power {POWER:g}; a 1-point difference would need "
                        f"{_span(ok['splits_for_1pt'].astype(int), 'd')} splits × seeds.")
    return " ".join(text) + "\n"
