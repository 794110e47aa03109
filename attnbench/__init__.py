"""attnbench: benchmark and profile softmax and linear attention implementations."""

__version__ = "0.1.0"
