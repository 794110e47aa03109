"""FLOP and byte models with exact expected numbers; roofline columns against given peaks."""

from __future__ import annotations

import pytest

from attnbench.measure.roofline import ROOFLINE_COLUMNS, pass_bytes, pass_flops, roofline_columns

SHAPE = dict(b=1, h=4, n=1024, d=64, m=64)


def test_softmax_flops():
    # 4*B*H*N^2*D when M = D; causal halves it; bwd 2.5x; fwdbwd = sum
    assert pass_flops("softmax", "fwd", **SHAPE, causal=False) == 4 * 4 * 1024**2 * 64 == 1_073_741_824
    assert pass_flops("softmax", "fwd", **SHAPE, causal=True) == 536_870_912
    assert pass_flops("softmax", "bwd", **SHAPE, causal=True) == 1_342_177_280
    assert pass_flops("softmax", "fwdbwd", **SHAPE, causal=True) == 1_879_048_192
    # D != M: 2*B*H*N^2*(D+M)
    assert pass_flops("softmax", "fwd", b=2, h=1, n=10, d=8, m=4, causal=False) == 2 * 2 * 100 * 12


def test_linear_flops():
    # 4*B*H*N*D*M + feature map 4*B*H*N*D + normaliser B*H*N*(3D+M); causal or not
    fwd = 4 * 4 * 1024 * 64 * 64 + 4 * 4 * 1024 * 64 + 4 * 1024 * (3 * 64 + 64)
    assert fwd == 69_206_016
    assert pass_flops("linear", "fwd", **SHAPE, causal=True) == fwd
    assert pass_flops("linear", "fwd", **SHAPE, causal=False) == fwd
    assert pass_flops("linear", "bwd", **SHAPE, causal=True) == 2 * fwd
    assert pass_flops("linear", "fwdbwd", **SHAPE, causal=True) == 3 * fwd
    with pytest.raises(ValueError, match="no FLOP model"):
        pass_flops("mamba", "fwd", **SHAPE, causal=True)


def test_bytes():
    # fwd reads q, k, v and writes out; bwd reads q, k, v, g and writes dq, dk, dv
    assert pass_bytes("fwd", **SHAPE, dtype="float32") == 4 * 4 * 1024 * (2 * 64 + 2 * 64) == 4_194_304
    assert pass_bytes("bwd", **SHAPE, dtype="float32") == 4 * 4 * 1024 * (4 * 64 + 3 * 64) == 7_340_032
    assert pass_bytes("fwdbwd", **SHAPE, dtype="float32") == 11_534_336
    assert pass_bytes("fwd", **SHAPE, dtype="bfloat16") == 2_097_152


def point(pass_="fwd", dtype="float32"):
    return {"B": 1, "H": 4, "N": 1024, "D": 64, "M": 64, "causal": True, "pass": pass_, "dtype": dtype}


PEAKS = {"flops_per_s": {"float32": 1e12}, "bytes_per_s": 1e11}  # ridge point 10 FLOP/B


def test_roofline_columns_exact():
    cols = roofline_columns(point(), "softmax", 1.0, PEAKS)
    assert cols["model_flops"] == 536_870_912 and cols["model_bytes"] == 4_194_304
    assert cols["arith_intensity"] == 128.0
    assert cols["tflops"] == pytest.approx(0.536870912)
    assert cols["pct_peak_flops"] == pytest.approx(53.6870912)
    assert cols["gbps"] == pytest.approx(4.194304)
    assert cols["pct_peak_bw"] == pytest.approx(4.194304)
    assert cols["bound"] == "compute"


def test_bound_follows_the_ridge_point():
    lin = roofline_columns(point(), "linear", 2.0, PEAKS)
    assert lin["arith_intensity"] == 16.5 and lin["bound"] == "compute"
    low_ridge = {"flops_per_s": {"float32": 2e12}, "bytes_per_s": 1e11}  # ridge 20
    assert roofline_columns(point(), "linear", 2.0, low_ridge)["bound"] == "memory"


def test_missing_peaks_or_model_leave_columns_empty():
    cols = roofline_columns(point(dtype="bfloat16"), "softmax", 1.0, PEAKS)  # no bf16 peak
    assert cols["tflops"] > 0 and cols["pct_peak_flops"] is None and cols["bound"] is None
    assert cols["pct_peak_bw"] is not None
    assert roofline_columns(point(), "softmax", 1.0, None)["pct_peak_bw"] is None
    assert roofline_columns(point(), "mamba", 1.0, PEAKS) == dict.fromkeys(ROOFLINE_COLUMNS)
