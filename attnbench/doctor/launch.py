"""Launch overhead: the host's cost of one torch op on a one-element tensor (on CUDA: one kernel
launch, about the cheapest kernel torch can start), and which of a suite's shortest points are
launch-bound (the host needs longer to enqueue a call than the device to run it, so in a loop the
point runs at the host's pace and its device time says little about the impl).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from attnbench.doctor.result import PASS, SKIP, WARN, Check
from attnbench.impls import registry
from attnbench.measure.cuda_timer import time_cuda
from attnbench.measure.inputs import make_inputs, make_pass
from attnbench.measure.stats import quantile
from attnbench.measure.timer import TimerConfig
from attnbench.point import Pass, Point
from attnbench.suite import expand, load_suite

LAUNCHES = 2000
SHORT_CFG = TimerConfig(warmup_s=0.02, min_samples=5, min_time_s=0.05, max_time_s=0.3, target_rel_noise=0.02)


def empty_op_overhead(device: str, launches: int = LAUNCHES) -> dict[str, float]:
    """``host_us``: host time per op of ``launches`` back-to-back ``x.add_(1)`` on a one-element
    tensor; on CUDA also ``device_us``: event time per op over the same loop (the device's pace
    when the host is the bottleneck: launch overhead is max(host, device) per kernel)."""
    x = torch.zeros(1, device=device)
    for _ in range(100):
        x.add_(1)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    for _ in range(launches):
        x.add_(1)
    host = time.perf_counter() - t0
    out = {"host_us": host / launches * 1e6}
    if cuda:
        end.record()
        end.synchronize()
        out["device_us"] = start.elapsed_time(end) / launches * 1e3
    return out


def check_launch_overhead(device: str) -> Check:
    got = empty_op_overhead(device)
    if device == "cuda":
        summary = (
            f"one-element torch op: {got['host_us']:.1f} us on the host, {got['device_us']:.1f} us apart on the device: "
            "a call of k kernels that runs shorter than k times this is launch-bound"
        )
    else:
        summary = (
            f"one-element torch op: {got['host_us']:.2f} us of dispatch on the host (part of every CPU call's time)"
        )
    return Check("launch", "launch overhead", PASS, summary, None, got)


def short_points(suite: str, device: str) -> list[Point]:
    """The shortest point (smallest N, then smallest B*H) of each impl and kernel pass of ``suite``
    on ``device`` that is not skipped."""
    points = [p for p in expand(load_suite(suite), device, {}) if p.pass_ is not Pass.DECODE and not p.skip]
    best: dict[tuple[str, str], Point] = {}
    for p in points:
        key = (p.impl, p.pass_.value)
        if key not in best or (p.N, p.B * p.H) < (best[key].N, best[key].B * best[key].H):
            best[key] = p
    return [best[k] for k in sorted(best)]


def measure_short_point(point: Point, device: str) -> dict[str, Any]:
    """time_cuda of the point's pass (warm, no flush): device ms, host ms per call, launch-bound."""
    spec = registry.get(point.impl)
    why = spec.unavailable_reason("cuda") or spec.skip_reason(point.as_mapping())
    if why:
        return {"skipped": why}
    params = {**spec.params, **point.params}
    fn = make_pass(spec.fn, make_inputs(point, device), point, params)
    res = time_cuda(fn, SHORT_CFG, flush_l2=False, pass_name=point.pass_.value)
    return {
        "device_ms": quantile(sorted(res.samples_ms), 0.5),
        "host_ms": res.extra["host_overhead_ms"],
        "launch_bound": bool(res.extra["launch_bound"]),
    }


def check_short_points(
    suite: str,
    device: str,
    measure: Callable[[Point, str], dict[str, Any]] = measure_short_point,
    tensor_device: str | None = None,
) -> Check:
    """Which of ``suite``'s shortest CUDA points are launch-bound (a warning: their time is the
    host's). ``measure``/``tensor_device`` exist for tests."""
    if device != "cuda":
        return Check(
            "launch",
            f"short points of {suite}",
            SKIP,
            "CPU: no kernel launches; dispatch is part of what a CPU caller pays",
        )
    rows = []
    for p in short_points(suite, device):
        try:
            got = measure(p, tensor_device or device)
        except Exception as exc:  # a broken impl is the kernels check's business
            got = {"skipped": f"{type(exc).__name__}: {exc}"}
        rows.append({"point_id": p.point_id, **got})
    bound = [r for r in rows if r.get("launch_bound")]
    timed = [r for r in rows if "device_ms" in r]
    data = {"points": rows}
    if not bound:
        return Check(
            "launch",
            f"short points of {suite}",
            PASS,
            f"none of the {len(timed)} shortest points is launch-bound",
            None,
            data,
        )
    names = ", ".join(
        f"{r['point_id']} (host {r['host_ms']:.3g} ms, device {r['device_ms']:.3g} ms)" for r in bound[:4]
    )
    more = f" and {len(bound) - 4} more" if len(bound) > 4 else ""
    return Check(
        "launch",
        f"short points of {suite}",
        WARN,
        f"{len(bound)} of {len(timed)} shortest points are launch-bound: {names}{more}",
        "their time in a loop is the host's: compare them with --cuda-graph (fwd, fwdbwd) or at larger B*H",
        data,
    )
