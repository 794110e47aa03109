"""FLOP and byte models with exact expected numbers; roofline columns against the peak of each
point's math mode; the TF32 switch read through torch's new API; calibration per math mode."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from attnbench.measure import mathmode, peaks
from attnbench.measure.roofline import ROOFLINE_COLUMNS, pass_bytes, pass_flops, roofline_columns

SHAPE = dict(b=1, h=4, n=1024, d=64, m=64)


def test_softmax_flops():
    # 4*B*H*N^2*D when M = D; causal halves it; bwd 2x (no recompute counted); fwdbwd = sum
    assert pass_flops("softmax", "fwd", **SHAPE, causal=False) == 4 * 4 * 1024**2 * 64 == 1_073_741_824
    assert pass_flops("softmax", "fwd", **SHAPE, causal=True) == 536_870_912
    assert pass_flops("softmax", "bwd", **SHAPE, causal=True) == 1_073_741_824
    assert pass_flops("softmax", "fwdbwd", **SHAPE, causal=True) == 1_610_612_736
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


def test_one_backward_convention_for_both_families():
    for family in ("softmax", "linear"):
        for causal in (True, False):
            fwd = pass_flops(family, "fwd", **SHAPE, causal=causal)
            assert pass_flops(family, "bwd", **SHAPE, causal=causal) == 2 * fwd


def test_bytes():
    # fwd reads q, k, v and writes out; bwd reads q, k, v, out, g and writes dq, dk, dv
    assert pass_bytes("fwd", **SHAPE, dtype="float32") == 4 * 4 * 1024 * (2 * 64 + 2 * 64) == 4_194_304
    assert pass_bytes("bwd", **SHAPE, dtype="float32") == 4 * 4 * 1024 * (4 * 64 + 4 * 64) == 8_388_608
    assert pass_bytes("fwdbwd", **SHAPE, dtype="float32") == 12_582_912
    assert pass_bytes("fwd", **SHAPE, dtype="bfloat16") == 2_097_152


def point(pass_="fwd", dtype="float32", device="cpu", impl="linear-chunked"):
    return {
        "B": 1, "H": 4, "N": 1024, "D": 64, "M": 64, "causal": True, "pass": pass_, "dtype": dtype,
        "device": device, "impl": impl,
    }  # fmt: skip


PEAKS = {"flops_per_s_by_math": {"fp32": 1e12}, "bytes_per_s": 1e11}  # ridge point 10 FLOP/B


def test_roofline_columns_exact():
    cols = roofline_columns(point(), "softmax", 1.0, PEAKS)
    assert cols["model_flops"] == 536_870_912 and cols["model_bytes"] == 4_194_304
    assert cols["arith_intensity"] == 128.0
    assert cols["tflops"] == pytest.approx(0.536870912)
    assert cols["pct_peak_flops"] == pytest.approx(53.6870912)
    assert cols["gbps"] == pytest.approx(4.194304)
    assert cols["pct_peak_bw"] == pytest.approx(4.194304)
    assert cols["bound"] == "compute"
    assert cols["peak_math"] == "fp32" and cols["pct_peak_note"] is None


def test_bound_follows_the_ridge_point():
    lin = roofline_columns(point(), "linear", 2.0, PEAKS)
    assert lin["arith_intensity"] == 16.5 and lin["bound"] == "compute"
    low_ridge = {"flops_per_s_by_math": {"fp32": 2e12}, "bytes_per_s": 1e11}  # ridge 20
    assert roofline_columns(point(), "linear", 2.0, low_ridge)["bound"] == "memory"


def test_missing_peaks_or_model_leave_columns_empty():
    cols = roofline_columns(point(dtype="bfloat16"), "softmax", 1.0, PEAKS)  # no bf16 peak
    assert cols["tflops"] > 0 and cols["pct_peak_flops"] is None and cols["bound"] is None
    assert cols["pct_peak_bw"] is not None and cols["peak_math"] == "bf16"
    assert roofline_columns(point(), "softmax", 1.0, None)["pct_peak_bw"] is None
    assert roofline_columns(point(), "mamba", 1.0, PEAKS) == dict.fromkeys(ROOFLINE_COLUMNS)


CUDA_PEAKS = {"flops_per_s_by_math": {"fp32": 50e12, "tf32": 400e12, "bf16": 800e12}, "bytes_per_s": 3e12}


def test_sdpa_in_fp32_on_cuda_is_judged_against_the_tf32_peak():
    """Old behaviour: the fp32 peak (TF32 off) judged SDPA, whose fused kernels run fp32 on tensor
    cores, and pct_peak_flops went past 100."""
    fast = 536_870_912 / 100e12 * 1e3  # 100 TFLOP/s: 2x the FP32 units' peak
    cols = roofline_columns(point(impl="sdpa", device="cuda"), "softmax", fast, CUDA_PEAKS, None)
    assert cols["peak_math"] == "tf32" and cols["pct_peak_flops"] == pytest.approx(25.0)
    assert cols["pct_peak_note"] is None


def test_matmul_flag_impls_follow_torchs_tf32_switch():
    p = point(impl="softmax", device="cuda")
    assert (
        roofline_columns(p, "softmax", 1.0, CUDA_PEAKS, math=mathmode.point_math_mode(p, tf32=True))["peak_math"]
        == "tf32"
    )
    assert mathmode.point_math_mode(p, tf32=False) == "fp32"
    assert mathmode.point_math_mode(point(impl="linear-causal-cuda", device="cuda"), tf32=True) == "fp32"
    assert mathmode.point_math_mode(point(impl="sdpa", device="cpu")) == "fp32"  # no TF32 on a CPU
    assert mathmode.point_math_mode(point(impl="sdpa", device="cuda", dtype="float16")) == "fp16"
    declared = SimpleNamespace(fp32_math="simt")  # a future ImplSpec field wins over the table
    assert mathmode.point_math_mode(point(impl="sdpa", device="cuda"), declared) == "fp32"


def test_above_100_percent_is_kept_and_explained():
    p = point(impl="softmax", device="cuda")
    fast = 536_870_912 / 100e12 * 1e3
    cols = roofline_columns(p, "softmax", fast, CUDA_PEAKS, math="fp32")
    assert cols["pct_peak_flops"] == pytest.approx(200.0)
    assert "TF32 tensor cores" in cols["pct_peak_note"]
    cpu = roofline_columns(point(), "softmax", 0.1, {"flops_per_s_by_math": {"fp32": 1e9}, "bytes_per_s": 1e9})
    assert cpu["pct_peak_flops"] > 100 and cpu["pct_peak_bw"] > 100
    assert "calibration" in cpu["pct_peak_note"] and "cache" in cpu["pct_peak_note"]
    faster_than_all = roofline_columns(p, "softmax", fast / 100, CUDA_PEAKS, math="tf32")
    assert "model" in faster_than_all["pct_peak_note"]


def test_a_run_calibrated_per_dtype_is_read_for_plain_math_only():
    old = {"flops_per_s": {"float32": 1e12}, "bytes_per_s": 1e11}
    assert roofline_columns(point(), "softmax", 1.0, old, math="fp32")["pct_peak_flops"] == pytest.approx(53.6870912)
    assert roofline_columns(point(), "softmax", 1.0, old, math="tf32")["pct_peak_flops"] is None


# ---- the TF32 switch ----------------------------------------------------------------------


def _backends(new=None, generic="none", legacy=None, legacy_raises=False):
    class Matmul:
        def __getattr__(self, name):
            if name == "fp32_precision" and new is not None:
                return new
            if name == "allow_tf32" and legacy is not None:
                if legacy_raises:
                    raise RuntimeError("mix of the legacy and new APIs")
                return legacy
            raise AttributeError(name)

    return SimpleNamespace(cuda=SimpleNamespace(matmul=Matmul()), fp32_precision=generic)


def test_fp32_precision_reads_the_new_api_first():
    assert mathmode.fp32_matmul_precision(_backends(new="tf32", legacy=False, legacy_raises=True)) == "tf32"
    assert mathmode.fp32_matmul_precision(_backends(new="ieee", legacy=True)) == "ieee"
    assert mathmode.fp32_matmul_precision(_backends(new="none", generic="tf32")) == "tf32"
    assert mathmode.fp32_matmul_precision(_backends(new="none", generic="none")) == "ieee"
    assert mathmode.fp32_matmul_precision(_backends(legacy=True)) == "tf32"  # an old torch
    assert mathmode.fp32_matmul_precision(_backends(legacy=False)) == "ieee"


@pytest.fixture
def restore_precision():
    m = torch.backends.cuda.matmul
    before = m.fp32_precision
    yield m
    m.fp32_precision = before


def test_real_torch_after_the_new_api_was_used(restore_precision):
    """Old behaviour: reading allow_tf32 raised once anything used fp32_precision."""
    restore_precision.fp32_precision = "tf32"
    with pytest.raises(RuntimeError):
        torch.backends.cuda.matmul.allow_tf32  # noqa: B018  (the legacy read this module avoids)
    assert mathmode.fp32_matmul_precision() == "tf32" and mathmode.tf32_enabled()
    assert mathmode.set_fp32_matmul_precision("ieee") == "tf32"
    assert mathmode.fp32_matmul_precision() == "ieee"
    with pytest.raises(ValueError, match="expected 'tf32' or 'ieee'"):
        mathmode.set_fp32_matmul_precision("high")


def test_calibration_measures_each_math_mode_under_its_own_switch(monkeypatch, restore_precision):
    """On a (faked) sm_90 device: fp32 with TF32 off, tf32 with it on, bf16; the switch is
    restored and recorded through the new API (old code read the legacy flag and raised)."""
    restore_precision.fp32_precision = "tf32"  # the user's choice, made with the new API
    seen = []
    real_randn, real_empty = torch.randn, torch.empty

    def on_cpu(fn):
        return lambda *a, device=None, **k: fn(*a, **k)

    def timer(fn):
        seen.append(mathmode.fp32_matmul_precision())
        return 1.0

    monkeypatch.setattr(torch, "randn", on_cpu(real_randn))
    monkeypatch.setattr(torch, "empty", on_cpu(real_empty))
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (2**30, 2**31))
    monkeypatch.setattr(peaks, "_cuda_timer", timer)
    monkeypatch.setattr(peaks, "CUDA_N", {"float64": 8, "default": 8})
    got = peaks.calibrate("cuda", ["float32", "bfloat16"], budget_s=0.0)
    assert list(got["flops_per_s_by_math"]) == ["fp32", "tf32", "bf16"]
    assert seen[:9] == ["ieee"] * 3 + ["tf32"] * 3 + ["tf32"] * 3  # 3 calls per mode; bf16 ignores the switch
    assert got["flops_per_s"] == {"float32": got["flops_per_s_by_math"]["fp32"], "bfloat16": 2 * 8**3}
    assert got["method"]["fp32_matmul_precision"] == "tf32" and mathmode.fp32_matmul_precision() == "tf32"
    assert peaks.math_modes("cuda", ["float32"], tf32_capable=False) == ["fp32"]
    assert peaks.math_modes("cpu", ["float64", "float32", "float16"], tf32_capable=True) == ["fp64", "fp32", "fp16"]
