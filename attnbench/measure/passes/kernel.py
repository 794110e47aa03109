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

from attnbench.impls import registry
from attnbench.impls.registry import ImplSpec
from attnbench.measure import correctness, verdict_cache
from attnbench.measure.cuda_timer import time_cuda
from attnbench.measure.inputs import Inputs, make_inputs, make_pass
from attnbench.measure.passes.base import MIB, Measured, PassMeasure, peak_columns
from attnbench.measure.reference import WorkerProbe, clock_for
from attnbench.measure.roofline import roofline_columns
from attnbench.measure.stats import summarize
from attnbench.measure.telemetry import PointTelemetry
from attnbench.measure.timer import TimingResult, time_cpu
from attnbench.point import Pass, Point, RunOptions


class KernelPass(PassMeasure):
    """fwd, bwd and fwdbwd of a registered implementation."""

    def resolve(self, point: Point) -> tuple[ImplSpec, dict[str, Any]]:
        return registry.get(point.impl), {}

    def measure(self, spec: ImplSpec, point: Point, params: dict[str, Any], options: RunOptions) -> Measured:
        inp = make_inputs(point)
        row: dict[str, Any] = {"input_mib": inp.nbytes() / MIB}
        fn = make_pass(spec.fn, inp, point, params)
        # the gate's machine reference and the timed calls' page faults (CPU; measure/reference.py)
        probe = WorkerProbe(clock_for(options.timing.clock)) if point.device == "cpu" else None
        if probe is not None:
            probe.before(fn)
        with PointTelemetry(
            dict(options.telemetry) if options.telemetry else None
        ) as tele:  # NVML sampler thread; no-op when off
            timing = _time(point.device, fn, options)
        stats = summarize(timing.samples_ms)
        if probe is not None:
            row.update(probe.after(timing.warmup_calls + stats.n * timing.calls_per_sample))
            del probe
        row.update(tele.columns(timing.warmup_calls + stats.n * timing.calls_per_sample))
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
            **timing.extra,
        )
        del fn
        leaves = correctness.check_leaves(inp, spec.backward)

        def check_call() -> Any:
            return correctness.run_impl_for_check(spec.fn, leaves, inp.g, point.causal, params, spec.backward)

        got = None
        if point.pass_ is Pass.FWDBWD:
            mem, got = peak_columns(point.device, check_call, options.timing.memory)
        else:
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
    label, ref_fn = correctness.reference_plan(ref_spec.name, ref_spec.fn, point.N)
    cache = Path(options.ref_cache_dir) if options.ref_cache_dir else None
    ref = correctness.cached_reference(label, ref_fn, inp, point.as_mapping(), spec.backward, cache)
    return {
        "reference": label,
        "checked_by": point.point_id,
        **correctness.judge(got, ref, point.dtype.value, options.tolerance.get(point.dtype.value)),
    }


def _time(device: str, fn: Any, options: RunOptions) -> TimingResult:
    tcfg = options.timing.timer
    if device == "cuda":
        return time_cuda(fn, tcfg, graph=options.cuda.graph, flush_l2=options.cuda.flush_l2)
    if options.timing.clock == "process":
        # CPU time of this process: other processes on a shared machine do not inflate it
        # (it sums all threads, so it is the latency only with one thread)
        res = time_cpu(fn, tcfg, clock=time.process_time_ns)
        res.timer = "cpu-process-time"
        return res
    return time_cpu(fn, tcfg)
