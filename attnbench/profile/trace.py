"""Record a point's calls with torch.profiler and write the trace (Chrome trace JSON, which
Perfetto and chrome://tracing open).

Two recordings:

- :func:`record_paired` (the top table's times): each profiled call in its own lean profiler
  session (activities only), right after a block of calls timed without the profiler. On a
  shared machine whose speed changes from one second to the next, a profiled call and its
  unprofiled neighbour see the same machine, so their medians compare.
- :func:`record` with ``detailed=True`` (the trace written, and the FLOP counts): one session
  with ``record_shapes``, ``with_flops`` and Python stacks on request. Recording shapes costs far
  more per op than the profiler itself (hundreds of microseconds per op on the 2-core machine
  with torch 2.13: a 4096-token linear-chunked fwd+bwd took 1.7x as long), so its times are
  for reading, not for summing.

Each profiled call sits in a labelled range (``attnbench: call 3 of 5``), so a trace shows
where one call ends and the next begins, and each call's ops are known exactly.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

LABEL_PREFIX = "attnbench: call "
CALL_BUDGET_MS = 1000.0  # profile about this much work by default
MIN_CALLS, MAX_CALLS = 5, 20
DETAILED_CALLS = 2  # calls in the written trace (shapes and FLOPs are the same every call)


def choose_calls(point_ms: float, budget_ms: float = CALL_BUDGET_MS) -> int:
    """Calls to profile: about ``budget_ms`` of them, at least 5 (a median), at most 20 (a trace
    that loads quickly)."""
    if not math.isfinite(point_ms) or point_ms <= 0:
        return MIN_CALLS
    return max(MIN_CALLS, min(MAX_CALLS, math.ceil(budget_ms / point_ms)))


@dataclass
class OpEvent:
    """One op or kernel of a profiled call, as plain data: ``call`` (0-based), ``kind`` ("op":
    host times; "kernel": device time; "python": a Python frame, with ``--stack``), ``name``,
    self and total time (µs), FLOPs."""

    call: int
    kind: str
    name: str
    self_us: float
    total_us: float
    flops: float = 0.0


@dataclass
class Traced:
    """A finished profile of ``calls`` calls. Per call: ``call_ms`` its wall time, ``busy_ms``
    the time spent in profiled ops (host self times summed; on CUDA the device time of its
    kernels); ``events`` every op and kernel inside a call's label."""

    prof: Any
    calls: int
    device: str
    call_ms: list[float] = field(default_factory=list)
    busy_ms: list[float] = field(default_factory=list)
    events: list[OpEvent] = field(default_factory=list)
    unprofiled_ms: list[float] = field(default_factory=list)


def _activities(device: str) -> list[ProfilerActivity]:
    return [ProfilerActivity.CPU, ProfilerActivity.CUDA] if device == "cuda" else [ProfilerActivity.CPU]


def _sync(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def record(
    fn: Callable[[], object], calls: int, device: str, detailed: bool = False, with_stack: bool = False
) -> Traced:
    """Profile ``calls`` calls of ``fn`` in one session (CPU activity, and CUDA on a CUDA device);
    ``detailed``: with shapes and FLOP counts recorded, and Python stacks with ``with_stack``."""
    sync = _sync(device)
    sync()
    with profile(
        activities=_activities(device),
        record_shapes=detailed,
        with_flops=detailed,
        with_stack=detailed and with_stack,
    ) as prof:
        for i in range(calls):
            with record_function(f"{LABEL_PREFIX}{i + 1} of {calls}"):
                fn()
                sync()  # the call's kernels finish inside its label
    out = Traced(prof, calls, device)
    _collect(out, list(prof.events()), 0)
    return out


def record_paired(fn: Callable[[], object], calls: int, device: str, block: int = 1) -> Traced:
    """``calls`` pairs of a block of ``block`` calls timed without the profiler (per-call ms in
    ``unprofiled_ms``; CUDA events on a GPU) and one call in a lean profiler session of its own,
    in alternating order (a drift of the machine's speed favours neither)."""
    sync = _sync(device)
    out = Traced(None, calls, device)
    for i in range(calls):
        if i % 2 == 0:
            out.unprofiled_ms.append(_time_block(fn, block, device))
        sync()
        with profile(activities=_activities(device)) as prof, record_function(f"{LABEL_PREFIX}{i + 1} of {calls}"):
            fn()
            sync()
        _collect(out, list(prof.events()), i)
        if i % 2 == 1:
            out.unprofiled_ms.append(_time_block(fn, block, device))
    return out


def _time_block(fn: Callable[[], object], block: int, device: str) -> float:
    """Per-call ms of ``block`` calls: CUDA events on a GPU, else the wall clock."""
    if device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(block):
            fn()
        end.record()
        end.synchronize()
        return float(start.elapsed_time(end)) / block
    t0 = time.perf_counter_ns()
    for _ in range(block):
        fn()
    return (time.perf_counter_ns() - t0) / 1e6 / block


def _collect(out: Traced, events: list[Any], first: int) -> None:
    """Add the ops and kernels inside each call label of ``events`` to ``out`` (calls numbered
    from ``first``), with each call's wall time and busy time."""
    labels = sorted((e for e in events if e.name.startswith(LABEL_PREFIX)), key=lambda e: e.time_range.start)
    starts = [lab.time_range.start for lab in labels]
    ops: list[OpEvent] = []
    for e in events:
        if e.name.startswith(LABEL_PREFIX):
            continue
        i = bisect.bisect_right(starts, e.time_range.start) - 1
        if i < 0 or e.time_range.start >= labels[i].time_range.end:
            continue  # outside every call (the profiler's own start-up)
        if is_device(e):
            dur = float(e.time_range.elapsed_us())
            ops.append(OpEvent(first + i, "kernel", e.name, dur, dur))
        else:
            # with_stack adds Python frames as events: their self time is the interpreter's
            kind = "python" if getattr(e, "is_python_function", False) else "op"
            flops = float(getattr(e, "flops", 0) or 0)
            ops.append(OpEvent(first + i, kind, e.name, float(e.self_cpu_time_total), float(e.cpu_time_total), flops))
    busy = "kernel" if out.device == "cuda" else "op"
    for i, lab in enumerate(labels):
        out.call_ms.append(lab.cpu_time_total / 1e3)
        out.busy_ms.append(sum(e.self_us for e in ops if e.call == first + i and e.kind == busy) / 1e3)
    out.events.extend(ops)


def is_device(e: Any) -> bool:
    """A device (CUDA) event: a kernel, a memcpy or a memset."""
    return str(getattr(e, "device_type", "")).endswith("CUDA")


def export(traced: Traced, path: Path) -> Path:
    """Write the Chrome trace JSON to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.prof.export_chrome_trace(str(path))
    return path
