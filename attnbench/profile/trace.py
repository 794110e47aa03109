"""Record a point's calls with torch.profiler and write the trace (Chrome trace JSON, which
Perfetto and chrome://tracing open).

Each profiled call sits in a labelled range (``attnbench: call 3 of 5``), so the trace shows
where one call ends and the next begins, and each call's time in ops can be summed exactly: a
label's total time minus its own (self) time is the self time of everything inside it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

LABEL_PREFIX = "attnbench: call "
CALL_BUDGET_MS = 1000.0  # profile about this much work by default
MIN_CALLS, MAX_CALLS = 3, 20


def choose_calls(point_ms: float, budget_ms: float = CALL_BUDGET_MS) -> int:
    """Calls to profile: about ``budget_ms`` of them, at least 3 (a median), at most 20 (a trace
    that loads quickly)."""
    if not math.isfinite(point_ms) or point_ms <= 0:
        return MIN_CALLS
    return max(MIN_CALLS, min(MAX_CALLS, math.ceil(budget_ms / point_ms)))


@dataclass
class OpEvent:
    """One op or kernel of a profiled call, as plain data: ``call`` (0-based), ``kind`` ("op":
    host times; "kernel": device time), ``name``, self and total time (µs), FLOPs."""

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


def record(fn: Callable[[], object], calls: int, device: str, with_stack: bool = False) -> Traced:
    """Profile ``calls`` calls of ``fn`` (CPU activity, and CUDA on a CUDA device) with shapes and
    FLOP counts recorded; Python stacks with ``with_stack``."""
    activities = [ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(ProfilerActivity.CUDA)
    sync: Callable[[], None] = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    with profile(activities=activities, record_shapes=True, with_flops=True, with_stack=with_stack) as prof:
        for i in range(calls):
            with record_function(f"{LABEL_PREFIX}{i + 1} of {calls}"):
                fn()
                sync()  # the call's kernels finish inside its label
    out = Traced(prof, calls, device)
    events = list(prof.events())
    labels = sorted((e for e in events if e.name.startswith(LABEL_PREFIX)), key=lambda e: e.time_range.start)
    starts = [lab.time_range.start for lab in labels]
    for e in events:
        if e.name.startswith(LABEL_PREFIX):
            continue
        i = bisect.bisect_right(starts, e.time_range.start) - 1
        if i < 0 or e.time_range.start >= labels[i].time_range.end:
            continue  # outside every call (the profiler's own start-up)
        if is_device(e):
            dur = float(e.time_range.elapsed_us())
            out.events.append(OpEvent(i, "kernel", e.name, dur, dur))
        else:
            flops = float(getattr(e, "flops", 0) or 0)
            out.events.append(OpEvent(i, "op", e.name, float(e.self_cpu_time_total), float(e.cpu_time_total), flops))
    busy = "kernel" if device == "cuda" else "op"
    for i, lab in enumerate(labels):
        out.call_ms.append(lab.cpu_time_total / 1e3)
        out.busy_ms.append(sum(e.self_us for e in out.events if e.call == i and e.kind == busy) / 1e3)
    return out


def is_device(e: Any) -> bool:
    """A device (CUDA) event: a kernel, a memcpy or a memset."""
    return str(getattr(e, "device_type", "")).endswith("CUDA")


def export(traced: Traced, path: Path) -> Path:
    """Write the Chrome trace JSON to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    traced.prof.export_chrome_trace(str(path))
    return path
