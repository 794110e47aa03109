"""Linear attention as an RNN (Eq. 16-20): one token at a time, a D x M state and a D normaliser;
the same state as a decoder (constant memory per generated token)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.impls import registry
from attnbench.impls.common import EPS, check_shapes, feature_map
from attnbench.impls.decoding import Decoder, bind, empty_out
from attnbench.impls.registry import ALL_DTYPES, register, register_decoder


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


class RecurrentDecoder(Decoder):
    """Linear attention as an RNN (Eq. 16-20): a [B, H, D, M] state and a [B, H, D] normaliser,
    O(D M) time and constant memory per step. The prompt is prefilled by ``prefill_fn`` (a
    parallel causal form, its state then summed in one product) or, if None, token by token."""

    def __init__(
        self, b: int, h: int, d: int, m: int, dtype: torch.dtype, device: Any, prefill_fn: Callable[..., Any] | None
    ):
        self.state = RecurrentState.zeros(b, h, d, m, dtype=dtype, device=device)
        self.prefill_fn = prefill_fn

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if q.shape[2] == 0:
            return empty_out(q, v)
        if self.prefill_fn is None:
            outs = [recurrent_step(self.state, q[:, :, i], k[:, :, i], v[:, :, i]) for i in range(q.shape[2])]
            return torch.stack(outs, dim=2)
        out = self.prefill_fn(q, k, v, causal=True)
        kf = feature_map(k)
        self.state.s = self.state.s + kf.transpose(-1, -2) @ v
        self.state.z = self.state.z + kf.sum(dim=2)
        return out

    def step(self, q_i: torch.Tensor, k_i: torch.Tensor, v_i: torch.Tensor) -> torch.Tensor:
        return recurrent_step(self.state, q_i, k_i, v_i)

    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.state.s, self.state.z  # recurrent_step is out of place: references suffice

    def restore(self, snap: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.state.s, self.state.z = snap

    def state_bytes(self) -> tuple[int, int]:
        n = sum(t.numel() * t.element_size() for t in (self.state.s, self.state.z))
        return n, n


def linear_state_factory(prefill_impl: str | None) -> registry.DecoderFactory:
    """A recurrent-state decoder whose prompt is run by ``prefill_impl`` (None: token by token)."""

    def factory(b: int, h: int, d: int, m: int, dtype: torch.dtype, device: Any, params: dict[str, Any]) -> Decoder:
        fn = bind(prefill_impl, params) if prefill_impl else None
        return RecurrentDecoder(b, h, d, m, dtype, device, fn)

    return factory


register_decoder(
    "linear-recurrent", impl="linear-recurrent", kind="recurrent-state", description="RNN state, prompt token by token"
)(linear_state_factory(None))
