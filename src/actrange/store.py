"""The result store: one SQLite file per result directory, arrays in files beside it.

SQLite in WAL mode holds the runs, their configs and states, per-epoch and per-layer metrics
and the experiments planned in the directory. Each epoch's rows land in one transaction, so a
killed process leaves whole epochs or none. Large arrays (pre-activation samples, confusion
matrices) are written to ``arrays/`` atomically and referenced from the run's row before the
run is marked finished, so a finished run always has its arrays.
"""

import errno
import io
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from actrange.columns import EPOCH_COLUMNS, LAYER_COLUMNS, LAYER_STAT_COLUMNS
from actrange.errors import UsageError

SCHEMA_VERSION = 1
APPLICATION_ID = 0x61637472  # "actr": marks the file as ours, so a foreign database is refused
DB_NAME = "actrange.db"
STALE_SECONDS = 600.0  # a claim on another host with no heartbeat for this long is abandoned
DONE = ("finished", "diverged")

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    owner TEXT,
    heartbeat REAL,
    group_id TEXT,
    device TEXT,
    seconds REAL,
    final_train_loss REAL,
    test_loss REAL,
    test_accuracy REAL,
    diverged_epoch INTEGER NOT NULL DEFAULT 0,
    arrays TEXT,
    code_version TEXT,
    finished_at REAL
);
CREATE TABLE epochs (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    epoch INTEGER NOT NULL,
    activation TEXT NOT NULL,
    train_loss REAL, test_loss REAL, test_accuracy REAL, seconds REAL,
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE layers (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    epoch INTEGER NOT NULL,
    layer TEXT NOT NULL,
    activation TEXT NOT NULL,
    {", ".join(f"{c} REAL" for c in LAYER_STAT_COLUMNS)},
    PRIMARY KEY (run_id, epoch, layer)
);
CREATE TABLE experiments (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at REAL NOT NULL,
    config TEXT NOT NULL,
    environment TEXT NOT NULL,
    run_ids TEXT NOT NULL
);
"""

# schema version -> statements that bring a store of that version to the next one
MIGRATIONS: dict[int, list[str]] = {}


def owner_token() -> str:
    """Who holds a claim: host and process id."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _owner_alive(owner: str | None, heartbeat: float | None) -> bool:
    if not owner:
        return False
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname():
        return heartbeat is not None and time.time() - heartbeat < STALE_SECONDS
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        return True
    return True


def _disk_error(path: Path, error: OSError) -> UsageError:
    if error.errno == errno.ENOSPC:
        return UsageError(f"disk full while writing {path}; what was stored before is unchanged")
    return UsageError(f"cannot write {path}: {error.strerror or error}")


def write_atomically(path: Path, payload: bytes) -> None:
    """Write ``payload`` to ``path`` via a temporary file, fsync and rename: whole or absent."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(temporary, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise _disk_error(path, error) from None


def check_writable(directory: Path) -> None:
    """Refuse a result directory that cannot be created or written, before any work."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"cannot create result directory {directory}: {error.strerror}") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise UsageError(f"result directory {directory} is not writable")


class Store:
    """An open result store. Use as a context manager or call :meth:`close`."""

    def __init__(self, directory: Path, *, create: bool = True) -> None:
        self.directory = Path(directory)
        self.path = self.directory / DB_NAME
        if not self.path.exists() and not create:
            raise UsageError(f"{self.directory} holds no actrange results ({DB_NAME} is missing)")
        if create:
            check_writable(self.directory)
        self._db = self._open()

    # -- opening, checking and migrating ------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
            db.row_factory = sqlite3.Row
            application_id = db.execute("PRAGMA application_id").fetchone()[0]
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as error:
            raise UsageError(f"{self.path} is not an actrange store: {error}") from None
        if not tables:
            self._create(db)
        elif application_id != APPLICATION_ID or "meta" not in tables:
            raise UsageError(f"{self.path} is a database of another program, not an actrange store")
        self._migrate(db)
        db.execute("PRAGMA foreign_keys = ON")
        return db

    def _create(self, db: sqlite3.Connection) -> None:
        script = (
            "BEGIN IMMEDIATE;"
            + _SCHEMA
            + f"PRAGMA application_id = {APPLICATION_ID};"
            + f"INSERT INTO meta VALUES ('schema_version', '{SCHEMA_VERSION}');"
            + "COMMIT;"
        )
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.executescript(script)
        except sqlite3.OperationalError as error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if "already exists" not in str(error):  # else another process created it first
                raise UsageError(f"cannot create the store {self.path}: {error}") from None

    def _migrate(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        version = int(row[0]) if row else 0
        if version > SCHEMA_VERSION:
            raise UsageError(
                f"{self.path} was written by a newer actrange (schema {version}, this one reads "
                f"up to {SCHEMA_VERSION}); upgrade actrange to read it"
            )
        while version < SCHEMA_VERSION:
            if version not in MIGRATIONS:
                raise UsageError(f"{self.path} has schema {version}, which cannot be migrated")
            with self.transaction(db):
                for statement in MIGRATIONS[version]:
                    db.execute(statement)
                version += 1
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))

    @contextmanager
    def transaction(self, db: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE .. COMMIT; rolled back whole on any error."""
        db = db or self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as error:
            raise UsageError(f"cannot write the store {self.path}: {error}") from None
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.OperationalError as error:
            db.execute("ROLLBACK")
            raise UsageError(f"cannot write the store {self.path}: {error}") from None

    def close(self) -> None:
        """Close the connection."""
        self._db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- experiments and runs ------------------------------------------------------------------

    def plan(self, runs: dict[str, dict[str, Any]], config_toml: str, environment: dict) -> None:
        """Register an experiment: its config, environment and runs (new ones as pending)."""
        with self.transaction() as db:
            for run_id, config in runs.items():
                db.execute(
                    "INSERT OR IGNORE INTO runs (run_id, config) VALUES (?, ?)",
                    (run_id, json.dumps(config, sort_keys=True)),
                )
            db.execute(
                "INSERT INTO experiments (created_at, config, environment, run_ids) "
                "VALUES (?, ?, ?, ?)",
                (time.time(), config_toml, json.dumps(environment), json.dumps(list(runs))),
            )

    def latest_experiment(self) -> dict[str, Any] | None:
        """The most recent experiment: config (TOML text), environment (dict), run_ids."""
        row = self._db.execute("SELECT * FROM experiments ORDER BY id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return {
            "config": row["config"],
            "environment": json.loads(row["environment"]),
            "run_ids": json.loads(row["run_ids"]),
        }

    def runs(self, run_ids: list[str] | None = None) -> list[dict[str, Any]]:
        """Run rows (config decoded) in the order of ``run_ids``, or all runs by id."""
        rows = {r["run_id"]: r for r in self._db.execute("SELECT * FROM runs ORDER BY run_id")}
        chosen = rows.values() if run_ids is None else [rows[i] for i in run_ids if i in rows]
        decoded = []
        for row in chosen:
            run = dict(row)
            run["config"] = json.loads(run["config"])
            run["arrays"] = json.loads(run["arrays"]) if run["arrays"] else {}
            decoded.append(run)
        return decoded

    def claim(self, run_ids: list[str], owner: str) -> list[str]:
        """Atomically take the runs that are not done and not held by a live process."""
        taken = []
        with self.transaction() as db:
            for run_id in run_ids:
                row = db.execute(
                    "SELECT status, owner, heartbeat FROM runs WHERE run_id = ?", (run_id,)
                ).fetchone()
                if row is None or row["status"] in DONE:
                    continue
                held = row["status"] == "running" and row["owner"] != owner
                if held and _owner_alive(row["owner"], row["heartbeat"]):
                    continue
                db.execute(
                    "UPDATE runs SET status = 'running', owner = ?, heartbeat = ? WHERE run_id = ?",
                    (owner, time.time(), run_id),
                )
                taken.append(run_id)
        return taken

    def release(self, run_ids: list[str]) -> None:
        """Give back unfinished claims (clean stop): they become pending again."""
        with self.transaction() as db:
            for run_id in run_ids:
                db.execute(
                    "UPDATE runs SET status = 'pending', owner = NULL "
                    "WHERE run_id = ? AND status = 'running'",
                    (run_id,),
                )

    def restart(self, run_ids: list[str], after_epoch: int = 0) -> None:
        """Forget the epochs after ``after_epoch`` of runs that will be trained again."""
        with self.transaction() as db:
            for run_id in run_ids:
                for table in ("epochs", "layers"):
                    db.execute(
                        f"DELETE FROM {table} WHERE run_id = ? AND epoch > ?", (run_id, after_epoch)
                    )

    def add_epoch(self, rows: list[dict[str, Any]], layer_rows: list[dict[str, Any]]) -> None:
        """One epoch of a group: its epoch rows and layer rows in one transaction."""
        epoch_sql = _insert("epochs", EPOCH_COLUMNS)
        layer_sql = _insert("layers", LAYER_COLUMNS)
        with self.transaction() as db:
            db.executemany(epoch_sql, [tuple(r[c] for c in EPOCH_COLUMNS) for r in rows])
            db.executemany(layer_sql, [tuple(r[c] for c in LAYER_COLUMNS) for r in layer_rows])
            db.executemany(
                "UPDATE runs SET heartbeat = ? WHERE run_id = ?",
                [(time.time(), r["run_id"]) for r in rows],
            )

    def finish(self, run_id: str, summary: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Write the run's arrays, then mark it done with its summary, atomically."""
        relative = f"arrays/{run_id}.npz"
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        write_atomically(self.directory / relative, buffer.getvalue())
        columns = ", ".join(f"{k} = ?" for k in summary)
        with self.transaction() as db:
            db.execute(
                f"UPDATE runs SET {columns}, arrays = ?, owner = NULL, finished_at = ? "
                "WHERE run_id = ?",
                (*summary.values(), json.dumps({"file": relative}), time.time(), run_id),
            )

    def fail(self, run_ids: list[str], reason: str) -> None:
        """Mark runs that raised as failed; they are retried the next time."""
        with self.transaction() as db:
            for run_id in run_ids:
                db.execute(
                    "UPDATE runs SET status = 'failed', owner = NULL, arrays = ? WHERE run_id = ?",
                    (json.dumps({"error": reason}), run_id),
                )

    def load_arrays(self, run_id: str) -> dict[str, np.ndarray]:
        """The arrays a finished run stored (empty when it has none)."""
        row = self._db.execute("SELECT arrays FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        reference = json.loads(row["arrays"]) if row and row["arrays"] else {}
        if "file" not in reference:
            return {}
        with np.load(self.directory / reference["file"]) as archive:
            return {k: archive[k] for k in archive.files}

    def epochs(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """Epoch rows of these runs, ordered by run and epoch."""
        return self._rows("epochs", run_ids, "run_id, epoch")

    def layers(self, run_ids: list[str]) -> list[dict[str, Any]]:
        """Layer rows of these runs, ordered by run, epoch and layer order of insertion."""
        return self._rows("layers", run_ids, "run_id, epoch, rowid")

    def _rows(self, table: str, run_ids: list[str], order: str) -> list[dict[str, Any]]:
        wanted = set(run_ids)
        rows = self._db.execute(f"SELECT * FROM {table} ORDER BY {order}")
        return [dict(r) for r in rows if r["run_id"] in wanted]


def _insert(table: str, columns: tuple[str, ...]) -> str:
    return (
        f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' * len(columns))})"
    )
