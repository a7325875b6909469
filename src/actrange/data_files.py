"""Where the four Fashion-MNIST files are: as published, found on this machine, or downloaded.

The files are looked for, in order, in an explicit directory (argument or ACTRANGE_DATA), the
user cache (ACTRANGE_CACHE overrides it), the Debian package directory, and ./data or
./data_project2_DL in the working directory. In each place a file may be gzipped or not, and may
sit directly in the directory or in the torchvision layout ``FashionMNIST/raw/``. Downloads are
checked against the published md5 of the .gz bytes. Nothing here reads a file's content, so
nothing here changes a run's numbers: actrange.data checks what it reads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pooch

from actrange.errors import UsageError


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

HOW_TO_GET = (
    "get it with `apt-get install dataset-fashion-mnist`, or put the four files in a directory "
    "and pass --data DIR or set ACTRANGE_DATA, or allow the download"
)


# ---------------------------------------------------------------------------------------------
# finding the files


def cache_dir() -> Path:
    """The user cache directory for downloads: ACTRANGE_CACHE if set, else pooch's os cache."""
    override = os.environ.get("ACTRANGE_CACHE")
    return Path(override) if override else Path(pooch.os_cache("actrange"))


def file_in(directory: Path, spec: FileSpec) -> Path | None:
    """The file for ``spec`` in ``directory``, preferring the decompressed one (faster to read)."""
    for name in (spec.raw_name, spec.name):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    return None


def _holding_dir(root: Path) -> Path | None:
    """``root`` or ``root/FashionMNIST/raw``, whichever holds all four files."""
    for directory in (root, root / TORCHVISION_SUBDIR):
        if all(file_in(directory, spec) for spec in FILES.values()):
            return directory
    return None


def default_roots() -> list[Path]:
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
    for root in default_roots():
        found = _holding_dir(root)
        if found is not None:
            return found
    return None


# ---------------------------------------------------------------------------------------------
# downloading and, when nothing is found, saying how to get the files


def mirror_urls(mirrors: Sequence[str] | None) -> list[str]:
    """The mirror base urls to try: the argument, else ACTRANGE_MIRROR (comma-separated), else
    the published ones; each ending in '/'."""
    if mirrors is None:
        env = os.environ.get("ACTRANGE_MIRROR", "")
        mirrors = [url for url in env.split(",") if url.strip()] or list(MIRRORS)
    return [url.strip().rstrip("/") + "/" for url in mirrors]


def download(mirrors: list[str], target: Path) -> str:
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


def not_found_message(download: bool, reason: str) -> str:
    """One line: where we looked, why we did not download, and how to get the data."""
    looked = ", ".join(str(root) for root in default_roots())
    not_downloaded = reason if download else "download disabled"
    return f"Fashion-MNIST not found (looked in {looked}) and {not_downloaded}; {HOW_TO_GET}"
