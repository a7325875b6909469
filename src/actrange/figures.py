"""The report's figures, drawn from the exported rows; every function returns a Figure.

Figures are built as plain ``matplotlib.figure.Figure`` objects rendered by Agg, so they hold no
global state and need no display; ``save_figure`` writes one as PNG. Runs that differ only in their
seed form a cell (see ``actrange.evidence.Cell``): curves show the cell's mean with a 95% t band.
"""

import io
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from PIL import Image
from scipy import stats

from actrange.columns import HIDDEN_LAYERS
from actrange.errors import UsageError
from actrange.evidence import (
    Cell,
    cells_at_range,
    display_activation,
    format_range,
    index_by_run,
    series,
    several_lrs,
)

_CELL_COLOURS = plt.get_cmap("tab10").colors
_PAIR_COLOURS = ("tab:blue", "tab:red")


def _colour(i: int) -> tuple:
    return _CELL_COLOURS[i % len(_CELL_COLOURS)]


def _grid(n_panels: int, max_cols: int, panel_size: tuple[float, float], **kwargs) -> tuple:
    """A figure with at least n_panels axes in rows of max_cols; the spare axes are switched off."""
    ncols = min(max_cols, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs).ravel()
    for ax in axes[n_panels:]:
        ax.axis("off")
    return fig, list(axes[:n_panels])


def _seed_mean(values: np.ndarray) -> np.ndarray:
    """Mean over runs (axis 0) of the finite values; NaN where a column has none."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    sums = np.where(finite, values, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(counts.shape, np.nan), where=counts > 0)


def _mean_band(
    ax,
    epochs: np.ndarray,
    values: np.ndarray,
    colour,
    label: str,
    log: bool = False,
    bounds: tuple[float, float] = (-np.inf, np.inf),
) -> None:
    """Seed mean over epochs with a 95% t interval where more than one seed has a value.

    With ``log`` the mean and band are taken over log10 values (a geometric mean), the natural
    summary for quantities plotted on a log axis; non-positive values are left out. The band
    is clipped to ``bounds``: an accuracy interval from few seeds can reach past 0 or 100.
    """
    if log:
        values = np.log10(np.where(values > 0, values, np.nan))
    finite = np.isfinite(values)  # [runs, E]
    counts = finite.sum(axis=0)  # [E]
    mean = _seed_mean(values)
    deviations = np.where(finite, values - mean, 0.0)
    spread = np.divide(
        (deviations**2).sum(axis=0), counts - 1, out=np.zeros(len(epochs)), where=counts > 1
    )
    half = stats.t.ppf(0.975, np.maximum(counts - 1, 1)) * np.sqrt(spread / np.maximum(counts, 1))
    low, high = np.clip(mean - half, *bounds), np.clip(mean + half, *bounds)
    if log:
        mean, low, high = 10**mean, 10**low, 10**high
    ax.plot(epochs, mean, marker="o", markersize=3, color=colour, label=label)
    if counts.max(initial=0) > 1:
        ax.fill_between(epochs, low, high, where=counts > 1, color=colour, alpha=0.2, lw=0)


def _mark_switch(ax, cell: Cell, colour, label: bool = True) -> None:
    """A dashed vertical line between the last epoch before the switch and the first after it."""
    if cell.switch_epoch > 0:
        text = f"switch to {display_activation(cell.switch_to)} (epoch {cell.switch_epoch})"
        ax.axvline(
            cell.switch_epoch - 0.5, ls="--", lw=1, color=colour, label=text if label else None
        )


def _epoch_axis(ax) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)


# what a per-epoch quantity can never go beyond, so its band is drawn inside it
_BOUNDS = {"test_accuracy": (0.0, 100.0), "train_loss": (0.0, np.inf), "test_loss": (0.0, np.inf)}


def _epoch_curves(
    runs: Sequence[dict], epochs: Sequence[dict], lo: float, hi: float, column: str, ylabel: str
) -> Figure:
    cells = cells_at_range(runs, lo, hi)
    with_lr = several_lrs(cells)
    by_run = index_by_run(epochs)
    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for i, cell in enumerate(cells):
        x, values = series([by_run.get((run_id,), {}) for run_id in cell.run_ids], column)
        label = f"{cell.name(with_lr)} (n={len(cell.run_ids)})"
        _mean_band(ax, x, values, _colour(i), label, bounds=_BOUNDS.get(column, (-np.inf, np.inf)))
        _mark_switch(ax, cell, _colour(i))
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} by epoch, inputs in {format_range(lo, hi)}")
    _epoch_axis(ax)
    ax.legend(fontsize="small")
    return fig


def loss_curves(
    runs: Sequence[dict], epochs: Sequence[dict], range_lo: float, range_hi: float
) -> Figure:
    """Training loss per epoch for each activation at one input range.

    Args:
        runs: run rows (RUN_COLUMNS); seeds of a cell are averaged with a 95% t band.
        epochs: epoch rows (EPOCH_COLUMNS) of those runs.
        range_lo, range_hi: the input range to show.

    Returns:
        A Figure with one axis; raises UsageError when no run used that range.
    """
    return _epoch_curves(runs, epochs, range_lo, range_hi, "train_loss", "Training loss")


def accuracy_curves(
    runs: Sequence[dict], epochs: Sequence[dict], range_lo: float, range_hi: float
) -> Figure:
    """Test accuracy (%) per epoch for each activation at one input range; as ``loss_curves``."""
    return _epoch_curves(runs, epochs, range_lo, range_hi, "test_accuracy", "Test accuracy (%)")


def _violin_group(ax, data_a: list, data_b: list, epoch_indices: Sequence[int]) -> None:
    """A pair of violins (a, b) per epoch; epochs without finite values are left empty."""
    for slot, epoch_index in enumerate(epoch_indices):
        for side, (data, colour) in enumerate(zip((data_a, data_b), _PAIR_COLOURS, strict=True)):
            if epoch_index >= len(data):
                continue
            values = np.asarray(data[epoch_index], dtype=float).ravel()
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            position = slot + (side - 0.5) * 0.4
            parts = ax.violinplot(
                [values], positions=[position], widths=0.38, showmedians=True, showextrema=True
            )
            for body in parts["bodies"]:
                body.set_facecolor(colour)
                body.set_edgecolor("black")
                body.set_linewidth(0.4)
                body.set_alpha(0.7)
            for name in ("cbars", "cmins", "cmaxes", "cmedians"):
                parts[name].set_color("black")
                parts[name].set_linewidth(0.7)
    ax.set_xticks(range(len(epoch_indices)), [str(i + 1) for i in epoch_indices])
    ax.set_xlim(-0.6, len(epoch_indices) - 0.4)
    ax.grid(alpha=0.3, axis="y")


def violin_comparison(
    records_a: dict[str, np.ndarray],
    records_b: dict[str, np.ndarray],
    label_a: str,
    label_b: str,
    split_epoch: int = 5,
) -> Figure:
    """Pre-activation distributions of two runs side by side, per hidden layer and epoch.

    Args:
        records_a, records_b: layer -> [epochs, n] recorded pre-activation samples of one run each.
        label_a, label_b: legend names of the two runs.
        split_epoch: epochs 1..split_epoch go in the left column, later ones in the right.

    Returns:
        A Figure with one row per hidden layer and two columns (the right one off when there are
        no later epochs).
    """
    if split_epoch < 1:
        raise UsageError(f"split epoch must be 1 or later; got {split_epoch}")
    for label, records in ((label_a, records_a), (label_b, records_b)):
        missing = [layer for layer in HIDDEN_LAYERS if layer not in records]
        if missing:
            raise UsageError(f"records of {label} lack layers {', '.join(missing)}")
    n_epochs = max(len(records[layer]) for records in (records_a, records_b) for layer in records)
    early = list(range(min(split_epoch, n_epochs)))
    late = list(range(split_epoch, n_epochs))

    fig = Figure(figsize=(12, 1.9 * len(HIDDEN_LAYERS) + 0.6), layout="constrained")
    axes = fig.subplots(
        len(HIDDEN_LAYERS),
        2,
        sharey="row",
        gridspec_kw={"width_ratios": [max(len(early), 1), max(len(late), 1)]},
    )
    for row, layer in zip(axes, HIDDEN_LAYERS, strict=True):
        _violin_group(row[0], list(records_a[layer]), list(records_b[layer]), early)
        row[0].set_title(f"{layer}, epochs 1–{len(early)}", fontsize="medium")
        row[0].set_ylabel("pre-activation")
        if late:
            _violin_group(row[1], list(records_a[layer]), list(records_b[layer]), late)
            row[1].set_title(f"{layer}, epochs {late[0] + 1}–{late[-1] + 1}", fontsize="medium")
        else:
            row[1].axis("off")
    axes[-1, 0].set_xlabel("epoch")
    if late:
        axes[-1, 1].set_xlabel("epoch")
    handles = [
        Patch(facecolor=c, alpha=0.7, label=n)
        for c, n in zip(_PAIR_COLOURS, (label_a, label_b), strict=True)
    ]
    fig.legend(handles=handles, loc="outside upper right", ncols=2)
    fig.suptitle(f"Pre-activation distributions: {label_a} vs {label_b}")
    return fig


def _layer_data(runs: Sequence[dict], layers: Sequence[dict], lo: float, hi: float) -> tuple:
    """Cells at a range, their layer-row index, and the hidden layers present, in model order."""
    cells = cells_at_range(runs, lo, hi)
    run_ids = {run_id for cell in cells for run_id in cell.run_ids}
    index = index_by_run([row for row in layers if str(row["run_id"]) in run_ids], layer=True)
    present = [layer for layer in HIDDEN_LAYERS if any(key[1] == layer for key in index)]
    if not present:
        raise UsageError(f"no layer statistics for the runs at {format_range(lo, hi)}")
    return cells, index, present


def _cell_series(cell: Cell, index: dict, layer: str, column: str) -> tuple:
    return series([index.get((run_id, layer), {}) for run_id in cell.run_ids], column)


def percentile_bands(
    runs: Sequence[dict], layers: Sequence[dict], range_lo: float, range_hi: float
) -> Figure:
    """Median pre-activation with p25–p75 and p02–p98 bands over epochs, per hidden layer.

    Args:
        runs: run rows; each activation's seeds are averaged.
        layers: layer rows (LAYER_COLUMNS) of those runs.
        range_lo, range_hi: the input range to show.

    Returns:
        A Figure with one panel per hidden layer present and one more holding the legend.
    """
    cells, index, present = _layer_data(runs, layers, range_lo, range_hi)
    with_lr = several_lrs(cells)
    fig, axes = _grid(len(present) + 1, 4, (3.4, 2.8))
    for ax, layer in zip(axes, present, strict=False):
        for i, cell in enumerate(cells):
            x, median = _cell_series(cell, index, layer, "p50")
            bands = {
                c: _seed_mean(_cell_series(cell, index, layer, c)[1])
                for c in ("p02", "p25", "p75", "p98")
            }
            ax.fill_between(x, bands["p02"], bands["p98"], color=_colour(i), alpha=0.12, lw=0)
            ax.fill_between(x, bands["p25"], bands["p75"], color=_colour(i), alpha=0.3, lw=0)
            ax.plot(x, _seed_mean(median), color=_colour(i), label=cell.name(with_lr))
            _mark_switch(ax, cell, _colour(i))
        ax.set_title(layer, fontsize="medium")
        _epoch_axis(ax)
    axes[0].set_ylabel("pre-activation")
    legend_ax = axes[-1]
    legend_ax.axis("off")
    handles, labels = axes[0].get_legend_handles_labels()
    handles += [Patch(color="grey", alpha=0.45), Patch(color="grey", alpha=0.12)]
    labels += ["p25–p75", "p02–p98"]
    legend_ax.legend(handles, labels, loc="center", fontsize="small")
    fig.suptitle(f"Pre-activation percentiles, inputs in {format_range(range_lo, range_hi)}")
    return fig


_HEALTH = {"saturated_frac": "saturated share", "dead_frac": "dead units", "zero_frac": "<= 0"}


def health_heatmaps(
    runs: Sequence[dict], layers: Sequence[dict], range_lo: float, range_hi: float
) -> Figure:
    """Layer × epoch heatmaps of saturated share (saturating) or dead and <= 0 shares (rectifying).

    Args:
        runs: run rows; each activation's seeds are averaged.
        layers: layer rows of those runs.
        range_lo, range_hi: the input range to show.

    Returns:
        A Figure with one panel per activation and statistic that has values (one for a
        saturating activation, two for a rectifying one), all on one 0–1 colour scale with a
        colour bar.
    """
    cells, index, present = _layer_data(runs, layers, range_lo, range_hi)
    with_lr = several_lrs(cells)
    panels = []
    for cell in cells:
        for column, title in _HEALTH.items():
            pairs = [_cell_series(cell, index, layer, column) for layer in present]
            epochs = np.array(sorted({e for x, _ in pairs for e in x}), dtype=int)
            grid = np.full((len(present), len(epochs)), np.nan)  # [layers, epochs]
            for row, (x, values) in enumerate(pairs):
                grid[row, np.searchsorted(epochs, x)] = _seed_mean(values)
            if np.isfinite(grid).any():
                panels.append((cell, f"{cell.name(with_lr)}: {title}", epochs, grid))
    if not panels:
        raise UsageError(f"no health statistics for the runs at {format_range(range_lo, range_hi)}")

    fig, axes = _grid(len(panels), 3, (4.0, 3.0))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    for ax, (cell, title, epochs, grid) in zip(axes, panels, strict=True):
        extent = (epochs[0] - 0.5, epochs[-1] + 0.5, len(present) - 0.5, -0.5)
        image = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto", extent=extent)
        ax.set_yticks(range(len(present)), present)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _mark_switch(ax, cell, "white", label=False)
    fig.colorbar(image, ax=axes, label="share", shrink=0.9)
    fig.suptitle(f"Layer health, inputs in {format_range(range_lo, range_hi)}")
    return fig


def grad_norm_curves(
    runs: Sequence[dict], layers: Sequence[dict], range_lo: float, range_hi: float
) -> Figure:
    """Weight-gradient norm per layer over epochs on a log scale, one panel per activation.

    Args:
        runs: run rows; seeds are summarised by the geometric mean with a 95% t band.
        layers: layer rows of those runs.
        range_lo, range_hi: the input range to show.

    Returns:
        A Figure with one panel per activation, sharing the y axis.
    """
    cells, index, present = _layer_data(runs, layers, range_lo, range_hi)
    with_lr = several_lrs(cells)
    fig, axes = _grid(len(cells), 3, (4.2, 3.2), sharey=True)
    layer_colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(present)))
    for ax, cell in zip(axes, cells, strict=True):
        for colour, layer in zip(layer_colours, present, strict=True):
            x, values = _cell_series(cell, index, layer, "grad_norm")
            _mean_band(ax, x, values, colour, layer, log=True)
        _mark_switch(ax, cell, "black")
        ax.set_yscale("log")
        ax.set_title(f"{cell.name(with_lr)} (n={len(cell.run_ids)})", fontsize="medium")
        _epoch_axis(ax)
    axes[0].set_ylabel("gradient norm")
    axes[0].legend(fontsize="x-small", ncols=2)
    fig.suptitle(f"Weight-gradient norms, inputs in {format_range(range_lo, range_hi)}")
    return fig


def accuracy_heatmap(
    range_labels: list[str],
    activation_labels: list[str],
    means: np.ndarray,
    annotations: list[list[str]],
) -> Figure:
    """Range × activation grid of mean final accuracy, each cell annotated.

    Args:
        range_labels: R row names, e.g. "[-1, 1]".
        activation_labels: A column names.
        means: [R, A] mean final test accuracy (%); NaN where a cell has no runs.
        annotations: R lists of A texts, e.g. "86.1 ± 0.4 (n=10)".

    Returns:
        A Figure with the grid and its colour bar.
    """
    means = np.asarray(means, dtype=float)
    shape = (len(range_labels), len(activation_labels))
    if means.shape != shape or [len(row) for row in annotations] != [shape[1]] * shape[0]:
        raise UsageError(
            f"means and annotations must be {shape[0]} ranges × {shape[1]} activations"
        )
    fig = Figure(figsize=(1.9 * shape[1] + 2.2, 0.8 * shape[0] + 1.6), layout="constrained")
    ax = fig.subplots()
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    image = ax.imshow(means, cmap=cmap, aspect="auto")
    ax.set_xticks(range(shape[1]), activation_labels)
    ax.set_yticks(range(shape[0]), range_labels)
    ax.set_xlabel("activation")
    ax.set_ylabel("input range")
    low, high = image.get_clim()
    for r, row in enumerate(annotations):
        for a, text in enumerate(row):
            # dark text on the bright end of viridis and on the grey of empty cells
            value = means[r, a]
            bright = not np.isfinite(value) or value > low + 0.6 * (high - low)
            ax.text(
                a,
                r,
                text,
                ha="center",
                va="center",
                fontsize="small",
                color="black" if bright else "white",
            )
    fig.colorbar(image, ax=ax, label="final test accuracy (%)")
    return fig


def per_class_accuracy(per_class: dict[str, np.ndarray], class_names: Sequence[str]) -> Figure:
    """Grouped bars of test accuracy (%) per class, one bar colour per label.

    Args:
        per_class: label -> [classes] accuracy in percent.
        class_names: the class names, in the order of the arrays.

    Returns:
        A Figure with one axis.
    """
    for label, values in per_class.items():
        if np.shape(values) != (len(class_names),):
            raise UsageError(
                f"per-class accuracy of {label} has shape {np.shape(values)}; "
                f"expected ({len(class_names)},) to match the class names"
            )
    fig = Figure(figsize=(max(6.4, 0.75 * len(class_names) + 1), 4.0), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / max(len(per_class), 1)
    centres = np.arange(len(class_names))
    for i, (label, values) in enumerate(per_class.items()):
        offset = (i - (len(per_class) - 1) / 2) * width
        ax.bar(centres + offset, values, width=width, color=_colour(i), label=label)
    ax.set_xticks(centres, class_names, rotation=30, ha="right")
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize="small")
    return fig


def save_figure(fig: Figure, path: Path, dpi: int = 110) -> Path:
    """Write a figure as a palette PNG (creating parent folders), release it, return the path.

    The figures go into a committed report, so the image is reduced to 256 colours, which keeps
    plots legible at about a third of the size of a full-colour PNG.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rendered = io.BytesIO()
    fig.savefig(rendered, dpi=dpi, format="png")
    plt.close(fig)
    rendered.seek(0)
    with Image.open(rendered) as image:
        image.convert("RGB").quantize(colors=256).save(path, format="PNG", optimize=True)
    return path
