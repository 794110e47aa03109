"""On a CUDA machine (``nox -s gpu``): points run end to end through the public CLI and the fork
server; the timed window and the energy block on real NVML; `attnbench doctor --device cuda`.
Every test here needs a GPU; without one they skip (tests/conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.gpu


def _attnbench(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ.copy(),
    )


def test_points_run_through_the_fork_server_on_cuda(tmp_path):
    out = tmp_path / "run"
    res = _attnbench(
        "run", "--device", "cuda", "--suite", "smoke", "--impl", "sdpa,linear-chunked,linear-chunked-triton",
        "--set", "N=256", "--set", "causal=true", "--out", str(out), "--no-report", "--json", "--strict",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout)["points"]
    ran = [r for r in rows if r["status"] == "ok"]
    assert {r["impl"] for r in ran} >= {"sdpa", "linear-chunked"}
    for r in ran:
        assert r["timer"] == "cuda-event" and r["correct"], r
        assert r["time_ms_median"] > 0 and r["warmup_calls"] >= 4
        assert r["l2_flush_mib"] >= 256 and r["host_overhead_ms"] >= 0 and r["launch_bound"] in (True, False)
        assert r["peak_math"] in ("fp32", "tf32") and r["mem_method"] == "cuda-allocator"
    assert len({r["server_pid"] for r in ran}) >= 1  # forked workers, not this process
    meta = json.loads((out / "metadata.json").read_text())
    assert "tf32" in meta["peaks"]["flops_per_s_by_math"]


def test_the_cuda_kernel_builds_and_runs_a_point(tmp_path):
    """With CUDA_HOME from the nvcc wheels (`nox -s gpu`), the CUDA kernel is built, not skipped."""
    if not os.environ.get("CUDA_HOME"):
        pytest.skip("CUDA_HOME is not set: run through `nox -s gpu`")
    out = tmp_path / "run"
    res = _attnbench(
        "run", "--device", "cuda", "--suite", "seqlen", "--impl", "linear-causal-cuda", "--set", "N=512",
        "--set", "pass=fwdbwd", "--out", str(out), "--no-report", "--json",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    (row,) = json.loads(res.stdout)["points"]
    assert row["status"] == "ok" and row["correct"], row


def test_timed_window_and_energy_block_on_real_nvml():
    import torch

    from attnbench.measure import telemetry
    from attnbench.measure.cuda_timer import TimedWindow, time_cuda
    from attnbench.measure.timer import TimerConfig

    idx, uuid = telemetry.cuda_identity()
    if not telemetry.probe("cuda", idx, uuid)["available"]:
        pytest.skip("NVML is not available on this machine")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    window = TimedWindow()
    cfg = {"index": idx, "uuid": uuid, "interval_s": 0.01, "energy_block_s": 1.0}
    with telemetry.PointTelemetry(cfg) as tele:
        timing = time_cuda(lambda: a @ a, TimerConfig(warmup_s=0.1, min_time_s=1.2, max_time_s=2.0), window=window)
        block = tele.energy_block(window.timed_fn)
    cols = tele.columns(window=window)
    assert timing.samples_ms and block is not None and block.calls > 10
    assert cols["power_method"] == "energy-counter" and cols["power_w_mean"] > 50
    assert cols["energy_j_per_call"] == pytest.approx(cols["power_w_mean"] * cols["energy_block_s"] / block.calls)
    assert cols["telemetry_window_s"] >= 1.0 and cols["telemetry_window_short"] is False
    assert cols["sm_clock_mhz_min"] > 0


def test_doctor_on_cuda(tmp_path):
    out = tmp_path / "bundle.json"
    res = _attnbench("doctor", "--device", "cuda", "--out", str(out), timeout=1200)
    assert res.returncode in (0, 1), res.stderr[-3000:]
    for title in ("timer agreement", "GPU state", "launch overhead", "NVML energy", "kernels against"):
        assert title in res.stdout
    bundle = json.loads(out.read_text())
    checks = {c["name"]: c for c in bundle["checks"]}
    if checks["quiet host"]["status"] == "pass":
        timer_fails = [c["summary"] for c in bundle["checks"] if c["group"] == "timer" and c["status"] == "fail"]
        assert not timer_fails, timer_fails
    kernel_fails = [c["summary"] for c in bundle["checks"] if c["group"] == "kernels" and c["status"] == "fail"]
    assert not kernel_fails, kernel_fails
