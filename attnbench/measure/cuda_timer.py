"""Adaptive device timer for CUDA work: CUDA events around each sample.

1. Warm-up: call ``fn`` (synchronising) until ``cfg.warmup_s`` went by, at least once, so module
   loading, JIT, autotuning and allocator growth stay out of the samples.
2. Optionally capture ``fn`` into a CUDA graph (``graph=True``) and time graph replays, which
   hides the host's launch overhead (as triton's ``do_bench_cudagraph``).
3. Sample: before each sample, with ``flush_l2`` (default), write a buffer of the device's real
   L2 size (``L2_cache_size``, read off the device) so every sample starts cold; the flush is
   enqueued and synchronised *before* the start event, so it is never timed. A cold sample is
   one call; without the flush a sample is a block of calls lasting at least
   ``cfg.block_min_s``.
4. Stop with :class:`~attnbench.measure.timer.StopRule` (shared with the CPU timer): relative
   noise of the median under the target after min samples and min time, or the time cap, and
   record whether the target was met.

Besides the per-call device times (ms), the result's ``extra`` holds ``host_overhead_ms`` (median
over samples of host wall time minus device time, per call: Python, launch and sync costs the
events do not see), ``l2_flush_mib`` (0 when off) and ``cuda_graph``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from attnbench.measure.stats import quantile
from attnbench.measure.timer import StopRule, TimerConfig, TimingResult

MIB = float(2**20)
FALLBACK_L2_BYTES = 256 * 2**20  # only if torch cannot say (old builds); recorded in l2_flush_mib


def l2_bytes(device: Any = None) -> int:
    """The L2 cache size of ``device`` in bytes, from the device properties."""
    import torch

    idx = torch.device(device).index if device is not None else None
    if idx is None:
        idx = torch.cuda.current_device()
    size = getattr(torch.cuda.get_device_properties(idx), "L2_cache_size", None)
    return int(size) if size else FALLBACK_L2_BYTES


class L2Flusher:
    """Writes a buffer of the L2's size (a memset kernel) to evict whatever the last sample left."""

    def __init__(self, nbytes: int, device: Any = None) -> None:
        import torch

        self.nbytes = nbytes
        self.buf = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=device or "cuda")

    def __call__(self) -> None:
        self.buf.zero_()


def capture_graph(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` captured into a CUDA graph; returns a callable replaying it. ``fn`` must have been
    warmed up (torch requires the first calls outside capture) and be capturable (no host sync)."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # torch's recipe: a few eager calls on a side stream first
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            fn()
    except Exception as exc:
        raise RuntimeError(f"CUDA-graph capture failed (time without graph=True): {type(exc).__name__}: {exc}") from exc
    return graph.replay


def time_cuda(
    fn: Callable[[], object],
    cfg: TimerConfig,
    *,
    flush_l2: bool = True,
    graph: bool = False,
    device: Any = None,
) -> TimingResult:
    """Time ``fn`` (which enqueues CUDA work) with CUDA events. Samples are ms per call."""
    import torch

    sync = torch.cuda.synchronize
    start = time.perf_counter()
    warm = 0
    while True:
        t0 = time.perf_counter()
        fn()
        sync()
        one_s = time.perf_counter() - t0
        warm += 1
        if time.perf_counter() - start >= cfg.warmup_s:
            break
    if graph:
        fn = capture_graph(fn)
        fn()
        sync()
    flusher = L2Flusher(l2_bytes(device), device) if flush_l2 else None
    calls = 1 if flusher is not None else max(1, math.ceil(cfg.block_min_s / max(one_s, 1e-9)))

    ev_start, ev_end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    rule = StopRule(cfg)
    samples: list[float] = []
    overheads: list[float] = []
    t_begin = time.perf_counter()
    met = False
    while True:
        if flusher is not None:
            flusher()
            sync()  # the flush ends before the start event: never timed
        w0 = time.perf_counter()
        ev_start.record()
        for _ in range(calls):
            fn()
        ev_end.record()
        ev_end.synchronize()
        wall_ms = (time.perf_counter() - w0) * 1e3
        dev_ms = ev_start.elapsed_time(ev_end)
        samples.append(dev_ms / calls)
        overheads.append(max(0.0, wall_ms - dev_ms) / calls)
        stop, met = rule.done(samples, time.perf_counter() - t_begin)
        if stop:
            break
    return TimingResult(
        samples_ms=samples,
        calls_per_sample=calls,
        converged=met,
        warmup_calls=warm,
        total_s=time.perf_counter() - start,
        timer="cuda-event",
        extra={
            "host_overhead_ms": quantile(sorted(overheads), 0.5),
            "l2_flush_mib": flusher.nbytes / MIB if flusher is not None else 0.0,
            "cuda_graph": graph,
        },
    )
