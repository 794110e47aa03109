"""What runs in the profile's (or the repro's) own worker process, forked like any point of a
run (:func:`attnbench.runner.procs.run_child`): the impl, the inputs from the seed, the pass.

:func:`profile_main`, in order: time the pass without the profiler (the run's timer, clock and
threads: the *measured* time), the profiled calls for the top table, each beside a block of
calls timed without the profiler (:func:`attnbench.profile.trace.record_paired`: the table's
shares are of those), the detailed profile written as the trace (shapes, FLOPs), one more call
for the memory timeline, then the output and gradients for the repro bundle's checksums.
:func:`checksum_main`: only the last step. Each sends one dict: ``status`` ok, or skipped /
error / oom with a one-line ``error``; files go to the directory the parent named.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import asdict
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from attnbench import profile as names
from attnbench.env import fingerprint
from attnbench.impls import registry
from attnbench.impls.registry import ImplSpec
from attnbench.measure import correctness
from attnbench.measure.cuda_timer import time_cuda
from attnbench.measure.inputs import make_inputs, make_pass
from attnbench.measure.passes import KernelPass
from attnbench.measure.passes.base import is_oom, one_line
from attnbench.measure.stats import summarize
from attnbench.measure.timer import TimerConfig, TimingResult, time_cpu
from attnbench.point import Point, RunOptions, Status
from attnbench.profile import memory, top, trace
from attnbench.profile.repro_script import checksums, inputs_sha256


class NotRunnable(Exception):
    """The point cannot run here (the impl's device, dtype, mode or size); the message says why."""


def profile_main(point: Point, options: RunOptions, settings: dict[str, Any], out_dir: str, conn: Any) -> None:
    """Child entry (``attnbench.profile.worker:profile_main``)."""
    _answer(conn, lambda: profile_point(point, options, settings, Path(out_dir)))


def checksum_main(point: Point, options: RunOptions, conn: Any) -> None:
    """Child entry (``attnbench.profile.worker:checksum_main``)."""
    _answer(conn, lambda: {"status": Status.OK.value, **bundle_facts(*_setup(point, options), point)})


def _answer(conn: Any, work: Any) -> None:
    try:
        result = work()
    except NotRunnable as exc:
        result = {"status": Status.SKIPPED.value, "error": str(exc)}
    except BaseException as exc:  # anything, even KeyboardInterrupt, is this point's failure
        status = Status.OOM if is_oom(exc) else Status.ERROR
        result = {"status": status.value, "error": one_line(exc), "traceback": traceback.format_exc(limit=8)}
    conn.send(result)
    conn.close()


def _setup(point: Point, options: RunOptions) -> tuple[ImplSpec, dict[str, Any]]:
    """Threads set, the impl resolved and able to run here (built if it is compiled), its params."""
    torch.set_num_threads(options.threads)
    kp = KernelPass()
    spec, _ident = kp.resolve(point)
    reason = kp.skip_reason(spec, point, options)
    if reason is None and spec.prepare is not None:
        reason = spec.prepare(point.device)  # build a compiled kernel before any timing
    if reason is not None:
        raise NotRunnable(reason)
    return spec, {**spec.params, **point.params}


def profile_point(point: Point, options: RunOptions, settings: dict[str, Any], out: Path) -> dict[str, Any]:
    """Everything the profile writes or reports (see the module docstring)."""
    spec, params = _setup(point, options)
    inp = make_inputs(point)
    fn = make_pass(spec.fn, inp, point, params)
    timing = _time(point.device, fn, options.timing.timer, options)
    samples = timing.samples_ms
    calls = int(settings.get("calls") or trace.choose_calls(summarize(samples).median))
    lean = trace.record_paired(fn, calls, point.device, timing.calls_per_sample)
    stats = summarize(samples)
    detail_calls = min(calls, trace.DETAILED_CALLS)
    detailed = trace.record(fn, detail_calls, point.device, detailed=True, with_stack=bool(settings.get("stack")))
    trace.export(detailed, out / names.TRACE)
    flops = top.flops_per_call(detailed.events, detail_calls)
    del detailed  # the profiler's events can be large
    paired = summarize(lean.unprofiled_ms).median
    rows = top.rows_from_events(lean.events, calls, paired, flops)
    profiled = {
        "calls": calls,
        "call_ms": lean.call_ms,
        "busy_ms": lean.busy_ms,
        "unprofiled_ms": lean.unprofiled_ms,
        "call_ms_median": summarize(lean.call_ms).median,
        "busy_ms_median": summarize(lean.busy_ms).median,
        "unprofiled_ms_median": paired,
        "unprofiled_block": timing.calls_per_sample,
        "trace_calls": detail_calls,
    }
    del lean
    cuda = point.device == "cuda"
    tl = memory.cuda_timeline(fn, out / names.MEMORY_SNAPSHOT) if cuda else memory.cpu_timeline(fn)
    memory.write_csv(tl, out / names.MEMORY_CSV)
    memory.plot(tl, out / names.MEMORY_PNG, f"{point.point_id}: memory over one call")
    del fn
    return {
        "status": Status.OK.value,
        "measured": {
            "median_ms": stats.median,
            "q1_ms": stats.q1,
            "q3_ms": stats.q3,
            "samples": stats.n,
            "timer": "cuda-events" if point.device == "cuda" else f"cpu {options.timing.clock} clock",
        },
        "profiled": profiled,
        "rows": [asdict(r) for r in rows],
        "memory": tl.summary(),
        **bundle_facts(spec, params, point),
    }


def bundle_facts(spec: ImplSpec, params: dict[str, Any], point: Point) -> dict[str, Any]:
    """What a repro bundle stores besides the run's numbers: how to import the impl, its params
    and family reference, and checksums of the inputs and of the outputs (out; dq, dk, dv for a
    backward pass) made here, with this worker's threads."""
    inp = make_inputs(point)
    grads = point.pass_.needs_backward
    leaves = correctness.check_leaves(inp, grads)
    got = correctness.run_impl_for_check(spec.fn, leaves, inp.g, point.causal, params, grads)
    return {
        "impl": impl_import(spec),
        "params": params,
        "reference": spec.reference_name,
        "inputs_sha256": inputs_sha256((inp.q, inp.k, inp.v, inp.g)),
        "outputs": checksums(got),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "env": fingerprint(point.device, torch.get_num_threads()),
    }


def impl_import(spec: ImplSpec) -> dict[str, Any]:
    """How repro.py imports the impl: a built-in by its registry name; a plugin by its entry point
    (``module:attr``, found by name in the entry-point group, else the function's own module)."""
    info: dict[str, Any] = {"name": spec.name, "origin": spec.origin, "entry_point": None, "distribution": None}
    if not spec.origin.startswith("plugin"):
        return info
    info["distribution"] = spec.origin.removeprefix("plugin").strip() or None
    for ep in entry_points(group=registry.ENTRY_POINT_GROUP):
        if ep.name == spec.name:
            info["entry_point"] = ep.value
            return info
    info["entry_point"] = f"{spec.fn.__module__}:{spec.fn.__qualname__}"
    return info


def _time(device: str, fn: Any, cfg: TimerConfig, options: RunOptions) -> TimingResult:
    """The pass timed without the profiler, by the run's timer and clock."""
    if device == "cuda":
        return time_cuda(fn, cfg, graph=False, flush_l2=options.cuda.flush_l2)
    if options.timing.clock == "process":
        return time_cpu(fn, cfg, clock=time.process_time_ns)
    return time_cpu(fn, cfg)
