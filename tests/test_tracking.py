"""MLflow and TensorBoard trackers: what a real sweep logged, read back with the libraries."""

import sys
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from actrange.config import ExperimentConfig, PixelRange, RunConfig, Switch
from actrange.errors import UsageError
from actrange.progress import Progress
from actrange.store import Store
from actrange.sweep import Sweep
from actrange.tracking import (
    MlflowTracker,
    TensorBoardTracker,
    run_folder,
    run_name,
    run_params,
)
from tests.helpers import synthetic_dataset, write_idx

EVERYTHING = {"scalars": 0, "histograms": 0}  # EventAccumulator: keep every event


@pytest.fixture(scope="module")
def logged(tmp_path_factory):
    """One real sweep (relu and tanh trained as one group of two) with both trackers on."""
    root = tmp_path_factory.mktemp("tracked")
    data_dir = write_idx(root / "data", synthetic_dataset(n_train=48, n_test=24, seed=5))
    config = ExperimentConfig(
        name="tracktest",
        activations=("relu", "tanh"),
        ranges=(PixelRange(-1.0, 1.0),),
        seeds=(7,),
        batch_size=16,
        epochs=2,
        record_values=20,
        device="cpu",
        group_size=2,
        checkpoint=False,
        mlflow="default",
        tensorboard=str(root / "tb"),
        data=str(data_dir),
        download=False,
        verify_data=False,
    )
    out = root / "out"
    trackers = [MlflowTracker(config, out), TensorBoardTracker(root / "tb")]
    sweep = Sweep(config, out, progress=Progress(quiet=True), trackers=trackers)
    outcome = sweep.execute()
    for tracker in trackers:
        tracker.close()
    assert (outcome.trained, len(sweep.groups)) == (2, 1)
    with Store(out, create=False) as store:
        runs = {r["run_id"]: r for r in store.runs()}
        epochs = store.epochs(list(runs))
        layers = store.layers(list(runs))
        arrays = {rid: store.load_arrays(rid) for rid in runs}
    return {
        "config": config,
        "out": out,
        "tb": root / "tb",
        "sweep": sweep,
        "runs": runs,
        "epochs": epochs,
        "layers": layers,
        "arrays": arrays,
    }


def mlflow_client(out: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")


def mlflow_runs(logged) -> dict:
    """MLflow runs of the test experiment by actrange run id."""
    client = mlflow_client(logged["out"])
    experiment = client.get_experiment_by_name(logged["config"].name)
    found = client.search_runs([experiment.experiment_id])
    return {r.data.tags["actrange.run_id"]: r for r in found}


def fabricated_row(rid: str, epoch: int, loss: float) -> dict:
    return {
        "run_id": rid,
        "epoch": epoch,
        "activation": "relu",
        "train_loss": loss,
        "test_loss": loss + 0.5,
        "test_accuracy": 50.0 + epoch,
        "seconds": 0.25,
    }


# -- names and parameters ----------------------------------------------------------------------


def test_names_params_and_folders_of_a_switching_run():
    run = RunConfig(
        activation="tanh",
        range=PixelRange(-5.0, 5.0),
        seed=3,
        lr=0.01,
        momentum=0.5,
        batch_size=128,
        epochs=20,
        train_subset=60000,
        switch=Switch(2, "relu"),
    )
    assert run_name(run) == "tanh>relu@2 [-5, 5] seed 3"
    assert run_folder(run, "0123456789abcdef") == "tanh-relu-2_-5_5_seed3_01234567"
    params = run_params(run, "0123456789abcdef")
    assert params == {
        "run_id": "0123456789abcdef",
        "label": "tanh>relu@2",
        "activation": "tanh",
        "switch": '[2, "relu"]',
        "range": "[-5.0, 5.0]",
        "seed": "3",
        "lr": "0.01",
        "momentum": "0.5",
        "batch_size": "128",
        "epochs": "20",
        "train_subset": "60000",
        "record_values": "5000",
        "precision": "fp32",
    }


# -- MLflow --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_has_one_finished_run_per_actrange_run_with_its_params(logged):
    found = mlflow_runs(logged)
    assert sorted(found) == sorted(logged["runs"])
    by_id = {rid: run for rid, run in zip(logged["sweep"].ids, logged["sweep"].runs, strict=True)}
    for rid, mlflow_run in found.items():
        run = by_id[rid]
        assert mlflow_run.info.status == "FINISHED"
        assert mlflow_run.info.run_name == f"{run.activation} [-1, 1] seed 7"
        assert mlflow_run.data.params == run_params(run, rid)
        assert mlflow_run.data.tags["actrange.status"] == "finished"
        assert mlflow_run.data.tags["actrange.device"] == "cpu"
        assert mlflow_run.data.tags["actrange.group_id"] == logged["runs"][rid]["group_id"]


@pytest.mark.slow
def test_mlflow_metrics_are_the_stored_numbers(logged):
    client = mlflow_client(logged["out"])
    found = mlflow_runs(logged)
    for rid, stored in logged["runs"].items():
        mlflow_id = found[rid].info.run_id
        rows = [e for e in logged["epochs"] if e["run_id"] == rid]
        for key in ("train_loss", "test_loss", "test_accuracy"):
            history = sorted(client.get_metric_history(mlflow_id, key), key=lambda m: m.step)
            assert [m.step for m in history] == [1, 2]
            assert [m.value for m in history] == pytest.approx([r[key] for r in rows], rel=1e-12)
        final = found[rid].data.metrics
        assert final["final_test_accuracy"] == pytest.approx(stored["test_accuracy"], rel=1e-12)
        assert final["final_train_loss"] == pytest.approx(stored["final_train_loss"], rel=1e-12)
        assert final["final_test_loss"] == pytest.approx(stored["test_loss"], rel=1e-12)
        assert final["diverged_epoch"] == 0


@pytest.mark.slow
def test_mlflow_artifacts_sit_in_the_result_directory_and_hold_the_arrays(logged):
    client = mlflow_client(logged["out"])
    mlruns = (logged["out"] / "mlruns").resolve()
    for rid, mlflow_run in mlflow_runs(logged).items():
        listed = {a.path for a in client.list_artifacts(mlflow_run.info.run_id)}
        assert listed == {"arrays.npz", "loss_curves.png"}
        folder = Path(unquote(urlparse(mlflow_run.info.artifact_uri).path))
        assert folder.is_relative_to(mlruns)
        with np.load(folder / "arrays.npz") as logged_arrays:
            stored = logged["arrays"][rid]
            assert sorted(logged_arrays.files) == sorted(stored)
            for key in stored:
                np.testing.assert_array_equal(logged_arrays[key], stored[key])
        assert (folder / "loss_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_mlflow_run_left_unfinished_is_continued_by_the_next_process(logged, tmp_path):
    config = replace(logged["config"], name="resumed")
    run = logged["sweep"].runs[0]
    first = MlflowTracker(config, tmp_path)
    first.log_epoch(run, "feedc0de00000001", fabricated_row("feedc0de00000001", 1, 2.0), [])
    first.close()  # stopped after epoch 1
    client = mlflow_client(tmp_path)
    experiment = client.get_experiment_by_name("resumed").experiment_id
    assert [r.info.status for r in client.search_runs([experiment])] == ["KILLED"]

    second = MlflowTracker(config, tmp_path)
    # epoch 1 trained again (the stop came before its checkpoint) to the same numbers
    second.log_epoch(run, "feedc0de00000001", fabricated_row("feedc0de00000001", 1, 2.0), [])
    second.log_epoch(run, "feedc0de00000001", fabricated_row("feedc0de00000001", 2, 1.5), [])
    summary = {
        "status": "finished",
        "diverged_epoch": 0,
        "final_train_loss": 1.5,
        "test_loss": 2.0,
        "test_accuracy": 52.0,
        "seconds": 0.5,
        "device": "cpu",
        "group_id": "abc",
        "code_version": "test",
    }
    second.end_run(run, "feedc0de00000001", summary, {"confusion": np.eye(10)})
    second.close()
    (only,) = client.search_runs([experiment])
    assert only.info.status == "FINISHED"
    history = client.get_metric_history(only.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (2, 1.5)]


@pytest.mark.slow
def test_an_epoch_trained_again_to_other_numbers_is_logged_beside_the_first(logged, tmp_path):
    config = replace(logged["config"], name="retrained")
    run, rid = logged["sweep"].runs[0], "feedc0de00000002"
    first = MlflowTracker(config, tmp_path)
    first.log_epoch(run, rid, fabricated_row(rid, 1, 2.0), [])
    first.close()
    second = MlflowTracker(config, tmp_path)
    second.log_epoch(run, rid, fabricated_row(rid, 1, 2.125), [])  # on another machine, say
    second.close()
    client = mlflow_client(tmp_path)
    (only,) = client.search_runs([client.get_experiment_by_name("retrained").experiment_id])
    history = client.get_metric_history(only.info.run_id, "train_loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 2.0), (1, 2.125)]


@pytest.mark.slow
def test_mlflow_refuses_a_deleted_experiment_and_a_bad_uri(logged):
    client = mlflow_client(logged["out"])
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(UsageError, match="experiment 'gone' .* is deleted; restore it"):
        MlflowTracker(replace(logged["config"], name="gone"), logged["out"])
    with pytest.raises(UsageError, match="MLflow at 'nosuch://x' cannot be used"):
        MlflowTracker(replace(logged["config"], mlflow="nosuch://x"), logged["out"])


def test_missing_mlflow_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # makes `import mlflow...` fail
    with pytest.raises(UsageError, match=r"pip install 'actrange\[mlflow\]'"):
        MlflowTracker(ExperimentConfig(mlflow="default"), tmp_path)


# -- TensorBoard ---------------------------------------------------------------------------------


def accumulator(logged, rid: str) -> EventAccumulator:
    run = logged["sweep"].runs[logged["sweep"].ids.index(rid)]
    events = EventAccumulator(str(logged["tb"] / run_folder(run, rid)), size_guidance=EVERYTHING)
    return events.Reload()


@pytest.mark.slow
def test_tensorboard_has_one_folder_per_run(logged):
    sweep = logged["sweep"]
    expected = {run_folder(r, rid) for r, rid in zip(sweep.runs, sweep.ids, strict=True)}
    assert {p.name for p in logged["tb"].iterdir()} == expected


@pytest.mark.slow
def test_tensorboard_scalars_are_the_stored_numbers(logged):
    for rid in logged["runs"]:
        events = accumulator(logged, rid)
        rows = [e for e in logged["epochs"] if e["run_id"] == rid]
        for tag, key in (
            ("loss/train", "train_loss"),
            ("loss/test", "test_loss"),
            ("accuracy/test", "test_accuracy"),
        ):
            scalars = events.Scalars(tag)
            assert [s.step for s in scalars] == [1, 2]
            assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows], rel=1e-6)


@pytest.mark.slow
def test_tensorboard_layer_statistics_match_the_store_and_skip_what_does_not_apply(logged):
    for rid, stored in logged["runs"].items():
        events = accumulator(logged, rid)
        tags = set(events.Tags()["scalars"])
        for row in (r for r in logged["layers"] if r["run_id"] == rid):
            for stat in ("mean", "std", "p50", "saturated_frac", "dead_frac", "grad_norm"):
                tag = f"layers/{row['layer']}/{stat}"
                if row[stat] is None:  # SQLite holds a NaN statistic as NULL
                    assert tag not in tags
                    continue
                (value,) = [s.value for s in events.Scalars(tag) if s.step == row["epoch"]]
                assert value == pytest.approx(row[stat], rel=1e-6, abs=1e-12)
        # tanh saturates and cannot be dead; relu is the other way round
        tanh = stored["config"]["activation"] == "tanh"
        assert ("layers/conv1/saturated_frac" in tags) == tanh
        assert ("layers/conv1/dead_frac" in tags) != tanh


@pytest.mark.slow
def test_tensorboard_histograms_hold_each_epochs_recorded_values(logged):
    for rid in logged["runs"]:
        events = accumulator(logged, rid)
        assert {t for t in events.Tags()["histograms"]} == {
            f"preactivations/{k.removeprefix('records_')}"
            for k in logged["arrays"][rid]
            if k.startswith("records_")
        }
        records = logged["arrays"][rid]["records_conv1"]  # [epochs, 20]
        histograms = events.Histograms("preactivations/conv1")
        assert [h.step for h in histograms] == [1, 2]
        for h, values in zip(histograms, records, strict=True):
            assert h.histogram_value.num == values.size == 20
            assert h.histogram_value.min == pytest.approx(values.min(), rel=1e-6)
            assert h.histogram_value.max == pytest.approx(values.max(), rel=1e-6)
            assert h.histogram_value.sum == pytest.approx(values.sum(), rel=1e-5, abs=1e-5)


def test_missing_tensorboard_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(UsageError, match=r"pip install 'actrange\[tensorboard\]'"):
        TensorBoardTracker(tmp_path)
