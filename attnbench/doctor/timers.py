"""Timer agreement: attnbench's timers against independent ones, on a matmul and on SDPA at two
sizes each, one check per workload with the ratio attnbench / reference.

- CPU: :func:`~attnbench.measure.timer.time_cpu` against ``torch.utils.benchmark.Timer.
  blocked_autorange``, both on one thread, within 10 %.
- CUDA: :func:`~attnbench.measure.cuda_timer.time_cuda` without the L2 flush against
  ``torch.utils.benchmark`` (warm caches, host clock around synchronised blocks), and with the
  flush against ``triton.testing.do_bench`` (cold, CUDA events; when triton is installed), within 5 %.

The two timers of a workload alternate over several rounds (which goes first swaps every round)
and each is represented by its fastest round median: a round that another process slowed down
then moves neither side. On a busy host (:mod:`attnbench.doctor.machine`) the group fails all
the same, saying so: agreement measured there proves nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.benchmark import Timer

from attnbench.doctor.machine import LoadMeter
from attnbench.doctor.result import FAIL, PASS, SKIP, Check
from attnbench.measure.cuda_timer import time_cuda
from attnbench.measure.stats import quantile
from attnbench.measure.timer import TimerConfig, time_cpu

CPU_TOLERANCE = 0.10
CUDA_TOLERANCE = 0.05
CPU_ROUNDS = 5
CUDA_ROUNDS = 3
REF_MIN_RUN_S = 0.1  # torch.utils.benchmark's blocked_autorange per round
# attnbench's timer per round: about as long as the reference, blocks of >= 10 ms on the CPU
CPU_CFG = TimerConfig(
    warmup_s=0.02, min_samples=5, min_time_s=0.1, max_time_s=0.3, target_rel_noise=0.01, block_min_s=0.01
)
CUDA_CFG = TimerConfig(warmup_s=0.05, min_samples=10, min_time_s=0.1, max_time_s=0.5, target_rel_noise=0.005)


@dataclass(frozen=True)
class Workload:
    """``make(device)`` builds the inputs and returns the zero-argument call to time."""

    name: str
    make: Callable[[str], Callable[[], object]]


def _matmul(n: int, dtype: str) -> Workload:
    def make(device: str) -> Callable[[], object]:
        a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
        b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
        return lambda: a @ b

    return Workload(f"matmul {n}x{n}x{n} {dtype}", make)


def _sdpa(b: int, h: int, n: int, d: int, dtype: str) -> Workload:
    def make(device: str) -> Callable[[], object]:
        q, k, v = (torch.randn(b, h, n, d, device=device, dtype=getattr(torch, dtype)) for _ in range(3))
        return lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True)

    return Workload(f"sdpa causal B{b} H{h} N{n} D{d} {dtype}", make)


# CPU: 0.3 to 10 ms per call on one core of a 2-core machine: long enough for the clocks, short
# enough for five rounds of both timers in a few seconds.
CPU_WORKLOADS = (
    _matmul(256, "float32"),
    _matmul(512, "float32"),
    _sdpa(1, 4, 256, 64, "float32"),
    _sdpa(1, 4, 512, 64, "float32"),
)
# CUDA: well past launch-bound (0.1 to a few ms on an A100/H100).
CUDA_WORKLOADS = (
    _matmul(4096, "float16"),
    _matmul(8192, "float16"),
    _sdpa(4, 16, 2048, 64, "bfloat16"),
    _sdpa(4, 16, 8192, 64, "bfloat16"),
)


def median_ms(samples: list[float]) -> float:
    return quantile(sorted(samples), 0.5)


def torch_benchmark_ms(fn: Callable[[], object], min_run_s: float = REF_MIN_RUN_S) -> float:
    """Median ms per call by ``torch.utils.benchmark.Timer.blocked_autorange`` (one thread)."""
    return (
        float(Timer("fn()", globals={"fn": fn}, num_threads=1).blocked_autorange(min_run_time=min_run_s).median) * 1e3
    )


def cpu_timer_ms(fn: Callable[[], object]) -> float:
    return median_ms(time_cpu(fn, CPU_CFG).samples_ms)


def cuda_timer_ms(fn: Callable[[], object], flush_l2: bool) -> float:
    return median_ms(time_cuda(fn, CUDA_CFG, flush_l2=flush_l2).samples_ms)


def do_bench_ms(bench: Callable[..., Any], fn: Callable[[], object]) -> float:
    return float(bench(fn, warmup=25, rep=100, return_mode="median"))


def triton_do_bench() -> Callable[..., Any] | None:
    """``triton.testing.do_bench``, or None without triton."""
    try:
        from triton.testing import do_bench  # optional dependency: triton (CUDA builds of torch)
    except Exception:
        return None
    return do_bench  # type: ignore[no-any-return]


def agreement(
    name: str, ours: Callable[[], float], theirs: Callable[[], float], reference: str, rounds: int, tol: float
) -> Check:
    """Alternate ``ours`` and ``theirs`` (ms per call) over ``rounds``; compare their fastest
    round medians: a pass when the ratio is within ``1 +- tol``."""
    a: list[float] = []
    b: list[float] = []
    for r in range(rounds):
        if r % 2:
            b.append(theirs())
            a.append(ours())
        else:
            a.append(ours())
            b.append(theirs())
    ratio = min(a) / min(b)
    ok = abs(ratio - 1.0) <= tol
    summary = (
        f"{name}: attnbench {min(a):.4g} ms, {reference} {min(b):.4g} ms, ratio {ratio:.3f} "
        f"({'within' if ok else 'outside'} {100 * tol:.0f} %)"
    )
    return Check(
        "timer",
        f"{name} vs {reference}",
        PASS if ok else FAIL,
        summary,
        None if ok else f"attnbench and {reference} disagree: rerun on an idle machine; if it persists, report it",
        {"attnbench_ms": a, "reference_ms": b, "ratio": ratio, "tolerance": tol, "reference": reference},
    )


def _machine_check(meter: LoadMeter, threads: int) -> Check:
    load = meter.load
    assert load is not None
    busy = load.busy_reason(threads)
    data = {"others_cores": load.others_cores, "own_share": load.own_share, "loadavg": load.loadavg, "cpus": load.cpus}
    if busy:
        return Check(
            "timer", "quiet host", FAIL, busy, "stop the other work (or run on an idle machine) and rerun", data
        )
    others = (
        f"other processes used {load.others_cores:.2f} of {load.cpus} cores" if load.others_cores is not None else ""
    )
    return Check(
        "timer", "quiet host", PASS, f"the host was quiet while timing{': ' + others if others else ''}", None, data
    )


def _mark_busy(checks: list[Check], machine: Check) -> None:
    if machine.status != FAIL:
        return
    for c in checks:
        if c.status == FAIL:
            c.summary += " (the machine looks busy: see 'quiet host')"


def check_cpu_timers(
    workloads: tuple[Workload, ...] = CPU_WORKLOADS, rounds: int = CPU_ROUNDS, tol: float = CPU_TOLERANCE
) -> list[Check]:
    """attnbench's CPU timer against torch.utils.benchmark, one thread, plus the host's load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torch.utils.benchmark's Timer(num_threads=1)
    checks = []
    try:
        with LoadMeter() as meter:
            for wl in workloads:
                fn = wl.make("cpu")
                fn()
                ours, theirs = functools.partial(cpu_timer_ms, fn), functools.partial(torch_benchmark_ms, fn)
                checks.append(agreement(wl.name, ours, theirs, "torch.utils.benchmark", rounds, tol))
    finally:
        torch.set_num_threads(threads)
    machine = _machine_check(meter, threads=1)
    _mark_busy(checks, machine)
    return [*checks, machine]


def check_cuda_timers(
    workloads: tuple[Workload, ...] = CUDA_WORKLOADS,
    rounds: int = CUDA_ROUNDS,
    tol: float = CUDA_TOLERANCE,
    device: str = "cuda",
    do_bench: Callable[..., Any] | None = None,
    use_triton: bool = True,
) -> list[Check]:
    """attnbench's CUDA timer against torch.utils.benchmark (warm) and triton's do_bench (cold).

    ``device``, ``do_bench`` and ``use_triton`` exist for tests (fakes at the torch.cuda boundary).
    """
    bench = do_bench if do_bench is not None else (triton_do_bench() if use_triton else None)
    checks = []
    with LoadMeter() as meter:
        for wl in workloads:
            fn = wl.make(device)
            warm = functools.partial(cuda_timer_ms, fn, False)
            checks.append(
                agreement(
                    f"{wl.name} warm",
                    warm,
                    functools.partial(torch_benchmark_ms, fn),
                    "torch.utils.benchmark",
                    rounds,
                    tol,
                )
            )
            if bench is not None:
                cold = functools.partial(cuda_timer_ms, fn, True)
                theirs = functools.partial(do_bench_ms, bench, fn)
                checks.append(agreement(f"{wl.name} cold", cold, theirs, "triton do_bench", rounds, tol))
    if bench is None:
        checks.append(
            Check("timer", "triton do_bench", SKIP, "triton is not installed: compared with torch.utils.benchmark only")
        )
    machine = _machine_check(meter, threads=0)  # a CUDA wait may sleep: only other processes count
    _mark_busy(checks, machine)
    return [*checks, machine]
