"""Torch's float32 matmul precision switch (TF32 or IEEE), read and set safely.

torch 2.9 added ``torch.backends.cuda.matmul.fp32_precision`` ("ieee", "tf32", or "none" =
inherit from ``torch.backends.fp32_precision``). Once anything in the process has set the new API,
reading the old ``torch.backends.cuda.matmul.allow_tf32`` raises a RuntimeError ("mix of the
legacy and new APIs"), so the new attribute is read first and the old flag only on a torch
without it. Reading never changes a setting. Used by the Triton kernel (its dot precision) and
by the measurement (which peak judges a point), so it sits below both.
"""

from __future__ import annotations

from typing import Any


def _torch_backends() -> Any:
    import torch  # deferred: torch; attnbench.measure.mathmode imports this module torch-free

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
