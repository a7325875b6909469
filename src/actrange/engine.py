"""Train a group of runs together: one batched computation, each run its own model.

Every run keeps what it would have alone: initial weights from its seed, its own shuffle
order, its own SGD momentum and learning rate. The group only shares the arithmetic.
"""

import hashlib
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from actrange import diagnostics
from actrange.columns import HIDDEN_LAYERS
from actrange.config import RunConfig
from actrange.devicedata import DeviceData
from actrange.grouped import (
    activation_plan,
    group_forward,
    per_model_view,
    stack_parameters,
    to_group_layout,
)
from actrange.model import LAYERS, initial_parameters

# test images per model in one evaluation step; it bounds memory and time, not results. On a CPU
# a small chunk keeps the group's feature maps in cache (128 was 2.5x faster than 2000 for a group
# of 8); a GPU wants large steps.
EVAL_CHUNK = {"cpu": 128, "cuda": 2000}
N_CLASSES = 10


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one purpose ("shuffle", "record") of a run's seed."""
    digest = hashlib.sha256(f"{seed}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def _generator(seed: int, purpose: str) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, purpose))


@dataclass
class GroupState:
    """Everything needed to continue a group's training exactly: what a checkpoint holds."""

    params: dict[str, torch.Tensor]
    momentum: dict[str, torch.Tensor]
    shuffle_rngs: list[torch.Generator]
    record_rngs: list[torch.Generator]
    epochs_done: int = 0
    diverged_epoch: list[int] = field(default_factory=list)
    records: list[dict[str, list[torch.Tensor]]] = field(default_factory=list)

    def to_payload(self) -> dict:
        """Plain tensors and lists for torch.save."""
        return {
            "params": {k: v.detach().cpu() for k, v in self.params.items()},
            "momentum": {k: v.cpu() for k, v in self.momentum.items()},
            "shuffle_rngs": [g.get_state() for g in self.shuffle_rngs],
            "record_rngs": [g.get_state() for g in self.record_rngs],
            "epochs_done": self.epochs_done,
            "diverged_epoch": list(self.diverged_epoch),
            "records": self.records,
        }

    @classmethod
    def from_payload(cls, payload: dict, device: torch.device) -> "GroupState":
        """Rebuild a state saved by :meth:`to_payload` on ``device``."""

        def restored(states: list[torch.Tensor]) -> list[torch.Generator]:
            return [torch.Generator().set_state(s) for s in states]

        return cls(
            params=_on_device(payload["params"], device),
            momentum={k: v.to(device) for k, v in payload["momentum"].items()},
            shuffle_rngs=restored(payload["shuffle_rngs"]),
            record_rngs=restored(payload["record_rngs"]),
            epochs_done=payload["epochs_done"],
            diverged_epoch=list(payload["diverged_epoch"]),
            records=payload["records"],
        )


def _on_device(params: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    moved = {}
    for name, value in params.items():
        value = value.to(device)
        if value.dim() == 4:
            value = value.contiguous(memory_format=torch.channels_last)
        moved[name] = value.requires_grad_(True)
    return moved


def initial_state(runs: list[RunConfig], device: torch.device) -> GroupState:
    """The state before epoch 1: seeded weights, zero momentum, seeded generators."""
    params = _on_device(stack_parameters([initial_parameters(r.seed) for r in runs]), device)
    return GroupState(
        params=params,
        momentum={k: torch.zeros_like(v) for k, v in params.items()},
        shuffle_rngs=[_generator(r.seed, "shuffle") for r in runs],
        record_rngs=[_generator(r.seed, "record") for r in runs],
        diverged_epoch=[0] * len(runs),
        records=[{layer: [] for layer in HIDDEN_LAYERS} for _ in runs],
    )


@dataclass
class EpochReport:
    """One epoch of a group: per-run numbers, index g belongs to runs[g]."""

    epoch: int
    activations: list[str]
    train_loss: list[float]
    test_loss: list[float]
    test_accuracy: list[float]
    seconds: float
    layer_stats: list[dict[str, dict[str, float]]]  # [g][layer][statistic]
    diverged_epoch: list[int]
    confusion: torch.Tensor | None = None  # [G, 10, 10] counts, rows = true class; last epoch only


def _learning_rates(runs: list[RunConfig], params: dict[str, torch.Tensor]) -> dict:
    """Per-parameter tensors of each run's (lr, momentum), broadcastable to the stacked layout."""
    device = next(iter(params.values())).device
    lr = torch.tensor([r.lr for r in runs], device=device)
    momentum = torch.tensor([r.momentum for r in runs], device=device)
    rates = {}
    for spec in LAYERS:
        for part in ("weight", "bias"):
            name = f"{spec.name}.{part}"
            shape = params[name].shape
            if spec.kind == "conv":
                # stacked rows are model-major: rows g*C .. (g+1)*C-1 belong to model g
                per_row = (-1,) + (1,) * (len(shape) - 1)
                rates[name] = (
                    lr.repeat_interleave(spec.fan_out).view(per_row),
                    momentum.repeat_interleave(spec.fan_out).view(per_row),
                )
            else:
                per_model = (-1,) + (1,) * (len(shape) - 1)
                rates[name] = (lr.view(per_model), momentum.view(per_model))
    return rates


@torch.no_grad()
def _sgd_step(state: GroupState, grads: dict[str, torch.Tensor], rates: dict) -> None:
    """torch.optim.SGD's rule per run (dampening 0): buf = m*buf + g; p -= lr*buf."""
    for name, param in state.params.items():
        lr, momentum = rates[name]
        buf = state.momentum[name]
        buf.mul_(momentum).add_(grads[name])
        param.sub_(lr * buf)


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def _set_tf32(device: torch.device, precision: str) -> None:
    if device.type == "cuda":
        allowed = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = allowed
        torch.backends.cudnn.allow_tf32 = allowed


def _synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _layer_statistics(
    record: dict[str, torch.Tensor],
    grads: dict[str, torch.Tensor],
    before: dict[str, torch.Tensor],
    after: dict[str, torch.Tensor],
    names: list[str],
) -> list[dict[str, dict[str, float]]]:
    """Health statistics of the recorded batch, per run and hidden layer, as Python floats."""
    group = len(names)
    per_run: list[dict[str, dict[str, float]]] = [{} for _ in range(group)]
    for layer in HIDDEN_LAYERS:
        weight = f"{layer}.weight"
        step = diagnostics.weight_step_statistics(
            per_model_view(before[weight], group),
            per_model_view(after[weight], group),
            per_model_view(grads[weight], group),
        )
        for segment in activation_plan(names):
            members = slice(segment.start, segment.stop)
            stats = diagnostics.layer_statistics(record[layer][members], segment.activation)
            stats = {k: v.float().cpu() for k, v in stats.items()}
            for g in range(segment.start, segment.stop):
                row = {k: float(v[g - segment.start]) for k, v in stats.items()}
                row.update({k: float(v[g]) for k, v in step.items()})
                per_run[g][layer] = row
    return per_run


def _record_samples(
    state: GroupState, record: dict[str, torch.Tensor], runs: list[RunConfig]
) -> None:
    """Keep each run's seeded sample of at most record_values pre-activations per layer."""
    k = runs[0].record_values
    if k == 0:
        return
    for layer in HIDDEN_LAYERS:
        samples = diagnostics.sample_values(record[layer], k, state.record_rngs).float().cpu()
        for g, run_records in enumerate(state.records):
            run_records[layer].append(samples[g].clone())


@torch.no_grad()
def evaluate(
    state: GroupState, data: DeviceData, range_index: torch.Tensor, plan, confusion: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Test loss [G], accuracy in percent [G] and, if asked, the confusion counts [G, 10, 10]."""
    group = range_index.shape[0]
    labels_all = data.test_labels
    n = labels_all.shape[0]
    loss_sum = torch.zeros(group, device=labels_all.device, dtype=torch.float64)
    correct = torch.zeros(group, device=labels_all.device, dtype=torch.int64)
    counts = torch.zeros(group, N_CLASSES * N_CLASSES, device=labels_all.device, dtype=torch.int64)
    chunk = EVAL_CHUNK.get(labels_all.device.type, EVAL_CHUNK["cuda"])
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        images = data.test_images[range_index, start:stop]  # [G, b, 28, 28]
        labels = labels_all[start:stop]  # [b]
        logits = group_forward(state.params, to_group_layout(images), plan).float()  # [G, b, 10]
        targets = labels.expand(group, -1)
        losses = F.cross_entropy(
            logits.reshape(-1, N_CLASSES), targets.reshape(-1), reduction="none"
        )
        loss_sum += losses.view(group, -1).sum(1, dtype=torch.float64)
        predicted = logits.argmax(-1)  # [G, b]
        correct += (predicted == targets).sum(1)
        if confusion:
            cells = targets * N_CLASSES + predicted  # [G, b]
            counts.scatter_add_(1, cells, torch.ones_like(cells))
    matrix = counts.view(group, N_CLASSES, N_CLASSES).cpu() if confusion else None
    return (loss_sum / n).cpu(), (correct.double() * 100.0 / n).cpu(), matrix


def train_group(
    runs: list[RunConfig],
    data: DeviceData,
    *,
    state: GroupState | None = None,
    on_epoch: Callable[[EpochReport, GroupState], None] | None = None,
) -> GroupState:
    """Train ``runs`` together for their (shared) number of epochs.

    Args:
        runs: runs sharing batch_size, epochs, train_subset, record_values and precision.
        data: the data set on the training device, normalised per range.
        state: a checkpointed state to continue from; None starts from the seeds.
        on_epoch: called after every epoch with its report and the state (to store, log,
            checkpoint); the state then holds epochs_done = report.epoch.
    Returns:
        the final state.
    """
    shared = {(r.batch_size, r.epochs, r.train_subset, r.record_values, r.precision) for r in runs}
    if len(shared) != 1:
        raise ValueError("a group's runs must share batch size, epochs, subset and precision")
    device = data.device
    precision, batch_size, epochs = runs[0].precision, runs[0].batch_size, runs[0].epochs
    _set_tf32(device, precision)
    group = len(runs)
    state = state or initial_state(runs, device)
    rates = _learning_rates(runs, state.params)
    range_index = data.range_indices([r.range for r in runs])  # [G]
    names = list(state.params)

    for epoch in range(state.epochs_done + 1, epochs + 1):
        activations = [r.activation_at(epoch) for r in runs]
        plan = activation_plan(activations)
        order = data.shuffled_indices(state.shuffle_rngs, runs[0].train_subset)  # [G, N]
        n_train = order.shape[1]
        loss_sum = torch.zeros(group, device=device)
        layer_stats: list[dict[str, dict[str, float]]] = []

        # train: one pass over each run's own shuffled order
        _synchronise(device)
        started = time.perf_counter()
        n_batches = 0
        for start in range(0, n_train, batch_size):
            batch = order[:, start : start + batch_size]  # [G, b]
            images = to_group_layout(
                data.train_images[range_index[:, None], batch]
            )  # [b, G, 28, 28]
            labels = data.train_labels[batch]  # [G, b]
            record = {} if start == 0 else None
            with _autocast(device, precision):
                logits = group_forward(state.params, images, plan, record)  # [G, b, 10]
            per_image = F.cross_entropy(
                logits.float().flatten(0, 1), labels.flatten(), reduction="none"
            )  # [G*b]
            losses = per_image.view(group, -1).mean(1)  # [G], each run's own batch-mean loss
            gradients = torch.autograd.grad(losses.sum(), list(state.params.values()))
            grads = dict(zip(names, gradients, strict=True))
            if record is not None:
                before = {k: v.detach().clone() for k, v in state.params.items() if "weight" in k}
            _sgd_step(state, grads, rates)
            if record is not None:
                layer_stats = _layer_statistics(record, grads, before, state.params, activations)
                _record_samples(state, record, runs)
            loss_sum += losses.detach()
            n_batches += 1
        _synchronise(device)
        seconds = time.perf_counter() - started

        # evaluate, and note the first epoch whose loss is not finite
        train_loss = (loss_sum / n_batches).cpu()
        last = epoch == epochs
        test_loss, test_accuracy, confusion = evaluate(state, data, range_index, plan, last)
        for g, value in enumerate(train_loss.tolist()):
            if not math.isfinite(value) and state.diverged_epoch[g] == 0:
                state.diverged_epoch[g] = epoch
        state.epochs_done = epoch

        report = EpochReport(
            epoch=epoch,
            activations=activations,
            train_loss=train_loss.tolist(),
            test_loss=test_loss.tolist(),
            test_accuracy=test_accuracy.tolist(),
            seconds=seconds,
            layer_stats=layer_stats,
            diverged_epoch=list(state.diverged_epoch),
            confusion=confusion,
        )
        if on_epoch is not None:
            on_epoch(report, state)
    return state
