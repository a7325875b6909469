"""actrange: how the input pixel range and the activation function interact in a small CNN."""

__version__ = "0.1.0"
