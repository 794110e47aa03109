"""FLOP and byte models per implementation family and pass, and where a point sits on the roofline.

The models count the *useful* work of the family's algorithm, not what a given impl does: an impl
that spends more (linear attention the O(N^2) way, a materialised mask) shows as a lower
fraction of peak, which is the point of the comparison. Shapes: q, k ``[B, H, N, D]``,
v, out, g ``[B, H, N, M]``. One multiply-add is 2 FLOPs.

Softmax (fwd): S = Q K^T is 2*B*H*N^2*D, O = P V is 2*B*H*N^2*M, so 2*B*H*N^2*(D+M)
(= 4*B*H*N^2*D when M = D); the softmax itself (O(N^2)) is not counted, as in
flash-attention's benchmarks. Causal halves it.

Linear (fwd, causal or not): state update phi(k_j) v_j^T and read-out phi(q_i) S_i are 2*D*M
each per token, so 4*B*H*N*D*M; the feature map elu(x)+1 on q and k is 2 FLOPs per element
(4*B*H*N*D); the normaliser (running sum of phi(k): D adds, phi(q).z: 2*D, the divide: M per
token) is B*H*N*(3*D + M).

Backward, one convention for both families: 2 x forward, the products that make the gradients
(each forward product X = A B has two gradient products, dA = dX B^T and dB = A^T dX: softmax
dV, dP, dQ, dK; linear dq and the suffix state, dk, dv). Recomputation is never counted, in
either family: flash-attention recomputes S = Q K^T and a linear kernel recomputes its prefix
states, an implementation choice that shows as a lower fraction of peak. (flash-attention's
own benchmarks count the recomputed S: their softmax backward is 2.5 x forward; multiply
attnbench's softmax bwd TFLOP/s by 1.25 to compare with them.)

fwdbwd = fwd + bwd, for FLOPs and bytes alike.

Bytes (minimal traffic, each tensor read or written once, at the point's element size):
fwd reads q, k, v and writes out: B*H*N*(2*D + 2*M) elements. bwd reads q, k, v, out (softmax
needs rowsum(dout * out), linear the normalised output for the normaliser's gradient) and g, and
writes dq, dk, dv: B*H*N*(4*D + 4*M) elements.

Which peak judges a point: the calibrated matmul rate of the math its products run on
(:mod:`attnbench.measure.mathmode`: FP32, TF32, FP16/BF16 tensor cores, FP64), named in
``peak_math``. A percentage above 100 is kept (it is what was measured) and explained in
``pct_peak_note``.

Units: ``tflops`` 1e12 FLOP/s, ``gbps`` 1e9 bytes/s (decimal, like vendor bandwidth figures);
percentages are 0..100 of the calibrated peaks (see :mod:`attnbench.measure.peaks`).
"""

from __future__ import annotations

from typing import Any

from attnbench.measure.mathmode import math_mode, point_math_mode

ELEMENT_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
BWD_FACTOR = {"softmax": 2.0, "linear": 2.0}

ROOFLINE_COLUMNS = (
    "model_flops",
    "model_bytes",
    "arith_intensity",
    "tflops",
    "gbps",
    "pct_peak_flops",
    "pct_peak_bw",
    "bound",
    "peak_math",
    "pct_peak_note",
)


def fwd_flops(family: str, b: int, h: int, n: int, d: int, m: int, causal: bool) -> float:
    """Forward FLOPs of one call (see the module docstring for the model)."""
    if family == "softmax":
        flops = 2.0 * b * h * n * n * (d + m)
        return flops / 2 if causal else flops
    if family == "linear":
        return 4.0 * b * h * n * d * m + 4.0 * b * h * n * d + b * h * n * (3.0 * d + m)
    raise ValueError(f"no FLOP model for family {family!r} (known: softmax, linear)")


def pass_flops(family: str, pass_: str, b: int, h: int, n: int, d: int, m: int, causal: bool) -> float:
    """FLOPs of one call of ``pass_`` (fwd, bwd or fwdbwd)."""
    fwd = fwd_flops(family, b, h, n, d, m, causal)
    bwd = BWD_FACTOR[family] * fwd
    return {"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}[pass_]


def pass_bytes(pass_: str, b: int, h: int, n: int, d: int, m: int, dtype: str) -> float:
    """Minimal bytes one call of ``pass_`` must read and write."""
    e = ELEMENT_BYTES[dtype]
    fwd = e * b * h * n * (2 * d + 2 * m)
    bwd = e * b * h * n * (4 * d + 4 * m)
    return float({"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}[pass_])


def point_model(point: dict[str, Any], family: str) -> tuple[float, float]:
    """(FLOPs, bytes) of one call of ``point``'s pass."""
    b, h, n, d, m = (int(point[k]) for k in ("B", "H", "N", "D", "M"))
    flops = pass_flops(family, point["pass"], b, h, n, d, m, bool(point["causal"]))
    return flops, pass_bytes(point["pass"], b, h, n, d, m, point["dtype"])


def _flops_peak(peaks: dict[str, Any], math: str, dtype: str) -> float | None:
    """The calibrated rate of ``math``; a run calibrated before peaks per math mode only has
    rates per dtype, measured with plain (non-TF32) math: used only for that plain mode."""
    by_math = peaks.get("flops_per_s_by_math")
    if isinstance(by_math, dict):
        rate = by_math.get(math)
        return float(rate) if rate else None
    rate = (peaks.get("flops_per_s") or {}).get(dtype)
    return float(rate) if rate and math == math_mode(dtype, "cpu") else None


def _note(
    point: dict[str, Any], math: str, pct_f: float | None, pct_b: float | None, peaks: dict[str, Any]
) -> str | None:
    """Why a percentage is above 100, or None when none is."""
    notes = []
    cpu = point.get("device", "cpu") == "cpu"
    if pct_f is not None and pct_f > 100:
        why = f"above the calibrated {math} matmul peak: "
        by_math = peaks.get("flops_per_s_by_math") or {}
        fp32, tf32 = by_math.get("fp32"), by_math.get("tf32")
        if cpu:
            why += "the run's CPU calibration comes out low when other work shares the cores (recalibrate idle)"
        elif math == "fp32" and fp32 and tf32 and pct_f * fp32 / tf32 <= 100:
            why += "within the TF32 peak, so the kernel probably multiplies on TF32 tensor cores"
        else:
            why += "the calibration matmul missed this device's peak (clocks, power cap) or the impl does less work than the family's model counts"
        notes.append(why)
    if pct_b is not None and pct_b > 100:
        why = "above the calibrated copy bandwidth: "
        why += "the working set fits in cache, so bytes came from cache, not main memory"
        if cpu:
            why += ", or the calibration ran while other work shared the cores"
        notes.append(why)
    return "; ".join(notes) or None


def roofline_columns(
    point: dict[str, Any], family: str, time_ms: float, peaks: dict[str, Any] | None, math: str | None = None
) -> dict[str, Any]:
    """Row columns for ``point`` measured at ``time_ms`` per call (median).

    ``peaks``: the run's calibration (``{"flops_per_s_by_math": {mode: rate}, "bytes_per_s":
    rate}``, see :mod:`attnbench.measure.peaks`); ``math``: the math mode the impl's products run
    on (:func:`attnbench.measure.mathmode.point_math_mode` when None). Percentages and ``bound``
    are None without peaks, or when the family has no model.
    """
    out: dict[str, Any] = dict.fromkeys(ROOFLINE_COLUMNS)
    if family not in BWD_FACTOR or point.get("dtype") not in ELEMENT_BYTES or not time_ms or time_ms <= 0:
        return out
    flops, nbytes = point_model(point, family)
    sec = time_ms / 1e3
    out.update(
        model_flops=flops,
        model_bytes=nbytes,
        arith_intensity=flops / nbytes,
        tflops=flops / sec / 1e12,
        gbps=nbytes / sec / 1e9,
    )
    if math is None:
        math = point_math_mode(point)
    out["peak_math"] = math
    peaks = peaks or {}
    peak_f = _flops_peak(peaks, math, point["dtype"])
    peak_b = peaks.get("bytes_per_s")
    if peak_f:
        out["pct_peak_flops"] = 100.0 * flops / sec / peak_f
    if peak_b:
        out["pct_peak_bw"] = 100.0 * nbytes / sec / peak_b
    if peak_f and peak_b:
        out["bound"] = "compute" if flops / nbytes >= peak_f / peak_b else "memory"
    out["pct_peak_note"] = _note(point, math, out["pct_peak_flops"], out["pct_peak_bw"], peaks)
    return out
