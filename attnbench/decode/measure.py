"""The ``decode`` pass: prefill a prompt of P tokens, then generate T tokens one at a time.

Called by the worker for points with ``pass == "decode"`` (N = P + T). Every step of an
incremental decoder (KV cache, RNN state) runs and is timed once; at the sampled steps
(1, 2, 3, 4, 6, 8, 12, ... and T) the step is timed ``repeats`` times from the same state
(snapshot/restore) and its median kept, the state's size recorded and its output checked
against the float64 family reference row. A recompute decoder (no cache) is only run at the
sampled steps, its tokens/s then integrated from them (``tokens_per_s_method`` interpolated).
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from attnbench.decode.decoders import Decoder, DecoderSpec, get_decoder
from attnbench.impls import registry
from attnbench.measure import correctness
from attnbench.measure.inputs import DTYPES, Inputs, make_inputs
from attnbench.measure.memory import MIB, cpu_peak_mib
from attnbench.measure.stats import summarize

WARMUP_STEPS = 8


def sampled_steps(t: int) -> list[int]:
    """Steps (1-based) timed with repeats and checked: 2^k and 3 * 2^k up to ``t``, and ``t``."""
    out = {t}
    k = 1
    while k <= t:
        out.add(k)
        if 3 * k // 2 <= t and k >= 2:
            out.add(3 * k // 2)
        k *= 2
    return sorted(out)


def _skip_reason(dspec: DecoderSpec, spec: registry.ImplSpec, point: dict[str, Any]) -> str | None:
    if not point["causal"]:
        return "pass decode is causal only (a generated token cannot see the future)"
    return spec.unavailable_reason(point["device"]) or spec.skip_reason({**point, "pass": "fwd"})


def _run(
    dec: Decoder,
    inp: Inputs,
    p: int,
    t: int,
    repeats: int,
    sync: Callable[[], None],
    min_s: float = 0.0,
    cap_s: float = math.inf,
) -> dict[str, Any]:
    """Prefill and decode; per-step times (ms), sampled-step records and outputs. A sampled
    step is repeated at least ``repeats`` times and until its repeats took ``min_s`` (a short
    step is then timed over a window longer than a scheduler hiccup), but no more than 3
    times once they took ``cap_s``."""
    clock = time.perf_counter_ns
    q, k, v = inp.q, inp.k, inp.v
    t0 = clock()
    pre = dec.prefill(q[:, :, :p], k[:, :, :p], v[:, :, :p])
    sync()
    prefill_ms = (clock() - t0) / 1e6
    sampled = set(sampled_steps(t))
    first_ms: list[float] = []  # each executed step as it happened in the decode loop
    samples: list[float] = []  # per-step times: single shot, or the median of repeats when sampled
    steps: list[dict[str, Any]] = []
    outs: list[torch.Tensor] = []
    for j in range(1, t + 1):
        pos = p + j - 1
        qi, ki, vi = q[:, :, pos], k[:, :, pos], v[:, :, pos]
        if j not in sampled:
            if dec.fast_forward:
                dec.advance(qi, ki, vi)
                continue
            t0 = clock()
            dec.step(qi, ki, vi)
            sync()
            ms = (clock() - t0) / 1e6
            first_ms.append(ms)
            samples.append(ms)
            continue
        snap = dec.snapshot()
        reps: list[float] = []
        while True:
            if reps:
                dec.restore(snap)
            t0 = clock()
            out = dec.step(qi, ki, vi)
            sync()
            reps.append((clock() - t0) / 1e6)
            spent = sum(reps) / 1e3
            if (len(reps) >= repeats and spent >= min_s) or (len(reps) >= 3 and spent >= cap_s):
                break
        first_ms.append(reps[0])
        samples.append(statistics.median(reps))
        live, alloc = dec.state_bytes()
        steps.append(
            {
                "step": j,
                "context": pos + 1,
                "time_ms": statistics.median(reps),
                "time_ms_min": min(reps),
                "repeats": len(reps),
                "state_mib": live / MIB,
                "state_alloc_mib": alloc / MIB,
            }
        )
        outs.append(out)
    return {
        "pre": pre,
        "prefill_ms": prefill_ms,
        "first_ms": first_ms,
        "samples": samples,
        "steps": steps,
        "outs": outs,
    }


def _tokens_per_s(res: dict[str, Any], t: int, fast_forward: bool) -> tuple[float, str]:
    if not fast_forward:
        return t / (sum(res["first_ms"]) / 1e3), "measured"
    xs = [s["step"] for s in res["steps"]]
    ys = [s["time_ms"] for s in res["steps"]]
    total_ms = float(np.interp(np.arange(1, t + 1), xs, ys).sum())
    return t / (total_ms / 1e3), "interpolated"


def _reference_rows(ref_fn: Callable[..., torch.Tensor], inp: Inputs, positions: list[int]) -> list[torch.Tensor]:
    """Float64 reference output rows [B, H, M] at the given positions (causal)."""
    q, k, v = (x.detach().to(device="cpu", dtype=torch.float64) for x in (inp.q, inp.k, inp.v))
    offset = "q_offset" in inspect.signature(ref_fn).parameters
    rows = []
    for pos in positions:
        kv = (k[:, :, : pos + 1], v[:, :, : pos + 1])
        if offset:
            rows.append(ref_fn(q[:, :, pos : pos + 1], *kv, causal=True, q_offset=pos)[:, :, 0])
        else:
            rows.append(ref_fn(q[:, :, : pos + 1], *kv, causal=True)[:, :, -1])
    return rows


def _check(
    spec: registry.ImplSpec, inp: Inputs, point: dict[str, Any], res: dict[str, Any], tol: float | None
) -> dict[str, Any]:
    """Correctness columns (every sampled step's row and the prompt's outputs against float64);
    fills each sampled step's err_out."""
    p = int(point["P"])
    ref_spec = registry.get(spec.reference_name)
    positions = [s["context"] - 1 for s in res["steps"]]
    ref_rows = _reference_rows(ref_spec.fn, inp, positions)
    for s, got, ref in zip(res["steps"], res["outs"], ref_rows, strict=True):
        s["err_out"] = correctness.rel_error(got, ref)
    got_all = [o.unsqueeze(2) for o in res["outs"]]
    ref_all = [r.unsqueeze(2) for r in ref_rows]
    label = f"{ref_spec.name} float64 rows at the sampled steps"
    if p:
        plabel, pfn = correctness.reference_plan(ref_spec.name, ref_spec.fn, p)
        prompt = Inputs(*(x[:, :, :p] for x in (inp.q, inp.k, inp.v, inp.g)))
        got_all.insert(0, res["pre"])
        ref_all.insert(0, correctness.reference_outputs(pfn, prompt, True, False)["out"])
        label += f"; prompt: {plabel}"
    verdict = correctness.judge(
        {"out": torch.cat(got_all, dim=2)}, {"out": torch.cat(ref_all, dim=2)}, point["dtype"], tol
    )
    return {"reference": label, **verdict}


def _memory(device: str, fn: Callable[[], Any]) -> tuple[dict[str, Any], Any]:
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        result = fn()
        cuda_peak = (torch.cuda.max_memory_allocated() - base) / MIB
        return {"peak_mib": cuda_peak, "mem_method": "cuda-allocator"}, result
    peak, method, result = cpu_peak_mib(fn)
    return {"peak_mib": peak, "mem_method": method}, result


def measure_decode(point: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    """Measure a decode point; returns {"row": columns, "samples": per-step ms, "steps": [...]}."""
    from attnbench.runner.worker import _is_oom, _one_line

    started = time.perf_counter()
    row: dict[str, Any] = {"status": "ok", "error": None}
    device = point["device"]
    threads = int(options.get("threads") or torch.get_num_threads())
    torch.set_num_threads(threads)
    row["threads"] = threads
    empty: dict[str, Any] = {"row": row, "samples": [], "steps": []}
    try:
        dspec = get_decoder(point["impl"])
        spec = registry.get(dspec.impl)
    except Exception as exc:
        row.update(status="error", error=_one_line(exc))
        return empty
    row.update(family=spec.family, decoder=dspec.kind)
    reason = _skip_reason(dspec, spec, point)
    if reason is not None:
        row.update(status="skipped", error=reason)
        return empty
    params = {**spec.params, **point.get("params", {})}
    b, h, d, m = (int(point[x]) for x in ("B", "H", "D", "M"))
    p, t = int(point["P"]), int(point["T"])
    dtype = DTYPES[point["dtype"]]
    repeats = max(1, int(options.get("timing", {}).get("min_samples", 5)))
    min_s = float(options.get("timing", {}).get("min_time_s", 0.0))
    cap_s = float(options.get("timing", {}).get("max_time_s", math.inf))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    try:
        inp = make_inputs(point, device)
        row["input_mib"] = inp.nbytes() / MIB
        warm = dspec.factory(b, h, d, m, dtype, device, params)
        _run(
            warm,
            Inputs(*(x[:, :, : min(p, 16) + WARMUP_STEPS] for x in (inp.q, inp.k, inp.v, inp.g))),
            min(p, 16),
            WARMUP_STEPS,
            1,
            sync,
        )
        del warm
        dec = dspec.factory(b, h, d, m, dtype, device, params)
        mem, res = _memory(device, lambda: _run(dec, inp, p, t, repeats, sync, min_s, cap_s))
    except Exception as exc:
        row.update(status="oom" if _is_oom(exc) else "error", error=_one_line(exc))
        row["traceback"] = traceback.format_exc(limit=8)
        return empty
    stats = summarize(res["samples"])
    tps, method = _tokens_per_s(res, t, dec.fast_forward)
    first, last = res["steps"][0], res["steps"][-1]
    row.update(stats.as_dict("time_ms"))
    row.update(
        mem,
        n_samples=stats.n,
        rel_noise=None,  # the steps differ by design: the noise of their median means nothing
        converged=None,
        calls_per_sample=1,
        warmup_calls=WARMUP_STEPS,
        timer="cuda-sync-perf-counter" if device == "cuda" else "cpu-perf-counter",
        tokens_per_s=tps,
        tokens_per_s_method=method,
        prefill_ms=res["prefill_ms"],
        step_ms_first=first["time_ms"],
        step_ms_last=last["time_ms"],
        state_mib_first=first["state_mib"],
        state_mib_last=last["state_mib"],
        steps_sampled=len(res["steps"]),
        step_repeats=repeats,
    )
    try:
        row.update(_check(spec, inp, point, res, options.get("tolerance", {}).get(point["dtype"])))
    except Exception as exc:
        row.update(correct=False, correctness_error=f"check failed to run: {_one_line(exc)}")
    row["wall_s"] = time.perf_counter() - started
    return {"row": row, "samples": res["samples"], "steps": res["steps"]}
