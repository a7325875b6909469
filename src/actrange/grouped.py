"""The study's CNN for G models at once: stacked parameters and one batched forward pass.

G models with the same architecture become one computation: convolutions are grouped
(model g owns channels g*C .. (g+1)*C - 1 of every feature map) and linear layers are batched
matrix products. Nothing mixes across models, so each model computes what it would alone.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from actrange import cpu_kernels
from actrange.activations import Activation, get_activation
from actrange.model import FLAT_FEATURES, LAYERS


@dataclass(frozen=True)
class Segment:
    """Models ``start`` .. ``stop - 1`` of a group use ``activation``."""

    activation: Activation
    start: int
    stop: int


def activation_plan(names: list[str]) -> list[Segment]:
    """Split a group's per-model activation names into runs of equal neighbours."""
    segments: list[Segment] = []
    for index, name in enumerate(names):
        if segments and segments[-1].activation.name == name:
            last = segments[-1]
            segments[-1] = Segment(last.activation, last.start, index + 1)
        else:
            segments.append(Segment(get_activation(name), index, index + 1))
    return segments


def stack_parameters(per_model: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack G models' StudyCNN parameters into the grouped layout.

    conv weights [G*C_out, C_in, 3, 3] (channels_last), conv biases [G*C_out];
    linear weights transposed to [G, in, out], linear biases [G, 1, out].
    """
    stacked: dict[str, torch.Tensor] = {}
    for spec in LAYERS:
        weights = [p[f"{spec.name}.weight"] for p in per_model]
        biases = [p[f"{spec.name}.bias"] for p in per_model]
        if spec.kind == "conv":
            weight = torch.cat(weights).contiguous(memory_format=torch.channels_last)
            stacked[f"{spec.name}.weight"] = weight
            stacked[f"{spec.name}.bias"] = torch.cat(biases)
        else:
            stacked[f"{spec.name}.weight"] = torch.stack([w.t() for w in weights]).contiguous()
            stacked[f"{spec.name}.bias"] = torch.stack(biases).unsqueeze(1)
    return stacked


def per_model_view(stacked: torch.Tensor, group: int) -> torch.Tensor:
    """Any stacked parameter or gradient as [G, values of one model]."""
    return stacked.reshape(group, -1)


def _activate(x: torch.Tensor, plan: list[Segment], dim: int, width: int) -> torch.Tensor:
    """Apply each segment's activation to its models' slice of ``x`` along ``dim``."""
    return _per_segment(x, plan, dim, width, lambda a, part: a.fn(part))


def _activate_and_pool(x: torch.Tensor, plan: list[Segment], width: int) -> torch.Tensor:
    """Activation then 2x2 max-pool of [B, G*C, H, W]; pooled first where that is the same."""

    def one_segment(activation: Activation, part: torch.Tensor) -> torch.Tensor:
        if activation.monotone:
            return activation.fn(_max_pool(part))
        return _max_pool(activation.fn(part))

    return _per_segment(x, plan, 1, width, one_segment)


def _per_segment(
    x: torch.Tensor,
    plan: list[Segment],
    dim: int,
    width: int,
    fn: Callable[[Activation, torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``fn(activation, slice)`` on each segment's models' slice of ``x`` along ``dim``, joined.

    The segments cover the group in order, so ``split`` cuts ``x`` into exactly their slices.
    Its backward pass joins the slices' gradients once, where ``narrow`` would write a
    zero-filled gradient as wide as ``x`` for every segment and add them up.
    """
    if len(plan) == 1:
        return fn(plan[0].activation, x)
    widths = [(segment.stop - segment.start) * width for segment in plan]
    parts = x.split(widths, dim)
    return torch.cat([fn(s.activation, part) for s, part in zip(plan, parts, strict=True)], dim)


def _compiled_kernels_apply(x: torch.Tensor) -> bool:
    """The compiled CPU kernels take fp32 tensors on the CPU, when they could be built."""
    cpu_float = x.device.type == "cpu" and x.dtype == torch.float32
    return cpu_float and cpu_kernels.kernel_status().available


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 max-pool; the compiled kernel where it applies (its backward writes no zero fill)."""
    if _compiled_kernels_apply(x):
        return cpu_kernels.MaxPool.apply(x)
    return F.max_pool2d(x, 2)


# Under autocast, conv1 still runs in fp32: with one input channel it is 9 multiply-adds per
# output, so bf16 would round the input pixels themselves for no gain in speed (oneDNN's bf16
# kernels for it were slower than fp32 on the development CPU).
FULL_PRECISION_LAYERS = frozenset({"conv1"})

# The pooling blocks each compiled kernel computes in one pass: convolution, then max-pool.
FUSED_BLOCKS = {"conv1": cpu_kernels.Conv1Pool, "conv2": cpu_kernels.Conv2Pool}


def _block_fused(name: str, x: torch.Tensor, plan: list[Segment], record: dict | None) -> bool:
    """A convolution and its pool can run as one compiled fp32 kernel: pooling first is exact
    for every activation of the plan, the full-size output is not wanted for the record, and
    the layer is one that computes in fp32 even under autocast (else autocast decides)."""
    if name not in FUSED_BLOCKS or record is not None:
        return False
    pool_first = all(segment.activation.monotone for segment in plan)
    in_fp32 = name in FULL_PRECISION_LAYERS or not torch.is_autocast_enabled(x.device.type)
    return pool_first and in_fp32 and _compiled_kernels_apply(x)


def _convolve(x: torch.Tensor, params: dict[str, torch.Tensor], name: str, pad: int, group: int):
    """One grouped convolution; the layers in FULL_PRECISION_LAYERS leave autocast out."""
    weight, bias = params[f"{name}.weight"], params[f"{name}.bias"]
    device_type = x.device.type
    if name in FULL_PRECISION_LAYERS and torch.is_autocast_enabled(device_type):
        with torch.autocast(device_type, enabled=False):
            return F.conv2d(x.float(), weight, bias, padding=pad, groups=group)
    return F.conv2d(x, weight, bias, padding=pad, groups=group)


def group_forward(
    params: dict[str, torch.Tensor],
    images: torch.Tensor,
    plan: list[Segment],
    record: dict[str, torch.Tensor] | None = None,
) -> torch.Tensor:
    """G models' logits for their own images.

    Args:
        params: stacked parameters (:func:`stack_parameters`).
        images: [B, G, 28, 28], model g's images in channel g.
        plan: the activation of each model.
        record: if given, receives each hidden layer's pre-activations as [G, B, U, ...].
    Returns:
        logits [G, B, 10].
    """
    batch, group = images.shape[0], images.shape[1]
    x = images
    for spec in LAYERS:
        if _block_fused(spec.name, x, plan, record):
            weight, bias = params[f"{spec.name}.weight"], params[f"{spec.name}.bias"]
            x = FUSED_BLOCKS[spec.name].apply(x, weight, bias)  # [B, G*C, H/2, W/2]
            x = _activate(x, plan, dim=1, width=spec.fan_out)
            continue
        if spec.kind == "conv":
            x = _convolve(x, params, spec.name, spec.pad, group)  # [B, G*C, H, W]
            if record is not None:
                h, w_ = x.shape[-2:]
                record[spec.name] = (
                    x.detach().view(batch, group, spec.fan_out, h, w_).transpose(0, 1)
                )
            if spec.pool:
                x = _activate_and_pool(x, plan, width=spec.fan_out)
            else:
                x = _activate(x, plan, dim=1, width=spec.fan_out)
            continue

        if spec.name == "lin1":
            # [B, G*64, 3, 3] -> [G, B, 576] in each model's own (channel, row, column) order
            x = x.contiguous().view(batch, group, FLAT_FEATURES).transpose(0, 1)
        weight, bias = params[f"{spec.name}.weight"], params[f"{spec.name}.bias"]
        x = torch.baddbmm(bias, x, weight)  # [G, B, out]
        if spec.name == "lin3":
            return x
        if record is not None:
            record[spec.name] = x.detach()
        x = _activate(x, plan, dim=0, width=1)
    raise AssertionError("unreachable: LAYERS ends with lin3")


def to_group_layout(images: torch.Tensor) -> torch.Tensor:
    """[G, B, 28, 28] per-model images -> [B, G, 28, 28] in channels_last memory."""
    return images.permute(1, 2, 3, 0).contiguous().permute(0, 3, 1, 2)
