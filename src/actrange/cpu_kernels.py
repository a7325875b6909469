"""Compiled CPU kernels for the study's two pooling blocks, built on first use.

On a CPU the blocks that end in a 2x2 max-pool (conv1 and conv2) are bound by memory traffic
and by the library's handling of narrow groups, not by arithmetic: PyTorch writes the
convolution's full output, reads it to pool, and in the backward pass zero-fills a gradient as
large, scatters into it and reads it again. ``kernels/pooled_conv.c`` does each block in one
pass that keeps every 2x2 window in registers and sends each pooled gradient only through the
product that won its window, plus a max-pool whose backward pass writes every element once.
The kernels are plain C (no PyTorch headers), compiled with the system C compiler in about a
second into the user cache, and called through ctypes (which releases the GIL). They split the
batch over OpenMP threads: the compiled library links ``libgomp.so.1`` by name, so it shares
the OpenMP runtime PyTorch has already loaded and its thread team, rather than starting threads
that compete with PyTorch's spinning ones for the cores.

Where no compiler is found, or ``ACTRANGE_KERNELS=off``, the engine uses PyTorch's own
operations; both paths compute the same function and agree to float rounding (tested).
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from actrange.data_files import cache_dir

SOURCE = Path(__file__).parent / "kernels" / "pooled_conv.c"
CONV1_CHANNELS = (1, 8)  # (input, output) channels per model the conv1 kernel computes
CONV2_CHANNELS = (8, 16)  # and the conv2 kernel
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11")
_POINTER, _INT = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "conv_pool_forward": [_POINTER] * 5 + [_INT] * 5,
    "conv_pool_backward": [_POINTER] * 5 + [_INT] * 5,
    "conv8_pool_forward": [_POINTER] * 5 + [_INT] * 5,
    "conv8_pool_backward": [_POINTER] * 7 + [_INT] * 5,
    "max_pool_forward": [_POINTER] * 3 + [_INT] * 5,
    "max_pool_backward": [_POINTER] * 3 + [_INT] * 5,
}


@dataclass(frozen=True)
class KernelStatus:
    """Whether the compiled kernels are in use, and why not when they are not."""

    library: ctypes.CDLL | None
    reason: str

    @property
    def available(self) -> bool:
        return self.library is not None


def _cpu_signature() -> str:
    """What -march=native compiles for: the CPU's feature flags (Linux), else the platform."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _compile(compiler: str, target: Path) -> None:
    """Compile SOURCE into ``target`` atomically: a temporary file, then a rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run(
            [compiler, *FLAGS, "-o", str(built), str(SOURCE)],
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )
        os.replace(built, target)


@cache
def kernel_status() -> KernelStatus:
    """Load the kernels, compiling them first if this source, compiler and CPU have no build."""
    if os.environ.get("ACTRANGE_KERNELS", "on").lower() in ("off", "0", "no", "false"):
        return KernelStatus(None, "turned off by ACTRANGE_KERNELS")
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        return KernelStatus(None, "no C compiler found (set CC or install gcc)")
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), " ".join(FLAGS).encode(), compiler.encode()):
        key.update(part)
    key.update(_cpu_signature().encode())
    target = cache_dir() / "kernels" / f"pooled_conv-{key.hexdigest()[:16]}.so"
    try:
        if not target.exists():
            _compile(compiler, target)
        library = ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        return KernelStatus(None, f"compiling {SOURCE.name} failed: {detail.strip()[:200]}")
    for name, arguments in _SIGNATURES.items():
        getattr(library, name).argtypes = arguments
        getattr(library, name).restype = None
    return KernelStatus(library, f"compiled with {Path(compiler).name}")


@contextmanager
def turned_off() -> Iterator[None]:
    """PyTorch's operations only, inside the block (for measuring what the kernels save)."""
    before = os.environ.get("ACTRANGE_KERNELS")
    os.environ["ACTRANGE_KERNELS"] = "off"
    kernel_status.cache_clear()
    try:
        yield
    finally:
        if before is None:
            del os.environ["ACTRANGE_KERNELS"]
        else:
            os.environ["ACTRANGE_KERNELS"] = before
        kernel_status.cache_clear()


def _parts(batch: int) -> int:
    """How many slices of the batch the kernels run in parallel: one per intra-op thread.

    The slices are fixed by this count alone, so the per-slice partial gradients, and their
    sum, do not depend on how the threads are scheduled.
    """
    return max(1, min(torch.get_num_threads(), batch))


def _call(function, tensors: list[torch.Tensor], *sizes: int) -> None:
    """``function(pointers..., sizes...)``: the kernels take raw pointers and int64 sizes."""
    function(*(t.data_ptr() for t in tensors), *sizes)


def _padded(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H+2, W+2, C] with a zero border, so that every 3x3 product of a
    padding-1 convolution reads the same way."""
    return torch.nn.functional.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1)).contiguous()


def _check_channels(weight: torch.Tensor, group: int, channels: tuple[int, int]) -> None:
    inputs, outputs = channels
    if tuple(weight.shape) != (group * outputs, inputs, 3, 3):
        raise ValueError(f"the kernel computes {inputs} -> {outputs} channels per model")


class Conv1Pool(torch.autograd.Function):
    """conv1 then 2x2 max-pool: 3x3 convolution, padding 1, groups G, one input channel and
    eight output channels per model.

    images [B, G, H, W]; weight [G*8, 1, 3, 3]; bias [G*8] -> pooled pre-activations
    [B, G*8, H/2, W/2] in channels_last memory. The images get no gradient (they are the data).
    """

    @staticmethod
    def forward(ctx, images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        library = kernel_status().library
        batch, group, height, width = images.shape
        _check_channels(weight, group, CONV1_CHANNELS)
        channels = weight.shape[0]
        padded = _padded(images)  # [B, H+2, W+2, G]
        taps = weight.detach().reshape(channels, 9).t().contiguous()  # [9, C]
        pooled = torch.empty(batch, height // 2, width // 2, channels)  # [B, H/2, W/2, C]
        phase = torch.empty(pooled.shape, dtype=torch.uint8)
        tensors = [padded, taps, bias.detach().contiguous(), pooled, phase]
        ctx.sizes = (batch, height, width, group, _parts(batch))
        _call(library.conv_pool_forward, tensors, *ctx.sizes)
        ctx.save_for_backward(padded, phase)
        return pooled.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_pooled: torch.Tensor):
        library = kernel_status().library
        padded, phase = ctx.saved_tensors
        channels, parts = phase.shape[-1], ctx.sizes[-1]
        grad = grad_pooled.permute(0, 2, 3, 1).contiguous()  # [B, H/2, W/2, C]
        weight_parts = torch.empty(parts, 9, channels)
        bias_parts = torch.empty(parts, channels)
        tensors = [padded, grad, phase, weight_parts, bias_parts]
        _call(library.conv_pool_backward, tensors, *ctx.sizes)
        # the slices' sums are added in a fixed order: no dependence on thread timing
        weight_grad = weight_parts.sum(0).t().reshape(channels, 1, 3, 3)
        return None, weight_grad, bias_parts.sum(0)


class Conv2Pool(torch.autograd.Function):
    """conv2 then 2x2 max-pool: 3x3 convolution, padding 1, groups G, eight input and sixteen
    output channels per model.

    x [B, G*8, H, W]; weight [G*16, 8, 3, 3]; bias [G*16] -> pooled pre-activations
    [B, G*16, H/2, W/2] in channels_last memory.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        library = kernel_status().library
        batch, _, height, width = x.shape
        inputs, outputs = CONV2_CHANNELS
        group = weight.shape[0] // outputs
        _check_channels(weight, group, CONV2_CHANNELS)
        padded = _padded(x)  # [B, H+2, W+2, G*8]
        per_model = weight.detach().view(group, outputs, inputs, 9)
        taps = per_model.permute(0, 3, 2, 1).contiguous()  # [G, 9, 8, 16]
        pooled = torch.empty(batch, height // 2, width // 2, group * outputs)
        phase = torch.empty(pooled.shape, dtype=torch.uint8)
        tensors = [padded, taps, bias.detach().contiguous(), pooled, phase]
        ctx.sizes = (batch, height, width, group, _parts(batch))
        _call(library.conv8_pool_forward, tensors, *ctx.sizes)
        ctx.save_for_backward(padded, phase, weight.detach())
        return pooled.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_pooled: torch.Tensor):
        library = kernel_status().library
        padded, phase, weight = ctx.saved_tensors
        batch, height, width, group, parts = ctx.sizes
        inputs, outputs = CONV2_CHANNELS
        grad = grad_pooled.permute(0, 2, 3, 1).contiguous()  # [B, H/2, W/2, G*16]
        per_model = weight.view(group, outputs, inputs, 9)
        taps = per_model.permute(0, 3, 1, 2).contiguous()  # [G, 9, 16, 8]
        grad_input = torch.empty(batch, height, width, group * inputs)
        weight_parts = torch.empty(parts, group, 9, outputs, inputs)
        bias_parts = torch.empty(parts, group * outputs)
        tensors = [padded, grad, phase, taps, grad_input, weight_parts, bias_parts]
        _call(library.conv8_pool_backward, tensors, *ctx.sizes)
        # the slices' sums are added in a fixed order: no dependence on thread timing
        weight_grad = weight_parts.sum(0).permute(0, 2, 3, 1)  # [G, 16, 8, 9]
        weight_grad = weight_grad.reshape(weight.shape).contiguous(
            memory_format=weight_layout(weight)
        )
        return grad_input.permute(0, 3, 1, 2), weight_grad, bias_parts.sum(0)


def weight_layout(weight: torch.Tensor) -> torch.memory_format:
    """The memory format ``weight`` is stored in, so that its gradient is stored the same way."""
    if weight.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class MaxPool(torch.autograd.Function):
    """2x2 max-pool of [B, C, H, W] as max_pool2d computes it, with a write-once backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor):
        library = kernel_status().library
        batch, channels, height, width = x.shape
        values = x.permute(0, 2, 3, 1).contiguous()  # [B, H, W, C]; a view when channels_last
        pooled = torch.empty(batch, height // 2, width // 2, channels)
        phase = torch.empty(pooled.shape, dtype=torch.uint8)
        ctx.sizes = (batch, height, width, channels, _parts(batch))
        _call(library.max_pool_forward, [values, pooled, phase], *ctx.sizes)
        ctx.save_for_backward(phase)
        return pooled.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_pooled: torch.Tensor):
        library = kernel_status().library
        (phase,) = ctx.saved_tensors
        batch, height, width, channels, _ = ctx.sizes
        grad = grad_pooled.permute(0, 2, 3, 1).contiguous()  # [B, H/2, W/2, C]
        # the kernel writes every element of the pooled windows; an odd last row or column
        # belongs to no window and gets zero, as in max_pool2d
        odd = height % 2 or width % 2
        grad_input = (torch.zeros if odd else torch.empty)(batch, height, width, channels)
        _call(library.max_pool_backward, [grad, phase, grad_input], *ctx.sizes)
        return grad_input.permute(0, 3, 1, 2)
