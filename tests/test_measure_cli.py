"""`attnbench env` and a small CPU run through the real CLI: roofline columns against the run's
calibrated peaks, and telemetry absent (with the reason in the metadata) where there is no NVML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]

SUITE = """
name = "roof"
[params]
impl = ["linear-chunked", "softmax"]
N = [64]
B = 1
H = 2
D = 16
M = 16
pass = ["fwd"]
[impl_params]
linear-chunked = { chunk_size = 16 }
[timing]
warmup_s = 0.001
min_samples = 3
min_time_s = 0.001
max_time_s = 0.02
timeout_s = 120
"""


def attnbench(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env, timeout=300
    )


def _no_nvml() -> bool:
    from attnbench.measure.nvml import open_nvml

    nv, _ = open_nvml()
    if nv is not None:
        nv.close()
    return nv is None


def test_env_json_reports_nvml_state_and_peaks():
    res = attnbench("env", "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["env"]["device"] == "cpu" and info["env"]["torch"]
    assert info["telemetry"]["available"] is False and info["telemetry"]["reason"]
    if _no_nvml():
        assert "NVML" in info["telemetry"]["reason"]
    peaks = info["peaks"]
    assert peaks["flops_per_s"]["float32"] > 0 and peaks["bytes_per_s"] > 0
    assert "matmul" in peaks["method"]["flops_float32"]
    assert peaks["calibration_s"] < 10  # about 1 s idle; generous for a shared CI box


def test_env_rejects_a_bad_dtype():
    res = attnbench("env", "--dtype", "int3", "--no-calibrate")
    assert res.returncode == 2 and res.stderr.startswith("error: --dtype 'int3'")


def test_cpu_run_has_roofline_columns_and_says_why_no_telemetry(tmp_path):
    suite = tmp_path / "roof.toml"
    suite.write_text(SUITE)
    out = tmp_path / "run"
    res = attnbench("run", "--suite", str(suite), "--out", str(out), "--no-report", "--device", "cpu", "--threads", "1")
    assert res.returncode == 0, res.stderr
    meta = json.loads((out / "metadata.json").read_text())
    mm = meta["peaks"]["flops_per_s"]["float32"]
    assert mm > 0 and meta["peaks"]["method"]["threads"] == "1"
    assert meta["telemetry"]["available"] is False and "not sampled on cpu runs" in meta["telemetry"]["reason"]
    df = pd.read_parquet(out / "results.parquet").set_index("impl")
    assert (df["status"] == "ok").all()
    for impl in ("linear-chunked", "softmax"):
        r = df.loc[impl]
        assert r["tflops"] > 0 and r["pct_peak_flops"] > 0 and r["bound"] in ("compute", "memory")
        assert r["pct_peak_flops"] == pytest.approx(100 * r["tflops"] * 1e12 / mm)
        assert r["power_w_mean"] is None and r["throttled"] is None  # columns exist, empty
    assert df.loc["softmax", "model_flops"] == 2 * 1 * 2 * 64 * 64 * 32 / 2
