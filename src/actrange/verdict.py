"""The study's hypothesis, judged against an Analysis and put into sentences.

The hypothesis has two halves: (1) a (Tanh) does better than b (ReLU) when the input range is
narrow and near zero, (2) b does better than a when the range is wide. "Better" means a higher
mean final test accuracy over seeds.
"""

import math
from dataclasses import dataclass

from actrange.analysis import Analysis, CellSummary, Range, RangeComparison
from actrange.errors import UsageError
from actrange.wording import display_name, format_range

OUTCOMES: tuple[str, ...] = ("supported", "not supported", "inconclusive")
# the hypothesis' own examples; a lone range is judged for the half whose example width is nearer
NARROW_EXAMPLE: Range = (-1.0, 1.0)
WIDE_EXAMPLE: Range = (-5.0, 5.0)


@dataclass(frozen=True)
class Claim:
    """One half of the hypothesis and how the data judge it.

    Attributes:
        half: "narrow" or "wide".
        hypothesis: the half in words.
        range: the pixel range it was judged at, or None when it could not be judged.
        outcome: one of OUTCOMES.
        reason: why, in a few words ("" when supported without caveat).
        sentence: the plain-language result with the numbers behind it.
        check: the same comparison without assuming normal seed-to-seed variation, and whether
            it agrees with the verdict's Welch test ("" when it could not be made).
    """

    half: str
    hypothesis: str
    range: Range | None
    outcome: str
    reason: str
    sentence: str
    check: str = ""


@dataclass(frozen=True)
class Verdict:
    """Both halves of the hypothesis plus the context a reader needs.

    Attributes:
        claims: (narrow half, wide half).
        interaction: a sentence on whether the a - b gap changes between narrow and wide range.
        runs: a sentence counting diverged, stuck and unanalysed runs.
        note: a caveat on learning-rate selection, or "".
        alpha: significance level used.
        margin: equivalence margin in percentage points.
    """

    claims: tuple[Claim, Claim]
    interaction: str
    runs: str
    note: str
    alpha: float
    margin: float


def _digits(*values: float) -> int:
    """Decimals for differences: two when every finite value is under one point, else one."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    return 2 if finite and max(finite) < 1 else 1


def _num(x: float, signed: bool = False, digits: int = 1) -> str:
    """x with the given decimals, without a "-0.0"."""
    x = 0.0 if round(x, digits) == 0 else x
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _interval(lo: float, hi: float, digits: int = 1) -> str:
    """An interval as "1.3–3.1", or "-0.4 to 1.2" when a dash would read as a minus."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "undefined"
    joiner = " to " if lo < 0 else "–"
    return f"{_num(lo, digits=digits)}{joiner}{_num(hi, digits=digits)}"


def _p(p: float) -> str:
    """A p-value as "= 0.0004" or "< 0.0001"."""
    if math.isnan(p):
        return "undefined"
    return "< 0.0001" if p < 1e-4 else f"= {p:.2g}"


def _arm(cell: CellSummary, lr_selected: bool, first: bool) -> str:
    """One side of a comparison in words.

    The first side reads "Tanh reached 86.2% (95% CI 85.9–86.5, n=10)", the second
    "ReLU 84.0% (83.1–84.9, n=10)"; diverged and stuck runs are counted after n.
    """
    name = display_name(cell.activation) + (f" (lr {cell.lr:g})" if lr_selected else "")
    extras = "".join(
        f", {count} {word}"
        for count, word in ((cell.n_diverged, "diverged"), (cell.n_stuck, "stuck"))
        if count
    )
    acc = cell.accuracy
    if acc.n == 0:
        return f"{name} has no finite final accuracy ({cell.n} runs{extras})"
    verb, prefix = (" reached", "95% CI ") if first else ("", "")
    ci = _interval(acc.ci_low, acc.ci_high)
    return f"{name}{verb} {_num(acc.mean)}% ({prefix}{ci}, n={acc.n}{extras})"


def _difference(rc: RangeComparison) -> str:
    """The difference told from the leader's side: "Tanh is ahead by 2.2 points (1.3–3.1)"."""
    c = rc.comparison
    if math.isnan(c.diff):
        return "no difference can be computed"
    digits = _digits(c.diff, c.ci_low, c.ci_high)
    level = round(c.diff, digits) == 0
    sign = -1.0 if c.diff < 0 and not level else 1.0
    if not math.isfinite(c.ci_low):
        test = "95% CI undefined with a single seed; no test possible"
    else:
        lo, hi = sorted((sign * c.ci_low, sign * c.ci_high))
        g = "undefined" if math.isnan(c.hedges_g) else f"{sign * c.hedges_g:.1f}"
        t = "Welch t" if math.isnan(c.df) else f"Welch t({c.df:.1f}) = {sign * c.t:.1f}"
        ci = ("95% CI " if level else "") + _interval(lo, hi, digits)
        test = f"{ci}; {t}, Holm-adjusted p {_p(rc.p_holm)}, Hedges' g = {g}"
    if level:
        names = f"{display_name(rc.a.activation)} − {display_name(rc.b.activation)}"
        return f"the two are level ({names} = {_num(c.diff, digits=digits)} points, {test})"
    leader = rc.a if c.diff > 0 else rc.b
    amount = _num(abs(c.diff), digits=digits)
    return f"{display_name(leader.activation)} is ahead by {amount} points ({test})"


def _judge(rc: RangeComparison, direction: float, alpha: float, margin: float) -> tuple[str, str]:
    """Apply the decision rule of verdict() to one comparison; return (outcome, reason)."""
    c = rc.comparison
    significant = rc.p_holm < alpha
    within = -margin <= c.ci_low and c.ci_high <= margin
    behind = display_name((rc.b if direction > 0 else rc.a).activation)
    if significant and direction * c.diff > 0:
        caveat = f"the whole 95% CI lies within ±{margin:g} points, so the gap is small"
        return "supported", caveat if within else ""
    if significant and direction * c.diff < 0:
        return "not supported", f"{behind} is significantly ahead instead"
    if within:
        return "not supported", (
            f"the whole 95% CI of the difference lies within ±{margin:g} points, "
            "no difference worth the name"
        )
    if math.isnan(c.diff):
        return "inconclusive", "no finite accuracies to compare"
    if min(rc.a.accuracy.n, rc.b.accuracy.n) < 2:
        return "inconclusive", "too few seeds (n=1 on one side) to estimate the spread"
    if c.ci_low <= 0 <= c.ci_high:
        seeds = min(rc.a.accuracy.n, rc.b.accuracy.n)
        return "inconclusive", (
            f"the 95% CI of the difference includes zero and reaches beyond ±{margin:g} points "
            f"(n={seeds} per side; more seeds would narrow it)"
        )
    return "inconclusive", "the difference is significant on its own but not after Holm adjustment"


def _rank_check(rc: RangeComparison, alpha: float) -> str:
    """The distribution-free check of one comparison, and whether it agrees with Welch's test."""
    rank = rc.rank
    if math.isnan(rank.shift):
        return ""
    digits = _digits(rank.shift, rank.ci_low, rank.ci_high)
    if math.isfinite(rank.ci_low):
        interval = f"95% CI {_interval(rank.ci_low, rank.ci_high, digits)}"
    else:
        interval = "too few seeds for a 95% CI"
    welch_significant, rank_significant = rc.p_holm < alpha, rc.rank_p_holm < alpha
    if welch_significant and rank_significant:
        same_way = (rank.shift > 0) == (rc.comparison.diff > 0)
        agreement = "it agrees" if same_way else "it points the other way"
    elif not (welch_significant or rank_significant):
        agreement = "it agrees; neither test finds a significant difference"
    elif welch_significant and 2 / math.comb(rank.n_a + rank.n_b, rank.n_a) >= alpha:
        # the smallest two-sided p any ordering can give, before Holm's adjustment
        seeds = f"{rank.n_a} and {rank.n_b} seeds"
        agreement = (
            f"it cannot confirm Welch's test: with {seeds} no rank test reaches p < {alpha:g}"
        )
    elif welch_significant:
        agreement = "it does not confirm Welch's test, so the difference may rest on a few runs"
    else:
        agreement = "it finds a significant shift that Welch's test does not"
    names = f"{display_name(rc.a.activation)} − {display_name(rc.b.activation)}"
    return (
        f"Assuming nothing of the shape of the seed-to-seed variation, the Hodges–Lehmann "
        f"shift {names} is {_num(rank.shift, True, digits)} points ({interval}; "
        f"Mann–Whitney U = {rank.u:g}, Holm-adjusted p {_p(rc.rank_p_holm)}): {agreement}."
    )


def _claim(
    half: str, hypothesis: str, rc: RangeComparison, analysis: Analysis, alpha: float, margin: float
) -> Claim:
    """Judge one half at one range and write its sentence."""
    direction = 1.0 if half == "narrow" else -1.0
    outcome, reason = _judge(rc, direction, alpha, margin)
    first = _arm(rc.a, analysis.lr_selected, first=True)
    second = _arm(rc.b, analysis.lr_selected, first=False)
    tail = outcome.capitalize() + (f": {reason}." if reason else ".")
    sentence = f"At {format_range(*rc.range)}, {first} and {second}: {_difference(rc)}. {tail}"
    return Claim(half, hypothesis, rc.range, outcome, reason, sentence, _rank_check(rc, alpha))


def _unjudged(half: str, hypothesis: str, reason: str) -> Claim:
    """A half that could not be judged at any range."""
    return Claim(half, hypothesis, None, "inconclusive", reason, f"Inconclusive: {reason}.")


def _missing_reason(analysis: Analysis) -> str:
    """Why no range compares a with b."""
    present = ", ".join(analysis.labels) or "none"
    for label in (analysis.a, analysis.b):
        if label not in analysis.labels:
            return f"no analysed runs are labelled {label!r} (present: {present})"
    names = f"{display_name(analysis.a)} and {display_name(analysis.b)}"
    return f"no pixel range has analysed runs of both {names}"


def _pick(analysis: Analysis) -> tuple[RangeComparison | None, RangeComparison | None, str]:
    """The comparisons to judge the narrow and wide half at, and why one is missing."""
    comparisons = analysis.comparisons
    if not comparisons:
        return None, None, _missing_reason(analysis)
    widths = [rc.range_hi - rc.range_lo for rc in comparisons]
    # comparisons are sorted narrowest first, nearest zero first within a width
    wide = comparisons[widths.index(max(widths))]
    if max(widths) > min(widths):
        return comparisons[0], wide, ""
    one = "only one range was run" if len(comparisons) == 1 else "only one range width was run"
    cut = math.sqrt(_width(NARROW_EXAMPLE) * _width(WIDE_EXAMPLE))
    lone = comparisons[0]
    if widths[0] <= cut:
        return lone, None, one
    return None, lone, one


def _width(rng: Range) -> float:
    """hi - lo."""
    return rng[1] - rng[0]


def _interaction_sentence(
    analysis: Analysis,
    narrow: RangeComparison | None,
    wide: RangeComparison | None,
    alpha: float,
    margin: float,
    missing: str,
) -> str:
    """Whether the a - b gap differs between the judged narrow and wide range."""
    if narrow is None or wide is None:
        return f"The change of the gap between ranges cannot be estimated: {missing}."
    pair = (narrow.range, wide.range)
    inter = next(i for i in analysis.interactions if (i.first, i.second) == pair)
    c = inter.comparison
    gap = f"{display_name(analysis.a)} − {display_name(analysis.b)} gap"
    digits = _digits(c.diff, c.ci_low, c.ci_high, narrow.comparison.diff, wide.comparison.diff)
    if not math.isfinite(c.ci_low):
        test = "95% CI undefined with a single seed; no test possible"
    else:
        family = len(analysis.interactions)
        p_name = f"Holm-adjusted p over {family} pairs of ranges" if family > 1 else "p"
        test = (
            f"95% CI {_interval(c.ci_low, c.ci_high, digits)}; "
            f"Welch–Satterthwaite t({c.df:.1f}) = {c.t:.1f}, {p_name} {_p(inter.p_holm)}"
        )
    within = -margin <= c.ci_low and c.ci_high <= margin
    if inter.p_holm < alpha:
        change = "the gap does change with the range" + (
            f", though by less than {margin:g} points." if within else "."
        )
    elif within:
        change = f"the gap changes by less than {margin:g} points between the ranges."
    else:
        change = "the data do not show that the gap changes with the range."
    return (
        f"The {gap} is {_num(narrow.comparison.diff, True, digits)} points at "
        f"{format_range(*narrow.range)} and {_num(wide.comparison.diff, True, digits)} points at "
        f"{format_range(*wide.range)}; narrow minus wide: {_num(c.diff, True, digits)} points "
        f"({test}): {change}"
    )


def _cell_name(cell: CellSummary) -> str:
    """A cell in words: "ReLU at [-5, 5], lr 0.1"."""
    return f"{display_name(cell.activation)} at {format_range(*cell.range)}, lr {cell.lr:g}"


def _runs_sentence(analysis: Analysis) -> str:
    """Count diverged, stuck and unanalysed runs, naming the cells they came from."""
    stuck_at = f"at or below {analysis.stuck_accuracy:g}% accuracy"
    kinds = []
    if analysis.n_diverged:
        where = "; ".join(
            f"{_cell_name(c)}: {c.n_diverged}" for c in analysis.cells if c.n_diverged
        )
        kinds.append(f"{analysis.n_diverged} diverged ({where})")
    if analysis.n_stuck:
        where = "; ".join(f"{_cell_name(c)}: {c.n_stuck}" for c in analysis.cells if c.n_stuck)
        kinds.append(f"{analysis.n_stuck} finished stuck {stuck_at} ({where})")
    if kinds:
        single = analysis.n_diverged + analysis.n_stuck == 1
        enter = (
            "it enters the accuracy means at its"
            if single
            else "they enter the accuracy means at their"
        )
        text = f"Of {analysis.n_runs} analysed runs, {' and '.join(kinds)}; {enter} final accuracy."
    elif analysis.n_runs:
        text = f"All {analysis.n_runs} analysed runs trained: none diverged or finished {stuck_at}."
    else:
        text = "No run finished or diverged, so none was analysed."
    excluded = sum(analysis.excluded.values())
    if excluded:
        by_status = ", ".join(f"{s}: {k}" for s, k in sorted(analysis.excluded.items()))
        runs = "run was" if excluded == 1 else "runs were"
        text += f" {excluded} more {runs} not analysed ({by_status})."
    return text


def verdict(analysis: Analysis, *, alpha: float = 0.05, margin: float = 0.5) -> Verdict:
    """Judge both halves of the hypothesis on the final test accuracies.

    The narrow half is judged at the compared range of smallest width (hi - lo), the wide half
    at the largest width; ties go to the range centred nearest zero. When only one width was
    run, it is judged for the half whose example ([-1, 1] or [-5, 5]) is nearer in log width,
    and the other half is inconclusive.

    Rule, on d = mean(a) - mean(b) with its 95% Welch–Satterthwaite CI and Holm-adjusted p:
    supported when d points the hypothesised way (d > 0 for the narrow half, d < 0 for the
    wide one) and p < alpha; not supported when d points significantly (p < alpha) the other
    way, or when the whole CI lies within ±margin points (equivalent: no difference worth the
    name); inconclusive otherwise, with the reason (too few seeds, CI straddles zero, or
    significant only before Holm adjustment). A supported half whose CI also lies within
    ±margin stays supported, with that caveat in its sentence.

    Args:
        analysis: from analysis.analyse().
        alpha: family-wise significance level, in (0, 1).
        margin: equivalence margin in percentage points, ≥ 0.

    Returns:
        Verdict with one Claim per half and sentences on interaction and run counts.
    """
    if not 0.0 < alpha < 1.0:
        raise UsageError(f"alpha is {alpha}; it must lie strictly between 0 and 1")
    if not margin >= 0.0:
        raise UsageError(f"margin is {margin}; it must be zero or more percentage points")
    name_a, name_b = display_name(analysis.a), display_name(analysis.b)
    hypotheses = {
        "narrow": f"{name_a} does better than {name_b} when the input range is narrow, near zero",
        "wide": f"{name_b} does better than {name_a} when the input range is wide",
    }
    narrow, wide, missing = _pick(analysis)
    claims = tuple(
        _claim(half, hypotheses[half], rc, analysis, alpha, margin)
        if rc is not None
        else _unjudged(half, hypotheses[half], missing)
        for half, rc in (("narrow", narrow), ("wide", wide))
    )
    note = ""
    if analysis.lr_selected:
        note = (
            "Each activation and range is shown at its best learning rate, chosen on these same "
            "runs; this flatters every arm a little, so read the intervals as optimistic."
        )
    return Verdict(
        claims=claims,
        interaction=_interaction_sentence(analysis, narrow, wide, alpha, margin, missing),
        runs=_runs_sentence(analysis),
        note=note,
        alpha=alpha,
        margin=margin,
    )


def verdict_markdown(v: Verdict) -> str:
    """The verdict as a short Markdown block: a headline per claim, then the sentences."""
    parts = []
    for number, claim in enumerate(v.claims, start=1):
        where = f" (judged at {format_range(*claim.range)})" if claim.range else ""
        parts.append(f"**{number}. {claim.hypothesis}: {claim.outcome}**{where}")
        parts.append(claim.sentence)
        if claim.check:
            parts.append(f"*Rank check.* {claim.check}")
    parts.append(f"**Interaction.** {v.interaction}")
    parts.append(f"**Runs.** {v.runs}")
    if v.note:
        parts.append(f"*Note.* {v.note}")
    return "\n\n".join(parts) + "\n"
