"""The correctness oracle: a point's output and gradients against a float64 reference.

The reference is the family's registered reference implementation (``softmax`` or
``linear-quadratic``) evaluated in float64 on the point's own inputs (upcast after they were
rounded to the point's dtype). It runs one block of query rows at a time, each block
differentiated on its own, so its memory stays bounded while the math is exactly the quadratic
form. Past :data:`SOFTMAX_ONLINE_MIN_N` the softmax reference is :func:`softmax_online_reference`:
blockwise online softmax with a hand-written backward, memory O(B*H*block^2) instead of a block
of rows against every key. A family's own long-N form (the linear family's chunked form) comes
from the caller (``long_form`` of :func:`reference_plan`): this module imports no impl. Results
are cached on disk per input set: every impl and pass at the same shape, dtype and seed shares
one reference.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from attnbench.measure.inputs import Inputs

TOLERANCES = {"float64": 1e-9, "float32": 1e-3, "float16": 1e-2, "bfloat16": 3e-2}
GRAD_NAMES = ("dq", "dk", "dv")
_BLOCK_ELEMS = 2**25  # per-block score matrix size of the blockwise reference
# Past this N a family's long-N form is used when the caller supplies one (the linear family's
# chunked form: exact in exact arithmetic, equal to the quadratic form to ~1e-15): the O(N^2)
# form in float64 would take half a minute per input set on 2 cores.
QUADRATIC_REF_MAX_N = 4096
# Past this N the softmax reference runs as blockwise online softmax: bounded memory, on the
# inputs' device. Not earlier: on a CPU it spends about 1.4x the time of the blockwise form
# (it evaluates exp twice), and up to N = 8192 the blockwise form's memory is a few hundred MiB.
SOFTMAX_ONLINE_MIN_N = 8192
_ONLINE_BLOCK_ELEMS = 2**22  # B*H*block^2 score elements of one online block (32 MiB in float64)


class OwnGradsReference:
    """Marks a reference that computes its own gradients: called as
    ``fn(q, k, v, g, causal=..., with_grads=...) -> {"out", "dq", "dk", "dv"}`` on float64 tensors."""

    own_grads = True

    def __init__(self, fn: Callable[..., dict[str, torch.Tensor]]) -> None:
        self.fn = fn

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        return self.fn(*args, **kwargs)


def reference_plan(
    ref_name: str,
    ref_fn: Callable[..., torch.Tensor],
    n: int,
    long_form: tuple[str, Callable[..., torch.Tensor]] | None = None,
) -> tuple[str, Callable[..., Any]]:
    """(label, function) evaluating the family reference ``ref_name`` at sequence length ``n``.

    ``long_form``: (label, function) of the family's own form for N past
    :data:`QUADRATIC_REF_MAX_N`, from the caller (the registry); without one the blockwise
    quadratic form is used at every N (same verdict, slower).
    """
    if ref_name == "softmax" and n > SOFTMAX_ONLINE_MIN_N:
        return "softmax-online float64", OwnGradsReference(softmax_online_reference)
    if long_form is not None and n > QUADRATIC_REF_MAX_N:
        return long_form
    return f"{ref_name} float64", ref_fn


def _online_block(b: int, h: int) -> int:
    return max(16, int(math.sqrt(_ONLINE_BLOCK_ELEMS / max(1, b * h))))


def _scores(
    q: torch.Tensor, k: torch.Tensor, rows: tuple[int, int], keys: tuple[int, int], causal: bool, scale: float
) -> torch.Tensor:
    """scale * q[rows] k[keys]^T, -inf where key > row when causal. [B, H, rows, keys]."""
    s = (q[:, :, rows[0] : rows[1]] @ k[:, :, keys[0] : keys[1]].transpose(-1, -2)) * scale
    if causal and keys[1] - 1 > rows[0]:  # some key of the block lies after some row
        r = torch.arange(rows[0], rows[1], device=q.device).unsqueeze(1)
        c = torch.arange(keys[0], keys[1], device=q.device).unsqueeze(0)
        s = s.masked_fill(c > r, float("-inf"))
    return s


def softmax_online_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    g: torch.Tensor,
    *,
    causal: bool,
    with_grads: bool,
    block: int | None = None,
) -> dict[str, torch.Tensor]:
    """Softmax attention softmax(q k^T / sqrt(D)) v and its gradients for upstream ``g``, one
    ``block`` x ``block`` tile of scores at a time (float64 in, float64 out).

    q, k: [B, H, N, D]; v, g: [B, H, N, M]. Forward: the online softmax (running row max and
    sum, rescaled as each key block arrives) with the row log-sum-exp kept. Backward: with
    P = exp(S - lse) recomputed per tile and delta = rowsum(g * out): dV += P^T g,
    dS = P * (g V^T - delta), dQ += dS K * scale, dK += dS^T Q * scale. Memory is the inputs,
    the outputs and O(B*H*block^2); the arithmetic is exactly that of the quadratic form.
    """
    b, h, n, d = q.shape
    scale = d**-0.5
    bs = block or _online_block(b, h)
    out = torch.empty_like(v)
    lse = torch.empty(b, h, n, 1, dtype=q.dtype, device=q.device)
    for s in range(0, n, bs):
        e = min(n, s + bs)
        row_max = torch.full((b, h, e - s, 1), float("-inf"), dtype=q.dtype, device=q.device)
        row_sum = torch.zeros(b, h, e - s, 1, dtype=q.dtype, device=q.device)
        acc = torch.zeros(b, h, e - s, v.shape[-1], dtype=v.dtype, device=v.device)
        for t in range(0, e if causal else n, bs):  # key block 0 is seen by every row: max finite
            u = min(e if causal else n, t + bs)
            sc = _scores(q, k, (s, e), (t, u), causal, scale)
            new_max = torch.maximum(row_max, sc.amax(dim=-1, keepdim=True))
            p = torch.exp(sc - new_max)
            alpha = torch.exp(row_max - new_max)
            row_sum = row_sum * alpha + p.sum(dim=-1, keepdim=True)
            acc = acc * alpha + p @ v[:, :, t:u]
            row_max = new_max
        out[:, :, s:e] = acc / row_sum
        lse[:, :, s:e] = row_max + torch.log(row_sum)
    result = {"out": out}
    if not with_grads:
        return result
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    delta = (g * out).sum(dim=-1, keepdim=True)  # [B, H, N, 1]
    for s in range(0, n, bs):
        e = min(n, s + bs)
        gi = g[:, :, s:e]
        for t in range(0, e if causal else n, bs):
            u = min(e if causal else n, t + bs)
            p = torch.exp(_scores(q, k, (s, e), (t, u), causal, scale) - lse[:, :, s:e])
            dv[:, :, t:u] += p.transpose(-1, -2) @ gi
            ds = p * (gi @ v[:, :, t:u].transpose(-1, -2) - delta[:, :, s:e])
            dq[:, :, s:e] += (ds @ k[:, :, t:u]) * scale
            dk[:, :, t:u] += (ds.transpose(-1, -2) @ q[:, :, s:e]) * scale
    result.update(dq=dq, dk=dk, dv=dv)
    return result


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
    ref_fn: Callable[..., Any], inp: Inputs, causal: bool, with_grads: bool
) -> dict[str, torch.Tensor]:
    """out (and dq, dk, dv for upstream gradient inp.g) in float64 on the CPU."""
    if getattr(ref_fn, "own_grads", False):
        # bounded memory, so it can run where the inputs are: float64 on a GPU turns a long-N
        # reference from minutes on the host into seconds
        q, k, v, g = (t.detach().to(dtype=torch.float64) for t in (inp.q, inp.k, inp.v, inp.g))
        got = ref_fn(q, k, v, g, causal=causal, with_grads=with_grads)
        return {name: t.to("cpu") for name, t in got.items()}
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
    ref_fn: Callable[..., Any],
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
    # a name of its own per writer: two lanes or shards may compute the same reference at once
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
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
