"""Chunkwise-parallel causal linear attention: C x C masked products inside a chunk, a carried
D x M state across chunks. Memory O(N C + N D M / C); everything is a matrix product."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from attnbench.impls.common import EPS, check_shapes, feature_map
from attnbench.impls.linear import associative
from attnbench.impls.recurrent import linear_state_factory
from attnbench.impls.registry import ALL_DTYPES, register, register_decoder, set_long_reference

DEFAULT_CHUNK = 64


def _check_chunk(point: dict) -> str | None:
    c = point.get("params", {}).get("chunk_size", DEFAULT_CHUNK)
    if not isinstance(c, int) or c < 1:
        return f"chunk_size must be a positive integer, got {c!r}"
    return None


@register(
    "linear-chunked",
    family="linear",
    dtypes=ALL_DTYPES,
    params={"chunk_size": DEFAULT_CHUNK},
    supports=_check_chunk,
    description="chunkwise-parallel linear attention (chunk size a parameter, default 64)",
)
def linear_chunked(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, chunk_size: int = DEFAULT_CHUNK
) -> torch.Tensor:
    """Causal linear attention by chunks. q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M].

    N need not be a multiple of ``chunk_size``: the tail is padded with zero *features*
    (phi(k) = 0 adds nothing to the state or the normaliser) and the padded rows are dropped.
    """
    b, h, n, d, m = check_shapes(q, k, v)
    qf, kf = feature_map(q), feature_map(k)
    if not causal:
        return associative(qf, kf, v)
    c = chunk_size
    pad = (-n) % c
    if pad:
        qf = F.pad(qf, (0, 0, 0, pad))
        kf = F.pad(kf, (0, 0, 0, pad))
        v = F.pad(v, (0, 0, 0, pad))
    nc = (n + pad) // c
    qc = qf.reshape(b, h, nc, c, d)
    kc = kf.reshape(b, h, nc, c, d)
    vc = v.reshape(b, h, nc, c, m)

    # Inside each chunk: the causal C x C block, exactly as in the quadratic form.
    a = (qc @ kc.transpose(-1, -2)) * torch.ones(c, c, dtype=torch.bool, device=q.device).tril()
    num = a @ vc
    den = a.sum(dim=-1, keepdim=True)

    # Across chunks: exclusive prefix sums of the per-chunk states (state before each chunk).
    kv = kc.transpose(-1, -2) @ vc  # [B, H, nc, D, M]
    s_prev = torch.cat([torch.zeros_like(kv[:, :, :1]), kv[:, :, :-1].cumsum(dim=2)], dim=2)
    ksum = kc.sum(dim=-2, keepdim=True)  # [B, H, nc, 1, D]
    z_prev = torch.cat([torch.zeros_like(ksum[:, :, :1]), ksum[:, :, :-1].cumsum(dim=2)], dim=2)
    num = num + qc @ s_prev
    den = den + (qc * z_prev).sum(dim=-1, keepdim=True)
    out = num / (den + EPS)
    return out.reshape(b, h, nc * c, m)[:, :, :n]


register_decoder(
    "linear-chunked", impl="linear-chunked", kind="recurrent-state", description="RNN state, prompt by the chunked form"
)(linear_state_factory("linear-chunked"))

# The float64 oracle of the linear family past N=4096: the quadratic form would take half a
# minute per input set on 2 cores; the chunked form is exact in exact arithmetic and equal to it
# to ~1e-15 (tests/test_correctness.py).
REFERENCE_CHUNK = 256
set_long_reference(
    "linear-quadratic",
    f"linear-chunked float64 C={REFERENCE_CHUNK}",
    functools.partial(linear_chunked, chunk_size=REFERENCE_CHUNK),
)
