import math

import numpy as np
import pytest

from actrange.analysis import analyse
from actrange.errors import UsageError
from actrange.stats import holm, welch

EPOCHS = 3


def study(cells, statuses=None, curves=None):
    """Rows for results.csv and epochs.csv.

    cells: (activation, lo, hi, lr) -> final accuracies, one per seed.
    statuses: (activation, lo, hi, lr, seed) -> status other than "finished".
    curves: same key -> (train_losses, test_accuracies) replacing the default curve.
    """
    runs, epochs = [], []
    for (activation, lo, hi, lr), accuracies in cells.items():
        for seed, accuracy in enumerate(accuracies):
            key = (activation, lo, hi, lr, seed)
            run_id = f"{activation}_{lo:g}_{hi:g}_{lr:g}_{seed}"
            status = (statuses or {}).get(key, "finished")
            runs.append(
                dict(
                    run_id=run_id,
                    activation=activation,
                    range_lo=float(lo),
                    range_hi=float(hi),
                    lr=lr,
                    seed=seed,
                    status=status,
                    test_accuracy=accuracy,
                    epochs=EPOCHS,
                    momentum=0.5,
                )
            )
            losses, accs = (curves or {}).get(
                key, ([2.0, 1.0, 0.5], [accuracy / 2, accuracy - 1, accuracy])
            )
            for epoch, (loss, acc) in enumerate(zip(losses, accs, strict=True), start=1):
                epochs.append(
                    dict(
                        run_id=run_id,
                        epoch=epoch,
                        activation=activation,
                        train_loss=loss,
                        test_loss=loss + 0.1,
                        test_accuracy=acc,
                        seconds=1.0,
                    )
                )
    return runs, epochs


def cell(analysis, activation, lo, hi, lr=0.01):
    [found] = [
        c for c in analysis.cells if (c.activation, c.range, c.lr) == (activation, (lo, hi), lr)
    ]
    return found


def test_diverged_stuck_and_other_statuses_are_counted():
    runs, epochs = study(
        {("relu", -1, 1, 0.01): [84.0, 10.0, 10.0, 86.0, 50.0]},
        statuses={("relu", -1, 1, 0.01, 1): "diverged", ("relu", -1, 1, 0.01, 4): "failed"},
        curves={("relu", -1, 1, 0.01, 1): ([2.3, math.nan, math.nan], [10.0, 10.0, 10.0])},
    )
    analysis = analyse(runs, epochs)
    relu = cell(analysis, "relu", -1.0, 1.0)
    assert (relu.n, relu.n_diverged, relu.n_stuck) == (4, 1, 1)
    assert relu.seeds == (0, 1, 2, 3)
    # the diverged and the stuck run enter the accuracy mean at 10%
    assert relu.accuracy.mean == pytest.approx((84 + 10 + 10 + 86) / 4)
    assert relu.accuracy.n == 4
    # the diverged run has no loss area; the others: trapezoids 1.5 + 0.75 over 2 epochs
    assert relu.loss_auc.n == 3
    assert relu.loss_auc.mean == pytest.approx(((2.0 + 1.0) / 2 + (1.0 + 0.5) / 2) / 2)
    assert analysis.excluded == {"failed": 1}
    assert (analysis.n_runs, analysis.n_diverged, analysis.n_stuck) == (4, 1, 1)


def test_epochs_to_threshold_summarises_only_runs_that_reached_it():
    key = ("tanh", -1, 1, 0.01)
    runs, epochs = study(
        {key: [85.0, 85.0, 60.0]},
        curves={
            (*key, 0): ([2.0, 1.0, 0.5], [70.0, 81.0, 85.0]),
            (*key, 1): ([2.0, 1.0, 0.5], [70.0, 75.0, 85.0]),
            (*key, 2): ([2.0, 1.0, 0.5], [40.0, 50.0, 60.0]),
        },
    )
    tanh = cell(analyse(runs, epochs), "tanh", -1.0, 1.0)
    assert tanh.reached_threshold == 2
    assert tanh.epochs_to_threshold.n == 2
    assert tanh.epochs_to_threshold.mean == pytest.approx(2.5)


def test_best_learning_rate_is_selected_and_flagged():
    runs, epochs = study(
        {
            ("tanh", -1, 1, 0.01): [80.0, 81.0, 82.0],
            ("tanh", -1, 1, 0.1): [85.0, 86.0, 87.0],
            ("relu", -1, 1, 0.01): [84.0, 85.0, 86.0],
            ("relu", -1, 1, 0.1): [10.0, 10.0, 10.0],
        }
    )
    analysis = analyse(runs, epochs)
    assert analysis.lr_selected
    assert analysis.selected_lr == {("tanh", -1.0, 1.0): 0.1, ("relu", -1.0, 1.0): 0.01}
    [comparison] = analysis.comparisons
    assert (comparison.a.lr, comparison.b.lr) == (0.1, 0.01)
    assert comparison.comparison.diff == pytest.approx(1.0)
    assert len(analysis.cells) == 4


def test_single_learning_rate_is_not_flagged():
    runs, epochs = study({("tanh", -1, 1, 0.01): [85.0, 86.0], ("relu", -1, 1, 0.01): [84.0, 83.0]})
    assert not analyse(runs, epochs).lr_selected


def test_ranges_are_compared_with_holm_and_every_pair_interacts():
    accuracies = {
        (-1, 1): ([86.0, 86.5, 87.0], [84.0, 84.4, 85.1]),
        (-5, 5): ([82.0, 82.5, 81.0], [85.0, 85.3, 86.1]),
        (-2, 2): ([85.0, 85.2, 84.0], [85.0, 84.4, 85.6]),
    }
    cells = {}
    for (lo, hi), (tanh, relu) in accuracies.items():
        cells[("tanh", lo, hi, 0.01)] = tanh
        cells[("relu", lo, hi, 0.01)] = relu
    analysis = analyse(*study(cells))
    assert [c.range for c in analysis.comparisons] == [(-1.0, 1.0), (-2.0, 2.0), (-5.0, 5.0)]
    raw = [
        welch(*accuracies[(int(lo), int(hi))]) for lo, hi in (c.range for c in analysis.comparisons)
    ]
    assert [c.comparison.p for c in analysis.comparisons] == pytest.approx([r.p for r in raw])
    assert [c.p_holm for c in analysis.comparisons] == pytest.approx(holm([r.p for r in raw]))
    pairs = [(i.first, i.second) for i in analysis.interactions]
    assert pairs == [
        ((-1.0, 1.0), (-2.0, 2.0)),
        ((-1.0, 1.0), (-5.0, 5.0)),
        ((-2.0, 2.0), (-5.0, 5.0)),
    ]
    narrow_wide = analysis.interactions[1].comparison
    assert narrow_wide.diff == pytest.approx(raw[0].diff - raw[2].diff)


def test_range_without_both_activations_is_summarised_not_compared():
    runs, epochs = study({("tanh", -1, 1, 0.01): [85.0, 86.0], ("gelu", -1, 1, 0.01): [84.0, 83.0]})
    analysis = analyse(runs, epochs)
    assert analysis.comparisons == () and analysis.interactions == ()
    assert analysis.labels == ("gelu", "tanh")
    assert np.isfinite(cell(analysis, "gelu", -1.0, 1.0).accuracy.mean)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda runs, epochs: runs[0].pop("lr"), "lacks column"),
        (lambda runs, epochs: runs[1].update(run_id=runs[0]["run_id"]), "run_id appears twice"),
        (lambda runs, epochs: runs[1].update(seed=0), "seed twice"),
        (lambda runs, epochs: runs[1].update(epochs=20), "different epochs"),
        (lambda runs, epochs: runs[0].update(test_accuracy="high"), "must be a number"),
        (lambda runs, epochs: epochs[0].update(epoch=0), "epoch that is not"),
        (lambda runs, epochs: epochs[1].update(epoch=1), "epoch twice"),
        (lambda runs, epochs: epochs[0].pop("train_loss"), "lacks column"),
    ],
)
def test_bad_tables_raise_usage_errors(change, message):
    runs, epochs = study({("tanh", -1, 1, 0.01): [85.0, 86.0], ("relu", -1, 1, 0.01): [84.0, 83.0]})
    change(runs, epochs)
    with pytest.raises(UsageError, match=message):
        analyse(runs, epochs)


def test_comparing_an_activation_with_itself_is_an_error():
    with pytest.raises(UsageError, match="with itself"):
        analyse(*study({("relu", -1, 1, 0.01): [84.0, 83.0]}), a="relu", b="relu")
