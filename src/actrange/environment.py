"""The training device, and the record of the environment stored with every experiment."""

import platform
import sys
from importlib import metadata
from typing import Any

import torch

from actrange.cpu_kernels import kernel_status
from actrange.errors import UsageError
from actrange.identity import code_version

RECORDED_PACKAGES = ("torch", "numpy", "scipy", "matplotlib", "pooch")


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
