"""The correctness oracle: a point's output and gradients against a float64 reference.

The reference is the family's registered reference implementation (``softmax`` or
``linear-quadratic``) evaluated in float64 on the point's own inputs (upcast after they were
rounded to the point's dtype). For long sequences it runs one block of query rows at a time,
each block differentiated on its own, so its memory stays bounded while the math is exactly
the quadratic form. Results are cached on disk per input set: every impl and pass at the same
shape, dtype and seed shares one reference.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from attnbench.measure.inputs import Inputs

TOLERANCES = {"float64": 1e-9, "float32": 1e-3, "float16": 1e-2, "bfloat16": 3e-2}
GRAD_NAMES = ("dq", "dk", "dv")
_BLOCK_ELEMS = 2**25  # per-block score matrix size of the blockwise reference
# Past this N the linear family's float64 reference is evaluated in chunked form (exact in
# exact arithmetic, equal to the quadratic form to ~1e-15 in tests/test_correctness.py):
# the O(N^2) form in float64 would take half a minute per input set on 2 cores.
QUADRATIC_REF_MAX_N = 4096
REF_CHUNK = 256


def reference_plan(
    ref_name: str, ref_fn: Callable[..., torch.Tensor], n: int
) -> tuple[str, Callable[..., torch.Tensor]]:
    """(label, function) evaluating the family reference ``ref_name`` at sequence length ``n``."""
    if ref_name == "linear-quadratic" and n > QUADRATIC_REF_MAX_N:
        from attnbench.impls.chunked import linear_chunked

        return f"linear-chunked float64 C={REF_CHUNK}", functools.partial(linear_chunked, chunk_size=REF_CHUNK)
    return f"{ref_name} float64", ref_fn


def rel_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """||x - ref|| / ||ref|| in float64 (Frobenius norms); inf if ref is zero and x is not."""
    x64 = x.detach().to(device="cpu", dtype=torch.float64)
    r64 = ref.detach().to(device="cpu", dtype=torch.float64)
    den = r64.norm().item()
    num = (x64 - r64).norm().item()
    if den == 0.0:
        return 0.0 if num == 0.0 else math.inf
    return num / den


def reference_outputs(
    ref_fn: Callable[..., torch.Tensor], inp: Inputs, causal: bool, with_grads: bool
) -> dict[str, torch.Tensor]:
    """out (and dq, dk, dv for upstream gradient inp.g) in float64 on the CPU."""
    q, k, v, g = (t.detach().to(device="cpu", dtype=torch.float64) for t in (inp.q, inp.k, inp.v, inp.g))
    b, h, n, _ = q.shape
    blockwise = "q_offset" in inspect.signature(ref_fn).parameters
    rows = max(16, min(n, _BLOCK_ELEMS // max(1, n * b * h))) if blockwise else n
    out = torch.empty(v.shape, dtype=torch.float64)
    grads = {name: torch.zeros_like(t) for name, t in zip(GRAD_NAMES, (q, k, v), strict=False)}
    for s in range(0, n, rows):
        e = min(n, s + rows)
        kend = e if causal else n
        qb = q[:, :, s:e].clone().requires_grad_(with_grads)
        kb = k[:, :, :kend].clone().requires_grad_(with_grads)
        vb = v[:, :, :kend].clone().requires_grad_(with_grads)
        with torch.set_grad_enabled(with_grads):
            ob = ref_fn(qb, kb, vb, causal=causal, q_offset=s) if blockwise else ref_fn(qb, kb, vb, causal=causal)
        out[:, :, s:e] = ob.detach()
        if with_grads:
            gq, gk, gv = torch.autograd.grad(ob, (qb, kb, vb), g[:, :, s:e])
            grads["dq"][:, :, s:e] = gq
            grads["dk"][:, :, :kend] += gk
            grads["dv"][:, :, :kend] += gv
    result = {"out": out}
    if with_grads:
        result.update(grads)
    return result


def cached_reference(
    ref_name: str,
    ref_fn: Callable[..., torch.Tensor],
    inp: Inputs,
    point: dict[str, Any],
    with_grads: bool,
    cache_dir: Path | None,
) -> dict[str, torch.Tensor]:
    """:func:`reference_outputs`, memoised in ``cache_dir`` by reference and input identity."""
    if cache_dir is None:
        return reference_outputs(ref_fn, inp, bool(point["causal"]), with_grads)
    ident = {key: point[key] for key in ("B", "H", "N", "D", "M", "dtype", "causal", "seed")}
    ident["ref"] = ref_name
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"ref-{key}.pt"
    if path.exists():
        cached = torch.load(path)
        if not with_grads or all(n in cached for n in GRAD_NAMES):
            return cached
    result = reference_outputs(ref_fn, inp, bool(point["causal"]), with_grads)
    tmp = path.with_suffix(".tmp")
    try:  # the cache is an optimisation: a full disk or read-only directory never fails the check
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result, tmp)
        tmp.replace(path)
    except Exception:  # OSError, or torch's RuntimeError from its zip writer
        tmp.unlink(missing_ok=True)
    return result


def check_leaves(inp: Inputs, with_grads: bool) -> list[torch.Tensor]:
    """Fresh leaf copies of q, k, v for the check (made before any memory baseline)."""
    return [t.detach().clone().requires_grad_(with_grads) for t in (inp.q, inp.k, inp.v)]


def run_impl_for_check(
    fn: Callable[..., torch.Tensor],
    leaves: list[torch.Tensor],
    g: torch.Tensor,
    causal: bool,
    params: dict[str, Any],
    with_grads: bool,
) -> dict[str, torch.Tensor]:
    """The impl's out (and dq, dk, dv for upstream gradient ``g``) on ``leaves`` (q, k, v).

    With gradients this is exactly one fwd+bwd call, so the worker measures a fwdbwd point's
    peak memory around it instead of paying for one more call.
    """
    with torch.set_grad_enabled(with_grads):
        out = fn(*leaves, causal=causal, **params)
    result = {"out": out.detach()}
    if with_grads:
        for name, grad in zip(GRAD_NAMES, torch.autograd.grad(out, leaves, g), strict=False):
            result[name] = grad
    return result


def judge(
    got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor], dtype: str, tol: float | None = None
) -> dict[str, Any]:
    """Columns err_out, err_dq, err_dk, err_dv, tolerance, correct, correctness_error."""
    tolerance = TOLERANCES[dtype] if tol is None else tol
    row: dict[str, Any] = {f"err_{name}": None for name in ("out", *GRAD_NAMES)}
    problems: list[str] = []
    for name, x in got.items():
        r = ref[name]
        if tuple(x.shape) != tuple(r.shape):
            problems.append(f"{name} has shape {tuple(x.shape)}, expected {tuple(r.shape)}")
            continue
        if not torch.isfinite(x).all():
            row[f"err_{name}"] = math.inf
            problems.append(f"{name} has NaN or Inf")
            continue
        err = rel_error(x, r)
        row[f"err_{name}"] = err
        if x.numel() > 1 and (x.max() == x.min()).item() and not (r.max() == r.min()).item():
            problems.append(f"{name} is constant ({x.flatten()[0].item():g})")
        elif err > tolerance:
            problems.append(f"{name} relative error {err:.3g} > tolerance {tolerance:g}")
    row["tolerance"] = tolerance
    row["correct"] = not problems
    row["correctness_error"] = "; ".join(problems) or None
    return row
