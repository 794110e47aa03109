"""Measurement inside a worker: inputs, passes, timers, memory, correctness."""
