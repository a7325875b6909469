"""Fashion-MNIST data layer, on tiny fake IDX files in the real format; never the network."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import socket
import struct
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from actrange import data, data_files
from actrange.errors import UsageError

N_TRAIN, N_TEST = 5, 3


# ---------------------------------------------------------------------------------------------
# fake files


def idx_images_bytes(images: np.ndarray, magic: int = 2051) -> bytes:
    """uint8 [N, rows, cols] -> IDX bytes (big-endian header, then pixels row-major)."""
    count, rows, cols = images.shape
    return struct.pack(">IIII", magic, count, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels_bytes(labels: list[int], magic: int = 2049) -> bytes:
    """labels -> IDX bytes."""
    return struct.pack(">II", magic, len(labels)) + bytes(labels)


def fake_images(count: int, offset: int = 0) -> np.ndarray:
    """uint8 [count, 28, 28]: zero except pixel (k, k) = 255 and pixel (27, 0) = offset + k."""
    images = np.zeros((count, 28, 28), dtype=np.uint8)
    for k in range(count):
        images[k, k, k] = 255
        images[k, 27, 0] = offset + k
    return images


def write(path: Path, raw: bytes, gz: bool) -> Path:
    """Write ``raw`` to ``path`` (+ ``.gz`` and compressed when ``gz``); return the path written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        raw = gzip.compress(raw, mtime=0)
    path.write_bytes(raw)
    return path


def fake_set(offset: int = 0) -> dict[str, bytes]:
    """Decompressed bytes of a fake set; ``offset`` makes sets from different places tell apart."""
    return {
        "train_images": idx_images_bytes(fake_images(N_TRAIN, offset)),
        "train_labels": idx_labels_bytes([9, 0, 3, 5, (1 + offset) % 10]),
        "test_images": idx_images_bytes(fake_images(N_TEST, offset)),
        "test_labels": idx_labels_bytes([2, 7, offset % 10]),
    }


def write_set(directory: Path, gz: bool = True, offset: int = 0) -> dict[str, Path]:
    """Write the four fake files under their real names; return their paths by key."""
    contents = fake_set(offset)
    specs = data_files.FILES.items()
    return {key: write(directory / spec.raw_name, contents[key], gz) for key, spec in specs}


def fake_specs(offset: int = 0, gz_md5: str | None = None) -> dict[str, data_files.FileSpec]:
    """FILES for the fake set: its counts and md5s (.gz md5s of ``gzip.compress(mtime=0)``)."""
    contents = fake_set(offset)
    specs = {}
    for key, spec in data_files.FILES.items():
        raw = contents[key]
        specs[key] = dataclasses.replace(
            spec,
            gz_md5=gz_md5 or hashlib.md5(gzip.compress(raw, mtime=0)).hexdigest(),
            raw_md5=hashlib.md5(raw).hexdigest(),
            count=N_TRAIN if key.startswith("train") else N_TEST,
        )
    return specs


def dead_url() -> str:
    """A url on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No real data dir, cache or network: every searched place points into tmp_path."""
    for name in ("ACTRANGE_DATA", "ACTRANGE_MIRROR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ACTRANGE_CACHE", str(tmp_path / "cache"))
    # a download a test did not mean to make fails fast, locally
    monkeypatch.setattr(data_files, "MIRRORS", (dead_url(),))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(data_files, "DEBIAN_DIR", tmp_path / "debian")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


@pytest.fixture
def server(tmp_path):
    """A local http server over tmp_path/served holding the fake .gz files; yields its url."""
    served = tmp_path / "served"
    write_set(served, gz=True)
    handler = functools.partial(QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


# ---------------------------------------------------------------------------------------------
# reading one file


def test_class_names_in_label_order():
    assert len(data.CLASS_NAMES) == 10
    assert data.CLASS_NAMES[0] == "T-shirt/top"
    assert data.CLASS_NAMES[9] == "Ankle boot"


@pytest.mark.parametrize("gz", [True, False])
def test_images_round_trip(tmp_path, gz):
    path = write(tmp_path / "imgs", idx_images_bytes(fake_images(N_TRAIN, offset=40)), gz)
    images = data.read_idx_images(path)
    assert images.dtype == torch.uint8
    assert images.shape == (N_TRAIN, 28, 28)
    assert images[3, 3, 3] == 255 and images[3, 27, 0] == 43 and images[3, 3, 4] == 0
    assert int(images.sum()) == N_TRAIN * 255 + sum(40 + k for k in range(N_TRAIN))


@pytest.mark.parametrize("gz", [True, False])
def test_labels_round_trip(tmp_path, gz):
    path = write(tmp_path / "labels", idx_labels_bytes([9, 0, 3, 5, 1]), gz)
    labels = data.read_idx_labels(path)
    assert labels.dtype == torch.int64
    assert labels.tolist() == [9, 0, 3, 5, 1]


def test_corrupt_gzip_names_file(tmp_path):
    path = tmp_path / "imgs.gz"
    path.write_bytes(b"this is not gzip at all")
    with pytest.raises(UsageError, match="corrupted gzip") as err:
        data.read_idx_images(path)
    assert str(path) in str(err.value)


def test_cut_gzip_stream_names_file(tmp_path):
    path = write(tmp_path / "labels", idx_labels_bytes([1, 2, 3] * 100), gz=True)
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(UsageError, match="corrupted gzip") as err:
        data.read_idx_labels(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("raw", "reader", "problem"),
    [
        (idx_images_bytes(fake_images(2), magic=2049), data.read_idx_images, "magic number 2049"),
        (idx_labels_bytes([1, 2], magic=2051), data.read_idx_labels, "magic number 2051"),
        (idx_images_bytes(np.zeros((2, 28, 27))), data.read_idx_images, "28x27"),
        (idx_images_bytes(np.zeros((2, 32, 32))), data.read_idx_images, "32x32"),
        (idx_images_bytes(fake_images(2))[:-1], data.read_idx_images, "truncated, 1583 bytes"),
        (idx_images_bytes(fake_images(2))[:10], data.read_idx_images, "truncated, 10 bytes"),
        (idx_labels_bytes([1, 2, 3])[:-1], data.read_idx_labels, "truncated"),
        (idx_images_bytes(fake_images(2)) + b"\0\0", data.read_idx_images, "2 trailing bytes"),
        (idx_labels_bytes([1, 2]) + b"\0", data.read_idx_labels, "1 trailing bytes"),
        (idx_labels_bytes([1, 2, 10, 4]), data.read_idx_labels, "label 10 at index 2"),
        (idx_labels_bytes([255]), data.read_idx_labels, "label 255 at index 0"),
    ],
)
@pytest.mark.parametrize("gz", [True, False])
def test_bad_file_names_file_and_problem(tmp_path, raw, reader, problem, gz):
    path = write(tmp_path / "bad-idx-ubyte", raw, gz)
    with pytest.raises(UsageError, match=problem) as err:
        reader(path)
    assert str(path) in str(err.value)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# loading the set


@pytest.mark.parametrize("gz", [True, False])
def test_load_fake_set_without_verify(tmp_path, gz):
    write_set(tmp_path / "d", gz=gz)
    fmnist = data.load_fashion_mnist(tmp_path / "d", verify=False)
    assert fmnist.source == str(tmp_path / "d")
    assert fmnist.train_images.shape == (N_TRAIN, 28, 28)
    assert fmnist.test_images.shape == (N_TEST, 28, 28)
    assert fmnist.train_labels.tolist() == [9, 0, 3, 5, 1]
    assert fmnist.test_labels.tolist() == [2, 7, 0]
    assert torch.equal(fmnist.test_images, torch.from_numpy(fake_images(N_TEST)))


def test_load_verifies_counts_and_md5_when_they_match(tmp_path, monkeypatch):
    write_set(tmp_path / "d", gz=True)
    monkeypatch.setattr(data_files, "FILES", fake_specs())
    fmnist = data.load_fashion_mnist(tmp_path / "d", verify=True)
    assert fmnist.train_labels.tolist() == [9, 0, 3, 5, 1]


def test_real_counts_required_when_verifying(tmp_path):
    paths = write_set(tmp_path / "d", gz=True)
    with pytest.raises(UsageError, match="holds 5 items, the real set has 60000") as err:
        data.load_fashion_mnist(tmp_path / "d", verify=True)
    assert str(paths["train_images"]) in str(err.value)


def test_md5_mismatch_names_file(tmp_path, monkeypatch):
    paths = write_set(tmp_path / "d", gz=True)
    specs = fake_specs()
    specs["test_labels"] = dataclasses.replace(specs["test_labels"], raw_md5="0" * 32)
    monkeypatch.setattr(data_files, "FILES", specs)
    with pytest.raises(UsageError, match="md5 of the decompressed bytes") as err:
        data.load_fashion_mnist(tmp_path / "d", verify=True)
    assert str(paths["test_labels"]) in str(err.value)
    # format and counts are still checked without verify, md5 is not
    assert data.load_fashion_mnist(tmp_path / "d", verify=False).test_labels.tolist() == [2, 7, 0]


def test_md5_is_of_decompressed_bytes_so_recompressed_gz_passes(tmp_path, monkeypatch):
    paths = write_set(tmp_path / "d", gz=True)
    monkeypatch.setattr(data_files, "FILES", fake_specs())
    recompressed = gzip.compress(gzip.decompress(paths["train_images"].read_bytes()), 1, mtime=7)
    assert hashlib.md5(recompressed).hexdigest() != data_files.FILES["train_images"].gz_md5
    paths["train_images"].write_bytes(recompressed)
    assert data.load_fashion_mnist(tmp_path / "d").train_images.shape == (N_TRAIN, 28, 28)


def test_images_labels_count_disagreeing_names_both(tmp_path):
    paths = write_set(tmp_path / "d", gz=False)
    write(paths["test_labels"], idx_labels_bytes([1, 2]), gz=False)
    with pytest.raises(UsageError, match="holds 3 images but .* holds 2 labels") as err:
        data.load_fashion_mnist(tmp_path / "d", verify=False)
    assert str(paths["test_images"]) in str(err.value)
    assert str(paths["test_labels"]) in str(err.value)


def test_bad_file_inside_set_names_it(tmp_path):
    paths = write_set(tmp_path / "d", gz=True)
    paths["train_labels"].write_bytes(b"garbage")
    with pytest.raises(UsageError, match="corrupted gzip") as err:
        data.load_fashion_mnist(tmp_path / "d", verify=False)
    assert str(paths["train_labels"]) in str(err.value)


# ---------------------------------------------------------------------------------------------
# search order


def test_search_order_explicit_then_cache_then_debian_then_cwd(isolated, monkeypatch):
    cwd_data, debian = Path("data") / "FashionMNIST" / "raw", isolated / "debian"
    cache, explicit = isolated / "cache", isolated / "explicit"
    write_set(cwd_data, offset=4)
    assert data_files.find_data_dir() == Path.cwd() / cwd_data
    write_set(debian, offset=3)
    assert data_files.find_data_dir() == debian
    write_set(cache, offset=2, gz=False)
    assert data_files.find_data_dir() == cache
    write_set(explicit, offset=1)
    assert data_files.find_data_dir(explicit) == explicit
    monkeypatch.setenv("ACTRANGE_DATA", str(explicit))
    assert data_files.find_data_dir() == explicit

    # the set loaded is the one from the winning place
    fmnist = data.load_fashion_mnist(verify=False)
    assert fmnist.source == str(explicit)
    assert fmnist.test_labels.tolist() == [2, 7, 1]


def test_argument_beats_environment(isolated, monkeypatch):
    write_set(isolated / "arg")
    write_set(isolated / "env")
    monkeypatch.setenv("ACTRANGE_DATA", str(isolated / "env"))
    assert data_files.find_data_dir(isolated / "arg") == isolated / "arg"


@pytest.mark.parametrize("root", ["data", "data_project2_DL"])
def test_torchvision_layout_in_cwd(root):
    write_set(Path(root) / "FashionMNIST" / "raw", offset=6)
    fmnist = data.load_fashion_mnist(download=False, verify=False)
    assert fmnist.source == str(Path.cwd() / root / "FashionMNIST" / "raw")
    assert fmnist.test_labels.tolist() == [2, 7, 6]


def test_torchvision_layout_under_explicit_dir(isolated):
    write_set(isolated / "explicit" / "FashionMNIST" / "raw")
    assert data_files.find_data_dir(isolated / "explicit") == isolated / "explicit/FashionMNIST/raw"


def test_mixed_gzipped_and_raw_files_are_accepted(isolated):
    paths = write_set(isolated / "d", gz=True)
    raw = gzip.decompress(paths["train_images"].read_bytes())
    paths["train_images"].unlink()
    write(paths["train_images"].with_suffix(""), raw, gz=False)
    fmnist = data.load_fashion_mnist(isolated / "d", verify=False)
    assert fmnist.train_images[4, 27, 0] == 4


@pytest.mark.parametrize("via_env", [False, True])
def test_explicit_dir_without_files_is_an_error_not_a_fall_through(isolated, monkeypatch, via_env):
    write_set(isolated / "cache")
    (isolated / "empty").mkdir()
    write(isolated / "empty" / "train-images-idx3-ubyte", b"", gz=False)
    if via_env:
        monkeypatch.setenv("ACTRANGE_DATA", str(isolated / "empty"))
    with pytest.raises(UsageError, match="does not hold the Fashion-MNIST files") as err:
        data_files.find_data_dir(None if via_env else isolated / "empty")
    assert str(isolated / "empty") in str(err.value)


def test_nothing_found_without_download(isolated):
    assert data_files.find_data_dir() is None
    with pytest.raises(UsageError, match="download disabled") as err:
        data.load_fashion_mnist(download=False)
    message = str(err.value)
    assert "apt-get install dataset-fashion-mnist" in message and "ACTRANGE_DATA" in message
    assert "--data DIR" in message and "\n" not in message
    for place in (isolated / "cache", isolated / "debian", Path.cwd() / "data_project2_DL"):
        assert str(place) in message


# ---------------------------------------------------------------------------------------------
# download


def test_download_lands_in_cache_and_loads(isolated, monkeypatch, server):
    monkeypatch.setattr(data_files, "FILES", fake_specs())
    fmnist = data.load_fashion_mnist(mirrors=[server])
    assert fmnist.source == f"download: {server}"
    assert fmnist.train_labels.tolist() == [9, 0, 3, 5, 1]
    for spec in data_files.FILES.values():
        assert (isolated / "cache" / spec.name).is_file()
    # the next load finds the cached files without the server
    assert data_files.find_data_dir() == isolated / "cache"


def test_download_falls_back_to_next_mirror(monkeypatch, server):
    monkeypatch.setattr(data_files, "FILES", fake_specs())
    fmnist = data.load_fashion_mnist(mirrors=[dead_url(), server + "missing/", server])
    assert fmnist.source == f"download: {server}"


def test_download_mirror_from_environment(monkeypatch, server):
    monkeypatch.setattr(data_files, "FILES", fake_specs())
    monkeypatch.setenv("ACTRANGE_MIRROR", server.rstrip("/"))
    assert data.load_fashion_mnist().source == f"download: {server}"


def test_download_404_is_a_usage_error(monkeypatch, server):
    monkeypatch.setattr(data_files, "FILES", fake_specs())
    with pytest.raises(UsageError, match="404") as err:
        data.load_fashion_mnist(mirrors=[server + "missing/"])
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "\n" not in str(err.value)


def test_download_nothing_listening_is_a_usage_error():
    # the default mirrors point at a dead local port (see the isolated fixture)
    with pytest.raises(UsageError, match="download failed") as err:
        data.load_fashion_mnist()
    assert "apt-get install dataset-fashion-mnist" in str(err.value)


def test_download_with_wrong_gz_md5_is_rejected(isolated, monkeypatch, server):
    monkeypatch.setattr(data_files, "FILES", fake_specs(gz_md5="0" * 32))
    with pytest.raises(UsageError, match="apt-get install dataset-fashion-mnist"):
        data.load_fashion_mnist(mirrors=[server])
    assert not (isolated / "cache" / "train-images-idx3-ubyte.gz").exists()


# ---------------------------------------------------------------------------------------------
# normalise


def test_normalise_maps_pixel_extremes_exactly():
    # even columns 0, odd columns 255
    images = torch.tensor([0, 255], dtype=torch.uint8).repeat(2, 28, 14)
    half = data.normalise(images, 0.5, 0.5)
    tenth = data.normalise(images, 0.5, 0.1)
    assert half.dtype == torch.float32 and half.shape == (2, 28, 28)
    assert half[0, 0, 0].item() == -1.0 and half[0, 0, 1].item() == 1.0
    assert tenth[0, 0, 0].item() == -5.0 and tenth[0, 0, 1].item() == 5.0
    assert half.min() == -1.0 and half.max() == 1.0
    assert tenth.min() == -5.0 and tenth.max() == 5.0


@pytest.mark.parametrize(("mean", "std"), [(0.5, 0.5), (0.5, 0.1), (0.2860, 0.3530)])
def test_normalise_matches_float32_op_sequence_bit_for_bit(mean, std):
    images = torch.arange(256, dtype=torch.uint8).repeat(4)[: 28 * 28].reshape(1, 28, 28)
    normalised = data.normalise(images, mean, std)

    # torchvision's ToTensor then Normalize, with mean and std as float32 tensors
    channel_first = images.to(torch.float32).div(255).unsqueeze(1)
    mean_t = torch.as_tensor([mean], dtype=torch.float32).view(-1, 1, 1)
    std_t = torch.as_tensor([std], dtype=torch.float32).view(-1, 1, 1)
    torchvision_style = channel_first.sub_(mean_t).div_(std_t).squeeze(1)
    assert torch.equal(normalised, torchvision_style)

    # and numpy's IEEE float32 arithmetic, the same four steps
    pixels = images.numpy().astype(np.float32)
    expected = (pixels / np.float32(255) - np.float32(mean)) / np.float32(std)
    assert np.array_equal(normalised.numpy(), expected)


def test_normalise_rejects_bad_input():
    with pytest.raises(UsageError, match="uint8"):
        data.normalise(torch.zeros(1, 28, 28), 0.5, 0.5)
    with pytest.raises(UsageError, match="positive"):
        data.normalise(torch.zeros(1, 28, 28, dtype=torch.uint8), 0.5, 0.0)
