"""Does a faster precision change the results? The study's four runs trained in each, compared.

The benchmark's reduced-precision lines (bf16 autocast, and TF32 on CUDA) are only worth their
speed if they train the same models. This check trains the study's four cells (ReLU and Tanh at
[-1, 1] and [-5, 5], seed 42) for a few epochs on the first training images, once in fp32 and
once in each other precision, from the same initial weights and batch order, and reports each
run's final test accuracy and training loss side by side.

A difference is the reduced precision's whole effect on that run, rounding amplified by training
included. It is not a test against seed-to-seed variation, which a replicated run measures.
"""

from dataclasses import dataclass

from actrange import engine
from actrange.config import PixelRange, RunConfig
from actrange.data import FashionMNIST
from actrange.devicedata import DeviceData

STUDY_CELLS = [
    ("relu", PixelRange(-1.0, 1.0)),
    ("tanh", PixelRange(-1.0, 1.0)),
    ("relu", PixelRange(-5.0, 5.0)),
    ("tanh", PixelRange(-5.0, 5.0)),
]
STUDY_SEED, LR, MOMENTUM, BATCH = 42, 0.01, 0.5, 128


@dataclass(frozen=True)
class CheckSettings:
    """How long the check trains: ``epochs`` passes over the first ``images`` training images."""

    epochs: int
    images: int


def check_runs(settings: CheckSettings, precision: str) -> list[RunConfig]:
    """The study's four runs, shortened to the check's length, in ``precision``."""
    return [
        RunConfig(
            activation,
            pixel_range,
            STUDY_SEED,
            LR,
            MOMENTUM,
            BATCH,
            settings.epochs,
            settings.images,
            record_values=0,  # samples are not compared; leaving them out saves time
            precision=precision,
        )
        for activation, pixel_range in STUDY_CELLS
    ]


def _final_epoch(runs: list[RunConfig], data: DeviceData) -> engine.EpochReport:
    reports: list[engine.EpochReport] = []
    engine.train_group(runs, data, on_epoch=lambda report, _: reports.append(report))
    return reports[-1]


def precision_check(
    dataset: FashionMNIST, data: DeviceData, precisions: list[str], settings: CheckSettings
) -> dict:
    """Train the check's runs in fp32 and in each of ``precisions``; the results, JSON-able.

    Returns:
        ``runs`` (labels), ``epochs``, ``images``, per precision its ``test_accuracy`` and
        ``train_loss`` lists, and per reduced precision ``largest_accuracy_difference`` (the
        largest |accuracy - fp32 accuracy| over the runs, in points).
    """
    images = min(settings.images, int(dataset.train_labels.shape[0]))
    settings = CheckSettings(settings.epochs, images)
    labels = [f"{a} [{r.lo:g}, {r.hi:g}]" for a, r in STUDY_CELLS]
    reference = _final_epoch(check_runs(settings, "fp32"), data)
    results: dict = {"runs": labels, "epochs": settings.epochs, "images": images}
    results["fp32"] = {"test_accuracy": reference.test_accuracy, "train_loss": reference.train_loss}
    results["largest_accuracy_difference"] = {}
    for precision in precisions:
        final = _final_epoch(check_runs(settings, precision), data)
        results[precision] = {"test_accuracy": final.test_accuracy, "train_loss": final.train_loss}
        pairs = zip(final.test_accuracy, reference.test_accuracy, strict=True)
        results["largest_accuracy_difference"][precision] = max(abs(a - b) for a, b in pairs)
    return results


def format_check(check: dict) -> list[str]:
    """The check as aligned text lines: one row per run, accuracy per precision and difference."""
    reduced = list(check["largest_accuracy_difference"])
    head = (
        f"precision check: the study's {len(check['runs'])} runs, {check['epochs']} epoch(s) "
        f"on the first {check['images']:,} training images; final test accuracy (%):"
    )
    columns = ["fp32", *reduced, *(f"{p} - fp32" for p in reduced)]
    rows = [f"  {'run':<14}" + "".join(f"{c:>13}" for c in columns)]
    for index, label in enumerate(check["runs"]):
        fp32 = check["fp32"]["test_accuracy"][index]
        values = [check[p]["test_accuracy"][index] for p in ["fp32", *reduced]]
        cells = [f"{v:13.2f}" for v in values]
        cells += [f"{check[p]['test_accuracy'][index] - fp32:+13.2f}" for p in reduced]
        rows.append(f"  {label:<14}" + "".join(cells))
    largest = ", ".join(
        f"{p} {check['largest_accuracy_difference'][p]:.2f} points" for p in reduced
    )
    return [head, *rows, f"  largest difference from fp32: {largest}"]
