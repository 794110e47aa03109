"""CPU telemetry joined to each point's timing window, as NVML telemetry is on a GPU: how much
of the machine other processes used while the point was timed, the load average and the CPU
clock. A number taken while another sweep (or a build) ran is then marked as such: the same
linear-chunked fwd+bwd point gave a median of 247 ms in one run and 51 ms in the next while
another process was busy, with nothing in the results to tell them apart.

Read at the start and the end of the window (no sampler thread: a thread polling during a CPU
timing would take CPU time from the thing timed):

- ``/proc/stat``, first line: CPU time of the whole machine since boot, in clock ticks
  (``SC_CLK_TCK``, 100 per second), split into user, nice, system, idle, iowait, irq, softirq,
  steal (guest time is already inside user and nice);
- the worker's own CPU time, every thread (``time.process_time_ns``, exact to the nanosecond);
- ``/proc/loadavg``: the 1-minute load average at the end of the window;
- the CPU clock: ``/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq`` (kHz) where cpufreq
  exists, else the ``cpu MHz`` lines of ``/proc/cpuinfo`` (a VM without cpufreq may report a
  constant nominal clock there).

Columns (None where a file is missing, e.g. off Linux; :data:`CPU_TELEMETRY_COLUMNS`):

- ``cpu_other_busy_pct``: busy time of the machine (user + nice + system + irq + softirq) minus
  the worker's own CPU time, as a percentage of all CPUs' time in the window (100 = every core
  busy with other work). It includes the parent ``attnbench run`` process and its progress
  display (a few tenths of a percent). The kernel counts /proc/stat by the tick, so a window of
  0.15 s on 2 CPUs (30 ticks) is exact to about +-2 ticks (+-7 %); longer windows are finer;
- ``cpu_self_busy_pct``: the worker's own CPU time as a percentage of all CPUs' time (a worker
  with 2 threads on 2 idle cores: near 100; a worker whose threads waited for a core: less);
- ``cpu_steal_pct``: time the hypervisor gave to other virtual machines (steal), percent;
- ``load_avg_1m``: the 1-minute load average at the end of the window (it counts the worker's
  own runnable threads once it has run for a while);
- ``cpu_mhz_mean``, ``cpu_mhz_min``: the CPU clock over all CPUs, read at both ends of the
  window;
- ``cpu_window_s``: the window's wall time.

In a container limited by cgroup quotas /proc/stat is the host's: other processes then means
the whole host's, and the percentage is of all of its CPUs.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CPU_TELEMETRY_COLUMNS = (
    "cpu_other_busy_pct",
    "cpu_self_busy_pct",
    "cpu_steal_pct",
    "load_avg_1m",
    "cpu_mhz_mean",
    "cpu_mhz_min",
    "cpu_window_s",
)


@dataclass(frozen=True)
class StatTimes:
    """The machine's CPU time since boot from /proc/stat's ``cpu`` line, in clock ticks."""

    busy: int  # user + nice + system + irq + softirq
    idle: int  # idle + iowait
    steal: int

    @property
    def total(self) -> int:
        return self.busy + self.idle + self.steal


def parse_stat(text: str) -> StatTimes | None:
    """The aggregate ``cpu`` line of /proc/stat's ``text``, or None if there is none."""
    for line in text.splitlines():
        parts = line.split()
        if not parts or parts[0] != "cpu":
            continue
        try:
            ticks = [int(x) for x in parts[1:9]] + [0] * (9 - len(parts))
        except ValueError:
            return None
        user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
        return StatTimes(busy=user + nice + system + irq + softirq, idle=idle + iowait, steal=steal)
    return None


def parse_loadavg(text: str) -> float | None:
    """The 1-minute load average, the first field of /proc/loadavg."""
    try:
        return float(text.split()[0])
    except (IndexError, ValueError):
        return None


def parse_cpuinfo_mhz(text: str) -> list[float]:
    """Every ``cpu MHz : 2596.096`` value of /proc/cpuinfo (one per logical CPU on x86)."""
    out = []
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == "cpu MHz":
            try:
                out.append(float(value))
            except ValueError:
                continue
    return out


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class Sources:
    """Where the readings come from; tests point ``root`` at a directory of fake files
    (``root/proc/stat``, ``root/proc/loadavg``, ``root/proc/cpuinfo``, ``root/sys/devices/...``)."""

    root: Path = Path("/")
    clk_tck: int = 0  # 0: os.sysconf("SC_CLK_TCK")
    own_cpu_ns: Callable[[], int] = time.process_time_ns
    monotonic: Callable[[], float] = time.monotonic

    def ticks_per_s(self) -> int:
        if self.clk_tck:
            return self.clk_tck
        try:
            return int(os.sysconf("SC_CLK_TCK"))
        except (ValueError, OSError, AttributeError):
            return 100

    def stat(self) -> StatTimes | None:
        text = _read(self.root / "proc" / "stat")
        return None if text is None else parse_stat(text)

    def loadavg(self) -> float | None:
        text = _read(self.root / "proc" / "loadavg")
        return None if text is None else parse_loadavg(text)

    def mhz(self) -> list[float]:
        """The clock of each CPU in MHz: cpufreq where present, else /proc/cpuinfo."""
        pattern = str(self.root / "sys" / "devices" / "system" / "cpu" / "cpu[0-9]*" / "cpufreq" / "scaling_cur_freq")
        freqs = []
        for path in sorted(glob.glob(pattern)):
            text = _read(Path(path))
            try:
                freqs.append(int((text or "").strip()) / 1000.0)
            except ValueError:  # missing or unreadable: that CPU has no reading
                continue
        if freqs:
            return freqs
        text = _read(self.root / "proc" / "cpuinfo")
        return parse_cpuinfo_mhz(text) if text else []


@dataclass(frozen=True)
class Snapshot:
    stat: StatTimes | None
    own_ns: int
    t: float
    mhz: tuple[float, ...]


def snapshot(src: Sources) -> Snapshot:
    """One reading of everything but the load average (read once, at the end)."""
    return Snapshot(src.stat(), src.own_cpu_ns(), src.monotonic(), tuple(src.mhz()))


def window_columns(start: Snapshot, end: Snapshot, loadavg: float | None, ticks_per_s: int) -> dict[str, Any]:
    """The columns of :data:`CPU_TELEMETRY_COLUMNS` for the window from ``start`` to ``end``."""
    cols: dict[str, Any] = dict.fromkeys(CPU_TELEMETRY_COLUMNS)
    cols["cpu_window_s"] = max(end.t - start.t, 0.0)
    cols["load_avg_1m"] = loadavg
    mhz = [*start.mhz, *end.mhz]
    if mhz:
        cols["cpu_mhz_mean"] = sum(mhz) / len(mhz)
        cols["cpu_mhz_min"] = min(mhz)
    if start.stat is not None and end.stat is not None:
        total = end.stat.total - start.stat.total
        if total > 0:
            busy = end.stat.busy - start.stat.busy
            own = (end.own_ns - start.own_ns) / 1e9 * ticks_per_s  # in ticks
            # tick-based accounting can put a little less on the machine than the worker's exact
            # time: clamp, never report negative work
            cols["cpu_other_busy_pct"] = min(max(100.0 * (busy - own) / total, 0.0), 100.0)
            cols["cpu_self_busy_pct"] = min(max(100.0 * own / total, 0.0), 100.0)
            cols["cpu_steal_pct"] = 100.0 * (end.stat.steal - start.stat.steal) / total
    return cols


class CpuWindow:
    """Context manager around one point's timing: ``with CpuWindow() as cpu: ...`` then
    ``cpu.columns()``. Never raises: a missing file leaves its columns None."""

    def __init__(self, sources: Sources | None = None) -> None:
        self.src = sources or Sources()
        self._start: Snapshot | None = None
        self._cols: dict[str, Any] = dict.fromkeys(CPU_TELEMETRY_COLUMNS)

    def __enter__(self) -> CpuWindow:
        try:
            self._start = snapshot(self.src)
        except Exception:  # telemetry never costs a point
            self._start = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._start is None:
            return
        try:
            end = snapshot(self.src)
            self._cols = window_columns(self._start, end, self.src.loadavg(), self.src.ticks_per_s())
        except Exception:
            self._cols = dict.fromkeys(CPU_TELEMETRY_COLUMNS)

    def columns(self) -> dict[str, Any]:
        """The telemetry columns of the window (all None before the block ended)."""
        return dict(self._cols)
