"""The Ray backend on a real local Ray instance: same numbers and store as the local backend."""

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pytest

from actrange.config import ExperimentConfig, PixelRange
from actrange.errors import UsageError
from actrange.identity import group_id
from actrange.progress import Progress
from actrange.ray_backend import (
    RaySweep,
    failure_reason,
    import_ray,
    missing_resources,
    train_group_task,
)
from actrange.store import Store
from actrange.sweep import StopRequested, Sweep
from tests.helpers import synthetic_dataset, write_idx


@pytest.fixture
def tiny_config(tmp_path) -> ExperimentConfig:
    """Two activations x two seeds on 48 synthetic images in the IDX format, one run a group."""
    data_dir = write_idx(tmp_path / "data", synthetic_dataset(n_train=48, n_test=24, seed=3))
    return ExperimentConfig(
        name="raytest",
        activations=("relu", "tanh"),
        ranges=(PixelRange(-1.0, 1.0),),
        seeds=(1, 2),
        batch_size=16,
        epochs=2,
        record_values=20,
        device="cpu",
        group_size=1,
        checkpoint=False,
        backend="ray",
        ray_cpus_per_task=1.0,
        data=str(data_dir),
        download=False,
        verify_data=False,
    )


@pytest.fixture(scope="module")
def ray_instance():
    ray = import_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


class RecordingTracker:
    """A tracker that keeps what it was given."""

    def __init__(self) -> None:
        self.epochs: list[tuple[str, dict, int]] = []
        self.ended: dict[str, tuple[str, list[str]]] = {}

    def log_epoch(self, run, rid, row, layer_rows) -> None:
        assert {r["run_id"] for r in layer_rows} == {rid}
        self.epochs.append((rid, row, len(layer_rows)))

    def end_run(self, run, rid, summary, arrays) -> None:
        self.ended[rid] = (summary["status"], sorted(arrays))


def quiet() -> Progress:
    return Progress(quiet=True)


def stored(out_dir) -> tuple[dict, dict, dict]:
    """Runs by id, epoch rows by (run, epoch), arrays by run, as the store holds them."""
    with Store(out_dir, create=False) as store:
        runs = {r["run_id"]: r for r in store.runs()}
        epochs = {(e["run_id"], e["epoch"]): e for e in store.epochs(list(runs))}
        arrays = {rid: store.load_arrays(rid) for rid in runs}
    return runs, epochs, arrays


def assert_same_results(out_a, out_b) -> None:
    runs_a, epochs_a, arrays_a = stored(out_a)
    runs_b, epochs_b, arrays_b = stored(out_b)
    assert sorted(runs_a) == sorted(runs_b)
    assert sorted(epochs_a) == sorted(epochs_b)
    for rid, run in runs_a.items():
        other = runs_b[rid]
        assert (run["status"], other["status"]) == ("finished", "finished")
        assert other["test_accuracy"] == pytest.approx(run["test_accuracy"], abs=1e-6)
        assert other["final_train_loss"] == pytest.approx(run["final_train_loss"], rel=1e-5)
        assert other["device"] == run["device"] == "cpu"
        assert sorted(arrays_b[rid]) == sorted(arrays_a[rid])
        np.testing.assert_array_equal(arrays_b[rid]["confusion"], arrays_a[rid]["confusion"])
        np.testing.assert_allclose(arrays_b[rid]["records_conv1"], arrays_a[rid]["records_conv1"])
    for key, row in epochs_a.items():
        assert epochs_b[key]["train_loss"] == pytest.approx(row["train_loss"], rel=1e-5)
        assert epochs_b[key]["test_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-6)


# -- without a Ray instance ------------------------------------------------------------------------


def test_missing_ray_names_the_extra(monkeypatch, tiny_config, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    with pytest.raises(UsageError, match=r"pip install 'actrange\[ray\]'"):
        import_ray()
    with pytest.raises(UsageError, match="the ray backend needs Ray"):
        RaySweep(tiny_config, tmp_path / "out", progress=quiet()).execute()


def test_missing_resources_names_the_key_and_what_the_cluster_has():
    cluster = {"CPU": 2.0, "memory": 1e9}
    assert missing_resources(cluster, 1.0, 0.0) == ""
    assert missing_resources(cluster, 2.0, 0.0) == ""
    assert missing_resources(cluster, 3.0, 0.0) == (
        "ray_cpus_per_task = 3 but the Ray cluster has 2 CPUs in all"
    )
    assert missing_resources(cluster, 1.0, 0.5) == (
        "ray_gpus_per_task = 0.5 but the Ray cluster has 0 GPUs in all"
    )


def test_failure_reason_prefers_the_tasks_own_exception():
    wrapped = RuntimeError("Ray wrapper\n  with a traceback")
    wrapped.cause = ValueError("seed 2 is broken")
    assert failure_reason(wrapped) == "ValueError: seed 2 is broken"
    assert failure_reason(OSError("worker\ndied")) == "OSError: worker died"


def test_driver_without_the_configured_device_plans_on_the_cpu(tiny_config, tmp_path):
    # like a CPU-only head node of a GPU cluster (no machine has a GPU numbered 4095)
    config = replace(tiny_config, device="cuda:4095")
    sweep = RaySweep(config, tmp_path / "out", progress=quiet())
    assert str(sweep.device) == "cpu"
    assert sweep.config.device == "cuda:4095"
    assert [len(g.runs) for g in sweep.groups] == [1, 1, 1, 1]


# -- on a real local Ray instance ------------------------------------------------------------------


@pytest.mark.slow
def test_actrange_run_backend_ray_starts_and_stops_its_own_instance(tiny_config, tmp_path):
    # a separate process: this one may already hold the other tests' instance
    args = [
        "run", "--backend", "ray", "--data", tiny_config.data, "--no-verify-data",
        "--no-download", "--activations", "relu", "--ranges=-1:1", "--seeds", "4",
        "--epochs", "1", "--batch-size", "16", "--record-values", "10", "--device", "cpu",
        "--out", str(tmp_path / "out"), "--quiet", "--no-report",
    ]  # fmt: skip
    script = (
        "import sys, ray\n"
        "from actrange.cli import main\n"
        f"status = main({args!r})\n"
        "print('status', status, 'ray left running', ray.is_initialized())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=240, check=False
    )
    assert "status 0 ray left running False" in done.stdout, done.stderr[-2000:]
    runs, epochs, arrays = stored(tmp_path / "out")
    assert [r["status"] for r in runs.values()] == ["finished"]
    assert len(epochs) == 1
    assert arrays[next(iter(runs))]["records_conv1"].shape == (1, 10)


@pytest.mark.slow
def test_ray_and_local_finish_each_others_sweeps_with_the_same_numbers(
    ray_instance, tiny_config, tmp_path
):
    full = tiny_config
    outcome = Sweep(full, tmp_path / "local", progress=quiet()).execute()
    assert (outcome.trained, outcome.failed) == (4, 0)

    # half done locally (seed 1), finished on Ray: only the seed-2 runs train there
    Sweep(replace(full, seeds=(1,)), tmp_path / "local_then_ray", progress=quiet()).execute()
    before, _, _ = stored(tmp_path / "local_then_ray")
    tracker = RecordingTracker()
    ray_sweep = RaySweep(full, tmp_path / "local_then_ray", progress=quiet(), trackers=[tracker])
    outcome = ray_sweep.execute()
    assert (outcome.planned, outcome.skipped, outcome.trained, outcome.failed) == (4, 2, 2, 0)
    after, epochs, arrays = stored(tmp_path / "local_then_ray")
    for rid, run in before.items():
        assert after[rid]["finished_at"] == run["finished_at"]  # not trained again

    # the trackers saw what the store got, for the runs trained on Ray only
    trained = sorted(set(after) - set(before))
    assert sorted({rid for rid, _, _ in tracker.epochs}) == trained
    for rid, row, n_layers in tracker.epochs:
        assert row == epochs[(rid, row["epoch"])]
        assert n_layers == 7
    assert sorted(tracker.ended) == trained
    for rid, (status, keys) in tracker.ended.items():
        assert (status, keys) == ("finished", sorted(arrays[rid]))
    assert_same_results(tmp_path / "local", tmp_path / "local_then_ray")

    # half done on Ray (seed 2), finished locally
    RaySweep(replace(full, seeds=(2,)), tmp_path / "ray_then_local", progress=quiet()).execute()
    outcome = Sweep(full, tmp_path / "ray_then_local", progress=quiet()).execute()
    assert (outcome.skipped, outcome.trained) == (2, 2)
    assert_same_results(tmp_path / "local", tmp_path / "ray_then_local")
    assert (tmp_path / "ray_then_local" / "results.csv").exists()


@pytest.mark.slow
def test_failed_group_is_kept_failed_and_a_dead_worker_is_retried(
    ray_instance, tiny_config, tmp_path
):
    marker = tmp_path / "worker_died_once"

    def flaky_task(runs, dataset, device_name, threads):
        if runs[0].seed == 2:
            raise ValueError("seed 2 is broken")
        if runs[0].seed == 3 and not marker.exists():
            marker.touch()
            os._exit(1)  # the worker process dies mid-task
        return train_group_task(runs, dataset, device_name, threads)

    class FlakySweep(RaySweep):
        task_function = staticmethod(flaky_task)

    config = replace(tiny_config, activations=("relu",), seeds=(1, 2, 3))
    out = tmp_path / "out"
    outcome = FlakySweep(config, out, progress=quiet()).execute()
    assert (outcome.trained, outcome.failed) == (2, 1)
    assert marker.exists()
    runs, _, _ = stored(out)
    by_seed = {r["config"]["seed"]: r for r in runs.values()}
    assert {s: r["status"] for s, r in by_seed.items()} == {
        1: "finished",
        2: "failed",
        3: "finished",
    }
    assert by_seed[2]["arrays"] == {"error": "ValueError: seed 2 is broken"}
    broken = [rid for rid, r in runs.items() if r["config"]["seed"] == 2]
    assert outcome.failures == [f"group {group_id(broken)}: ValueError: seed 2 is broken"]

    # the next run retries only the failed run
    outcome = RaySweep(config, out, progress=quiet()).execute()
    assert (outcome.skipped, outcome.trained, outcome.failed) == (2, 1, 0)
    runs, _, _ = stored(out)
    assert {r["status"] for r in runs.values()} == {"finished"}


@pytest.mark.slow
def test_usage_error_in_a_task_stops_the_sweep_and_releases_the_runs(
    ray_instance, tiny_config, tmp_path
):
    # the workers lack that device too: resolving it fails inside the task
    config = replace(tiny_config, device="cuda:4095")
    with pytest.raises(UsageError, match="device 'cuda:4095'"):
        RaySweep(config, tmp_path / "out", progress=quiet()).execute()
    runs, epochs, _ = stored(tmp_path / "out")
    assert {r["status"] for r in runs.values()} == {"pending"}
    assert epochs == {}


@pytest.mark.slow
def test_results_from_a_worker_with_other_code_are_refused(ray_instance, tiny_config, tmp_path):
    def other_code_task(runs, dataset, device_name, threads):
        return replace(train_group_task(runs, dataset, device_name, threads), code="0ther0c0de00")

    class MixedCluster(RaySweep):
        task_function = staticmethod(other_code_task)

    config = replace(tiny_config, activations=("relu",), seeds=(1,))
    with pytest.raises(UsageError, match="runs actrange numeric code 0ther0c0de00, this driver"):
        MixedCluster(config, tmp_path / "out", progress=quiet()).execute()
    runs, epochs, _ = stored(tmp_path / "out")
    assert [r["status"] for r in runs.values()] == ["pending"]
    assert epochs == {}


@pytest.mark.slow
def test_stop_signal_cancels_the_tasks_and_releases_their_runs(ray_instance, tiny_config, tmp_path):
    def slow_task(runs, dataset, device_name, threads):
        time.sleep(60)
        return train_group_task(runs, dataset, device_name, threads)

    class SlowSweep(RaySweep):
        task_function = staticmethod(slow_task)

    class StopWhenSubmitted(Progress):
        def group_started(self, index, total, group, resumed):
            if index == total:
                os.kill(os.getpid(), signal.SIGINT)

    started = time.monotonic()
    with pytest.raises(StopRequested):
        SlowSweep(tiny_config, tmp_path / "out", progress=StopWhenSubmitted(quiet=True)).execute()
    assert time.monotonic() - started < 30
    runs, _, _ = stored(tmp_path / "out")
    assert {r["status"] for r in runs.values()} == {"pending"}
    assert ray_instance.is_initialized()  # a sweep leaves an instance it did not start
