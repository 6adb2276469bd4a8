"""vaanet.stats against independent computations on fixed numbers: t intervals from the t quantile, the
paired t-test from its formula, the Wilcoxon p by enumerating every sign assignment, power from the
noncentral t, Holm by hand and against statsmodels, variance components from group means."""
import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats as sps
from statsmodels.stats.multitest import multipletests

from vaanet import stats


def series(values, splits=None, seeds=None):
    splits = splits or [f"split_{i:02d}" for i in range(len(values))]
    seeds = seeds or [0] * len(values)
    return pd.Series(values, index=pd.MultiIndex.from_arrays([splits, seeds], names=["split", "seed"]), dtype=float)


def t_interval(v):
    v = np.asarray(v, float)
    half = sps.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return v.mean() - half, v.mean() + half


def exact_wilcoxon(d):
    """Two-sided exact p of the signed-rank statistic (no ties), zeros dropped: every sign assignment."""
    d = np.asarray([x for x in d if x != 0], float)
    ranks = sps.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    centre = ranks.sum() / 2
    sums = [sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product((0, 1), repeat=len(d))]
    return np.mean([abs(s - centre) >= abs(observed - centre) - 1e-12 for s in sums])


def normal_wilcoxon(d):
    """Two-sided p of the signed-rank statistic by the normal approximation, zeros dropped, midranks and the
    tie correction of the variance, no continuity correction."""
    d = np.asarray([x for x in d if x != 0], float)
    n, ranks = len(d), sps.rankdata(np.abs(d))
    _, counts = np.unique(np.abs(d), return_counts=True)
    var = n * (n + 1) * (2 * n + 1) / 24 - (counts ** 3 - counts).sum() / 48
    return 2 * sps.norm.sf(abs(ranks[d > 0].sum() - n * (n + 1) / 4) / math.sqrt(var))


def power(d, n):
    """Power of the two-sided one-sample t-test at effect size d with n observations (noncentral t)."""
    crit = sps.t.ppf(0.975, n - 1)
    nc = d * math.sqrt(n)
    return sps.nct.sf(crit, n - 1, nc) + np.nan_to_num(sps.nct.cdf(-crit, n - 1, nc))  # far tail: NaN for 0


def test_percent_and_sample_keep_the_printed_points():
    assert stats.percent([0.57, 0.5])[0] == 57.0 and 0.57 * 100 != 57.0  # no float noise left
    runs = pd.DataFrame({"split": ["a", "b", "c"], "seed": [0, 0, 0], "test_acc": [0.5, np.nan, 0.7]})
    s = stats.sample(runs, "test_acc")
    assert s.to_dict() == {("a", 0): 50.0, ("c", 0): 70.0}  # a run without the metric is not a point
    assert stats.sample(runs, "other").empty
    with pytest.raises(ValueError, match="split a seed 0 appears twice"):
        stats.sample(pd.concat([runs, runs.iloc[:1]]), "test_acc")


def test_describe_mean_std_and_t_interval():
    v = [51.0, 54.0, 52.5, 57.0]
    d = stats.describe(v)
    assert d["n"] == 4 and d["mean"] == pytest.approx(53.625) and d["std"] == pytest.approx(np.std(v, ddof=1))
    assert (d["ci_low"], d["ci_high"]) == pytest.approx(t_interval(v))
    two = stats.describe([50.0, 53.0])  # n = 2: t with 1 df, 12.706 * 3 / 2 on each side
    assert (two["ci_low"], two["ci_high"]) == pytest.approx((51.5 - 12.7062047 * 1.5, 51.5 + 12.7062047 * 1.5))
    one = stats.describe([56.0])
    assert one["mean"] == 56.0 and all(np.isnan(one[k]) for k in ("std", "ci_low", "ci_high"))
    flat = stats.describe([55.0, 55.0, 55.0])
    assert flat["std"] == 0 and flat["ci_low"] == flat["ci_high"] == 55.0
    with pytest.raises(ValueError, match="ci must be one of"):
        stats.describe(v, ci="normal")


def test_bootstrap_interval_is_reproducible_and_near_t_on_a_normal_sample():
    v = np.random.default_rng(1).normal(50, 2, 40)
    a, b = stats.describe(v, ci="bootstrap"), stats.describe(v, ci="bootstrap")
    assert a == b  # fixed seed: a report regenerates the same bytes
    low, high = t_interval(v)
    assert a["ci_low"] == pytest.approx(low, abs=0.25) and a["ci_high"] == pytest.approx(high, abs=0.25)
    assert a["ci_low"] != pytest.approx(low, abs=1e-6)  # not the t interval under another name


def test_compare_against_the_formulas():
    row, ref = series([53.0, 56.0, 50.0, 55.0, 58.0, 54.0]), series([50.0, 52.0, 49.0, 53.0, 53.0, 50.5])
    c = stats.compare(row, ref)
    d = (row - ref).to_numpy()
    sd = d.std(ddof=1)
    t = d.mean() / (sd / math.sqrt(6))
    assert c["n"] == 6 and c["unpaired"] == 0 and c["diff"] == pytest.approx(d.mean())
    assert (c["diff_ci_low"], c["diff_ci_high"]) == pytest.approx(t_interval(d))
    assert c["p_t"] == pytest.approx(2 * sps.t.sf(abs(t), 5))
    assert c["d_z"] == pytest.approx(d.mean() / sd)
    assert c["p_wilcoxon"] == pytest.approx(exact_wilcoxon(d)) and c["p_wilcoxon"] == pytest.approx(2 / 64)
    # minimum detectable difference: the effect size with power 0.8 at n = 6, times the std of the differences
    effect = optimize.brentq(lambda e: power(e, 6) - 0.8, 0.01, 5)
    assert c["mdd"] == pytest.approx(effect * sd, rel=1e-4)
    needed = next(n for n in range(2, 10000) if power(1 / sd, n) >= 0.8)
    assert c["splits_for_1pt"] == needed
    assert power(1 / sd, needed - 1) < 0.8


def test_compare_n2_ties_zero_variance_and_a_missing_pair():
    # n = 2: one degree of freedom
    c = stats.compare(series([53.0, 57.0]), series([50.0, 52.0]))
    assert c["diff"] == 4.0 and (c["diff_ci_low"], c["diff_ci_high"]) == pytest.approx(t_interval([3.0, 5.0]))
    assert c["p_t"] == pytest.approx(2 * sps.t.sf(4 / (math.sqrt(2) / math.sqrt(2)), 1))
    assert c["p_wilcoxon"] == pytest.approx(0.5)  # the smallest p two pairs can give
    effect = optimize.brentq(lambda e: power(e, 2) - 0.8, 0.01, 15)
    assert c["mdd"] == pytest.approx(effect * math.sqrt(2), rel=1e-4)
    # ties and a zero among the differences: zeros dropped, midranks, normal approximation with tie correction
    d = [1.0, 2.0, 2.0, 4.0, -1.0, 6.0, 0.0]
    c = stats.compare(series([50 + x for x in d]), series([50.0] * 7))
    assert c["p_wilcoxon"] == pytest.approx(normal_wilcoxon(d)) and c["n"] == 7
    assert c["p_wilcoxon"] != pytest.approx(normal_wilcoxon([1.0, 2.0, 2.5, 4.0, -1.5, 6.0]))  # ties count
    # every pair differs by exactly 3 points, though 0.57 * 100 - 0.54 * 100 is not 3: no variance, no t-test
    assert 0.57 * 100 - 0.54 * 100 != 0.58 * 100 - 0.55 * 100
    flat = stats.compare(stats.percent(pd.Series([0.57, 0.58, 0.51], index=series([0, 0, 0]).index)),
                         stats.percent(pd.Series([0.54, 0.55, 0.48], index=series([0, 0, 0]).index)))
    assert flat["diff"] == 3.0 and flat["diff_ci_low"] == flat["diff_ci_high"] == 3.0
    assert all(np.isnan(flat[k]) for k in ("p_t", "d_z", "mdd", "splits_for_1pt"))
    assert flat["p_wilcoxon"] == pytest.approx(normal_wilcoxon([3.0, 3.0, 3.0]))  # all tied
    same = stats.compare(series([50.0, 51.0]), series([50.0, 51.0]))
    assert same["diff"] == 0 and np.isnan(same["p_wilcoxon"]) and np.isnan(same["p_t"])
    # a missing split is never paired: split_02 of the row failed, split_03 of the reference
    row = series([53.0, 56.0, 50.0], ["split_00", "split_01", "split_03"])
    ref = series([50.0, 52.0, 49.0], ["split_00", "split_01", "split_02"])
    gap = stats.compare(row, ref)
    assert gap["n"] == 2 and gap["unpaired"] == 2 and gap["diff"] == 3.5
    assert gap["unpaired_points"] == ["split_02/seed 0", "split_03/seed 0"]
    one = stats.compare(series([53.0]), series([50.0]))
    assert one["n"] == 1 and one["diff"] == 3.0 and all(np.isnan(one[k]) for k in ("p_t", "diff_ci_low", "mdd"))


def test_pairs_are_split_and_seed():
    """Several seeds per split: seed 1 of split_00 pairs with seed 1 of split_00, never with seed 0."""
    idx = (["s0", "s0", "s1", "s1"], [0, 1, 0, 1])
    row, ref = series([60.0, 70.0, 61.0, 72.0], *idx), series([50.0, 65.0, 52.0, 66.0], *idx)
    c = stats.compare(row, ref)
    assert c["n"] == 4 and c["diff"] == pytest.approx(np.mean([10, 5, 9, 6]))
    shuffled = ref.iloc[[1, 0, 3, 2]]  # order does not matter, the keys do
    assert stats.compare(row, shuffled)["diff"] == c["diff"] and stats.compare(row, shuffled)["p_t"] == c["p_t"]


def test_holm_against_statsmodels_and_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    assert stats.holm(p) == pytest.approx(multipletests(p, method="holm")[1])
    # by hand: sorted .005 .01 .03 .04 times 4 3 2 1, running maximum: .02 .03 .06 .06
    assert stats.holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    with_nan = stats.holm([0.01, np.nan, 0.04])  # an undefined test is not a test: two, not three
    assert np.isnan(with_nan[1]) and with_nan[[0, 2]] == pytest.approx([0.02, 0.04])
    assert np.isnan(stats.holm([np.nan])).all()


def test_variance_components_one_seed_vs_several():
    # 3 splits x 2 seeds, balanced: MS_within = mean of within-split variances; split = (MS_between - MS_within)/2
    values = {("s0", 0): 50.0, ("s0", 1): 52.0, ("s1", 0): 60.0, ("s1", 1): 61.0, ("s2", 0): 55.0, ("s2", 1): 58.0}
    s = pd.Series(values)
    s.index.names = ["split", "seed"]
    groups = [[50, 52], [60, 61], [55, 58]]
    within = np.mean([np.var(g, ddof=1) for g in groups])
    between = 2 * np.var([np.mean(g) for g in groups], ddof=1)
    split_var, seed_var = stats.variance_components(s)
    assert seed_var == pytest.approx(within) and split_var == pytest.approx((between - within) / 2)
    # unbalanced: n0 = (N - sum n_i^2 / N) / (k - 1)
    u = s.drop(("s2", 1))
    sizes = np.array([2, 2, 1])
    n0 = (5 - (sizes ** 2).sum() / 5) / 2
    grand = u.mean()
    means = u.groupby(level="split").mean()
    ms_b = sum(k * (means[g] - grand) ** 2 for g, k in zip(["s0", "s1", "s2"], sizes)) / 2
    ms_w = sum(((u.xs(g, level="split") - means[g]) ** 2).sum() for g in ["s0", "s1", "s2"]) / 2
    assert stats.variance_components(u) == pytest.approx(((ms_b - ms_w) / n0, ms_w))
    # seeds vary more than splits: the split component is floored at 0, not negative
    noisy = pd.Series([50.0, 60.0, 51.0, 59.0], index=pd.MultiIndex.from_tuples(
        [("s0", 0), ("s0", 1), ("s1", 0), ("s1", 1)], names=["split", "seed"]))
    assert stats.variance_components(noisy)[0] == 0.0
    # one seed per split: the two are confounded, nothing to split
    assert all(np.isnan(x) for x in stats.variance_components(series([50.0, 52.0, 51.0])))


def test_a_tables_frame_corrects_per_metric_and_logs_to_the_parent():
    a, b, c = series([53.0, 56.0, 50.0, 55.0]), series([50.0, 52.0, 49.0, 53.0]), series([40.0, 41.0, 45.0, 44.0])
    rows = [stats.cell_rows("t3", "A", "Accuracy", "test_acc", a),
            stats.comparison_row("t3", "A", "B", "Accuracy", "test_acc", a, b),
            stats.comparison_row("t3", "A", "C", "Accuracy", "test_acc", a, c),
            stats.comparison_row("t3", "A", "C", "Mean class acc.", "test_mean_class_acc", a, c)]
    frame = stats.finish(rows)
    assert list(frame.columns[:len(stats.COLUMNS)]) == stats.COLUMNS
    acc = frame[(frame["kind"] == "comparison") & (frame["metric"] == "test_acc")]
    assert acc["p_holm"].to_numpy() == pytest.approx(multipletests(acc["p_t"], method="holm")[1])
    other = frame[frame["metric"] == "test_mean_class_acc"].iloc[0]
    assert other["p_holm"] == pytest.approx(other["p_t"])  # alone in its metric: nothing to correct
    assert np.isnan(frame.iloc[0]["p_holm"]) and frame.iloc[0]["ci_low"] == pytest.approx(t_interval(a)[0])
    metrics = stats.parent_metrics(frame)
    assert metrics["diff/t3/test_acc/A vs B"] == pytest.approx(2.5)
    assert metrics["p_holm/t3/test_acc/A vs C"] == pytest.approx(acc.iloc[1]["p_holm"])
    assert len(metrics) == 6


def test_a_tiny_std_needs_two_pairs_for_a_point():
    """Differences of 5.0 ± 0.01 points: the power solver fails for such an effect; two pairs already suffice."""
    c = stats.compare(series([55.0, 55.01, 54.99, 55.0]), series([50.0, 50.0, 50.0, 50.01]))
    assert c["splits_for_1pt"] == 2 and power(1 / c["sd_diff"], 2) >= 0.8
