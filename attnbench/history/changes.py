"""Change points of a series, their commit ranges and step sizes, and the history gate.

The values of a series (one per run, see ingestion.py) are analysed on a log scale, so a step is
a ratio and the same rule serves a 0.1 ms and a 100 ms point. Runs that failed are left out.

For every change point found by E-Divisive means (:mod:`attnbench.history.edivisive`):

* **commit range**: the commit of the last run before the change and of the first run after
  it: the change landed in ``(before, after]``;
* **step**: median of the segment after / median of the segment before (segments run to
  the neighbouring change points), with a percentile-bootstrap interval (the runs of each
  segment resampled: the run is the unit);
* **kind**: *regression* when the whole interval is above 1 (slower), *improvement* when it
  is below, *unclear* otherwise.

**The gate** (``attnbench history check``): a series fails when its newest change point is a
regression and the regression episode it ends is larger than the suite's latency threshold.
The episode is the run of consecutive regressions ending at the newest change point, measured
from the median before the first of them to the median after the last: a drift of 3 % per
commit that E-Divisive cuts into several small steps is judged by its total, which is what
catches slow drifts that never trip a per-commit gate.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from attnbench.gate import GateConfig
from attnbench.history import edivisive
from attnbench.history.identity import short_commit
from attnbench.history.series import Series, SeriesRun

DEFAULT_CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass
class Params:
    """Detection settings (defaults: see edivisive.py)."""

    sig: float = edivisive.DEFAULT_SIG
    permutations: int = edivisive.DEFAULT_PERMUTATIONS
    min_size: int = edivisive.DEFAULT_MIN_SIZE
    confidence: float = DEFAULT_CONFIDENCE


@dataclass
class Step:
    """One change point of a series."""

    index: int  # position among the series' ok runs of the first run after the change
    run_id: str  # the first run after the change
    commit_before: str | None
    commit_after: str | None
    before_ms: float  # median of the segment before
    after_ms: float  # median of the segment after
    ratio: float  # after / before
    ci_low: float
    ci_high: float
    p: float
    kind: str  # regression, improvement or unclear

    @property
    def commits(self) -> str:
        return f"{short_commit(self.commit_before)}..{short_commit(self.commit_after)}"

    def describe(self) -> str:
        pct = (self.ratio - 1) * 100
        return (
            f"{pct:+.1f}% ({(self.ci_low - 1) * 100:+.1f}..{(self.ci_high - 1) * 100:+.1f}%) "
            f"{self.kind} at {self.commits}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "commits": self.commits}


@dataclass
class Analysis:
    """A series' change points and segment levels (over its ok runs)."""

    series: Series
    runs: list[SeriesRun]  # the ok runs analysed, oldest first
    steps: list[Step]
    levels: list[float]  # median of each segment, oldest first (len(steps) + 1, or 0 if no runs)


@dataclass
class Finding:
    """A series that fails the history gate."""

    analysis: Analysis
    first: Step  # first regression of the episode
    last: Step  # the newest change point
    base_ms: float  # level before the episode
    cur_ms: float  # level after it
    thresholds: list[str]

    @property
    def ratio(self) -> float:
        return self.cur_ms / self.base_ms

    def describe(self) -> str:
        steps = len(self.analysis.steps[self.analysis.steps.index(self.first) :])
        span = self.last.commits if steps == 1 else f"{self.first.commits} .. {self.last.commits} ({steps} steps)"
        return (
            f"{(self.ratio - 1) * 100:+.1f}% ({self.base_ms:.4g} -> {self.cur_ms:.4g} ms) at {span}; "
            f"newest step {self.last.describe()}; thresholds {', '.join(self.thresholds)}"
        )


def series_seed(series: Series) -> int:
    """A seed fixed by the series' identity: the same history always gives the same answer."""
    return int.from_bytes(hashlib.sha256("\0".join(series.key).encode()).digest()[:8], "little")


def _ratio_ci(before: np.ndarray, after: np.ndarray, confidence: float, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    mb = np.median(before[rng.integers(0, len(before), size=(RESAMPLES, len(before)))], axis=1)
    ma = np.median(after[rng.integers(0, len(after), size=(RESAMPLES, len(after)))], axis=1)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(ma / mb, [tail, 1 - tail])
    return float(lo), float(hi)


def analyse(series: Series, params: Params | None = None) -> Analysis:
    """Change points of ``series`` (over its ok runs), with commit ranges, steps and kinds."""
    params = params or Params()
    runs = [r for r in series.runs if r.ok]
    if not runs:
        return Analysis(series, runs, [], [])
    values = np.array([r.value_ms for r in runs], dtype=float)
    seed = series_seed(series)
    cps = edivisive.e_divisive(
        np.log(values), sig=params.sig, permutations=params.permutations, min_size=params.min_size, seed=seed
    )
    bounds = [0, *[c.index for c in cps], len(values)]
    levels = [float(np.median(values[s:e])) for s, e in zip(bounds[:-1], bounds[1:], strict=True)]
    steps = []
    for i, cp in enumerate(cps):
        before, after = values[bounds[i] : bounds[i + 1]], values[bounds[i + 1] : bounds[i + 2]]
        lo, hi = _ratio_ci(before, after, params.confidence, seed + i)
        kind = "regression" if lo > 1 else "improvement" if hi < 1 else "unclear"
        steps.append(
            Step(
                cp.index,
                runs[cp.index].run_id,
                runs[cp.index - 1].commit,
                runs[cp.index].commit,
                levels[i],
                levels[i + 1],
                levels[i + 1] / levels[i],
                lo,
                hi,
                cp.p,
                kind,
            )  # fmt: skip
        )
    return Analysis(series, runs, steps, levels)


def gate_finding(analysis: Analysis, cfg: GateConfig) -> Finding | None:
    """The episode that fails the gate (see the module doc), or None."""
    checks = cfg.for_field("latency")
    steps = analysis.steps
    if not checks or not steps or steps[-1].kind != "regression":
        return None
    first = len(steps) - 1
    while first > 0 and steps[first - 1].kind == "regression":
        first -= 1
    base, cur = analysis.levels[first], analysis.levels[-1]
    if not all(k.exceeds(base, cur) for k in checks):
        return None
    return Finding(analysis, steps[first], steps[-1], base, cur, [k.text for k in checks])
