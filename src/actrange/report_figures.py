"""The report's figure sections: which figures to draw from a result set, and where to save them.

Each section returns report blocks. A figure that cannot be drawn from the data at hand (no layer
statistics, no recorded pre-activations) becomes a sentence saying so instead of a gap, so the
report never fails on missing data and never hides that something is missing.
"""

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from actrange.analysis import Analysis, CellSummary, Range
from actrange.data import CLASS_NAMES
from actrange.errors import UsageError
from actrange.evidence import evidence_sentences
from actrange.exports import ResultSet
from actrange.figures import (
    accuracy_curves,
    accuracy_heatmap,
    loss_curves,
    per_class_accuracy,
    save_figure,
)
from actrange.layer_figures import (
    grad_norm_curves,
    health_heatmaps,
    percentile_bands,
    violin_comparison,
)
from actrange.report_render import Block, Heading, Image, Items, Paragraph
from actrange.wording import display_activation, format_range

# the stems of every figure name written here; a stale file with one of them is removed
FIGURE_PREFIXES = (
    "heatmap_",
    "loss_",
    "accuracy_",
    "violin_",
    "percentiles_",
    "health_",
    "gradnorm_",
    "per_class_",
)


@dataclass(frozen=True)
class ReportData:
    """The rows the report draws on: analysed runs only (finished or diverged).

    Attributes:
        results: the whole result set (every status), for its arrays and records.
        runs: run rows of the analysed runs.
        epochs: their epoch rows.
        layers: their layer rows.
        analysis: analysis.analyse() of all runs.
        ranges: the pixel ranges of the analysed runs, narrowest first.
        split_epoch: where the violin figures split early from late epochs.
    """

    results: ResultSet
    runs: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    analysis: Analysis
    ranges: list[Range]
    split_epoch: int


def range_slug(rng: Range) -> str:
    """A filesystem-safe name for a range: (-1, 1) -> "range_-1_1", (0, 0.5) -> "range_0_0.5"."""
    text = f"range_{rng[0]:g}_{rng[1]:g}"
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)


class FigureWriter:
    """Draws figures into the figure folder and remembers what it wrote."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written: list[Path] = []

    def add(self, name: str, caption: str, draw: Callable[[], Figure]) -> Block:
        """Draw and save one figure as NAME.png; say why instead when the data cannot be drawn."""
        try:
            figure = draw()
        except UsageError as error:
            return Paragraph(f"{caption} Not drawn: {error}.")
        path = save_figure(figure, self.folder / f"{name}.png")
        self.written.append(path)
        return Image(path, caption)

    def remove_stale(self) -> None:
        """Delete figures of an earlier report that this one did not write again."""
        if not self.folder.is_dir():
            return
        keep = {path.name for path in self.written}
        for path in self.folder.glob("*.png"):
            if path.name not in keep and path.name.startswith(FIGURE_PREFIXES):
                path.unlink()


_AT_SELECTED_LR = " Each activation is shown at the learning rate its comparisons use."


def _at(rows: list[dict[str, Any]], rng: Range) -> list[dict[str, Any]]:
    return [r for r in rows if (float(r["range_lo"]), float(r["range_hi"])) == rng]


def _chosen_cell(data: ReportData, label: str, rng: Range) -> CellSummary | None:
    """The cell of this activation and range at the learning rate the comparisons use."""
    lr = data.analysis.selected_lr.get((label, *rng))
    for cell in data.analysis.cells:
        if (cell.activation, cell.range, cell.lr) == (label, rng, lr):
            return cell
    return None


def _cell_runs(data: ReportData, cell: CellSummary) -> list[dict[str, Any]]:
    """The cell's runs, by seed."""
    rows = [
        r
        for r in _at(data.runs, cell.range)
        if r["activation"] == cell.activation and float(r["lr"]) == cell.lr
    ]
    return sorted(rows, key=lambda r: int(r["seed"]))


def _annotation(cell: CellSummary) -> str:
    acc = cell.accuracy
    if acc.n == 0:
        return f"no accuracy (n={cell.n})"
    if acc.n == 1:
        return f"{acc.mean:.1f} (n=1)"
    return f"{acc.mean:.1f} ± {acc.ci_high - acc.mean:.1f} (n={acc.n})"


def heatmap_section(data: ReportData, writer: FigureWriter) -> list[Block]:
    """Mean final accuracy on a range × activation grid."""
    if not data.ranges:
        return []
    labels = list(data.analysis.labels)
    means = np.full((len(data.ranges), len(labels)), np.nan)  # [ranges, activations]
    notes = [["no runs"] * len(labels) for _ in data.ranges]
    for r, rng in enumerate(data.ranges):
        for a, label in enumerate(labels):
            cell = _chosen_cell(data, label, rng)
            if cell is not None:
                means[r, a] = cell.accuracy.mean
                notes[r][a] = _annotation(cell)
    caption = (
        "Mean final test accuracy (%) per pixel range and activation, ± the half-width of its "
        "95% t-interval over seeds; diverged runs are included at their final accuracy."
    )
    if data.analysis.lr_selected:
        caption += _AT_SELECTED_LR
    names = [display_activation(label) for label in labels]
    rows = [format_range(*rng) for rng in data.ranges]
    draw = partial(accuracy_heatmap, rows, names, means, notes)
    return [
        Heading("Accuracy by range and activation"),
        writer.add("heatmap_accuracy", caption, draw),
    ]


# the per-range training curves: file stem, figure function, what the caption calls it
_CURVE_FIGURES = (
    ("loss", loss_curves, "Training loss"),
    ("accuracy", accuracy_curves, "Test accuracy"),
)


def curves_section(data: ReportData, writer: FigureWriter) -> list[Block]:
    """Loss and accuracy curves per range, mean over seeds with a 95% band."""
    if not data.ranges:
        return []
    blocks: list[Block] = [Heading("Training curves")]
    for rng in data.ranges:
        slug, shown = range_slug(rng), format_range(*rng)
        blocks.append(Heading(f"Inputs in {shown}", 3))
        for stem, draw, text in _CURVE_FIGURES:
            caption = f"{text} per epoch at {shown}: mean over seeds with its 95% t band."
            blocks.append(
                writer.add(f"{stem}_{slug}", caption, partial(draw, data.runs, data.epochs, *rng))
            )
    return blocks


def _violin_pair(data: ReportData, rng: Range) -> list[str]:
    """The two activations to set side by side: the compared pair when both ran, else the first."""
    present = sorted({str(r["activation"]) for r in _at(data.runs, rng)})
    pair = [data.analysis.a, data.analysis.b]
    if all(label in present for label in pair):
        return pair
    return present[:2]


def _first_seed_records(data: ReportData, label: str, rng: Range) -> tuple[int, dict] | None:
    """(seed, records) of the lowest seed of the cell that stored pre-activation samples."""
    cell = _chosen_cell(data, label, rng)
    for run in _cell_runs(data, cell) if cell else []:
        records = data.results.records(str(run["run_id"]))
        if records:
            return int(run["seed"]), records
    return None


def violin_section(data: ReportData, writer: FigureWriter) -> list[Block]:
    """Per range, the pre-activation distributions of one run of each compared activation."""
    if not data.ranges:
        return []
    blocks: list[Block] = [
        Heading("Pre-activation distributions"),
        Paragraph(
            "One run per activation (its lowest seed): the distribution of pre-activation values "
            f"per hidden layer and epoch, epochs 1–{data.split_epoch} on the left and later "
            "epochs on the right."
        ),
    ]
    for rng in data.ranges:
        shown = format_range(*rng)
        pair = _violin_pair(data, rng)
        found = [_first_seed_records(data, label, rng) for label in pair]
        if len(pair) < 2 or None in found:
            missing = f"At {shown} no two activations stored pre-activation samples."
            blocks.append(Paragraph(missing))
            continue
        (seed_a, records_a), (seed_b, records_b) = found
        name_a = f"{display_activation(pair[0])} (seed {seed_a})"
        name_b = f"{display_activation(pair[1])} (seed {seed_b})"
        caption = f"Pre-activation distributions at {shown}: {name_a} vs {name_b}."
        draw = partial(
            violin_comparison, records_a, records_b, name_a, name_b, split_epoch=data.split_epoch
        )
        blocks.append(writer.add(f"violin_{range_slug(rng)}", caption, draw))
    return blocks


# (file stem, figure function, caption) of the layer figures drawn per range
_LAYER_FIGURES = (
    (
        "percentiles",
        percentile_bands,
        "Median pre-activation per layer with its p25–p75 and p02–p98 bands, mean over seeds",
    ),
    (
        "health",
        health_heatmaps,
        "Share of saturated outputs (saturating activations) or of dead units and of values "
        "<= 0 (rectifying ones), per layer and epoch, mean over seeds",
    ),
    (
        "gradnorm",
        grad_norm_curves,
        "Weight-gradient norm per layer, geometric mean over seeds with its 95% band",
    ),
)


def why_section(data: ReportData, writer: FigureWriter) -> list[Block]:
    """Sentences linking accuracy to layer statistics, and the layer figures per range."""
    if not data.runs:
        return []
    blocks: list[Block] = [
        Heading("Why: what the layers did"),
        Items(tuple(evidence_sentences(data.runs, data.layers))),
    ]
    layer_runs = {str(row["run_id"]) for row in data.layers}
    for rng in data.ranges:
        if not any(str(r["run_id"]) in layer_runs for r in _at(data.runs, rng)):
            continue
        slug, shown = range_slug(rng), format_range(*rng)
        blocks.append(Heading(f"Layers at {shown}", 3))
        for stem, draw, text in _LAYER_FIGURES:
            blocks.append(
                writer.add(
                    f"{stem}_{slug}",
                    f"{text}, at {shown}.",
                    partial(draw, data.runs, data.layers, *rng),
                )
            )
    return blocks


def _class_means(data: ReportData, rng: Range) -> dict[str, np.ndarray]:
    """Per activation at this range, the seed mean of per-class accuracy [classes] in percent."""
    by_label: dict[str, list[np.ndarray]] = defaultdict(list)
    for label in data.analysis.labels:
        cell = _chosen_cell(data, label, rng)
        for run in _cell_runs(data, cell) if cell else []:
            stored = data.results.arrays.get(str(run["run_id"]), {})
            if "per_class_accuracy" in stored:
                by_label[label].append(np.asarray(stored["per_class_accuracy"], dtype=float))
    return {
        f"{display_activation(label)} (n={len(values)})": np.mean(values, axis=0)
        for label, values in by_label.items()
    }


def per_class_section(data: ReportData, writer: FigureWriter) -> list[Block]:
    """Per range, test accuracy per class for each activation, averaged over seeds."""
    if not data.ranges:
        return []
    blocks: list[Block] = [Heading("Accuracy per class")]
    for rng in data.ranges:
        shown = format_range(*rng)
        means = _class_means(data, rng)
        if not means:
            blocks.append(Paragraph(f"At {shown} no run stored its per-class accuracy."))
            continue
        caption = f"Final test accuracy per class at {shown}, mean over seeds."
        if data.analysis.lr_selected:
            caption += _AT_SELECTED_LR
        draw = partial(per_class_accuracy, means, CLASS_NAMES)
        blocks.append(writer.add(f"per_class_{range_slug(rng)}", caption, draw))
    return blocks


# the figure sections in the order they appear in the report
SECTIONS = (heatmap_section, curves_section, violin_section, why_section, per_class_section)
