"""The CUDA timer and memory code: its control flow on the CPU through a recording fake of the
torch.cuda event/synchronize API (the order of flush, events, calls and host waits; warm-up;
flush size; graph refusal), and for real under ``-m gpu``."""

from __future__ import annotations

import math
import time

import pytest
import torch

from attnbench.measure import cuda_timer
from attnbench.measure.timer import TimerConfig
from attnbench.point import Point
from tests.fake_cuda import install_fake_cuda


@pytest.fixture
def fake_cuda(monkeypatch):
    def make(device_ms, l2=50 * 2**20):
        return install_fake_cuda(monkeypatch, device_ms, l2)

    return make


CFG = TimerConfig(warmup_s=0.0, min_samples=5, min_time_s=0.0, max_time_s=0.05, target_rel_noise=0.01)


def test_flush_start_calls_end_with_no_host_wait_in_between(fake_cuda):
    """do_bench's order: the flush is enqueued, never waited for, so the device is busy with it
    while the host enqueues the start event and the call; one host wait per batch of samples."""
    fc = fake_cuda([2.0])
    res = cuda_timer.time_cuda(lambda: fc.log.append("fn"), CFG)
    assert res.timer == "cuda-event" and res.calls_per_sample == 1 and res.converged
    assert res.samples_ms and all(t == 2.0 for t in res.samples_ms)
    timed = fc.timed_part()
    batch = len(fc.events) // 2
    one_batch = ["flush", "record-start", "fn", "record-end"] * batch + ["wait-end"]
    n_batches = len(res.samples_ms) // batch
    assert timed[: len(one_batch) * n_batches] == one_batch * n_batches
    assert "sync" not in timed[: len(one_batch) * n_batches]  # no host synchronisation while sampling
    # after sampling: the flush buffer is released so the memory columns do not see it
    assert timed[len(one_batch) * n_batches :] == ["empty-cache"]


def test_warm_up_survives_a_slow_first_call(fake_cuda):
    """A slow first call (a compile) must neither end warm-up nor size the blocks."""
    fc = fake_cuda([0.01])
    calls = []

    def fn():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.05)
        fc.log.append("fn")

    cfg = TimerConfig(warmup_s=0.0, block_min_s=0.002, min_samples=3, min_time_s=0.0, max_time_s=0.02)
    res = cuda_timer.time_cuda(fn, cfg, flush_l2=False)
    assert res.warmup_calls >= 1 + cuda_timer.MIN_WARM_CALLS
    assert res.calls_per_sample > 1  # sized from a warm call, not from the 50 ms first one
    assert fc.log[: 2 * res.warmup_calls] == ["fn", "sync"] * res.warmup_calls


def test_without_flush_samples_are_back_to_back_blocks_after_a_head_start(fake_cuda):
    fc = fake_cuda([4.0])
    res = cuda_timer.time_cuda(
        lambda: fc.log.append("fn"), TimerConfig(warmup_s=0.0, block_min_s=1.0, max_time_s=0.05), flush_l2=False
    )
    k = res.calls_per_sample
    assert k > 1 and "flush" not in fc.log and fc.flush_nbytes is None
    assert res.samples_ms[0] == 4.0 / k  # per-call device time
    assert res.extra["l2_flush_mib"] == 0.0
    timed = fc.timed_part()
    batch = len(fc.events) // 2
    # one untimed call heads the batch, then the blocks follow each other with no wait
    assert timed[: 1 + batch * (k + 2) + 1] == ["fn"] + (["record-start"] + ["fn"] * k + ["record-end"]) * batch + [
        "wait-end"
    ]


@pytest.mark.parametrize(("l2_mib", "flush_mib"), [(50, 256), (40, 256), (200, 400), (0, 256)])
def test_flush_is_twice_the_l2_with_a_256_mib_floor(fake_cuda, l2_mib, flush_mib):
    fc = fake_cuda([1.0], l2=l2_mib * 2**20)
    res = cuda_timer.time_cuda(lambda: None, CFG)
    assert res.extra["l2_flush_mib"] == flush_mib and fc.flush_nbytes == flush_mib * 2**20
    assert cuda_timer.flush_bytes(l2_mib * 2**20) == flush_mib * 2**20


def test_noisy_samples_stop_at_the_cap_and_say_so(fake_cuda):
    fake_cuda([1.0, 3.0, 1.5, 2.5])
    cfg = TimerConfig(warmup_s=0.0, min_samples=5, min_time_s=0.0, max_time_s=0.02, target_rel_noise=0.0001)
    res = cuda_timer.time_cuda(lambda: None, cfg)
    assert not res.converged and len(res.samples_ms) >= 5


def test_host_overhead_and_launch_bound(fake_cuda):
    """host_overhead_ms is the host's time to enqueue one call, apart from the device time."""
    fake_cuda([0.01])  # 10 us on the device
    slow_host = cuda_timer.time_cuda(lambda: time.sleep(0.001), CFG)  # 1 ms of Python per call
    assert slow_host.extra["host_overhead_ms"] >= 0.9 and slow_host.extra["launch_bound"] is True
    assert slow_host.samples_ms[0] == 0.01
    fake_cuda([5.0])
    busy_device = cuda_timer.time_cuda(lambda: None, CFG)
    assert busy_device.extra["host_overhead_ms"] < 1.0 and busy_device.extra["launch_bound"] is False


def test_timed_window_brackets_the_samples_not_the_warm_up(fake_cuda):
    fc = fake_cuda([1.0])
    marks = {}

    def fn():
        marks.setdefault("first_call", time.monotonic())
        fc.log.append("fn")

    window = cuda_timer.TimedWindow()
    before = time.monotonic()
    cuda_timer.time_cuda(fn, CFG, window=window)
    after = time.monotonic()
    assert before <= marks["first_call"] < window.start_s < window.end_s <= after
    assert window.timed_fn is fn and window.duration_s > 0
    assert math.isnan(cuda_timer.TimedWindow().duration_s)


def test_graph_mode_times_the_replay(fake_cuda, monkeypatch):
    fake_cuda([1.0])
    replays = []
    monkeypatch.setattr(cuda_timer, "capture_graph", lambda fn: lambda: replays.append(1))
    res = cuda_timer.time_cuda(lambda: None, CFG, graph=True, pass_name="fwdbwd")
    assert res.extra["cuda_graph"] is True
    assert len(replays) == cuda_timer.MIN_WARM_CALLS + len(res.samples_ms)


def test_graph_mode_refuses_the_bwd_pass_before_capturing(fake_cuda, monkeypatch):
    fc = fake_cuda([1.0])
    monkeypatch.setattr(cuda_timer, "capture_graph", lambda fn: pytest.fail("capture attempted"))
    with pytest.raises(cuda_timer.GraphRefused, match="cannot time the bwd pass"):
        cuda_timer.time_cuda(lambda: fc.log.append("fn"), CFG, graph=True, pass_name="bwd")
    assert fc.log == []  # refused before any call
    assert cuda_timer.graph_refusal("fwd") is None and cuda_timer.graph_refusal("fwdbwd") is None
    reason = cuda_timer.graph_refusal("bwd")
    assert reason is not None and "\n" not in reason
    # eager timing of bwd is fine
    assert cuda_timer.time_cuda(lambda: None, CFG, pass_name="bwd").samples_ms


# ---- real device ---------------------------------------------------------------------------


@pytest.mark.gpu
def test_time_cuda_on_a_matmul():
    a = torch.randn(2048, 2048, device="cuda")
    window = cuda_timer.TimedWindow()
    res = cuda_timer.time_cuda(lambda: a @ a, TimerConfig(warmup_s=0.05, max_time_s=0.5), window=window)
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    assert res.extra["l2_flush_mib"] == max(2 * l2, 256 * 2**20) / 2**20
    assert all(t > 0 for t in res.samples_ms) and res.timer == "cuda-event"
    assert res.extra["host_overhead_ms"] >= 0 and res.extra["launch_bound"] is False
    assert window.duration_s > 0


@pytest.mark.gpu
@pytest.mark.parametrize("pass_", ["fwd", "fwdbwd"])
def test_graph_and_eager_agree_on_a_kernel_that_is_not_launch_bound(pass_):
    """Graph replays hide launch overhead only; on a long kernel both timings must agree."""
    from attnbench.impls.softmax import sdpa
    from attnbench.measure.inputs import make_inputs, make_pass

    point = Point("sdpa", pass_, True, "bfloat16", B=4, H=16, N=4096, D=64, M=64, device="cuda")
    inp = make_inputs(point)
    cfg = TimerConfig(warmup_s=0.05, max_time_s=1.0, target_rel_noise=0.005)
    eager = cuda_timer.time_cuda(make_pass(sdpa, inp, point, {}), cfg, pass_name=pass_)
    graph = cuda_timer.time_cuda(make_pass(sdpa, inp, point, {}), cfg, graph=True, pass_name=pass_)
    assert eager.extra["launch_bound"] is False
    e, g = sorted(eager.samples_ms)[len(eager.samples_ms) // 2], sorted(graph.samples_ms)[len(graph.samples_ms) // 2]
    assert abs(g / e - 1) <= 0.10, (e, g)


@pytest.mark.gpu
def test_graph_mode_refuses_bwd_on_a_device():
    from attnbench.impls.softmax import sdpa
    from attnbench.measure.inputs import make_inputs, make_pass

    point = Point("sdpa", "bwd", True, "float32", B=1, H=2, N=256, D=64, M=64, device="cuda")
    fn = make_pass(sdpa, make_inputs(point), point, {})
    with pytest.raises(cuda_timer.GraphRefused):
        cuda_timer.time_cuda(fn, TimerConfig(warmup_s=0.0, max_time_s=0.1), graph=True, pass_name="bwd")


@pytest.mark.gpu
def test_time_cuda_graph_replay():
    a = torch.randn(1024, 1024, device="cuda")
    res = cuda_timer.time_cuda(lambda: a @ a, TimerConfig(warmup_s=0.02, max_time_s=0.3), graph=True)
    assert res.extra["cuda_graph"] is True and res.samples_ms


@pytest.mark.gpu
def test_cuda_peak_columns_counts_what_the_call_allocates():
    from attnbench.measure.cuda_memory import cuda_peak_columns

    x = torch.randn(16 * 2**20 // 4, device="cuda")  # 16 MiB held before: not counted

    def call():
        y = torch.empty(64 * 2**20 // 4, device="cuda")  # 64 MiB
        return float((x.sum() + y.fill_(1).sum()).item())

    cols, result = cuda_peak_columns(call)
    assert cols["mem_method"] == "cuda-allocator" and result > 0
    assert 64 <= cols["peak_mib"] < 70
    assert cols["peak_reserved_mib"] >= 80


@pytest.mark.gpu
def test_calibrate_on_cuda():
    from attnbench.measure.mathmode import fp32_matmul_precision
    from attnbench.measure.peaks import calibrate

    before = fp32_matmul_precision()
    peaks = calibrate("cuda", ["float32", "bfloat16"], budget_s=0.1)
    by_math = peaks["flops_per_s_by_math"]
    assert by_math["bf16"] > by_math["tf32"] > by_math["fp32"] > 1e12  # tensor cores beat FP32 units
    assert peaks["flops_per_s"]["float32"] == by_math["fp32"]
    assert peaks["bytes_per_s"] > 1e11
    assert fp32_matmul_precision() == before == peaks["method"]["fp32_matmul_precision"]


@pytest.mark.gpu
def test_measure_point_on_cuda_with_real_nvml():
    from attnbench.measure import telemetry
    from attnbench.measure.passes import measure_point
    from attnbench.point import Point, RunOptions, TimingConfig

    idx, uuid = telemetry.cuda_identity()
    point = Point("sdpa", "fwdbwd", True, "float32", B=1, H=4, N=1024, D=64, M=64, device="cuda")
    options = RunOptions(
        "cuda",
        1,
        TimingConfig.from_table({"warmup_s": 0.02, "max_time_s": 0.3}),
        telemetry={"index": idx, "uuid": uuid, "interval_s": 0.01},
        peaks={"flops_per_s": {"float32": 5e13}, "bytes_per_s": 3e12},
    )
    row = measure_point(point, options).row
    assert row["status"] == "ok" and row["timer"] == "cuda-event" and row["correct"]
    assert row["peak_mib"] > 0 and row["mem_method"] == "cuda-allocator"
    probe = telemetry.probe("cuda", idx, uuid)
    if probe["available"]:
        assert row["power_w_mean"] > 0 and row["sm_clock_mhz_min"] > 0 and row["energy_j_per_call"] > 0
