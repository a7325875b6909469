"""The training device, and the record of the environment stored with every experiment."""

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from actrange.cpu_kernels import kernel_status
from actrange.errors import UsageError
from actrange.identity import code_version

RECORDED_PACKAGES = ("torch", "numpy", "scipy", "matplotlib", "pooch")
CPU_INFO = Path("/proc/cpuinfo")
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})  # x86 instructions that compute in bf16


def resolve_device(name: str) -> torch.device:
    """ "auto" is CUDA when present, else the CPU; an unavailable device is a UsageError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} asked for, but CUDA is not available; use cpu or auto")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UsageError(f"device {name!r} does not exist; this machine has {count} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"device {name!r} asked for, but MPS is not available; use cpu or auto")
    return device


def device_description(device: torch.device) -> str:
    """A human-readable name of the device, e.g. "cuda:0 (NVIDIA H200)" or "cpu (2 threads,
    AVX2)".

    For a CPU it names the vector instructions PyTorch's kernels dispatch to: they decide the
    order of the floating-point sums, so results are bit-identical only between CPUs that share
    them (with the same thread count and code).
    """
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    capability = torch.backends.cpu.get_cpu_capability()
    return f"{device.type} ({torch.get_num_threads()} threads, {capability})"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_record(device: torch.device) -> dict[str, Any]:
    """Versions, platform, device and code version, stored beside the results."""
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {p: _version(p) for p in RECORDED_PACKAGES},
        "device": device_description(device),
        "cuda": torch.version.cuda,
        "code_version": code_version(),
        "cpu_kernels": kernel_status().reason if device.type == "cpu" else "not used off the CPU",
    }


def bf16_is_emulated(cpu_info: str) -> bool:
    """Whether an x86 CPU, by the "flags" line of Linux's /proc/cpuinfo text, lacks bf16
    instructions, so that PyTorch emulates bf16 arithmetic (about 10x slower than fp32 in
    training, measured on an AVX2 Zen 3). False where the text has no "flags" line (not x86,
    or not known): no claim is made there."""
    for line in cpu_info.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return not BF16_FLAGS & set(value.split())
    return False


def bf16_warning(precision: str, device: torch.device) -> str | None:
    """A one-line warning when bf16 is asked for on a CPU that would emulate it, else None."""
    if precision != "bf16" or device.type != "cpu" or not CPU_INFO.exists():
        return None
    if not bf16_is_emulated(CPU_INFO.read_text(errors="replace")):
        return None
    return (
        "warning: this CPU has no bf16 instructions (avx512_bf16, amx_bf16), so bf16 is "
        "emulated and trains about 10x slower than fp32; `actrange bench` measures both"
    )
