"""The benchmark's line for several worker processes: P processes, each training a group of G.

Each process gets its share of the cores (as ``actrange run --workers P`` gives it), loads the
data, waits at a barrier so that all start training together, and measures its group exactly as
the single-process engine line does. The slowest process bounds the throughput, so the line's
time is the longest of the processes' times, for P x G models.
"""

import multiprocessing

import torch

from actrange.bench import Line, measure_engine
from actrange.data import load_fashion_mnist
from actrange.devicedata import DeviceData
from actrange.workers import threads_per_worker

JOIN_SECONDS = 3600  # a measurement is minutes; a process gone quiet for an hour has hung


def _measure_one(
    barrier, results, group: int, batches: int, threads: int, device_name: str, precision: str
) -> None:
    """One worker process: its share of threads, the data, the barrier, then line (c)."""
    torch.set_num_threads(threads)
    data = DeviceData(load_fashion_mnist(), torch.device(device_name))
    barrier.wait(timeout=JOIN_SECONDS)
    line = measure_engine(data, group, batches, precision)
    results.put(line)


def measure_workers(
    processes: int, group: int, batches: int, device: torch.device, precision: str = "fp32"
) -> Line:
    """(c) ``processes`` concurrent engine processes, a group of ``group`` models in each."""
    threads = threads_per_worker(processes)
    context = multiprocessing.get_context("spawn")  # no inherited OpenMP pool
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(
            target=_measure_one,
            args=(barrier, results, group, batches, threads, str(device), precision),
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:  # a Line is small: the queue has flushed it before the exit
        worker.join(JOIN_SECONDS)
    failed = [w.exitcode for w in workers if w.exitcode != 0]
    if failed:
        raise RuntimeError(f"benchmark worker processes failed with exit status {failed}")
    lines = [results.get(timeout=10) for _ in workers]
    suffix = "" if precision == "fp32" else f" {precision}"
    return Line(
        name=f"(c) engine {processes} processes x G={group}{suffix}",
        group=processes * group,
        precision=precision,
        steps=lines[0].steps,
        seconds=max(line.seconds for line in lines),
        # each process's peak resident memory, added up: they are alive at the same time
        peak_memory_bytes=sum(line.peak_memory_bytes for line in lines),
        statistics_seconds=max(line.statistics_seconds or 0.0 for line in lines),
        evaluation_seconds=max(line.evaluation_seconds or 0.0 for line in lines),
    )
