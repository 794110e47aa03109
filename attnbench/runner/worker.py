"""What runs inside one worker process: measure a single point, send its timing, then its record.

Imported by the fork server ahead of time (so each worker starts with torch loaded); the
measurement itself happens in a fresh child per point, so an OOM, a crash or a hang costs
one row and peak memory is measured without leftovers from other points.
"""

from __future__ import annotations

import contextlib
import traceback
from typing import Any

import torch
import torch._inductor.standalone_compile  # noqa: F401  (the profiler's first use imports it: 1.3 s per worker)
import torch.fx.experimental.symbolic_shapes  # noqa: F401  (autograd.grad imports it lazily: 0.3 s per worker)

from attnbench.impls import registry
from attnbench.impls.file_impls import load_file_impls
from attnbench.measure.memory import keep_freed_memory
from attnbench.measure.passes import measure_point
from attnbench.measure.passes.base import is_oom, one_line
from attnbench.point import Point, Record, RunOptions, Status

registry.ensure_loaded()  # import the impls (and plugins) once, in the fork server
if torch.cuda.is_initialized():  # a forked child of an initialised CUDA context cannot use the GPU
    raise RuntimeError("attnbench's fork server initialised CUDA while preloading; workers could not use the GPU")


def main(point: Point, options: RunOptions, conn: Any) -> None:
    """Worker process entry: measure, send the timing ahead of the check, then the record."""
    try:
        load_file_impls(options.impl_files)  # `--impl file.py:function`: not in the fork server
        if point.device == "cpu":
            keep_freed_memory()  # timed calls reuse warm heap instead of faulting it in again
        record = measure_point(point, options, send=conn.send)
    except BaseException as exc:  # report anything, even KeyboardInterrupt, as this point's row
        status = Status.OOM if is_oom(exc) else Status.ERROR
        record = Record({"status": status.value, "error": one_line(exc), "traceback": traceback.format_exc(limit=8)})
    with contextlib.suppress(OSError):  # BrokenPipeError: the main process stopped listening
        conn.send(record)
        conn.close()
