"""How the report, its figures and its sentences name things: activations, schedules, ranges.

One table of activation names serves them all, so a figure's legend and the verdict's sentence
spell an activation the same way.
"""

from actrange.config import format_number

ACTIVATION_NAMES = {
    "relu": "ReLU",
    "tanh": "Tanh",
    "gelu": "GELU",
    "silu": "SiLU",
    "leaky_relu": "Leaky ReLU",
    "elu": "ELU",
    "sigmoid": "Sigmoid",
    "softsign": "Softsign",
}


def display_activation(label: str) -> str:
    """A schedule, compactly, for legends and tables: "relu" -> "ReLU", "tanh>relu@5" ->
    "Tanh→ReLU@5"."""
    names, at, epoch = label.partition("@")
    shown = "→".join(ACTIVATION_NAMES.get(name, name) for name in names.split(">"))
    return f"{shown}@{epoch}" if at else shown


def display_name(label: str) -> str:
    """A schedule for a sentence: "relu" -> "ReLU", "tanh>relu@5" -> "Tanh→ReLU (switch at
    epoch 5)"."""
    if ">" in label and "@" in label:
        start, rest = label.split(">", 1)
        target, epoch = rest.split("@", 1)
        return f"{display_name(start)}→{display_name(target)} (switch at epoch {epoch})"
    return ACTIVATION_NAMES.get(label, label)


def format_range(lo: float, hi: float) -> str:
    """An input range as "[-1, 1]"."""
    return f"[{format_number(lo)}, {format_number(hi)}]"
