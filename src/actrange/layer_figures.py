"""The report's per-layer figures: pre-activation distributions, layer health, gradient norms.

Each is drawn from the exported layer rows (or a run's recorded samples, for the violins) and
returns a ``matplotlib.figure.Figure``, as :mod:`actrange.figures` does.
"""

from collections.abc import Sequence

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from actrange.columns import HIDDEN_LAYERS
from actrange.errors import UsageError
from actrange.evidence import Cell, cells_at_range, index_by_run, series, several_lrs
from actrange.plotting import (
    PAIR_COLOURS,
    cell_colour,
    epoch_axis,
    mark_switch,
    mean_band,
    panel_grid,
    seed_mean,
)
from actrange.wording import format_range


def _violin_group(ax, data_a: list, data_b: list, epoch_indices: Sequence[int]) -> None:
    """A pair of violins (a, b) per epoch; epochs without finite values are left empty."""
    for slot, epoch_index in enumerate(epoch_indices):
        for side, (data, colour) in enumerate(zip((data_a, data_b), PAIR_COLOURS, strict=True)):
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
        for c, n in zip(PAIR_COLOURS, (label_a, label_b), strict=True)
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
    fig, axes = panel_grid(len(present) + 1, 4, (3.4, 2.8))
    for ax, layer in zip(axes, present, strict=False):
        for i, cell in enumerate(cells):
            x, median = _cell_series(cell, index, layer, "p50")
            bands = {
                c: seed_mean(_cell_series(cell, index, layer, c)[1])
                for c in ("p02", "p25", "p75", "p98")
            }
            ax.fill_between(x, bands["p02"], bands["p98"], color=cell_colour(i), alpha=0.12, lw=0)
            ax.fill_between(x, bands["p25"], bands["p75"], color=cell_colour(i), alpha=0.3, lw=0)
            ax.plot(x, seed_mean(median), color=cell_colour(i), label=cell.name(with_lr))
            mark_switch(ax, cell, cell_colour(i))
        ax.set_title(layer, fontsize="medium")
        epoch_axis(ax)
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
                grid[row, np.searchsorted(epochs, x)] = seed_mean(values)
            if np.isfinite(grid).any():
                panels.append((cell, f"{cell.name(with_lr)}: {title}", epochs, grid))
    if not panels:
        raise UsageError(f"no health statistics for the runs at {format_range(range_lo, range_hi)}")

    fig, axes = panel_grid(len(panels), 3, (4.0, 3.0))
    cmap = plt.get_cmap("viridis").with_extremes(bad="lightgrey")
    for ax, (cell, title, epochs, grid) in zip(axes, panels, strict=True):
        extent = (epochs[0] - 0.5, epochs[-1] + 0.5, len(present) - 0.5, -0.5)
        image = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1, aspect="auto", extent=extent)
        ax.set_yticks(range(len(present)), present)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        mark_switch(ax, cell, "white", label=False)
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
    fig, axes = panel_grid(len(cells), 3, (4.2, 3.2), sharey=True)
    layer_colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, len(present)))
    for ax, cell in zip(axes, cells, strict=True):
        for colour, layer in zip(layer_colours, present, strict=True):
            x, values = _cell_series(cell, index, layer, "grad_norm")
            mean_band(ax, x, values, colour, layer, log=True)
        mark_switch(ax, cell, "black")
        ax.set_yscale("log")
        ax.set_title(f"{cell.name(with_lr)} (n={len(cell.run_ids)})", fontsize="medium")
        epoch_axis(ax)
    axes[0].set_ylabel("gradient norm")
    axes[0].legend(fontsize="x-small", ncols=2)
    fig.suptitle(f"Weight-gradient norms, inputs in {format_range(range_lo, range_hi)}")
    return fig
