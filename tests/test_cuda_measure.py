"""The CUDA timer and memory code: its control flow on the CPU through fake CUDA events (flush
outside the timed region, stopping rule, host overhead), and for real under ``-m gpu``."""

from __future__ import annotations

import itertools

import pytest
import torch

from attnbench.measure import cuda_timer
from attnbench.measure.timer import TimerConfig


class FakeCuda:
    """Fake events whose elapsed times come from ``device_ms`` in turn; logs the call order."""

    def __init__(self, device_ms):
        self.log: list[str] = []
        self.times = itertools.cycle(device_ms)
        fake = self

        class Event:
            def __init__(self, enable_timing=False):
                self.name = "start" if not any(e == "new-start" for e in fake.log) else "end"
                fake.log.append(f"new-{self.name}")

            def record(self):
                fake.log.append(f"record-{self.name}")

            def synchronize(self):
                fake.log.append("event-sync")

            def elapsed_time(self, end):
                return next(fake.times)

        class Flusher:
            def __init__(self, nbytes, device=None):
                self.nbytes = nbytes

            def __call__(self):
                fake.log.append("flush")

        self.Event, self.Flusher = Event, Flusher


@pytest.fixture
def fake_cuda(monkeypatch):
    def make(device_ms):
        fc = FakeCuda(device_ms)
        monkeypatch.setattr(torch.cuda, "Event", fc.Event)
        monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: fc.log.append("sync"))
        monkeypatch.setattr(cuda_timer, "L2Flusher", fc.Flusher)
        monkeypatch.setattr(cuda_timer, "l2_bytes", lambda device=None: 50 * 2**20)
        return fc

    return make


CFG = TimerConfig(warmup_s=0.0, min_samples=5, min_time_s=0.0, max_time_s=0.05, target_rel_noise=0.01)


def test_flush_precedes_every_sample_and_is_not_timed(fake_cuda):
    fc = fake_cuda([2.0])
    calls = []
    res = cuda_timer.time_cuda(lambda: calls.append(1) or fc.log.append("fn"), CFG)
    assert res.timer == "cuda-event" and res.calls_per_sample == 1 and res.converged
    assert res.samples_ms == [2.0] * 5  # constant samples meet the target at min_samples
    assert res.extra["l2_flush_mib"] == 50.0 and res.extra["cuda_graph"] is False
    assert res.extra["host_overhead_ms"] >= 0
    timed = [e for e in fc.log if e not in ("new-start", "new-end")]
    timed = timed[timed.index("flush") :]
    # each sample: flush, sync (flush done), start event, the call, end event, wait for it
    assert timed == ["flush", "sync", "record-start", "fn", "record-end", "event-sync"] * 5
    assert len(calls) == res.warmup_calls + 5


def test_noisy_samples_stop_at_the_cap_and_say_so(fake_cuda):
    fake_cuda([1.0, 3.0, 1.5, 2.5])
    cfg = TimerConfig(warmup_s=0.0, min_samples=5, min_time_s=0.0, max_time_s=0.02, target_rel_noise=0.0001)
    res = cuda_timer.time_cuda(lambda: None, cfg)
    assert not res.converged and len(res.samples_ms) >= 5


def test_without_flush_samples_are_blocks(fake_cuda):
    fc = fake_cuda([4.0])
    res = cuda_timer.time_cuda(
        lambda: None, TimerConfig(warmup_s=0.0, block_min_s=1.0, max_time_s=0.05), flush_l2=False
    )
    assert res.calls_per_sample > 1 and "flush" not in fc.log
    assert res.samples_ms[0] == 4.0 / res.calls_per_sample  # per-call device time
    assert res.extra["l2_flush_mib"] == 0.0


def test_graph_mode_times_the_replay(fake_cuda, monkeypatch):
    fake_cuda([1.0])
    replays = []
    monkeypatch.setattr(cuda_timer, "capture_graph", lambda fn: lambda: replays.append(1))
    res = cuda_timer.time_cuda(lambda: None, CFG, graph=True)
    assert res.extra["cuda_graph"] is True and len(replays) == 1 + len(res.samples_ms)


# ---- real device ---------------------------------------------------------------------------


@pytest.mark.gpu
def test_time_cuda_on_a_matmul():
    a = torch.randn(2048, 2048, device="cuda")
    res = cuda_timer.time_cuda(lambda: a @ a, TimerConfig(warmup_s=0.05, max_time_s=0.5))
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    assert res.extra["l2_flush_mib"] == l2 / 2**20 and l2 < 256 * 2**20
    assert all(t > 0 for t in res.samples_ms) and res.timer == "cuda-event"
    assert res.extra["host_overhead_ms"] >= 0


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
    from attnbench.measure.peaks import calibrate

    peaks = calibrate("cuda", ["float32", "bfloat16"], budget_s=0.1)
    assert peaks["flops_per_s"]["bfloat16"] > peaks["flops_per_s"]["float32"] > 1e12
    assert peaks["bytes_per_s"] > 1e11


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
