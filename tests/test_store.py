"""The result store: schema, migration, claims, atomic writes."""

import sqlite3
import time

import numpy as np
import pytest

from actrange import store as store_module
from actrange.errors import UsageError
from actrange.store import Store, owner_token, write_atomically


def planned(tmp_path, n: int = 2) -> Store:
    store = Store(tmp_path)
    store.plan({f"run{i}": {"seed": i} for i in range(n)}, "name = 'x'\n", {"python": "3"})
    return store


def test_new_store_is_marked_and_versioned(tmp_path):
    planned(tmp_path).close()
    db = sqlite3.connect(tmp_path / "actrange.db")
    assert db.execute("PRAGMA application_id").fetchone()[0] == store_module.APPLICATION_ID
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert int(version) == store_module.SCHEMA_VERSION


def test_an_older_schema_is_migrated_not_reread(tmp_path, monkeypatch):
    planned(tmp_path).close()
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(store_module, "MIGRATIONS", {1: ["ALTER TABLE runs ADD COLUMN note TEXT"]})
    with Store(tmp_path) as store:
        assert "note" in store.runs()[0]
    db = sqlite3.connect(tmp_path / "actrange.db")
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == "2"


def test_an_older_schema_without_a_migration_is_refused(tmp_path, monkeypatch):
    planned(tmp_path).close()
    monkeypatch.setattr(store_module, "SCHEMA_VERSION", 3)
    monkeypatch.setattr(store_module, "MIGRATIONS", {})
    with pytest.raises(UsageError, match="schema 1, which cannot be migrated"):
        Store(tmp_path)


def test_claims_exclude_live_owners_and_reclaim_dead_ones(tmp_path):
    store = planned(tmp_path)
    assert store.claim(["run0", "run1"], owner_token()) == ["run0", "run1"]
    # a live owner (this very process) keeps its runs from others
    assert store.claim(["run0"], "elsewhere:1") == []
    # a claim of a process that no longer exists on this host is taken over
    host = owner_token().rpartition(":")[0]
    db = sqlite3.connect(tmp_path / "actrange.db")
    db.execute("UPDATE runs SET owner = ? WHERE run_id = 'run1'", (f"{host}:999999999",))
    db.commit()
    assert store.claim(["run1"], "newcomer:1") == ["run1"]


def test_stale_claims_from_other_hosts_expire(tmp_path):
    store = planned(tmp_path)
    db = sqlite3.connect(tmp_path / "actrange.db")
    old = time.time() - store_module.STALE_SECONDS - 1
    db.execute("UPDATE runs SET status='running', owner='far-away:12', heartbeat=? ", (old,))
    db.commit()
    assert store.claim(["run0"], owner_token()) == ["run0"]
    db.execute("UPDATE runs SET status='running', owner='far-away:12', heartbeat=?", (time.time(),))
    db.commit()
    assert store.claim(["run1"], owner_token()) == []


def test_finish_writes_arrays_then_marks_done(tmp_path):
    store = planned(tmp_path)
    matrix = np.arange(100).reshape(10, 10)
    store.finish("run0", {"status": "finished", "test_accuracy": 88.5}, {"confusion": matrix})
    assert np.array_equal(store.load_arrays("run0")["confusion"], matrix)
    run = store.runs(["run0"])[0]
    assert (run["status"], run["test_accuracy"]) == ("finished", 88.5)
    assert store.load_arrays("run1") == {}


def test_a_failed_transaction_leaves_nothing(tmp_path):
    store = planned(tmp_path)
    good = {"run_id": "run0", "epoch": 1, "activation": "relu", "train_loss": 1.0,
            "test_loss": 1.0, "test_accuracy": 50.0, "seconds": 1.0}  # fmt: skip
    with pytest.raises(KeyError):
        store.add_epoch([good, {"run_id": "run1"}], [])
    assert store.epochs(["run0", "run1"]) == []


def test_atomic_write_is_whole_or_absent(tmp_path, monkeypatch):
    target = tmp_path / "file.bin"
    write_atomically(target, b"first")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_module.os, "replace", broken_replace)
    with pytest.raises(UsageError, match="disk full"):
        write_atomically(target, b"second")
    assert target.read_bytes() == b"first"
    assert list(tmp_path.iterdir()) == [target]
