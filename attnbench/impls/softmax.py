"""Softmax attention (Eq. 2): the materialised reference, PyTorch's SDPA, and their decoders
(a growing KV cache)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from attnbench.impls import registry
from attnbench.impls.common import causal_keep_mask, check_shapes
from attnbench.impls.decoding import Decoder, History, bind, empty_out
from attnbench.impls.registry import ALL_DTYPES, register, register_decoder
from attnbench.point import DType


def _quadratic_bytes(point: dict) -> int:
    # scores and probabilities (plus their gradients in a backward): a few B*H*N^2 buffers.
    elem = DType(point["dtype"]).itemsize
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


class KVCacheDecoder(Decoder):
    """Softmax attention with a growing KV cache: step i attends over i cached keys, O(i D) time
    and memory. ``attend`` is "naive" (scores materialised) or "sdpa" (PyTorch's fused kernel)."""

    def __init__(
        self,
        b: int,
        h: int,
        d: int,
        m: int,
        dtype: torch.dtype,
        device: Any,
        prefill_fn: Callable[..., Any],
        attend: str,
    ):
        self.cache = History(b, h, (d, m), dtype, device)
        self.prefill_fn = prefill_fn
        self.attend = attend

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.cache.extend(k, v)
        return self.prefill_fn(q, k, v, causal=True) if q.shape[2] else empty_out(q, v)

    def step(self, q_i: torch.Tensor, k_i: torch.Tensor, v_i: torch.Tensor) -> torch.Tensor:
        self.cache.append(k_i, v_i)
        k, v = self.cache.views()
        q = q_i.unsqueeze(2)  # [B, H, 1, D]: the newest token sees every cached one
        if self.attend == "sdpa":
            return F.scaled_dot_product_attention(q, k, v).squeeze(2)
        scores = (q @ k.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
        return (scores.softmax(dim=-1) @ v).squeeze(2)

    def advance(self, q_i: torch.Tensor, k_i: torch.Tensor, v_i: torch.Tensor) -> None:
        self.cache.append(k_i, v_i)

    def snapshot(self) -> int:
        return self.cache.len

    def restore(self, snap: int) -> None:
        self.cache.len = snap

    def state_bytes(self) -> tuple[int, int]:
        return self.cache.nbytes()


def _kv_factory(impl: str, attend: str) -> registry.DecoderFactory:
    def factory(b: int, h: int, d: int, m: int, dtype: torch.dtype, device: Any, params: dict[str, Any]) -> Decoder:
        return KVCacheDecoder(b, h, d, m, dtype, device, bind(impl, params), attend)

    return factory


register_decoder("softmax", impl="softmax", kind="kv-cache", description="growing KV cache, naive attention per step")(
    _kv_factory("softmax", "naive")
)
register_decoder("sdpa", impl="sdpa", kind="kv-cache", description="growing KV cache, SDPA per step")(
    _kv_factory("sdpa", "sdpa")
)
