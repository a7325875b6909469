"""Small statistics for replicated runs: summaries, convergence measures, comparisons.

Every function takes plain sequences of floats (one value per run unless said otherwise) and returns
plain numbers or frozen dataclasses; nothing here knows about tables or files. Intervals are
two-sided 95% t-intervals; accuracies are in percent, so differences are in percentage points.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from actrange.errors import UsageError

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Summary:
    """The mean of a sample with its spread and 95% t-interval.

    Attributes:
        n: number of values.
        mean: sample mean; NaN when n == 0.
        std: sample standard deviation (ddof=1); NaN when n < 2.
        ci_low: lower end of mean ± t(0.975, n-1)·std/√n. With n == 1 the interval is
            (-inf, inf): one value says nothing about the spread. With n == 0 it is NaN.
        ci_high: upper end of the same interval.
    """

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


@dataclass(frozen=True)
class Comparison:
    """A difference of means with its 95% interval, test and effect size.

    Attributes:
        diff: the estimated difference (for welch(): mean(a) - mean(b)).
        ci_low: lower end of the 95% Welch–Satterthwaite interval of diff; -inf when a group
            has a single value, equal to diff when every group is constant.
        ci_high: upper end of the same interval.
        t: the t statistic; ±inf when every group is constant and the means differ, NaN when
            undefined (a group with fewer than 2 values, or constant groups with equal means).
        df: Welch–Satterthwaite degrees of freedom (NaN when undefined).
        p: two-sided p-value (0 for distinct constant groups, NaN when t is NaN).
        hedges_g: Hedges' g (bias-corrected standardised difference); NaN when undefined.
        n_a: values on the first side (for interaction(): a1 and b1 together).
        n_b: values on the second side (for interaction(): a2 and b2 together).
    """

    diff: float
    ci_low: float
    ci_high: float
    t: float
    df: float
    p: float
    hedges_g: float
    n_a: int
    n_b: int


def _sample(values: Sequence[float]) -> np.ndarray:
    """Return values as a 1-D float array [n]; reject non-finite entries."""
    sample = np.asarray(values, dtype=float).ravel()
    if not np.all(np.isfinite(sample)):
        raise ValueError("sample holds NaN or infinite values; filter them before summarising")
    return sample


def _mean(sample: np.ndarray) -> float:
    """Mean that is exactly the value for a constant sample (no rounding drift)."""
    return float(sample[0]) if np.all(sample == sample[0]) else float(sample.mean())


def _var(sample: np.ndarray) -> float:
    """Sample variance (ddof=1) that is exactly 0 for a constant sample."""
    return 0.0 if np.all(sample == sample[0]) else float(sample.var(ddof=1))


def summarise(values: Sequence[float]) -> Summary:
    """Summarise one sample (e.g. the final accuracies of a cell's seeds).

    Args:
        values: finite numbers, any unit; shape [n].

    Returns:
        Summary with the mean, sample std and 95% t-interval (see Summary for n < 2).
    """
    sample = _sample(values)
    n = sample.size
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan, math.nan)
    mean = _mean(sample)
    if n == 1:
        return Summary(1, mean, math.nan, -math.inf, math.inf)
    std = math.sqrt(_var(sample))
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * std / math.sqrt(n)
    return Summary(n, mean, std, mean - half, mean + half)


def loss_auc(train_losses: Sequence[float]) -> float:
    """Area under a run's train-loss curve, as the curve's mean height.

    The trapezoid area over epochs 1..E (spacing one epoch) divided by the E - 1 epochs it spans;
    a one-epoch curve gives its single loss. The result is in loss units (cross-entropy), so runs
    of equal length compare directly: lower means the loss fell sooner or further.

    Args:
        train_losses: the mean train loss of each epoch, in epoch order; shape [epochs].

    Returns:
        The mean height, or NaN when any loss is not finite (a diverged run has no area).
    """
    losses = np.asarray(train_losses, dtype=float).ravel()
    if losses.size == 0:
        raise UsageError("train-loss curve is empty; need the loss of at least one epoch")
    if not np.all(np.isfinite(losses)):
        return math.nan
    if losses.size == 1:
        return float(losses[0])
    return float(np.trapezoid(losses)) / (losses.size - 1)


def epochs_to_reach(test_accuracies: Sequence[float], threshold: float) -> float:
    """The first epoch whose test accuracy reaches a threshold.

    Args:
        test_accuracies: test accuracy (percent) after each epoch, in epoch order; shape [epochs].
        threshold: accuracy (percent) to reach; reached means ≥ threshold.

    Returns:
        The 1-based epoch as a float, or inf when the run never reaches it (NaN entries never
        count as reaching). Summaries should report the share of runs that reached it and
        summarise the epochs over those runs only, since inf has no mean.
    """
    accuracies = np.asarray(test_accuracies, dtype=float).ravel()
    reached = np.flatnonzero(accuracies >= threshold)
    return float(reached[0] + 1) if reached.size else math.inf


def _contrast(groups: Sequence[np.ndarray], weights: Sequence[float]) -> tuple[float, float, float]:
    """Estimate sum(w_i · mean_i) with its standard error and Welch–Satterthwaite df.

    Returns (estimate, se, df); se and df are NaN when a group has fewer than 2 values, and df
    is NaN when se == 0.
    """
    estimate = float(sum(w * _mean(g) for g, w in zip(groups, weights, strict=True)))
    if min(g.size for g in groups) < 2:
        return estimate, math.nan, math.nan
    # each group's contribution to the variance of the estimate
    terms = [w * w * _var(g) / g.size for g, w in zip(groups, weights, strict=True)]
    variance = float(sum(terms))
    if variance == 0.0:
        return estimate, 0.0, math.nan
    denominator = sum(term**2 / (g.size - 1) for term, g in zip(terms, groups, strict=True))
    return estimate, math.sqrt(variance), variance**2 / float(denominator)


def _degenerate(estimate: float, se: float, n_a: int, n_b: int) -> Comparison | None:
    """Return the Comparison for the cases a t-test cannot handle, else None."""
    if math.isnan(estimate):
        return Comparison(*(math.nan,) * 7, n_a, n_b)
    if math.isnan(se):
        return Comparison(estimate, -math.inf, math.inf, *(math.nan,) * 4, n_a, n_b)
    if se == 0.0:
        # constant groups: the difference is known exactly
        t, p = (math.copysign(math.inf, estimate), 0.0) if estimate else (math.nan, math.nan)
        return Comparison(estimate, estimate, estimate, t, math.nan, p, math.nan, n_a, n_b)
    return None


def _hedges_g(a: np.ndarray, b: np.ndarray) -> float:
    """Hedges' g of mean(a) - mean(b): Cohen's d on the pooled std times 1 - 3/(4·df - 1)."""
    df = a.size + b.size - 2
    pooled_var = ((a.size - 1) * _var(a) + (b.size - 1) * _var(b)) / df
    if pooled_var == 0.0:
        return math.nan
    d = (_mean(a) - _mean(b)) / math.sqrt(pooled_var)
    return float(d * (1.0 - 3.0 / (4.0 * df - 1.0)))


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison:
    """Compare two independent samples with Welch's t-test.

    Args:
        a: finite values of the first group, e.g. Tanh final accuracies; shape [n_a].
        b: finite values of the second group; shape [n_b].

    Returns:
        Comparison of mean(a) - mean(b) with the Welch–Satterthwaite 95% interval, Welch's t and
        two-sided p (scipy.stats.ttest_ind, equal_var=False) and Hedges' g. Empty groups give
        NaN everywhere; see Comparison for groups of one and constant groups.
    """
    sample_a, sample_b = _sample(a), _sample(b)
    if sample_a.size == 0 or sample_b.size == 0:
        return _degenerate(math.nan, math.nan, sample_a.size, sample_b.size)
    estimate, se, _ = _contrast([sample_a, sample_b], [1.0, -1.0])
    special = _degenerate(estimate, se, sample_a.size, sample_b.size)
    if special is not None:
        return special
    result = sps.ttest_ind(sample_a, sample_b, equal_var=False)
    interval = result.confidence_interval(CONFIDENCE)
    return Comparison(
        diff=estimate,
        ci_low=float(interval.low),
        ci_high=float(interval.high),
        t=float(result.statistic),
        df=float(result.df),
        p=float(result.pvalue),
        hedges_g=_hedges_g(sample_a, sample_b),
        n_a=sample_a.size,
        n_b=sample_b.size,
    )


def interaction(
    a1: Sequence[float], b1: Sequence[float], a2: Sequence[float], b2: Sequence[float]
) -> Comparison:
    """Test whether the gap between two groups changes between two conditions.

    The estimate is (mean a1 - mean b1) - (mean a2 - mean b2), e.g. the Tanh - ReLU gap at a
    narrow range minus the same gap at a wide range. Its interval and t-test use the standard
    error from the four group variances and Welch–Satterthwaite degrees of freedom.

    Args:
        a1, b1: the two groups under the first condition; shapes [n].
        a2, b2: the two groups under the second condition; shapes [n].

    Returns:
        Comparison with hedges_g = NaN (no single pooled scale), n_a = len(a1) + len(b1) and
        n_b = len(a2) + len(b2).
    """
    groups = [_sample(g) for g in (a1, b1, a2, b2)]
    n_first, n_second = groups[0].size + groups[1].size, groups[2].size + groups[3].size
    if min(g.size for g in groups) == 0:
        return _degenerate(math.nan, math.nan, n_first, n_second)
    estimate, se, df = _contrast(groups, [1.0, -1.0, -1.0, 1.0])
    special = _degenerate(estimate, se, n_first, n_second)
    if special is not None:
        return special
    t = estimate / se
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, df)) * se
    p = float(2.0 * sps.t.sf(abs(t), df))
    return Comparison(
        estimate, estimate - half, estimate + half, t, df, p, math.nan, n_first, n_second
    )


@dataclass(frozen=True)
class RankShift:
    """A distribution-free comparison: the Hodges–Lehmann shift and the Mann–Whitney U test.

    It asks nothing of the shape of the seed-to-seed variation, so it still describes two cells
    fairly when some of their runs stay stuck at chance and the others do not.

    Attributes:
        shift: the Hodges–Lehmann estimate of a - b, the median of all n_a·n_b differences
            a_i - b_j; NaN when a side is empty.
        ci_low: lower end of Moses' 95% interval of the shift: the (k+1)-th smallest of those
            differences, k being the U test's two-sided 5% critical value; -inf when the samples
            are too small for any 95% interval (two against two, say).
        ci_high: the (k+1)-th largest of the differences; inf when ci_low is -inf.
        u: Mann–Whitney U of a: the pairs with a_i > b_j, plus half the ties.
        p: two-sided p-value of the U test (scipy.stats.mannwhitneyu: exact for small samples
            without ties, else the normal approximation with the tie correction); NaN when a
            side is empty or every value is the same.
        n_a: values of a.
        n_b: values of b.
    """

    shift: float
    ci_low: float
    ci_high: float
    u: float
    p: float
    n_a: int
    n_b: int


# largest n_a·n_b whose U distribution is counted exactly; beyond it the normal approximation
# of the critical value is off by well under one order statistic
EXACT_U_PAIRS = 2500


def _u_null_counts(n_a: int, n_b: int) -> np.ndarray:
    """How many of the C(n_a + n_b, n_a) orderings give U = 0, 1, ..., n_a·n_b; [n_a·n_b + 1].

    Counted with the recursion on the largest value: it belongs to a (U rises by n_b) or to b.
    """
    rows = [np.ones(1)] * (n_b + 1)  # rows[j]: the counts with i values of a and j of b
    for i in range(1, n_a + 1):
        previous, rows = rows, [np.zeros(i * j + 1) for j in range(n_b + 1)]
        rows[0][0] = 1.0
        for j in range(1, n_b + 1):
            rows[j][j : j + previous[j].size] += previous[j]  # the largest value is a's
            rows[j][: rows[j - 1].size] += rows[j - 1]  # the largest value is b's
    return rows[n_b]


def _u_critical(n_a: int, n_b: int) -> int:
    """The largest k with P(U <= k) <= 2.5% when a and b come from one distribution; -1 if none."""
    alpha_half = (1.0 - CONFIDENCE) / 2
    pairs = n_a * n_b
    if pairs <= EXACT_U_PAIRS:
        counts = _u_null_counts(n_a, n_b)
        cdf = np.cumsum(counts) / counts.sum()
        return int(np.searchsorted(cdf, alpha_half, side="right")) - 1
    sd = math.sqrt(pairs * (n_a + n_b + 1) / 12.0)
    return math.floor(pairs / 2 - 0.5 + float(sps.norm.ppf(alpha_half)) * sd)


def rank_shift(a: Sequence[float], b: Sequence[float]) -> RankShift:
    """Compare two independent samples without assuming a distribution.

    Args:
        a: finite values of the first group, e.g. Tanh final accuracies; shape [n_a].
        b: finite values of the second group; shape [n_b].

    Returns:
        RankShift of a - b. With ties the interval is the one for untied data, as is usual.
    """
    sample_a, sample_b = _sample(a), _sample(b)
    n_a, n_b = sample_a.size, sample_b.size
    if n_a == 0 or n_b == 0:
        return RankShift(math.nan, math.nan, math.nan, math.nan, math.nan, n_a, n_b)
    differences = np.sort(np.subtract.outer(sample_a, sample_b).ravel())  # [n_a * n_b]
    k = _u_critical(n_a, n_b)
    low, high = (-math.inf, math.inf) if k < 0 else (differences[k], differences[-k - 1])
    u = float((differences > 0).sum() + 0.5 * (differences == 0).sum())
    if np.all(differences == 0):
        p = math.nan  # one value throughout: no ranks to compare
    else:
        p = float(sps.mannwhitneyu(sample_a, sample_b, alternative="two-sided").pvalue)
    return RankShift(float(np.median(differences)), float(low), float(high), u, p, n_a, n_b)


def holm(pvalues: Sequence[float]) -> np.ndarray:
    """Holm–Bonferroni adjusted p-values (step-down, controls the family-wise error rate).

    The k-th smallest of m p-values is multiplied by m - k + 1, the running maximum keeps the
    adjusted values in the same order as the raw ones, and values are capped at 1. NaN p-values
    are left out of the family (m counts finite ones only) and stay NaN.

    Args:
        pvalues: raw p-values; shape [m].

    Returns:
        Adjusted p-values in the input order; shape [m].
    """
    raw = np.asarray(pvalues, dtype=float).ravel()
    adjusted = np.full(raw.shape, np.nan)
    finite = np.flatnonzero(~np.isnan(raw))
    order = finite[np.argsort(raw[finite], kind="stable")]
    m = order.size
    scaled = raw[order] * (m - np.arange(m))
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted
