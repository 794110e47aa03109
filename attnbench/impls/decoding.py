"""Decoding: the incremental (token-by-token) form of an implementation, the protocol every
decoder follows and the pieces they share (the growing token history, the recompute decoder).

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

Decoders live beside the implementations they decode with (the KV cache in
:mod:`attnbench.impls.softmax`, the RNN state in :mod:`attnbench.impls.recurrent`) and are
registered by name with :func:`attnbench.impls.registry.register_decoder`; any registered
implementation ``X`` also has the decoder ``X-recompute`` (no cache: the whole prefix is
recomputed each step, the paper's baseline). Another module (a compiled kernel, a plugin)
registers its own with the same decorator, e.g. ``register_decoder("linear-causal-cpu",
impl="linear-causal-cpu", kind="recurrent-state")(linear_state_factory("linear-causal-cpu"))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from attnbench.impls import registry


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


def empty_out(q: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return v.new_empty(q.shape[0], q.shape[1], 0, v.shape[-1])


class RecomputeDecoder(Decoder):
    """No cache: every step runs the full causal ``fn`` over the whole prefix (q, k and v of
    every token so far are kept) and keeps the last row: O(i^2) time at step i for softmax."""

    fast_forward = True

    def __init__(self, b: int, h: int, d: int, m: int, dtype: torch.dtype, device: Any, fn: Callable[..., Any]):
        self.hist = History(b, h, (d, d, m), dtype, device)
        self.fn = fn

    def prefill(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        self.hist.extend(q, k, v)
        return self.fn(q, k, v, causal=True) if q.shape[2] else empty_out(q, v)

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


def bind(impl: str, params: dict[str, Any]) -> Callable[..., Any]:
    fn = registry.get(impl).fn
    return lambda q, k, v, *, causal: fn(q, k, v, causal=causal, **params)


def recompute_factory(impl: str) -> registry.DecoderFactory:
    """The ``IMPL-recompute`` decoder of any registered implementation."""

    def factory(b: int, h: int, d: int, m: int, dtype: torch.dtype, device: Any, params: dict[str, Any]) -> Decoder:
        return RecomputeDecoder(b, h, d, m, dtype, device, bind(impl, params))

    return factory


registry.set_recompute_factory(recompute_factory)
