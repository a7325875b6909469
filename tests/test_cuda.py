"""The engine, the benchmark and a sweep on a CUDA device.

They run only where CUDA is available. The development machine has none, so these tests have
not run on a GPU yet; `scripts/gpu-check` runs them first thing on a lent one. Setting
ACTRANGE_TEST_DEVICE=cpu runs them on the CPU instead, which checks their own logic only.
"""

import csv
import json
import os
from dataclasses import replace

import pytest
import torch

from actrange import bench, bench_run, engine
from actrange.bench_run import BenchSettings, run_benchmark
from actrange.cli import main
from actrange.devicedata import DeviceData
from actrange.grouped import activation_plan
from tests.helpers import synthetic_dataset, write_idx
from tests.test_engine import assert_group_matches_alone, collect, make_run
from tests.test_sweep import tiny_args

DEVICE = torch.device(os.environ.get("ACTRANGE_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(
    DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA device"
)


def tiny_data(device: torch.device) -> DeviceData:
    return DeviceData(synthetic_dataset(n_train=80, n_test=40), device)


@pytest.fixture(scope="module")
def data():
    return tiny_data(DEVICE)


@pytest.fixture(autouse=True)
def tf32_off():
    """fp32 means fp32 here: the engine turns TF32 off for fp32 runs, and so must the references."""
    flags = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = flags


def test_group_on_cuda_matches_each_model_trained_alone(data):
    runs = [
        make_run("relu", -1, 1, seed=1),
        make_run("tanh", -5, 5, seed=2, lr=0.02),
        make_run("gelu", 0, 1, seed=3),
    ]
    assert_group_matches_alone(runs, data, rel=5e-4)  # cuDNN's algorithms differ per shape


def test_cuda_trains_what_the_cpu_trains(data):
    runs = [make_run("relu", seed=5), make_run("tanh", -5, 5, seed=6)]
    on_cpu = collect(runs, tiny_data(torch.device("cpu")))
    on_cuda = collect(runs, data)
    for cpu, cuda in zip(on_cpu, on_cuda, strict=True):
        assert cuda.train_loss == pytest.approx(cpu.train_loss, rel=5e-4, abs=1e-5)
        assert cuda.test_loss == pytest.approx(cpu.test_loss, rel=5e-4, abs=1e-5)


@pytest.mark.parametrize("precision", ["tf32", "bf16"] if DEVICE.type == "cuda" else ["bf16"])
def test_reduced_precisions_stay_close_to_fp32(data, precision):
    fp32 = collect([make_run("tanh", seed=4)], data)
    reduced = collect([replace(make_run("tanh", seed=4), precision=precision)], data)
    for a, b in zip(fp32, reduced, strict=True):
        assert b.train_loss[0] == pytest.approx(a.train_loss[0], rel=0.02)


def test_evaluation_on_cuda_counts_what_the_cpu_counts(data):
    runs = [make_run("relu", seed=1), make_run("tanh", -5, 5, seed=2)]
    cpu_data = tiny_data(torch.device("cpu"))
    plan = activation_plan([r.activation for r in runs])
    results = []
    for device_data in (cpu_data, data):
        state = engine.initial_state(runs, device_data.device)
        index = device_data.range_indices([r.range for r in runs])
        results.append(engine.evaluate(state, device_data, index, plan, confusion=True))
    (cpu_loss, _, cpu_confusion), (cuda_loss, _, cuda_confusion) = results
    torch.testing.assert_close(cuda_loss.cpu(), cpu_loss.cpu(), rtol=1e-4, atol=1e-5)
    assert torch.equal(cuda_confusion.cpu(), cpu_confusion.cpu())


def test_the_benchmark_on_cuda_has_tf32_and_bf16_lines_and_leaves_the_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_run, "load_fashion_mnist", lambda: synthetic_dataset(768, 64))
    monkeypatch.setattr(bench, "MATMUL_SIDE", {"cpu": 128, "cuda": 1024})
    settings = BenchSettings(groups=[1, 4], batches=2, notebook_batches=2, check_images=128)
    assert run_benchmark(settings, str(DEVICE), tmp_path / "speed.json") == 0
    document = json.loads((tmp_path / "speed.json").read_text())
    names = [line["name"] for line in document["lines"]]
    assert names[:4] == ["(a) notebook pipeline", "(b) in-memory StudyCNN", "(c) engine G=1",
                         "(c) engine G=4"]  # fmt: skip
    reduced = bench_run.reduced_precisions(DEVICE)  # TF32 and bf16 on CUDA
    assert [line["precision"] for line in document["lines"][4:]] == reduced
    assert document["device"].startswith(DEVICE.type)
    assert all(line["peak_memory_bytes"] > 0 for line in document["lines"])
    assert set(document["precision_check"]) >= {"fp32", *reduced}
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32


def test_a_sweep_on_cuda_runs_reports_and_finds_its_runs_stored_again(tmp_path):
    data_dir = write_idx(tmp_path / "idx", synthetic_dataset(96, 48))
    out = tmp_path / "sweep"
    args = [a if a != "cpu" else str(DEVICE) for a in tiny_args(data_dir, out)]
    assert main(args) == 0
    with open(out / "results.csv", newline="") as handle:
        runs = list(csv.DictReader(handle))
    assert len(runs) == 8 and {r["status"] for r in runs} == {"finished"}
    assert {r["device"] for r in runs} == {DEVICE.type}
    stored = (out / "results.csv").read_text()
    assert main(args) == 0  # nothing to train: every run is found by its identity
    assert (out / "results.csv").read_text() == stored
