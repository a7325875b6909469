"""Training speed, side by side: the study notebook's pipeline, the plain model, and the engine.

Every line is timed in one process on the same data, with the device synchronised before each
clock read and warm-up steps excluded, then extrapolated to seconds per model-epoch: one model's
pass over the 60,000 training images at batch 128 (469 steps). The arithmetic limit is the time
the training step's FLOP would take at the machine's measured matmul peak.

The report goes to stdout; the JSON document (every figure, the machine, the command) is written
only when an output path is given, so that stdout stays a readable table.

Line (a) leaves out the notebook's own first-batch recording (a numpy sample of every layer) and
the restart of its loader's workers at each epoch, so its time is a lower bound on the notebook's.
"""

import json
import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from actrange import engine
from actrange.bench_report import closing_sentence, format_report
from actrange.config import TRAIN_IMAGES, PixelRange, RunConfig
from actrange.data import FashionMNIST, load_fashion_mnist, normalise
from actrange.devicedata import DeviceData
from actrange.environment import device_description, environment_record, resolve_device
from actrange.errors import UsageError
from actrange.grouped import activation_plan, group_forward, to_group_layout
from actrange.model import StudyCNN

BATCH = 128
EPOCH_STEPS = math.ceil(TRAIN_IMAGES / BATCH)  # 469
WARMUP_STEPS = 5  # lets allocators, kernels and the loader's prefetch queue settle
NOTEBOOK_WORKERS = 2
NOTEBOOK_RANGE = PixelRange(-1.0, 1.0)  # Normalize((0.5,), (0.5,))
LR, MOMENTUM, RECORD_VALUES = 0.01, 0.5, 5000
MATMUL_SIDE = {"cpu": 2048, "cuda": 8192}  # large enough to reach the device's peak
MAX_GROUP = 4096


def seconds_per_model_epoch(
    seconds: float, steps: int, group: int, once_per_epoch: float = 0.0
) -> float:
    """Extrapolate ``steps`` timed steps of ``group`` models to one model over 469 steps.

    Args:
        seconds: time of the timed steps.
        steps: timed steps, each a batch of 128 images per model.
        group: models trained together in those steps.
        once_per_epoch: part of ``seconds`` spent once per epoch whatever its length (the
            engine's recorded batch); it is counted once, not scaled with the steps.
    Returns:
        seconds for one model's pass over the 60,000 training images.
    """
    per_step = (seconds - once_per_epoch) / steps
    return (per_step * EPOCH_STEPS + once_per_epoch) / group


@dataclass
class Line:
    """One measured configuration: ``steps`` timed steps of ``group`` models took ``seconds``.

    The engine's lines also hold the cost of its once-per-epoch statistics and of one
    evaluation of the group on the test set.
    """

    name: str
    group: int
    precision: str
    steps: int
    seconds: float
    peak_memory_bytes: int
    statistics_seconds: float | None = None
    evaluation_seconds: float | None = None

    @property
    def seconds_per_model_epoch(self) -> float:
        """The measured time extrapolated to one model and one full epoch."""
        once = self.statistics_seconds or 0.0
        return seconds_per_model_epoch(self.seconds, self.steps, self.group, once)


# ---------------------------------------------------------------------------------------------
# the machine: FLOP of a training step, matmul peak, clocks and memory


def flop_per_image(batch: int = 16) -> float:
    """FLOP of one StudyCNN training step (forward + backward) per image, convs and matmuls only."""
    model = StudyCNN("relu")
    images = torch.randn(batch, 1, 28, 28)  # [B, 1, 28, 28]
    labels = torch.zeros(batch, dtype=torch.long)  # [B]
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(images), labels).backward()
    return counter.get_total_flops() / batch


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_peak(device: torch.device, precision: str = "fp32", side: int | None = None) -> float:
    """The best FLOP/s of a square matmul in ``precision`` (fp32, tf32, bf16) on ``device``."""
    side = side or MATMUL_SIDE.get(device.type, MATMUL_SIDE["cpu"])
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    left = torch.randn(side, side, device=device, dtype=dtype)  # [n, n]
    right = torch.randn(side, side, device=device, dtype=dtype)  # [n, n]
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        best = math.inf
        for _ in range(4):  # the minimum leaves out the first call's warm-up
            _synchronise(device)
            started = time.perf_counter()
            left @ right
            _synchronise(device)
            best = min(best, time.perf_counter() - started)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = allowed
    return 2 * side**3 / best


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_memory(device: torch.device) -> int:
    """CUDA: peak allocated since the last reset. Else the process's peak RSS, never reset."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


# ---------------------------------------------------------------------------------------------
# (a) the notebook's pipeline and (b) the plain model on tensors in memory


class NotebookDataset(Dataset):
    """Images served one at a time as torchvision's FashionMNIST + ToTensor + Normalize serve them.

    Each step below is one torchvision takes for every sample (torchvision itself is not a
    dependency), so the per-sample cost is the notebook's.

    Args:
        images: uint8 [N, 28, 28] tensor (torchvision keeps the training set as one).
        labels: int64 [N] tensor.
        mean, std: Normalize's parameters; (0.5, 0.5) maps pixels to [-1, 1].
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float) -> None:
        self.images, self.labels = images, labels
        self.transforms = [_to_tensor, partial(_normalize, mean=(mean,), std=(std,))]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.images[index], int(self.labels[index])
        picture = Image.fromarray(image.numpy())  # a 2-D uint8 array is mode "L"
        for transform in self.transforms:  # Compose
            picture = transform(picture)
        return picture, label


def _to_tensor(picture: Image.Image) -> torch.Tensor:
    """ToTensor on a mode "L" PIL image: copied to an array, HWC -> CHW, scaled to [0, 1]."""
    pixels = torch.from_numpy(np.array(picture, np.uint8, copy=True))  # uint8 [28, 28]
    width, height = picture.size
    image = pixels.view(height, width, len(picture.getbands())).permute((2, 0, 1)).contiguous()
    return image.to(dtype=torch.get_default_dtype()).div(255)


def _normalize(image: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    """Normalize, not in place: a copy; mean and std made tensors and checked on every call."""
    image = image.clone()
    mean_t = torch.as_tensor(mean, dtype=image.dtype, device=image.device)
    std_t = torch.as_tensor(std, dtype=image.dtype, device=image.device)
    if (std_t == 0).any():
        raise ValueError("std evaluated to zero")
    return image.sub_(mean_t.view(-1, 1, 1)).div_(std_t.view(-1, 1, 1))


def _cycle(make: Callable[[], Iterator]) -> Iterator:
    """Pass after pass of ``make()``; a loader restarts its workers each pass, as each epoch."""
    while True:
        yield from make()


def _timed_steps(model: StudyCNN, batches: Iterator, device: torch.device, timed: int) -> float:
    """Seconds of ``timed`` notebook-style SGD steps after WARMUP_STEPS untimed ones."""
    model.to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)
    loss_sum = 0.0
    for step in range(WARMUP_STEPS + timed):
        if step == WARMUP_STEPS:
            _synchronise(device)
            started = time.perf_counter()
        images, labels = next(batches)
        images, labels = images.to(device), labels.to(device)
        loss = F.cross_entropy(model(images), labels)
        loss_sum += loss.item()  # the notebook reads the loss every step: a sync point on CUDA
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _synchronise(device)
    return time.perf_counter() - started


def measure_notebook(
    dataset: FashionMNIST, batches: int, device: torch.device, workers: int
) -> Line:
    """(a) DataLoader(shuffle, ``workers`` processes) over per-sample conversion, StudyCNN, SGD."""
    pixels = NotebookDataset(
        dataset.train_images, dataset.train_labels, NOTEBOOK_RANGE.mean, NOTEBOOK_RANGE.std
    )
    loader = DataLoader(pixels, batch_size=BATCH, shuffle=True, num_workers=workers)
    _reset_peak_memory(device)
    source = _cycle(lambda: iter(loader))
    seconds = _timed_steps(StudyCNN("relu"), source, device, batches)
    source.close()  # stops the workers now, before they compete with the next line
    return Line("(a) notebook pipeline", 1, "fp32", batches, seconds, _peak_memory(device))


def _in_memory_batches(images: torch.Tensor, labels: torch.Tensor) -> Iterator:
    """Shuffled batches gathered by index from [N, 1, 28, 28] images already on the device."""
    while True:
        order = torch.randperm(labels.shape[0], device=labels.device)  # [N]
        for start in range(0, order.shape[0], BATCH):
            index = order[start : start + BATCH]  # [b]
            yield images[index], labels[index]


def measure_in_memory(dataset: FashionMNIST, batches: int, device: torch.device) -> Line:
    """(b) the notebook's model and step, with the data normalised once and held on the device."""
    _reset_peak_memory(device)
    images = normalise(dataset.train_images.to(device), NOTEBOOK_RANGE.mean, NOTEBOOK_RANGE.std)
    labels = dataset.train_labels.to(device)  # [N]
    source = _in_memory_batches(images[:, None], labels)  # images [N, 1, 28, 28]
    seconds = _timed_steps(StudyCNN("relu"), source, device, batches)
    return Line("(b) in-memory StudyCNN", 1, "fp32", batches, seconds, _peak_memory(device))


# ---------------------------------------------------------------------------------------------
# (c) the engine, its always-on statistics, and its evaluation pass


def _engine_runs(group: int, batches: int, precision: str) -> list[RunConfig]:
    """``group`` runs of the study's settings; epoch 1 is warm-up, epoch 2 is timed."""
    study = RunConfig("relu", NOTEBOOK_RANGE, 0, LR, MOMENTUM, BATCH, 2, batches * BATCH)
    run = replace(study, record_values=RECORD_VALUES, precision=precision)
    return [replace(run, seed=seed) for seed in range(group)]


def measure_engine(data: DeviceData, group: int, batches: int, precision: str) -> Line:
    """(c) engine.train_group for ``group`` models: epoch 2's training seconds, as reported."""
    runs = _engine_runs(group, batches, precision)
    reports: list[engine.EpochReport] = []
    _reset_peak_memory(data.device)
    state = engine.train_group(runs, data, on_epoch=lambda report, _: reports.append(report))
    memory = _peak_memory(data.device)
    steps = math.ceil(min(batches * BATCH, data.train_labels.shape[0]) / BATCH)
    suffix = "" if precision == "fp32" else f" {precision}"
    name = f"(c) engine G={group}{suffix}"
    line = Line(name, group, precision, steps, reports[-1].seconds, memory)
    line.statistics_seconds = statistics_seconds(runs, data)
    line.evaluation_seconds = evaluation_seconds(state, runs, data)
    return line


def statistics_seconds(runs: list[RunConfig], data: DeviceData) -> float:
    """Seconds the engine's recorded batch costs on top of a plain step; best of three repeats.

    That is the weight copy before the step, engine._layer_statistics and engine._record_samples.
    Call it right after training ``runs``, so that the precision's TF32 flags are in force.
    """
    device, activations, precision = data.device, [r.activation for r in runs], runs[0].precision
    state = engine.initial_state(runs, device)
    range_index = data.range_indices([r.range for r in runs])  # [G]
    order = data.shuffled_indices(state.shuffle_rngs, BATCH)  # [G, b]
    images = to_group_layout(data.train_images[range_index[:, None], order])  # [b, G, 28, 28]
    record: dict[str, torch.Tensor] = {}
    with engine._autocast(device, precision):
        logits = group_forward(state.params, images, activation_plan(activations), record)
    loss = F.cross_entropy(logits.float().flatten(0, 1), data.train_labels[order].flatten())
    gradients = torch.autograd.grad(loss, list(state.params.values()))
    grads = dict(zip(state.params, gradients, strict=True))
    before = {k: v.detach().clone() for k, v in state.params.items() if "weight" in k}
    engine._sgd_step(state, grads, engine._learning_rates(runs, state.params))

    # timed: a copy like the engine's `before`, then the statistics and the samples
    best = math.inf
    for _ in range(3):
        _synchronise(device)
        started = time.perf_counter()
        _ = {k: v.detach().clone() for k, v in state.params.items() if "weight" in k}
        engine._layer_statistics(record, grads, before, state.params, activations)
        engine._record_samples(state, record, runs)
        _synchronise(device)
        best = min(best, time.perf_counter() - started)
    return best


def evaluation_seconds(state: engine.GroupState, runs: list[RunConfig], data: DeviceData) -> float:
    """Seconds of one evaluation of the group's models on the whole test set."""
    range_index = data.range_indices([r.range for r in runs])  # [G]
    plan = activation_plan([r.activation for r in runs])
    _synchronise(data.device)
    started = time.perf_counter()
    engine.evaluate(state, data, range_index, plan, confusion=False)
    _synchronise(data.device)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# the report: figures per line, the table, the closing sentence


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
    limit = TRAIN_IMAGES * flop / peaks[line.precision]
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


# ---------------------------------------------------------------------------------------------
# the command


def _checked_groups(groups: list[int], batches: int) -> list[int]:
    if not groups:
        raise UsageError("--groups: give at least one group size, e.g. 1,4,16")
    for group in groups:
        if not 1 <= group <= MAX_GROUP:
            raise UsageError(f"--groups: group size {group} is outside 1..{MAX_GROUP}")
    if not 1 <= batches <= EPOCH_STEPS:
        raise UsageError(f"--batches: {batches} is outside 1..{EPOCH_STEPS} (one epoch)")
    return list(dict.fromkeys(groups))


def _measure_all(dataset: FashionMNIST, settings: dict, device: torch.device) -> list[Line]:
    """(a) if asked, (b), (c) per group, and on CUDA (c) in tf32 and bf16 for the largest."""
    groups, batches = settings["groups"], settings["batches"]
    defaults = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    _say("(b) in-memory StudyCNN")
    lines = [measure_in_memory(dataset, batches, device)]
    data = DeviceData(dataset, device)
    plan = [(group, "fp32") for group in groups]
    if device.type == "cuda":
        plan += [(max(groups), "tf32"), (max(groups), "bf16")]
    for group, precision in plan:
        _say(f"(c) engine G={group} {precision}")
        lines.append(measure_engine(data, group, batches, precision))
    processes, process_group = settings["processes"], settings["process_group"]
    if processes > 1:
        from actrange.bench_workers import measure_workers  # it imports this module

        _say(f"(c) engine {processes} processes x G={process_group}")
        lines.append(measure_workers(processes, process_group, batches, device))
    # (a) last: its loader's worker processes were seen to slow the lines measured after it
    # threefold on a 2-core machine, even once closed
    if settings["notebook"]:
        _say("(a) notebook pipeline")
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = defaults
        lines.insert(0, measure_notebook(dataset, batches, device, settings["workers"]))
    return lines


def _say(name: str) -> None:
    # progress goes to stderr, so that stdout holds the report alone
    print(f"measuring {name}", file=sys.stderr, flush=True)


def run_benchmark(
    groups: list[int],
    batches: int,
    device_name: str,
    out: Path | None,
    notebook: bool,
    workers: int = NOTEBOOK_WORKERS,
    processes: int = 0,
    process_group: int = 4,
) -> int:
    """Measure every line, print the report, and write the JSON document to ``out`` if given.

    Args:
        groups: engine group sizes to measure (1..4096 each).
        batches: timed training steps per line (1..469).
        device_name: "auto", "cpu", "cuda", "cuda:N" or "mps".
        out: where to write the JSON document; None writes none.
        notebook: measure line (a), the notebook's DataLoader pipeline.
        workers: loader processes of line (a); the notebook used 2.
        processes: if 2 or more, also measure that many engine processes side by side, the
            cores shared out as ``actrange run --workers`` does, each with a group of
            ``process_group`` models.
    Returns:
        the exit status, 0.
    Raises:
        UsageError: a group size or step count out of range, or an unavailable device.
    """
    groups = _checked_groups(groups, batches)
    device = resolve_device(device_name)
    dataset = load_fashion_mnist()
    if processes > 1:
        _checked_groups([process_group], batches)
    settings = {
        "groups": groups,
        "batches": batches,
        "notebook": notebook,
        "workers": workers,
        "processes": processes,
        "process_group": process_group,
    }

    # the engine sets the TF32 flags for its precision; they are put back afterwards so that (a)
    # and (b) run under PyTorch's defaults, as the notebook did
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    try:
        lines = _measure_all(dataset, settings, device)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags

    document = _document(lines, device, settings, int(dataset.test_labels.shape[0]))
    print(format_report(document))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(document, indent=2) + "\n")
    return 0


def _document(lines: list[Line], device: torch.device, settings: dict, test_images: int) -> dict:
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
        "settings": settings | constants | {"record_values": RECORD_VALUES},
        "device": device_description(device),
        "environment": environment_record(device),
        "torch_threads": torch.get_num_threads(),
        "test_images": test_images,
        "flop_per_image": flop,
        "peak_flop_per_second": peaks,
        "limit_seconds_per_model_epoch": {p: TRAIN_IMAGES * flop / v for p, v in peaks.items()},
        "memory": memory,
        "lines": figures,
        "best": closing_sentence(figures),
    }
