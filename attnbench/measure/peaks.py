"""Peak rates measured on the machine, once per run, for the roofline columns.

- FLOP/s per dtype: a square matmul (2*n^3 FLOPs), best of several calls. On the CPU n grows
  from 1024 (512 for 16-bit dtypes) until the best of three calls takes ``min_call_s`` (at most
  4096), with the run's thread count. On CUDA n = 8192 (4096 for float64), timed with CUDA
  events, under torch's current matmul precision settings (recorded: TF32 is off by default).
- Bytes/s: ``dst.copy_(src)`` of a buffer larger than the caches (on the CPU 64 MiB or 4x the
  last-level cache, whichever is larger; 1 GiB on CUDA), counted as read + write (2 x its
  size), best of several calls.

The CPU calibration takes well under 2 s (``budget_s`` per measurement). Result::

    {"device": "cpu", "flops_per_s": {"float32": 1.2e11}, "bytes_per_s": 9.8e9,
     "method": {...}, "calibration_s": 0.8}
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

from attnbench.measure.roofline import ELEMENT_BYTES


def _best_s(
    fn: Callable[[], object], budget_s: float, min_reps: int, timer: Callable[[Callable[[], object]], float]
) -> float:
    """Fastest of at least ``min_reps`` timed calls, repeating until ``budget_s`` is spent."""
    best = float("inf")
    start = time.perf_counter()
    reps = 0
    while reps < min_reps or time.perf_counter() - start < budget_s:
        best = min(best, timer(fn))
        reps += 1
    return best


def _llc_bytes() -> int:
    """The CPU's last-level cache size (from sysfs), 0 if unknown."""
    from pathlib import Path

    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            text = f.read_text().strip().upper()
            sizes.append(int(text[:-1]) * {"K": 2**10, "M": 2**20}[text[-1]] if text[-1] in "KM" else int(text))
        except (OSError, ValueError):
            continue
    return max(sizes, default=0)


def _host_timer(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _cuda_timer(fn: Callable[[], object]) -> float:
    import torch

    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / 1e3


def calibrate(
    device: str, dtypes: Iterable[str] = ("float32",), budget_s: float = 0.25, min_call_s: float = 0.03
) -> dict[str, Any]:
    """Measure peak FLOP/s for each of ``dtypes`` and copy bandwidth on ``device`` (cpu or cuda)."""
    import torch

    from attnbench.measure.inputs import torch_dtype

    started = time.perf_counter()
    cuda = device == "cuda"
    timer = _cuda_timer if cuda else _host_timer
    flops: dict[str, float] = {}
    method: dict[str, str] = {}
    for name in dict.fromkeys(dtypes):
        if name not in ELEMENT_BYTES:
            continue
        dt = torch_dtype(name)
        if cuda:
            n = 4096 if name == "float64" else 8192
        else:
            n = 512 if ELEMENT_BYTES[name] == 2 else 1024  # half-precision matmul is slow on many CPUs
            while n < 4096:
                a = torch.randn(n, n).to(dt)
                a @ a  # the first call pays for thread-pool start-up: not a size signal
                # best of 3: one call delayed by another process must not stop the growth early
                if min(_host_timer(functools.partial(torch.matmul, a, a)) for _ in range(3)) >= min_call_s:
                    break
                n *= 2
        a = torch.randn(n, n, device=device).to(dt)
        b = torch.randn(n, n, device=device).to(dt)
        a @ b  # warm-up (library load, autotuning)
        if cuda:
            torch.cuda.synchronize()
        best = _best_s(functools.partial(torch.matmul, a, b), budget_s, 3, timer)
        flops[name] = 2.0 * n**3 / best
        method[f"flops_{name}"] = f"matmul {n}x{n}x{n}, best of calls over {budget_s:g} s"
        del a, b
    nbytes = 2**30 if cuda else max(64 * 2**20, 4 * _llc_bytes())
    if cuda:
        nbytes = min(nbytes, torch.cuda.mem_get_info()[0] // 4)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = _best_s(lambda: dst.copy_(src), budget_s, 3, timer)
    method["bytes"] = f"copy of {nbytes / 2**20:.0f} MiB (read + write counted), best of calls over {budget_s:g} s"
    if cuda:
        method["allow_tf32"] = str(torch.backends.cuda.matmul.allow_tf32)
    else:
        method["threads"] = str(torch.get_num_threads())
    return {
        "device": device,
        "flops_per_s": flops,
        "bytes_per_s": 2.0 * src.numel() * 4 / best,
        "method": method,
        "calibration_s": time.perf_counter() - started,
    }
