"""Chunked causal linear attention as Triton kernels (forward and backward), ``linear-chunked-triton``.

Sequence-parallel like the CUDA kernel: chunk-local states for every (batch x head, chunk) in
parallel, an inter-chunk scan over them, then each chunk's outputs from its incoming state
(docs/triton.md). Importing this module never imports triton: the kernels live in ``_triton_kernels``
and are imported on the first call. On CUDA tensors the kernels are compiled (and autotuned per
architecture); on CPU tensors they run only under Triton's interpreter (``TRITON_INTERPRET=1`` set
before triton is imported), which is how the CPU tests exercise the very same kernel code.
"""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from typing import Any

import torch

from attnbench.impls.common import EPS, check_shapes, interpreter_enabled
from attnbench.impls.registry import register
from attnbench.torchflags import tf32_enabled as tf32_allowed

MAX_HEAD_DIM = 256  # D and M are held whole in one tile by some of the kernels
MAX_GRID_CHUNKS = 65535  # chunks go on grid axis 1, which CUDA caps at 65,535 (B*H is on axis 0)
SCAN_BLOCK = 256


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def _block(x: int, cap: int | None = None) -> int:
    """Tile size covering ``x`` (at least 16, tl.dot's minimum), optionally capped."""
    b = max(16, _next_pow2(x))
    return min(b, cap) if cap is not None else b


def kernel_blocks(d: int, m: int) -> dict[str, tuple[int, int]]:
    """(BLOCK_D, BLOCK_M) per kernel. state, fwd and dv hold all of D (A = Qf Kf^T needs whole rows)
    and split M beyond 128; dq and dk hold all of M (P = G V^T + gd needs whole rows) and split D
    beyond 128; gd holds all of M. Shared with tools/check_triton_compile.py."""
    whole_d = (_block(d), _block(m, 128))
    whole_m = (_block(d, 128), _block(m))
    return {"state": whole_d, "fwd": whole_d, "dv": whole_d, "dq": whole_m, "dk": whole_m, "gd": (16, _block(m))}


def chunk_for(chunk_size: int | None, d: int, m: int, dot_prec: str) -> int:
    """Rows per chunk. 64 for tensor-core dots at D, M <= 64; IEEE fp32 dots run on FMA units and hold
    much more per tile, and wide heads more still, hence 32 and 16 there (the sizes
    tools/check_triton_compile.py compiles without spills)."""
    if chunk_size is not None:
        if chunk_size < 16 or chunk_size & (chunk_size - 1):
            raise ValueError(f"chunk_size must be a power of two >= 16, got {chunk_size}")
        return chunk_size
    wide = max(d, m) > 64
    if dot_prec == "ieee":
        return 16 if wide else 32
    return 32 if wide else 64


def dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """Precision of the fp32 x fp32 products: IEEE unless torch itself allows TF32 for fp32 matmuls
    (so an fp32 comparison with PyTorch is like for like); TF32 for the fp32-operand products of
    fp16/bf16 inputs, which only need fp32's range."""
    if dtype == torch.float32 and (device.type != "cuda" or not tf32_allowed()):
        return "ieee"
    return "tf32"


def _on(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """Launch on the inputs' GPU (triton launches on the current device)."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class ChunkedTritonFn(torch.autograd.Function):
    """Autograd wrapper: q, k [BH, N, D], v [BH, N, M], contiguous, one dtype -> out [BH, N, M]."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> torch.Tensor:
        from attnbench.impls import _triton_kernels as kern  # optional dependency: triton, loaded on first call

        bh, n, d = q.shape
        m = v.shape[-1]
        nc = _cdiv(n, chunk)
        rec = d * m + d
        prec = dot_precision(q.dtype, q.device)
        out = torch.empty_like(v)
        rden = torch.empty(bh, n, dtype=torch.float32, device=q.device)  # 1 / (den + EPS), for backward
        st = torch.empty(bh, nc, rec, dtype=torch.float32, device=q.device)  # chunk states, then S_in, z_in
        bd, bm = kernel_blocks(d, m)["fwd"]
        meta = dict(BLOCK_C=chunk, BLOCK_D=bd, BLOCK_M=bm, DOT_PREC=prec)
        with _on(q.device):
            kern.tuned_state[(bh, nc, _cdiv(m, bm))](q, k, v, v, rden, rden, st, n, d, m, nc, rec, BWD=False, **meta)
            kern.chunk_scan_kernel[(bh, _cdiv(rec, SCAN_BLOCK))](st, nc, rec, rec, BLOCK_E=SCAN_BLOCK, num_warps=4)
            kern.tuned_fwd[(bh, nc, _cdiv(m, bm))](q, k, v, out, rden, st, n, d, m, nc, rec, EPS, **meta)
        ctx.save_for_backward(q, k, v, out, rden)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        from attnbench.impls import _triton_kernels as kern  # optional dependency: triton, loaded on first call

        q, k, v, out, rden = ctx.saved_tensors
        g = g.to(v.dtype).contiguous()  # also materialises a stride-0 (expanded) output gradient
        bh, n, d = q.shape
        m = v.shape[-1]
        chunk = ctx.chunk
        nc = _cdiv(n, chunk)
        rec = 2 * (d * m + d)
        prec = dot_precision(q.dtype, q.device)
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        gd = torch.empty(bh, n, dtype=torch.float32, device=q.device)  # dL/dden per row
        st = torch.empty(bh, nc, rec, dtype=torch.float32, device=q.device)
        blocks = kernel_blocks(d, m)
        with _on(q.device):
            kern.tuned_gd[(bh, nc)](g, out, rden, gd, n, m, BLOCK_C=chunk, BLOCK_M=blocks["gd"][1])
            bd, bm = blocks["state"]
            kern.tuned_state[(bh, nc, _cdiv(m, bm))](
                q,
                k,
                v,
                g,
                rden,
                gd,
                st,
                n,
                d,
                m,
                nc,
                rec,
                BLOCK_C=chunk,
                BLOCK_D=bd,
                BLOCK_M=bm,
                BWD=True,
                DOT_PREC=prec,
            )
            kern.chunk_scan_kernel[(bh, _cdiv(rec, SCAN_BLOCK))](st, nc, rec, rec // 2, BLOCK_E=SCAN_BLOCK, num_warps=4)
            bd, bm = blocks["dq"]
            meta = dict(BLOCK_C=chunk, BLOCK_D=bd, BLOCK_M=bm, DOT_PREC=prec)
            kern.tuned_dq[(bh, nc, _cdiv(d, bd))](q, k, v, g, rden, gd, st, dq, n, d, m, nc, rec, **meta)
            kern.tuned_dk[(bh, nc, _cdiv(d, bd))](q, k, v, g, rden, gd, st, dk, n, d, m, nc, rec, **meta)
            bd, bm = blocks["dv"]
            meta = dict(BLOCK_C=chunk, BLOCK_D=bd, BLOCK_M=bm, DOT_PREC=prec)
            kern.tuned_dv[(bh, nc, _cdiv(m, bm))](q, k, g, rden, st, dv, n, d, m, nc, rec, **meta)
        return dq, dk, dv, None


def shape_error(b: int, h: int, n: int, d: int, m: int, chunk: int | None = None) -> str | None:
    """Why the Triton kernels cannot take q, k [B, H, N, D], v [B, H, N, M], or None."""
    if d < 1 or m < 1:
        which, value = ("D", d) if d < 1 else ("M", m)
        return f"linear-chunked-triton: head dims must be >= 1; got {which}={value}"
    if max(d, m) > MAX_HEAD_DIM:
        return f"linear-chunked-triton supports head dims D, M <= {MAX_HEAD_DIM}; got D={d}, M={m}"
    if chunk is not None and _cdiv(n, chunk) > MAX_GRID_CHUNKS:
        return f"linear-chunked-triton: N={n} needs {_cdiv(n, chunk)} chunks of {chunk}, above the grid's {MAX_GRID_CHUNKS}"
    return None


def chunked_triton_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, chunk_size: int | None = None
) -> torch.Tensor:
    """Causal linear attention by the Triton chunk kernels, differentiable in q, k and v.

    q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M], all of one dtype (fp32, fp16 or bf16).
    CUDA tensors, or CPU tensors when ``TRITON_INTERPRET=1`` was set before triton was imported.
    Non-contiguous inputs are copied to contiguous ones first. Shapes the kernels cannot take are
    rejected before anything is launched.
    """
    b, h, n, d, m = check_shapes(q, k, v)
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"q, k, v must share one dtype of fp32/fp16/bf16; got {q.dtype}, {k.dtype}, {v.dtype}")
    if q.device.type != "cuda" and not interpreter_enabled():
        raise ValueError(f"{q.device.type} tensors need TRITON_INTERPRET=1 (set before importing triton)")
    reason = shape_error(b, h, n, d, m)
    if reason is not None:
        raise ValueError(reason)
    chunk = chunk_for(chunk_size, d, m, dot_precision(q.dtype, q.device))
    reason = shape_error(b, h, n, d, m, chunk)
    if reason is not None:
        raise ValueError(reason)
    if b * h * n == 0:  # nothing to launch; keep the result differentiable (zero gradients)
        return v * 0 + (q.sum() + k.sum()) * 0
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
    c = point.get("params", {}).get("chunk_size")
    if c is not None and (not isinstance(c, int) or c < 16 or c & (c - 1)):
        return f"chunk_size must be a power of two >= 16, got {c!r}"
    return shape_error(point["B"], point["H"], point["N"], point["D"], point["M"], c)


# The shapes prepare() compiles and tunes before a sweep: the seqlen suite's (B=1, H=4, D=M=64) in
# every dtype, at an N that specialises like the suite's powers of two.
_PREPARE_SHAPES = [(1, 4, 1024, 64, 64, dt) for dt in ("float32", "float16", "bfloat16")]


def _prepare(device: str) -> str | None:
    """Compile and autotune the kernels for the common shapes once, in a child process (the parent
    must not initialise CUDA), so the compiled kernels and tuned configurations are on disk before a
    sweep's first point. Returns None or why the impl cannot run."""
    reason = _available(device)
    if reason is not None or device != "cuda":
        return reason
    proc = subprocess.run(
        [sys.executable, "-m", "attnbench.impls.chunked_triton", "prepare"],
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    if proc.returncode == 0:
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if lines else f"compiling the Triton kernels failed (exit {proc.returncode})"


def _prepare_here() -> int:
    try:
        for b, h, n, d, m, dt in _PREPARE_SHAPES:
            xs = [
                torch.randn(b, h, n, x, device="cuda", dtype=getattr(torch, dt), requires_grad=True) for x in (d, d, m)
            ]
            chunked_triton_attention(*xs).sum().backward()
        torch.cuda.synchronize()
    except Exception as exc:  # the reason goes to the parent as the last stdout line
        last = (str(exc).strip().splitlines() or [""])[-1]
        print(f"compiling the Triton kernels failed: {type(exc).__name__}: {last}")
        return 1
    return 0


@register(
    "linear-chunked-triton",
    family="linear",
    causal=(True,),
    devices=("cuda",),
    dtypes=("float32", "float16", "bfloat16"),
    available=_available,
    supports=_supports,
    prepare=_prepare,
    description="chunked causal linear attention in Triton, sequence-parallel chunks, fwd and bwd kernels",
)
def linear_chunked_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool, chunk_size: int | None = None
) -> torch.Tensor:
    """Registry entry: causal only. q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M]."""
    if not causal:
        raise ValueError("linear-chunked-triton implements causal attention only")
    return chunked_triton_attention(q, k, v, chunk_size=chunk_size)


if __name__ == "__main__":
    sys.exit(_prepare_here() if sys.argv[1:] == ["prepare"] else 2)
