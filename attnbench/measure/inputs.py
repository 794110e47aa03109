"""Inputs of a point, made from its seed, and the callables that run each pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.point import DType, Pass, Point

_TORCH = {
    DType.FLOAT64: torch.float64,
    DType.FLOAT32: torch.float32,
    DType.FLOAT16: torch.float16,
    DType.BFLOAT16: torch.bfloat16,
}


def torch_dtype(dtype: DType | str) -> torch.dtype:
    """The torch dtype of a dtype name."""
    return _TORCH[DType(dtype)]


@dataclass
class Inputs:
    """q, k: [B, H, N, D]; v: [B, H, N, M]; g: [B, H, N, M], the upstream gradient."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    g: torch.Tensor

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.q, self.k, self.v, self.g))


def make_inputs(point: Point, device: str | None = None) -> Inputs:
    """Standard-normal q, k, v and g from the point's seed (generated in fp32 on the CPU, so the
    same seed gives the same values on every device), cast to the point's dtype, on ``device``
    (default: the point's)."""
    gen = torch.Generator().manual_seed(point.seed)
    b, h, n, d, m = point.B, point.H, point.N, point.D, point.M
    dtype = torch_dtype(point.dtype)
    device = device or point.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)

    return Inputs(q=rand(b, h, n, d), k=rand(b, h, n, d), v=rand(b, h, n, m), g=rand(b, h, n, m))


def make_pass(
    fn: Callable[..., torch.Tensor], inp: Inputs, point: Point, params: dict[str, Any]
) -> Callable[[], object]:
    """A zero-argument callable doing one ``fwd``, ``bwd`` or ``fwdbwd`` of ``fn`` on ``inp``.

    fwd runs under no_grad (inference). bwd runs the forward once, here, and each call is
    one backward through the retained graph (torch.autograd.grad, so nothing accumulates).
    """
    causal = point.causal
    pass_ = point.pass_
    if pass_ is Pass.FWD:

        def fwd() -> object:
            with torch.no_grad():
                return fn(inp.q, inp.k, inp.v, causal=causal, **params)

        return fwd
    leaves = [t.detach().requires_grad_(True) for t in (inp.q, inp.k, inp.v)]
    if pass_ is Pass.BWD:
        out = fn(*leaves, causal=causal, **params)

        def bwd() -> object:
            return torch.autograd.grad(out, leaves, inp.g, retain_graph=True)

        return bwd
    if pass_ is Pass.FWDBWD:

        def fwdbwd() -> object:
            o = fn(*leaves, causal=causal, **params)
            return torch.autograd.grad(o, leaves, inp.g)

        return fwdbwd
    raise ValueError(f"pass {pass_} has no kernel callable (decode is measured step by step)")
