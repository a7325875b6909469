"""Compiled CPU kernels for the memory-bound pooling blocks, built on first use.

On a CPU the study's first block (conv1, then a 2x2 max-pool) is bound by memory traffic, not
arithmetic: PyTorch writes conv1's full output, reads it to pool, and in the backward pass
zero-fills a gradient as large, scatters into it and reads it again. ``kernels/pooled_conv.c``
does the block in one pass that keeps each 2x2 window in registers, and a max-pool whose
backward pass writes every element once. The kernels are plain C (no PyTorch headers), compiled
with the system C compiler in well under a second into the user cache and called through
ctypes, each thread on its own slice of the batch (ctypes releases the GIL).

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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import torch

from actrange.data_files import cache_dir

SOURCE = Path(__file__).parent / "kernels" / "pooled_conv.c"
CHANNELS_PER_MODEL = 8  # the kernel's K: conv1's output channels per model
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC", "-std=gnu11")
_POINTER, _INT = ctypes.c_void_p, ctypes.c_int64
_SIGNATURES = {
    "conv_pool_forward": [_POINTER] * 5 + [_INT] * 5,
    "conv_pool_backward": [_POINTER] * 5 + [_INT] * 5,
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


@cache
def _threads(count: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(count, thread_name_prefix="actrange-kernel")


# a forked child has none of its parent's threads: it must build its own pool
os.register_at_fork(after_in_child=_threads.cache_clear)


def _batch_slices(batch: int) -> list[tuple[int, int]]:
    """One contiguous slice of the batch per intra-op thread, fixed for a given thread count."""
    parts = max(1, min(torch.get_num_threads(), batch))
    size = -(-batch // parts)
    return [(start, min(batch, start + size)) for start in range(0, batch, size)]


def _parallel(function, calls: list[tuple]) -> None:
    """``function(*arguments)`` for each tuple of ``calls``, one thread each."""
    if len(calls) == 1:
        function(*calls[0])
        return
    list(_threads(len(calls)).map(lambda arguments: function(*arguments), calls))


def _over_batch(function, tensors, shape: tuple[int, ...], slices, partials=()) -> None:
    """Run a kernel on each batch slice; ``partials`` are [slices, ...] per-slice outputs."""
    pointers = [t.data_ptr() for t in tensors]
    calls = [
        (*pointers, *(p[k].data_ptr() for p in partials), b0, b1, *shape)
        for k, (b0, b1) in enumerate(slices)
    ]
    _parallel(function, calls)


def _padded(x: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] -> [B, H+2, W+2, C] with a zero border, so that every 3x3 product of a
    padding-1 convolution reads the same way."""
    return torch.nn.functional.pad(x.permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1)).contiguous()


class ConvPool(torch.autograd.Function):
    """conv1 then 2x2 max-pool: 3x3 convolution, padding 1, groups G, one input channel and
    eight output channels per model.

    images [B, G, H, W]; weight [G*8, 1, 3, 3]; bias [G*8] -> pooled pre-activations
    [B, G*8, H/2, W/2] in channels_last memory. The images get no gradient (they are the data).
    """

    @staticmethod
    def forward(ctx, images: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor):
        library = kernel_status().library
        batch, group, height, width = images.shape
        channels = weight.shape[0]
        if channels != group * CHANNELS_PER_MODEL:
            raise ValueError(f"the kernel computes {CHANNELS_PER_MODEL} channels per model")
        padded = _padded(images)  # [B, H+2, W+2, G]
        taps = weight.detach().reshape(channels, 9).t().contiguous()  # [9, C]
        pooled = torch.empty(batch, height // 2, width // 2, channels)  # [B, H/2, W/2, C]
        phase = torch.empty(pooled.shape, dtype=torch.uint8)
        tensors = [padded, taps, bias.detach().contiguous(), pooled, phase]
        shape = (height, width, group)
        _over_batch(library.conv_pool_forward, tensors, shape, _batch_slices(batch))
        ctx.save_for_backward(padded, phase)
        ctx.shape = shape
        return pooled.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_pooled: torch.Tensor):
        library = kernel_status().library
        padded, phase = ctx.saved_tensors
        channels = phase.shape[-1]
        grad = grad_pooled.permute(0, 2, 3, 1).contiguous()  # [B, H/2, W/2, C]
        slices = _batch_slices(grad.shape[0])
        weight_parts = torch.empty(len(slices), 9, channels)
        bias_parts = torch.empty(len(slices), channels)
        kernel = library.conv_pool_backward
        _over_batch(kernel, [padded, grad, phase], ctx.shape, slices, (weight_parts, bias_parts))
        # the slices' sums are added in a fixed order: no dependence on thread timing
        weight_grad = weight_parts.sum(0).t().reshape(channels, 1, 3, 3)
        return None, weight_grad, bias_parts.sum(0)


class MaxPool(torch.autograd.Function):
    """2x2 max-pool of [B, C, H, W] as max_pool2d computes it, with a write-once backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor):
        library = kernel_status().library
        batch, channels, height, width = x.shape
        values = x.permute(0, 2, 3, 1).contiguous()  # [B, H, W, C]; a view when channels_last
        pooled = torch.empty(batch, height // 2, width // 2, channels)
        phase = torch.empty(pooled.shape, dtype=torch.uint8)
        shape = (height, width, channels)
        _over_batch(library.max_pool_forward, [values, pooled, phase], shape, _batch_slices(batch))
        ctx.save_for_backward(phase)
        ctx.shape = shape
        return pooled.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad_pooled: torch.Tensor):
        library = kernel_status().library
        (phase,) = ctx.saved_tensors
        height, width, channels = ctx.shape
        grad = grad_pooled.permute(0, 2, 3, 1).contiguous()  # [B, H/2, W/2, C]
        # the kernel writes every element of the pooled windows; an odd last row or column
        # belongs to no window and gets zero, as in max_pool2d
        odd = height % 2 or width % 2
        grad_input = (torch.zeros if odd else torch.empty)(grad.shape[0], height, width, channels)
        slices = _batch_slices(grad.shape[0])
        _over_batch(library.max_pool_backward, [grad, phase, grad_input], ctx.shape, slices)
        return grad_input.permute(0, 3, 1, 2)
