"""Several local training processes on one result directory, the CPU cores shared out.

On a CPU, PyTorch's small grouped convolutions use two threads poorly: two processes with one
thread each trained 15-20% more model-epochs per second than one process with two on the
development machine (README, Performance). The store already lets processes share a directory:
each claims a group's runs in a transaction before training them, so no run is trained twice,
and the claims of a process that dies are taken over by the next sweep.

The main process trains like any worker, then waits for the helpers, merges what they did and
exports the tables once.
"""

import multiprocessing
import os
import queue
import signal
import sys
from pathlib import Path

import torch

from actrange.config import ExperimentConfig
from actrange.exports import export_tables
from actrange.identity import run_id
from actrange.progress import Progress
from actrange.store import DONE, Store
from actrange.sweep import StopRequested, Sweep, SweepOutcome, Tracker

EXIT_STOPPED = 130


def threads_per_worker(workers: int) -> int:
    """Each of ``workers`` processes' share of this process's intra-op threads, at least one."""
    return max(1, torch.get_num_threads() // workers)


def _helper(
    config: ExperimentConfig,
    out_dir: Path,
    name: str,
    threads: int,
    quiet: bool,
    outcomes: multiprocessing.Queue,
) -> None:
    """A helper process: train the groups it can claim, hand back what it did."""
    from actrange.runner import make_trackers  # the runner imports this module

    torch.set_num_threads(threads)
    progress = Progress(quiet=quiet, bar=False, prefix=f"[{name}] ")
    trackers = make_trackers(config, out_dir)
    try:
        sweep = Sweep(config, out_dir, progress=progress, trackers=trackers)
        outcomes.put(sweep.execute(export=False))
    except StopRequested:
        sys.exit(EXIT_STOPPED)
    finally:
        for tracker in trackers:
            getattr(tracker, "close", lambda: None)()


def _start_helpers(
    config: ExperimentConfig, out_dir: Path, threads: int, quiet: bool
) -> tuple[list[multiprocessing.Process], multiprocessing.Queue]:
    # spawn, not fork: a forked child would inherit the parent's OpenMP thread pool mid-state
    context = multiprocessing.get_context("spawn")
    outcomes = context.Queue()
    helpers = [
        context.Process(
            target=_helper,
            args=(config, out_dir, f"worker {n}", threads, quiet, outcomes),
            name=f"actrange worker {n}",
        )
        for n in range(2, config.workers + 1)
    ]
    for helper in helpers:
        helper.start()
    return helpers, outcomes


def _stop(helpers: list[multiprocessing.Process]) -> None:
    """Ask the helpers to stop after their epoch (they save first), and wait for them."""
    for helper in helpers:
        if helper.is_alive() and helper.pid is not None:
            os.kill(helper.pid, signal.SIGTERM)
    for helper in helpers:
        helper.join()


def _wait(helpers: list[multiprocessing.Process]) -> None:
    try:
        for helper in helpers:
            helper.join()
    except KeyboardInterrupt:  # Ctrl-C while only the helpers were still training
        _stop(helpers)
        raise StopRequested from None


def _merge(
    mine: SweepOutcome,
    helpers: list[multiprocessing.Process],
    outcomes: multiprocessing.Queue,
    progress: Progress,
) -> SweepOutcome:
    """One outcome for the whole sweep; a helper that died is named."""
    merged = mine
    for helper in helpers:
        if helper.exitcode != 0:
            message = f"{helper.name} exited with status {helper.exitcode}"
            progress.message(f"{message}; runs it held are left for the next `actrange run`")
            continue
        try:
            theirs = outcomes.get(timeout=10)
        except queue.Empty:
            continue
        merged.trained += theirs.trained
        merged.diverged += theirs.diverged
        merged.failed += theirs.failed
        merged.failures += theirs.failures
    return merged


def execute_with_workers(
    config: ExperimentConfig, out_dir: Path, *, progress: Progress, trackers: list[Tracker]
) -> SweepOutcome:
    """Train ``config`` with ``config.workers`` local processes, this one included."""
    threads = threads_per_worker(config.workers)
    previous_threads = torch.get_num_threads()
    helpers, outcomes = _start_helpers(config, out_dir, threads, progress.quiet)
    torch.set_num_threads(threads)
    sweep = Sweep(config, out_dir, progress=progress, trackers=trackers)
    try:
        mine = sweep.execute(export=False)
    except StopRequested:
        _stop(helpers)
        raise
    finally:
        torch.set_num_threads(previous_threads)
    _wait(helpers)
    outcome = _merge(mine, helpers, outcomes, progress)

    # held_elsewhere: what no worker of this sweep finished, failed runs apart
    with Store(out_dir, create=False) as store:
        states = [r["status"] for r in store.runs([run_id(r) for r in sweep.runs])]
        outcome.held_elsewhere = sum(s not in DONE and s != "failed" for s in states)
        export_tables(store, out_dir)
    return outcome
