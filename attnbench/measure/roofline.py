"""FLOP and byte models per implementation family and pass, and where a point sits on the roofline.

The models count the *useful* work of the family's algorithm, not what a given impl does: an impl
that spends more (linear attention the O(N^2) way, a materialised mask) shows as a lower
fraction of peak, which is the point of the comparison. Shapes: q, k ``[B, H, N, D]``,
v, out, g ``[B, H, N, M]``. One multiply-add is 2 FLOPs.

Softmax (fwd): S = Q K^T is 2*B*H*N^2*D, O = P V is 2*B*H*N^2*M, so 2*B*H*N^2*(D+M)
(= 4*B*H*N^2*D when M = D); the softmax itself (O(N^2)) is not counted, as in
flash-attention's benchmarks. Causal halves it. Backward = 2.5 x forward.

Linear (fwd, causal or not): state update phi(k_j) v_j^T and read-out phi(q_i) S_i are 2*D*M
each per token, so 4*B*H*N*D*M; the feature map elu(x)+1 on q and k is 2 FLOPs per element
(4*B*H*N*D); the normaliser (running sum of phi(k): D adds, phi(q).z: 2*D, the divide: M per
token) is B*H*N*(3*D + M). Backward = 2 x forward.

fwdbwd = fwd + bwd, for FLOPs and bytes alike.

Bytes (minimal traffic, each tensor read or written once, at the point's element size):
fwd reads q, k, v and writes out: B*H*N*(2*D + 2*M) elements. bwd reads q, k, v and g and writes
dq, dk, dv: B*H*N*(4*D + 3*M) elements.

Units: ``tflops`` 1e12 FLOP/s, ``gbps`` 1e9 bytes/s (decimal, like vendor bandwidth figures);
percentages are 0..100 of the calibrated peaks (see :mod:`attnbench.measure.peaks`).
"""

from __future__ import annotations

from typing import Any

ELEMENT_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}
BWD_FACTOR = {"softmax": 2.5, "linear": 2.0}

ROOFLINE_COLUMNS = (
    "model_flops",
    "model_bytes",
    "arith_intensity",
    "tflops",
    "gbps",
    "pct_peak_flops",
    "pct_peak_bw",
    "bound",
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
    bwd = e * b * h * n * (4 * d + 3 * m)
    return float({"fwd": fwd, "bwd": bwd, "fwdbwd": fwd + bwd}[pass_])


def point_model(point: dict[str, Any], family: str) -> tuple[float, float]:
    """(FLOPs, bytes) of one call of ``point``'s pass."""
    b, h, n, d, m = (int(point[k]) for k in ("B", "H", "N", "D", "M"))
    flops = pass_flops(family, point["pass"], b, h, n, d, m, bool(point["causal"]))
    return flops, pass_bytes(point["pass"], b, h, n, d, m, point["dtype"])


def roofline_columns(
    point: dict[str, Any], family: str, time_ms: float, peaks: dict[str, Any] | None
) -> dict[str, Any]:
    """Row columns for ``point`` measured at ``time_ms`` per call (median).

    ``peaks``: the run's calibration (``{"flops_per_s": {dtype: rate}, "bytes_per_s": rate}``);
    percentages and ``bound`` are None without it, or when the family has no model.
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
    peak_f = ((peaks or {}).get("flops_per_s") or {}).get(point["dtype"])
    peak_b = (peaks or {}).get("bytes_per_s")
    if peak_f:
        out["pct_peak_flops"] = 100.0 * flops / sec / peak_f
    if peak_b:
        out["pct_peak_bw"] = 100.0 * nbytes / sec / peak_b
    if peak_f and peak_b:
        out["bound"] = "compute" if flops / nbytes >= peak_f / peak_b else "memory"
    return out
