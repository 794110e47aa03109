"""Inputs of a point, made from its seed, and the callables that run each pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
PASSES = ("fwd", "bwd", "fwdbwd")


@dataclass
class Inputs:
    """q, k: [B, H, N, D]; v: [B, H, N, M]; g: [B, H, N, M], the upstream gradient."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    g: torch.Tensor

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.q, self.k, self.v, self.g))


def make_inputs(point: dict[str, Any], device: str) -> Inputs:
    """Standard-normal q, k, v and g from the point's seed (generated in fp32 on the CPU, so the
    same seed gives the same values on every device), cast to the point's dtype."""
    gen = torch.Generator().manual_seed(int(point["seed"]))
    b, h, n, d, m = (point[x] for x in ("B", "H", "N", "D", "M"))
    dtype = DTYPES[point["dtype"]]

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float32).to(device=device, dtype=dtype)

    return Inputs(q=rand(b, h, n, d), k=rand(b, h, n, d), v=rand(b, h, n, m), g=rand(b, h, n, m))


def make_pass(
    fn: Callable[..., torch.Tensor], inp: Inputs, point: dict[str, Any], params: dict[str, Any]
) -> Callable[[], object]:
    """A zero-argument callable doing one ``fwd``, ``bwd`` or ``fwdbwd`` of ``fn`` on ``inp``.

    fwd runs under no_grad (inference). bwd runs the forward once, here, and each call is
    one backward through the retained graph (torch.autograd.grad, so nothing accumulates).
    """
    causal = bool(point["causal"])
    pass_ = point["pass"]
    if pass_ == "fwd":

        def fwd() -> object:
            with torch.no_grad():
                return fn(inp.q, inp.k, inp.v, causal=causal, **params)

        return fwd
    leaves = [t.detach().requires_grad_(True) for t in (inp.q, inp.k, inp.v)]
    if pass_ == "bwd":
        out = fn(*leaves, causal=causal, **params)

        def bwd() -> object:
            return torch.autograd.grad(out, leaves, inp.g, retain_graph=True)

        return bwd
    if pass_ == "fwdbwd":

        def fwdbwd() -> object:
            o = fn(*leaves, causal=causal, **params)
            return torch.autograd.grad(o, leaves, inp.g)

        return fwdbwd
    raise ValueError(f"pass {pass_!r} is not one of {PASSES}")
