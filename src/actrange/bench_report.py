"""The benchmark's report as text: the machine, an aligned table of lines, the side costs.

It reads the JSON-able document that :mod:`actrange.bench` builds, so a stored document can be
printed again (``format_report(json.load(...))``).
"""

from actrange.bench_precision import format_check
from actrange.config import TRAIN_IMAGES

TABLE = (  # header, width (negative: left-aligned), cell text from a line's figures
    ("line", -24, lambda f: f["name"]),
    ("s/model-epoch", 14, lambda f: f"{f['seconds_per_model_epoch']:.4g}"),
    ("images/s", 10, lambda f: f"{f['images_per_second']:,.0f}"),
    ("x faster than (a)", 18, lambda f: _ratio(f["x_faster_than_notebook"])),
    ("% of limit", 11, lambda f: f"{f['percent_of_limit']:.1f}%"),
    ("peak memory", 12, lambda f: f"{f['peak_memory_bytes'] / 2**20:,.0f} MiB"),
)


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _row(texts: list[str], name_width: int) -> str:
    widths = [-name_width] + [width for _, width, _ in TABLE[1:]]
    cells = [f"{t:<{-w}}" if w < 0 else f"{t:>{w}}" for t, w in zip(texts, widths, strict=True)]
    return "  ".join(cells)


def _name_width(figures: list[dict]) -> int:
    """The name column: as wide as the longest line name, and no narrower than the header's."""
    return max([-TABLE[0][1], *(len(f["name"]) for f in figures)])


def format_table(figures: list[dict]) -> str:
    """A header row, then one aligned row per line."""
    width = _name_width(figures)
    rows = [_row([header for header, _, _ in TABLE], width)]
    rows += [_row([cell(f) for _, _, cell in TABLE], width) for f in figures]
    return "\n".join(rows)


def closing_sentence(figures: list[dict]) -> str:
    """The fastest line other than (a), compared with (a) when it was measured."""
    others = [f for f in figures if not f["name"].startswith("(a)")]
    best = min(others, key=lambda f: f["seconds_per_model_epoch"])
    name, limit = best["name"][4:], f"{best['percent_of_limit']:.0f}% of the arithmetic limit"
    if best["x_faster_than_notebook"] is None:
        seconds = best["seconds_per_model_epoch"]
        return f"best: {name} at {seconds:.3g} s per model-epoch, {limit} (notebook not measured)"
    ratio = best["x_faster_than_notebook"]
    return f"best: {name} is {ratio:.1f}x faster than the notebook pipeline, at {limit}"


def _header(document: dict) -> list[str]:
    limits, settings = document["limit_seconds_per_model_epoch"], document["settings"]
    torch_version = document["environment"]["packages"]["torch"]
    lines = [
        f"device  {document['device']} | torch {torch_version} | "
        f"{document['torch_threads']} threads",
        f"step    {document['flop_per_image'] / 1e6:.2f} MFLOP per image "
        "(forward + backward, convolutions and matmuls)",
    ]
    peaks = document["peak_flop_per_second"]
    for precision, peak in peaks.items():
        limit = limits[precision]
        at_fp32 = " (at fp32's rate, the faster)" if peak < peaks.get("fp32", 0.0) else ""
        lines.append(
            f"peak    {precision} matmul {peak / 1e12:.3g} TFLOP/s: "
            f"limit {limit:.3g} s per model-epoch{at_fp32}"
        )
    batch = settings["batch_size"]
    lines.append(
        f"timed   {settings['batches']} steps of {batch} images per model after warm-up; "
        f"a model-epoch is {settings['epoch_steps']} steps, {TRAIN_IMAGES:,} images"
    )
    return lines


def _costs(document: dict) -> list[str]:
    engine_lines = [f for f in document["lines"] if f["statistics_seconds"] is not None]
    statistics, evaluation = [], []
    width = _name_width(engine_lines) - 4
    for f in engine_lines:
        name = f["name"][4:]
        share = f["statistics_percent_of_epoch"]
        statistics.append(
            f"  {name:<{width}}  {f['statistics_seconds']:.4g} s, {share:.2f}% of epoch"
        )
        per_model = f"{f['evaluation_seconds_per_model']:.4g} s per model"
        evaluation.append(
            f"  {name:<{width}}  {f['evaluation_seconds']:.4g} s per group, {per_model}"
        )
    if not engine_lines:
        return []
    return [
        "always-on statistics, once per epoch (weight copy, layer statistics, value samples):",
        *statistics,
        f"evaluation on {document['test_images']:,} test images, timed apart:",
        *evaluation,
    ]


def format_report(document: dict) -> str:
    """The header, the table, the side costs, the precision check, and the closing sentence."""
    table, memory = format_table(document["lines"]), f"peak memory: {document['memory']}"
    lines = [*_header(document), "", table, "", memory, *_costs(document), ""]
    check = document.get("precision_check")
    if check is not None:
        lines += [*format_check(check), ""]
    return "\n".join([*lines, document["best"]])
