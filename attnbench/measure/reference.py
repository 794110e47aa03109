"""The machine reference and the allocator state of one worker, for ``attnbench compare``.

Three things a comparison between runs needs to know about the worker process that measured a
point, neither of which the code under test can change:

* **The machine reference** (``ref_ms``): a 192 x 192 float32 matrix product timed with the
  point's own clock in the same worker, six samples before and six after the point's timing.
  It is torch, not attnbench code and not an impl, so a regression of an impl (or of every
  impl) leaves it where it was, while a slower machine moves it. The gate takes the shift
  between two runs from it instead of from the points under test (docs/ci.md). A 4 MiB copy
  is timed beside it (``ref_copy_ms``) for diagnosis only: over pairs of ci runs on a loaded
  machine it moved by -19 % to +22 % while the points' typical shift moved by +1 % to +5 % and
  the matmul's by -4 % to +5 %.

* **The cost of a page fault** (``ref_fault_us``): 1 MiB of fresh pages written once, per
  page; with the faults per call below it says how much of a round's time its faults cost.

* **Page faults per call** (``faults_per_call``): minor page faults per call of the pass
  while it was timed (``getrusage`` at the ends of the timer's timed window: the warm-up
  calls, which touch the buffers for the first time, are not counted).
  This is what a slow process state is on a CPU: glibc serves a large temporary (naive
  softmax's 4 MiB score matrices at N=512) either from memory it keeps, or from memory it
  hands back to the kernel at every free and faults in again, zeroed, at the next call. Which
  one depends on the history of the process's heap (glibc's dynamic mmap and trim
  thresholds), so it is a state that lasts the whole process and differs between processes.
  Measured on the 2-core development machine: naive softmax forward at N=512 ran at
  5.5-6.3 ms with 0 faults per call and at 11.2-14.6 ms with 3,040 (docs/ci.md). The gate
  compares rounds in the same fault state.

All are measured on the CPU only (None on a GPU: the reference would need the device's own
clock, and the CUDA allocator keeps its blocks). The buffers live outside glibc's heap, so that
measuring them does not move the point's own fault state.
"""

from __future__ import annotations

import math
import mmap
import resource
import time
from collections.abc import Callable
from typing import Any

import torch

MM_SIZE = 192  # a 192 x 192 float32 product: 14 MFLOP, about 0.3 ms, fits a core's L2
COPY_MIB = 4  # bigger than a core's L2 (1-2 MiB on current x86), well inside a shared L3
SAMPLES_EACH = 6  # reference samples before and after the point's timing (12 in all)

FAULT_PAGES = 256  # pages faulted in per probe of the fault cost (1 MiB)
FAULT_PROBES = 2  # probes before and after the point's timing (4 in all)

REFERENCE_COLUMNS = ("ref_ms", "ref_mm_ms", "ref_copy_ms", "ref_fault_us", "faults_per_call")


def _buffer(*shape: int) -> torch.Tensor:
    """A float32 tensor in memory mapped for it alone, outside glibc's heap: the reference must
    not move where the point's own buffers fall (its fault state, above)."""
    n = math.prod(shape)
    return torch.frombuffer(mmap.mmap(-1, 4 * n), dtype=torch.float32).view(*shape)


class Reference:
    """The fixed workload of one worker; :meth:`sample` before and after the point's timing."""

    def __init__(self, clock: Callable[[], int]):
        gen = torch.Generator().manual_seed(1234)
        self.clock = clock
        self.a, self.b, self.out = _buffer(MM_SIZE, MM_SIZE), _buffer(MM_SIZE, MM_SIZE), _buffer(MM_SIZE, MM_SIZE)
        self.src, self.dst = _buffer(COPY_MIB * 2**18), _buffer(COPY_MIB * 2**18)  # float32: 2**18 per MiB
        for t in (self.a, self.b, self.src):
            t.normal_(generator=gen)  # in place: a temporary would go through glibc
        self.mm: list[float] = []
        self.copy: list[float] = []
        self.fault: list[float] = []
        torch.mm(self.a, self.b, out=self.out)  # warm: first calls set up the BLAS and touch the pages
        self.dst.copy_(self.src)

    def sample(self, n: int = SAMPLES_EACH) -> None:
        """Time ``n`` more samples of each part (ms per call)."""
        for _ in range(n):
            t0 = self.clock()
            torch.mm(self.a, self.b, out=self.out)
            t1 = self.clock()
            self.dst.copy_(self.src)
            t2 = self.clock()
            self.mm.append((t1 - t0) / 1e6)
            self.copy.append((t2 - t1) / 1e6)
        for _ in range(FAULT_PROBES):
            self.fault.append(fault_cost_us(self.clock))

    def columns(self) -> dict[str, Any]:
        """``ref_mm_ms`` and ``ref_copy_ms`` (medians), ``ref_fault_us``; ``ref_ms``, the one the
        gate uses, is the matmul's (see the module docstring)."""
        if not self.mm:
            return dict.fromkeys(REFERENCE_COLUMNS[:4])
        mm, cp = _median(self.mm), _median(self.copy)
        return {"ref_ms": mm, "ref_mm_ms": mm, "ref_copy_ms": cp, "ref_fault_us": _median(self.fault)}


def fault_cost_us(clock: Callable[[], int], pages: int = FAULT_PAGES) -> float:
    """Microseconds per minor page fault: ``pages`` fresh anonymous pages (mapped for this alone,
    outside glibc's heap) written once each, which the kernel faults in and zeroes."""
    page = mmap.PAGESIZE
    buf = mmap.mmap(-1, pages * page)
    try:
        t0 = clock()
        buf[::page] = b"\1" * pages
        return (clock() - t0) / 1e3 / pages
    finally:
        buf.close()


def minor_faults() -> int:
    """Minor page faults of this process so far (``getrusage``)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class WorkerProbe:
    """What a worker measures around a point's timing for the gate: the reference before and
    after, and the page faults of the timed calls.

    ``before()`` samples the reference; :meth:`window_start` and :meth:`window_end` are called by
    the timer at the ends of its timed window (after its warm-up: the first touch of the
    buffers and glibc raising its mmap threshold after the first free are not the state), so no
    call is added to the point's; ``after(calls)`` divides the faults of the window by the
    ``calls`` made in it, samples the reference again, and returns the columns."""

    def __init__(self, clock: Callable[[], int]):
        self.ref = Reference(clock)
        self.faults0: int | None = None
        self.faults = 0

    def before(self) -> None:
        self.ref.sample()

    def window_start(self) -> None:
        self.faults0 = minor_faults()

    def window_end(self) -> None:
        if self.faults0 is not None:
            self.faults = minor_faults() - self.faults0

    def after(self, calls: int) -> dict[str, Any]:
        self.ref.sample()
        per_call = self.faults / max(calls, 1) if self.faults0 is not None else None
        return {**self.ref.columns(), "faults_per_call": per_call}


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def clock_for(name: str) -> Callable[[], int]:
    """The nanosecond clock of a suite's ``clock`` setting (``process`` or ``wall``)."""
    return time.process_time_ns if name == "process" else time.perf_counter_ns
