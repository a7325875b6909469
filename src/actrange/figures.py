"""The report's figures of runs, drawn from the exported rows; every function returns a Figure.

Figures are built as plain ``matplotlib.figure.Figure`` objects rendered by Agg, so they hold no
global state and need no display; ``save_figure`` writes one as PNG. Runs that differ only in their
seed form a cell (see ``actrange.evidence.Cell``): curves show the cell's mean with a 95% t band.
The per-layer figures are in :mod:`actrange.layer_figures`.
"""

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.figure import Figure
from PIL import Image

from actrange.errors import UsageError
from actrange.evidence import cells_at_range, index_by_run, series, several_lrs
from actrange.plotting import cell_colour, epoch_axis, mark_switch, mean_band
from actrange.wording import format_range

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
        bounds = _BOUNDS.get(column, (-np.inf, np.inf))
        mean_band(ax, x, values, cell_colour(i), label, bounds=bounds)
        mark_switch(ax, cell, cell_colour(i))
    ax.set_ylabel(ylabel)
    ax.set_title(f"{ylabel} by epoch, inputs in {format_range(lo, hi)}")
    epoch_axis(ax)
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
        ax.bar(centres + offset, values, width=width, color=cell_colour(i), label=label)
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
