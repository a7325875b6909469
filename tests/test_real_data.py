"""On the real Fashion-MNIST (CI installs Debian's dataset-fashion-mnist): it loads and learns."""

import pytest
import torch

from actrange.config import PixelRange, RunConfig
from actrange.data import load_fashion_mnist, normalise
from actrange.devicedata import DeviceData
from actrange.engine import train_group
from actrange.model import LAYERS
from tests.helpers import REAL_DATA

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fashion():
    assert REAL_DATA.exists(), (
        f"{REAL_DATA} is missing: apt-get install dataset-fashion-mnist (CI installs it)"
    )
    return load_fashion_mnist(REAL_DATA, download=False)


def test_the_real_set_is_verified_and_complete(fashion):
    assert fashion.train_images.shape == (60_000, 28, 28)
    assert fashion.test_images.shape == (10_000, 28, 28)
    assert torch.bincount(fashion.train_labels).tolist() == [6000] * 10


@pytest.mark.parametrize(("mean", "std", "lo", "hi"), [(0.5, 0.5, -1, 1), (0.5, 0.1, -5, 5)])
def test_normalised_pixels_span_the_range(fashion, mean, std, lo, hi):
    values = normalise(fashion.test_images, mean, std)
    assert values.min().item() == pytest.approx(lo, abs=1e-6)
    assert values.max().item() == pytest.approx(hi, abs=1e-6)


def test_a_short_training_learns_and_records(fashion):
    run = RunConfig(
        activation="tanh",
        range=PixelRange(-1.0, 1.0),
        seed=0,
        lr=0.05,
        momentum=0.5,
        batch_size=32,
        epochs=2,
        train_subset=6000,
    )
    cpu = torch.device("cpu")
    reports = []
    state = train_group([run], DeviceData(fashion, cpu), on_epoch=lambda r, s: reports.append(r))
    assert reports[-1].test_accuracy[0] > 60.0  # chance is 10%
    assert reports[-1].train_loss[0] < reports[0].train_loss[0]

    units = {s.name: s.fan_out for s in LAYERS}
    positions = {"conv1": 784, "conv2": 196, "conv3": 49, "conv4": 25, "conv5": 9}
    for layer, samples in state.records[0].items():
        available = run.batch_size * units[layer] * positions.get(layer, 1)
        assert [tuple(s.shape) for s in samples] == [(min(5000, available),)] * 2

    # training again from the seed gives the first epoch's numbers and samples bit for bit
    again = []
    one_epoch = RunConfig(**{**run.__dict__, "epochs": 1})
    rerun = train_group(
        [one_epoch], DeviceData(fashion, cpu), on_epoch=lambda r, s: again.append(r)
    )
    assert again[0].train_loss == reports[0].train_loss
    assert torch.equal(rerun.records[0]["conv1"][0], state.records[0]["conv1"][0])
    assert repr(again[0].layer_stats) == repr(reports[0].layer_stats)
