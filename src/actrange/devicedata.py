"""The data set held on the training device, normalised once per pixel range.

Batches are then index gathers: no per-sample work, no loader processes competing with the
model for the cores.
"""

import torch

from actrange.config import PixelRange
from actrange.data import FashionMNIST, normalise


class DeviceData:
    """Train and test images on ``device``, one normalised copy per pixel range in use.

    ``train_images`` is [R, N, 28, 28] float32 for the R ranges registered so far, in the order
    of :meth:`range_indices`; ``train_labels`` is [N] int64; the same for the test set.
    """

    def __init__(self, dataset: FashionMNIST, device: torch.device) -> None:
        self.device = device
        self.dataset = dataset
        self.train_labels = dataset.train_labels.to(device)
        self.test_labels = dataset.test_labels.to(device)
        self._ranges: list[PixelRange] = []
        self.train_images = torch.empty(0, *dataset.train_images.shape, device=device)
        self.test_images = torch.empty(0, *dataset.test_images.shape, device=device)

    def range_indices(self, ranges: list[PixelRange]) -> torch.Tensor:
        """Index [len(ranges)] into the range axis, normalising any range not seen before."""
        for pixel_range in ranges:
            if pixel_range not in self._ranges:
                self._add_range(pixel_range)
        return torch.tensor([self._ranges.index(r) for r in ranges], device=self.device)

    def _add_range(self, pixel_range: PixelRange) -> None:
        # the same operations as ToTensor + Normalize, so values match the study's pipeline
        mean, std = pixel_range.mean, pixel_range.std
        train = normalise(self.dataset.train_images.to(self.device), mean, std)  # [N, 28, 28]
        test = normalise(self.dataset.test_images.to(self.device), mean, std)
        self.train_images = torch.cat([self.train_images, train[None]])
        self.test_images = torch.cat([self.test_images, test[None]])
        self._ranges.append(pixel_range)

    def shuffled_indices(self, rngs: list[torch.Generator], subset: int) -> torch.Tensor:
        """One fresh permutation of the first ``subset`` training images per generator: [G, N]."""
        n = min(subset, self.train_labels.shape[0])
        orders = [torch.randperm(n, generator=rng) for rng in rngs]
        return torch.stack(orders).to(self.device)
