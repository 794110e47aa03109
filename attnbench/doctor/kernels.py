"""Every impl available on the device against the float64 oracle (attnbench.measure.correctness)
at two small sizes: out and, where the impl has a backward, dq, dk and dv."""

from __future__ import annotations

from typing import Any

from attnbench.doctor.result import FAIL, PASS, SKIP, Check
from attnbench.impls import registry
from attnbench.measure import correctness
from attnbench.measure.inputs import make_inputs
from attnbench.point import DType, Pass, Point

# (B, H, N, D, M): a tiny one, and one whose N is not a power of two (chunk tails, masks).
SIZES = ((1, 2, 64, 16, 16), (2, 3, 130, 32, 24))
SEED = 0


def _point(spec: Any, device: str, size: tuple[int, int, int, int, int]) -> Point:
    b, h, n, d, m = size
    dtype = "float32" if "float32" in spec.dtypes else spec.dtypes[0]
    causal = True if True in spec.causal else spec.causal[0]
    pass_ = "fwdbwd" if spec.backward else "fwd"
    return Point(spec.name, Pass(pass_), causal, DType(dtype), B=b, H=h, N=n, D=d, M=m, seed=SEED, device=device)


def check_one(spec: Any, device: str) -> Check:
    """Both sizes for one impl (a failure to run is a failed check, with the error)."""
    why = spec.unavailable_reason(device)
    if why:
        return Check("kernels", spec.name, SKIP, f"{spec.name}: {why}")
    results = []
    for size in SIZES:
        point = _point(spec, device, size)
        skip = spec.skip_reason(point.as_mapping())
        if skip:
            results.append({"size": size, "skipped": skip})
            continue
        try:
            inp = make_inputs(point)
            leaves = correctness.check_leaves(inp, spec.backward)
            params = dict(spec.params)
            got = correctness.run_impl_for_check(spec.fn, leaves, inp.g, point.causal, params, spec.backward)
            ref_spec = registry.get(spec.reference_name)
            label, ref_fn = correctness.reference_plan(ref_spec.name, ref_spec.fn, point.N, ref_spec.reference_long)
            ref = correctness.reference_outputs(ref_fn, inp, point.causal, spec.backward)
            verdict = correctness.judge(got, ref, point.dtype.value)
        except Exception as exc:
            verdict = {
                "correct": False,
                "correctness_error": f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:300],
            }
        results.append({"size": size, "dtype": point.dtype.value, **verdict})
    checked = [r for r in results if "correct" in r]
    data = {"results": results}
    if not checked:
        return Check("kernels", spec.name, SKIP, f"{spec.name}: {results[0]['skipped']}", None, data)
    bad = [r for r in checked if not r["correct"]]
    shapes = " and ".join(f"B{s[0]} H{s[1]} N{s[2]} D{s[3]} M{s[4]}" for s in (r["size"] for r in checked))
    if bad:
        first = bad[0]
        return Check(
            "kernels",
            spec.name,
            FAIL,
            f"{spec.name} wrong at {shapes}: {first['correctness_error']}",
            "its numbers are not to be trusted; report the JSON bundle (--out)",
            data,
        )
    worst = max((r.get(f"err_{t}") or 0.0) for r in checked for t in ("out", "dq", "dk", "dv"))
    grads = "out, dq, dk, dv" if spec.backward else "out"
    return Check(
        "kernels",
        spec.name,
        PASS,
        f"{spec.name}: {grads} match the float64 oracle at {shapes} ({checked[0]['dtype']}, worst relative error {worst:.2g})",
        None,
        data,
    )


def check_kernels(device: str, impls: list[str] | None = None) -> list[Check]:
    """One check per registered impl (or ``impls``), skipped where it cannot run on ``device``."""
    specs = registry.all_specs()
    names = impls if impls is not None else sorted(specs)
    return [check_one(registry.get(n), device) for n in names]
