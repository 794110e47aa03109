"""Chunked causal linear attention as Triton kernels (forward and backward), ``linear-chunked-triton``.

Importing this module never imports triton: the kernels live in ``_triton_kernels`` and are
imported on the first call. On CUDA tensors the kernels are compiled; on CPU tensors they run only
under Triton's interpreter (``TRITON_INTERPRET=1`` set before triton is imported), which is how the
CPU tests exercise the very same kernel code. Algorithm: docs/triton.md.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import torch

from attnbench.impls.common import EPS, check_shapes
from attnbench.impls.registry import register

DEFAULT_CHUNK = 32
MAX_HEAD_DIM = 256  # D and M are held whole in one tile by some of the kernels
NUM_WARPS = 4
NUM_STAGES = 2  # software-pipelining depth of the chunk loop


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _block(x: int, cap: int | None = None) -> int:
    """Tile size covering ``x`` (at least 16, tl.dot's minimum), optionally capped."""
    b = max(16, _next_pow2(x))
    return min(b, cap) if cap is not None else b


def kernel_blocks(d: int, m: int) -> dict[str, tuple[int, int]]:
    """(BLOCK_D, BLOCK_M) per kernel: fwd and dv hold all of D and split M; dq and dk hold all of M
    (dL/dden needs whole rows of g and o) and split D. Shared with tools/check_triton_compile.py."""
    whole_d = (_block(d), _block(m, 64))
    whole_m = (_block(d, 64), _block(m))
    return {"fwd": whole_d, "dq": whole_m, "dk": whole_m, "dv": whole_d}


def chunk_for(chunk_size: int | None, d: int, m: int, dot_prec: str) -> int:
    """Rows per chunk. 32 keeps the fp16/bf16 kernels (tensor-core dots) free of register spills
    at D = M = 64 on sm_80/sm_90 (tools/check_triton_compile.py prints the spills); IEEE fp32 dots
    run on FMA units and need much more registers per tile, hence 16 there and for wide heads."""
    if chunk_size is not None:
        if chunk_size < 16 or chunk_size & (chunk_size - 1):
            raise ValueError(f"chunk_size must be a power of two >= 16, got {chunk_size}")
        return chunk_size
    return 16 if dot_prec == "ieee" or max(d, m) > 128 else DEFAULT_CHUNK


def _dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """Precision of the fp32 x fp32 products: IEEE unless torch itself allows TF32 for fp32 matmuls
    (so an fp32 comparison with PyTorch is like for like); TF32 for the fp32-state products of
    fp16/bf16 inputs, which only need fp32's range."""
    if dtype == torch.float32 and (device.type != "cuda" or not torch.backends.cuda.matmul.allow_tf32):
        return "ieee"
    return "tf32"


def interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


class ChunkedTritonFn(torch.autograd.Function):
    """Autograd wrapper: q, k [BH, N, D], v [BH, N, M], contiguous, one dtype -> out [BH, N, M]."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> torch.Tensor:
        from attnbench.impls import _triton_kernels as kern

        bh, n, d = q.shape
        m = v.shape[-1]
        out = torch.empty_like(v)
        rden = torch.empty(bh, n, dtype=torch.float32, device=q.device)  # 1 / (den + EPS), for backward
        prec = _dot_precision(q.dtype, q.device)
        bd, bm = kernel_blocks(d, m)["fwd"]
        kern.chunked_fwd_kernel[(-(-m // bm), bh)](
            q, k, v, out, rden, n, d, m, EPS,
            BLOCK_C=chunk, BLOCK_D=bd, BLOCK_M=bm, DOT_PREC=prec, num_warps=NUM_WARPS, num_stages=NUM_STAGES,
        )  # fmt: skip
        ctx.save_for_backward(q, k, v, out, rden)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from attnbench.impls import _triton_kernels as kern

        q, k, v, out, rden = ctx.saved_tensors
        # contiguous() also materialises a stride-0 (expanded) output gradient.
        g = g.to(v.dtype).contiguous()
        bh, n, d = q.shape
        m = v.shape[-1]
        chunk = ctx.chunk
        prec = _dot_precision(q.dtype, q.device)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        blocks = kernel_blocks(d, m)
        bd_split, bm_full = blocks["dq"]
        common = dict(BLOCK_C=chunk, DOT_PREC=prec, num_warps=NUM_WARPS, num_stages=NUM_STAGES)
        grid_d = (-(-d // bd_split), bh)
        kern.chunked_dq_kernel[grid_d](q, k, v, out, g, rden, dq, n, d, m, BLOCK_D=bd_split, BLOCK_M=bm_full, **common)
        kern.chunked_dk_kernel[grid_d](q, k, v, out, g, rden, dk, n, d, m, BLOCK_D=bd_split, BLOCK_M=bm_full, **common)
        bd_full, bm_split = blocks["dv"]
        kern.chunked_dv_kernel[(-(-m // bm_split), bh)](
            q, k, g, rden, dv, n, d, m, BLOCK_D=bd_full, BLOCK_M=bm_split, **common
        )
        return dq, dk, dv, None


def chunked_triton_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, chunk_size: int | None = None
) -> torch.Tensor:
    """Causal linear attention by the Triton chunk kernels, differentiable in q, k and v.

    q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M], all of one dtype (fp32, fp16 or bf16).
    CUDA tensors, or CPU tensors when ``TRITON_INTERPRET=1`` was set before triton was imported.
    Non-contiguous inputs are copied to contiguous ones first.
    """
    b, h, n, d, m = check_shapes(q, k, v)
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"q, k, v must share one dtype of fp32/fp16/bf16; got {q.dtype}, {k.dtype}, {v.dtype}")
    if max(d, m) > MAX_HEAD_DIM:
        raise ValueError(f"head dims D={d}, M={m} exceed {MAX_HEAD_DIM}")
    if q.device.type != "cuda" and not interpreter_enabled():
        raise ValueError(f"{q.device.type} tensors need TRITON_INTERPRET=1 (set before importing triton)")
    chunk = chunk_for(chunk_size, d, m, _dot_precision(q.dtype, q.device))
    out = ChunkedTritonFn.apply(
        q.reshape(b * h, n, d).contiguous(), k.reshape(b * h, n, d).contiguous(),
        v.reshape(b * h, n, m).contiguous(), chunk,
    )  # fmt: skip
    return out.reshape(b, h, n, m)


def _available(device: str) -> str | None:
    try:
        found = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["triton"] is None (import blocked)
        found = False
    if not found:
        return "triton is not installed (pip install triton)"
    if device == "cuda" and not torch.cuda.is_available():
        return "no CUDA device (Triton kernels are compiled for CUDA)"
    return None


def _supports(point: dict[str, Any]) -> str | None:
    if max(point["D"], point["M"]) > MAX_HEAD_DIM:
        return f"head dims above {MAX_HEAD_DIM} are not supported (whole-D/M tiles)"
    c = point.get("params", {}).get("chunk_size")
    if c is not None and (not isinstance(c, int) or c < 16 or c & (c - 1)):
        return f"chunk_size must be a power of two >= 16, got {c!r}"
    return None


@register(
    "linear-chunked-triton",
    family="linear",
    causal=(True,),
    devices=("cuda",),
    dtypes=("float32", "float16", "bfloat16"),
    available=_available,
    supports=_supports,
    description="chunked causal linear attention in Triton, fused forward and backward kernels",
)
def linear_chunked_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, chunk_size: int | None = None
) -> torch.Tensor:
    """Registry entry: causal only. q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M]."""
    if not causal:
        raise ValueError("linear-chunked-triton implements causal attention only")
    return chunked_triton_attention(q, k, v, chunk_size=chunk_size)
