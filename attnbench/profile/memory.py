"""Memory over one call of the pass, as a timeline and a chart.

- CPU: torch's allocation events (``profile_memory=True``), the source of
  ``[timing] memory = "allocator"`` (:func:`attnbench.measure.memory.allocator_peak_mib`): every
  allocation and free of a tensor, in time order; the live bytes beyond what existed before the
  call, and the ops running at the peak.
- CUDA: the caching allocator's memory history (``torch.cuda.memory._record_memory_history``,
  the documented way to record it), saved as a snapshot that https://pytorch.org/memory_viz
  opens; the timeline is read from the snapshot's trace of allocations and frees.
"""

from __future__ import annotations

import csv
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile, record_function

from attnbench.fmt import fmt_mib, fmt_ms

MIB = float(2**20)
MEMORY_CALL_LABEL = "attnbench: memory call"
BACKWARD_PREFIX = "autograd::engine::evaluate_function"
MAX_HISTORY_ENTRIES = 1_000_000


@dataclass
class Timeline:
    """Live tensor memory during one call: ``t_ms`` from the call's start, ``live_mib`` beyond
    what was live before it (frees of older tensors make it negative). ``during``: the ops (or
    the top stack frames) at the peak, outermost first; ``backward_ms``: when the backward began."""

    t_ms: list[float]
    live_mib: list[float]
    source: str
    call_ms: float
    during: list[str] = field(default_factory=list)
    backward_ms: float | None = None

    @property
    def peak_mib(self) -> float:
        return max([0.0, *self.live_mib])

    @property
    def peak_t_ms(self) -> float:
        if not self.live_mib or self.peak_mib <= 0:
            return 0.0
        return self.t_ms[self.live_mib.index(self.peak_mib)]

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "peak_mib": self.peak_mib,
            "peak_at_ms": self.peak_t_ms,
            "call_ms": self.call_ms,
            "during": self.during,
            "backward_ms": self.backward_ms,
            "events": len(self.t_ms),
        }


def cpu_timeline(fn: Callable[[], object]) -> Timeline:
    """One call of ``fn`` with torch's allocation events recorded."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof, record_function(MEMORY_CALL_LABEL):
        fn()
    return timeline_from_events(_kineto(prof))


@dataclass
class Event:
    """A kineto event, as plain data: name, start and duration in ns, bytes (memory events)."""

    name: str
    start_ns: int
    dur_ns: int
    nbytes: int = 0


def _kineto(prof: Any) -> list[Event]:
    out = []
    for e in prof.profiler.kineto_results.events():
        mem = e.name() == "[memory]"
        out.append(
            Event(e.name(), int(e.start_ns()), 0 if mem else int(e.duration_ns()), int(e.nbytes()) if mem else 0)
        )
    return out


def timeline_from_events(events: list[Event]) -> Timeline:
    """The timeline of the ``[memory]`` events (sorted by time, as allocator_peak_mib sorts them)
    inside the memory call's label; ``during`` are the ops whose span holds the peak."""
    label = next((e for e in events if e.name == MEMORY_CALL_LABEL), None)
    t0 = label.start_ns if label else min((e.start_ns for e in events), default=0)
    end = t0 + label.dur_ns if label else max((e.start_ns + e.dur_ns for e in events), default=t0)
    mem = sorted((e for e in events if e.name == "[memory]"), key=lambda e: e.start_ns)
    t, live, level = [0.0], [0.0], 0
    for e in mem:
        level += e.nbytes
        t.append((e.start_ns - t0) / 1e6)
        live.append(level / MIB)
    t.append((end - t0) / 1e6)
    live.append(level / MIB)
    ops = [e for e in events if e.name not in ("[memory]", MEMORY_CALL_LABEL) and e.dur_ns > 0]
    tl = Timeline(t, live, "torch allocator events", (end - t0) / 1e6)
    if tl.peak_mib > 0:
        at = t0 + tl.peak_t_ms * 1e6
        inside = sorted(
            (e for e in ops if e.start_ns <= at <= e.start_ns + e.dur_ns), key=lambda e: (e.start_ns, -e.dur_ns)
        )
        tl.during = _outer_inner([e.name for e in inside])
    bwd = [e.start_ns for e in ops if e.name.startswith(BACKWARD_PREFIX)]
    tl.backward_ms = (min(bwd) - t0) / 1e6 if bwd else None
    return tl


def _outer_inner(names: list[str]) -> list[str]:
    """The outermost and the innermost op (one name when they are the same)."""
    if not names:
        return []
    return [names[0]] if names[0] == names[-1] else [names[0], names[-1]]


def cuda_timeline(fn: Callable[[], object], snapshot_path: Path) -> Timeline:
    """One call of ``fn`` with the CUDA allocator's history recorded; the snapshot is pickled to
    ``snapshot_path`` (drag it onto https://pytorch.org/memory_viz)."""
    history = torch.cuda.memory._record_memory_history  # documented in torch_cuda_memory.html
    torch.cuda.synchronize()
    history(max_entries=MAX_HISTORY_ENTRIES)
    try:
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        call_ms = (time.perf_counter() - t0) * 1e3
        snapshot = torch.cuda.memory._snapshot()
    finally:
        history(enabled=None)
    snapshot_path.parent.mkdir(parents=True, exist_ok=True)
    with open(snapshot_path, "wb") as f:
        pickle.dump(snapshot, f)
    return timeline_from_snapshot(snapshot, torch.cuda.current_device(), call_ms)


def timeline_from_snapshot(snapshot: dict[str, Any], device: int = 0, call_ms: float | None = None) -> Timeline:
    """The timeline of a memory snapshot's trace on ``device``: ``alloc`` adds a block's size,
    ``free_completed`` removes it; time from the first entry's ``time_us`` (or the entry's
    index when the snapshot has no times)."""
    traces = snapshot.get("device_traces") or []
    entries = traces[device] if device < len(traces) else []
    timed = bool(entries) and all("time_us" in e for e in entries)
    t0 = entries[0]["time_us"] if timed else 0
    t, live, level = [0.0], [0.0], 0
    peak, peak_frames = 0, list[dict[str, Any]]()
    for i, e in enumerate(entries):
        action = e.get("action")
        if action == "alloc":
            level += int(e.get("size", 0))
        elif action == "free_completed":
            level -= int(e.get("size", 0))
        else:
            continue
        t.append((e["time_us"] - t0) / 1e3 if timed else float(i))
        live.append(level / MIB)
        if level > peak:
            peak, peak_frames = level, e.get("frames") or []
    end = t[-1] if call_ms is None else max(t[-1], call_ms)
    t.append(end)
    live.append(level / MIB)
    during = [f"{f.get('name')} ({Path(str(f.get('filename', ''))).name}:{f.get('line')})" for f in peak_frames[:2]]
    source = "CUDA allocator history" + ("" if timed else " (event order, no times)")
    return Timeline(t, live, source, end, during)


def write_csv(tl: Timeline, path: Path) -> Path:
    """``t_ms,live_mib`` per event."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["t_ms", "live_mib"])
        w.writerows(zip(tl.t_ms, tl.live_mib, strict=True))
    return path


def plot(tl: Timeline, path: Path, title: str) -> Path:
    """A step chart of live memory against time, the peak marked and named, the backward shaded."""
    import matplotlib  # deferred: matplotlib, only for the chart

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # deferred: matplotlib, only for the chart

    from attnbench.report.style import literal  # deferred: loads seaborn and pandas, only for the chart

    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=120)
    try:
        ax.step(tl.t_ms, tl.live_mib, where="post", color="#1f77b4", lw=1.2)
        ax.fill_between(tl.t_ms, tl.live_mib, step="post", color="#1f77b4", alpha=0.15, lw=0)
        if tl.backward_ms is not None:
            ax.axvspan(tl.backward_ms, tl.call_ms, ymax=0.04, color="#ff7f0e", alpha=0.5, lw=0)
            ax.text(
                tl.backward_ms, 0.05, " backward →", transform=ax.get_xaxis_transform(), fontsize=8, color="#c05a00"
            )
        if tl.peak_mib > 0:
            text = f"peak {fmt_mib(tl.peak_mib)} at {fmt_ms(tl.peak_t_ms)}"
            if tl.during:
                text += "\n" + literal(" > ".join(tl.during))[:90]
            ax.plot([tl.peak_t_ms], [tl.peak_mib], "o", color="#d62728", ms=4)
            right = tl.peak_t_ms > 0.6 * max(tl.call_ms, 1e-9)  # near the right edge: write it to the left
            ax.annotate(
                text,
                xy=(tl.peak_t_ms, tl.peak_mib),
                xytext=(-8 if right else 8, -4),
                textcoords="offset points",
                fontsize=8,
                va="top",
                ha="right" if right else "left",
                bbox={"boxstyle": "round,pad=0.2", "fc": "white", "ec": "none", "alpha": 0.85},
            )
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlabel("time since the call began (ms)" if "no times" not in tl.source else "allocator event")
        ax.set_ylabel("live tensor memory (MiB)")
        ax.set_title(literal(title), fontsize=9, loc="left")
        ax.margins(x=0.01)
        ax.text(1.0, -0.2, tl.source, transform=ax.transAxes, ha="right", fontsize=7, color="grey")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
