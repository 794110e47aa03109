"""Transitional: the decode report section moves into attnbench.report."""
