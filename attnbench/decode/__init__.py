"""Autoregressive decoding (issue 7): linear attention as an RNN against softmax with a KV cache
and softmax recomputing the whole prefix every step.

- :mod:`attnbench.decode.decoders`: the decoder protocol and the registry of decoders.
- :mod:`attnbench.decode.measure`: the ``decode`` pass, run by the worker.
- the report's decode section lives in :mod:`attnbench.report.decode`.
- :mod:`attnbench.decode.summary`: the decode table of the end-of-run summary.
"""
