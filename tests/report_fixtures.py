"""A small but real result directory, written through the Store as a sweep would, without training.

ReLU and Tanh at [-1, 1] and [-5, 5], seeds 0–3, 3 epochs. Seeds 0–2 are trained with known
numbers (one ReLU run at [-5, 5] diverges); seed 3 is left pending, running or failed, so the
report has every status to show.
"""

import math
from pathlib import Path

import numpy as np

from actrange.columns import EPOCH_COLUMNS, HIDDEN_LAYERS, LAYER_COLUMNS
from actrange.config import ExperimentConfig, PixelRange, RunConfig
from actrange.config_files import to_toml
from actrange.identity import run_id
from actrange.model import N_PARAMS
from actrange.report import write_report
from actrange.store import Store

EPOCHS = 3
SEEDS = (0, 1, 2, 3)
TRAINED_SEEDS = (0, 1, 2)
RECORDED = 40  # pre-activation samples per layer and epoch
NAME = "fake <study> & co"
THRESHOLD = 70.0

# final test accuracy (%) of seeds 0, 1, 2 per (activation, range_lo)
FINAL = {
    ("relu", -1.0): (80.0, 81.0, 82.0),
    ("tanh", -1.0): (85.0, 86.0, 87.0),
    ("relu", -5.0): (84.0, 86.0, 10.0),
    ("tanh", -5.0): (70.0, 71.0, 72.0),
}
DIVERGED = ("relu", -5.0, 2)  # (activation, range_lo, seed): train loss is NaN from epoch 2
SEED_3_STATUS = {
    ("tanh", -1.0): "pending",
    ("relu", -1.0): "failed",
    ("tanh", -5.0): "running",
    ("relu", -5.0): "pending",
}
FAILURE = "RuntimeError: out of <memory> & more"
ENVIRONMENT = {
    "python": "3.11.2",
    "platform": "Linux-test-x86_64",
    "packages": {"torch": "2.13.0", "numpy": "2.0.0"},
    "device": "cpu (2 threads, x86_64)",
    "cuda": None,
    "code_version": "actrange 0.1.0, git 0123456789ab, numeric code 0123456789ab",
}


def experiment(
    ranges: tuple[float, ...] = (-1.0, -5.0), seeds=SEEDS, lrs=(0.01,)
) -> ExperimentConfig:
    """The experiment the fake directory holds: ranges [lo, -lo] for each given lo."""
    return ExperimentConfig(
        name=NAME,
        activations=("relu", "tanh"),
        ranges=tuple(PixelRange(lo, -lo) for lo in ranges),
        seeds=tuple(seeds),
        lrs=tuple(lrs),
        epochs=EPOCHS,
        record_values=RECORDED,
        accuracy_threshold=THRESHOLD,
    )


def _curve(run: RunConfig) -> list[tuple[float, float]]:
    """(train loss, test accuracy) per epoch: loss 2, 1, 0.5 (+0.1 per seed), accuracy rising
    by 10 points an epoch to its final value; the diverged run sits at chance after epoch 1.
    A learning rate other than 0.01 ends 5 points lower."""
    final = FINAL[(run.activation, run.range.lo)][run.seed] - (0.0 if run.lr == 0.01 else 5.0)
    if (run.activation, run.range.lo, run.seed) == DIVERGED:
        return [(2.3, 12.0), (math.nan, final), (math.nan, final)]
    losses = (2.0 + 0.1 * run.seed, 1.0 + 0.1 * run.seed, 0.5 + 0.1 * run.seed)
    return [(loss, final - 10.0 * (EPOCHS - e)) for e, loss in enumerate(losses, start=1)]


def _epoch_rows(rid: str, run: RunConfig, epoch: int, loss: float, accuracy: float) -> tuple:
    row = dict.fromkeys(EPOCH_COLUMNS, 0.0)
    row.update(run_id=rid, epoch=epoch, activation=run.activation)
    row.update(train_loss=loss, test_loss=loss, test_accuracy=accuracy, seconds=1.0)
    layers = []
    for depth, layer in enumerate(HIDDEN_LAYERS):
        stats = dict.fromkeys(LAYER_COLUMNS, math.nan)
        stats.update(run_id=rid, epoch=epoch, layer=layer, activation=run.activation)
        spread = abs(run.range.lo)
        stats.update(mean=0.0, std=spread, p02=-2 * spread, p25=-spread / 2, p50=0.0)
        stats.update(p75=spread / 2, p98=2 * spread, update_ratio=1e-3)
        stats["grad_norm"] = 10.0 ** -(depth + 1) / spread
        if run.activation == "tanh":
            stats["saturated_frac"] = min(1.0, 0.05 * spread * (depth + 1) / epoch)
        else:
            stats.update(dead_frac=0.02 * depth / epoch, zero_frac=0.5)
        layers.append(stats)
    return row, layers


def _arrays(run: RunConfig, final: float, records: bool) -> dict[str, np.ndarray]:
    generator = np.random.default_rng([run.seed, len(run.activation)])
    spread = abs(run.range.lo)
    arrays = {}
    if records:
        for layer in HIDDEN_LAYERS:
            # values [epochs, samples]; the saturating activation's inputs sit further out
            scale = spread * (1.5 if run.activation == "tanh" else 1.0)
            values = generator.normal(0.0, scale, (EPOCHS, RECORDED))
            arrays[f"records_{layer}"] = values.astype(np.float32)
    confusion = np.full((10, 10), 2, dtype=np.int64) + np.diag(np.full(10, 80))
    arrays["confusion"] = confusion
    # class c scores final - 9 + 2c, so the mean over classes is the final accuracy
    arrays["per_class_accuracy"] = final - 9.0 + 2.0 * np.arange(10)
    return arrays


def _train(store: Store, rid: str, run: RunConfig, layers: bool, records: bool) -> None:
    curve = _curve(run)
    for epoch, (loss, accuracy) in enumerate(curve, start=1):
        row, layer_rows = _epoch_rows(rid, run, epoch, loss, accuracy)
        store.add_epoch([row], layer_rows if layers else [])
    diverged = (run.activation, run.range.lo, run.seed) == DIVERGED
    final_loss, final = curve[-1]
    summary = {
        "status": "diverged" if diverged else "finished",
        "diverged_epoch": 2 if diverged else 0,
        "final_train_loss": final_loss,
        "test_loss": final_loss,
        "test_accuracy": final,
        "seconds": 3.0,
        "device": "cpu",
        "group_id": "fakegroup000",
        "code_version": ENVIRONMENT["code_version"],
    }
    store.finish(rid, summary, _arrays(run, final, records))


def build_result_directory(
    directory: Path,
    *,
    train: bool = True,
    ranges: tuple[float, ...] = (-1.0, -5.0),
    seeds: tuple[int, ...] = SEEDS,
    lrs: tuple[float, ...] = (0.01,),
    layers: bool = True,
    records: bool = True,
) -> dict[str, str]:
    """Plan the experiment in ``directory`` and, with ``train``, store the runs' results.

    Args:
        directory: the result directory to create.
        train: store results; without it every run stays pending.
        ranges: lo of each range [lo, -lo]; each must be -1 or -5 (FINAL has their numbers).
        seeds: seeds 0–2 are trained, seed 3 gets the status SEED_3_STATUS gives it.
        lrs: learning rates; runs at any but 0.01 end 5 points lower.
        layers: store layer statistics.
        records: store pre-activation samples.

    Returns:
        run_id by "activation range_lo seed", e.g. "relu -5.0 2".
    """
    config = experiment(ranges, seeds, lrs)
    runs = config.runs()
    ids = {f"{r.activation} {r.range.lo} {r.seed}": run_id(r) for r in runs}
    configs = {run_id(r): {**r.identity(), "label": r.label, "n_params": N_PARAMS} for r in runs}
    with Store(directory) as store:
        store.plan(configs, to_toml(config), ENVIRONMENT)
        for run in runs if train else []:
            rid = run_id(run)
            if run.seed in TRAINED_SEEDS:
                _train(store, rid, run, layers, records)
                continue
            status = SEED_3_STATUS[(run.activation, run.range.lo)]
            if status in ("running", "failed"):
                store.claim([rid], "elsewhere:1")
                row, layer_rows = _epoch_rows(rid, run, 1, 2.5, 30.0)
                store.add_epoch([row], layer_rows if layers else [])
            if status == "failed":
                store.fail([rid], FAILURE)
    return ids


_WRITTEN: dict[str, list[Path]] = {}


def written_report(tmp_path_factory) -> list[Path]:
    """The report of the fake directory, written once per test session (drawing takes seconds).

    Args:
        tmp_path_factory: pytest's session-wide factory of temporary directories.

    Returns:
        write_report's paths: [report.html, report.md, *figures]. Tests must not modify them.
    """
    if "full" not in _WRITTEN:
        directory = tmp_path_factory.mktemp("report")
        build_result_directory(directory)
        with Store(directory) as store:
            _WRITTEN["full"] = write_report(store, directory)
    return _WRITTEN["full"]
