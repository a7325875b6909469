"""`actrange run`: pick the backend and trackers, run the sweep, then report."""

import sys
from pathlib import Path

from actrange.config import ExperimentConfig
from actrange.environment import bf16_warning, resolve_device
from actrange.progress import Progress
from actrange.store import Store
from actrange.sweep import StopRequested, Sweep, SweepOutcome, Tracker

EXIT_OK, EXIT_FAILED_RUNS, EXIT_STOPPED = 0, 1, 130


def make_trackers(config: ExperimentConfig, out_dir: Path) -> list[Tracker]:
    """The trackers the config asks for (their libraries are optional extras)."""
    trackers: list[Tracker] = []
    if config.mlflow:
        from actrange.tracking import MlflowTracker

        trackers.append(MlflowTracker(config, out_dir))
    if config.tensorboard:
        from actrange.tracking import TensorBoardTracker

        trackers.append(TensorBoardTracker(Path(config.tensorboard)))
    return trackers


def _summary_line(outcome: SweepOutcome, out_dir: Path) -> str:
    parts = [
        f"{outcome.planned} runs",
        f"{outcome.skipped} already done",
        f"{outcome.trained} trained",
    ]
    if outcome.diverged:
        parts.append(f"{outcome.diverged} diverged")
    if outcome.failed:
        parts.append(f"{outcome.failed} failed")
    if outcome.held_elsewhere:
        parts.append(f"{outcome.held_elsewhere} held by another process")
    return f"done   {', '.join(parts)} in {outcome.seconds:.1f} s -> {out_dir}"


def _train(
    config: ExperimentConfig, out_dir: Path, progress: Progress, trackers: list[Tracker]
) -> SweepOutcome:
    """The sweep on the configured backend."""
    if config.backend == "ray":
        from actrange.ray_backend import RaySweep

        return RaySweep(config, out_dir, progress=progress, trackers=trackers).execute()
    if config.workers > 1:
        from actrange.workers import execute_with_workers

        return execute_with_workers(config, out_dir, progress=progress, trackers=trackers)
    return Sweep(config, out_dir, progress=progress, trackers=trackers).execute()


def execute(config: ExperimentConfig, out_dir: Path, *, progress: Progress, report: bool) -> int:
    """Run ``config`` into ``out_dir``; return the exit status."""
    # on Ray the runs train on the cluster's machines, not this one
    local = config.backend != "ray"
    warning = bf16_warning(config.precision, resolve_device(config.device)) if local else None
    if warning is not None:
        print(warning, file=sys.stderr)  # even with --quiet: it explains a slow run
    trackers = make_trackers(config, out_dir)
    try:
        outcome = _train(config, out_dir, progress, trackers)
    except StopRequested:
        # said even with --quiet: the person who stopped the sweep needs to know what is kept
        print(f"stopped: finished runs and checkpoints are kept in {out_dir}", file=sys.stderr)
        return EXIT_STOPPED
    finally:
        for tracker in trackers:
            close = getattr(tracker, "close", None)
            if close is not None:
                close()
    progress.message(_summary_line(outcome, out_dir))
    for failure in outcome.failures:
        progress.message(f"failed {failure}")
    if report:
        from actrange.report import write_report

        with Store(out_dir, create=False) as store:
            written = write_report(store, out_dir)
        progress.message(f"report {written[0]}")
    return EXIT_FAILED_RUNS if outcome.failed else EXIT_OK
