"""The Ray backend: each pending group trains as one Ray task, the driver writes the store.

The driver plans exactly as the local backend does (same groups, same run ids), loads the data
set once and puts it in Ray's object store. A task moves the data to its own device, trains its
group from the seeds and returns every epoch's report with the runs' arrays; the driver then
writes them into the result store and feeds the trackers. Caching and resuming are therefore
the local backend's: a sweep half done with one backend is finished by the other.

Checkpoints are not used here: a task that is retried (its worker died) or a group taken up
again after a stop restarts from the seeds, which gives identical numbers on the same device
type. A group's epochs reach the store when its task returns.
"""

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch

from actrange.config import ExperimentConfig, RunConfig
from actrange.data import FashionMNIST
from actrange.devicedata import DeviceData
from actrange.engine import EpochReport, train_group
from actrange.environment import resolve_device
from actrange.errors import UsageError
from actrange.exports import export_tables
from actrange.identity import code_fingerprint
from actrange.plan import Group
from actrange.progress import Progress
from actrange.store import Store, owner_token
from actrange.sweep import (
    StopRequested,
    Sweep,
    SweepOutcome,
    Tracker,
    run_arrays,
    stop_on_signals,
)

MAX_RETRIES = 3  # a task whose worker dies is started again this often
WAIT_SECONDS = 1.0  # how often the driver looks at the stop flag while tasks run
HEARTBEAT_SECONDS = 60.0  # claims are renewed this often, well inside the store's stale limit


@dataclass
class GroupResult:
    """What a task sends back: the group's epoch reports, each run's arrays, where it ran.

    ``code`` is the worker's numeric-code fingerprint: run ids name it, so a node with other
    code must not add results under them.
    """

    reports: list[EpochReport]
    arrays: list[dict[str, np.ndarray]]
    seconds: float
    device: str
    code: str


def train_group_task(
    runs: list[RunConfig], dataset: FashionMNIST, device_name: str, threads: int
) -> GroupResult:
    """Train one group from its seeds on this worker's device (the body of a Ray task).

    Args:
        runs: the group's runs, in the group's order.
        dataset: the whole data set as CPU tensors (resolved from the object store by Ray).
        device_name: the experiment's device setting, resolved on the worker ("auto" picks
            the GPU Ray assigned to the task, if any).
        threads: CPU threads for torch (the task's CPU share); 0 leaves torch's default.
    Returns:
        every epoch's report, each run's arrays, the training seconds, the device used and
        the worker's code fingerprint.
    """
    device = resolve_device(device_name)
    if threads > 0:
        torch.set_num_threads(threads)
    data = DeviceData(dataset, device)
    reports: list[EpochReport] = []
    started = time.perf_counter()
    state = train_group(runs, data, on_epoch=lambda report, _: reports.append(report))
    seconds = time.perf_counter() - started
    arrays = [run_arrays(state, g, reports[-1].confusion) for g in range(len(runs))]
    return GroupResult(reports, arrays, seconds, str(device), code_fingerprint())


def import_ray() -> ModuleType:
    """The ray module, or a UsageError that names the extra to install."""
    try:
        import ray
    except ImportError:
        raise UsageError("the ray backend needs Ray: pip install 'actrange[ray]'") from None
    return ray


def missing_resources(available: dict[str, float], cpus: float, gpus: float) -> str:
    """Why a task asking for ``cpus``/``gpus`` can never be placed ("" when it can).

    Args:
        available: the cluster's total resources, as ``ray.cluster_resources()`` gives them.
        cpus, gpus: what one task asks for.
    """
    for name, wanted in (("CPU", cpus), ("GPU", gpus)):
        have = available.get(name, 0.0)
        if wanted > have:
            key = f"ray_{name.lower()}s_per_task"
            return f"{key} = {wanted:g} but the Ray cluster has {have:g} {name}s in all"
    return ""


def failure_reason(error: BaseException) -> str:
    """One line for the store: the task's own exception rather than Ray's wrapper."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, BaseException):
        error = cause
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:300]}"


class RaySweep(Sweep):
    """A sweep whose groups run as Ray tasks, locally or on the cluster at ``ray_address``.

    The driver never trains: when it cannot use the configured device itself (a CPU-only head
    node of a GPU cluster), it plans on the CPU. With GPU tasks, set ``group_size``: the
    automatic size is measured on the driver's device.
    """

    # what each task runs; a subclass may substitute a function with the same signature
    task_function: Callable[..., GroupResult] = staticmethod(train_group_task)

    def __init__(
        self,
        config: ExperimentConfig,
        out_dir: Path,
        *,
        progress: Progress,
        trackers: list[Tracker] | None = None,
    ) -> None:
        try:
            resolve_device(config.device)
            planning = config
        except UsageError:
            planning = replace(config, device="cpu")
        super().__init__(planning, out_dir, progress=progress, trackers=trackers)
        self.config = config
        self.address = config.ray_address or os.environ.get("RAY_ADDRESS", "")

    # -- the Ray instance ----------------------------------------------------------------------

    def _connect(self, ray: ModuleType) -> bool:
        """Join the cluster, or start a local instance; True when this sweep started Ray."""
        if ray.is_initialized():
            return False
        if self.address:
            try:
                ray.init(address=self.address, log_to_driver=False)
            except (ConnectionError, RuntimeError, ValueError) as error:
                raise UsageError(
                    f"cannot join the Ray cluster at {self.address!r}: {error}"
                ) from None
            return True
        ray.init(
            address="local",
            num_cpus=os.cpu_count() or 1,
            include_dashboard=False,
            log_to_driver=False,
        )
        problem = missing_resources(
            ray.cluster_resources(), self.config.ray_cpus_per_task, self.config.ray_gpus_per_task
        )
        if problem:
            ray.shutdown()
            raise UsageError(f"{problem}; lower it, or give --ray-address of a larger cluster")
        return True

    def _where(self, ray: ModuleType) -> str:
        resources = ray.cluster_resources()
        place = f"Ray cluster {self.address}" if self.address else "local Ray"
        return f"{place} ({resources.get('CPU', 0):g} CPUs, {resources.get('GPU', 0):g} GPUs)"

    # -- execution -----------------------------------------------------------------------------

    def execute(self) -> SweepOutcome:
        """Train every unfinished run as Ray tasks, export the tables, say what happened."""
        ray = import_ray()
        # Ray installs its own SIGTERM handler on init: start it before ours go in
        started_here = self._connect(ray)
        try:
            return self._execute_with(ray)
        finally:
            if started_here:
                ray.shutdown()

    def _execute_with(self, ray: ModuleType) -> SweepOutcome:
        started = time.perf_counter()
        with Store(self.out_dir) as store, stop_on_signals() as flag:
            todo, outcome = self.begin(store, self._where(ray))
            owner = owner_token()
            claimed = [self.claim_group(store, g, owner, outcome) for g in todo]
            running = self._submit(ray, [g for g in claimed if g is not None])
            self._collect(ray, store, running, owner, flag, outcome)
            export_tables(store, self.out_dir)
        outcome.seconds = time.perf_counter() - started
        return outcome

    def _submit(self, ray: ModuleType, groups: list[Group]) -> dict[Any, Group]:
        """Start one task per group; the data set goes to the object store once."""
        if not groups:
            return {}
        dataset = ray.put(self.data().dataset)
        cpus, gpus = self.config.ray_cpus_per_task, self.config.ray_gpus_per_task
        task = ray.remote(type(self).task_function).options(
            num_cpus=cpus, num_gpus=gpus, max_retries=MAX_RETRIES
        )
        running = {}
        for index, group in enumerate(groups, 1):
            ref = task.remote(list(group.runs), dataset, self.config.device, max(0, round(cpus)))
            running[ref] = group
            self.progress.group_started(index, len(groups), group, 0)
        return running

    def _collect(
        self,
        ray: ModuleType,
        store: Store,
        running: dict[Any, Group],
        owner: str,
        flag: dict,
        outcome: SweepOutcome,
    ) -> None:
        """Store each group's results as its task ends; on a stop, cancel and release the rest."""
        renewed = time.monotonic()
        while running:
            ready, _ = ray.wait(list(running), num_returns=1, timeout=WAIT_SECONDS)
            if flag["stop"]:
                self._abandon(ray, store, running)
                raise StopRequested
            if time.monotonic() - renewed > HEARTBEAT_SECONDS:
                store.claim([rid for g in running.values() for rid in g.run_ids], owner)
                renewed = time.monotonic()
            for ref in ready:
                group = running.pop(ref)
                try:
                    result = ray.get(ref)
                except UsageError:
                    store.release(list(group.run_ids))
                    self._abandon(ray, store, running)
                    raise
                except Exception as error:  # noqa: BLE001 - one broken group must not end the sweep
                    self.fail_group(store, group, failure_reason(error), outcome)
                    continue
                if result.code != code_fingerprint():
                    store.release(list(group.run_ids))
                    self._abandon(ray, store, running)
                    raise UsageError(
                        f"a Ray worker runs actrange numeric code {result.code}, this driver "
                        f"{code_fingerprint()}; install the same actrange on every node"
                    )
                self._store_result(store, group, result, outcome)

    def _abandon(self, ray: ModuleType, store: Store, running: dict[Any, Group]) -> None:
        """Cancel the tasks still running and give their runs back as pending."""
        for ref, group in running.items():
            ray.cancel(ref, force=True)
            store.release(list(group.run_ids))
        running.clear()

    def _store_result(
        self, store: Store, group: Group, result: GroupResult, outcome: SweepOutcome
    ) -> None:
        """Write a finished task's epochs and runs, as the local backend would have."""
        # epochs left by an interrupted local attempt are replaced: the task began at the seeds
        store.restart(list(group.run_ids), after_epoch=0)
        for report in result.reports:
            self.write_epoch(store, group, report)
        self.finish_runs(
            store, group, result.reports[-1], result.arrays, result.seconds, result.device, outcome
        )
        # a local checkpoint of this group is now stale
        self._checkpoint_path(group).unlink(missing_ok=True)
