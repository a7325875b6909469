"""Which runs train together: groups of compatible runs, sized to the device.

Groups are cut from the whole experiment in a fixed order, so an interrupted sweep that is
started again meets the same groups and computes the same numbers.
"""

import math
import os
from dataclasses import dataclass

import torch

from actrange.config import RunConfig
from actrange.identity import group_id, run_id

# bytes one model needs per training image in flight: ~29k activations kept for backward, with
# their gradients and the optimizer's copies, measured loosely (x 4 bytes x 3)
BYTES_PER_IMAGE = 29_000 * 4 * 3
# on the development CPU groups of 4 and 8 were the fastest per model-epoch, each ahead in some
# runs and behind in others (see the README's benchmark)
CPU_GROUP = 8
GPU_GROUP_CAP = 256


@dataclass(frozen=True)
class Group:
    """Runs trained in one batched computation."""

    runs: tuple[RunConfig, ...]
    run_ids: tuple[str, ...]

    @property
    def id(self) -> str:
        """The group's name (hash of its run ids)."""
        return group_id(list(self.run_ids))


def compatibility_key(run: RunConfig) -> tuple:
    """Runs can share a group only when every batch has the same shape and precision."""
    return (run.batch_size, run.epochs, run.train_subset, run.record_values, run.precision)


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device`` (GPU memory, or the host's available memory)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")


def choose_group_size(device: torch.device, batch_size: int, requested: int = 0) -> int:
    """``requested`` if set, else as many models as half the free memory holds (capped)."""
    if requested > 0:
        return requested
    per_model = BYTES_PER_IMAGE * batch_size
    fits = max(1, available_memory(device) // 2 // per_model)
    cap = GPU_GROUP_CAP if device.type == "cuda" else CPU_GROUP
    return int(min(fits, cap))


def balanced_group_size(n_runs: int, workers: int, cap: int) -> int:
    """The largest size <= ``cap`` that gives every worker the same number of groups, or close.

    20 runs, 2 workers, cap 8: 4 groups of 5 (two each), not 8 + 8 + 4 (one worker idle at the end).
    """
    per_round = workers * cap
    rounds = max(1, math.ceil(n_runs / per_round))
    return max(1, min(cap, math.ceil(n_runs / (workers * rounds))))


def make_groups(runs: list[RunConfig], group_size: int) -> list[Group]:
    """Cut compatible runs into groups of at most ``group_size``, in a stable order.

    Runs with the same activation schedule sit next to each other so that a group needs few
    activation segments.
    """
    by_key: dict[tuple, list[RunConfig]] = {}
    for run in runs:
        by_key.setdefault(compatibility_key(run), []).append(run)
    groups = []
    for members in by_key.values():
        members.sort(key=lambda r: (r.label, r.range.lo, r.range.hi, r.lr, r.seed))
        for start in range(0, len(members), group_size):
            chunk = tuple(members[start : start + group_size])
            groups.append(Group(chunk, tuple(run_id(r) for r in chunk)))
    return groups
