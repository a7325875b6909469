"""Activation functions by name, and the family each belongs to.

The family decides which health statistic is meaningful for a layer: a saturating
activation (bounded output) can saturate, a rectifying one can leave units dead.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from actrange.errors import UsageError


@dataclass(frozen=True)
class Activation:
    """A named activation.

    Attributes:
        name: the name used in configs and tables.
        fn: elementwise tensor -> tensor.
        family: "saturating" (bounded: tanh, sigmoid, softsign) or "rectifying"
            (the negative side is cut or squashed: relu and its relatives).
        bounds: (low, high) output bounds of a saturating activation, else None.
        monotone: never decreasing, so it commutes with max-pooling: pooling first gives the
            same values and gradients with a quarter of the activation work.
    """

    name: str
    fn: Callable[[torch.Tensor], torch.Tensor]
    family: str
    bounds: tuple[float, float] | None = None
    monotone: bool = True


def _leaky_relu(x: torch.Tensor) -> torch.Tensor:
    # PyTorch's default negative slope, so the name means what nn.LeakyReLU() means
    return F.leaky_relu(x, 0.01)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in [
        Activation("relu", torch.relu, "rectifying"),
        Activation("tanh", torch.tanh, "saturating", (-1.0, 1.0)),
        Activation("gelu", F.gelu, "rectifying", monotone=False),
        Activation("silu", F.silu, "rectifying", monotone=False),
        Activation("leaky_relu", _leaky_relu, "rectifying"),
        Activation("elu", F.elu, "rectifying"),
        Activation("sigmoid", torch.sigmoid, "saturating", (0.0, 1.0)),
        Activation("softsign", F.softsign, "saturating", (-1.0, 1.0)),
    ]
}


def get_activation(name: str) -> Activation:
    """Return the activation called ``name``; raise UsageError naming the allowed ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        allowed = ", ".join(sorted(ACTIVATIONS))
        raise UsageError(f"activation {name!r} is unknown; allowed: {allowed}") from None
