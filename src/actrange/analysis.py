"""From the run and epoch tables to every number the report needs.

A cell is (activation label, range_lo, range_hi, lr); its seeds are replicates. Runs that
finished or diverged are analysed: a diverged run enters the accuracy summary at its recorded
final accuracy (typically chance, 10%) and is counted, never dropped. Runs with any other status
(pending, running, failed) are counted by status and not analysed.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from actrange.errors import UsageError
from actrange.stats import (
    Comparison,
    RankShift,
    Summary,
    epochs_to_reach,
    holm,
    interaction,
    loss_auc,
    rank_shift,
    summarise,
    welch,
)

ANALYSED_STATUSES: tuple[str, ...] = ("finished", "diverged")
CURVE_COLUMNS: tuple[str, ...] = ("train_loss", "test_loss", "test_accuracy")
_RUN_NEEDS = ("run_id", "activation", "range_lo", "range_hi", "lr", "seed", "status")
_EPOCH_NEEDS = ("run_id", "epoch", *CURVE_COLUMNS)
# settings that must not vary among a cell's seeds, or they would not be replicates
_FIXED_IN_CELL = ("momentum", "batch_size", "epochs", "train_subset")

Range = tuple[float, float]
CellKey = tuple[str, float, float, float]


@dataclass(frozen=True, eq=False)
class CellSummary:
    """Everything about one cell's replicated runs.

    Attributes:
        activation, range_lo, range_hi, lr: the cell.
        n: analysed runs (finished or diverged).
        n_diverged: runs whose train loss stopped being finite.
        n_stuck: finished runs whose final accuracy is ≤ the stuck threshold (near chance).
        accuracy: final test accuracy (percent) over the runs with a finite accuracy,
            diverged and stuck runs included.
        loss_auc: mean height of the train-loss curve (stats.loss_auc) over runs whose whole
            curve is finite, so diverged runs are left out here (they are counted above).
        epochs_to_threshold: first epoch reaching the accuracy threshold, over the runs
            that reached it only.
        reached_threshold: how many of the n runs reached it (runs without epoch rows count as
            not reaching).
        seeds: the runs' seeds, ascending.
        final_accuracies: the runs' final test accuracies in seed order (NaN kept).
    """

    activation: str
    range_lo: float
    range_hi: float
    lr: float
    n: int
    n_diverged: int
    n_stuck: int
    accuracy: Summary
    loss_auc: Summary
    epochs_to_threshold: Summary
    reached_threshold: int
    seeds: tuple[int, ...]
    final_accuracies: tuple[float, ...]

    @property
    def range(self) -> Range:
        """The pixel range (lo, hi)."""
        return (self.range_lo, self.range_hi)


@dataclass(frozen=True, eq=False)
class RangeComparison:
    """Activation a against b at one pixel range: comparison.diff = mean(a) - mean(b).

    p_holm is the comparison's p-value Holm-adjusted across all compared ranges; rank is the
    same comparison without assuming a distribution, its p Holm-adjusted as rank_p_holm.
    """

    range_lo: float
    range_hi: float
    a: CellSummary
    b: CellSummary
    comparison: Comparison
    p_holm: float
    rank: RankShift
    rank_p_holm: float

    @property
    def range(self) -> Range:
        """The pixel range (lo, hi)."""
        return (self.range_lo, self.range_hi)


@dataclass(frozen=True, eq=False)
class RangeInteraction:
    """How the a - b gap changes between two ranges: gap at `first` minus gap at `second`.

    `first` is the narrower range of the pair. p_holm is Holm-adjusted across all pairs.
    """

    first: Range
    second: Range
    comparison: Comparison
    p_holm: float


@dataclass(frozen=True, eq=False)
class Analysis:
    """The analysed study.

    Attributes:
        cells: every cell, sorted by (activation, range_lo, range_hi, lr).
        a, b: the activations compared (diff = a - b).
        accuracy_threshold: accuracy (percent) used for epochs_to_threshold.
        stuck_accuracy: final accuracy (percent) at or below which a finished run is stuck.
        lr_selected: True when some (activation, range) had several learning rates and the
            comparisons use the best one; chosen on the same runs, this flatters each arm.
        selected_lr: (activation, range_lo, range_hi) -> learning rate used in comparisons.
        comparisons: one per range holding both a and b, sorted narrowest first.
        interactions: one per pair of compared ranges.
        labels: the activation labels present among analysed runs, sorted.
        excluded: status -> number of runs not analysed because of that status.
    """

    cells: tuple[CellSummary, ...]
    a: str
    b: str
    accuracy_threshold: float
    stuck_accuracy: float
    lr_selected: bool
    selected_lr: dict[tuple[str, float, float], float]
    comparisons: tuple[RangeComparison, ...]
    interactions: tuple[RangeInteraction, ...]
    labels: tuple[str, ...]
    excluded: dict[str, int]

    @property
    def n_runs(self) -> int:
        """Analysed runs."""
        return sum(cell.n for cell in self.cells)

    @property
    def n_diverged(self) -> int:
        """Diverged runs over all cells."""
        return sum(cell.n_diverged for cell in self.cells)

    @property
    def n_stuck(self) -> int:
        """Stuck runs over all cells."""
        return sum(cell.n_stuck for cell in self.cells)


def range_order(rng: Range) -> tuple[float, float, float]:
    """Sort key for ranges: width first, then distance of the centre from zero, then lo."""
    lo, hi = rng
    return (hi - lo, abs(lo + hi) / 2, lo)


def _number(row: Mapping[str, Any], column: str, table: str) -> float:
    """Read a numeric field; a value that is not a number is a UsageError."""
    try:
        return float(row[column])
    except (TypeError, ValueError):
        raise UsageError(
            f"{table}: column {column!r} of run {row.get('run_id')!r} is {row[column]!r}; "
            "it must be a number"
        ) from None


def _check_columns(rows: Sequence[Mapping[str, Any]], needed: Iterable[str], table: str) -> None:
    """Raise UsageError when a row lacks a needed column."""
    for row in rows:
        missing = [c for c in needed if c not in row]
        if missing:
            raise UsageError(f"{table}: a row lacks column(s) {', '.join(missing)}")


def _curves_by_run(
    epochs: Sequence[Mapping[str, Any]], run_ids: set[str]
) -> dict[str, dict[str, np.ndarray]]:
    """Group epoch rows of the given runs into arrays sorted by epoch, keyed by column."""
    rows_by_run: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for row in epochs:
        if str(row["run_id"]) in run_ids:
            rows_by_run[str(row["run_id"])].append(row)
    curves = {}
    for run_id, rows in rows_by_run.items():
        epoch = np.array([_number(r, "epoch", "epochs.csv") for r in rows])
        if np.any(epoch < 1) or np.any(epoch != np.round(epoch)):
            raise UsageError(f"epochs.csv: run {run_id!r} has an epoch that is not 1, 2, 3, ...")
        if np.unique(epoch).size != epoch.size:
            raise UsageError(f"epochs.csv: run {run_id!r} has an epoch twice; one row per epoch")
        order = np.argsort(epoch)
        curve = {"epoch": epoch[order].astype(int)}
        for column in CURVE_COLUMNS:
            curve[column] = np.array([_number(r, column, "epochs.csv") for r in rows])[order]
        curves[run_id] = curve
    return curves


def _finite(values: Iterable[float]) -> np.ndarray:
    """The finite entries of values as a float array."""
    array = np.asarray(list(values), dtype=float)
    return array[np.isfinite(array)]


def _summarise_cell(
    key: CellKey,
    rows: list[Mapping[str, Any]],
    curves: dict[str, dict[str, np.ndarray]],
    threshold: float,
    stuck_accuracy: float,
) -> CellSummary:
    """Summarise one cell's runs (rows sorted by seed)."""
    accuracies = [_number(r, "test_accuracy", "results.csv") for r in rows]
    diverged = [r["status"] == "diverged" for r in rows]
    stuck = [not d and acc <= stuck_accuracy for d, acc in zip(diverged, accuracies, strict=True)]
    run_curves = [curves.get(str(r["run_id"])) for r in rows]
    present = [c for c in run_curves if c is not None]
    aucs = [loss_auc(c["train_loss"]) for c in present if c["train_loss"].size]
    reach = [epochs_to_reach(c["test_accuracy"], threshold) for c in present]
    return CellSummary(
        *key,
        n=len(rows),
        n_diverged=sum(diverged),
        n_stuck=sum(stuck),
        accuracy=summarise(_finite(accuracies)),
        loss_auc=summarise(_finite(aucs)),
        epochs_to_threshold=summarise(_finite(reach)),
        reached_threshold=int(np.isfinite(reach).sum()),
        seeds=tuple(int(_number(r, "seed", "results.csv")) for r in rows),
        final_accuracies=tuple(accuracies),
    )


def _group_cells(runs: list[Mapping[str, Any]]) -> dict[CellKey, list[Mapping[str, Any]]]:
    """Group analysed runs by cell, each list sorted by seed; check seeds are replicates."""
    cells: dict[CellKey, list[Mapping[str, Any]]] = defaultdict(list)
    for row in runs:
        lo, hi, lr = (_number(row, c, "results.csv") for c in ("range_lo", "range_hi", "lr"))
        cells[(str(row["activation"]), lo, hi, lr)].append(row)
    for key, rows in cells.items():
        rows.sort(key=lambda r: _number(r, "seed", "results.csv"))
        seeds = [_number(r, "seed", "results.csv") for r in rows]
        if len(set(seeds)) != len(seeds):
            raise UsageError(f"results.csv: cell {key} has a seed twice; one run per seed and cell")
        for column in _FIXED_IN_CELL:
            if len({str(r[column]) for r in rows if column in r}) > 1:
                raise UsageError(
                    f"results.csv: cell {key} mixes runs with different {column}; "
                    "seeds of a cell must share every other setting"
                )
    return cells


def _select_lr(
    cells: Sequence[CellSummary],
) -> tuple[dict[tuple[str, float, float], CellSummary], bool]:
    """Pick per (activation, range) the cell of best mean accuracy; ties go to the lower lr."""
    by_arm: dict[tuple[str, float, float], list[CellSummary]] = defaultdict(list)
    for cell in cells:
        by_arm[(cell.activation, cell.range_lo, cell.range_hi)].append(cell)

    def score(cell: CellSummary) -> tuple[float, float]:
        mean = cell.accuracy.mean
        return (-math.inf if math.isnan(mean) else mean, -cell.lr)

    chosen = {arm: max(options, key=score) for arm, options in by_arm.items()}
    return chosen, any(len(options) > 1 for options in by_arm.values())


def _compare(
    chosen: dict[tuple[str, float, float], CellSummary], a: str, b: str
) -> tuple[tuple[RangeComparison, ...], tuple[RangeInteraction, ...]]:
    """Welch and rank comparisons of a and b per range, and the interaction per pair of ranges."""
    ranges = sorted(
        {(lo, hi) for (_, lo, hi) in chosen if (a, lo, hi) in chosen and (b, lo, hi) in chosen},
        key=range_order,
    )
    cells = {rng: (chosen[(a, *rng)], chosen[(b, *rng)]) for rng in ranges}
    accs = {
        rng: (_finite(ca.final_accuracies), _finite(cb.final_accuracies))
        for rng, (ca, cb) in cells.items()
    }
    tests = [welch(*accs[rng]) for rng in ranges]
    ranks = [rank_shift(*accs[rng]) for rng in ranges]
    p_holm, rank_holm = holm([t.p for t in tests]), holm([r.p for r in ranks])
    comparisons = tuple(
        RangeComparison(*rng, *cells[rng], test, float(p), rank, float(rank_p))
        for rng, test, p, rank, rank_p in zip(ranges, tests, p_holm, ranks, rank_holm, strict=True)
    )
    pairs = list(combinations(ranges, 2))
    gaps = [interaction(*accs[first], *accs[second]) for first, second in pairs]
    gap_holm = holm([g.p for g in gaps])
    interactions = tuple(
        RangeInteraction(first, second, gap, float(p))
        for (first, second), gap, p in zip(pairs, gaps, gap_holm, strict=True)
    )
    return comparisons, interactions


def analyse(
    runs: Sequence[Mapping[str, Any]],
    epochs: Sequence[Mapping[str, Any]],
    *,
    a: str = "tanh",
    b: str = "relu",
    accuracy_threshold: float = 80.0,
    stuck_accuracy: float = 15.0,
) -> Analysis:
    """Summarise every cell and compare activation a with b at each pixel range.

    When an (activation, range) was run at several learning rates, the comparisons use the lr
    with the best mean final accuracy. That choice is made on the same runs it is then judged
    on, so it biases each arm upwards; Analysis.lr_selected says when it happened.

    Args:
        runs: results.csv rows (columns.RUN_COLUMNS) with numbers already converted.
        epochs: epochs.csv rows (columns.EPOCH_COLUMNS) with numbers already converted.
        a: activation label on the left of each difference, e.g. "tanh".
        b: activation label on the right, e.g. "relu".
        accuracy_threshold: test accuracy (percent) for the epochs-to-threshold measure.
        stuck_accuracy: a finished run whose final accuracy (percent) is at or below it is stuck.

    Returns:
        Analysis; ranges lacking a or b are summarised but not compared.
    """
    if a == b:
        raise UsageError(f"cannot compare activation {a!r} with itself; pick two different labels")
    _check_columns(runs, _RUN_NEEDS, "results.csv")
    analysed = [r for r in runs if r["status"] in ANALYSED_STATUSES]
    _check_columns(analysed, ("test_accuracy",), "results.csv")
    excluded: dict[str, int] = defaultdict(int)
    for row in runs:
        if row["status"] not in ANALYSED_STATUSES:
            excluded[str(row["status"])] += 1
    ids = [str(r["run_id"]) for r in runs]
    if len(set(ids)) != len(ids):
        raise UsageError("results.csv: a run_id appears twice; each run needs its own id")
    _check_columns(epochs, _EPOCH_NEEDS, "epochs.csv")

    curves = _curves_by_run(epochs, {str(r["run_id"]) for r in analysed})
    grouped = _group_cells(analysed)
    cells = tuple(
        _summarise_cell(key, grouped[key], curves, accuracy_threshold, stuck_accuracy)
        for key in sorted(grouped)
    )
    chosen, lr_selected = _select_lr(cells)
    comparisons, interactions = _compare(chosen, a, b)
    return Analysis(
        cells=cells,
        a=a,
        b=b,
        accuracy_threshold=accuracy_threshold,
        stuck_accuracy=stuck_accuracy,
        lr_selected=lr_selected,
        selected_lr={arm: cell.lr for arm, cell in chosen.items()},
        comparisons=comparisons,
        interactions=interactions,
        labels=tuple(sorted({cell.activation for cell in cells})),
        excluded=dict(excluded),
    )
