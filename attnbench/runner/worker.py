"""What runs inside one worker process: measure a single point and send back its row.

Imported by the fork server ahead of time (so each worker starts with torch loaded); the
measurement itself happens in a fresh child per point, so an OOM, a crash or a hang costs
one row and peak memory is measured without leftovers from other points.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch._inductor.standalone_compile  # noqa: F401  (the profiler's first use imports it: 1.3 s per worker)
import torch.fx.experimental.symbolic_shapes  # noqa: F401  (autograd.grad imports it lazily: 0.3 s per worker)

from attnbench.impls import registry
from attnbench.measure import correctness
from attnbench.measure.inputs import make_inputs, make_pass
from attnbench.measure.memory import MIB, allocator_peak_mib, cpu_peak_mib
from attnbench.measure.roofline import roofline_columns
from attnbench.measure.stats import summarize
from attnbench.measure.telemetry import PointTelemetry
from attnbench.measure.timer import TimerConfig, TimingResult, time_cpu


def _available_bytes(device: str) -> int | None:
    if device == "cuda":
        free, _total = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)):
        return True
    msg = str(exc).lower()
    return "out of memory" in msg or "can't allocate memory" in msg or "failed to allocate" in msg


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:500]


def _time(device: str, fn: Any, tcfg: TimerConfig, options: dict[str, Any]) -> TimingResult:
    if device == "cuda":
        from attnbench.measure.cuda_timer import time_cuda  # written for the GPU measurement issue

        return time_cuda(fn, tcfg, **options.get("cuda_timer", {}))
    if options.get("timing", {}).get("clock") == "process":
        # CPU time of this process: other processes on a shared machine do not inflate it
        # (it sums all threads, so it is the latency only with --threads 1)
        res = time_cpu(fn, tcfg, clock=time.process_time_ns)
        res.timer = "cpu-process-time"
        return res
    return time_cpu(fn, tcfg)


def _peak(device: str, fn: Any, method: str = "rss") -> tuple[dict[str, Any], Any]:
    """(memory columns, fn's result) for one call of ``fn``; on the CPU ``method`` is "rss"
    (resident high-water mark) or "allocator" (torch's allocation events)."""
    if device == "cuda":
        from attnbench.measure.cuda_memory import cuda_peak_columns  # written for the GPU measurement issue

        return cuda_peak_columns(fn)
    peak, used, result = allocator_peak_mib(fn) if method == "allocator" else cpu_peak_mib(fn)
    return {"peak_mib": peak, "mem_method": used}, result


def measure_point(point: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Measure ``point``; return {"row": flat columns, "samples": per-call ms}.

    ``options``: threads, timing (TimerConfig fields), ref_cache_dir, tolerance (per dtype),
    cuda_timer (time_cuda keywords), telemetry (PointTelemetry config or None), peaks (calibration).
    Order: time the pass; measure its peak memory (for fwdbwd, around the correctness run,
    which is one fwd+bwd call on the same inputs); check against the float64 reference.
    """
    if point["pass"] == "decode":  # token-by-token generation: its own measurement (issue 7)
        from attnbench.decode.measure import measure_decode

        return measure_decode(point, options)
    started = time.perf_counter()
    row: dict[str, Any] = {"status": "ok", "error": None, "server_pid": os.getppid()}
    samples: list[float] = []
    device = point["device"]
    threads = int(options.get("threads") or torch.get_num_threads())
    torch.set_num_threads(threads)
    row["threads"] = threads
    spec = registry.get(point["impl"])
    row["family"] = spec.family
    reason = spec.unavailable_reason(device) or spec.skip_reason(point)
    if reason is None and spec.est_bytes is not None:
        need, have = spec.est_bytes(point), _available_bytes(device)
        if have is not None and need > 0.8 * have:
            reason = f"too large: needs about {need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB available on {device}"
    if reason is not None:
        row.update(status="skipped", error=reason)
        return {"row": row, "samples": samples}

    params = {**spec.params, **point.get("params", {})}
    tcfg = TimerConfig.from_timing(options.get("timing", {}))
    got = None
    try:
        inp = make_inputs(point, device)
        row["input_mib"] = inp.nbytes() / MIB
        fn = make_pass(spec.fn, inp, point, params)
        with PointTelemetry(options.get("telemetry")) as tele:  # NVML sampler thread; no-op when off
            timing = _time(device, fn, tcfg, options)
        samples = timing.samples_ms
        stats = summarize(samples)
        row.update(tele.columns(timing.warmup_calls + stats.n * timing.calls_per_sample))
        row.update(roofline_columns(point, spec.family, stats.median, options.get("peaks")))
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
        mem_method = str(options.get("timing", {}).get("memory", "rss"))
        leaves = correctness.check_leaves(inp, spec.backward)
        causal = bool(point["causal"])

        def check_call() -> Any:
            return correctness.run_impl_for_check(spec.fn, leaves, inp.g, causal, params, spec.backward)

        if point["pass"] == "fwdbwd":
            mem, got = _peak(device, check_call, mem_method)
        else:
            mem, _ = _peak(device, make_pass(spec.fn, inp, point, params), mem_method)
        row.update(mem)
    except Exception as exc:
        row.update(status="oom" if _is_oom(exc) else "error", error=_one_line(exc))
        row["traceback"] = traceback.format_exc(limit=8)
        return {"row": row, "samples": samples}

    row.update(_check(spec, inp, point, params, options, got, check_call))
    row["wall_s"] = time.perf_counter() - started
    return {"row": row, "samples": samples}


def _check(
    spec: registry.ImplSpec,
    inp: Any,
    point: dict[str, Any],
    params: dict[str, Any],
    options: dict[str, Any],
    got: Any,
    check_call: Any,
) -> dict[str, Any]:
    """Correctness columns; a check that cannot run is a failed check, not a crashed point.

    The check depends on the impl, its parameters and the inputs, not on the pass: the verdict
    is stored in the run's cache and a later pass of the same impl on the same inputs (fwd after
    fwdbwd, later rounds) reuses it instead of running another forward and backward.
    """
    cache = options.get("ref_cache_dir")
    verdict_path = _verdict_path(Path(cache), point) if cache else None
    if verdict_path is not None and verdict_path.exists():
        try:
            return dict(json.loads(verdict_path.read_text()))
        except (OSError, ValueError):
            pass
    try:
        if got is None:
            got = check_call()
        ref_spec = registry.get(spec.reference_name)
        label, ref_fn = correctness.reference_plan(ref_spec.name, ref_spec.fn, int(point["N"]))
        cache = options.get("ref_cache_dir")
        ref = correctness.cached_reference(label, ref_fn, inp, point, spec.backward, Path(cache) if cache else None)
        tol = options.get("tolerance", {}).get(point["dtype"])
        verdict = {
            "reference": label,
            "checked_by": point["point_id"],
            **correctness.judge(got, ref, point["dtype"], tol),
        }
    except Exception as exc:
        return {"correct": False, "correctness_error": f"check failed to run: {_one_line(exc)}"}
    if verdict_path is not None:
        tmp = verdict_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(verdict, default=float))
        tmp.replace(verdict_path)
    return verdict


def _verdict_path(cache_dir: Path, point: dict[str, Any]) -> Path:
    ident = {k: point[k] for k in ("impl", "B", "H", "N", "D", "M", "dtype", "causal", "seed", "device")}
    ident["params"] = point.get("params", {})
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    cache_dir.mkdir(parents=True, exist_ok=True)
    return cache_dir / f"verdict-{key}.json"


def main(point: dict[str, Any], options: dict[str, Any], conn: Any) -> None:
    """Worker process entry: measure, send the record, exit."""
    try:
        record = measure_point(point, options)
    except BaseException as exc:  # report anything, even KeyboardInterrupt, as this point's row
        record = {
            "row": {
                "status": "oom" if _is_oom(exc) else "error",
                "error": _one_line(exc),
                "traceback": traceback.format_exc(limit=8),
            },
            "samples": [],
        }
    conn.send(record)
    conn.close()
