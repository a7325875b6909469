import math

import numpy as np
import pytest
from scipy import stats as sps

from actrange import stats
from actrange.errors import UsageError
from actrange.stats import (
    _u_critical,
    _u_null_counts,
    epochs_to_reach,
    holm,
    interaction,
    loss_auc,
    rank_shift,
    summarise,
    welch,
)

T_975_3 = 3.182446305284263  # t quantile 0.975 with 3 degrees of freedom, from tables


def test_summarise_hand_computed():
    summary = summarise([1, 2, 3, 4])
    half = T_975_3 * math.sqrt(5 / 3) / 2
    assert summary.n == 4
    assert summary.mean == pytest.approx(2.5)
    assert summary.std == pytest.approx(math.sqrt(5 / 3))
    assert summary.ci_low == pytest.approx(2.5 - half)
    assert summary.ci_high == pytest.approx(2.5 + half)


def test_summarise_constant_sample_has_zero_width():
    summary = summarise([0.1, 0.1, 0.1])
    assert summary.std == 0.0
    assert summary.ci_low == summary.mean == summary.ci_high


def test_summarise_one_value_has_unbounded_interval_and_none_has_nan():
    one = summarise([85.0])
    assert (one.n, one.mean) == (1, 85.0)
    assert math.isnan(one.std)
    assert (one.ci_low, one.ci_high) == (-math.inf, math.inf)
    empty = summarise([])
    assert empty.n == 0
    assert all(math.isnan(x) for x in (empty.mean, empty.std, empty.ci_low, empty.ci_high))


def test_summarise_rejects_non_finite_values():
    with pytest.raises(ValueError, match="NaN or infinite"):
        summarise([1.0, math.nan])


def test_summarise_interval_brackets_mean_and_matches_scipy():
    rng = np.random.default_rng(1)
    for n in range(2, 30):
        sample = rng.normal(80, rng.uniform(0.1, 10), size=n)
        summary = summarise(sample)
        assert summary.ci_low <= summary.mean <= summary.ci_high
        low, high = sps.t.interval(0.95, n - 1, loc=sample.mean(), scale=sps.sem(sample))
        assert (summary.ci_low, summary.ci_high) == pytest.approx((low, high))


def test_loss_auc_is_mean_height_of_trapezoids():
    assert loss_auc([2.0, 1.0, 0.0]) == pytest.approx(1.0)  # area 1.5 + 0.5 over 2 epochs
    assert loss_auc([3.0, 1.0]) == pytest.approx(2.0)
    assert loss_auc([1.0, 3.0, 1.0, 1.0]) == pytest.approx((2.0 + 2.0 + 1.0) / 3)
    assert loss_auc([5.0]) == 5.0
    assert loss_auc([0.7] * 6) == pytest.approx(0.7)


def test_loss_auc_of_diverged_curve_is_nan_and_empty_is_an_error():
    assert math.isnan(loss_auc([2.0, math.nan]))
    assert math.isnan(loss_auc([2.0, math.inf, 1.0]))
    with pytest.raises(UsageError, match="empty"):
        loss_auc([])


def test_epochs_to_reach_first_epoch_at_or_above_threshold():
    assert epochs_to_reach([50.0, 79.9, 80.0, 90.0], 80.0) == 3.0
    assert epochs_to_reach([81.0, 70.0], 80.0) == 1.0
    assert epochs_to_reach([math.nan, 85.0], 80.0) == 2.0
    assert epochs_to_reach([10.0, 20.0], 80.0) == math.inf
    assert epochs_to_reach([], 80.0) == math.inf


def test_welch_hand_computed():
    # a: mean 2.5, var 5/3, n 4; b: mean 4, var 4, n 3; se^2 = 5/12 + 4/3 = 7/4
    result = welch([1, 2, 3, 4], [2, 4, 6])
    df = (7 / 4) ** 2 / ((5 / 12) ** 2 / 3 + (4 / 3) ** 2 / 2)
    assert df == pytest.approx(1323 / 409)
    half = sps.t.ppf(0.975, df) * math.sqrt(7 / 4)
    assert result.diff == pytest.approx(-1.5)
    assert result.t == pytest.approx(-3 / math.sqrt(7))
    assert result.df == pytest.approx(df)
    assert result.p == pytest.approx(2 * sps.t.sf(3 / math.sqrt(7), df))
    assert (result.ci_low, result.ci_high) == pytest.approx((-1.5 - half, -1.5 + half))
    # pooled variance (3 * 5/3 + 2 * 4) / 5 = 13/5; correction 1 - 3 / (4 * 5 - 1) = 16/19
    assert result.hedges_g == pytest.approx(-1.5 / math.sqrt(13 / 5) * 16 / 19)
    assert (result.n_a, result.n_b) == (4, 3)


def _with_moments(n: int, mean: float, std: float, seed: int) -> np.ndarray:
    """A sample rescaled to exactly the given mean and sample std."""
    raw = np.random.default_rng(seed).normal(size=n)
    return mean + std * (raw - raw.mean()) / raw.std(ddof=1)


def test_welch_textbook_summary_statistics():
    # two groups of 20 with means 100 and 95, sds 15 and 20: t = 5 / sqrt(31.25), df about 35.2
    result = welch(_with_moments(20, 100, 15, 0), _with_moments(20, 95, 20, 1))
    assert result.t == pytest.approx(0.8944, abs=1e-4)
    assert result.df == pytest.approx(31.25**2 / ((11.25**2 + 20**2) / 19))
    assert result.df == pytest.approx(35.24, abs=0.01)
    assert result.p > 0.05


def test_welch_matches_scipy_and_is_antisymmetric():
    rng = np.random.default_rng(2)
    for _ in range(20):
        a = rng.normal(85, rng.uniform(0.2, 3), size=rng.integers(2, 12))
        b = rng.normal(84, rng.uniform(0.2, 3), size=rng.integers(2, 12))
        result, ref = welch(a, b), sps.ttest_ind(a, b, equal_var=False)
        interval = ref.confidence_interval(0.95)
        assert result.t == pytest.approx(ref.statistic)
        assert result.p == pytest.approx(ref.pvalue)
        assert result.df == pytest.approx(ref.df)
        assert (result.ci_low, result.ci_high) == pytest.approx((interval.low, interval.high))
        assert result.ci_low <= result.diff <= result.ci_high
        swapped = welch(b, a)
        assert swapped.diff == pytest.approx(-result.diff)
        assert swapped.p == pytest.approx(result.p)
        assert swapped.hedges_g == pytest.approx(-result.hedges_g)


def test_welch_degenerate_groups():
    single = welch([85.0], [80.0, 81.0])
    assert single.diff == pytest.approx(4.5)
    assert (single.ci_low, single.ci_high) == (-math.inf, math.inf)
    assert math.isnan(single.p) and math.isnan(single.t)
    distinct = welch([10.0, 10.0], [12.0, 12.0, 12.0])
    assert (distinct.diff, distinct.ci_low, distinct.ci_high) == (-2.0, -2.0, -2.0)
    assert distinct.p == 0.0 and distinct.t == -math.inf
    assert math.isnan(distinct.hedges_g)
    same = welch([10.0, 10.0], [10.0, 10.0])
    assert (same.ci_low, same.ci_high) == (0.0, 0.0)
    assert math.isnan(same.p)
    empty = welch([], [1.0, 2.0])
    assert math.isnan(empty.diff) and empty.n_a == 0


def test_holm_hand_worked():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # sorted 0.01*4, 0.02*3, 0.04*2, 0.5*1 -> 0.04, 0.06, 0.08, max(0.08, 0.5)
    assert holm([0.5, 0.01, 0.02, 0.04]) == pytest.approx([0.5, 0.04, 0.06, 0.08])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert holm([0.02]) == pytest.approx([0.02])
    assert holm([]).shape == (0,)


def test_holm_leaves_nan_out_of_the_family():
    adjusted = holm([0.01, math.nan, 0.04])
    assert adjusted[[0, 2]] == pytest.approx([0.02, 0.04])
    assert math.isnan(adjusted[1])


def test_holm_invariants():
    rng = np.random.default_rng(3)
    for _ in range(50):
        raw = rng.uniform(0, 0.3, size=rng.integers(1, 8))
        adjusted = holm(raw)
        assert np.all(adjusted >= raw) and np.all(adjusted <= 1.0)
        order = np.argsort(raw)
        assert np.all(np.diff(adjusted[order]) >= 0)
        assert adjusted.min() == pytest.approx(min(1.0, raw.min() * raw.size))


def test_interaction_hand_computed():
    # means 2, 1, 6, 6; variances 2, 2, 4, 3; se^2 = 1 + 1 + 4/3 + 1 = 13/3
    result = interaction([1, 3], [0, 2], [4, 6, 8], [5, 5, 8])
    df = (13 / 3) ** 2 / (1 + 1 + (4 / 3) ** 2 / 2 + 1 / 2)
    assert df == pytest.approx(338 / 61)
    half = sps.t.ppf(0.975, df) * math.sqrt(13 / 3)
    assert result.diff == pytest.approx(1.0)
    assert result.t == pytest.approx(1 / math.sqrt(13 / 3))
    assert result.df == pytest.approx(df)
    assert result.p == pytest.approx(2 * sps.t.sf(1 / math.sqrt(13 / 3), df))
    assert (result.ci_low, result.ci_high) == pytest.approx((1 - half, 1 + half))
    assert math.isnan(result.hedges_g)
    assert (result.n_a, result.n_b) == (4, 6)


def test_interaction_against_constant_groups_equals_welch():
    a, b = [81.0, 83.5, 82.2, 84.0], [80.1, 79.0, 82.5]
    gap, direct = interaction(a, b, [5.0, 5.0], [5.0, 5.0]), welch(a, b)
    for field in ("diff", "ci_low", "ci_high", "t", "df", "p"):
        assert getattr(gap, field) == pytest.approx(getattr(direct, field))


def test_interaction_with_a_single_seed_has_no_test():
    result = interaction([1.0], [0.0, 2.0], [4.0, 6.0], [5.0, 7.0])
    assert result.diff == pytest.approx((1 - 1) - (5 - 6))
    assert (result.ci_low, result.ci_high) == (-math.inf, math.inf)
    assert math.isnan(result.p)


def test_u_null_distribution_counts_the_orderings():
    # five against five: C(10, 5) = 252 orderings. The orderings with U = u are the partitions
    # of u into at most five parts of at most five: 4 = 3+1 = 2+2 = 2+1+1 = 1+1+1+1 gives five
    counts = _u_null_counts(5, 5)
    assert counts.size == 26 and counts.sum() == 252
    assert list(counts[:5]) == [1, 1, 2, 3, 5]
    assert list(counts) == list(counts[::-1])  # U and n_a*n_b - U are equally likely


@pytest.mark.parametrize(
    ("n_a", "n_b", "critical"),
    # the two-sided 5% critical values of printed Mann-Whitney tables; none exists for 3 and 4
    [(5, 5, 2), (10, 10, 23), (6, 6, 5), (4, 6, 2), (3, 4, -1), (2, 2, -1)],
)
def test_u_critical_values_match_the_tables(n_a, n_b, critical):
    assert _u_critical(n_a, n_b) == critical


@pytest.mark.parametrize("n", [10, 20, 30, 40, 50])
def test_u_critical_by_normal_approximation_is_within_one_of_the_exact_count(n, monkeypatch):
    exact = _u_critical(n, n)
    monkeypatch.setattr(stats, "EXACT_U_PAIRS", 0)  # every size by the approximation
    assert abs(_u_critical(n, n) - exact) <= 1


def test_rank_shift_hand_computed():
    # a_i - b_j = 10 + (i - j) for i, j in 0..4: 6 once, 7 twice, ..., 10 five times, ..., 14 once.
    # Median (13th of 25) = 10; with k = 2 the interval is the 3rd and 23rd: 7 and 13.
    # Every a exceeds every b: U = 25, exact two-sided p = 2 / C(10, 5) = 2 / 252.
    result = rank_shift([10, 11, 12, 13, 14], [0, 1, 2, 3, 4])
    assert (result.shift, result.ci_low, result.ci_high) == (10.0, 7.0, 13.0)
    assert result.u == 25.0 and (result.n_a, result.n_b) == (5, 5)
    assert result.p == pytest.approx(2 / 252)
    swapped = rank_shift([0, 1, 2, 3, 4], [10, 11, 12, 13, 14])
    assert (swapped.shift, swapped.ci_low, swapped.ci_high, swapped.u) == (-10.0, -13.0, -7.0, 0.0)


def test_rank_shift_ignores_one_stuck_run_where_welch_does_not():
    tanh = [85.9, 86.0, 86.1, 86.2, 86.3, 86.4]
    relu = [83.9, 84.0, 84.1, 84.2, 84.3, 10.0]  # one seed never left chance
    robust, means = rank_shift(tanh, relu), welch(tanh, relu)
    assert means.p > 0.05 and means.ci_low < 0  # the stuck run swamps the t-test
    assert robust.p == pytest.approx(2 / 924)  # all 36 pairs favour tanh: 2 / C(12, 6)
    # the 30 pairs without the stuck run differ by 2.0 + 0.1 (i - j): 1.6 once, 1.7 twice, 1.8
    # three times, ..., 2.0 and 2.1 five times each; the 6 with it by 75.9 to 76.4. The median
    # (18th and 19th of 36) is 2.1; with k = 5 the interval runs from the 6th smallest, 1.8, to
    # the 6th largest, 75.9: one stuck seed in six leaves the top of the shift open
    assert robust.shift == pytest.approx(2.1)
    assert (robust.ci_low, robust.ci_high) == pytest.approx((1.8, 75.9))


def test_rank_shift_degenerate_samples():
    few = rank_shift([1.0, 2.0], [3.0, 4.0])
    assert (few.ci_low, few.ci_high) == (-math.inf, math.inf)  # no 95% interval from 2 x 2
    assert few.shift == -2.0
    same = rank_shift([1.0, 1.0], [1.0, 1.0])
    assert same.shift == 0.0 and math.isnan(same.p)
    empty = rank_shift([], [1.0])
    assert math.isnan(empty.shift) and (empty.n_a, empty.n_b) == (0, 1)
