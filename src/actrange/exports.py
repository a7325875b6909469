"""The result directory's tables, exported from the store, and read back for reports."""

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actrange.columns import EPOCH_COLUMNS, LAYER_COLUMNS, LAYER_STAT_COLUMNS, RUN_COLUMNS
from actrange.store import Store, write_atomically


def _run_row(run: dict[str, Any]) -> dict[str, Any]:
    """A store row flattened to the results.csv columns."""
    config = run["config"]
    switch = config["switch"] or [0, ""]
    return {
        "run_id": run["run_id"],
        "activation": config["label"],
        "activation_start": config["activation"],
        "switch_epoch": switch[0],
        "switch_to": switch[1],
        "range_lo": config["range"][0],
        "range_hi": config["range"][1],
        "seed": config["seed"],
        "lr": config["lr"],
        "momentum": config["momentum"],
        "batch_size": config["batch_size"],
        "epochs": config["epochs"],
        "train_subset": config["train_subset"],
        "n_params": config["n_params"],
        "final_train_loss": run["final_train_loss"],
        "test_loss": run["test_loss"],
        "test_accuracy": run["test_accuracy"],
        "status": run["status"],
        "diverged_epoch": run["diverged_epoch"],
        "seconds": run["seconds"],
        "device": run["device"] or "",
        "group_id": run["group_id"] or "",
    }


# SQLite stores a NaN (a diverged run's loss) as NULL: these columns get their NaN back on reading
RUN_NUMBERS = ("final_train_loss", "test_loss", "test_accuracy")
EPOCH_NUMBERS = ("train_loss", "test_loss", "test_accuracy", "seconds")


def _with_nan(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{**row, **{c: math.nan for c in columns if row.get(c, 0) is None}} for row in rows]


def _csv_bytes(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: "" if row[c] is None else row[c] for c in columns})
    return text.getvalue().encode()


@dataclass
class ResultSet:
    """The latest experiment of a result directory, as plain rows (see columns.py)."""

    directory: Path
    config_toml: str
    environment: dict[str, Any]
    runs: list[dict[str, Any]]
    epochs: list[dict[str, Any]]
    layers: list[dict[str, Any]]
    arrays: dict[str, dict[str, np.ndarray]]  # run_id -> name -> array (finished runs)

    def records(self, run_id: str) -> dict[str, np.ndarray]:
        """A run's pre-activation samples: layer -> [epochs, n]."""
        prefix = "records_"
        found = self.arrays.get(run_id, {})
        return {k[len(prefix) :]: v for k, v in found.items() if k.startswith(prefix)}


def load_results(store: Store) -> ResultSet:
    """Everything the latest experiment in ``store`` produced."""
    experiment = store.latest_experiment() or {"config": "", "environment": {}, "run_ids": []}
    run_ids = experiment["run_ids"]
    runs = _with_nan([_run_row(r) for r in store.runs(run_ids)], RUN_NUMBERS)
    done = [r["run_id"] for r in runs if r["status"] in ("finished", "diverged")]
    return ResultSet(
        directory=store.directory,
        config_toml=experiment["config"],
        environment=experiment["environment"],
        runs=runs,
        epochs=_with_nan(store.epochs(run_ids), EPOCH_NUMBERS),
        layers=_with_nan(store.layers(run_ids), LAYER_STAT_COLUMNS),
        arrays={rid: store.load_arrays(rid) for rid in done},
    )


def export_tables(store: Store, directory: Path) -> ResultSet:
    """Write results.csv, epochs.csv, layers.csv and environment.json; return what was read."""
    results = load_results(store)
    write_atomically(directory / "results.csv", _csv_bytes(results.runs, RUN_COLUMNS))
    write_atomically(directory / "epochs.csv", _csv_bytes(results.epochs, EPOCH_COLUMNS))
    write_atomically(directory / "layers.csv", _csv_bytes(results.layers, LAYER_COLUMNS))
    environment = json.dumps(results.environment, indent=2).encode()
    write_atomically(directory / "environment.json", environment)
    return results
