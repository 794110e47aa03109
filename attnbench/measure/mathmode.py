"""Which arithmetic a point's matrix products run on, and torch's TF32 switch read safely.

Math modes (the keys of the calibrated peaks, see :mod:`attnbench.measure.peaks`):

- ``fp64``, ``fp32``: IEEE products on the plain FP64/FP32 units (no tensor cores).
- ``tf32``: float32 inputs multiplied on tensor cores in TensorFloat-32 (CUDA, sm_80 and later).
- ``fp16``, ``bf16``: 16-bit inputs on tensor cores (CUDA), or the CPU's 16-bit matmul path.

The switch: torch 2.9 added ``torch.backends.cuda.matmul.fp32_precision`` ("ieee", "tf32", or
"none" = inherit from ``torch.backends.fp32_precision``). Once anything in the process has set the
new API, reading the old ``torch.backends.cuda.matmul.allow_tf32`` raises a RuntimeError
("mix of the legacy and new APIs"), so the new attribute is read first and the old flag only on a
torch without it. Reading never changes a setting.
"""

from __future__ import annotations

from typing import Any

MATH_MODES = ("fp64", "fp32", "tf32", "fp16", "bf16")
_DTYPE_MODE = {"float64": "fp64", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}

# How an impl's float32 products run on CUDA:
# - "matmul-flag": cuBLAS or Triton dots that follow torch's fp32 matmul precision (the default);
# - "tensor-core": always on tensor cores whatever the flag (SDPA's fused kernels: the
#   memory-efficient backend runs fp32 inputs on tensor cores on sm_80+);
# - "simt": plain FP32 units (a hand-written CUDA kernel without mma instructions).
FP32_MATH = ("matmul-flag", "tensor-core", "simt")
# The built-ins whose float32 math is not "matmul-flag". The registry does not carry this yet
# (a proposed ImplSpec field ``fp32_math``); :func:`impl_fp32_math` prefers that field when present.
BUILTIN_FP32_MATH = {"sdpa": "tensor-core", "linear-causal-cuda": "simt"}


def _torch_backends() -> Any:
    import torch

    return torch.backends


def fp32_matmul_precision(backends: Any = None) -> str:
    """ "tf32" or "ieee": how torch runs float32 matmuls on CUDA right now (cuBLAS; Triton impls
    that follow torch use the same answer). Never raises; never sets anything.

    Order: ``torch.backends.cuda.matmul.fp32_precision`` (torch >= 2.9), then the generic
    ``torch.backends.fp32_precision`` when the matmul one says "none" (inherit), then, on an
    older torch only, the legacy ``torch.backends.cuda.matmul.allow_tf32``.
    """
    b = backends if backends is not None else _torch_backends()
    matmul = b.cuda.matmul
    try:
        prec = matmul.fp32_precision
    except (AttributeError, RuntimeError):
        prec = None
    if prec is not None:
        prec = str(prec).lower()
        if prec == "none":  # inherits the generic setting; "none" at the root means IEEE
            try:
                prec = str(b.fp32_precision).lower()
            except (AttributeError, RuntimeError):
                prec = "none"
        return "tf32" if prec == "tf32" else "ieee"
    try:
        return "tf32" if bool(matmul.allow_tf32) else "ieee"
    except (AttributeError, RuntimeError):
        return "ieee"


def tf32_enabled(backends: Any = None) -> bool:
    """True when float32 matmuls may run in TF32 (see :func:`fp32_matmul_precision`)."""
    return fp32_matmul_precision(backends) == "tf32"


def set_fp32_matmul_precision(prec: str, backends: Any = None) -> str:
    """Set float32 matmul precision ("tf32" or "ieee") through the new API when it exists (the
    legacy flag otherwise); returns the previous value as :func:`fp32_matmul_precision` read it."""
    if prec not in ("tf32", "ieee"):
        raise ValueError(f"fp32 matmul precision {prec!r}: expected 'tf32' or 'ieee'")
    b = backends if backends is not None else _torch_backends()
    before = fp32_matmul_precision(b)
    matmul = b.cuda.matmul
    try:
        has_new_api = matmul.fp32_precision is not None
    except (AttributeError, RuntimeError):
        has_new_api = False
    if has_new_api:
        matmul.fp32_precision = prec
    else:
        matmul.allow_tf32 = prec == "tf32"
    return before


def impl_fp32_math(impl: str, spec: Any = None) -> str:
    """How ``impl``'s float32 products run on CUDA (one of :data:`FP32_MATH`)."""
    declared = getattr(spec, "fp32_math", None) if spec is not None else None
    if declared in FP32_MATH:
        return str(declared)
    return BUILTIN_FP32_MATH.get(impl, "matmul-flag")


def math_mode(dtype: str, device: str, fp32_math: str = "matmul-flag", tf32: bool | None = None) -> str:
    """The math mode (a :data:`MATH_MODES` key) of products on ``dtype`` inputs on ``device``.

    ``tf32``: whether torch's flag allows TF32 (read with :func:`tf32_enabled` when None; only
    consulted for float32 on CUDA with ``fp32_math="matmul-flag"``).
    """
    if dtype not in _DTYPE_MODE:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(_DTYPE_MODE)}")
    mode = _DTYPE_MODE[dtype]
    if mode != "fp32" or device != "cuda":
        return mode
    if fp32_math == "tensor-core":
        return "tf32"
    if fp32_math == "simt":
        return "fp32"
    return "tf32" if (tf32_enabled() if tf32 is None else tf32) else "fp32"


def point_math_mode(point: dict[str, Any], spec: Any = None, tf32: bool | None = None) -> str:
    """:func:`math_mode` of a point (a mapping with impl, dtype, device)."""
    fp32 = impl_fp32_math(str(point.get("impl", "")), spec)
    return math_mode(str(point["dtype"]), str(point.get("device", "cpu")), fp32, tf32)
