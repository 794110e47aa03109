"""The ``decode`` pass: prefill a prompt of P tokens, then generate T tokens one at a time.

The worker runs it for points with ``pass == "decode"`` (N = P + T) through the same skeleton
as the kernel pass (:mod:`attnbench.measure.passes.base`). Every step of an
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
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from attnbench.impls import registry
from attnbench.impls.decoding import Decoder
from attnbench.impls.registry import ImplSpec
from attnbench.measure import correctness
from attnbench.measure.inputs import Inputs, make_inputs, torch_dtype
from attnbench.measure.passes.base import MIB, Measured, PassMeasure, peak_columns
from attnbench.measure.stats import summarize
from attnbench.point import Point, RunOptions

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


def _check(spec: ImplSpec, inp: Inputs, point: Point, res: dict[str, Any], tol: float | None) -> dict[str, Any]:
    """Correctness columns (every sampled step's row and the prompt's outputs against float64);
    fills each sampled step's err_out."""
    p = int(point.P or 0)
    ref_spec = registry.get(spec.reference_name)
    positions = [s["context"] - 1 for s in res["steps"]]
    ref_rows = _reference_rows(ref_spec.fn, inp, positions)
    for s, got, ref in zip(res["steps"], res["outs"], ref_rows, strict=True):
        s["err_out"] = correctness.rel_error(got, ref)
    got_all = [o.unsqueeze(2) for o in res["outs"]]
    ref_all = [r.unsqueeze(2) for r in ref_rows]
    label = f"{ref_spec.name} float64 rows at the sampled steps"
    if p:
        plabel, pfn = correctness.reference_plan(ref_spec.name, ref_spec.fn, p, ref_spec.reference_long)
        prompt = Inputs(*(x[:, :, :p] for x in (inp.q, inp.k, inp.v, inp.g)))
        got_all.insert(0, res["pre"])
        ref_all.insert(0, correctness.reference_outputs(pfn, prompt, True, False)["out"])
        label += f"; prompt: {plabel}"
    verdict = correctness.judge(
        {"out": torch.cat(got_all, dim=2)}, {"out": torch.cat(ref_all, dim=2)}, point.dtype.value, tol
    )
    return {"reference": label, **verdict}


class DecodePass(PassMeasure):
    """Pass decode of a registered decoder (``point.impl`` names the decoder)."""

    def resolve(self, point: Point) -> tuple[ImplSpec, dict[str, Any]]:
        dspec = registry.get_decoder(point.impl)
        return registry.get(dspec.impl), {"decoder": dspec.kind}

    def skip_reason(self, spec: ImplSpec, point: Point, options: RunOptions) -> str | None:
        if not point.causal:
            return "pass decode is causal only (a generated token cannot see the future)"
        return spec.unavailable_reason(point.device) or spec.skip_reason({**point.as_mapping(), "pass": "fwd"})

    def measure(self, spec: ImplSpec, point: Point, params: dict[str, Any], options: RunOptions) -> Measured:
        dspec = registry.get_decoder(point.impl)
        b, h, d, m = point.B, point.H, point.D, point.M
        p, t = int(point.P or 0), int(point.T or 0)
        dtype, device = torch_dtype(point.dtype), point.device
        tcfg = options.timing.timer
        repeats = max(1, tcfg.min_samples)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        inp = make_inputs(point)
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
        mem, res = peak_columns(
            device,
            lambda: _run(dec, inp, p, t, repeats, sync, tcfg.min_time_s, tcfg.max_time_s),
            options.timing.memory,
        )
        stats = summarize(res["samples"])
        tps, method = _tokens_per_s(res, t, dec.fast_forward)
        first, last = res["steps"][0], res["steps"][-1]
        row: dict[str, Any] = {"input_mib": inp.nbytes() / MIB, **stats.as_dict("time_ms"), **mem}
        row.update(
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
        return Measured(row, res["samples"], res["steps"], ctx=(inp, res))

    def check(
        self, spec: ImplSpec, point: Point, params: dict[str, Any], options: RunOptions, measured: Measured
    ) -> dict[str, Any]:
        inp, res = measured.ctx
        return _check(spec, inp, point, res, options.tolerance.get(point.dtype.value))
