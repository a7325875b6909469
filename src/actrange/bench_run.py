"""The `actrange bench` command: its validated settings, the lines in order, the JSON document.

The lines are measured in one process, one after the other, so that their ratios compare the
same machine in the same state: (b), the engine's group sizes in fp32, the fastest of them in
the device's reduced precisions, the worker-process lines, and the notebook's pipeline (a) last.
Then the precision check trains the study's runs in each precision and compares their results.
"""

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from actrange.bench import (
    BATCH,
    EPOCH_STEPS,
    MAX_GROUP,
    NOTEBOOK_WORKERS,
    RECORD_VALUES,
    WARMUP_STEPS,
    Line,
    flop_per_image,
    matmul_peak,
    measure_engine,
    measure_in_memory,
    measure_notebook,
)
from actrange.bench_precision import CheckSettings, precision_check
from actrange.bench_repeats import run_repeated
from actrange.bench_report import closing_sentence, format_report
from actrange.bench_workers import measure_workers
from actrange.config import TRAIN_IMAGES
from actrange.cpu_kernels import kernel_status, turned_off
from actrange.data import FashionMNIST, load_fashion_mnist
from actrange.devicedata import DeviceData
from actrange.environment import device_description, environment_record, resolve_device
from actrange.errors import UsageError

MAX_CHECK_EPOCHS = 20
MAX_REPEATS = 20


@dataclass(frozen=True)
class BenchSettings:
    """What `actrange bench` measures; :meth:`validated` checks every value.

    Attributes:
        groups: engine group sizes, each measured in fp32.
        batches: timed training steps per engine and (b) line, after an untimed epoch.
        notebook: measure line (a).
        notebook_batches: timed steps of line (a); a whole epoch by default, as the notebook
            pays it: its loader's prefetching flatters a short window.
        workers: loader processes of line (a); the notebook used 2.
        processes: 2 or more also measures that many engine processes side by side, the cores
            shared out as `actrange run --workers` does, each with ``process_group`` models.
        check_epochs: epochs of the precision check; 0 skips it. Two whole epochs by default,
            the length after which the study's author reported each cell's accuracy.
        check_images: training images of the precision check.
        repeats: whole runs of the benchmark, each in a fresh process, then their summary.
    """

    groups: list[int] = field(default_factory=lambda: [1, 4, 16])
    batches: int = 20
    notebook: bool = True
    notebook_batches: int = EPOCH_STEPS
    workers: int = NOTEBOOK_WORKERS
    processes: int = 0
    process_group: int = 4
    check_epochs: int = 2
    check_images: int = TRAIN_IMAGES
    repeats: int = 1

    def validated(self) -> "BenchSettings":
        """These settings with duplicate group sizes dropped; UsageError names a bad value."""
        if not self.groups:
            raise UsageError("--groups: give at least one group size, e.g. 1,4,16")
        for group in [*self.groups, self.process_group]:
            if not 1 <= group <= MAX_GROUP:
                raise UsageError(f"--groups: group size {group} is outside 1..{MAX_GROUP}")
        steps_settings = (
            ("--batches", self.batches),
            ("--notebook-batches", self.notebook_batches),
        )
        for name, steps in steps_settings:
            if not 1 <= steps <= EPOCH_STEPS:
                raise UsageError(f"{name}: {steps} is outside 1..{EPOCH_STEPS} (one epoch)")
        if not 0 <= self.processes <= 64:
            raise UsageError(f"--processes: {self.processes} is outside 0..64")
        if not 0 <= self.check_epochs <= MAX_CHECK_EPOCHS:
            raise UsageError(
                f"--check-epochs: {self.check_epochs} is outside 0..{MAX_CHECK_EPOCHS}"
            )
        if not 1 <= self.repeats <= MAX_REPEATS:
            raise UsageError(f"--repeats: {self.repeats} is outside 1..{MAX_REPEATS}")
        if not BATCH <= self.check_images <= TRAIN_IMAGES:
            raise UsageError(
                f"--check-images: {self.check_images} is outside {BATCH}..{TRAIN_IMAGES}"
            )
        return BenchSettings(**{**asdict(self), "groups": list(dict.fromkeys(self.groups))})


def reduced_precisions(device: torch.device) -> list[str]:
    """The precisions other than fp32 worth measuring: TF32 and bf16 on CUDA, bf16 on a CPU."""
    if device.type == "cuda":
        return ["tf32", "bf16"]
    return ["bf16"] if device.type == "cpu" else []


def _say(name: str) -> None:
    # progress goes to stderr, so that stdout holds the report alone
    print(f"measuring {name}", file=sys.stderr, flush=True)


def _measure_all(
    dataset: FashionMNIST, data: DeviceData, settings: BenchSettings, device: torch.device
) -> list[Line]:
    """(b), (c) per group and precision, (c) without the compiled CPU kernels, (c) in worker
    processes, then (a) if asked, placed first."""
    batches = settings.batches
    _say("(b) in-memory StudyCNN")
    lines = [measure_in_memory(dataset, batches, device)]
    for group in settings.groups:
        _say(f"(c) engine G={group} fp32")
        lines.append(measure_engine(data, group, batches, "fp32"))
    # each reduced precision at the group size that was fastest in fp32, so that the two compare
    # the engine at its best
    fastest = min(lines[1:], key=lambda line: line.seconds_per_model_epoch).group
    precisions = ["fp32", *reduced_precisions(device)]
    for precision in precisions[1:]:
        _say(f"(c) engine G={fastest} {precision}")
        lines.append(measure_engine(data, fastest, batches, precision))
    if device.type == "cpu" and kernel_status().available:
        _say(f"(c) engine G={fastest} fp32, PyTorch operations only")
        with turned_off():
            plain = measure_engine(data, fastest, batches, "fp32")
        plain.name += ", no compiled kernels"
        lines.append(plain)
    processes, process_group = settings.processes, settings.process_group
    if processes > 1:
        for precision in precisions:
            _say(f"(c) engine {processes} processes x G={process_group} {precision}")
            lines.append(measure_workers(processes, process_group, batches, device, precision))
    # (a) last: its loader's worker processes were seen to slow the lines measured after it
    # threefold on a 2-core machine, even once closed
    if settings.notebook:
        _say("(a) notebook pipeline")
        notebook = measure_notebook(dataset, settings.notebook_batches, device, settings.workers)
        lines.insert(0, notebook)
    return lines


def run_benchmark(settings: BenchSettings, device_name: str, out: Path | None) -> int:
    """Measure every line, run the precision check, print the report, write the JSON to ``out``.

    With ``settings.repeats`` above 1 the whole benchmark runs that many times, each run in a
    fresh process, followed by their summary (:mod:`actrange.bench_repeats`).

    Raises:
        UsageError: a setting out of range, or an unavailable device.
    """
    settings = settings.validated()
    device = resolve_device(device_name)
    if settings.repeats > 1:
        return run_repeated(settings, device_name, out)
    dataset = load_fashion_mnist()
    data = DeviceData(dataset, device)

    # the engine sets the TF32 flags for its precision; they are put back after each part so
    # that (a), (b) and the fp32 runs train under PyTorch's defaults, as the notebook did
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        lines = _measure_all(dataset, data, settings, device)
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags
        check = None
        if settings.check_epochs > 0:
            _say("precision check")
            check_settings = CheckSettings(settings.check_epochs, settings.check_images)
            check = precision_check(dataset, data, reduced_precisions(device), check_settings)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags

    document = _document(lines, device, settings, int(dataset.test_labels.shape[0]))
    document["precision_check"] = check
    print(format_report(document))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


def limit_seconds(flop: float, peaks: dict[str, float], precision: str) -> float:
    """Seconds per model-epoch of a training step's FLOP at the faster of the precision's own
    matmul peak and fp32's.

    A step asked for in a reduced precision can always be computed in fp32 instead, so fp32's
    rate bounds it too: on a CPU without bf16 instructions, bf16 products are emulated and ran
    hundreds of times slower than fp32 ones, which would make a limit at bf16's rate meaningless.
    """
    return TRAIN_IMAGES * flop / max(peaks[precision], peaks.get("fp32", 0.0))


def line_figures(line: Line, notebook: Line | None, flop: float, peaks: dict[str, float]) -> dict:
    """Every figure of one line, JSON-able.

    Args:
        line: the measurement.
        notebook: line (a), or None when it was skipped (the ratio is then None).
        flop: FLOP per image of a training step.
        peaks: matmul FLOP/s per precision.
    Returns:
        the line's fields, its seconds and images per model-epoch, the ratio to (a), the share
        of the arithmetic limit and, for engine lines, the statistics and evaluation shares.
    """
    model_epoch = line.seconds_per_model_epoch
    limit = limit_seconds(flop, peaks, line.precision)
    figures = asdict(line)
    figures["seconds_per_model_epoch"] = model_epoch
    figures["images_per_second"] = TRAIN_IMAGES / model_epoch
    ratio = notebook.seconds_per_model_epoch / model_epoch if notebook is not None else None
    figures["x_faster_than_notebook"] = ratio
    figures["percent_of_limit"] = 100 * limit / model_epoch
    if line.statistics_seconds is not None:
        # both happen once per epoch of the whole group
        group_epoch = model_epoch * line.group
        figures["statistics_percent_of_epoch"] = 100 * line.statistics_seconds / group_epoch
        figures["evaluation_seconds_per_model"] = line.evaluation_seconds / line.group
    return figures


def _document(
    lines: list[Line], device: torch.device, settings: BenchSettings, test_images: int
) -> dict:
    """Every figure, the settings, the machine and the command, as one JSON-able dict."""
    flop = flop_per_image()
    peaks = {p: matmul_peak(device, p) for p in dict.fromkeys(line.precision for line in lines)}
    notebook = next((line for line in lines if line.name.startswith("(a)")), None)
    figures = [line_figures(line, notebook, flop, peaks) for line in lines]
    if device.type == "cuda":
        memory = "CUDA peak allocated, reset before each line"
    else:
        memory = (
            "process peak RSS, cumulative over the lines so far, loader workers excluded; "
            "a processes line adds up its processes' peaks"
        )
    constants = {"warmup_steps": WARMUP_STEPS, "batch_size": BATCH, "epoch_steps": EPOCH_STEPS}
    return {
        "command": sys.argv,
        "settings": asdict(settings) | constants | {"record_values": RECORD_VALUES},
        "device": device_description(device),
        "environment": environment_record(device),
        "torch_threads": torch.get_num_threads(),
        "test_images": test_images,
        "flop_per_image": flop,
        "peak_flop_per_second": peaks,
        "limit_seconds_per_model_epoch": {p: limit_seconds(flop, peaks, p) for p in peaks},
        "memory": memory,
        "lines": figures,
        "best": closing_sentence(figures),
    }
