"""NVML telemetry through a fake NVML (pynvml's functions monkeypatched, real exception classes):
normal readings, a throttled clock, unsupported readings, no driver, an old driver; the sampler
joined to a real (CPU) measured point."""

from __future__ import annotations

import pynvml
import pytest

from attnbench.measure import nvml as nvml_mod
from attnbench.measure import telemetry
from attnbench.measure.nvml import Reading, decode_reasons, is_throttle, open_nvml
from attnbench.measure.passes import measure_point
from attnbench.point import Point, RunOptions, TimingConfig
from tests.fake_nvml import UUID, FakeGpu, install

POWER_CAP = pynvml.nvmlClocksEventReasonSwPowerCap
IDLE = pynvml.nvmlClocksEventReasonGpuIdle


def test_reason_bits_match_pynvml_and_decode():
    assert nvml_mod.REASON_BITS[pynvml.nvmlClocksEventReasonSwThermalSlowdown] == "sw_thermal_slowdown"
    assert nvml_mod.REASON_BITS[pynvml.nvmlClocksEventReasonSyncBoost] == "sync_boost"
    assert decode_reasons(POWER_CAP | IDLE) == ["gpu_idle", "sw_power_cap"]
    assert decode_reasons(0x10000) == ["0x10000"]
    assert not is_throttle(["gpu_idle", "applications_clocks_setting"])
    assert is_throttle(["gpu_idle", "hw_thermal_slowdown"])


def test_device_info_and_readings(monkeypatch):
    install(monkeypatch, FakeGpu())
    nv, reason = open_nvml()
    assert reason is None and nv is not None
    handle, how = nv.handle_for_cuda(0, UUID.removeprefix("GPU-"))  # torch's uuid has no prefix
    assert how == f"uuid {UUID}"
    info = nv.device_info(handle)
    assert info == {
        "name": "NVIDIA Fake H100",
        "uuid": UUID,
        "driver_version": "550.54.15",
        "cuda_driver_version": "12.4",
        "power_limit_w": 700.0,
        "ecc_enabled": True,
        "persistence_mode": True,
    }
    r = nv.read(handle)
    assert (r.power_w, r.sm_clock_mhz, r.temp_c, r.util_pct, r.reasons) == (300.0, 1980.0, 61.0, 97.0, 0)
    assert nv.process_mib(handle) == 512.0
    assert nv.energy_mj(handle) == 1_000_000


def test_not_supported_readings_are_none_not_errors(monkeypatch):
    install(
        monkeypatch,
        FakeGpu(
            not_supported={"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetEccMode"}
        ),
    )
    nv, _ = open_nvml()
    h, _ = nv.handle_for_cuda(0, UUID)
    assert nv.device_info(h)["ecc_enabled"] is None
    r = nv.read(h)
    assert r.power_w is None and r.sm_clock_mhz == 1980.0
    assert nv.energy_mj(h) is None
    assert {"power", "energy", "ecc"} <= nv.unsupported


def test_library_not_found_means_unavailable_with_reason(monkeypatch):
    install(monkeypatch, FakeGpu(init_error=pynvml.NVMLError_LibraryNotFound))
    nv, reason = open_nvml()
    assert nv is None and "library not found" in reason.lower()
    probed = telemetry.probe("cuda", 0, UUID)
    assert probed["available"] is False and "no NVIDIA driver" in probed["reason"]
    with telemetry.PointTelemetry({"index": 0, "uuid": UUID}) as tele:
        pass
    assert tele.columns(10) == dict.fromkeys(telemetry.TELEMETRY_COLUMNS)


def test_old_driver_without_clocks_event_reasons_falls_back(monkeypatch):
    gpu = install(monkeypatch, FakeGpu(reasons=POWER_CAP, missing={"nvmlDeviceGetCurrentClocksEventReasons"}))
    nv, _ = open_nvml()
    h, _ = nv.handle_for_cuda(0, UUID)
    assert nv.read(h).reasons == POWER_CAP
    assert gpu.calls["nvmlDeviceGetCurrentClocksThrottleReasons"] == 1


def test_function_not_found_everywhere_is_still_not_an_error(monkeypatch):
    names = {"nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"}
    install(monkeypatch, FakeGpu(missing=names))
    nv, _ = open_nvml()
    h, _ = nv.handle_for_cuda(0, UUID)
    assert nv.read(h).reasons is None


def test_summarize_readings_exact():
    rs = [
        Reading(0.0, 200.0, 1800.0, 60.0, 90.0, 0),
        Reading(0.01, 300.0, 1500.0, 70.0, 100.0, POWER_CAP),
        Reading(0.02, 250.0, 1800.0, 65.0, None, IDLE),
    ]
    cols = telemetry.summarize_readings(rs, energy_mj=50_000, window_s=0.02, calls=100)
    assert cols == {
        "power_w_mean": 250.0,
        "energy_j_per_call": 0.5,
        "sm_clock_mhz_min": 1500.0,
        "sm_clock_mhz_mean": 1700.0,
        "temp_c_max": 70.0,
        "gpu_util_pct_mean": 95.0,
        "throttle_reasons": "sw_power_cap,gpu_idle",
        "throttled": True,
        "telemetry_samples": 3,
    }
    # no energy counter: mean power x window / calls
    cols = telemetry.summarize_readings(rs, energy_mj=None, window_s=2.0, calls=100)
    assert cols["energy_j_per_call"] == pytest.approx(250.0 * 2.0 / 100)
    idle_only = [Reading(0.0, 80.0, 300.0, 40.0, 0.0, IDLE)]
    assert telemetry.summarize_readings(idle_only, None, 0.0, 1)["throttled"] is False


POINT = Point("linear-chunked", "fwd", True, "float32", B=1, H=2, N=64, D=16, M=16, params={"chunk_size": 16})
OPTIONS = RunOptions(
    "cpu",
    1,
    TimingConfig.from_table(
        {"warmup_s": 0.001, "min_samples": 3, "min_time_s": 0.03, "max_time_s": 0.06, "block_min_s": 0.001}
    ),
    telemetry={"index": 0, "uuid": UUID, "interval_s": 0.005},
    peaks={"flops_per_s": {"float32": 1e11}, "bytes_per_s": 1e10},
)


def test_sampler_joined_to_a_measured_point(monkeypatch):
    gpu = install(monkeypatch, FakeGpu(power_mw=250_000, sm_clock_mhz=1755, energy_mj=[2_000_000, 2_012_345]))
    row = measure_point(POINT, OPTIONS).row
    assert row["status"] == "ok" and row["correct"]
    calls = row["warmup_calls"] + row["n_samples"] * row["calls_per_sample"]
    assert row["power_w_mean"] == 250.0
    assert row["energy_j_per_call"] == pytest.approx(12.345 / calls)
    assert row["sm_clock_mhz_min"] == row["sm_clock_mhz_mean"] == 1755.0
    assert row["temp_c_max"] == 61.0 and row["gpu_util_pct_mean"] == 97.0
    assert row["throttled"] is False and row["throttle_reasons"] == ""
    assert row["telemetry_samples"] >= 3  # one at each end and the thread's
    assert gpu.calls["nvmlDeviceGetTotalEnergyConsumption"] == 2
    assert row["tflops"] > 0 and row["pct_peak_flops"] > 0 and row["bound"] in ("compute", "memory")


def test_throttled_point_is_flagged(monkeypatch):
    install(monkeypatch, FakeGpu(reasons=pynvml.nvmlClocksEventReasonHwThermalSlowdown | POWER_CAP, sm_clock_mhz=1100))
    row = measure_point(POINT, OPTIONS).row
    assert row["status"] == "ok"
    assert row["throttled"] is True
    assert row["throttle_reasons"] == "sw_power_cap,hw_thermal_slowdown"
    assert row["sm_clock_mhz_min"] == 1100.0


def test_point_without_nvml_still_measured(monkeypatch):
    install(monkeypatch, FakeGpu(init_error=pynvml.NVMLError_LibraryNotFound))
    row = measure_point(POINT, OPTIONS).row
    assert row["status"] == "ok" and row["time_ms_median"] > 0
    assert all(row[c] is None for c in telemetry.TELEMETRY_COLUMNS)


def test_probe_reports_device_on_cuda_and_why_not_on_cpu(monkeypatch):
    install(monkeypatch, FakeGpu())
    got = telemetry.probe("cuda", 0, UUID)
    assert got["available"] is True and got["device"]["name"] == "NVIDIA Fake H100"
    assert got["mapped_by"] == f"uuid {UUID}"
    cpu = telemetry.probe("cpu", 0, None)
    assert cpu["available"] is False and "not sampled on cpu runs" in cpu["reason"]
