"""Fashion-MNIST: find the four IDX files, fetch them if allowed, check them, load them as tensors.

The files are looked for, in order, in an explicit directory (argument or ACTRANGE_DATA), the
user cache (ACTRANGE_CACHE overrides it), the Debian package directory, and ./data or
./data_project2_DL in the working directory. In each place a file may be gzipped or not, and may
sit directly in the directory or in the torchvision layout ``FashionMNIST/raw/``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pooch
import torch

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


@dataclass(frozen=True)
class FileSpec:
    """One of the four Fashion-MNIST files as published.

    Attributes:
        name: the published (gzipped) file name, e.g. ``train-images-idx3-ubyte.gz``.
        gz_md5: md5 of the published .gz bytes; only downloads are checked against it.
        raw_md5: md5 of the decompressed bytes; identical for every repackaging of the data.
        count: number of images or labels the file holds.
    """

    name: str
    gz_md5: str
    raw_md5: str
    count: int

    @property
    def raw_name(self) -> str:
        """The file name without the ``.gz`` suffix."""
        return self.name.removesuffix(".gz")


FILES: dict[str, FileSpec] = {
    "train_images": FileSpec(
        "train-images-idx3-ubyte.gz",
        gz_md5="8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        raw_md5="f4a8712d7a061bf5bd6d2ca38dc4d50a",
        count=60000,
    ),
    "train_labels": FileSpec(
        "train-labels-idx1-ubyte.gz",
        gz_md5="25c81989df183df01b3e8a0aad5dffbe",
        raw_md5="9018921c3c673c538a1fc5bad174d6f9",
        count=60000,
    ),
    "test_images": FileSpec(
        "t10k-images-idx3-ubyte.gz",
        gz_md5="bef4ecab320f06d8554ea6380940ec79",
        raw_md5="8181f5470baa50b63fa0f6fddb340f0a",
        count=10000,
    ),
    "test_labels": FileSpec(
        "t10k-labels-idx1-ubyte.gz",
        gz_md5="bb300cfdad3c16e7a12a480ee83cd310",
        raw_md5="15d484375f8d13e6eb1aabb0c3f46965",
        count=10000,
    ),
}

MIRRORS: tuple[str, ...] = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://github.com/zalandoresearch/fashion-mnist/raw/master/data/fashion/",
)
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
CWD_ROOTS: tuple[str, ...] = ("data", "data_project2_DL")
TORCHVISION_SUBDIR = Path("FashionMNIST", "raw")

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIDE = 28
NUM_CLASSES = len(CLASS_NAMES)

HOW_TO_GET = (
    "get it with `apt-get install dataset-fashion-mnist`, or put the four files in a directory "
    "and pass --data DIR or set ACTRANGE_DATA, or allow the download"
)


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
# finding the files


def cache_dir() -> Path:
    """The user cache directory for downloads: ACTRANGE_CACHE if set, else pooch's os cache."""
    override = os.environ.get("ACTRANGE_CACHE")
    return Path(override) if override else Path(pooch.os_cache("actrange"))


def _file_in(directory: Path, spec: FileSpec) -> Path | None:
    """The file for ``spec`` in ``directory``, preferring the decompressed one (faster to read)."""
    for name in (spec.raw_name, spec.name):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _holding_dir(root: Path) -> Path | None:
    """``root`` or ``root/FashionMNIST/raw``, whichever holds all four files."""
    for directory in (root, root / TORCHVISION_SUBDIR):
        if all(_file_in(directory, spec) for spec in FILES.values()):
            return directory
    return None


def _default_roots() -> list[Path]:
    """The places searched when no directory is given, in order."""
    return [cache_dir(), DEBIAN_DIR, *(Path.cwd() / root for root in CWD_ROOTS)]


def find_data_dir(data_dir: Path | None = None) -> Path | None:
    """Find the directory holding the four Fashion-MNIST files.

    Args:
        data_dir: a directory to use instead of searching; ACTRANGE_DATA plays the same role
            when this is None. Its ``FashionMNIST/raw`` subdirectory is accepted too.

    Returns:
        The directory holding the files (gzipped or not), or None when no searched place has them.

    Raises:
        UsageError: when an explicit directory (argument or ACTRANGE_DATA) lacks the files.
    """
    explicit = data_dir if data_dir is not None else os.environ.get("ACTRANGE_DATA") or None
    if explicit is not None:
        found = _holding_dir(Path(explicit))
        if found is None:
            names = ", ".join(spec.name for spec in FILES.values())
            raise UsageError(
                f"data directory {explicit} does not hold the Fashion-MNIST files ({names}, "
                f"gzipped or not, directly or under {TORCHVISION_SUBDIR}/); point --data or "
                "ACTRANGE_DATA at the directory holding them, or leave both unset to search"
            )
        return found
    for root in _default_roots():
        found = _holding_dir(root)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------
# downloading


def _mirrors(mirrors: Sequence[str] | None) -> list[str]:
    """The mirror base urls to try: the argument, else ACTRANGE_MIRROR (comma-separated), else
    the published ones; each ending in '/'."""
    if mirrors is None:
        env = os.environ.get("ACTRANGE_MIRROR", "")
        mirrors = [url for url in env.split(",") if url.strip()] or list(MIRRORS)
    return [url.strip().rstrip("/") + "/" for url in mirrors]


def _download(mirrors: list[str], target: Path) -> str:
    """Fetch the four .gz files into ``target`` from the first mirror that serves them all.

    Returns:
        The url of the mirror used.

    Raises:
        UsageError: when every mirror fails; the message lists each mirror's failure.
    """
    failures = []
    for mirror in mirrors:
        try:
            for spec in FILES.values():
                pooch.retrieve(
                    mirror + spec.name,
                    known_hash=f"md5:{spec.gz_md5}",
                    fname=spec.name,
                    path=target,
                    progressbar=False,
                )
            return mirror
        # requests' errors are OSErrors; a checksum mismatch is a ValueError
        except (OSError, ValueError) as err:
            reason = " ".join(str(err).split())[:200]
            failures.append(f"{mirror}: {type(err).__name__}: {reason}")
    raise UsageError(f"download failed ({'; '.join(failures)})")


# ---------------------------------------------------------------------------------------------
# loading the set


def _load_file(directory: Path, key: str, verify: bool) -> torch.Tensor:
    """Read, parse and (when ``verify``) check count and md5 of one of the four files."""
    spec = FILES[key]
    path = _file_in(directory, spec)
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
        image_path = _file_in(directory, FILES[f"{split}_images"])
        label_path = _file_in(directory, FILES[f"{split}_labels"])
        raise UsageError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )


def _not_found_message(download: bool, reason: str) -> str:
    """One line: where we looked, why we did not download, and how to get the data."""
    looked = ", ".join(str(root) for root in _default_roots())
    not_downloaded = reason if download else "download disabled"
    return f"Fashion-MNIST not found (looked in {looked}) and {not_downloaded}; {HOW_TO_GET}"


def load_fashion_mnist(
    data_dir: Path | None = None,
    *,
    download: bool = True,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
) -> FashionMNIST:
    """Find (or download) and load Fashion-MNIST.

    Args:
        data_dir: directory holding the four files; None searches (see the module docstring).
        download: fetch the files into the cache directory when no searched place has them.
        verify: check the counts (60000/10000) and the md5 of the decompressed bytes.
        mirrors: base urls to download from, in order; None uses ACTRANGE_MIRROR or MIRRORS.

    Returns:
        The loaded set; ``source`` says where it came from.

    Raises:
        UsageError: when the files are missing and cannot be downloaded, or a file fails a check.
    """
    directory = find_data_dir(data_dir)
    source = str(directory)
    if directory is None:
        if not download:
            raise UsageError(_not_found_message(download, ""))
        target = cache_dir()
        try:
            mirror = _download(_mirrors(mirrors), target)
        except UsageError as err:
            raise UsageError(_not_found_message(download, str(err))) from err
        directory, source = target, f"download: {mirror}"

    tensors = {key: _load_file(directory, key, verify) for key in FILES}
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
