"""Training speed, measured: the study notebook's pipeline, the plain model, and the engine.

Each line is timed with the device synchronised before each clock read and warm-up steps
excluded, then extrapolated to seconds per model-epoch: one model's pass over the 60,000
training images at batch 128 (469 steps). The arithmetic limit is the time the training step's
FLOP would take at the machine's measured matmul peak. :mod:`actrange.bench_run` puts the lines
together into the `actrange bench` command.

Line (a) leaves out the notebook's own first-batch recording (a numpy sample of every layer) and
the evaluation after training, so its time is a lower bound on the notebook's.
"""

import math
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from actrange import engine
from actrange.config import TRAIN_IMAGES, PixelRange, RunConfig
from actrange.data import FashionMNIST, normalise
from actrange.devicedata import DeviceData
from actrange.grouped import activation_plan, group_forward, to_group_layout
from actrange.model import StudyCNN

BATCH = 128
EPOCH_STEPS = math.ceil(TRAIN_IMAGES / BATCH)  # 469
WARMUP_STEPS = 5  # lets allocators, kernels and the loader's prefetch queue settle
NOTEBOOK_WORKERS = 2
NOTEBOOK_RANGE = PixelRange(-1.0, 1.0)  # Normalize((0.5,), (0.5,))
LR, MOMENTUM, RECORD_VALUES = 0.01, 0.5, 5000
MATMUL_SIDE = {"cpu": 2048, "cuda": 8192}  # large enough to reach the device's peak
MATMUL_FIRST_SIDE, MATMUL_PROBE_SECONDS = 256, 0.05
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


def _matmul_seconds(side: int, device: torch.device, dtype: torch.dtype, calls: int) -> float:
    """The fastest of ``calls`` square matmuls of ``side``; the minimum leaves out warm-up."""
    left = torch.randn(side, side, device=device, dtype=dtype)  # [n, n]
    right = torch.randn(side, side, device=device, dtype=dtype)  # [n, n]
    best = math.inf
    for _ in range(calls):
        _synchronise(device)
        started = time.perf_counter()
        left @ right
        _synchronise(device)
        best = min(best, time.perf_counter() - started)
    return best


def matmul_peak(device: torch.device, precision: str = "fp32", side: int | None = None) -> float:
    """The best FLOP/s of a square matmul in ``precision`` (fp32, tf32, bf16) on ``device``.

    The side doubles from 256 up to ``side`` (by default the device's MATMUL_SIDE) while one
    call takes under MATMUL_PROBE_SECONDS. A precision the device has no instructions for
    stops early: bf16 emulated on an AVX2 CPU ran at 0.0003 TFLOP/s, where one matmul of 2048
    would take a minute.
    """
    largest = side or MATMUL_SIDE.get(device.type, MATMUL_SIDE["cpu"])
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    allowed = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"
    try:
        side = min(MATMUL_FIRST_SIDE, largest)
        while side < largest:
            if _matmul_seconds(side, device, dtype, calls=2) >= MATMUL_PROBE_SECONDS:
                break
            side = min(2 * side, largest)
        best = _matmul_seconds(side, device, dtype, calls=4)
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
