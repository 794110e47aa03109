"""Adaptive device timer for CUDA work: CUDA events around each sample, the queue kept full.

1. Warm-up: one first call, then at least :data:`MIN_WARM_CALLS` more, until ``cfg.warmup_s`` went
   by (each synchronised), so module loading, JIT, autotuning and allocator growth stay out of
   the samples. The block size comes from the median of the calls after the first: a slow first
   call (a Triton compile, cuBLAS start-up) must not make every sample a single call.
2. Optionally capture ``fn`` into a CUDA graph (``graph=True``) and time graph replays, which
   hides the host's launch overhead (as triton's ``do_bench_cudagraph``). The ``bwd`` pass is
   refused (:func:`graph_refusal`): its forward ran eagerly before the timer, and autograd runs
   backward ops on their forward op's stream, not on the capture stream.
3. Sample, as triton's ``do_bench`` does: per sample, *queue flush -> start event -> calls -> end
   event*, all enqueued with no host synchronisation in between, so the device is busy with
   the flush while the host enqueues the start event and the calls, and the events measure
   device time only (no Python dispatch, autograd or launch gap at the start). With
   ``flush_l2`` (default) the flush writes :func:`flush_bytes` (twice the L2 size, at least
   256 MiB) so every sample starts cold, and a sample is one call. Without it a sample is a block
   of calls lasting at least ``cfg.block_min_s``, samples follow each other back to back, and
   one untimed call heads each batch so the first start event also finds the device busy.
   Samples are enqueued in batches (about :data:`BATCH_S` of device work); the host waits once
   per batch, reads the events, and applies the stopping rule.
4. Stop with :class:`~attnbench.measure.timer.StopRule` (shared with the CPU timer): relative
   noise of the median under the target after min samples and min time, or the time cap, and
   record whether the target was met.

``extra`` of the result: ``host_overhead_ms`` (median over samples of the host time to enqueue
one call: Python, dispatch, autograd and launches, none of which the events see),
``launch_bound`` (host_overhead_ms >= 90 % of the median device time: in a plain loop this call
would run at the host's pace, not the device's), ``l2_flush_mib`` (0 when off) and ``cuda_graph``.
The timed window (host monotonic clock, for telemetry) goes into a :class:`TimedWindow` the
caller passes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch

from attnbench.measure.stats import quantile
from attnbench.measure.timer import StopRule, TimedWindow, TimerConfig, TimingResult

MIB = float(2**20)
# The flush writes twice the L2 so no line survives whatever the replacement policy, and at
# least 256 MiB (triton's fixed flush size), which also covers a device that reports no L2.
L2_FLUSH_FLOOR_BYTES = 256 * 2**20
MIN_WARM_CALLS = 3  # timed warm calls after the first, before the block size is chosen
BATCH_S = 0.01  # device work enqueued between two host waits
MAX_BATCH = 32  # samples per batch at most (the launch queue holds about a thousand launches)
LAUNCH_BOUND_RATIO = 0.9

GRAPH_REFUSALS = {
    "bwd": (
        "--cuda-graph cannot time the bwd pass: its forward ran eagerly before capture and autograd "
        "runs backward ops on the forward's stream, not the capture stream; time bwd without "
        "--cuda-graph or time fwdbwd with it"
    ),
}


class GraphRefused(ValueError):
    """CUDA-graph timing was asked for a pass that cannot be captured correctly."""


def graph_refusal(pass_name: str | None) -> str | None:
    """The one-line reason ``--cuda-graph`` cannot time ``pass_name``, or None."""
    return GRAPH_REFUSALS.get(pass_name or "")


def l2_bytes(device: Any = None) -> int:
    """The L2 cache size of ``device`` in bytes, from the device properties (0 if unknown)."""
    idx = torch.device(device).index if device is not None else None
    if idx is None:
        idx = torch.cuda.current_device()
    size = getattr(torch.cuda.get_device_properties(idx), "L2_cache_size", None)
    return int(size) if size else 0


def flush_bytes(l2: int) -> int:
    """Bytes the L2 flush writes: twice the L2 size, at least :data:`L2_FLUSH_FLOOR_BYTES`."""
    return max(2 * int(l2), L2_FLUSH_FLOOR_BYTES)


class L2Flusher:
    """Writes a buffer of ``nbytes`` (a memset kernel) to evict whatever the last sample left."""

    def __init__(self, nbytes: int, device: Any = None) -> None:
        self.nbytes = nbytes
        self.buf = torch.empty(max(nbytes, 1), dtype=torch.uint8, device=device or "cuda")

    def __call__(self) -> None:
        self.buf.zero_()


def capture_graph(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` captured into a CUDA graph; returns a callable replaying it. ``fn`` must have been
    warmed up (torch requires the first calls outside capture) and be capturable (no host sync)."""
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


def _warm_up(fn: Callable[[], object], cfg: TimerConfig, sync: Callable[[], object]) -> tuple[int, list[float]]:
    """(calls made, host seconds of each synchronised call after the first)."""
    start = time.perf_counter()
    fn()
    sync()
    times: list[float] = []
    while len(times) < MIN_WARM_CALLS or time.perf_counter() - start < cfg.warmup_s:
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return 1 + len(times), times


def time_cuda(
    fn: Callable[[], object],
    cfg: TimerConfig,
    *,
    flush_l2: bool = True,
    graph: bool = False,
    device: Any = None,
    pass_name: str | None = None,
    window: TimedWindow | None = None,
) -> TimingResult:
    """Time ``fn`` (which enqueues CUDA work) with CUDA events. Samples are ms per call.

    ``pass_name`` (fwd, bwd, fwdbwd) lets graph mode refuse what it cannot capture
    (:class:`GraphRefused`); ``window`` receives the timed window for telemetry.
    """
    if graph and (why := graph_refusal(pass_name)):
        raise GraphRefused(why)
    sync = torch.cuda.synchronize
    start = time.perf_counter()
    warm, warm_times = _warm_up(fn, cfg, sync)
    if graph:
        fn = capture_graph(fn)
        warm_times = []
        for _ in range(MIN_WARM_CALLS):  # the replay's own time sizes the blocks
            t0 = time.perf_counter()
            fn()
            sync()
            warm_times.append(time.perf_counter() - t0)
    one_s = max(quantile(sorted(warm_times), 0.5), 1e-9)
    flusher = L2Flusher(flush_bytes(l2_bytes(device)), device) if flush_l2 else None
    calls = 1 if flusher is not None else max(1, math.ceil(cfg.block_min_s / one_s))
    batch = max(1, min(MAX_BATCH, math.ceil(BATCH_S / (one_s * calls))))

    starts = [torch.cuda.Event(enable_timing=True) for _ in range(batch)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(batch)]
    rule = StopRule(cfg)
    samples: list[float] = []
    enqueue: list[float] = []
    t_begin = time.perf_counter()
    if window is not None:
        window.open(fn)
    met = False
    while True:
        for i in range(batch):
            if flusher is not None:
                flusher()  # enqueued, never waited for: the device flushes while the host enqueues on
            elif i == 0:
                fn()  # untimed head start: the device is busy when the first start event is reached
            h0 = time.perf_counter()
            starts[i].record()
            for _ in range(calls):
                fn()
            ends[i].record()
            enqueue.append((time.perf_counter() - h0) / calls)
        ends[batch - 1].synchronize()  # the one host wait of the batch
        samples += [s.elapsed_time(e) / calls for s, e in zip(starts, ends, strict=True)]
        stop, met = rule.done(samples, time.perf_counter() - t_begin)
        if stop:
            break
    if window is not None:
        window.close()
    flush_mib = flusher.nbytes / MIB if flusher is not None else 0.0
    if flusher is not None:
        del flusher
        torch.cuda.empty_cache()  # the flush buffer must not show in the memory columns' pool
    host_ms = quantile(sorted(enqueue), 0.5) * 1e3
    device_ms = quantile(sorted(samples), 0.5)
    return TimingResult(
        samples_ms=samples,
        calls_per_sample=calls,
        converged=met,
        warmup_calls=warm,
        total_s=time.perf_counter() - start,
        timer="cuda-event",
        extra={
            "host_overhead_ms": host_ms,
            "launch_bound": host_ms >= LAUNCH_BOUND_RATIO * device_ms,
            "l2_flush_mib": flush_mib,
            "cuda_graph": graph,
        },
    )
