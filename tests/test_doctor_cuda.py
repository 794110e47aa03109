"""The CUDA half of `attnbench doctor` without a GPU: fakes at the torch.cuda boundary (events,
synchronize: tests/fake_cuda.py) and at the pynvml boundary (tests/fake_nvml.py); the work
itself runs on the CPU."""

from __future__ import annotations

import time

import pynvml
import pytest

from attnbench.doctor import energy, gpu, launch, timers
from attnbench.doctor.result import FAIL, PASS, SKIP, WARN
from attnbench.measure import telemetry
from tests.fake_cuda import install_fake_cuda
from tests.fake_nvml import MIG_UUID, UUID, FakeGpu, install


@pytest.fixture
def nvml_gpu(monkeypatch):
    def use(**kw):
        uuid = kw.pop("uuid", UUID)
        monkeypatch.setattr(telemetry, "cuda_identity", lambda index=None: (0, uuid))
        return install(monkeypatch, FakeGpu(**kw))

    return use


# ---- timers ----------------------------------------------------------------------------------


def test_cuda_timers_against_torch_benchmark_and_do_bench(monkeypatch):
    fc = install_fake_cuda(monkeypatch, [2.0])  # the events say 2 ms per sample of one call
    monkeypatch.setattr(timers, "torch_benchmark_ms", lambda fn: 2.02)
    cfg = timers.TimerConfig(warmup_s=0.0, min_samples=3, min_time_s=0.0, max_time_s=0.05, block_min_s=1e-12)
    monkeypatch.setattr(timers, "CUDA_CFG", cfg)
    seen = []

    def do_bench(fn, warmup, rep, return_mode):
        seen.append((warmup, rep, return_mode))
        fn()
        return 2.5  # triton disagrees: cold samples 25 % slower

    wl = timers.Workload("mm", lambda device: lambda: fc.log.append("fn"))
    checks = timers.check_cuda_timers((wl,), rounds=2, device="cpu", do_bench=do_bench)
    by_name = {c.name: c for c in checks}
    warm = by_name["mm warm vs torch.utils.benchmark"]
    assert warm.status == PASS and warm.data["ratio"] == pytest.approx(2.0 / 2.02)
    assert "within 5 %" in warm.summary
    cold = by_name["mm cold vs triton do_bench"]
    assert cold.status == FAIL and cold.data["ratio"] == pytest.approx(0.8) and "outside 5 %" in cold.summary
    assert seen == [(25, 100, "median")] * 2
    assert "flush" in fc.log  # the cold comparison flushed the L2 before each sample
    assert by_name["quiet host"].status in (PASS, FAIL)


def test_without_triton_the_cold_comparison_is_skipped_and_said(monkeypatch):
    install_fake_cuda(monkeypatch, [1.0])
    monkeypatch.setattr(timers, "torch_benchmark_ms", lambda fn: 1.0)
    monkeypatch.setattr(
        timers, "CUDA_CFG", timers.TimerConfig(warmup_s=0.0, min_samples=3, min_time_s=0.0, max_time_s=0.05)
    )
    checks = timers.check_cuda_timers(
        (timers.Workload("mm", lambda d: lambda: None),), rounds=1, device="cpu", use_triton=False
    )
    skipped = [c for c in checks if c.status == SKIP]
    assert len(skipped) == 1 and "triton is not installed" in skipped[0].summary
    assert not [c for c in checks if "do_bench" in c.name and c.status != SKIP]


# ---- GPU state -------------------------------------------------------------------------------


def _by_name(checks):
    return {c.name: c for c in checks}


def test_a_healthy_gpu(nvml_gpu):
    nvml_gpu(reasons=pynvml.nvmlClocksEventReasonGpuIdle)
    got = _by_name(gpu.check_gpu_state())
    assert got["clocks"].status == WARN and "not locked" in got["clocks"].summary  # boost clocks move
    assert "nvidia-smi --lock-gpu-clocks" in got["clocks"].fix
    for name in ("throttling", "power limit", "persistence mode", "ECC", "MIG", "other processes"):
        assert got[name].status == PASS, got[name].summary
    assert got["power limit"].summary == "power limit 700 W (default 700 W)"


def test_everything_that_moves_numbers(nvml_gpu):
    nvml_gpu(
        reasons=pynvml.nvmlClocksEventReasonSwThermalSlowdown,
        power_limit_mw=450_000,
        persistence=0,
        other_pids=[777, 778],
    )
    got = _by_name(gpu.check_gpu_state())
    assert got["throttling"].status == WARN and "sw_thermal_slowdown" in got["throttling"].summary
    assert got["power limit"].status == WARN and "450 W, below the default 700 W" in got["power limit"].summary
    assert got["persistence mode"].status == WARN
    assert got["other processes"].status == FAIL and "PIDs 777, 778" in got["other processes"].summary
    for c in got.values():
        assert "\n" not in c.summary  # one line each


def test_locked_clocks_pass(nvml_gpu):
    nvml_gpu(app_clock_mhz=1500, app_clock_default_mhz=1980)
    assert _by_name(gpu.check_gpu_state())["clocks"].status == PASS
    nvml_gpu(reasons=pynvml.nvmlClocksEventReasonApplicationsClocksSetting)
    assert _by_name(gpu.check_gpu_state())["clocks"].status == PASS


def test_mig_instance_reads_the_whole_gpu_and_says_so(nvml_gpu):
    nvml_gpu(mig=True, uuid=MIG_UUID.removeprefix("MIG-"))
    got = _by_name(gpu.check_gpu_state())
    assert got["MIG"].status == WARN and "MIG instance" in got["MIG"].summary
    assert "SM clock 1980 of max 1980 MHz" in got["clocks"].summary  # read through the parent


def test_other_pid_namespace_counts_this_process_out(nvml_gpu):
    nvml_gpu(pid=12345, other_pids=[])  # NVML lists one PID that is not ours: ourselves, seen from the host
    assert _by_name(gpu.check_gpu_state())["other processes"].status == PASS
    nvml_gpu(pid=12345, other_pids=[999])
    c = _by_name(gpu.check_gpu_state())["other processes"]
    assert c.status == WARN and "another namespace" in c.summary


def test_without_nvml_one_warning(nvml_gpu):
    nvml_gpu(init_error=pynvml.NVMLError_LibraryNotFound)
    (c,) = gpu.check_gpu_state()
    assert c.status == WARN and "NVML unavailable" in c.summary


# ---- energy ----------------------------------------------------------------------------------


def test_judge_energy_exact():
    c = energy.judge_energy(600_000, [290.0, 310.0], 2.0)
    assert c.status == PASS and c.data["ratio"] == pytest.approx(1.0)
    assert c.summary == "counter 600.0 J over 2.00 s busy = 300 W; power readings 300 W; ratio 1.000 (within 15 %)"
    bad = energy.judge_energy(400_000, [300.0], 2.0)
    assert bad.status == FAIL and "ratio 0.667" in bad.summary and "cannot be trusted" in bad.summary
    assert energy.judge_energy(None, [300.0], 2.0).status == FAIL


def test_energy_counter_consistent_with_power_over_a_busy_block(nvml_gpu, monkeypatch):
    nvml_gpu(power_mw=300_000)
    t0 = time.monotonic()
    # a counter that integrates the fake's 300 W
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda h: int(300_000 * (time.monotonic() - t0)))
    syncs = []
    c = energy.check_energy(work=lambda: time.sleep(0.001), sync=lambda: syncs.append(1), block_s=0.3, warm_s=0.05)
    assert c.status == PASS, c.summary
    assert c.data["mean_power_w"] == 300.0 and c.data["wall_s"] >= 0.3
    assert len(syncs) == 4  # warm block and measured block: a wait before and after each


def test_energy_counter_that_disagrees_fails(nvml_gpu, monkeypatch):
    nvml_gpu(power_mw=300_000)
    t0 = time.monotonic()
    monkeypatch.setattr(pynvml, "nvmlDeviceGetTotalEnergyConsumption", lambda h: int(150_000 * (time.monotonic() - t0)))
    c = energy.check_energy(work=lambda: time.sleep(0.001), sync=lambda: None, block_s=0.2, warm_s=0.0)
    assert c.status == FAIL and c.data["ratio"] == pytest.approx(0.5, rel=0.05)


def test_no_energy_counter_is_a_warning(nvml_gpu):
    nvml_gpu(not_supported={"nvmlDeviceGetTotalEnergyConsumption"})
    c = energy.check_energy(work=lambda: None, sync=lambda: None, block_s=0.01, warm_s=0.0)
    assert c.status == WARN and "no energy counter" in c.summary


# ---- launch ----------------------------------------------------------------------------------

SUITE = """
name = "tiny"
[params]
impl = ["sdpa", "linear-chunked"]
N = [64, 128]
B = 1
H = 2
D = 16
M = 16
dtype = "float32"
causal = true
pass = ["fwd", "fwdbwd"]
"""


def test_short_points_are_the_smallest_n_of_each_impl_and_pass(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE)
    pts = launch.short_points(str(path), "cuda")
    assert [(p.impl, p.pass_.value, p.N) for p in pts] == [
        ("linear-chunked", "fwd", 64),
        ("linear-chunked", "fwdbwd", 64),
        ("sdpa", "fwd", 64),
        ("sdpa", "fwdbwd", 64),
    ]


def test_launch_bound_short_points_are_a_warning_through_the_real_cuda_timer(tmp_path, monkeypatch):
    """The events say 1 us per call on the device; the host needs far longer to enqueue a call
    (Python, dispatch, autograd): every short point is launch-bound."""
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE)
    install_fake_cuda(monkeypatch, [0.001])
    monkeypatch.setattr(
        launch, "SHORT_CFG", launch.TimerConfig(warmup_s=0.0, min_samples=3, min_time_s=0.0, max_time_s=0.02)
    )
    c = launch.check_short_points(str(path), "cuda", tensor_device="cpu")
    assert c.status == WARN and c.summary.startswith("4 of 4 shortest points are launch-bound")
    assert "--cuda-graph" in c.fix
    rows = c.data["points"]
    assert all(r["launch_bound"] and r["host_ms"] > r["device_ms"] for r in rows), rows


def test_short_points_that_are_not_launch_bound_pass(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(SUITE)
    c = launch.check_short_points(
        str(path), "cuda", measure=lambda p, d: {"device_ms": 1.0, "host_ms": 0.05, "launch_bound": False}
    )
    assert c.status == PASS and c.summary == "none of the 4 shortest points is launch-bound"
    assert launch.check_short_points(str(path), "cpu").status == SKIP


# ---- real device -----------------------------------------------------------------------------


@pytest.mark.gpu
def test_launch_overhead_on_a_device():
    got = launch.empty_op_overhead("cuda", launches=500)
    assert 0 < got["host_us"] < 1000 and 0 < got["device_us"] < 1000
