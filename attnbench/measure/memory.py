"""Peak memory of one call of a pass, in MiB (2^20 bytes), beyond what already existed.

CPU: the process's resident high-water mark (VmHWM) is reset through /proc/self/clear_refs,
glibc is told to serve large blocks with mmap (so freed memory really leaves the process and
a later call's peak is not hidden by reused heap), the current RSS is the baseline, one call
runs, and the peak is VmHWM minus that baseline. Inputs, the interpreter and the forward
graph of a ``bwd`` pass existed before the baseline and are not counted. Runs in a fresh
worker process per point, so nothing leaks between points.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TypeVar

from torch.profiler import ProfilerActivity, profile

T = TypeVar("T")
MIB = float(2**20)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Tell glibc to keep freed heap for reuse while a CPU point is timed; True if it could.

    By default glibc serves blocks above a sliding threshold with mmap and returns freed memory
    to the kernel, so every call of a large pass page-faults its buffers in again: at N=16384 the
    causal-product fwdbwd alternated between 22.5 and 26.5 ms with the defaults and ran at
    20-21 ms with its heap kept (docs/measurement.md, "CPU warm-up and a steady heap"). A model in training keeps
    its memory warm too. Blocks of 32 MiB and more still come from mmap. :func:`cpu_peak_mib`
    sets its own thresholds for the memory call, which runs after the timing.
    """
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, 32 * 2**20) == 1
    return libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok


def cpu_peak_mib(fn: Callable[[], T], tune_malloc: bool = True) -> tuple[float | None, str, T]:
    """(peak MiB of one ``fn()`` call beyond the baseline, method, fn's result).

    The peak is None, with the reason as method, where the kernel offers no way to measure it.
    ``tune_malloc=False`` leaves glibc's settings alone (the call is also timed: a single-call
    point); freed heap the call reuses is then not counted, a few MiB beside the GiB such a
    call allocates.
    """
    libc = _libc() if tune_malloc else None
    if libc is not None:
        libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 0)
    # No gc.collect(): the worker is a fresh fork, and collecting torch's many objects costs 0.1 s.
    if libc is not None:
        libc.malloc_trim(0)
    if not _reset_hwm():
        return None, "unavailable: /proc/self/clear_refs not writable", fn()
    base = _status_kib("VmRSS")
    result = fn()
    peak = _status_kib("VmHWM")
    if base is None or peak is None:
        return None, "unavailable: no VmRSS/VmHWM in /proc/self/status", result
    return max(0, peak - base) * 1024 / MIB, "rss-hwm", result


def allocator_peak_mib(fn: Callable[[], T]) -> tuple[float, str, T]:
    """(peak MiB of tensor memory live during one ``fn()`` call beyond what was live before it,
    "torch-allocator", fn's result), from the allocation events torch's profiler records.

    Deterministic (the same call gives the same bytes), unlike the resident high-water mark,
    but it sees only what goes through torch's allocator, not other mallocs. The CI suite uses
    it: a gate needs a number that does not move between identical runs.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak / MIB, "torch-allocator", result
