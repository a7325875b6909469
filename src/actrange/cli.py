"""The `actrange` command line: run, report, status, bench, data.

Every problem with the user's input ends as one line on stderr and exit status 2.
"""

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from actrange.config_files import preset_names, resolve
from actrange.errors import UsageError

if TYPE_CHECKING:
    from actrange.bench_run import BenchSettings

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is a UsageError (one line, exit 2) like every other."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not a number") from None


def _integer(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"{what}: {text!r} is not an integer") from None


def _pairs(text: str, what: str) -> list[list[float]]:
    """ "-1:1,-5:5" -> [[-1, 1], [-5, 5]]."""
    pairs = []
    for part in _split(text):
        lo, sep, hi = part.partition(":")
        if not sep:
            raise UsageError(f"{what}: {part!r} is not of the form A:B (e.g. --ranges=-1:1,-5:5)")
        pairs.append([_number(lo, what), _number(hi, what)])
    return pairs


def _switches(text: str) -> list[Any]:
    """ "none,5:relu" -> ["none", {"epoch": 5, "to": "relu"}]."""
    switches: list[Any] = []
    for part in _split(text):
        if part == "none":
            switches.append("none")
            continue
        epoch, sep, to = part.partition(":")
        if not sep:
            raise UsageError(f"--switch: {part!r} is not of the form EPOCH:ACTIVATION or none")
        switches.append({"epoch": _integer(epoch, "--switch"), "to": to})
    return switches


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The experiment keys the command line sets, TOML-shaped for the one validator."""
    given: dict[str, Any] = {}
    if args.activations is not None:
        given["activations"] = _split(args.activations)
    if args.ranges is not None:
        given["ranges"] = _pairs(args.ranges, "--ranges")
    if args.normalize is not None:
        given["normalize"] = _pairs(args.normalize, "--normalize")
    if args.seeds is not None:
        given["seeds"] = [_integer(s, "--seeds") for s in _split(args.seeds)]
    if args.lrs is not None:
        given["lrs"] = [_number(s, "--lr") for s in _split(args.lrs)]
    if args.switch is not None:
        given["switches"] = _switches(args.switch)
    for key in ("epochs", "batch_size", "train_subset", "group_size", "record_values", "workers"):
        value = getattr(args, key)
        if value is not None:
            given[key] = _integer(value, f"--{key.replace('_', '-')}")
    if args.momentum is not None:
        given["momentum"] = _number(args.momentum, "--momentum")
    for key in ("device", "precision", "data", "backend", "ray_address"):
        if getattr(args, key) is not None:
            given[key] = getattr(args, key)
    if args.mlflow is not None:
        given["mlflow"] = args.mlflow
    if args.tensorboard is not None:
        given["tensorboard"] = args.tensorboard
    for flag, key, value in (
        (args.no_checkpoint, "checkpoint", False),
        (args.no_download, "download", False),
        (args.no_verify_data, "verify_data", False),
    ):
        if flag:
            given[key] = value
    return given


def _add_run_options(run: argparse.ArgumentParser) -> None:
    grid = run.add_argument_group("the grid (comma-separated lists)")
    grid.add_argument("--activations", help="e.g. relu,tanh,gelu")
    grid.add_argument("--ranges", help="pixel ranges lo:hi, e.g. --ranges=-1:1,-5:5")
    grid.add_argument("--normalize", help="torchvision (mean:std) pairs, e.g. 0.5:0.5,0.5:0.1")
    grid.add_argument("--seeds", help="e.g. 0,1,2")
    grid.add_argument("--lr", dest="lrs", help="learning rates, e.g. 0.003,0.01")
    grid.add_argument("--switch", help="activation switches EPOCH:NAME or none, e.g. none,5:relu")
    train = run.add_argument_group("training")
    train.add_argument("--epochs")
    train.add_argument("--batch-size")
    train.add_argument("--momentum")
    train.add_argument("--train-subset", help="train on the first N training images")
    train.add_argument("--record-values", help="pre-activation values sampled per layer")
    train.add_argument("--device", help="auto (default), cpu, cuda, cuda:N")
    train.add_argument("--precision", help="fp32 (default), bf16 (autocast) or tf32 (CUDA)")
    train.add_argument("--group-size", help="models trained together (0: from free memory)")
    train.add_argument("--no-checkpoint", action="store_true", help="no per-epoch checkpoints")
    train.add_argument("--workers", help="local training processes, cores shared (default 1)")
    place = run.add_argument_group("data, output, backends")
    place.add_argument("--out", default="results", help="result directory (default: results)")
    place.add_argument("--data", help="directory holding the Fashion-MNIST files")
    place.add_argument("--no-download", action="store_true", help="never download the data")
    place.add_argument(
        "--no-verify-data",
        action="store_true",
        help="accept data files whose counts or checksums differ from Fashion-MNIST's",
    )
    place.add_argument("--backend", help="local (default) or ray")
    place.add_argument("--ray-address", help="an existing Ray cluster (default: RAY_ADDRESS)")
    place.add_argument("--mlflow", nargs="?", const="default", help="log to MLflow [URI]")
    place.add_argument("--tensorboard", help="write TensorBoard logs to DIR")
    place.add_argument("--quiet", action="store_true", help="no progress output")
    place.add_argument("--no-report", action="store_true", help="skip figures and report")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = _Parser(prog="actrange", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="run an experiment (default: the study as written)")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--preset", help=f"one of {', '.join(preset_names())}")
    source.add_argument("--config", help="a TOML experiment file")
    _add_run_options(run)

    report = commands.add_parser("report", help="write figures and the HTML/Markdown report")
    report.add_argument("directory")

    status = commands.add_parser("status", help="list the runs of a result directory by state")
    status.add_argument("directory")

    bench = commands.add_parser("bench", help="measure training speed (JSON + table)")
    bench.add_argument("--out", default=None, help="write the JSON document here")
    bench.add_argument("--groups", default="1,4,16", help="group sizes to measure")
    bench.add_argument("--batches", default="20", help="training steps timed per engine line")
    bench.add_argument(
        "--notebook-batches", default="469", help="training steps timed for the notebook line"
    )
    bench.add_argument("--device", default="auto")
    bench.add_argument("--skip-notebook", action="store_true", help="skip the notebook pipeline")
    bench.add_argument("--processes", default="0", help="also time N engine processes at once")
    bench.add_argument("--process-group", default="4", help="models per process for --processes")
    bench.add_argument(
        "--check-epochs", default="2", help="epochs of the precision check (0 skips it)"
    )
    bench.add_argument(
        "--check-images", default="60000", help="training images of the precision check"
    )
    bench.add_argument(
        "--repeats", default="1", help="whole runs, each in a new process, then a summary"
    )

    data = commands.add_parser("data", help="find, verify (and download) Fashion-MNIST")
    data.add_argument("--data", help="directory holding the files")
    data.add_argument("--no-download", action="store_true")
    return parser


def _command_run(args: argparse.Namespace) -> int:
    from actrange.progress import Progress
    from actrange.runner import execute

    config = resolve(args.preset or args.config, _overrides(args))
    progress = Progress(quiet=args.quiet)
    try:
        return execute(config, Path(args.out), progress=progress, report=not args.no_report)
    finally:
        progress.close()


def _command_report(args: argparse.Namespace) -> int:
    from actrange.report import write_report
    from actrange.store import Store

    directory = Path(args.directory)
    with Store(directory, create=False) as store:
        paths = write_report(store, directory)
    for path in paths:
        print(path)
    return 0


def _command_status(args: argparse.Namespace) -> int:
    from actrange.status import print_status

    return print_status(Path(args.directory))


def bench_settings(args: argparse.Namespace) -> "BenchSettings":
    """The bench command's options as BenchSettings (each number checked for being one)."""
    from actrange.bench_run import BenchSettings

    return BenchSettings(
        groups=[_integer(g, "--groups") for g in _split(args.groups)],
        batches=_integer(args.batches, "--batches"),
        notebook=not args.skip_notebook,
        notebook_batches=_integer(args.notebook_batches, "--notebook-batches"),
        processes=_integer(args.processes, "--processes"),
        process_group=_integer(args.process_group, "--process-group"),
        check_epochs=_integer(args.check_epochs, "--check-epochs"),
        check_images=_integer(args.check_images, "--check-images"),
        repeats=_integer(args.repeats, "--repeats"),
    )


def _command_bench(args: argparse.Namespace) -> int:
    from actrange.bench_run import run_benchmark

    settings = bench_settings(args)
    return run_benchmark(settings, args.device, Path(args.out) if args.out else None)


def _command_data(args: argparse.Namespace) -> int:
    from actrange.data import load_fashion_mnist

    dataset = load_fashion_mnist(
        Path(args.data) if args.data else None, download=not args.no_download
    )
    print(
        f"Fashion-MNIST verified: {dataset.train_images.shape[0]} train and "
        f"{dataset.test_images.shape[0]} test images from {dataset.source}"
    )
    return 0


COMMANDS = {
    "run": _command_run,
    "report": _command_report,
    "status": _command_status,
    "bench": _command_bench,
    "data": _command_data,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as error:
        print(f"actrange: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("actrange: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`actrange status DIR | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
