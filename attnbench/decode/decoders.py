"""Decoders: the incremental (token-by-token) form of an implementation, and their registry.

A decoder holds the state of one batch of sequences and offers

    prefill(q, k, v) -> out        q, k: [B, H, P, D]; v: [B, H, P, M] -> [B, H, P, M] (P may be 0)
    step(q_i, k_i, v_i) -> out_i   q_i, k_i: [B, H, D]; v_i: [B, H, M] -> [B, H, M]
    advance(q_i, k_i, v_i)         take the token into the state without computing its output
    snapshot() / restore(snap)     O(1) undo of the steps since the snapshot, so that one step
                                   can be timed repeatedly from the same state
    state_bytes() -> (live, allocated)  bytes of the state held (cache contents; buffers)

``fast_forward`` says whether the measurement may :meth:`advance` over the steps it does not
sample: true only where the state is the token history itself (recompute), so skipping the
outputs changes nothing but the time taken. Incremental decoders are stepped at every token.

Decoders are registered by name with :func:`register_decoder`; any registered implementation
``X`` also has the decoder ``X-recompute`` (no cache: the whole prefix is recomputed each
step, the paper's baseline). Another module (a compiled kernel, a plugin) registers its own
with the same decorator, e.g. ``register_decoder("linear-causal-cpu", impl="linear-causal-cpu",
kind="recurrent-state")(linear_state_factory("linear-causal-cpu"))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from attnbench.errors import UserError
from attnbench.impls import registry
from attnbench.impls.common import feature_map
from attnbench.impls.recurrent import RecurrentState, recurrent_step

RECOMPUTE_SUFFIX = "-recompute"


class Decoder:
    """Base class: see the module docstring for the protocol."""

    fast_forward = False

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, q_i: torch.Tensor, k_i: torch.Tensor, v_i: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def advance(self, q_i: torch.Tensor, k_i: torch.Tensor, v_i: torch.Tensor) -> None:
        self.step(q_i, k_i, v_i)

    def snapshot(self) -> Any:
        raise NotImplementedError

    def restore(self, snap: Any) -> None:
        raise NotImplementedError

    def state_bytes(self) -> tuple[int, int]:
        raise NotImplementedError


class History:
    """Growable [B, H, capacity, width] buffers, one per stream; capacity doubles when full."""

    def __init__(self, b: int, h: int, widths: tuple[int, ...], dtype: torch.dtype, device: Any, capacity: int = 256):
        self.bufs = [torch.empty(b, h, capacity, w, dtype=dtype, device=device) for w in widths]
        self.len = 0

    def _reserve(self, n: int) -> None:
        cap = self.bufs[0].shape[2]
        if n <= cap:
            return
        new_cap = max(n, 2 * cap)
        for i, old in enumerate(self.bufs):
            new = old.new_empty(old.shape[0], old.shape[1], new_cap, old.shape[3])
            new[:, :, : self.len] = old[:, :, : self.len]
            self.bufs[i] = new

    def extend(self, *xs: torch.Tensor) -> None:
        """Append a block per stream, each [B, H, n, width]."""
        n = xs[0].shape[2]
        self._reserve(self.len + n)
        for buf, x in zip(self.bufs, xs, strict=True):
            buf[:, :, self.len : self.len + n] = x
        self.len += n

    def append(self, *xs: torch.Tensor) -> None:
        """Append one token per stream, each [B, H, width]."""
        self._reserve(self.len + 1)
        for buf, x in zip(self.bufs, xs, strict=True):
            buf[:, :, self.len] = x
        self.len += 1

    def views(self) -> list[torch.Tensor]:
        """The live part of each stream, [B, H, len, width] (views, no copy)."""
        return [buf[:, :, : self.len] for buf in self.bufs]

    def nbytes(self) -> tuple[int, int]:
        row = sum(buf.shape[0] * buf.shape[1] * buf.shape[3] * buf.element_size() for buf in self.bufs)
        return row * self.len, row * self.bufs[0].shape[2]


def _empty_out(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return v.new_empty(q.shape[0], q.shape[1], 0, v.shape[-1])


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
        return self.prefill_fn(q, k, v, causal=True) if q.shape[2] else _empty_out(q, v)

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
            return _empty_out(q, v)
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


class RecomputeDecoder(Decoder):
    """No cache: every step runs the full causal ``fn`` over the whole prefix (q, k and v of
    every token so far are kept) and keeps the last row: O(i^2) time at step i for softmax."""

    fast_forward = True

    def __init__(self, b: int, h: int, d: int, m: int, dtype: torch.dtype, device: Any, fn: Callable[..., Any]):
        self.hist = History(b, h, (d, d, m), dtype, device)
        self.fn = fn

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.hist.extend(q, k, v)
        return self.fn(q, k, v, causal=True) if q.shape[2] else _empty_out(q, v)

    def step(self, q_i: torch.Tensor, k_i: torch.Tensor, v_i: torch.Tensor) -> torch.Tensor:
        self.hist.append(q_i, k_i, v_i)
        q, k, v = self.hist.views()
        return self.fn(q, k, v, causal=True)[:, :, -1]

    def advance(self, q_i: torch.Tensor, k_i: torch.Tensor, v_i: torch.Tensor) -> None:
        self.hist.append(q_i, k_i, v_i)

    def snapshot(self) -> int:
        return self.hist.len

    def restore(self, snap: int) -> None:
        self.hist.len = snap

    def state_bytes(self) -> tuple[int, int]:
        return self.hist.nbytes()


# factory(b, h, d, m, dtype, device, params) -> Decoder; params are the impl's keyword parameters.
Factory = Callable[[int, int, int, int, torch.dtype, Any, dict[str, Any]], Decoder]


@dataclass
class DecoderSpec:
    """A named decoder: ``impl`` is the registered implementation whose family, reference,
    dtypes and devices it shares; ``kind`` is kv-cache, recurrent-state or recompute."""

    name: str
    impl: str
    kind: str
    factory: Factory
    description: str = ""


_DECODERS: dict[str, DecoderSpec] = {}


def register_decoder(name: str, *, impl: str, kind: str, description: str = "") -> Callable[[Factory], Factory]:
    """Decorator: register ``factory`` as the decoder ``name`` built on implementation ``impl``."""

    def deco(factory: Factory) -> Factory:
        _DECODERS[name] = DecoderSpec(name, impl, kind, factory, description)
        return factory

    return deco


def _bind(impl: str, params: dict[str, Any]) -> Callable[..., Any]:
    fn = registry.get(impl).fn
    return lambda q, k, v, *, causal: fn(q, k, v, causal=causal, **params)


def linear_state_factory(prefill_impl: str | None) -> Factory:
    """A recurrent-state decoder whose prompt is run by ``prefill_impl`` (None: token by token)."""

    def factory(b: int, h: int, d: int, m: int, dtype: torch.dtype, device: Any, params: dict[str, Any]) -> Decoder:
        fn = _bind(prefill_impl, params) if prefill_impl else None
        return RecurrentDecoder(b, h, d, m, dtype, device, fn)

    return factory


def _kv_factory(impl: str, attend: str) -> Factory:
    def factory(b: int, h: int, d: int, m: int, dtype: torch.dtype, device: Any, params: dict[str, Any]) -> Decoder:
        return KVCacheDecoder(b, h, d, m, dtype, device, _bind(impl, params), attend)

    return factory


register_decoder("softmax", impl="softmax", kind="kv-cache", description="growing KV cache, naive attention per step")(
    _kv_factory("softmax", "naive")
)
register_decoder("sdpa", impl="sdpa", kind="kv-cache", description="growing KV cache, SDPA per step")(
    _kv_factory("sdpa", "sdpa")
)
register_decoder(
    "linear-recurrent", impl="linear-recurrent", kind="recurrent-state", description="RNN state, prompt token by token"
)(linear_state_factory(None))
register_decoder(
    "linear-chunked", impl="linear-chunked", kind="recurrent-state", description="RNN state, prompt by the chunked form"
)(linear_state_factory("linear-chunked"))


def get_decoder(name: str) -> DecoderSpec:
    """The decoder ``name``: a registered one, or ``IMPL-recompute`` for any registered impl."""
    if name in _DECODERS:
        return _DECODERS[name]
    if name.endswith(RECOMPUTE_SUFFIX):
        base = name[: -len(RECOMPUTE_SUFFIX)]
        if base in registry.all_specs():

            def factory(
                b: int, h: int, d: int, m: int, dtype: torch.dtype, device: Any, params: dict[str, Any]
            ) -> Decoder:
                return RecomputeDecoder(b, h, d, m, dtype, device, _bind(base, params))

            return DecoderSpec(name, base, "recompute", factory, f"no cache: {base} over the whole prefix every step")
    raise UserError(
        f"impl: {name!r} has no decoder for pass decode; available: {', '.join(sorted(_DECODERS))}, "
        f"or IMPL{RECOMPUTE_SUFFIX} for any implementation"
    )


def all_decoders() -> dict[str, DecoderSpec]:
    return dict(_DECODERS)
