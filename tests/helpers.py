"""Test helpers: float64 references and relative errors, shared by the numerics tests."""

from __future__ import annotations

import torch

from attnbench.measure.correctness import rel_error


def rand_qkvg(b: int, h: int, n: int, d: int, m: int, seed: int, dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(b, h, n, d), (b, h, n, d), (b, h, n, m), (b, h, n, m)]
    return [torch.randn(*s, generator=gen).to(dtype) for s in shapes]


def out_and_grads(fn, q, k, v, g, **kw):
    """out, dq, dk, dv of ``fn`` for upstream gradient ``g``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    out = fn(*leaves, **kw)
    grads = torch.autograd.grad(out, leaves, g)
    return [out.detach(), *grads]


def max_rel_error(fn, ref_fn, q, k, v, g, **kw) -> list[float]:
    """Relative errors of out, dq, dk, dv of ``fn`` (at the inputs' dtype) against ``ref_fn``
    evaluated in float64 on the same (rounded) inputs."""
    got = out_and_grads(fn, q, k, v, g, **kw)
    ref = out_and_grads(ref_fn, *(t.double() for t in (q, k, v, g)), **kw)
    return [rel_error(a, b) for a, b in zip(got, ref, strict=False)]
