"""Which arithmetic a point's matrix products run on, and torch's TF32 switch read safely.

Math modes (the keys of the calibrated peaks, see :mod:`attnbench.measure.peaks`):

- ``fp64``, ``fp32``: IEEE products on the plain FP64/FP32 units (no tensor cores).
- ``tf32``: float32 inputs multiplied on tensor cores in TensorFloat-32 (CUDA, sm_80 and later).
- ``fp16``, ``bf16``: 16-bit inputs on tensor cores (CUDA), or the CPU's 16-bit matmul path.

The switch is read and set through :mod:`attnbench.torchflags` (re-exported here).
"""

from __future__ import annotations

from typing import Any

from attnbench.torchflags import fp32_matmul_precision, set_fp32_matmul_precision, tf32_enabled  # noqa: F401 (re-exported)

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
