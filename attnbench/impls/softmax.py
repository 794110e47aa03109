"""Softmax attention (Eq. 2): the materialised reference and PyTorch's SDPA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnbench.impls.common import causal_keep_mask, check_shapes
from attnbench.impls.registry import ALL_DTYPES, register


def _quadratic_bytes(point: dict) -> int:
    # scores and probabilities (plus their gradients in a backward): a few B*H*N^2 buffers.
    elem = 2 if point["dtype"] in ("float16", "bfloat16") else (8 if point["dtype"] == "float64" else 4)
    copies = 5 if point.get("pass") in ("bwd", "fwdbwd") else 2
    return copies * point["B"] * point["H"] * point["N"] ** 2 * elem


@register(
    "softmax",
    family="softmax",
    dtypes=ALL_DTYPES,
    reference="softmax",
    est_bytes=_quadratic_bytes,
    description="naive softmax attention, the N x N matrix materialised (the softmax reference)",
)
def softmax_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, q_offset: int | None = None
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v. q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M].

    ``q_offset`` places query row 0 at key position ``q_offset`` (used to evaluate the
    reference one block of query rows at a time); 0 for ordinary square attention.
    """
    if q_offset is None:
        check_shapes(q, k, v)
    scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    if causal:
        keep = causal_keep_mask(q.shape[-2], k.shape[-2], q_offset or 0, q.device)
        scores = scores.masked_fill(~keep, float("-inf"))
    return scores.softmax(dim=-1) @ v


@register(
    "sdpa",
    family="softmax",
    dtypes=ALL_DTYPES,
    description="torch.nn.functional.scaled_dot_product_attention (PyTorch picks the backend)",
)
def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """PyTorch's fused attention. q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M]."""
    check_shapes(q, k, v)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
