"""Every entry point refuses bad input with one line and exit status 2, touching nothing stored."""

import errno
import gzip
import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from actrange import data_files
from actrange import store as store_module
from actrange.cli import main
from tests.helpers import synthetic_dataset, write_idx


def tiny(data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run", "--data", str(data_dir), "--no-verify-data", "--no-download", "--out", str(out),
        "--epochs", "1", "--batch-size", "16", "--seeds", "0", "--activations", "relu",
        "--ranges=-1:1", "--record-values", "10", "--device", "cpu", "--no-report", "--quiet",
        *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def idx_dir(tmp_path_factory) -> Path:
    return write_idx(tmp_path_factory.mktemp("idx"), synthetic_dataset(48, 16))


@pytest.fixture(scope="module")
def finished_store(idx_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("stored") / "results"
    assert main(tiny(idx_dir, out)) == 0
    return out


def snapshot(directory: Path) -> dict[str, object]:
    """What must not change: the finished runs, their epochs, layers and array files."""
    db = sqlite3.connect(directory / "actrange.db")
    state: dict[str, object] = {
        table: db.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        for table in ("epochs", "layers")
    }
    state["runs"] = db.execute("SELECT * FROM runs WHERE status = 'finished'").fetchall()
    db.close()
    for path in sorted((directory / "arrays").iterdir()):
        state[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


CASES = {
    "unknown activation": (["--activations", "relux"], "activation 'relux' is unknown"),
    "lo >= hi": (["--ranges=1:-1"], "needs lo < hi"),
    "non-finite range": (["--ranges=nan:1"], "ranges"),
    "std <= 0": (["--normalize", "0.5:0"], "normalize"),
    "epochs < 1": (["--epochs", "0"], "'epochs'"),
    "batch size < 1": (["--batch-size", "0"], "'batch_size'"),
    "lr <= 0": (["--lr", "0"], "'lrs'"),
    "lr not a number": (["--lr", "fast"], "--lr: 'fast' is not a number"),
    "seeds not integers": (["--seeds", "a,b"], "--seeds: 'a' is not an integer"),
    "unknown option": (["--colour", "red"], "unrecognized arguments"),
    "no cuda here": (["--device", "cuda:7"], "device 'cuda:7'"),
    "workers < 1": (["--workers", "0"], "'workers'"),
    "workers with ray": (["--workers", "2", "--backend", "ray"], "for the local backend"),
    "workers with mlflow": (["--workers", "2", "--mlflow"], "cannot log to MLflow"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_options(case, idx_dir, finished_store, tmp_path, capsys):
    out = tmp_path / "results"
    shutil.copytree(finished_store, out)
    before = snapshot(out)
    extra, words = CASES[case]
    assert main(tiny(idx_dir, out, *extra)) == 2
    assert_one_clean_line(capsys.readouterr().err, words)
    assert snapshot(out) == before


TOML_CASES = {
    "unknown key": ("learning_rate = 0.1\n", "unknown config key 'learning_rate'"),
    "malformed toml": ("epochs = = 3\n", "is not valid TOML"),
    "nan in config": ("lrs = [nan]\n", "'lrs'"),
    "huge number": ("epochs = 99999999999999\n", "'epochs'"),
    "wrong type": ('epochs = "three"\n', "'epochs'"),
}


@pytest.mark.parametrize("case", sorted(TOML_CASES))
def test_bad_experiment_files(case, idx_dir, finished_store, tmp_path, capsys):
    out = tmp_path / "results"
    shutil.copytree(finished_store, out)
    before = snapshot(out)
    text, words = TOML_CASES[case]
    config = write(tmp_path / "experiment file.toml", text)
    args = tiny(idx_dir, out)
    args[1:1] = ["--config", str(config)]
    assert main(args) == 2
    assert_one_clean_line(capsys.readouterr().err, words)
    assert snapshot(out) == before


def test_missing_experiment_file(idx_dir, tmp_path, capsys):
    args = tiny(idx_dir, tmp_path / "out")
    args[1:1] = ["--config", str(tmp_path / "absent.toml")]
    assert main(args) == 2
    assert_one_clean_line(capsys.readouterr().err, "does not exist")


def test_data_missing_with_no_network_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data_files, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("ACTRANGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ACTRANGE_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    args = tiny(tmp_path, tmp_path / "out")
    del args[1:3]  # no --data: search everywhere
    assert main(args) == 2
    assert_one_clean_line(capsys.readouterr().err, "apt-get install dataset-fashion-mnist")


@pytest.mark.parametrize("damage", ["corrupt", "truncated", "wrong format"])
def test_damaged_data_file_is_named(damage, idx_dir, finished_store, tmp_path, capsys):
    broken = tmp_path / "data"
    shutil.copytree(idx_dir, broken)
    victim = broken / "train-images-idx3-ubyte.gz"
    payload = gzip.decompress(victim.read_bytes())
    if damage == "corrupt":
        victim.write_bytes(b"\x1f\x8b" + b"garbage" * 10)
    elif damage == "truncated":
        victim.write_bytes(gzip.compress(payload[: len(payload) // 2]))
    else:
        victim.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + payload[4:]))
    out = tmp_path / "results"
    shutil.copytree(finished_store, out)
    before = snapshot(out)
    assert main(tiny(broken, out, "--seeds", "5")) == 2
    assert_one_clean_line(capsys.readouterr().err, "train-images-idx3-ubyte.gz")
    assert snapshot(out) == before


def test_corrupted_database(idx_dir, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "actrange.db").write_bytes(b"this is not a database" * 100)
    for args in (tiny(idx_dir, out), ["status", str(out)], ["report", str(out)]):
        assert main(args) == 2
        assert_one_clean_line(capsys.readouterr().err, "is not an actrange store")
    assert (out / "actrange.db").read_bytes() == b"this is not a database" * 100


def test_foreign_database(idx_dir, tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    db = sqlite3.connect(out / "actrange.db")
    db.execute("CREATE TABLE invoices (id INTEGER)")
    db.commit()
    db.close()
    assert main(tiny(idx_dir, out)) == 2
    assert_one_clean_line(capsys.readouterr().err, "database of another program")


def test_store_from_a_newer_schema(idx_dir, finished_store, tmp_path, capsys):
    out = tmp_path / "results"
    shutil.copytree(finished_store, out)
    db = sqlite3.connect(out / "actrange.db")
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    before = snapshot(out)
    assert main(tiny(idx_dir, out)) == 2
    assert_one_clean_line(capsys.readouterr().err, "newer actrange (schema 99")
    assert snapshot(out) == before


def test_result_directory_that_cannot_be_created(idx_dir, tmp_path, capsys):
    blocker = write(tmp_path / "a file", "not a directory")
    assert main(tiny(idx_dir, blocker / "results")) == 2
    assert_one_clean_line(capsys.readouterr().err, "cannot create result directory")


def test_result_directory_that_is_not_writable(idx_dir, tmp_path, monkeypatch, capsys):
    # root ignores permission bits, so the refusal is simulated where the check is made
    monkeypatch.setattr(store_module.os, "access", lambda path, mode: False)
    assert main(tiny(idx_dir, tmp_path / "results")) == 2
    assert_one_clean_line(capsys.readouterr().err, "is not writable")


def test_full_disk_while_writing(idx_dir, finished_store, tmp_path, monkeypatch, capsys):
    out = tmp_path / "results"
    shutil.copytree(finished_store, out)
    before = snapshot(out)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "fsync", no_space)
    assert main(tiny(idx_dir, out, "--seeds", "3")) == 2
    assert_one_clean_line(capsys.readouterr().err, "disk full while writing")
    assert snapshot(out) == before
    assert not list(out.rglob(".*.tmp"))


def test_report_of_a_directory_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert_one_clean_line(capsys.readouterr().err, "holds no actrange results")


def test_paths_with_spaces_and_non_ascii_names(idx_dir, tmp_path):
    data_dir = tmp_path / "données de test"
    shutil.copytree(idx_dir, data_dir)
    out = tmp_path / "résultats avec espaces" / "実験"
    assert main(tiny(data_dir, out)) == 0
    assert (out / "results.csv").read_text().count("\n") == 2
    assert main(["status", str(out)]) == 0


def assert_one_clean_line(stderr: str, words: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("actrange: error: ")
    assert words in lines[0]
    assert "Traceback" not in stderr
