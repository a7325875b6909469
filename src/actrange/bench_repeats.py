"""`actrange bench --repeats N`: the whole benchmark N times, each run in a fresh process.

On a shared machine one benchmark run's ratios swing by a fifth or more with the machine's
load, so a single run says little about whether a target is met. Each run here is exactly what
`actrange bench` without --repeats measures (all lines side by side, (a) included), in its own
process so that no run inherits another's memory or loader workers; the summary gives each
line's median and range over the runs, of its seconds per model-epoch and of its ratio to (a)
in the same run. Every run's whole document is kept in the JSON.
"""

import json
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from actrange.bench_report import format_report

if TYPE_CHECKING:
    from actrange.bench_run import BenchSettings

# one run: its settings (repeats 1), the device name, where to write the JSON -> exit status
RunOnce = Callable[["BenchSettings", str, Path], int]


def child_arguments(settings: "BenchSettings", device_name: str, out: Path) -> list[str]:
    """`actrange bench` options that measure ``settings`` once and write the JSON to ``out``."""
    arguments = [
        "--groups", ",".join(str(g) for g in settings.groups),
        "--batches", str(settings.batches),
        "--notebook-batches", str(settings.notebook_batches),
        "--processes", str(settings.processes),
        "--process-group", str(settings.process_group),
        "--check-epochs", str(settings.check_epochs),
        "--check-images", str(settings.check_images),
        "--device", device_name,
        "--out", str(out),
    ]  # fmt: skip
    if not settings.notebook:
        arguments.append("--skip-notebook")
    return arguments


def run_in_new_process(settings: "BenchSettings", device_name: str, out: Path) -> int:
    """One benchmark run in a fresh Python process; its report goes to stderr, as progress."""
    options = child_arguments(settings, device_name, out)
    command = [sys.executable, "-m", "actrange.cli", "bench", *options]
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    print(finished.stdout, end="", file=sys.stderr, flush=True)
    return finished.returncode


def _spread(values: list[float | None]) -> dict | None:
    """Median, smallest and largest of the values that exist; None when none does."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    return {"median": statistics.median(present), "min": min(present), "max": max(present)}


def summarise(documents: list[dict]) -> list[dict]:
    """Each line's figures over the runs, lines in the order they first appear.

    A line's name can differ between runs (the reduced-precision line takes the group size
    that was fastest in that run), so ``runs`` says how many runs measured it.
    """
    names = list(dict.fromkeys(f["name"] for d in documents for f in d["lines"]))
    summary = []
    for name in names:
        figures = [f for d in documents for f in d["lines"] if f["name"] == name]
        summary.append(
            {
                "name": name,
                "precision": figures[0]["precision"],
                "runs": len(figures),
                "seconds_per_model_epoch": _spread([f["seconds_per_model_epoch"] for f in figures]),
                "x_faster_than_notebook": _spread([f["x_faster_than_notebook"] for f in figures]),
                "percent_of_limit": _spread([f["percent_of_limit"] for f in figures]),
            }
        )
    return summary


def _fastest(entries: list[dict]) -> dict | None:
    if not entries:
        return None
    return min(entries, key=lambda e: e["seconds_per_model_epoch"]["median"])


def _described(entry: dict) -> str:
    """The line and its ratio to (a): engine G=4, 3.97x (2.77x-4.02x) faster than ..."""
    ratio = entry["x_faster_than_notebook"]
    if ratio is None:
        return f"{entry['name'][4:]}, notebook not measured"
    ratios = _range(ratio, lambda v: f"{v:.2f}x")
    return f"{entry['name'][4:]}, {ratios} faster than the notebook pipeline"


def closing_sentences(summary: list[dict]) -> list[str]:
    """The fastest fp32 line and the fastest line of all by median, against (a) in their runs."""
    others = [e for e in summary if not e["name"].startswith("(a)")]
    fastest_fp32 = _fastest([e for e in others if e["precision"] == "fp32"])
    fastest = _fastest(others)
    sentences = []
    if fastest_fp32 is not None:
        sentences.append(f"fastest fp32 line by median: {_described(fastest_fp32)}")
    if fastest is not None:
        same = fastest is fastest_fp32
        sentences.append(f"fastest line by median: {'the same' if same else _described(fastest)}")
    return sentences


def _range(spread: dict | None, text: Callable[[float], str]) -> str:
    if spread is None:
        return "n/a"
    return f"{text(spread['median'])} ({text(spread['min'])}-{text(spread['max'])})"


SUMMARY_HEADER = ("line", "runs", "s/model-epoch", "x faster than (a), same run", "% of limit")


def _summary_row(entry: dict) -> tuple[str, ...]:
    return (
        entry["name"],
        str(entry["runs"]),
        _range(entry["seconds_per_model_epoch"], lambda v: f"{v:.3g}"),
        _range(entry["x_faster_than_notebook"], lambda v: f"{v:.2f}x"),
        _range(entry["percent_of_limit"], lambda v: f"{v:.0f}%"),
    )


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """The first column left-aligned, the others right-aligned, each as wide as its widest."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]


def format_summary(document: dict) -> str:
    """Every run's report, then one aligned row per line: median (smallest-largest)."""
    runs = document["runs"]
    parts = [f"--- run {k} of {len(runs)}\n{format_report(run)}" for k, run in enumerate(runs, 1)]
    title = f"--- summary of {len(runs)} runs: median (smallest-largest)"
    table = _aligned([SUMMARY_HEADER, *(_summary_row(e) for e in document["summary"])])
    closing = closing_sentences(document["summary"])
    return "\n\n".join([*parts, "\n".join([title, *table]), "\n".join(closing)])


def run_repeated(
    settings: "BenchSettings",
    device_name: str,
    out: Path | None,
    run_once: RunOnce = run_in_new_process,
) -> int:
    """``settings.repeats`` benchmark runs one after another (validated settings), then the
    summary. Prints the runs' reports and the summary; writes {"runs": [...], "summary": [...]}
    to ``out``. A failed run stops the series with its exit status, and nothing is written.
    """
    once = replace(settings, repeats=1)
    documents = []
    with tempfile.TemporaryDirectory(prefix="actrange-bench-") as scratch:
        for k in range(1, settings.repeats + 1):
            print(f"benchmark run {k} of {settings.repeats}", file=sys.stderr, flush=True)
            path = Path(scratch) / f"run-{k}.json"
            status = run_once(once, device_name, path)
            if status != 0:
                print(f"actrange: benchmark run {k} failed (exit status {status})", file=sys.stderr)
                return status
            documents.append(json.loads(path.read_text()))
    document = {"command": sys.argv, "runs": documents, "summary": summarise(documents)}
    print(format_summary(document))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n")
    return 0
