"""Drawing pieces the report's figures share: colours, panel grids, seed means with t bands.

A cell's seeds are summarised by their mean over the finite values, with a 95% t interval where
more than one seed has a value; an epoch axis is integer-ticked and a switch is a dashed line.
"""

import math

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy import stats

from actrange.evidence import Cell
from actrange.wording import display_activation

CELL_COLOURS = plt.get_cmap("tab10").colors
PAIR_COLOURS = ("tab:blue", "tab:red")


def cell_colour(i: int) -> tuple:
    return CELL_COLOURS[i % len(CELL_COLOURS)]


def panel_grid(n_panels: int, max_cols: int, panel_size: tuple[float, float], **kwargs) -> tuple:
    """A figure with at least n_panels axes in rows of max_cols; the spare axes are switched off."""
    ncols = min(max_cols, n_panels)
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kwargs).ravel()
    for ax in axes[n_panels:]:
        ax.axis("off")
    return fig, list(axes[:n_panels])


def seed_mean(values: np.ndarray) -> np.ndarray:
    """Mean over runs (axis 0) of the finite values; NaN where a column has none."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    sums = np.where(finite, values, 0.0).sum(axis=0)
    return np.divide(sums, counts, out=np.full(counts.shape, np.nan), where=counts > 0)


def mean_band(
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
    mean = seed_mean(values)
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


def mark_switch(ax, cell: Cell, colour, label: bool = True) -> None:
    """A dashed vertical line between the last epoch before the switch and the first after it."""
    if cell.switch_epoch > 0:
        text = f"switch to {display_activation(cell.switch_to)} (epoch {cell.switch_epoch})"
        ax.axvline(
            cell.switch_epoch - 0.5, ls="--", lw=1, color=colour, label=text if label else None
        )


def epoch_axis(ax) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
