"""Compiled causal linear attention (C++/OpenMP on CPU, CUDA on GPU): ``linear-causal-cpu/-cuda``.

The kernels (``kernels/causal_product/``, docs/kernels.md) compute the full normalised causal linear
attention from raw q, k (phi = elu + 1 is applied on load) with a linear-memory backward returning
gradients w.r.t. raw q and k: O(N (D + M)) saved per head, never O(N D M). Building and caching them is
:mod:`attnbench.impls.kernel_build`; its ``prepare`` builds them once before a sweep. Importing this
module builds nothing; :func:`available` reports why a kernel cannot be built.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from attnbench.impls import kernel_build
from attnbench.impls.common import check_shapes
from attnbench.impls.registry import register
from attnbench.point import DType

# The CUDA kernel's register tiles hold up to 128 columns: D and M are bounded (kCudaMaxHeadDim).
CUDA_MAX_HEAD_DIM = 128
CPU_DTYPES = ("float64", "float32", "float16", "bfloat16")
CUDA_DTYPES = ("float32", "float16", "bfloat16")


def source_dir() -> Path | None:
    """Where the kernel sources are (see :func:`attnbench.impls.kernel_build.source_dir`)."""
    return kernel_build.source_dir()


def available(device: str) -> str | None:
    """None if the kernel for ``device`` is built or can be built, else the reason (builds nothing)."""
    kind = kernel_build.kind_of(device)
    return kernel_build.build_error(kind) or kernel_build.why_not_buildable(kind)


def prepare(device: str) -> str | None:
    """Build the kernel for ``device`` before a sweep (in a child process): None, or why it cannot be."""
    return kernel_build.prepare(device)


def load_extension(device: str = "cpu", *, verbose: bool = False) -> ModuleType:
    """Build (once, cached on disk) and import the extension for ``device``."""
    return kernel_build.load(device, verbose=verbose)


def shape_error(b: int, h: int, n: int, d: int, m: int, device: str) -> str | None:
    """Why the kernel for ``device`` cannot take q, k [B, H, N, D], v [B, H, N, M], or None.

    The same rules as the kernels' own check (``shape_error`` in causal_product_math.h), applied
    before anything is launched: head dims >= 1, and <= 128 on CUDA.
    """
    if min(b, h, n, d, m) < 0:
        return f"causal_product: sizes must be >= 0; got B={b}, H={h}, N={n}, D={d}, M={m}"
    if d == 0 or m == 0:
        return (
            f"causal_product: head dims must be >= 1; got {'D' if d == 0 else 'M'}=0 "
            "(q, k [B, H, N, D], v [B, H, N, M])"
        )
    if device == "cuda" and (d > CUDA_MAX_HEAD_DIM or m > CUDA_MAX_HEAD_DIM):
        return (
            f"linear-causal-cuda supports head dims D, M <= {CUDA_MAX_HEAD_DIM} (its register tiles); got D={d}, M={m}"
        )
    if n > 2**31 - 1 or b * h > 2**31 - 1:
        return f"causal_product: N and B*H must be < 2^31; got N={n}, B*H={b * h}"
    return None


class CausalProduct(torch.autograd.Function):
    """Normalised causal linear attention from raw q, k: phi = elu + 1 inside the kernel.

    q, k: [B, H, N, D], v: [B, H, N, M] -> [B, H, N, M]. Saves q, k, v, the output and the
    [B, H, N] normaliser: O(N (D + M)) memory, never O(N D M).
    """

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ext = load_extension(q.device.type)
        out, den = ext.forward(q, k, v, True)
        ctx.save_for_backward(q, k, v, out, den)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v, out, den = ctx.saved_tensors
        dq, dk, dv = load_extension(q.device.type).backward(q, k, v, out, den, grad_out, True)
        return dq, dk, dv


def causal_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The compiled kernel for q's device (CPU or CUDA), differentiable in q, k and v."""
    b, h, n, d, m = check_shapes(q, k, v)
    reason = shape_error(b, h, n, d, m, q.device.type)
    if reason is not None:
        raise ValueError(reason)
    return CausalProduct.apply(q, k, v)


def _limits(device: str) -> Callable[[dict[str, Any]], str | None]:
    def supports(point: dict[str, Any]) -> str | None:
        return shape_error(point["B"], point["H"], point["N"], point["D"], point["M"], device)

    return supports


def _causal_only(causal: bool) -> None:
    if not causal:
        raise ValueError("the causal-product kernels are causal only (causal=True)")


def _est_bytes(point: dict) -> int:
    """Inputs, outputs and saved tensors, plus the CUDA kernel's chunk-state workspace (one [D, M]
    record per 32-64 tokens; the CPU kernel's is O(D M) per thread)."""
    elem = DType(point["dtype"]).itemsize
    b, h, n, d, m = point["B"], point["H"], point["N"], point["D"], point["M"]
    io = b * h * n * (d + m) * elem  # one copy of q/k-sized and v-sized tensors
    states = b * h * -(-n // 32) * 2 * (d + 16) * (m + 16) * 4
    return 3 * io + b * h * n * 8 + states


@register(
    "linear-causal-cpu",
    family="linear",
    causal=(True,),
    devices=("cpu",),
    dtypes=CPU_DTYPES,
    available=available,
    supports=_limits("cpu"),
    prepare=prepare,
    est_bytes=_est_bytes,
    description="compiled C++ chunked causal linear attention (OpenMP, SIMD), linear-memory backward",
)
def linear_causal_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """Causal linear attention by the C++ kernel. q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M]."""
    _causal_only(causal)
    if q.device.type != "cpu":
        raise ValueError(f"linear-causal-cpu needs CPU tensors, got {q.device}")
    return causal_product(q, k, v)


@register(
    "linear-causal-cuda",
    family="linear",
    causal=(True,),
    devices=("cuda",),
    dtypes=CUDA_DTYPES,
    available=available,
    supports=_limits("cuda"),
    prepare=prepare,
    est_bytes=_est_bytes,
    description="compiled CUDA causal linear attention, sequence-parallel chunks on tensor cores",
)
def linear_causal_cuda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """Causal linear attention by the CUDA kernel. q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M].

    D and M must each be between 1 and ``CUDA_MAX_HEAD_DIM`` (128).
    """
    _causal_only(causal)
    b, h, n, d, m = check_shapes(q, k, v)
    reason = shape_error(b, h, n, d, m, "cuda")
    if reason is not None:
        raise ValueError(reason)
    if q.device.type != "cuda":
        raise ValueError(f"linear-causal-cuda needs CUDA tensors, got {q.device}")
    return causal_product(q, k, v)
