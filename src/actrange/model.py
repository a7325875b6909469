"""The study's CNN: its layer table, a plain nn.Module, and seeded initial parameters.

The nn.Module is the reference: the batched engine must reproduce what it computes, and its
construction under a seed defines every run's initial weights (PyTorch's default initialisation).
"""

from dataclasses import dataclass

import torch
from torch import nn

from actrange.activations import get_activation


@dataclass(frozen=True)
class LayerSpec:
    """One weighted layer. ``pad`` and ``pool`` only apply to convolutions."""

    name: str
    kind: str  # "conv" or "linear"
    fan_in: int
    fan_out: int
    pad: int = 0
    pool: bool = False


# 28x28 -> conv1 28 -> pool 14 -> conv2 14 -> pool 7 -> conv3 7 -> conv4 5 -> conv5 3: 64*3*3 = 576
LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec("conv1", "conv", 1, 8, pad=1, pool=True),
    LayerSpec("conv2", "conv", 8, 16, pad=1, pool=True),
    LayerSpec("conv3", "conv", 16, 32, pad=1),
    LayerSpec("conv4", "conv", 32, 64),
    LayerSpec("conv5", "conv", 64, 64),
    LayerSpec("lin1", "linear", 576, 64),
    LayerSpec("lin2", "linear", 64, 32),
    LayerSpec("lin3", "linear", 32, 10),
)
KERNEL = 3
FLAT_FEATURES = 576
N_PARAMS = 100_650


class StudyCNN(nn.Module):
    """The study's network with a named, switchable activation after every layer but lin3."""

    def __init__(self, activation: str = "relu") -> None:
        super().__init__()
        for spec in LAYERS:
            if spec.kind == "conv":
                layer = nn.Conv2d(spec.fan_in, spec.fan_out, KERNEL, padding=spec.pad)
            else:
                layer = nn.Linear(spec.fan_in, spec.fan_out)
            self.add_module(spec.name, layer)
        self.switch_activation(activation)

    def switch_activation(self, activation: str) -> None:
        """Use ``activation`` (a registered name) from the next forward pass on."""
        self.activation = get_activation(activation)

    def forward(
        self, images: torch.Tensor, record: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """images [B, 1, 28, 28] -> logits [B, 10]; ``record`` collects pre-activations."""
        x = images
        for spec in LAYERS:
            if spec.name == "lin1":
                x = x.flatten(1)  # [B, 576], in (channel, row, column) order
            x = getattr(self, spec.name)(x)
            if spec.name == "lin3":
                return x
            if record is not None:
                record[spec.name] = x.detach()
            x = self.activation.fn(x)
            if spec.pool:
                x = nn.functional.max_pool2d(x, 2)
        raise AssertionError("unreachable: LAYERS ends with lin3")


def initial_parameters(seed: int) -> dict[str, torch.Tensor]:
    """The parameters StudyCNN gets from PyTorch's default init under ``seed``, on the CPU.

    The global generator is forked so that a run's weights depend on its own seed only, never
    on which runs were built before it, and the caller's random state is left as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = StudyCNN()
    return {name: p.detach().clone() for name, p in model.named_parameters()}
