"""Experiment trackers fed as runs progress: MLflow and TensorBoard.

Both receive the same rows the result store gets (see ``actrange.sweep.Tracker``); the store
stays the record of truth, the trackers are views for their own user interfaces. The libraries
are optional extras, imported only when a tracker is made.
"""

import json
import math
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from actrange.columns import LAYER_STAT_COLUMNS
from actrange.config import ExperimentConfig, RunConfig, format_number
from actrange.errors import UsageError

EPOCH_METRICS = ("train_loss", "test_loss", "test_accuracy")
# the run summary's numbers, logged once at the end under these names
FINAL_METRICS = {
    "final_train_loss": "final_train_loss",
    "test_loss": "final_test_loss",
    "test_accuracy": "final_test_accuracy",
    "diverged_epoch": "diverged_epoch",
    "seconds": "train_seconds",
}
FINAL_TAGS = ("status", "device", "group_id", "code_version")
RUN_ID_TAG = "actrange.run_id"


def run_name(run: RunConfig) -> str:
    """The run's display name: its activation schedule, input range and seed."""
    return f"{run.label} {run.range.label} seed {run.seed}"


def run_params(run: RunConfig, rid: str) -> dict[str, str]:
    """The run's identity settings as MLflow parameters (strings)."""
    params = {"run_id": rid, "label": run.label}
    for key, value in run.identity().items():
        if value is None:
            params[key] = "none"
        else:
            params[key] = json.dumps(value) if isinstance(value, list) else str(value)
    return params


def loss_curve_figure(history: dict[str, dict[int, float]], title: str) -> Figure:
    """Train and test loss by epoch of one run.

    Args:
        history: metric name -> {epoch: value}.
        title: the axes title (the run's name).
    Returns:
        A Figure with one axis.
    """
    fig = Figure(figsize=(5.0, 3.4), layout="constrained")
    ax = fig.subplots()
    for key in ("train_loss", "test_loss"):
        points = sorted(history.get(key, {}).items())
        ax.plot([e for e, _ in points], [v for _, v in points], marker="o", label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


# ---------------------------------------------------------------------------------------------
# MLflow


def _import_mlflow() -> Any:
    try:
        import mlflow.entities
        import mlflow.exceptions
        import mlflow.tracking
    except ImportError:
        raise UsageError("MLflow tracking needs MLflow: pip install 'actrange[mlflow]'") from None
    return mlflow


class MlflowTracker:
    """One MLflow run per actrange run, in the experiment named after the config.

    ``config.mlflow == "default"`` keeps everything in the result directory: a SQLite tracking
    store ``mlflow.db`` and artefacts under ``mlruns/``. Any other value is a tracking URI (a
    server, or ``sqlite:///path``). Runs of one group are logged interleaved, so every call
    names its MLflow run explicitly. A run resumed after an interruption continues the MLflow
    run left unfinished. An epoch trained again after the interruption (the stop came after it
    was logged but before its checkpoint was written, or the run keeps no checkpoints) is
    logged again only if its numbers came out different, so a resumed run's history holds
    each epoch once.
    """

    def __init__(self, config: ExperimentConfig, out_dir: Path) -> None:
        mlflow = _import_mlflow()
        self._entities = mlflow.entities
        self._exception = mlflow.exceptions.MlflowException
        out_dir = Path(out_dir).resolve()
        artifacts = None
        if config.mlflow == "default":
            out_dir.mkdir(parents=True, exist_ok=True)
            self.uri = f"sqlite:///{out_dir / 'mlflow.db'}"
            artifacts = (out_dir / "mlruns").as_uri()
        else:
            self.uri = config.mlflow
        try:
            self.client = mlflow.tracking.MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment(config.name, artifacts)
        except self._exception as error:
            reason = " ".join(str(error.message).split())
            raise UsageError(f"MLflow at {self.uri!r} cannot be used: {reason}") from None
        self._runs: dict[str, str] = {}  # actrange run id -> MLflow run id
        # actrange run id -> what earlier processes logged for it: metric -> step -> value
        self._earlier: dict[str, dict[str, dict[int, float]]] = {}

    def _experiment(self, name: str, artifacts: str | None) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=artifacts)
            except self._exception:  # another process created it in between
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage == "deleted":
            raise UsageError(
                f"MLflow experiment {name!r} at {self.uri} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {found.experiment_id}) "
                "or give the experiment another name"
            )
        return found.experiment_id

    def _mlflow_run(self, run: RunConfig, rid: str) -> str:
        """The MLflow run of ``rid``: open in this process, left unfinished, or new."""
        if rid in self._runs:
            return self._runs[rid]
        unfinished = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{RUN_ID_TAG}` = '{rid}' and attributes.status != 'FINISHED'",
            max_results=1,
        )
        if unfinished:
            mlflow_id = unfinished[0].info.run_id
            self.client.update_run(mlflow_id, status="RUNNING")
            self._earlier[rid] = self._history(mlflow_id, EPOCH_METRICS)
        else:
            created = self.client.create_run(
                self.experiment_id, tags={RUN_ID_TAG: rid}, run_name=run_name(run)
            )
            mlflow_id = created.info.run_id
            params = self._entities.Param
            self.client.log_batch(
                mlflow_id, params=[params(k, v) for k, v in run_params(run, rid).items()]
            )
        self._runs[rid] = mlflow_id
        return mlflow_id

    def log_epoch(self, run: RunConfig, rid: str, row: dict, layer_rows: list[dict]) -> None:
        """Log one epoch's losses and accuracy at step = epoch."""
        mlflow_id = self._mlflow_run(run, rid)
        epoch, earlier = row["epoch"], self._earlier.get(rid, {})
        if all(earlier.get(k, {}).get(epoch) == float(row[k]) for k in EPOCH_METRICS):
            return  # trained again after a restart to the same numbers: logged already
        now = int(time.time() * 1000)
        metric = self._entities.Metric
        metrics = [metric(k, float(row[k]), now, epoch) for k in EPOCH_METRICS]
        metrics.append(metric("epoch_seconds", float(row["seconds"]), now, epoch))
        self.client.log_batch(mlflow_id, metrics=metrics)

    def end_run(self, run: RunConfig, rid: str, summary: dict, arrays: dict) -> None:
        """Log the final numbers, the arrays (.npz) and a loss-curve PNG; close the run."""
        mlflow_id = self._mlflow_run(run, rid)
        entities = self._entities
        now = int(time.time() * 1000)
        metrics = [
            entities.Metric(name, float(summary[key]), now, run.epochs)
            for key, name in FINAL_METRICS.items()
        ]
        tags = [entities.RunTag(f"actrange.{k}", str(summary[k])) for k in FINAL_TAGS]
        self.client.log_batch(mlflow_id, metrics=metrics, tags=tags)
        with tempfile.TemporaryDirectory() as folder:
            arrays_path = Path(folder) / "arrays.npz"
            np.savez_compressed(arrays_path, **arrays)
            self.client.log_artifact(mlflow_id, str(arrays_path))
            figure_path = Path(folder) / "loss_curves.png"
            losses = self._history(mlflow_id, ("train_loss", "test_loss"))
            loss_curve_figure(losses, run_name(run)).savefig(figure_path, dpi=90)
            self.client.log_artifact(mlflow_id, str(figure_path))
        self.client.set_terminated(mlflow_id, status="FINISHED")
        del self._runs[rid]
        self._earlier.pop(rid, None)

    def _history(self, mlflow_id: str, keys: tuple[str, ...]) -> dict[str, dict[int, float]]:
        """The metrics as MLflow holds them, earlier processes' epochs included: the last value
        logged at each step."""
        history = {}
        for key in keys:
            points = self.client.get_metric_history(mlflow_id, key)
            history[key] = {m.step: m.value for m in sorted(points, key=lambda m: m.timestamp)}
        return history

    def close(self) -> None:
        """Mark the runs still open (their group stopped or failed) as killed."""
        for mlflow_id in self._runs.values():
            self.client.set_terminated(mlflow_id, status="KILLED")
        self._runs.clear()


# ---------------------------------------------------------------------------------------------
# TensorBoard


def run_folder(run: RunConfig, rid: str) -> str:
    """The run's log folder name, e.g. ``relu_-1_1_seed42_0123abcd`` (no shell-unsafe signs)."""
    lo, hi = format_number(run.range.lo), format_number(run.range.hi)
    name = f"{run.label}_{lo}_{hi}_seed{run.seed}_{rid[:8]}"
    return re.sub(r"[^A-Za-z0-9_.+-]+", "-", name)


class TensorBoardTracker:
    """One TensorBoard log folder per actrange run under ``log_dir``.

    Scalars per epoch: ``loss/train``, ``loss/test``, ``accuracy/test`` and each hidden layer's
    statistics as ``layers/<layer>/<statistic>`` (statistics that do not apply to the
    activation, stored as NaN, are left out). At the end of a run: one histogram of the
    recorded pre-activations per layer and epoch, ``preactivations/<layer>`` at step = epoch.
    """

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UsageError(
                "TensorBoard logging needs TensorBoard: pip install 'actrange[tensorboard]'"
            ) from None
        self._writer_class = SummaryWriter
        self.log_dir = Path(log_dir)
        self._writers: dict[str, Any] = {}

    def _writer(self, run: RunConfig, rid: str) -> Any:
        if rid not in self._writers:
            folder = self.log_dir / run_folder(run, rid)
            self._writers[rid] = self._writer_class(str(folder), flush_secs=10)
        return self._writers[rid]

    def log_epoch(self, run: RunConfig, rid: str, row: dict, layer_rows: list[dict]) -> None:
        """Write the epoch's losses, accuracy and per-layer statistics at step = epoch."""
        writer = self._writer(run, rid)
        epoch = row["epoch"]
        writer.add_scalar("loss/train", row["train_loss"], epoch)
        writer.add_scalar("loss/test", row["test_loss"], epoch)
        writer.add_scalar("accuracy/test", row["test_accuracy"], epoch)
        for layer_row in layer_rows:
            for stat in LAYER_STAT_COLUMNS:
                value = layer_row[stat]
                # NaN (None once it went through SQLite) marks a statistic that does not apply
                if value is not None and not math.isnan(value):
                    writer.add_scalar(f"layers/{layer_row['layer']}/{stat}", value, epoch)

    def end_run(self, run: RunConfig, rid: str, summary: dict, arrays: dict) -> None:
        """Write the pre-activation histograms and close the run's log."""
        writer = self._writer(run, rid)
        for key, samples in arrays.items():
            if not key.startswith("records_"):
                continue
            layer = key.removeprefix("records_")
            for index, values in enumerate(samples):  # values: [n] of epoch index + 1
                finite = values[np.isfinite(values)]
                if finite.size:
                    writer.add_histogram(f"preactivations/{layer}", finite, index + 1)
        writer.close()
        del self._writers[rid]

    def close(self) -> None:
        """Close the logs of runs that did not end (their group stopped or failed)."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()
