"""Statistics on fixed samples (exact values) and the stopping rule on synthetic samples."""

from __future__ import annotations

import math

import pytest

from attnbench.measure import timer
from attnbench.measure.stats import quantile, rel_noise_of_median, summarize
from attnbench.measure.timer import StopRule, TimerConfig, time_cpu


def test_summary_exact_values():
    s = summarize([4.0, 1.0, 3.0, 2.0, 100.0])
    assert (s.n, s.median, s.q1, s.q3, s.iqr, s.min, s.max) == (5, 3.0, 2.0, 4.0, 2.0, 1.0, 100.0)
    assert s.mean == pytest.approx(22.0)
    assert s.rel_noise == pytest.approx(math.sqrt(math.pi / 2) * (2.0 / 1.349) / math.sqrt(5) / 3.0)


def test_quantile_interpolates_like_numpy():
    assert quantile([1.0, 2.0, 3.0, 4.0], 0.25) == pytest.approx(1.75)
    assert quantile([7.0], 0.9) == 7.0


def test_rel_noise_edge_cases():
    assert rel_noise_of_median([1.0]) == math.inf
    assert rel_noise_of_median([2.0, 2.0, 2.0]) == 0.0


def test_stop_rule_stops_when_target_met_after_min_time():
    rule = StopRule(TimerConfig(min_samples=5, min_time_s=0.2, max_time_s=10, target_rel_noise=0.01))
    steady = [1.0] * 5
    assert rule.done(steady, elapsed_s=0.1) == (False, True)  # met, but not for long enough
    assert rule.done(steady, elapsed_s=0.3) == (True, True)
    assert rule.done(steady[:4], elapsed_s=0.3) == (False, False)  # too few samples


def test_stop_rule_gives_up_at_the_cap_and_says_so():
    rule = StopRule(TimerConfig(min_samples=5, min_time_s=0.1, max_time_s=1.0, target_rel_noise=0.001))
    noisy = [1.0, 2.0, 1.5, 3.0, 1.2, 2.5]
    assert rule.done(noisy, elapsed_s=0.5) == (False, False)
    assert rule.done(noisy, elapsed_s=1.0) == (True, False)


def test_stop_rule_slow_calls_need_only_one_sample_past_the_cap():
    rule = StopRule(TimerConfig(min_samples=5, max_time_s=1.0))
    assert rule.done([3000.0], elapsed_s=3.0) == (True, False)
    # samples shorter than the cap: the suite's min_samples are owed even past it
    assert rule.done([500.0, 500.0], elapsed_s=1.0)[0] is False
    assert rule.done([500.0] * 4, elapsed_s=2.0)[0] is False
    assert rule.done([500.0] * 5, elapsed_s=2.5) == (True, True)
    assert rule.done([500.0, 900.0, 400.0, 700.0, 450.0], elapsed_s=2.95) == (True, False)


def test_time_cpu_with_a_fake_clock():
    ticks = iter(range(0, 10**12, 1_000_000))  # every clock read advances 1 ms

    def clock() -> int:
        return next(ticks)

    res = time_cpu(
        lambda: None, TimerConfig(warmup_s=0.0, min_samples=3, min_time_s=0.0, max_time_s=1.0, block_min_s=0.0), clock
    )
    assert res.converged
    assert len(res.samples_ms) == 3
    assert all(t == pytest.approx(1.0) for t in res.samples_ms)


class _Calls:
    """A clock that advances only when the timed function runs: each call costs ``cost_ms``."""

    def __init__(self, cost_ms: float) -> None:
        self.now_ns, self.calls, self.cost_ns = 0, 0, int(cost_ms * 1e6)

    def clock(self) -> int:
        return self.now_ns

    def fn(self) -> None:
        self.calls += 1
        self.now_ns += self.cost_ns


def test_time_cpu_warms_up_with_at_least_three_calls_after_the_first():
    # warmup_s is spent by the first call alone (50 ms > 10 ms): three more calls still run
    c = _Calls(cost_ms=50)
    cfg = TimerConfig(warmup_s=0.01, min_samples=5, min_time_s=0.0, max_time_s=10.0, block_min_s=0.0)
    res = time_cpu(c.fn, cfg, c.clock)
    assert res.warmup_calls == 1 + timer.MIN_WARM_CALLS == 4
    assert c.calls == res.warmup_calls + res.calls_per_sample * len(res.samples_ms)
    # a longer warmup_s still decides when it lasts longer than the minimum count
    c = _Calls(cost_ms=1)
    res = time_cpu(c.fn, TimerConfig(warmup_s=0.1, min_samples=3, min_time_s=0.0, block_min_s=0.0), c.clock)
    assert res.warmup_calls == 100


def test_time_cpu_waives_the_warm_up_count_once_it_lasted_the_cap():
    c = _Calls(cost_ms=1500)  # one call is most of the 2 s cap: warm-up stops after the second
    cfg = TimerConfig(warmup_s=0.1, min_samples=5, min_time_s=0.0, max_time_s=2.0, block_min_s=0.0)
    res = time_cpu(c.fn, cfg, c.clock)
    assert res.warmup_calls == 2
    assert len(res.samples_ms) == 5 and not res.single_call
