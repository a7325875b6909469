"""Small builders shared by the tests: tiny data sets in memory and in the real IDX format."""

import gzip
import struct
from pathlib import Path

import torch

from actrange.data import FashionMNIST

REAL_DATA = Path("/usr/share/datasets/fashion-mnist")


def synthetic_dataset(n_train: int = 64, n_test: int = 32, seed: int = 0) -> FashionMNIST:
    """Random uint8 images whose class is readable from the mean brightness of a stripe."""
    generator = torch.Generator().manual_seed(seed)

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.randint(0, 10, (n,), generator=generator)
        images = torch.randint(0, 60, (n, 28, 28), generator=generator, dtype=torch.uint8)
        rows = (labels * 2 + 4)[:, None, None]  # class c lights rows 2c+4 .. 2c+5
        row_index = torch.arange(28)[None, :, None]
        lit = (row_index >= rows) & (row_index < rows + 2)
        return torch.where(lit, torch.tensor(250, dtype=torch.uint8), images), labels

    train_images, train_labels = split(n_train)
    test_images, test_labels = split(n_test)
    return FashionMNIST(train_images, train_labels, test_images, test_labels, "synthetic")


def write_idx(directory: Path, dataset: FashionMNIST, gz: bool = True) -> Path:
    """Write ``dataset`` as the four Fashion-MNIST IDX files (gzipped by default)."""
    directory.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": dataset.train_images,
        "train-labels-idx1-ubyte": dataset.train_labels,
        "t10k-images-idx3-ubyte": dataset.test_images,
        "t10k-labels-idx1-ubyte": dataset.test_labels,
    }
    for name, tensor in parts.items():
        if tensor.dim() == 3:
            header = struct.pack(">IIII", 2051, *tensor.shape)
        else:
            header = struct.pack(">II", 2049, tensor.shape[0])
        payload = header + tensor.to(torch.uint8).numpy().tobytes()
        if gz:
            (directory / f"{name}.gz").write_bytes(gzip.compress(payload))
        else:
            (directory / name).write_bytes(payload)
    return directory
