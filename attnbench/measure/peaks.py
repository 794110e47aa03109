"""Peak rates measured on the machine, once per run, for the roofline columns.

- FLOP/s per math mode (:mod:`attnbench.measure.mathmode`): a square matmul (2*n^3 FLOPs), best
  of several calls, for every mode the run's dtypes can run on: float32 gives ``fp32`` (TF32
  off) and, on CUDA devices with TF32 (compute capability 8.0 and later), ``tf32`` (TF32 on);
  float16 ``fp16``, bfloat16 ``bf16``, float64 ``fp64``. Each impl is then judged against the
  peak of the math its products run on (SDPA's fused kernels run fp32 inputs on tensor cores).
  On the CPU n grows from 1024 (512 for 16-bit dtypes) until the best of three calls takes
  ``min_call_s`` (at most 4096), with the run's thread count. On CUDA n = 8192 (4096 for
  float64), timed with CUDA events. torch's fp32 matmul precision is switched for the fp32 and
  tf32 measurements and restored; the value the points run with is recorded.
- Bytes/s: ``dst.copy_(src)`` of a buffer larger than the caches (on the CPU 64 MiB or 4x the
  last-level cache, whichever is larger; 1 GiB on CUDA), counted as read + write (2 x its
  size), best of several calls.

The CPU calibration takes well under 2 s (``budget_s`` per measurement). Result::

    {"device": "cpu", "flops_per_s_by_math": {"fp32": 1.2e11}, "flops_per_s": {"float32": 1.2e11},
     "bytes_per_s": 9.8e9, "method": {...}, "calibration_s": 0.8}

``flops_per_s`` (per dtype, at the dtype's plain math) is kept for readers of older runs.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from attnbench.measure.mathmode import fp32_matmul_precision, math_mode, set_fp32_matmul_precision
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
    import torch  # deferred: torch, kept out of importing this module (light readers of its constants)

    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b) / 1e3


CUDA_N = {"float64": 4096, "default": 8192}  # square matmul size on CUDA: long enough to reach the peak
_DTYPE_OF_MODE = {"fp64": "float64", "fp32": "float32", "tf32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def math_modes(device: str, dtypes: Iterable[str], tf32_capable: bool) -> list[str]:
    """The math modes to calibrate for ``dtypes`` on ``device`` (in a stable order)."""
    modes = []
    for name in dtypes:
        if name not in ELEMENT_BYTES:
            continue
        modes.append(math_mode(name, "cpu"))  # the dtype's plain mode
        if name == "float32" and device == "cuda" and tf32_capable:
            modes.append("tf32")
    return list(dict.fromkeys(modes))


def _matmul_rate(
    mode: str, device: str, budget_s: float, min_call_s: float, timer: Callable[[Callable[[], object]], float]
) -> tuple[float, str]:
    # deferred: torch (inputs imports it too), kept out of importing this module
    import torch

    from attnbench.measure.inputs import torch_dtype

    name = _DTYPE_OF_MODE[mode]
    dt = torch_dtype(name)
    cuda = device == "cuda"
    if cuda:
        n = CUDA_N.get(name, CUDA_N["default"])
    else:
        n = 512 if ELEMENT_BYTES[name] == 2 else 1024  # half-precision matmul is slow on many CPUs
        while n < 4096:
            a = torch.randn(n, n).to(dt)
            a @ a  # the first call pays for thread-pool start-up: not a size signal
            # best of 3: one call delayed by another process must not stop the growth early
            if min(_host_timer(functools.partial(torch.matmul, a, a)) for _ in range(3)) >= min_call_s:
                break
            n *= 2
    before = set_fp32_matmul_precision("tf32" if mode == "tf32" else "ieee") if cuda and name == "float32" else None
    try:
        a = torch.randn(n, n, device=device).to(dt)
        b = torch.randn(n, n, device=device).to(dt)
        a @ b  # warm-up (library load, autotuning)
        if cuda:
            torch.cuda.synchronize()
        best = _best_s(functools.partial(torch.matmul, a, b), budget_s, 3, timer)
    finally:
        if before is not None:
            set_fp32_matmul_precision(before)
    return 2.0 * n**3 / best, f"matmul {n}x{n}x{n} {name}, best of calls over {budget_s:g} s"


def calibrate(
    device: str, dtypes: Iterable[str] = ("float32",), budget_s: float = 0.25, min_call_s: float = 0.03
) -> dict[str, Any]:
    """Peak FLOP/s per math mode the ``dtypes`` run on, and copy bandwidth, on ``device`` (cpu or cuda)."""
    import torch  # deferred: torch, kept out of importing this module

    started = time.perf_counter()
    cuda = device == "cuda"
    timer = _cuda_timer if cuda else _host_timer
    points_prec = fp32_matmul_precision() if cuda else None  # what the points will run with
    tf32_capable = cuda and torch.cuda.get_device_capability()[0] >= 8
    by_math: dict[str, float] = {}
    method: dict[str, str] = {}
    for mode in math_modes(device, dtypes, tf32_capable):
        # method keys: flops_<dtype> for a dtype's plain math (as runs before per-mode peaks), flops_tf32
        key = "flops_tf32" if mode == "tf32" else f"flops_{_DTYPE_OF_MODE[mode]}"
        by_math[mode], method[key] = _matmul_rate(mode, device, budget_s, min_call_s, timer)
    flops = {name: by_math[math_mode(name, "cpu")] for name in dtypes if name in ELEMENT_BYTES}
    nbytes = 2**30 if cuda else max(64 * 2**20, 4 * _llc_bytes())
    if cuda:
        nbytes = min(nbytes, torch.cuda.mem_get_info()[0] // 4)
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = _best_s(lambda: dst.copy_(src), budget_s, 3, timer)
    method["bytes"] = f"copy of {nbytes / 2**20:.0f} MiB (read + write counted), best of calls over {budget_s:g} s"
    if cuda:
        method["fp32_matmul_precision"] = str(points_prec)
    else:
        method["threads"] = str(torch.get_num_threads())
    return {
        "device": device,
        "flops_per_s_by_math": by_math,
        "flops_per_s": flops,
        "bytes_per_s": 2.0 * src.numel() * 4 / best,
        "method": method,
        "calibration_s": time.perf_counter() - started,
    }
