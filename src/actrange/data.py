"""Fashion-MNIST as tensors: the four IDX files read, checked and loaded; pixels normalised.

Where the files are found, and how they are fetched when allowed, is actrange.data_files; what
is read here is checked here (IDX header, lengths, label values, counts, md5 of the decompressed
bytes), whichever place the files came from.
"""

from __future__ import annotations

import gzip
import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from actrange import data_files
from actrange.errors import UsageError

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIDE = 28
NUM_CLASSES = len(CLASS_NAMES)


@dataclass(frozen=True)
class FashionMNIST:
    """The whole data set as tensors.

    Attributes:
        train_images: uint8 [60000, 28, 28].
        train_labels: int64 [60000], values 0..9 indexing CLASS_NAMES.
        test_images: uint8 [10000, 28, 28].
        test_labels: int64 [10000].
        source: the directory the files were read from, or ``download: <mirror url>``.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    source: str


# ---------------------------------------------------------------------------------------------
# reading and checking one IDX file


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when its name ends in ``.gz``."""
    data = Path(path).read_bytes()
    if not str(path).endswith(".gz"):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as err:
        raise UsageError(
            f"{path}: corrupted gzip file ({err}); delete it and fetch it again"
        ) from err


def _header(data: bytes, path: Path, magic: int, ndims: int) -> list[int]:
    """Check the big-endian magic number and the total length; return the dimension sizes."""
    header_len = 4 * (1 + ndims)
    if len(data) < header_len:
        raise UsageError(f"{path}: truncated, {len(data)} bytes is shorter than the IDX header")
    fields = np.frombuffer(data, dtype=">u4", count=1 + ndims).tolist()
    if fields[0] != magic:
        kind = "images" if magic == IMAGES_MAGIC else "labels"
        raise UsageError(f"{path}: magic number {fields[0]}, expected {magic} for IDX {kind}")
    dims = fields[1:]
    expected_len = header_len + int(np.prod(dims, dtype=np.int64))
    if len(data) < expected_len:
        raise UsageError(
            f"{path}: truncated, {len(data)} bytes where the header says {expected_len}"
        )
    if len(data) > expected_len:
        raise UsageError(
            f"{path}: {len(data) - expected_len} trailing bytes after the {expected_len} "
            "the header declares"
        )
    return dims


def _parse_images(data: bytes, path: Path) -> torch.Tensor:
    """IDX image bytes -> uint8 [N, 28, 28]."""
    count, rows, cols = _header(data, path, IMAGES_MAGIC, ndims=3)
    if (rows, cols) != (IMAGE_SIDE, IMAGE_SIDE):
        raise UsageError(f"{path}: images are {rows}x{cols}, expected {IMAGE_SIDE}x{IMAGE_SIDE}")
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, rows, cols)
    # copy: a tensor over read-only bytes would share memory torch is allowed to write
    return torch.from_numpy(pixels.copy())


def _parse_labels(data: bytes, path: Path) -> torch.Tensor:
    """IDX label bytes -> int64 [N], every value in 0..9."""
    (count,) = _header(data, path, LABELS_MAGIC, ndims=1)
    labels = np.frombuffer(data, dtype=np.uint8, offset=8, count=count).astype(np.int64)
    bad = np.flatnonzero(labels >= NUM_CLASSES)
    if bad.size:
        raise UsageError(
            f"{path}: label {labels[bad[0]]} at index {bad[0]} is outside 0..{NUM_CLASSES - 1}"
        )
    return torch.from_numpy(labels)


def read_idx_images(path: Path) -> torch.Tensor:
    """Read an IDX image file (gzipped if its name ends in ``.gz``).

    Args:
        path: the file.

    Returns:
        uint8 tensor [N, 28, 28].

    Raises:
        UsageError: naming the file, when it is corrupt, not IDX images, not 28x28, or its
            length disagrees with its header.
    """
    return _parse_images(_read_bytes(path), path)


def read_idx_labels(path: Path) -> torch.Tensor:
    """Read an IDX label file (gzipped if its name ends in ``.gz``).

    Args:
        path: the file.

    Returns:
        int64 tensor [N] with values in 0..9.

    Raises:
        UsageError: naming the file, when it is corrupt, not IDX labels, its length disagrees
            with its header, or a label is outside 0..9.
    """
    return _parse_labels(_read_bytes(path), path)


# ---------------------------------------------------------------------------------------------
# loading the set


def _load_file(directory: Path, key: str, verify: bool) -> torch.Tensor:
    """Read, parse and (when ``verify``) check count and md5 of one of the four files."""
    spec = data_files.FILES[key]
    path = data_files.file_in(directory, spec)
    data = _read_bytes(path)
    tensor = _parse_images(data, path) if key.endswith("images") else _parse_labels(data, path)
    if verify and len(tensor) != spec.count:
        raise UsageError(f"{path}: holds {len(tensor)} items, the real set has {spec.count}")
    if verify:
        digest = hashlib.md5(data).hexdigest()
        if digest != spec.raw_md5:
            raise UsageError(
                f"{path}: md5 of the decompressed bytes is {digest}, expected {spec.raw_md5}; "
                "the file is damaged or not Fashion-MNIST"
            )
    return tensor


def _check_pair(directory: Path, images: torch.Tensor, labels: torch.Tensor, split: str) -> None:
    """Images and labels of one split must have the same count."""
    if len(images) != len(labels):
        image_path = data_files.file_in(directory, data_files.FILES[f"{split}_images"])
        label_path = data_files.file_in(directory, data_files.FILES[f"{split}_labels"])
        raise UsageError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )


def load_fashion_mnist(
    data_dir: Path | None = None,
    *,
    download: bool = True,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
) -> FashionMNIST:
    """Find (or download) and load Fashion-MNIST.

    Args:
        data_dir: directory holding the four files; None searches (see actrange.data_files).
        download: fetch the files into the cache directory when no searched place has them.
        verify: check the counts (60000/10000) and the md5 of the decompressed bytes.
        mirrors: base urls to try in order; None: ACTRANGE_MIRROR, else the published ones.

    Returns:
        The loaded set; ``source`` says where it came from.

    Raises:
        UsageError: when the files are missing and cannot be downloaded, or a file fails a check.
    """
    directory = data_files.find_data_dir(data_dir)
    source = str(directory)
    if directory is None:
        if not download:
            raise UsageError(data_files.not_found_message(download, ""))
        target = data_files.cache_dir()
        try:
            mirror = data_files.download(data_files.mirror_urls(mirrors), target)
        except UsageError as err:
            raise UsageError(data_files.not_found_message(download, str(err))) from err
        directory, source = target, f"download: {mirror}"

    tensors = {key: _load_file(directory, key, verify) for key in data_files.FILES}
    _check_pair(directory, tensors["train_images"], tensors["train_labels"], "train")
    _check_pair(directory, tensors["test_images"], tensors["test_labels"], "test")
    return FashionMNIST(**tensors, source=source)


def normalise(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Scale pixels to [0, 1], then shift and scale, exactly as torchvision's ToTensor+Normalize.

    The op order matches torchvision's, so the values agree bit for bit: with (0.5, 0.5) pixels
    0 and 255 map to -1 and 1; with (0.5, 0.1) to -5 and 5.

    Args:
        images: uint8 [N, 28, 28].
        mean: subtracted after dividing by 255.
        std: divided by last; must be positive.

    Returns:
        float32 [N, 28, 28].

    Raises:
        UsageError: when ``images`` is not uint8 or ``std`` is not positive.
    """
    if images.dtype != torch.uint8:
        raise UsageError(f"normalise expects uint8 pixels 0..255, got {images.dtype}")
    if not std > 0:
        raise UsageError(f"normalise std must be positive, got {std}")
    return images.to(torch.float32).div(255).sub(mean).div(std)
