"""Pieces every implementation shares: the feature map, the normaliser's eps, shape checks."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

# The paper's normaliser: V'_i = num_i / (den_i + EPS). Same value in every linear impl.
EPS = 1e-6


def feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1 (Eq. 7): strictly positive, non-zero gradient for x < 0."""
    return F.elu(x) + 1.0


def check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[int, int, int, int, int]:
    """Validate the SDPA layout and return (B, H, N, D, M).

    q, k: [B, H, N, D]; v: [B, H, N, M].
    """
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        raise ValueError(f"q, k, v must be 4-D [B, H, N, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape != k.shape:
        raise ValueError(f"q and k must have one shape; got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, H, N, M] matching q's B, H, N; got {tuple(v.shape)} for q {tuple(q.shape)}")
    b, h, n, d = q.shape
    return b, h, n, d, v.shape[-1]


def causal_keep_mask(n_q: int, n_k: int, q_offset: int, device: torch.device) -> torch.Tensor:
    """Boolean [n_q, n_k] mask, True where key j may be seen by query row r (j <= q_offset + r)."""
    return torch.ones(n_q, n_k, dtype=torch.bool, device=device).tril(diagonal=q_offset)


def interpreter_enabled() -> bool:
    """Triton's interpreter is on (``TRITON_INTERPRET=1``): its kernels then run on CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
