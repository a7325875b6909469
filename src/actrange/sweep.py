"""Run an experiment into a result directory: plan, skip what is done, train the rest.

A run's results reach the store epoch by epoch; a group's state is checkpointed after each
epoch when checkpoints are on. A sweep killed at any moment and started again loses no finished
run and recomputes the unfinished ones to the same numbers.
"""

import io
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from actrange.config import ExperimentConfig, RunConfig
from actrange.config_files import to_toml
from actrange.data import load_fashion_mnist
from actrange.devicedata import DeviceData
from actrange.engine import EpochReport, GroupState, train_group
from actrange.environment import environment_record, resolve_device
from actrange.errors import UsageError
from actrange.exports import export_tables
from actrange.identity import code_version, run_id
from actrange.model import N_PARAMS
from actrange.plan import Group, balanced_group_size, choose_group_size, make_groups
from actrange.progress import Progress
from actrange.store import DONE, Store, owner_token, write_atomically


class StopRequested(Exception):
    """SIGINT or SIGTERM arrived: stop after the current epoch, keeping what is saved."""


class Tracker(Protocol):
    """An experiment tracker (MLflow, TensorBoard) fed as runs progress."""

    def log_epoch(self, run: RunConfig, rid: str, row: dict, layer_rows: list[dict]) -> None: ...

    def end_run(self, run: RunConfig, rid: str, summary: dict, arrays: dict) -> None: ...


@dataclass
class SweepOutcome:
    """What a sweep did, for the command line's closing line."""

    planned: int = 0
    skipped: int = 0
    trained: int = 0
    diverged: int = 0
    failed: int = 0
    held_elsewhere: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


@contextmanager
def stop_on_signals() -> Iterator[dict[str, bool]]:
    """Turn SIGINT/SIGTERM into a flag the epoch loop checks, so a stop saves first."""
    flag = {"stop": False}

    def request_stop(signum: int, frame: Any) -> None:
        flag["stop"] = True

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run_rows(group: Group, report: EpochReport) -> tuple[list[dict], list[dict]]:
    """The epoch's rows for epochs.csv and layers.csv, one per run (and layer)."""
    rows, layer_rows = [], []
    for g, rid in enumerate(group.run_ids):
        rows.append(
            {
                "run_id": rid,
                "epoch": report.epoch,
                "activation": report.activations[g],
                "train_loss": report.train_loss[g],
                "test_loss": report.test_loss[g],
                "test_accuracy": report.test_accuracy[g],
                "seconds": report.seconds,
            }
        )
        for layer, stats in (report.layer_stats[g] if report.layer_stats else {}).items():
            base = {"run_id": rid, "epoch": report.epoch, "layer": layer}
            layer_rows.append({**base, "activation": report.activations[g], **stats})
    return rows, layer_rows


def run_arrays(state: GroupState, g: int, confusion: torch.Tensor) -> dict[str, np.ndarray]:
    """A run's arrays: pre-activation samples [epochs, n] per layer, confusion, per-class %."""
    arrays = {
        f"records_{layer}": torch.stack(samples).numpy()
        for layer, samples in state.records[g].items()
        if samples
    }
    matrix = confusion[g].numpy()  # [10, 10], rows = true class
    arrays["confusion"] = matrix
    arrays["per_class_accuracy"] = 100.0 * np.diag(matrix) / np.maximum(matrix.sum(1), 1)
    return arrays


def run_summary(
    group: Group, g: int, report: EpochReport, seconds: float, device: str
) -> dict[str, Any]:
    """The run's row in the store once its last epoch is done."""
    diverged = report.diverged_epoch[g]
    return {
        "status": "diverged" if diverged else "finished",
        "diverged_epoch": diverged,
        "final_train_loss": report.train_loss[g],
        "test_loss": report.test_loss[g],
        "test_accuracy": report.test_accuracy[g],
        "seconds": seconds,
        "device": device,
        "group_id": group.id,
        "code_version": code_version(),
    }


class Sweep:
    """One experiment executed into one result directory."""

    def __init__(
        self,
        config: ExperimentConfig,
        out_dir: Path,
        *,
        progress: Progress,
        trackers: list[Tracker] | None = None,
    ) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.progress = progress
        self.trackers = trackers or []
        self.device = resolve_device(config.device)
        self.runs = config.runs()
        self.ids = [run_id(r) for r in self.runs]
        size = choose_group_size(self.device, config.batch_size, config.group_size)
        if config.workers > 1 and config.group_size == 0:
            size = balanced_group_size(len(self.runs), config.workers, size)
        self.groups = make_groups(self.runs, size)
        self._data: DeviceData | None = None

    # -- planning ------------------------------------------------------------------------------

    def register(self, store: Store) -> None:
        """Record the experiment and its runs; write the resolved config beside the results."""
        environment = environment_record(self.device)
        configs = {}
        for run, rid in zip(self.runs, self.ids, strict=True):
            configs[rid] = {**run.identity(), "label": run.label, "n_params": N_PARAMS}
        # the file first: if the disk is full, the store is left exactly as it was
        write_atomically(self.out_dir / "config.toml", to_toml(self.config).encode())
        store.plan(configs, to_toml(self.config), environment)

    def pending_groups(self, store: Store) -> list[Group]:
        """Groups with at least one run that is not done yet."""
        done = {r["run_id"] for r in store.runs(self.ids) if r["status"] in DONE}
        return [g for g in self.groups if not set(g.run_ids) <= done]

    def data(self) -> DeviceData:
        """The data set on the device, loaded on first use (a finished sweep needs none)."""
        if self._data is None:
            data_dir = Path(self.config.data) if self.config.data else None
            dataset = load_fashion_mnist(
                data_dir, download=self.config.download, verify=self.config.verify_data
            )
            self._data = DeviceData(dataset, self.device)
        return self._data

    # -- execution -----------------------------------------------------------------------------

    def execute(self, *, export: bool = True) -> SweepOutcome:
        """Train every unfinished run this process can claim, export the tables (unless another
        process will), and say what happened."""
        started = time.perf_counter()
        with Store(self.out_dir) as store, stop_on_signals() as flag:
            todo, outcome = self.begin(store, self.device)
            owner = owner_token()
            for index, group in enumerate(todo, 1):
                claimed = self.claim_group(store, group, owner, outcome)
                if claimed is not None:
                    self._execute_group(store, claimed, index, len(todo), flag, outcome)
            if export:
                export_tables(store, self.out_dir)
        outcome.seconds = time.perf_counter() - started
        return outcome

    def begin(self, store: Store, where: object) -> tuple[list[Group], SweepOutcome]:
        """Register the experiment, find the groups left to train and announce them."""
        self.register(store)
        todo = self.pending_groups(store)
        outcome = SweepOutcome(planned=len(self.runs))
        outcome.skipped = sum(r["status"] in DONE for r in store.runs(self.ids))
        self.progress.sweep_started(len(self.runs), outcome.skipped, len(todo), where)
        return todo, outcome

    def claim_group(
        self, store: Store, group: Group, owner: str, outcome: SweepOutcome
    ) -> Group | None:
        """The group's runs this process may train: a smaller group when some are taken."""
        claimed = set(store.claim(list(group.run_ids), owner))
        done = {r["run_id"] for r in store.runs(list(group.run_ids)) if r["status"] in DONE}
        outcome.held_elsewhere += len(set(group.run_ids) - claimed - done)
        if not claimed:
            return None
        keep = [i for i, rid in enumerate(group.run_ids) if rid in claimed]
        return Group(tuple(group.runs[i] for i in keep), tuple(group.run_ids[i] for i in keep))

    def _execute_group(
        self, store: Store, group: Group, index: int, total: int, flag: dict, outcome: SweepOutcome
    ) -> None:
        try:
            self._train(store, group, index, total, flag, outcome)
        except (StopRequested, UsageError):
            store.release(list(group.run_ids))
            raise
        except Exception as error:  # noqa: BLE001 - one broken group must not end the sweep
            self.fail_group(store, group, f"{type(error).__name__}: {error}", outcome)

    def fail_group(self, store: Store, group: Group, reason: str, outcome: SweepOutcome) -> None:
        """Mark a group's runs failed (the next sweep retries them) and say so."""
        store.fail(list(group.run_ids), reason)
        outcome.failed += len(group.runs)
        outcome.failures.append(f"group {group.id}: {reason}")
        self.progress.message(f"group {group.id} failed: {reason}")

    def write_epoch(self, store: Store, group: Group, report: EpochReport) -> None:
        """Store one epoch of a group, feed the trackers and show progress."""
        rows, layer_rows = run_rows(group, report)
        store.add_epoch(rows, layer_rows)
        for run, rid, row in zip(group.runs, group.run_ids, rows, strict=True):
            mine = [r for r in layer_rows if r["run_id"] == rid]
            for tracker in self.trackers:
                tracker.log_epoch(run, rid, row, mine)
        self.progress.epoch_done(group, report)

    def finish_runs(
        self,
        store: Store,
        group: Group,
        last: EpochReport,
        arrays: list[dict[str, np.ndarray]],
        seconds: float,
        device: str,
        outcome: SweepOutcome,
    ) -> None:
        """Mark each run of a group done with its summary and arrays."""
        for g, (run, rid) in enumerate(zip(group.runs, group.run_ids, strict=True)):
            summary = run_summary(group, g, last, seconds, device)
            store.finish(rid, summary, arrays[g])
            for tracker in self.trackers:
                tracker.end_run(run, rid, summary, arrays[g])
            outcome.trained += 1
            outcome.diverged += summary["status"] == "diverged"

    def _checkpoint_path(self, group: Group) -> Path:
        return self.out_dir / "checkpoints" / f"{group.id}.pt"

    def _resume_state(self, store: Store, group: Group) -> GroupState | None:
        """A checkpointed state for this exact group, with the store trimmed to match it."""
        path = self._checkpoint_path(group)
        state = None
        if self.config.checkpoint and path.exists():
            payload = torch.load(path, map_location="cpu", weights_only=False)
            if payload.get("run_ids") == list(group.run_ids):
                state = GroupState.from_payload(payload["state"], self.device)
        store.restart(list(group.run_ids), after_epoch=state.epochs_done if state else 0)
        return state

    def _save_checkpoint(self, group: Group, state: GroupState) -> None:
        buffer = io.BytesIO()
        torch.save({"run_ids": list(group.run_ids), "state": state.to_payload()}, buffer)
        write_atomically(self._checkpoint_path(group), buffer.getvalue())

    def _train(
        self, store: Store, group: Group, index: int, total: int, flag: dict, outcome: SweepOutcome
    ) -> None:
        data = self.data()
        state = self._resume_state(store, group)
        self.progress.group_started(index, total, group, state.epochs_done if state else 0)
        started = time.perf_counter()

        def on_epoch(report: EpochReport, current: GroupState) -> None:
            self.write_epoch(store, group, report)
            last = report.epoch == group.runs[0].epochs
            if self.config.checkpoint and not last:
                self._save_checkpoint(group, current)
            if last:
                arrays = [run_arrays(current, g, report.confusion) for g in range(len(group.runs))]
                seconds = time.perf_counter() - started
                self.finish_runs(store, group, report, arrays, seconds, str(self.device), outcome)
            elif flag["stop"]:
                raise StopRequested

        train_group(list(group.runs), data, state=state, on_epoch=on_epoch)
        self._checkpoint_path(group).unlink(missing_ok=True)
