"""Several local processes on one result directory: balanced groups, each run trained once."""

import queue
import signal
import subprocess
import sys
import time

import pytest
import torch

from actrange.cli import main
from actrange.config_files import resolve
from actrange.errors import UsageError
from actrange.plan import balanced_group_size
from actrange.store import Store
from actrange.workers import _helper
from tests.helpers import synthetic_dataset, write_idx
from tests.test_sweep import _env, results_of, tiny_args


@pytest.mark.parametrize(
    ("runs", "workers", "cap", "size"),
    [
        (20, 2, 8, 5),  # 4 groups of 5, two per worker, not 8 + 8 + 4
        (4, 2, 8, 2),  # the study as written: one group per worker
        (8, 2, 8, 4),
        (100, 2, 8, 8),  # 13 groups: 7 rounds would need 14, so the cap decides
        (3, 4, 8, 1),  # more workers than runs: one run each, one worker idle
        (10, 1, 8, 5),  # one worker: two groups of 5 rather than 8 + 2
    ],
)
def test_balanced_group_size(runs, workers, cap, size):
    assert balanced_group_size(runs, workers, cap) == size


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_idx(tmp_path_factory.mktemp("idx"), synthetic_dataset(96, 48))


def split(rows):
    """Each row as (its numbers, its words), group ids left out, for comparing numbers loosely."""
    numbers, words = [], []
    for row in rows:
        values = {k: v for k, v in row.items() if k != "group_id"}
        numeric = {k: float(v) for k, v in values.items() if _is_number(v)}
        numbers.append(numeric)
        words.append({k: v for k, v in values.items() if k not in numeric})
    return numbers, words


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_two_workers_train_every_run_once_with_the_single_process_numbers(data_dir, tmp_path):
    single, double = tmp_path / "single", tmp_path / "double"
    assert main(tiny_args(data_dir, single)) == 0
    threads = torch.get_num_threads()
    assert main(tiny_args(data_dir, double, "--workers", "2")) == 0
    assert torch.get_num_threads() == threads  # the main process gets its threads back

    with Store(double, create=False) as store:
        assert {r["status"] for r in store.runs()} == {"finished"}
    for ours, reference in zip(results_of(double), results_of(single), strict=True):
        assert len(ours) == len(reference)  # every run, epoch and layer exactly once
        (our_numbers, our_words), (their_numbers, their_words) = split(ours), split(reference)
        assert our_words == their_words
        for mine, theirs in zip(our_numbers, their_numbers, strict=True):
            # same groups (--group-size 2); a different thread count may round differently
            assert mine == pytest.approx(theirs, rel=1e-4, abs=1e-6, nan_ok=True)


def test_a_helper_trains_what_it_can_claim_and_reports_it(data_dir, tmp_path):
    config = resolve(
        None,
        {
            "data": str(data_dir),
            "verify_data": False,
            "download": False,
            "epochs": 2,
            "batch_size": 16,
            "seeds": [0],
            "group_size": 2,
            "record_values": 20,
            "device": "cpu",
            "workers": 2,
        },
    )
    outcomes: queue.Queue = queue.Queue()
    threads = torch.get_num_threads()
    try:
        _helper(config, tmp_path / "out", "worker 2", 1, True, outcomes)
    finally:
        torch.set_num_threads(threads)
    outcome = outcomes.get_nowait()
    assert outcome.trained == 4 and outcome.failed == 0
    assert not (tmp_path / "out" / "results.csv").exists()  # exporting is the main process's job


def test_sigterm_to_the_main_process_stops_every_worker_and_the_sweep_resumes(data_dir, tmp_path):
    out = tmp_path / "stopped"
    args = tiny_args(data_dir, out, "--epochs", "200", "--workers", "2")
    command = [sys.executable, "-m", "actrange.cli", *args]
    process = subprocess.Popen(command, env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(_owners(out)) < 2 and time.time() < deadline:  # both processes are training
        time.sleep(0.2)
    assert len(_owners(out)) == 2
    process.send_signal(signal.SIGTERM)  # to the main process only: it must pass it on
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert stderr.strip().splitlines()[-1].startswith("stopped: ")
    assert _owners(out) == set()  # every claim released, the helper's too

    assert subprocess.run(command, env=_env(), timeout=600).returncode == 0
    with Store(out, create=False) as store:
        assert {r["status"] for r in store.runs()} == {"finished"}


def _owners(out):
    """The processes holding runs of ``out`` now (none before the store exists)."""
    try:
        with Store(out, create=False) as store:
            return {r["owner"] for r in store.runs() if r["status"] == "running"}
    except UsageError:
        return set()
