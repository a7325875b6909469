"""The "why" of the results in words: sentences tying each cell's accuracy to its layer statistics.

A cell is a set of runs that differ only in their seed: same activation schedule, input range and
learning rate. The grouping here is shared with the figures.
"""

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from actrange.activations import ACTIVATIONS
from actrange.columns import HIDDEN_LAYERS
from actrange.config import format_number
from actrange.diagnostics import SATURATION_MARGIN
from actrange.errors import UsageError
from actrange.wording import display_activation, format_range


@dataclass(frozen=True)
class Cell:
    """The runs of one (activation schedule, input range, learning rate), i.e. its seeds."""

    activation: str
    range_lo: float
    range_hi: float
    lr: float
    switch_epoch: int
    switch_to: str
    run_ids: tuple[str, ...]

    @property
    def range_label(self) -> str:
        return format_range(self.range_lo, self.range_hi)

    def name(self, with_lr: bool = False) -> str:
        """The activation's display name, with the learning rate when cells differ in it."""
        shown = display_activation(self.activation)
        return f"{shown} lr={format_number(self.lr)}" if with_lr else shown


def group_cells(runs: Iterable[dict]) -> list[Cell]:
    """Group run rows into cells, ordered by range width, range, activation and learning rate."""
    members: dict[tuple, list[dict]] = defaultdict(list)
    for run in runs:
        key = (float(run["range_lo"]), float(run["range_hi"]), str(run["activation"]))
        members[(*key, float(run["lr"]))].append(run)
    cells = []
    for (lo, hi, activation, lr), rows in members.items():
        first = rows[0]
        cells.append(
            Cell(
                activation=activation,
                range_lo=lo,
                range_hi=hi,
                lr=lr,
                switch_epoch=int(first.get("switch_epoch") or 0),
                switch_to=str(first.get("switch_to") or ""),
                run_ids=tuple(str(row["run_id"]) for row in rows),
            )
        )
    return sorted(cells, key=lambda c: (c.range_hi - c.range_lo, c.range_lo, c.activation, c.lr))


def cells_at_range(runs: Iterable[dict], range_lo: float, range_hi: float) -> list[Cell]:
    """The cells trained on one input range; raise UsageError naming the ranges there are."""
    cells = group_cells(runs)
    chosen = [
        c
        for c in cells
        if math.isclose(c.range_lo, range_lo, abs_tol=1e-9)
        and math.isclose(c.range_hi, range_hi, abs_tol=1e-9)
    ]
    if not chosen:
        present = ", ".join(dict.fromkeys(c.range_label for c in cells)) or "none"
        asked = format_range(range_lo, range_hi)
        raise UsageError(f"no runs at input range {asked}; ranges present: {present}")
    return chosen


def several_lrs(cells: Sequence[Cell]) -> bool:
    """Whether the cells differ in learning rate, so names must carry it."""
    return len({c.lr for c in cells}) > 1


def index_by_run(rows: Iterable[dict], layer: bool = False) -> dict[tuple, dict[int, dict]]:
    """Epoch rows keyed by (run_id,), or layer rows by (run_id, layer); then by epoch."""
    index: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for row in rows:
        key = (str(row["run_id"]), str(row["layer"])) if layer else (str(row["run_id"]),)
        index[key][int(row["epoch"])] = row
    return index


def series(per_run: Sequence[dict[int, dict]], column: str) -> tuple[np.ndarray, np.ndarray]:
    """One column of several runs' rows over epochs, aligned on the epochs any run has.

    Args:
        per_run: for each run, its rows by epoch.
        column: the column to read.

    Returns:
        epochs [E] sorted, and values [runs, E] with NaN where a run has no (finite) value.
    """
    epochs = np.array(sorted({e for rows in per_run for e in rows}), dtype=int)
    values = np.full((len(per_run), len(epochs)), np.nan)
    for i, rows in enumerate(per_run):
        for j, epoch in enumerate(epochs):
            if epoch in rows:
                values[i, j] = float(rows[epoch][column])
    return epochs, values


def _nanmean(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _percent(share: float) -> str:
    if 0 < share < 0.01:
        return f"{100 * share:.1g}%"
    return f"{100 * share:.0f}%"


def _times(ratio: float) -> str:
    if ratio >= 10:
        return f"{float(f'{ratio:.2g}'):.0f}×"
    return f"{ratio:.1f}×"


def _saturation_rule(activation: str) -> str:
    """How the saturated share was counted, e.g. "|tanh| > 0.95"."""
    known = ACTIVATIONS.get(activation)
    if known is None or known.bounds is None:
        return "within 5% of a bound"
    lo, hi = known.bounds
    margin = SATURATION_MARGIN * (hi - lo) / 2
    if math.isclose(lo, -hi):
        return f"|{activation}| > {format_number(hi - margin)}"
    return f"{activation} < {format_number(lo + margin)} or > {format_number(hi - margin)}"


class _CellLayers:
    """A cell's layer rows, averaged over its seeds."""

    def __init__(self, cell: Cell, layer_index: dict[tuple, dict[int, dict]]):
        self.cell = cell
        self.layers = sorted(
            {layer for run_id, layer in layer_index if run_id in cell.run_ids},
            key=_layer_order,
        )
        self._index = layer_index

    def mean(self, layer: str, epoch: int, column: str) -> float:
        rows = [self._index.get((run_id, layer), {}).get(epoch) for run_id in self.cell.run_ids]
        return _nanmean(float(row[column]) for row in rows if row is not None)

    def activation_at(self, epoch: int) -> str:
        for run_id in self.cell.run_ids:
            for layer in self.layers:
                row = self._index.get((run_id, layer), {}).get(epoch)
                if row is not None:
                    return str(row["activation"])
        return ""

    def last_epoch(self, layer: str, column: str) -> int:
        epochs = {e for run_id in self.cell.run_ids for e in self._index.get((run_id, layer), {})}
        finite = [e for e in epochs if math.isfinite(self.mean(layer, e, column))]
        return max(finite, default=0)

    def extreme(self, epoch: int, column: str, largest: bool) -> tuple[str, float]:
        """The layer with the largest (or smallest) seed-mean value of a column at an epoch.

        Ties go to the layer nearest the input; ("", NaN) when no layer has a value.
        """
        best_layer, best = "", math.nan
        for layer in self.layers:
            value = self.mean(layer, epoch, column)
            better = value > best if largest else value < best
            if math.isfinite(value) and (not best_layer or better):
                best_layer, best = layer, value
        return best_layer, best


def _layer_order(layer: str) -> tuple[int, str]:
    return (HIDDEN_LAYERS.index(layer) if layer in HIDDEN_LAYERS else len(HIDDEN_LAYERS), layer)


def _head(cell: Cell, runs_by_id: dict[str, dict], with_lr: bool) -> str:
    """The opening, e.g. "At [-1, 1], ReLU finished at 10.0% (n=5)", with divergence, switch."""
    rows = [runs_by_id[run_id] for run_id in cell.run_ids]
    accuracies = [float(r["test_accuracy"]) for r in rows]
    accuracies = [a for a in accuracies if math.isfinite(a)]
    diverged = sum(str(r.get("status")) == "diverged" for r in rows)
    counted = f"n={len(accuracies)}" + (f", {diverged} diverged" if diverged else "")
    start = f"At {cell.range_label}, {cell.name(with_lr)}"
    if accuracies:
        head = f"{start} finished at {sum(accuracies) / len(accuracies):.1f}% ({counted})"
    else:
        head = f"{start} has no test accuracy ({counted})"
    if cell.switch_epoch > 0:
        head += f", switching to {display_activation(cell.switch_to)} at epoch {cell.switch_epoch}"
    return head


def _trend(stats: _CellLayers, layer: str, column: str, early: int, value: float) -> str:
    """Where the value ended, e.g. ", falling to 47% by epoch 20"; "" without a later epoch."""
    last = stats.last_epoch(layer, column)
    if last <= early:
        return ""
    later = stats.mean(layer, last, column)
    if abs(later - value) < 0.005:
        return f", still {_percent(later)} at epoch {last}"
    verb = "falling" if later < value else "rising"
    return f", {verb} to {_percent(later)} by epoch {last}"


def _health_clause(stats: _CellLayers, early: int) -> str:
    """The most saturated or most dead layer at the early epoch, and where it ended."""
    layer, saturated = stats.extreme(early, "saturated_frac", largest=True)
    if layer:
        rule = _saturation_rule(stats.activation_at(early))
        return (
            f"at epoch {early}, {_percent(saturated)} of {layer} outputs were saturated ({rule})"
            + _trend(stats, layer, "saturated_frac", early, saturated)
        )
    layer, dead = stats.extreme(early, "dead_frac", largest=True)
    if not layer:
        return ""
    if dead > 0:
        return f"at epoch {early}, {_percent(dead)} of {layer} units were dead" + _trend(
            stats, layer, "dead_frac", early, dead
        )
    layer, zero = stats.extreme(early, "zero_frac", largest=True)
    return (
        f"at epoch {early}, no layer had dead units and at most {_percent(zero)} "
        f"of pre-activations were <= 0 (in {layer})"
    )


def _gradient_clause(stats: _CellLayers, others: list[_CellLayers], early: int) -> str:
    """The smallest layer gradient, compared with the same layer at the most different range."""
    layer, grad = stats.extreme(early, "grad_norm", largest=False)
    if not layer:
        return ""
    clause = f"the smallest gradient norm, at {layer}, was {grad:.2g}"
    comparisons = [(other.mean(layer, early, "grad_norm"), other) for other in others]
    comparisons = [(g, o) for g, o in comparisons if math.isfinite(g) and g > 0]
    if not comparisons or grad <= 0:
        return clause
    other_grad, other = max(comparisons, key=lambda pair: abs(math.log(pair[0] / grad)))
    ratio = other_grad / grad
    where = f"at {other.cell.range_label}"
    if 1 / 1.5 < ratio < 1.5:
        return f"{clause}, close to the {other_grad:.2g} {where}"
    if ratio > 1:
        return f"{clause}, {_times(ratio)} smaller than {where}"
    return f"{clause}, {_times(1 / ratio)} larger than {where}"


def evidence_sentences(
    runs: Sequence[dict], layers: Sequence[dict], *, early_epoch: int = 1
) -> list[str]:
    """One sentence per (range, activation) cell linking its final accuracy to layer statistics.

    Args:
        runs: run rows (RUN_COLUMNS); seeds of one cell are averaged.
        layers: layer rows (LAYER_COLUMNS) of those runs.
        early_epoch: the epoch whose layer statistics explain the outcome.

    Returns:
        Sentences ordered by range width, then activation, e.g. "At [-1, 1], ReLU finished at
        10.0% (n=5); at epoch 1, 38% of lin2 units were dead; the smallest gradient norm, at
        conv1, was 2.1e-05, 100× smaller than at [-5, 5]."
    """
    if early_epoch < 1:
        raise UsageError(f"early epoch must be 1 or later; got {early_epoch}")
    cells = group_cells(runs)
    runs_by_id = {str(run["run_id"]): run for run in runs}
    layer_index = index_by_run(layers, layer=True)
    stats = {cell: _CellLayers(cell, layer_index) for cell in cells}

    sentences = []
    for cell in cells:
        with_lr = several_lrs([c for c in cells if c.range_label == cell.range_label])
        others = [
            stats[c]
            for c in cells
            if c.activation == cell.activation and c.lr == cell.lr and c != cell
        ]
        clauses = [_head(cell, runs_by_id, with_lr)]
        evidence = [
            _health_clause(stats[cell], early_epoch),
            _gradient_clause(stats[cell], others, early_epoch),
        ]
        if not any(evidence):
            evidence = [f"no layer statistics were recorded at epoch {early_epoch}"]
        clauses.extend(evidence)
        sentences.append("; ".join(c for c in clauses if c) + ".")
    return sentences
