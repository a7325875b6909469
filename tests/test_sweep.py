"""Sweeps end to end on tiny data: caching, resume, checkpoints, kills, concurrent writers."""

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from actrange.cli import main
from actrange.store import Store
from tests.helpers import synthetic_dataset, write_idx

TIMING_COLUMNS = {"seconds"}


def tiny_args(data_dir: Path, out: Path, *extra: str, quiet: bool = True) -> list[str]:
    return [
        "run",
        "--data", str(data_dir),
        "--no-verify-data",
        "--no-download",
        "--out", str(out),
        "--epochs", "3",
        "--batch-size", "16",
        "--seeds", "0,1",
        "--group-size", "2",
        "--record-values", "20",
        "--device", "cpu",
        "--no-report",
        *(["--quiet"] if quiet else []),
        *extra,
    ]  # fmt: skip


def table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def results_of(out: Path) -> tuple[list, list, list]:
    return table(out / "results.csv"), table(out / "epochs.csv"), table(out / "layers.csv")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return write_idx(tmp_path_factory.mktemp("idx"), synthetic_dataset(96, 48))


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference")
    assert main(tiny_args(data_dir, out)) == 0
    return out


def test_sweep_writes_the_result_directory(reference):
    runs, epochs, layers = results_of(reference)
    assert len(runs) == 8  # 2 activations x 2 ranges x 2 seeds
    assert {r["status"] for r in runs} == {"finished"}
    assert len(epochs) == 8 * 3
    assert len(layers) == 8 * 3 * 7
    assert (reference / "config.toml").exists() and (reference / "environment.json").exists()
    assert len(list((reference / "arrays").glob("*.npz"))) == 8
    assert not list((reference / "checkpoints").glob("*.pt"))


def test_running_again_trains_nothing(reference, data_dir, capsys):
    before = results_of(reference)
    assert main(tiny_args(data_dir, reference, quiet=False)) == 0
    assert "0 trained" in capsys.readouterr().err
    assert results_of(reference) == before


def test_changing_one_setting_trains_only_what_changed(reference, data_dir, tmp_path, capsys):
    out = tmp_path / "grown"
    assert main(tiny_args(data_dir, out)) == 0
    assert main(tiny_args(data_dir, out, "--seeds", "0,1,2", quiet=False)) == 0
    assert "8 already done, 4 trained" in capsys.readouterr().err
    runs = {r["run_id"]: r for r in results_of(out)[0]}
    for row in results_of(reference)[0]:
        assert runs[row["run_id"]] == row


def test_results_are_bitwise_identical_across_processes(reference, data_dir, tmp_path):
    out = tmp_path / "again"
    command = [sys.executable, "-m", "actrange.cli", *tiny_args(data_dir, out)]
    subprocess.run(command, check=True, timeout=120, env=_env())
    assert results_of(out) == results_of(reference)


def _env() -> dict[str, str]:
    root = Path(__file__).resolve().parents[1]
    return {**os.environ, "PYTHONPATH": f"{root / 'src'}{os.pathsep}{root}"}


def _kill_at(command: list[str], delay: float) -> None:
    process = subprocess.Popen(command, env=_env(), stderr=subprocess.DEVNULL)
    try:
        process.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("checkpoint", [True, False])
def test_sigkill_at_random_points_then_resume_gives_the_same_results(
    reference, data_dir, tmp_path, checkpoint
):
    out = tmp_path / "killed"
    extra = () if checkpoint else ("--no-checkpoint",)
    command = [sys.executable, "-m", "actrange.cli", *tiny_args(data_dir, out, *extra)]
    rng = random.Random(1234 + checkpoint)
    for _ in range(3):
        _kill_at(command, rng.uniform(2.0, 6.0))
    finished = subprocess.run(command, timeout=180, env=_env())
    assert finished.returncode == 0
    assert results_of(out) == results_of(reference)
    with Store(out, create=False) as store:
        assert {r["status"] for r in store.runs()} == {"finished"}


@pytest.mark.slow
def test_two_processes_on_one_store_neither_corrupt_nor_duplicate(reference, data_dir, tmp_path):
    out = tmp_path / "shared"
    command = [sys.executable, "-m", "actrange.cli", *tiny_args(data_dir, out)]
    first = subprocess.Popen(command, env=_env())
    time.sleep(0.5)
    second = subprocess.Popen(command, env=_env())
    assert first.wait(timeout=180) == 0
    assert second.wait(timeout=180) == 0
    assert main(["status", str(out)]) == 0
    final = subprocess.run(command, env=_env(), timeout=180)  # picks up anything left
    assert final.returncode == 0
    assert results_of(out) == results_of(reference)


def test_sigterm_stops_cleanly_and_the_rest_resumes(reference, data_dir, tmp_path):
    out = tmp_path / "stopped"
    command = [sys.executable, "-m", "actrange.cli", *tiny_args(data_dir, out)]
    process = subprocess.Popen(command, env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (out / "actrange.db").exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(3.0)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode in (0, 130), stderr
    if process.returncode == 130:
        assert "stopped" in stderr
    assert subprocess.run(command, env=_env(), timeout=180).returncode == 0
    assert results_of(out) == results_of(reference)


def test_switch_runs_end_to_end(data_dir, tmp_path):
    out = tmp_path / "switch"
    args = tiny_args(data_dir, out, "--activations", "tanh", "--switch", "none,2:relu")
    assert main([*args, "--seeds", "0"]) == 0
    runs, epochs, layers = results_of(out)
    labels = sorted(r["activation"] for r in runs)
    assert labels == ["tanh", "tanh", "tanh>relu@2", "tanh>relu@2"]
    switched = {r["run_id"] for r in runs if r["activation"] == "tanh>relu@2"}
    in_force = [(int(e["epoch"]), e["activation"]) for e in epochs if e["run_id"] in switched]
    assert sorted(set(in_force)) == [(1, "tanh"), (2, "relu"), (3, "relu")]
    dead = [row["dead_frac"] for row in layers if row["run_id"] in switched]
    assert dead.count("nan") == 7 * 2  # epoch 1 of both ranges: dead units mean nothing for tanh
