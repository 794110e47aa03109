"""The kernel pass (``fwd``, ``bwd``, ``fwdbwd``): time the pass, measure the peak memory of one
call, check the output and every gradient against the float64 reference.

Order: time (telemetry joined to the timing window); peak memory (for ``fwdbwd`` around the
correctness run, which is one fwd+bwd call on the same inputs); the check. The check depends on
the impl, its parameters and the inputs, not on the pass: its verdict is cached in the run
(:mod:`attnbench.measure.verdict_cache`), so a later pass of the same impl on the same inputs
(``fwd`` after ``fwdbwd``, later rounds) reuses it instead of another forward and backward.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from attnbench.impls import registry
from attnbench.impls.registry import ImplSpec
from attnbench.measure import correctness, verdict_cache
from attnbench.measure.cpu_telemetry import CpuWindow
from attnbench.measure.cuda_timer import graph_refusal, time_cuda
from attnbench.measure.inputs import Inputs, make_inputs, make_pass
from attnbench.measure.memory import cpu_peak_mib
from attnbench.measure.passes.base import MIB, Measured, PassMeasure, peak_columns
from attnbench.measure.reference import WorkerProbe, clock_for
from attnbench.measure.roofline import roofline_columns
from attnbench.measure.stats import summarize
from attnbench.measure.telemetry import PointTelemetry
from attnbench.measure.timer import TimedWindow, TimingResult, time_cpu
from attnbench.point import Pass, Point, RunOptions


class KernelPass(PassMeasure):
    """fwd, bwd and fwdbwd of a registered implementation."""

    def resolve(self, point: Point) -> tuple[ImplSpec, dict[str, Any]]:
        return registry.get(point.impl), {}

    def skip_reason(self, spec: ImplSpec, point: Point, options: RunOptions) -> str | None:
        if point.device == "cuda" and options.cuda.graph:
            why = graph_refusal(point.pass_.value)
            if why is not None:
                return why
        return super().skip_reason(spec, point, options)

    def measure(self, spec: ImplSpec, point: Point, params: dict[str, Any], options: RunOptions) -> Measured:
        inp = make_inputs(point)
        row: dict[str, Any] = {"input_mib": inp.nbytes() / MIB}
        fn = make_pass(spec.fn, inp, point, params)
        leaves: list[Any] = []

        def check_call() -> Any:
            if not leaves:  # made before any memory baseline
                leaves.extend(correctness.check_leaves(inp, spec.backward))
            return correctness.run_impl_for_check(spec.fn, leaves, inp.g, point.causal, params, spec.backward)

        first = _first_call(point, options, check_call if point.pass_ is Pass.FWDBWD else fn)
        if first is not None and point.pass_ is Pass.FWDBWD:  # its first call may be the check's
            leaves.extend(correctness.check_leaves(inp, spec.backward))
        # the gate's machine reference and the timed calls' page faults (CPU; measure/reference.py)
        probe = WorkerProbe(clock_for(options.timing.clock)) if point.device == "cpu" else None
        if probe is not None:
            probe.before()
        window = TimedWindow()
        if probe is not None:  # the faults of the timed calls only, warm-up excluded
            window.on_start, window.on_end = probe.window_start, probe.window_end
        # NVML sampler thread (a no-op when off): readings inside the timed window count, then a
        # dedicated back-to-back block of calls gives the energy per call
        with PointTelemetry(dict(options.telemetry) if options.telemetry else None) as tele:
            with CpuWindow() as cpu:  # other processes' CPU use, load, clock (attnbench.measure.cpu_telemetry)
                timing = _time(point, fn, options, window, first)
            sync = torch.cuda.synchronize if point.device == "cuda" else _no_sync
            tele.energy_block(window.timed_fn or fn, sync=sync)
        stats = summarize(timing.samples_ms)
        if probe is not None:
            row.update(probe.after(stats.n * timing.calls_per_sample))
            del probe
        row.update(cpu.columns())
        row.update(tele.columns(window=window))
        row.update(
            roofline_columns(
                point.as_mapping(), spec.family, stats.median, dict(options.peaks) if options.peaks else None
            )
        )
        row.update(stats.as_dict("time_ms"))
        row.update(
            n_samples=stats.n,
            rel_noise=stats.rel_noise,
            converged=timing.converged,
            calls_per_sample=timing.calls_per_sample,
            warmup_calls=timing.warmup_calls,
            timer=timing.timer,
            single_call=timing.single_call,
            **timing.extra,
        )
        del fn
        got = None
        if timing.single_call and first is not None:  # that one call gave the memory (and the check's output)
            mem, got = first.mem, first.result if point.pass_ is Pass.FWDBWD else None
        elif point.pass_ is Pass.FWDBWD:
            if not leaves:
                leaves.extend(correctness.check_leaves(inp, spec.backward))
            mem, got = peak_columns(point.device, check_call, options.timing.memory)
        else:
            leaves.extend(correctness.check_leaves(inp, spec.backward))
            mem, _ = peak_columns(point.device, make_pass(spec.fn, inp, point, params), options.timing.memory)
        row.update(mem)
        return Measured(row, timing.samples_ms, ctx=(inp, got, check_call))

    def check(
        self, spec: ImplSpec, point: Point, params: dict[str, Any], options: RunOptions, measured: Measured
    ) -> dict[str, Any]:
        inp, got, check_call = measured.ctx
        cache_dir = Path(options.ref_cache_dir) if options.ref_cache_dir else None
        cached = verdict_cache.load(cache_dir, point)
        if cached is not None:
            return cached
        verdict = _check(spec, inp, point, options, got if got is not None else check_call())
        verdict_cache.store(cache_dir, point, verdict)
        return verdict


def _check(spec: ImplSpec, inp: Inputs, point: Point, options: RunOptions, got: Any) -> dict[str, Any]:
    ref_spec = registry.get(spec.reference_name)
    label, ref_fn = correctness.reference_plan(ref_spec.name, ref_spec.fn, point.N, ref_spec.reference_long)
    cache = Path(options.ref_cache_dir) if options.ref_cache_dir else None
    ref = correctness.cached_reference(label, ref_fn, inp, point.as_mapping(), spec.backward, cache)
    return {
        "reference": label,
        "checked_by": point.point_id,
        **correctness.judge(got, ref, point.dtype.value, options.tolerance.get(point.dtype.value)),
    }


class _FirstCall:
    """The timer's first call with the resident high-water mark read around it (glibc's settings
    untouched, so the call is timed as any other): if the call is long enough to be the point's
    one sample (``single_call_s``), its peak memory and result are kept too."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self.mem: dict[str, Any] = {}
        self.result: Any = None

    def __call__(self) -> Any:
        peak, method, self.result = cpu_peak_mib(self.call, tune_malloc=False)
        self.mem = {"peak_mib": peak, "mem_method": f"{method}-single-call" if peak is not None else method}
        return self.result


def _first_call(point: Point, options: RunOptions, call: Any) -> _FirstCall | None:
    """The first-call reader where a long first call may be the whole measurement: CPU points
    of a suite with ``single_call_s`` and RSS memory (the allocator method needs its profiler)."""
    t = options.timing
    if point.device != "cpu" or t.timer.single_call_s is None or t.memory != "rss" or point.pass_ is Pass.BWD:
        return None
    return _FirstCall(call)


def _no_sync() -> None:
    """CPU work is done when the call returns."""


def _time(
    point: Point, fn: Any, options: RunOptions, window: TimedWindow, first: _FirstCall | None = None
) -> TimingResult:
    tcfg = options.timing.timer
    if point.device == "cuda":
        return time_cuda(
            fn,
            tcfg,
            graph=options.cuda.graph,
            flush_l2=options.cuda.flush_l2,
            pass_name=point.pass_.value,
            window=window,
        )
    if options.timing.clock == "process":
        # CPU time of this process: other processes on a shared machine do not inflate it
        # (it sums all threads, so it is the latency only with one thread)
        res = time_cpu(fn, tcfg, clock=time.process_time_ns, window=window, first=first)
        res.timer = "cpu-process-time"
        return res
    res = time_cpu(fn, tcfg, window=window, first=first)
    if first is not None and not res.single_call:
        first.result = None  # a warm-up call only: free its output before the memory baseline
    return res
