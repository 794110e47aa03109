"""Linear attention as an RNN (Eq. 16-20): one token at a time, a D x M state and a D normaliser."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from attnbench.impls.common import EPS, check_shapes, feature_map
from attnbench.impls.registry import ALL_DTYPES, register


@dataclass
class RecurrentState:
    """s: [B, H, D, M] running sum of phi(k) v^T; z: [B, H, D] running sum of phi(k)."""

    s: torch.Tensor
    z: torch.Tensor

    @classmethod
    def zeros(cls, b: int, h: int, d: int, m: int, *, dtype: torch.dtype, device: torch.device) -> RecurrentState:
        return cls(
            s=torch.zeros(b, h, d, m, dtype=dtype, device=device),
            z=torch.zeros(b, h, d, dtype=dtype, device=device),
        )


def recurrent_step(state: RecurrentState, q_i: torch.Tensor, k_i: torch.Tensor, v_i: torch.Tensor) -> torch.Tensor:
    """Advance ``state`` by one token and return its output.

    q_i, k_i: [B, H, D]; v_i: [B, H, M] -> [B, H, M]. O(D M) time and memory per step.
    Out of place, so autograd can differentiate through a whole sequence.
    """
    qf, kf = feature_map(q_i), feature_map(k_i)
    state.s = state.s + kf.unsqueeze(-1) * v_i.unsqueeze(-2)
    state.z = state.z + kf
    num = (qf.unsqueeze(-2) @ state.s).squeeze(-2)
    den = (qf * state.z).sum(dim=-1, keepdim=True)
    return num / (den + EPS)


@register(
    "linear-recurrent",
    family="linear",
    causal=(True,),
    dtypes=ALL_DTYPES,
    description="token-by-token RNN form (causal only): a D x M state carried through a Python loop",
)
def linear_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """Causal linear attention step by step. q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M]."""
    b, h, n, d, m = check_shapes(q, k, v)
    if not causal:
        raise ValueError("linear-recurrent is causal only")
    state = RecurrentState.zeros(b, h, d, m, dtype=q.dtype, device=q.device)
    outs = [recurrent_step(state, q[:, :, i], k[:, :, i], v[:, :, i]) for i in range(n)]
    return torch.stack(outs, dim=2)
