import numpy as np
import pytest

from actrange.analysis import analyse
from actrange.errors import UsageError
from actrange.verdict import verdict, verdict_markdown

NARROW, WIDE = (-1, 1), (-5, 5)


def around(mean, n=6, spread=0.3):
    """n accuracies spaced evenly within ±spread of mean (their mean is exactly mean)."""
    return list(mean + np.linspace(-spread, spread, n))


def study(arms, lr=0.01, statuses=None):
    """results.csv and epochs.csv rows; arms: (activation, (lo, hi)) -> accuracies per seed."""
    runs, epochs = [], []
    for (activation, (lo, hi)), accuracies in arms.items():
        for seed, accuracy in enumerate(accuracies):
            run_id = f"{activation}_{lo}_{hi}_{seed}"
            status = (statuses or {}).get((activation, (lo, hi), seed), "finished")
            runs.append(
                dict(
                    run_id=run_id,
                    activation=activation,
                    range_lo=float(lo),
                    range_hi=float(hi),
                    lr=lr,
                    seed=seed,
                    status=status,
                    test_accuracy=float(accuracy),
                )
            )
            for epoch, (loss, acc) in enumerate([(1.0, accuracy - 5), (0.5, accuracy)], 1):
                epochs.append(
                    dict(
                        run_id=run_id,
                        epoch=epoch,
                        train_loss=loss,
                        test_loss=loss,
                        test_accuracy=acc,
                    )
                )
    return runs, epochs


def four_arms(tanh_narrow, relu_narrow, tanh_wide, relu_wide):
    return {
        ("tanh", NARROW): tanh_narrow,
        ("relu", NARROW): relu_narrow,
        ("tanh", WIDE): tanh_wide,
        ("relu", WIDE): relu_wide,
    }


def judged(arms, **kwargs):
    analysis = analyse(*study(arms))
    return analysis, verdict(analysis, **kwargs)


def test_both_halves_supported_with_numbers_in_the_sentences():
    analysis, result = judged(four_arms(around(86.2), around(84.0), around(82.0), around(85.0)))
    narrow, wide = result.claims
    assert (narrow.outcome, narrow.range, narrow.half) == ("supported", (-1.0, 1.0), "narrow")
    assert (wide.outcome, wide.range, wide.half) == ("supported", (-5.0, 5.0), "wide")
    at_narrow = analysis.comparisons[0]
    tanh, relu, diff = at_narrow.a.accuracy, at_narrow.b.accuracy, at_narrow.comparison
    assert narrow.sentence.startswith(
        f"At [-1, 1], Tanh reached 86.2% (95% CI {tanh.ci_low:.1f}–{tanh.ci_high:.1f}, n=6) "
        f"and ReLU 84.0% ({relu.ci_low:.1f}–{relu.ci_high:.1f}, n=6): "
        f"Tanh is ahead by 2.2 points ({diff.ci_low:.1f}–{diff.ci_high:.1f}; "
    )
    assert f"Hedges' g = {diff.hedges_g:.1f}" in narrow.sentence
    assert "Holm-adjusted p < 0.0001" in narrow.sentence
    assert narrow.sentence.endswith("Supported.")
    assert narrow.check.startswith("Assuming nothing of the shape of the seed-to-seed variation")
    assert "Hodges–Lehmann shift Tanh − ReLU is +2.2 points (95% CI " in narrow.check
    assert "Mann–Whitney U = 36, Holm-adjusted p = 0.0043): it agrees." in narrow.check
    assert "ReLU is ahead by 3.0 points" in wide.sentence
    assert "+2.2 points at [-1, 1] and -3.0 points at [-5, 5]" in result.interaction
    assert "narrow minus wide: +5.2 points (95% CI " in result.interaction
    assert "the gap does change" in result.interaction
    assert result.note == ""


def test_the_rank_check_sees_through_a_stuck_run_that_welch_cannot():
    stuck = [83.9, 84.0, 84.1, 84.2, 84.3, 10.0]  # one ReLU seed never left chance
    _, result = judged(four_arms(around(86.2), stuck, around(82.0), around(85.0)))
    narrow = result.claims[0]
    assert narrow.outcome == "inconclusive"  # the verdict follows Welch's test
    # every one of the 36 pairs favours Tanh: exact p = 2 / C(12, 6), doubled by Holm
    assert "Holm-adjusted p = 0.0043" in narrow.check
    assert narrow.check.endswith("it finds a significant shift that Welch's test does not.")


def test_the_rank_check_cannot_confirm_three_seeds_a_side():
    # three against three can never reach p < 0.05 with ranks: the smallest p is 2 / C(6, 3)
    tight = {("tanh", NARROW): [86.0, 86.1, 86.2], ("relu", NARROW): [84.0, 84.1, 84.2]}
    _, result = judged(tight)
    narrow = result.claims[0]
    assert narrow.outcome == "supported"
    assert "is +2.0 points (too few seeds for a 95% CI;" in narrow.check
    assert "Mann–Whitney U = 9, Holm-adjusted p = 0.1)" in narrow.check
    assert narrow.check.endswith(
        "it cannot confirm Welch's test: with 3 and 3 seeds no rank test reaches p < 0.05."
    )


def test_the_rank_check_doubts_a_difference_of_means_that_the_ranks_do_not_bear_out():
    # Tanh's two lowest seeds sit among ReLU's, so the ranks interleave (Mann-Whitney p = 0.11),
    # while ReLU's 84.5 pulls its mean down far enough for Welch's test (p = 0.021)
    interleaved = {
        ("tanh", NARROW): [87.3, 85.9, 87.1, 85.8, 87.2, 86.6],
        ("relu", NARROW): [85.9, 84.5, 86.0, 86.1, 86.0, 85.3],
    }
    _, result = judged(interleaved)
    narrow = result.claims[0]
    assert narrow.outcome == "supported"
    assert narrow.check.endswith(
        "it does not confirm Welch's test, so the difference may rest on a few runs."
    )


def test_both_halves_contradicted_are_not_supported():
    _, result = judged(four_arms(around(83.0), around(86.0), around(86.0), around(83.0)))
    narrow, wide = result.claims
    assert (narrow.outcome, narrow.reason) == (
        "not supported",
        "ReLU is significantly ahead instead",
    )
    assert (wide.outcome, wide.reason) == ("not supported", "Tanh is significantly ahead instead")
    assert "ReLU is ahead by 3.0 points" in narrow.sentence
    assert "Tanh is ahead by 3.0 points" in wide.sentence


def test_two_noisy_seeds_are_inconclusive():
    _, result = judged(four_arms([80.0, 90.0], [84.0, 86.0], [86.0, 80.0], [79.0, 87.0]))
    for claim in result.claims:
        assert claim.outcome == "inconclusive"
        assert "includes zero" in claim.reason and "n=2 per side" in claim.reason
        assert "n=2)" in claim.sentence
        assert "the two are level (Tanh − ReLU = 0.0 points, 95% CI -" in claim.sentence
    assert "the data do not show that the gap changes" in result.interaction


def test_equivalence_within_margin_is_not_supported():
    arms = four_arms(*(around(m, n=10, spread=0.1) for m in (85.0, 85.05, 85.05, 85.0)))
    _, result = judged(arms)
    for claim in result.claims:
        assert claim.outcome == "not supported"
        assert "within ±0.5 points" in claim.reason
    # differences under one point are shown with two decimals
    assert "ReLU is ahead by 0.05 points" in result.claims[0].sentence
    assert "Tanh is ahead by 0.05 points" in result.claims[1].sentence
    assert "the gap does change with the range, though by less than 0.5 points." in (
        result.interaction
    )
    # a tighter margin no longer contains the interval
    _, strict = judged(arms, margin=0.01)
    assert [c.outcome for c in strict.claims] == ["inconclusive", "inconclusive"]


def test_significant_but_tiny_advantage_is_supported_with_a_caveat():
    _, result = judged(
        {("tanh", NARROW): around(85.2, 10, 0.05), ("relu", NARROW): around(85.0, 10, 0.05)}
    )
    claim = result.claims[0]
    assert claim.outcome == "supported"
    assert "within ±0.5 points" in claim.reason
    assert claim.sentence.endswith(f"Supported: {claim.reason}.")


def test_significant_only_before_holm_is_inconclusive():
    base = [81.0, 82.0, 83.0, 84.0, 85.0]
    ahead = [x + 2.6 for x in base]  # Welch t = 2.6 on 8 df: p about 0.03 each, 0.06 after Holm
    analysis, result = judged(four_arms(ahead, base, base, ahead))
    assert all(0.02 < c.comparison.p < 0.05 <= c.p_holm for c in analysis.comparisons)
    for claim in result.claims:
        assert claim.outcome == "inconclusive"
        assert "not after Holm adjustment" in claim.reason


@pytest.mark.parametrize(("rng", "judged_half"), [(NARROW, 0), (WIDE, 1)])
def test_single_range_judges_one_half_only(rng, judged_half):
    _, result = judged({("tanh", rng): around(86.0), ("relu", rng): around(84.0)})
    assert result.claims[judged_half].range == (float(rng[0]), float(rng[1]))
    other = result.claims[1 - judged_half]
    assert (other.outcome, other.range) == ("inconclusive", None)
    assert other.reason == "only one range was run"
    assert result.interaction.endswith("cannot be estimated: only one range was run.")


def test_a_single_seed_is_too_few():
    _, result = judged(four_arms([86.0], around(84.0), around(82.0), around(85.0)))
    narrow = result.claims[0]
    assert narrow.outcome == "inconclusive"
    assert "too few seeds" in narrow.reason
    assert "(95% CI undefined, n=1)" in narrow.sentence
    assert "95% CI undefined with a single seed" in result.interaction


def test_missing_activation_names_the_labels_present():
    _, result = judged({("gelu", NARROW): around(85.0), ("relu", NARROW): around(84.0)})
    for claim in result.claims:
        assert claim.outcome == "inconclusive"
        assert claim.reason == "no analysed runs are labelled 'tanh' (present: gelu, relu)"
    assert "cannot be estimated: no analysed runs are labelled 'tanh'" in result.interaction


def test_runs_sentence_counts_diverged_stuck_and_unanalysed_runs():
    arms = four_arms(around(86.0), around(84.0), around(82.0), [85.0, 86.0, 10.0, 10.0, 84.0])
    statuses = {("relu", WIDE, 2): "diverged", ("relu", WIDE, 4): "failed"}
    analysis = analyse(*study(arms, statuses=statuses))
    result = verdict(analysis)
    assert result.runs == (
        "Of 22 analysed runs, 1 diverged (ReLU at [-5, 5], lr 0.01: 1) and 1 finished stuck at "
        "or below 15% accuracy (ReLU at [-5, 5], lr 0.01: 1); they enter the accuracy means at "
        "their final accuracy. 1 more run was not analysed (failed: 1)."
    )
    assert "n=4, 1 diverged, 1 stuck)" in result.claims[1].sentence


def test_clean_runs_sentence():
    _, result = judged(four_arms(around(86.2), around(84.0), around(82.0), around(85.0)))
    assert result.runs.startswith("All 24 analysed runs trained: none diverged")


def test_learning_rate_selection_is_noted():
    runs, epochs = study({("tanh", NARROW): around(86.0), ("relu", NARROW): around(84.0)})
    slow_runs, slow_epochs = study(
        {("tanh", NARROW): around(70.0), ("relu", NARROW): around(60.0)}, lr=0.001
    )
    for row in slow_runs + slow_epochs:
        row["run_id"] += "_slow"
    result = verdict(analyse(runs + slow_runs, epochs + slow_epochs))
    assert "best learning rate" in result.note
    assert "Tanh (lr 0.01) reached 86.0%" in result.claims[0].sentence


def test_markdown_has_a_headline_per_claim_then_the_sentences():
    _, result = judged(four_arms(around(86.2), around(84.0), around(82.0), around(85.0)))
    text = verdict_markdown(result)
    assert (
        "**1. Tanh does better than ReLU when the input range is narrow, near zero: supported** "
        "(judged at [-1, 1])"
    ) in text
    assert "**2. ReLU does better than Tanh when the input range is wide: supported**" in text
    for sentence in (*(c.sentence for c in result.claims), result.interaction, result.runs):
        assert sentence in text
    for claim in result.claims:
        assert f"*Rank check.* {claim.check}" in text
        assert text.index(claim.sentence) < text.index(claim.check)
    assert text.index("**1.") < text.index("**2.") < text.index("**Interaction.**")


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"alpha": 0.0}, "alpha"), ({"margin": -1}, "margin")]
)
def test_bad_thresholds_are_usage_errors(kwargs, message):
    analysis = analyse(*study({("tanh", NARROW): around(86.0), ("relu", NARROW): around(84.0)}))
    with pytest.raises(UsageError, match=message):
        verdict(analysis, **kwargs)


def test_ranges_of_equal_width_judge_one_half_only():
    arms = {
        (act, rng): around(m)
        for act, rng, m in [
            ("tanh", (-1, 1), 86.0),
            ("relu", (-1, 1), 84.0),
            ("tanh", (0, 2), 85.0),
            ("relu", (0, 2), 84.5),
        ]
    }
    _, result = judged(arms)
    assert result.claims[0].range == (-1.0, 1.0)
    assert result.claims[1].reason == "only one range width was run"
