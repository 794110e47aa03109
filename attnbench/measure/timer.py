"""Adaptive host timer for CPU work.

Warm up (the first call, then at least ``MIN_WARM_CALLS`` more and until ``warmup_s`` went by),
then take samples, each a block of calls timed with ``perf_counter_ns`` and long
enough that the timer's own cost is negligible, until the relative noise of the median is
under the target (with a minimum count and time) or the time cap is hit. Whether the
target was met is recorded, never hidden. The stopping rule lives in :class:`StopRule` so
the CUDA timer can share it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from attnbench.measure.stats import rel_noise_of_median
from attnbench.point import TimerConfig  # the timer's knobs live with the other run settings

# Calls after the first before sampling starts. One warm-up call was not enough on the CPU: the
# second to fourth calls of a large fwdbwd still paid page faults for heap the allocator had
# given back (docs/measurement.md, "CPU warm-up and a steady heap"). Waived once the warm-up lasted the time cap.
MIN_WARM_CALLS = 3


@dataclass
class StopRule:
    """Decides when sampling may stop. Pure logic: tested on synthetic samples."""

    cfg: TimerConfig

    def done(self, samples: list[float], elapsed_s: float) -> tuple[bool, bool]:
        """(stop now, target met)."""
        n = len(samples)
        met = n >= self.cfg.min_samples and rel_noise_of_median(samples) <= self.cfg.target_rel_noise
        if met and elapsed_s >= self.cfg.min_time_s:
            return True, True
        if elapsed_s >= self.cfg.max_time_s:
            # Past the cap the suite's sample count is still owed (a median of 3 samples at 38 %
            # noise was the old floor), unless one sample alone outlasts the cap.
            one = elapsed_s / max(n, 1)
            need = 1 if one >= self.cfg.max_time_s else self.cfg.min_samples
            if n >= need:
                return True, met
        return False, met


@dataclass
class TimedWindow:
    """Host ``time.monotonic()`` at the first timed sample and after the last one (warm-up
    excluded), filled by the timers; telemetry keeps only the readings inside it.
    ``timed_fn`` is the callable that was timed (the graph replay in graph mode)."""

    start_s: float = math.nan
    end_s: float = math.nan
    timed_fn: Callable[[], object] | None = None
    on_start: Callable[[], None] | None = None  # called as the window opens (e.g. a fault counter)
    on_end: Callable[[], None] | None = None  # called as it closes

    def open(self, fn: Callable[[], object]) -> None:
        self.start_s, self.timed_fn = time.monotonic(), fn
        if self.on_start is not None:
            self.on_start()

    def close(self) -> None:
        self.end_s = time.monotonic()
        if self.on_end is not None:
            self.on_end()

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class TimingResult:
    """Per-call times in milliseconds, one per sample, and how sampling ended."""

    samples_ms: list[float]
    calls_per_sample: int
    converged: bool
    warmup_calls: int
    total_s: float
    timer: str = "cpu-perf-counter"
    extra: dict[str, float] = field(default_factory=dict)
    single_call: bool = False  # the first call was long (cfg.single_call_s): it is the one sample


def time_cpu(
    fn: Callable[[], object],
    cfg: TimerConfig,
    clock: Callable[[], int] = time.perf_counter_ns,
    window: TimedWindow | None = None,
    first: Callable[[], object] | None = None,
) -> TimingResult:
    """Time ``fn`` on the host. ``fn`` must complete its work before returning (CPU tensors do).

    ``window`` receives the timed window (after the warm-up), for telemetry. ``first`` (default
    ``fn``) makes the first call, an equivalent call whose result or side readings the caller
    keeps. When that call takes at least ``cfg.single_call_s`` it is the only sample
    (``single_call``; no warm-up, not converged): a call of seconds is timed once rather than
    three times (warm-up, sample, memory), and its one-time costs are a small part of it."""
    start = clock()
    if window is not None:  # opened again after the warm-up unless this first call is the sample
        window.open(fn)
    t0 = clock()
    (first or fn)()
    first_s = (clock() - t0) / 1e9
    if cfg.single_call_s is not None and first_s >= cfg.single_call_s:
        if window is not None:
            window.close()
        return TimingResult([first_s * 1e3], 1, False, 0, (clock() - start) / 1e9, single_call=True)
    warm = 1
    while True:
        spent = (clock() - start) / 1e9
        if spent >= cfg.warmup_s and (warm > MIN_WARM_CALLS or spent >= cfg.max_time_s):
            break
        t0 = clock()
        fn()
        first_s = (clock() - t0) / 1e9
        warm += 1
    calls = max(1, math.ceil(cfg.block_min_s / max(first_s, 1e-9)))

    rule = StopRule(cfg)
    samples: list[float] = []
    if window is not None:
        window.open(fn)
    t_begin = clock()
    met = False
    while True:
        t0 = clock()
        for _ in range(calls):
            fn()
        samples.append((clock() - t0) / 1e6 / calls)
        stop, met = rule.done(samples, (clock() - t_begin) / 1e9)
        if stop:
            break
    if window is not None:
        window.close()
    return TimingResult(
        samples_ms=samples,
        calls_per_sample=calls,
        converged=met,
        warmup_calls=warm,
        total_s=(clock() - start) / 1e9,
    )
