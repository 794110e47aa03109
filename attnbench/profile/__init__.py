"""Profiling one point, and a bundle that reproduces it outside the harness.

``attnbench profile`` runs one point (of a stored run, or given on the command line) in a fresh
worker process, like any point of a run, and writes into its own directory, never into the
run's journal or tables:

::

    trace.json             torch.profiler trace (Chrome trace format: ui.perfetto.dev, chrome://tracing)
    top.csv top.json top.md  ops (and CUDA kernels) by self time per call, with FLOPs where torch counts them
    memory.png             live tensor memory during one call (CPU: torch's allocation events;
    memory.csv             CUDA: from the allocator's memory history)
    memory_snapshot.pickle CUDA only: the allocator snapshot for https://pytorch.org/memory_viz
    nsight.sh              nsys and ncu command lines that profile this point through repro/repro.py
    summary.json           the point, the measured and profiled times, the files
    repro/                 the bundle ``attnbench repro`` writes (repro.py, point.json, env.json, README.md)

Modules, one concern each: :mod:`.target` (which point, which options), :mod:`.driver` (the
parent's side: the worker, the files), :mod:`.worker` (the child process), :mod:`.trace` (the
profiler sessions), :mod:`.top` (the top table), :mod:`.memory` (the timeline and its chart),
:mod:`.nsight` (nsys and ncu lines), :mod:`.repro_script` (the standalone script, its inputs,
pass and checksums), :mod:`.bundle` (writes the repro bundle), :mod:`.links` (the report's list
of failed, slow or noisy points and their commands).

Importing this package is cheap; torch loads in the modules that need it.
"""

from __future__ import annotations

TRACE = "trace.json"
TOP_CSV = "top.csv"
TOP_JSON = "top.json"
TOP_MD = "top.md"
MEMORY_PNG = "memory.png"
MEMORY_CSV = "memory.csv"
MEMORY_SNAPSHOT = "memory_snapshot.pickle"
NSIGHT = "nsight.sh"
SUMMARY = "summary.json"
REPRO_DIR = "repro"
