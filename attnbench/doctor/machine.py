"""Is the host quiet while the doctor times? Other processes' CPU use over a window, from
``/proc/stat`` (all CPUs) minus this process's own CPU time (``os.times``).

On a shared machine both timers slow down by the same factor only by chance: a point timed while
another process holds the core takes up to twice as long (seen on a 2-core machine with five
other jobs), so the doctor fails its timing checks there and says the machine looks busy.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

# Thresholds: other processes may use at most this share of the machine's cores, and this process
# must get at least this share of the window as CPU time (it runs one thread while timing).
OTHERS_MAX_SHARE = 0.25
OWN_MIN_SHARE = 0.85


def _proc_stat() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of all CPUs since boot (busy counts steal), or None off Linux."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if first[0] != "cpu":
        return None
    ticks = [float(x) for x in first[1:]]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0.0)  # idle + iowait
    hz = float(os.sysconf("SC_CLK_TCK"))
    total = sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return (total - idle) / hz, total / hz


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


@dataclass(frozen=True)
class Load:
    """What the host did during a window: ``others_cores`` (CPU cores' worth used by other
    processes, None off Linux), ``own_share`` (this process's CPU time / wall time),
    ``loadavg`` (1-minute load average), ``cpus``, ``wall_s``."""

    others_cores: float | None
    own_share: float
    loadavg: float | None
    cpus: int
    wall_s: float

    def busy_reason(self, threads: int = 1) -> str | None:
        """Why the machine looks busy, in one line, or None when it looks quiet. ``threads``: the
        threads this process kept running (0: its own share is not judged)."""
        why = []
        if self.others_cores is not None and self.others_cores > OTHERS_MAX_SHARE * self.cpus:
            why.append(f"other processes used {self.others_cores:.1f} of {self.cpus} cores while timing")
        if threads and self.own_share < OWN_MIN_SHARE * threads:
            why.append(
                f"this process got {100 * self.own_share / threads:.0f} % of its core{'s' if threads > 1 else ''}"
            )
        if not why:
            return None
        load = f" (load average {self.loadavg:.1f})" if self.loadavg is not None else ""
        return "the machine looks busy: " + "; ".join(why) + load


class LoadMeter:
    """Context manager measuring :class:`Load` over its block; ``.load`` after exit."""

    def __init__(self) -> None:
        self.load: Load | None = None

    def __enter__(self) -> LoadMeter:
        self._stat0 = _proc_stat()
        self._own0 = _own_cpu_s()
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        wall = max(time.monotonic() - self._t0, 1e-9)
        own = _own_cpu_s() - self._own0
        stat1 = _proc_stat()
        others = None
        if self._stat0 is not None and stat1 is not None:
            others = max(0.0, (stat1[0] - self._stat0[0]) - own) / wall
        try:
            loadavg: float | None = os.getloadavg()[0]
        except OSError:
            loadavg = None
        self.load = Load(others, own / wall, loadavg, os.cpu_count() or 1, wall)
