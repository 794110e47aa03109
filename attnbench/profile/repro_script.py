#!/usr/bin/env python3
"""Reproduce one attnbench point outside the harness: same impl, same inputs from the same seed,
the same pass; check the output against the stored checksums and the float64 oracle; time it.

Written by ``attnbench repro`` (and ``attnbench profile``) with the point in ``CONFIG`` below.
Needs only torch and attnbench installed (attnbench provides the impl by its registry name and
the float64 reference; a plugin impl is imported through its entry point).

::

    python repro.py                 check the output, then time the pass (torch.utils.benchmark)
    python repro.py --calls 5       for nsys/ncu: warm up, then 5 calls between cudaProfilerStart
                                    and cudaProfilerStop, each in an NVTX range; no check, no timing
    python repro.py --threads 4 --min-run-time 5 --json

Exit status: 0 reproduced, 1 the output differs from the stored one or fails the oracle,
2 a set-up problem (impl not importable, CUDA missing).

The checksum of each output tensor (out, and dq, dk, dv for a backward pass): the SHA-256 of its
bytes (equal only for a bit-identical replay: same machine, same threads, same build), and in
float64: its sum, its sum of squares and its inner products with 8 fixed +-1 vectors. Another
machine or thread count changes the order of floating-point sums, so the bytes differ; the
inner products then estimate the norm of the difference (each is ``<x - y, r>`` with
``E[<d, r>^2] = |d|^2`` for random signs r), and the replay matches when that estimate, relative
to the stored norm, is within the dtype's replay tolerance (:data:`REPLAY_TOLERANCES`).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

CONFIG: dict[str, Any] = {}  # @config: replaced by the point's configuration when a bundle is written

CONFIG_FILE = "point.json"
DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
GRAD_NAMES = ("dq", "dk", "dv")
# How far a replay's output may be from the stored one (relative, in norm). A replay differs only
# in the order of floating-point sums: ~sqrt(K) ulp for K-term sums in float32 stays near 1e-5,
# and half precision rounds each element once more (an ulp is 1e-3 in float16, 8e-3 in bfloat16).
REPLAY_TOLERANCES = {"float64": 1e-10, "float32": 1e-4, "float16": 3e-3, "bfloat16": 2e-2}
N_PROJECTIONS = 8
TIME_WITHIN = 0.20  # the replay's median is "close" to the run's within this fraction
EXIT_MISMATCH = 1
EXIT_SETUP = 2


# --- the point's inputs and pass, exactly as attnbench builds them ------------------------------


def make_inputs(point: dict[str, Any], device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """q, k: [B, H, N, D]; v, g: [B, H, N, M]: standard normal from the point's seed, drawn in
    float32 on the CPU in the order q, k, v, g (so every device gets the same values), then cast
    to the point's dtype on ``device`` (attnbench.measure.inputs.make_inputs)."""
    gen = torch.Generator().manual_seed(int(point["seed"]))
    b, h, n, d, m = (int(point[k]) for k in ("B", "H", "N", "D", "M"))
    dtype = DTYPES[point["dtype"]]

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)

    return rand(b, h, n, d), rand(b, h, n, d), rand(b, h, n, m), rand(b, h, n, m)


def make_pass(
    fn: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    point: dict[str, Any],
    params: dict[str, Any],
) -> Callable[[], object]:
    """One call of the point's pass (attnbench.measure.inputs.make_pass): ``fwd`` under no_grad;
    ``bwd`` one backward through a graph kept from one forward; ``fwdbwd`` both."""
    q, k, v, g = inputs
    causal = bool(point["causal"])
    if point["pass"] == "fwd":

        def fwd() -> object:
            with torch.no_grad():
                return fn(q, k, v, causal=causal, **params)

        return fwd
    leaves = [t.detach().requires_grad_(True) for t in (q, k, v)]
    if point["pass"] == "bwd":
        out = fn(*leaves, causal=causal, **params)

        def bwd() -> object:
            return torch.autograd.grad(out, leaves, g, retain_graph=True)

        return bwd

    def fwdbwd() -> object:
        o = fn(*leaves, causal=causal, **params)
        return torch.autograd.grad(o, leaves, g)

    return fwdbwd


def outputs(
    fn: Callable[..., torch.Tensor],
    inputs: tuple[torch.Tensor, ...],
    point: dict[str, Any],
    params: dict[str, Any],
) -> dict[str, torch.Tensor]:
    """out [B, H, N, M], and for a backward pass dq, dk, dv for the upstream gradient g: what the
    checksums and the oracle compare (attnbench.measure.correctness.run_impl_for_check)."""
    q, k, v, g = inputs
    grads = point["pass"] in ("bwd", "fwdbwd")
    leaves = [t.detach().clone().requires_grad_(grads) for t in (q, k, v)]
    with torch.set_grad_enabled(grads):
        out = fn(*leaves, causal=bool(point["causal"]), **params)
    result = {"out": out.detach()}
    if grads:
        result.update(zip(GRAD_NAMES, torch.autograd.grad(out, leaves, g), strict=True))
    return result


# --- checksums --------------------------------------------------------------------------------


def sign_vector(n: int, j: int) -> torch.Tensor:
    """The j-th fixed vector of n signs (+-1.0, float64), from an integer hash of the index: the
    same on every machine and torch version (no random generator involved)."""
    h = (torch.arange(n, dtype=torch.int64) * 0x9E3779B1 + (j + 1) * 0x7F4A7C15) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    h = (h * 0x045D9F3B) & 0xFFFFFFFF
    h = h ^ (h >> 16)
    return (h & 1).to(torch.float64) * 2.0 - 1.0


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The raw bytes of ``t`` on the CPU, row-major."""
    return t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes()


def checksum(t: torch.Tensor) -> dict[str, Any]:
    """shape, dtype, sha256 of the bytes, count of NaN/Inf, and in float64: sum, sum of squares,
    and the inner products with :data:`N_PROJECTIONS` sign vectors."""
    x = t.detach().to("cpu")
    f = x.to(torch.float64).flatten()
    finite = torch.isfinite(f)
    f = torch.where(finite, f, torch.zeros_like(f))
    return {
        "shape": list(x.shape),
        "dtype": str(x.dtype).replace("torch.", ""),
        "sha256": hashlib.sha256(tensor_bytes(x)).hexdigest(),
        "nonfinite": int((~finite).sum()),
        "sum": float(f.sum()),
        "sumsq": float((f * f).sum()),
        "projections": [float((f * sign_vector(f.numel(), j)).sum()) for j in range(N_PROJECTIONS)],
    }


def checksums(tensors: dict[str, torch.Tensor]) -> dict[str, dict[str, Any]]:
    return {name: checksum(t) for name, t in tensors.items()}


def inputs_sha256(inputs: tuple[torch.Tensor, ...]) -> str:
    """One SHA-256 over q, k, v, g as made (their dtype, on the CPU)."""
    h = hashlib.sha256()
    for t in inputs:
        h.update(tensor_bytes(t))
    return h.hexdigest()


def compare(got: dict[str, dict[str, Any]], stored: dict[str, dict[str, Any]], dtype: str) -> list[dict[str, Any]]:
    """One verdict per stored tensor: ``identical`` (same bytes), ``match`` (estimated relative
    difference within the replay tolerance), ``nonfinite`` (NaN/Inf reproduced, same count) or
    ``MISMATCH``; with ``rel_diff`` (the estimate) and ``why``."""
    tol = REPLAY_TOLERANCES[dtype]
    rows = []
    for name in sorted(stored, key=lambda t: ("out", *GRAD_NAMES).index(t) if t in ("out", *GRAD_NAMES) else 9):
        s = stored[name]
        g = got.get(name)
        row: dict[str, Any] = {"tensor": name, "rel_diff": None, "tolerance": tol, "why": ""}
        if g is None:
            rows.append({**row, "verdict": "MISMATCH", "why": "not produced"})
            continue
        if g["shape"] != s["shape"] or g["dtype"] != s["dtype"]:
            why = f"{g['dtype']}{g['shape']} where the bundle has {s['dtype']}{s['shape']}"
            rows.append({**row, "verdict": "MISMATCH", "why": why})
            continue
        if g["sha256"] == s["sha256"]:
            rows.append({**row, "verdict": "identical", "rel_diff": 0.0})
            continue
        if g["nonfinite"] or s["nonfinite"]:
            same = g["nonfinite"] == s["nonfinite"]
            why = f"{g['nonfinite']} NaN/Inf values, the bundle has {s['nonfinite']}"
            rows.append({**row, "verdict": "nonfinite" if same else "MISMATCH", "why": why})
            continue
        norm = math.sqrt(s["sumsq"])
        n = math.prod(s["shape"])
        diffs = [a - b for a, b in zip(g["projections"], s["projections"], strict=True)]
        est = math.sqrt(sum(d * d for d in diffs) / len(diffs))
        rel = est / norm if norm > 0 else (0.0 if est == 0 else math.inf)
        norm_rel = abs(math.sqrt(g["sumsq"]) - norm) / norm if norm > 0 else math.sqrt(g["sumsq"])
        sum_ok = abs(g["sum"] - s["sum"]) <= tol * norm * math.sqrt(n)  # |sum(x - y)| <= sqrt(n) |x - y|
        ok = rel <= tol and norm_rel <= tol and sum_ok
        why = (
            "" if ok else f"norm differs by {norm_rel:.2g}" if norm_rel > tol else ("sum differs" if not sum_ok else "")
        )
        rows.append({**row, "verdict": "match" if ok else "MISMATCH", "rel_diff": rel, "why": why})
    return rows


# --- the impl, the oracle, the timer ------------------------------------------------------------


def load_impl(cfg: dict[str, Any]) -> Callable[..., torch.Tensor]:
    """The impl: by its attnbench registry name, or a plugin by its entry point ``module:attr``."""
    imp = cfg["impl"]
    if imp.get("entry_point"):
        module, _, attr = imp["entry_point"].partition(":")
        obj: Any = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        fn = getattr(obj, "fn", obj)  # an entry point may name an ImplSpec
        if not callable(fn):
            raise TypeError(f"entry point {imp['entry_point']!r} is not callable")
        return fn  # type: ignore[no-any-return]
    from attnbench.impls import registry  # deferred: in repro.py a plugin impl loads by entry point, not registry

    return registry.get(imp["name"]).fn


def oracle(cfg: dict[str, Any], inputs: tuple[torch.Tensor, ...], got: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The float64 reference of the impl's family on the same inputs, judged as attnbench judges
    a point (attnbench.measure.correctness): err_out, err_dq, ..., tolerance, correct."""
    # deferred: repro.py loads the oracle only when it checks (not with --calls or --no-check)
    from attnbench.impls import registry
    from attnbench.measure import correctness
    from attnbench.measure.inputs import Inputs

    point = cfg["point"]
    ref = registry.get(cfg["reference"])
    label, ref_fn = correctness.reference_plan(ref.name, ref.fn, int(point["N"]))
    ref_out = correctness.reference_outputs(ref_fn, Inputs(*inputs), bool(point["causal"]), "dq" in got)
    return {"reference": label, **correctness.judge(got, ref_out, point["dtype"], cfg.get("tolerance"))}


def time_pass(fn: Callable[[], object], threads: int, min_run_time: float, label: str) -> dict[str, Any]:
    """torch.utils.benchmark's blocked_autorange: median and IQR per call, in ms."""
    from torch.utils import benchmark  # deferred: repro.py loads it only when it times (not --calls, --no-time)

    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads, label=label)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return {
        "median_ms": m.median * 1e3,
        "iqr_ms": m.iqr * 1e3,
        "runs": len(m.times),
        "calls_per_run": m.number_per_run,
        "timer": "torch.utils.benchmark.Timer.blocked_autorange",
    }


def nsight_calls(fn: Callable[[], object], calls: int, device: str) -> None:
    """Two warm-up calls, then ``calls`` calls between cudaProfilerStart and cudaProfilerStop,
    each in an NVTX range (CUDA); on the CPU just the calls."""
    fn()
    fn()
    if device != "cuda":
        for _ in range(calls):
            fn()
        return
    torch.cuda.synchronize()
    torch.cuda.profiler.start()
    for i in range(calls):
        torch.cuda.nvtx.range_push(f"attnbench: call {i + 1}")
        fn()
        torch.cuda.synchronize()
        torch.cuda.nvtx.range_pop()
    torch.cuda.profiler.stop()


# --- the script ---------------------------------------------------------------------------------


def load_config() -> dict[str, Any]:
    """``CONFIG``, or (the script as shipped in attnbench) ``point.json`` beside this file."""
    if CONFIG:
        return CONFIG
    path = Path(__file__).with_name(CONFIG_FILE)
    if not path.is_file():
        raise FileNotFoundError(f"no configuration: CONFIG is empty and {path} does not exist")
    return json.loads(path.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def _ms(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for unit, size in (("s", 1e3), ("ms", 1.0), ("us", 1e-3), ("ns", 1e-6)):
        if abs(x) >= size or unit == "ns":
            return f"{x / size:.3g} {unit}"
    return f"{x:.3g} ms"


def _args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--device", help="cpu or cuda (default: the point's)")
    ap.add_argument("--threads", type=int, help="torch threads (default: the run's)")
    ap.add_argument("--min-run-time", type=float, default=2.0, help="seconds of timing (default 2)")
    ap.add_argument("--calls", type=int, help="nsys/ncu mode: run this many calls in a capture range, nothing else")
    ap.add_argument("--no-check", action="store_true", help="skip the checksum and oracle checks")
    ap.add_argument("--no-time", action="store_true", help="skip the timing")
    ap.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return ap.parse_args(argv)


def _check(
    cfg: dict[str, Any], fn: Callable[..., torch.Tensor], inputs: tuple[torch.Tensor, ...], say: Any
) -> dict[str, Any]:
    """The inputs' digest, each output tensor against its stored checksum, the float64 oracle."""
    point, params = cfg["point"], dict(cfg.get("params") or {})
    same = inputs_sha256(tuple(t.cpu() for t in inputs)) == cfg.get("inputs_sha256")
    if not same:
        say("inputs  DIFFER from the bundle's (torch's random generator gave other values): compare with care")
    got = outputs(fn, inputs, point, params)
    stored = cfg.get("outputs") or {}
    rows = compare(checksums(got), stored, point["dtype"]) if stored else []
    if not stored:
        say("output  no stored checksums (the point failed when the bundle was made): the oracle only")
    for r in rows:
        diff = ""
        if r["verdict"] == "match":
            diff = f": relative difference ~{r['rel_diff']:.2g} (replay tolerance {r['tolerance']:g})"
        say(f"output  {r['tensor']}: {r['verdict']}{diff}{': ' + r['why'] if r['why'] else ''}")
    verdict = oracle(cfg, inputs, got)
    keys = ("err_out", "err_dq", "err_dk", "err_dv")
    errs = ", ".join(f"{k[4:]} {verdict[k]:.2g}" for k in keys if verdict.get(k) is not None)
    ok = "within" if verdict["correct"] else "FAILS"
    say(f"oracle  {verdict['reference']}: {errs}; {ok} tolerance {verdict['tolerance']:g}")
    if verdict["correctness_error"]:
        say(f"        {verdict['correctness_error']}")
    good = verdict["correct"] and all(r["verdict"] != "MISMATCH" for r in rows)
    return {"inputs_identical": same, "checksums": rows, "oracle": verdict, "ok": good}


def _time(
    cfg: dict[str, Any], call: Callable[[], object], threads: int, min_run_time: float, say: Any
) -> dict[str, Any]:
    """The timing line: median and IQR here, next to the run's median."""
    point, run = cfg["point"], cfg.get("run") or {}
    t = time_pass(call, threads, min_run_time, point["point_id"])
    runs = f"{t['runs']} runs of {t['calls_per_run']} call{'s' if t['calls_per_run'] != 1 else ''}"
    line = f"time    median {_ms(t['median_ms'])}, IQR {_ms(t['iqr_ms'])} ({runs})"
    stored = run.get("time_ms_median")
    if stored:
        ratio = t["median_ms"] / stored
        close = "within" if abs(ratio - 1) <= TIME_WITHIN else "NOT within"
        line += f"; {run.get('source', 'the run')}: {_ms(stored)} ({ratio:.2f}x, {close} {TIME_WITHIN:.0%})"
        t.update(stored_median_ms=stored, ratio=ratio, within=abs(ratio - 1) <= TIME_WITHIN)
    say(line)
    return t


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    cfg = load_config()
    point, params = cfg["point"], dict(cfg.get("params") or {})
    device = args.device or point.get("device", "cpu")
    threads = args.threads or int(cfg.get("threads") or torch.get_num_threads())
    say: Any = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    if device == "cuda" and not torch.cuda.is_available():
        print("error: the point runs on cuda and no CUDA device is visible", file=sys.stderr)
        return EXIT_SETUP
    torch.set_num_threads(threads)
    try:
        fn = load_impl(cfg)
    except Exception as exc:
        print(f"error: cannot import impl {cfg['impl']['name']!r}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_SETUP
    inputs = make_inputs(point, device)
    if args.calls:
        nsight_calls(make_pass(fn, inputs, point, params), args.calls, device)
        return 0
    made, run = cfg.get("made_by") or {}, cfg.get("run") or {}
    say(f"point   {point['point_id']}")
    here = platform.processor() or platform.machine()
    say(f"here    torch {torch.__version__} on {device} ({here}), {threads} thread{'s' if threads != 1 else ''}")
    say(f"bundle  torch {made.get('torch', '?')} on {made.get('machine', '?')}, {cfg.get('threads', '?')} threads")
    if run.get("status") not in (None, "ok"):
        say(f"run     recorded {run['status']}: {run.get('error')}")
    if cfg.get("failure"):
        say(f"bundle  made while the point failed: {cfg['failure']}")
    summary: dict[str, Any] = {"point_id": point["point_id"], "device": device, "threads": threads}
    status = 0
    try:
        if not args.no_check:
            summary.update(_check(cfg, fn, inputs, say))
            status = 0 if summary["ok"] else EXIT_MISMATCH
        if not args.no_time:
            summary["timing"] = _time(cfg, make_pass(fn, inputs, point, params), threads, args.min_run_time, say)
    except Exception as exc:  # the point fails here: that is what the bundle reproduces
        say(f"error   {type(exc).__name__}: {' '.join(str(exc).split())}")
        summary["error"] = f"{type(exc).__name__}: {exc}"
        status = EXIT_MISMATCH
    summary["status"] = status
    if args.json:
        print(json.dumps(summary, indent=1, default=str))
    return status


if __name__ == "__main__":
    sys.exit(main())
