"""The study's report: report.html (self-contained) and report.md, with PNG figures beside them.

The report reads the latest experiment of a result directory and puts the verdict first, then
the numbers per cell, the figures, the layer evidence for why, and finally the config, the
environment and the state of every run, diverged and failed ones included.
"""

import math
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from actrange.analysis import ANALYSED_STATUSES, Analysis, CellSummary, analyse, range_order
from actrange.config import format_number
from actrange.exports import ResultSet, load_results
from actrange.report_figures import SECTIONS, FigureWriter, ReportData
from actrange.report_render import (
    FIGURE_FOLDER,
    Block,
    Claim,
    Code,
    Heading,
    Paragraph,
    Table,
    to_html,
    to_markdown,
)
from actrange.stats import Summary
from actrange.store import Store, write_atomically
from actrange.verdict import verdict
from actrange.wording import display_activation, format_range

DEFAULT_THRESHOLD = 80.0
DEFAULT_SPLIT_EPOCH = 5
STATUS_ORDER = ("finished", "diverged", "running", "pending", "failed")


def _settings(config_toml: str) -> dict[str, Any]:
    """The experiment's resolved config as a dict; empty when none was recorded or readable."""
    try:
        return tomllib.loads(config_toml)
    except tomllib.TOMLDecodeError:
        return {}


def _number_setting(settings: dict[str, Any], key: str, default: float) -> float:
    value = settings.get(key, default)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number and math.isfinite(value) else default


def _split_epoch(settings: dict[str, Any]) -> int:
    """The first switch epoch of the config, else DEFAULT_SPLIT_EPOCH."""
    switches = settings.get("switches", settings.get("switch", []))
    for switch in switches if isinstance(switches, list) else [switches]:
        if isinstance(switch, dict) and isinstance(switch.get("epoch"), int):
            return max(1, switch["epoch"])
    return DEFAULT_SPLIT_EPOCH


def _counted(values: list[Any], unit: str) -> str:
    """ "3 seeds (0, 1, 2)" style counts; "" for an empty list."""
    unique = sorted(set(values))
    if not unique:
        return ""
    texts = [v if isinstance(v, str) else format_number(v) for v in unique[:12]]
    shown = ", ".join(texts) + (", ..." if len(unique) > 12 else "")
    return f"{len(unique)} {unit}{'s' if len(unique) != 1 else ''} ({shown})"


def _status_counts(results: ResultSet) -> str:
    counts = Counter(str(r["status"]) for r in results.runs)
    known = [s for s in STATUS_ORDER if counts[s]] + sorted(set(counts) - set(STATUS_ORDER))
    return ", ".join(f"{counts[s]} {s}" for s in known) or "none"


def _source_sentence(results: ResultSet, analysed: int) -> str:
    """Where the numbers come from: how many runs, epochs and seeds."""
    runs = results.runs
    if not runs:
        return f"The result directory {results.directory.name} holds no planned runs yet."
    cells = Counter((r["activation"], r["range_lo"], r["range_hi"], r["lr"]) for r in runs)
    low, high = min(cells.values()), max(cells.values())
    per_cell = f"{low}" if low == high else f"{low}–{high}"
    epochs = " or ".join(format_number(e) for e in sorted({r["epochs"] for r in runs}))
    ranges = sorted({(r["range_lo"], r["range_hi"]) for r in runs}, key=range_order)
    seeds = ", ".join(format_number(s) for s in sorted({r["seed"] for r in runs}))
    return (
        f"The numbers come from the result directory {results.directory.name}: "
        f"{len(runs)} runs planned ({_status_counts(results)}), of which {analysed} finished "
        f"or diverged and are analysed here. Each run trains for {epochs} epochs. The grid is "
        f"{_counted([display_activation(r['activation']) for r in runs], 'activation')} × "
        f"{len(ranges)} pixel range{'s' if len(ranges) != 1 else ''} "
        f"({', '.join(format_range(*rng) for rng in ranges)}) × "
        f"{_counted([r['lr'] for r in runs], 'learning rate')}, with {per_cell} seeds per cell "
        f"(seeds {seeds})."
    )


def _verdict_section(analysis: Analysis) -> list[Block]:
    judged = verdict(analysis)
    blocks: list[Block] = [Heading("Verdict")]
    for number, claim in enumerate(judged.claims, start=1):
        where = f"(judged at {format_range(*claim.range)})" if claim.range else ""
        blocks.append(Claim(number, claim.outcome, claim.hypothesis, where, claim.sentence))
        if claim.check:
            blocks.append(Paragraph(claim.check, lead="Rank check."))
    blocks.append(Paragraph(judged.interaction, lead="Interaction."))
    blocks.append(Paragraph(judged.runs, lead="Runs."))
    if judged.note:
        blocks.append(Paragraph(judged.note, lead="Note."))
    blocks.append(
        Paragraph(
            f"A half is supported when the difference of mean final test accuracy points its way "
            f"with Holm-adjusted p < {judged.alpha:g} (Welch's t-test), not supported when it "
            f"points significantly the other way or its whole 95% interval lies within "
            f"±{judged.margin:g} points, and inconclusive otherwise. Each half's rank check "
            f"(the Hodges–Lehmann shift with Moses' 95% interval and the Mann–Whitney U test, "
            f"Holm-adjusted) makes the same comparison without assuming normally distributed "
            f"accuracies and says whether it agrees; the verdict itself follows Welch's test.",
            lead="Rule.",
        )
    )
    return blocks


def _mean_ci(summary: Summary, digits: int) -> str:
    """ "86.2 ± 0.4" with the half-width of the 95% interval; the mean alone for one value."""
    if summary.n == 0:
        return "–"
    if summary.n == 1:
        return f"{summary.mean:.{digits}f}"
    return f"{summary.mean:.{digits}f} ± {summary.ci_high - summary.mean:.{digits}f}"


def _reach(cell: CellSummary) -> str:
    reached = f"({cell.reached_threshold}/{cell.n})"
    if cell.reached_threshold == 0:
        return f"not reached {reached}"
    return f"{_mean_ci(cell.epochs_to_threshold, 1)} {reached}"


def _cells_section(analysis: Analysis) -> list[Block]:
    if not analysis.cells:
        return [Heading("Cells"), Paragraph("No run has finished yet, so no cell has numbers.")]
    cells = sorted(analysis.cells, key=lambda c: (range_order(c.range), c.activation, c.lr))
    selected = analysis.selected_lr
    rows = []
    for cell in cells:
        compared = analysis.lr_selected and selected.get((cell.activation, *cell.range)) == cell.lr
        rows.append(
            (
                display_activation(cell.activation),
                format_range(*cell.range),
                format_number(cell.lr) + (" *" if compared else ""),
                str(cell.n),
                _mean_ci(cell.accuracy, 1),
                _mean_ci(cell.loss_auc, 3),
                _reach(cell),
                str(cell.n_diverged),
                str(cell.n_stuck),
            )
        )
    threshold = format_number(analysis.accuracy_threshold)
    note = (
        "± is the half-width of the 95% t-interval over seeds (none with a single seed). Loss AUC "
        "is the mean height of the training-loss curve over runs that never diverged; epochs to "
        f"{threshold}% are averaged over the runs that reached it. Stuck: finished at or below "
        f"{format_number(analysis.stuck_accuracy)}% accuracy."
    )
    if analysis.lr_selected:
        note += " * marks the learning rate each comparison uses (the best mean accuracy)."
    header = (
        "Activation",
        "Range",
        "lr",
        "n",
        "Final test accuracy (%)",
        "Loss AUC",
        f"Epochs to {threshold}% (reached)",
        "Diverged",
        "Stuck",
    )
    numeric = (False, False, True, True, True, True, True, True, True)
    return [Heading("Cells"), Table(header, tuple(rows), numeric, note)]


def _problem_rows(store: Store, results: ResultSet) -> list[tuple[str, ...]]:
    """One row per run that did not finish cleanly, with what happened to it."""
    errors = {
        r["run_id"]: str(r["arrays"].get("error", ""))
        for r in store.runs([r["run_id"] for r in results.runs if r["status"] == "failed"])
    }
    stored = Counter(row["run_id"] for row in results.epochs)
    rows = []
    for run in results.runs:
        status = str(run["status"])
        if status == "finished":
            continue
        progress = f"{stored[run['run_id']]} of {run['epochs']} epochs stored"
        detail = {
            "diverged": f"training loss not finite from epoch {run['diverged_epoch']}",
            "failed": f"{errors.get(run['run_id'], '')} ({progress})",
        }.get(status, progress)
        rows.append(
            (
                str(run["run_id"]),
                display_activation(str(run["activation"])),
                format_range(run["range_lo"], run["range_hi"]),
                format_number(run["lr"]),
                str(run["seed"]),
                status,
                detail,
            )
        )
    return rows


def _environment_rows(environment: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    rows = []
    for key, value in environment.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        rows.append((str(key), "none" if value is None else str(value)))
    return tuple(rows)


def _setup_section(store: Store, results: ResultSet) -> list[Block]:
    blocks: list[Block] = [
        Heading("Runs, config and environment"),
        Paragraph(f"{len(results.runs)} runs in this experiment: {_status_counts(results)}."),
    ]
    problems = _problem_rows(store, results)
    if problems:
        header = ("Run", "Activation", "Range", "lr", "Seed", "Status", "What happened")
        blocks.append(Table(header, tuple(problems)))
    blocks.append(Heading("Resolved config", 3))
    blocks.append(Code(results.config_toml.strip() or "(no config was recorded)"))
    blocks.append(Heading("Environment", 3))
    environment = _environment_rows(results.environment)
    if environment:
        blocks.append(Table(("Item", "Value"), environment))
    else:
        blocks.append(Paragraph("No environment was recorded."))
    return blocks


def _report_data(results: ResultSet, settings: dict[str, Any]) -> ReportData:
    done = [r for r in results.runs if r["status"] in ANALYSED_STATUSES]
    done_ids = {r["run_id"] for r in done}
    analysis = analyse(
        results.runs,
        results.epochs,
        accuracy_threshold=_number_setting(settings, "accuracy_threshold", DEFAULT_THRESHOLD),
    )
    ranges = sorted({cell.range for cell in analysis.cells}, key=range_order)
    return ReportData(
        results=results,
        runs=done,
        epochs=[row for row in results.epochs if row["run_id"] in done_ids],
        layers=[row for row in results.layers if row["run_id"] in done_ids],
        analysis=analysis,
        ranges=ranges,
        split_epoch=_split_epoch(settings),
    )


def write_report(store: Store, directory: Path) -> list[Path]:
    """Write report.html, report.md and the figures for the latest experiment in ``store``.

    Args:
        store: the open result store to read.
        directory: where to write; figures go into ``directory/figures/``.

    Returns:
        [report.html, report.md, *figure PNGs], in the order the figures appear.
    """
    directory = Path(directory)
    results = load_results(store)
    settings = _settings(results.config_toml)
    data = _report_data(results, settings)
    name = str(settings.get("name", "")) or "(unnamed)"
    writer = FigureWriter(directory / FIGURE_FOLDER)

    blocks: list[Block] = [
        Heading(f"actrange report: experiment {name}", 1),
        Paragraph(_source_sentence(results, len(data.runs))),
    ]
    if not data.runs:
        blocks.append(Paragraph("No run has finished yet, so there are no results to show."))
    blocks += _verdict_section(data.analysis)
    blocks += _cells_section(data.analysis)
    for section in SECTIONS:
        blocks += section(data, writer)
    blocks += _setup_section(store, results)
    writer.remove_stale()

    html_path, md_path = directory / "report.html", directory / "report.md"
    write_atomically(html_path, to_html(f"actrange report: {name}", blocks).encode())
    write_atomically(md_path, to_markdown(blocks).encode())
    return [html_path, md_path, *writer.written]
