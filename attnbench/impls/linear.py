"""Linear attention (Eq. 4-12): the quadratic reference and the materialised prefix-sum form."""

from __future__ import annotations

import torch

from attnbench.impls.common import EPS, causal_keep_mask, check_shapes, feature_map
from attnbench.impls.registry import ALL_DTYPES, register
from attnbench.point import DType


def _elem(point: dict) -> int:
    return DType(point["dtype"]).itemsize


def _quadratic_bytes(point: dict) -> int:
    copies = 4 if point.get("pass") in ("bwd", "fwdbwd") else 2
    return copies * point["B"] * point["H"] * point["N"] ** 2 * _elem(point)


def _cumsum_bytes(point: dict) -> int:
    if not point["causal"]:
        return 0
    copies = 5 if point.get("pass") in ("bwd", "fwdbwd") else 2
    return copies * point["B"] * point["H"] * point["N"] * point["D"] * point["M"] * _elem(point)


@register(
    "linear-quadratic",
    family="linear",
    dtypes=ALL_DTYPES,
    reference="linear-quadratic",
    est_bytes=_quadratic_bytes,
    description="linear attention the O(N^2) way: masked phi(Q) phi(K)^T V, normalised (the linear reference)",
)
def linear_quadratic(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, q_offset: int | None = None
) -> torch.Tensor:
    """(A v) / (A 1 + eps) with A = phi(q) phi(k)^T, lower-triangular when causal.

    q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M]. ``q_offset`` as in softmax: the
    query rows start at key position ``q_offset`` (blockwise reference evaluation).
    """
    if q_offset is None:
        check_shapes(q, k, v)
    a = feature_map(q) @ feature_map(k).transpose(-1, -2)
    if causal:
        a = a * causal_keep_mask(q.shape[-2], k.shape[-2], q_offset or 0, q.device)
    return (a @ v) / (a.sum(dim=-1, keepdim=True) + EPS)


@register(
    "linear-cumsum",
    family="linear",
    dtypes=ALL_DTYPES,
    est_bytes=_cumsum_bytes,
    description="causal: every prefix state S_i materialised by cumsum, O(N D M) memory; non-causal: associative form",
)
def linear_cumsum(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """Eq. 8-12 with all S_i = sum_{j<=i} phi(K_j) V_j^T kept ([B, H, N, D, M]).

    q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M].
    """
    check_shapes(q, k, v)
    qf, kf = feature_map(q), feature_map(k)
    if not causal:
        return associative(qf, kf, v)
    s = torch.einsum("bhnd,bhnm->bhndm", kf, v).cumsum(dim=2)
    z = kf.cumsum(dim=2)
    num = torch.einsum("bhnd,bhndm->bhnm", qf, s)
    den = (qf * z).sum(dim=-1, keepdim=True)
    return num / (den + EPS)


def associative(qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Non-causal linear attention from features (Eq. 5): phi(Q) (phi(K)^T V) / phi(Q) sum phi(K)."""
    kv = kf.transpose(-1, -2) @ v  # [B, H, D, M]
    z = kf.sum(dim=-2, keepdim=True)  # [B, H, 1, D]
    den = (qf * z).sum(dim=-1, keepdim=True)
    return (qf @ kv) / (den + EPS)
