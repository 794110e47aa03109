"""NVML telemetry through a fake NVML (pynvml's functions monkeypatched, real exception classes):
normal readings, a throttled clock, unsupported readings, no driver, an old driver, a MIG
instance; the timed window and the energy block; the sampler joined to a real (CPU) measured point."""

from __future__ import annotations

import threading
import time

import pynvml
import pytest

from attnbench.measure import nvml as nvml_mod
from attnbench.measure import telemetry
from attnbench.measure.cuda_timer import TimedWindow
from attnbench.measure.nvml import Reading, decode_reasons, is_throttle, open_nvml
from attnbench.measure.passes import measure_point
from attnbench.measure.telemetry import EnergyBlock, Span
from attnbench.point import Point, RunOptions, TimingConfig
from tests.fake_nvml import MIG_UUID, UUID, FakeGpu, install

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


RS = [
    Reading(0.0, 200.0, 1800.0, 60.0, 90.0, 0),
    Reading(0.01, 300.0, 1500.0, 70.0, 100.0, POWER_CAP),
    Reading(0.02, 250.0, 1800.0, 65.0, None, IDLE),
]


def test_summarize_readings_exact():
    """The legacy numbers over a whole context (what a caller without a window gets)."""
    cols = telemetry.summarize_readings(RS, energy_mj=50_000, window_s=0.02, calls=100)
    assert cols == {
        "power_w_mean": 250.0,
        "energy_j_per_call": 0.5,
        "power_method": "context-window",
        "energy_block_s": None,
        "energy_block_calls": None,
        "sm_clock_mhz_min": 1500.0,
        "sm_clock_mhz_mean": 1700.0,
        "temp_c_max": 70.0,
        "gpu_util_pct_mean": 95.0,
        "throttle_reasons": "sw_power_cap,gpu_idle",
        "throttled": True,
        "telemetry_samples": 3,
        "telemetry_window_s": 0.02,
        "telemetry_window_short": True,
        "telemetry_scope": None,
    }
    # no energy counter: mean power x window / calls
    cols = telemetry.summarize_readings(RS, energy_mj=None, window_s=2.0, calls=100)
    assert cols["energy_j_per_call"] == pytest.approx(250.0 * 2.0 / 100)
    assert cols["telemetry_window_short"] is False
    idle_only = [Reading(0.0, 80.0, 300.0, 40.0, 0.0, IDLE)]
    assert telemetry.summarize_readings(idle_only, None, 0.0, 1)["throttled"] is False


def test_windows_keep_only_their_readings_and_power_is_energy_over_time():
    warm = [Reading(t, 90.0, 300.0, 40.0, 0.0, IDLE) for t in (0.0, 0.5, 0.9)]  # warm-up: idle clocks
    timed = [Reading(t, 400.0, 1900.0 + t, 60.0, 100.0, 0) for t in (1.0, 1.5, 2.0)]
    gap = [Reading(2.1, 100.0, 200.0, 41.0, 0.0, IDLE)]  # between the timed window and the block
    block = [Reading(t, 500.0, 1700.0, 70.0, 100.0, POWER_CAP) for t in (2.2, 3.0, 3.4)]
    eb = EnergyBlock(calls=1000, span=Span(2.2, 3.45), energy_mj=625_000)  # 625 J in 1.25 s
    cols = telemetry.summarize_windows(warm + timed + gap + block, Span(1.0, 2.0), eb)
    assert cols["telemetry_samples"] == 6  # the warm-up's and the gap's readings are not the point's
    assert cols["sm_clock_mhz_min"] == 1700.0 and cols["temp_c_max"] == 70.0
    assert cols["gpu_util_pct_mean"] == 100.0
    assert cols["power_w_mean"] == pytest.approx(500.0)  # 625 J / 1.25 s, not a mean of readings
    assert cols["energy_j_per_call"] == pytest.approx(0.625)
    assert cols["power_method"] == "energy-counter"
    assert cols["energy_block_s"] == pytest.approx(1.25) and cols["energy_block_calls"] == 1000
    assert cols["telemetry_window_s"] == pytest.approx(1.0) and cols["telemetry_window_short"] is False
    assert cols["throttle_reasons"] == "sw_power_cap" and cols["throttled"] is True
    assert cols["telemetry_scope"] == "gpu"


def test_window_shorter_than_nvml_averaging_is_flagged():
    eb = EnergyBlock(calls=10, span=Span(1.0, 2.5), energy_mj=1000)
    assert telemetry.summarize_windows(RS, Span(0.0, 0.2), eb)["telemetry_window_short"] is True
    short_block = EnergyBlock(calls=10, span=Span(1.0, 1.3), energy_mj=1000)
    assert telemetry.summarize_windows(RS, Span(0.0, 1.5), short_block)["telemetry_window_short"] is True
    assert telemetry.summarize_windows(RS, Span(0.0, 1.5), eb)["telemetry_window_short"] is False


def test_without_energy_counter_power_is_the_block_readings():
    block = [Reading(t, p, 1800.0, 60.0, 99.0, 0) for t, p in ((1.0, 300.0), (1.5, 500.0), (2.0, 400.0))]
    eb = EnergyBlock(calls=200, span=Span(1.0, 2.0), energy_mj=None)
    cols = telemetry.summarize_windows([Reading(0.5, 90.0, 300.0, 40.0, 0.0, IDLE), *block], None, eb)
    assert cols["power_w_mean"] == 400.0 and cols["power_method"] == "power-readings"
    assert cols["energy_j_per_call"] == pytest.approx(400.0 * 1.0 / 200)


def test_energy_block_runs_calls_back_to_back_between_two_counter_reads():
    log = []
    counter = iter([1_000, 3_500])
    t = iter([10.0, 10.5, 10.9, 11.2, 11.3])  # t0, one reading per loop test after the first call, t1

    def energy():
        log.append("energy")
        return next(counter)

    block = telemetry.run_energy_block(
        lambda: log.append("fn"), energy, 1.0, lambda: log.append("sync"), clock=lambda: next(t)
    )
    # wait, read, calls with no wait in between, wait, read
    assert log == ["sync", "energy", "fn", "fn", "fn", "sync", "energy"]
    assert block.calls == 3 and block.energy_mj == 2_500
    assert block.span == Span(10.0, 11.3)


def test_point_telemetry_samples_only_the_timed_window_and_the_energy_block(monkeypatch):
    """Old behaviour: the sampler's whole context, warm-up included, made the columns."""
    gpu = install(monkeypatch, FakeGpu(sm_clock_mhz=345, power_mw=60_000, energy_mj=[5_000_000, 5_000_000, 5_400_000]))
    window = TimedWindow()
    cfg = {"index": 0, "uuid": UUID, "interval_s": 0.002, "energy_block_s": 0.05}
    with telemetry.PointTelemetry(cfg) as tele:
        time.sleep(0.03)  # warm-up: idle clocks
        gpu.sm_clock_mhz, gpu.power_mw = 1980, 450_000
        window.start_s = time.monotonic()
        time.sleep(0.03)  # the timed samples
        window.end_s = time.monotonic()
        done = threading.Event()
        block = tele.energy_block(lambda: done.wait(0.001), sync=lambda: None)
    assert block is not None and block.calls > 10
    cols = tele.columns(window=window)
    assert cols["sm_clock_mhz_min"] == 1980.0  # no warm-up reading
    assert cols["telemetry_samples"] >= 4
    assert cols["energy_j_per_call"] == pytest.approx(400.0 / block.calls)  # 400 J over the block's calls
    assert cols["power_w_mean"] == pytest.approx(400.0 / block.span.duration_s)
    assert cols["telemetry_window_short"] is True  # 30 ms and 50 ms windows: NVML averages over ~1 s
    assert cols["telemetry_window_s"] == pytest.approx(window.duration_s)


def test_energy_block_is_a_no_op_without_nvml_or_when_off(monkeypatch):
    install(monkeypatch, FakeGpu(init_error=pynvml.NVMLError_LibraryNotFound))
    ran = []
    with telemetry.PointTelemetry({"index": 0, "uuid": UUID}) as tele:
        assert tele.energy_block(lambda: ran.append(1), sync=lambda: None) is None
    assert ran == [] and tele.columns(window=TimedWindow(0.0, 1.0)) == dict.fromkeys(telemetry.TELEMETRY_COLUMNS)
    install(monkeypatch, FakeGpu())
    with telemetry.PointTelemetry({"index": 0, "uuid": UUID, "energy_block_s": 0}) as tele:
        assert tele.energy_block(lambda: ran.append(1), sync=lambda: None) is None
    assert ran == []


def test_mig_uuid_maps_to_the_instance_and_reads_the_parent_gpu(monkeypatch):
    """torch gives a MIG instance's UUID without a prefix; NVML's is MIG-..., not GPU-...
    Old behaviour: looked up as GPU-..., not found, telemetry silently off."""
    install(monkeypatch, FakeGpu(mig=True, power_mw=280_000, sm_clock_mhz=1410))
    nv, _ = open_nvml()
    bare = MIG_UUID.removeprefix("MIG-")
    handles = nv.handles_for_cuda(0, bare)
    assert handles.how == f"uuid {MIG_UUID}" and handles.scope == "whole gpu (MIG parent)"
    assert handles.board is not handles.device
    assert nv.read(handles.device).power_w is None  # the instance itself has no board readings
    assert nv.read(handles.board).power_w == 280.0
    window = TimedWindow()
    with telemetry.PointTelemetry({"index": 0, "uuid": bare, "interval_s": 0.002}) as tele:
        window.start_s = time.monotonic()
        time.sleep(0.01)
        window.end_s = time.monotonic()
        tele.energy_block(lambda: time.sleep(0.001), sync=lambda: None, min_s=0.01)
    cols = tele.columns(window=window)
    assert cols["sm_clock_mhz_min"] == 1410.0 and cols["power_w_mean"] is not None
    assert cols["telemetry_scope"] == "whole gpu (MIG parent)"
    probed = telemetry.probe("cuda", 0, bare)
    assert probed["available"] and probed["scope"] == "whole gpu (MIG parent)"
    assert probed["mapped_by"] == f"uuid {MIG_UUID}"


def test_a_plain_gpu_is_not_taken_for_a_mig_instance(monkeypatch):
    install(monkeypatch, FakeGpu())
    nv, _ = open_nvml()
    handles = nv.handles_for_cuda(0, UUID.removeprefix("GPU-"))
    assert handles.scope == "gpu" and handles.board is handles.device
    # a driver without the MIG calls: still a plain GPU
    install(monkeypatch, FakeGpu(missing={"nvmlDeviceIsMigDeviceHandle"}))
    nv, _ = open_nvml()
    assert nv.handles_for_cuda(0, UUID).scope == "gpu"


def test_gpu_state_for_the_doctor(monkeypatch):
    install(
        monkeypatch,
        FakeGpu(
            sm_clock_mhz=1200,
            app_clock_mhz=1400,
            app_clock_default_mhz=1980,
            reasons=pynvml.nvmlClocksEventReasonApplicationsClocksSetting,
            power_limit_mw=500_000,
            persistence=0,
            other_pids=[4242],
        ),
    )
    nv, _ = open_nvml()
    state = nv.gpu_state(nv.handles_for_cuda(0, UUID))
    assert state["sm_clock_mhz"] == 1200 and state["sm_clock_max_mhz"] == 1980
    assert state["app_clock_mhz"] == 1400 and state["app_clock_default_mhz"] == 1980
    assert state["clock_reasons"] == ["applications_clocks_setting"]
    assert state["power_limit_w"] == 500.0 and state["power_limit_default_w"] == 700.0
    assert state["persistence_mode"] is False and state["ecc_enabled"] is True
    assert state["mig_enabled"] is False and state["mig_instance"] is False
    assert state["other_pids"] == [4242]


POINT = Point("linear-chunked", "fwd", True, "float32", B=1, H=2, N=64, D=16, M=16, params={"chunk_size": 16})
OPTIONS = RunOptions(
    "cpu",
    1,
    TimingConfig.from_table(
        {"warmup_s": 0.001, "min_samples": 3, "min_time_s": 0.03, "max_time_s": 0.06, "block_min_s": 0.001}
    ),
    telemetry={"index": 0, "uuid": UUID, "interval_s": 0.005, "energy_block_s": 0.05},
    peaks={"flops_per_s": {"float32": 1e11}, "bytes_per_s": 1e10},
)


def test_sampler_joined_to_a_measured_point(monkeypatch):
    """The pass samples only its timed window, then runs the energy block: energy per call is
    the counter's increase over that block / its calls (reads: sampler start, block start,
    block end, sampler stop)."""
    gpu = install(
        monkeypatch,
        FakeGpu(power_mw=250_000, sm_clock_mhz=1755, energy_mj=[1_000_000, 2_000_000, 2_012_345, 2_500_000]),
    )
    row = measure_point(POINT, OPTIONS).row
    assert row["status"] == "ok" and row["correct"]
    assert row["power_method"] == "energy-counter" and row["energy_block_calls"] > 0
    assert row["energy_j_per_call"] == pytest.approx(12.345 / row["energy_block_calls"])
    assert row["power_w_mean"] == pytest.approx(12.345 / row["energy_block_s"])
    assert row["sm_clock_mhz_min"] == row["sm_clock_mhz_mean"] == 1755.0
    assert row["temp_c_max"] == 61.0 and row["gpu_util_pct_mean"] == 97.0
    assert row["throttled"] is False and row["throttle_reasons"] == ""
    assert row["telemetry_window_short"] is True  # well under NVML's 1 s averaging window
    assert 0 < row["telemetry_window_s"] < 1.0
    assert gpu.calls["nvmlDeviceGetTotalEnergyConsumption"] == 4
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
    assert got["mapped_by"] == f"uuid {UUID}" and got["scope"] == "gpu"
    cpu = telemetry.probe("cpu", 0, None)
    assert cpu["available"] is False and "not sampled on cpu runs" in cpu["reason"]
