"""The skeleton every pass shares: resolve the impl and decide whether the point can run, time
it (and measure its memory), send the timing ahead, then check correctness; every exception
becomes the point's status, never the worker's crash.

A pass is a :class:`PassMeasure`: :meth:`~PassMeasure.resolve` (which impl, why it cannot run),
:meth:`~PassMeasure.measure` (inputs, timing, memory: columns and samples) and
:meth:`~PassMeasure.check` (correctness columns). :func:`run_pass` drives them in that order.
The kernel pass (fwd, bwd, fwdbwd) and the decode pass are its two implementations.
"""

from __future__ import annotations

import os
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from attnbench.impls.registry import ImplSpec
from attnbench.measure.cuda_memory import cuda_peak_columns
from attnbench.measure.memory import MIB, allocator_peak_mib, cpu_peak_mib
from attnbench.point import Point, Record, RunOptions, Status

T = TypeVar("T")
Send = Callable[[Record], None]


@dataclass
class Measured:
    """What :meth:`PassMeasure.measure` produced: results columns, per-call (or per-step) ms
    samples, decode steps, and pass-specific state the check needs (``ctx``)."""

    row: dict[str, Any]
    samples: list[float] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    ctx: Any = None


class PassMeasure(ABC):
    """One kind of pass (see the module docstring)."""

    @abstractmethod
    def resolve(self, point: Point) -> tuple[ImplSpec, dict[str, Any]]:
        """(the impl spec whose family/reference/limits apply, extra identity columns);
        raises UserError-like exceptions for unknown names."""

    def skip_reason(self, spec: ImplSpec, point: Point, options: RunOptions) -> str | None:
        """Why ``point`` cannot run here (device, dtype, mode, size), or None."""
        reason = spec.unavailable_reason(point.device) or spec.skip_reason(point.as_mapping())
        if reason is None and spec.est_bytes is not None:
            need, have = spec.est_bytes(point.as_mapping()), available_bytes(point.device)
            if have is not None and need > 0.8 * have:
                reason = (
                    f"too large: needs about {need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB available on {point.device}"
                )
        return reason

    @abstractmethod
    def measure(self, spec: ImplSpec, point: Point, params: dict[str, Any], options: RunOptions) -> Measured:
        """Inputs, timing and memory of ``point``."""

    @abstractmethod
    def check(
        self, spec: ImplSpec, point: Point, params: dict[str, Any], options: RunOptions, measured: Measured
    ) -> dict[str, Any]:
        """Correctness columns (reference, err_*, tolerance, correct, correctness_error)."""


def run_pass(measure: PassMeasure, point: Point, options: RunOptions, send: Send | None = None) -> Record:
    """Measure ``point`` with ``measure``; ``send`` gets the timing (``final=False``) before the
    correctness check runs, so a check that hangs or crashes cannot cost the timing."""
    started = time.perf_counter()
    row: dict[str, Any] = {"status": Status.OK.value, "error": None, "server_pid": os.getppid()}
    threads = options.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    row["threads"] = threads
    try:
        spec, ident = measure.resolve(point)
        row.update(ident, family=str(spec.family))
        reason = measure.skip_reason(spec, point, options)
    except Exception as exc:
        row.update(status=Status.ERROR.value, error=one_line(exc))
        return Record(row)
    if reason is not None:
        row.update(status=Status.SKIPPED.value, error=reason)
        return Record(row)
    params = {**spec.params, **point.params}
    try:
        measured = measure.measure(spec, point, params, options)
    except Exception as exc:
        row.update(status=Status.OOM.value if is_oom(exc) else Status.ERROR.value, error=one_line(exc))
        row["traceback"] = traceback.format_exc(limit=8)
        return Record(row)
    row.update(measured.row)
    row["wall_s"] = time.perf_counter() - started
    if send is not None:
        send(Record(dict(row), list(measured.samples), list(measured.steps), final=False))
    try:
        row.update(measure.check(spec, point, params, options, measured))
    except Exception as exc:
        # a check that could not run is not a failed check: the verdict stays unknown
        row.update(correct=None, correctness_error=f"check could not run: {one_line(exc)}")
    row["wall_s"] = time.perf_counter() - started
    return Record(row, measured.samples, measured.steps)


def available_bytes(device: str) -> int | None:
    """Memory free for a point on ``device`` (CUDA: free device memory; CPU: MemAvailable)."""
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def is_oom(exc: BaseException) -> bool:
    """An out-of-memory failure of torch, the allocator or the C++ runtime."""
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    msg = str(exc).lower()
    return "out of memory" in msg or "can't allocate memory" in msg or "failed to allocate" in msg


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, at most 500 characters."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def peak_columns(device: str, fn: Callable[[], T], method: str = "rss") -> tuple[dict[str, Any], T]:
    """(memory columns, fn's result) for one call of ``fn``; on the CPU ``method`` is "rss"
    (resident high-water mark) or "allocator" (torch's allocation events)."""
    if device == "cuda":
        return cuda_peak_columns(fn)
    peak, used, result = allocator_peak_mib(fn) if method == "allocator" else cpu_peak_mib(fn)
    return {"peak_mib": peak, "mem_method": used}, result


__all__ = ["MIB", "Measured", "PassMeasure", "available_bytes", "is_oom", "one_line", "peak_columns", "run_pass"]
