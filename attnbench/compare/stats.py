"""Statistics for comparing two sets of timing samples (scipy.stats where it has the test).

* :func:`mann_whitney_p`: two-sided Mann-Whitney U test, normal approximation with tie and
  continuity correction (``scipy.stats.mannwhitneyu(..., method="asymptotic")``).
* :func:`bootstrap_ratio_ci`: percentile bootstrap confidence interval of
  median(current) / median(baseline), resampling each side independently
  (``scipy.stats.bootstrap``), with a fixed seed so the same inputs always give the same verdict.
* :func:`benjamini_hochberg`: adjusted p-values (q-values) controlling the false discovery
  rate across the many points of a sweep (``scipy.stats.false_discovery_control``).
* :func:`fast_rounds`: the samples of the rounds (worker processes) in a point's fastest state.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import scipy.stats

DEFAULT_RESAMPLES = 2000


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value that ``a`` and ``b`` come from the same distribution
    (``scipy.stats.mannwhitneyu``, normal approximation with tie and continuity correction).

    1.0 when either side is empty or every value is equal (nothing to tell apart).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(x) == 0 or len(y) == 0 or np.all(np.concatenate([x, y]) == x[0]):
        return 1.0
    res = scipy.stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", use_continuity=True)
    p = float(res.pvalue)
    return 1.0 if math.isnan(p) else min(1.0, p)


def bootstrap_ratio_ci(
    base: Sequence[float],
    cur: Sequence[float],
    confidence: float = 0.99,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high) percentile-bootstrap bounds of median(cur) / median(base), each side
    resampled independently (``scipy.stats.bootstrap``), with a fixed seed so the same inputs
    always give the same interval."""
    b, c = np.asarray(base, dtype=float), np.asarray(cur, dtype=float)
    if len(b) == 0 or len(c) == 0:
        raise ValueError("bootstrap_ratio_ci needs samples on both sides")
    if len(b) == 1 and len(c) == 1:  # nothing to resample: the interval is the ratio itself
        r = float(c[0] / b[0])
        return r, r

    def ratio(bb: np.ndarray, cc: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(cc, axis=axis) / np.median(bb, axis=axis)

    res = scipy.stats.bootstrap(
        (b, c),
        ratio,
        n_resamples=resamples,
        confidence_level=confidence,
        method="percentile",
        vectorized=True,
        paired=False,
        rng=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (``scipy.stats.false_discovery_control``), in the
    input order. A point is a discovery at false discovery rate ``alpha`` when its adjusted
    value is <= alpha."""
    if len(pvalues) == 0:
        return []
    return [float(v) for v in scipy.stats.false_discovery_control(np.asarray(pvalues, dtype=float), method="bh")]


def robust_shift(ratios: Sequence[float], min_points: int = 6) -> float:
    """Run-wide speed shift: the geometric median-of-ratios, 1.0 with fewer than ``min_points``.

    On a shared machine whole runs drift by 5-20 %; one impl's regression moves few of the
    points, so the median ratio tracks the drift and not the regression.
    """
    r = np.asarray([x for x in ratios if x > 0 and math.isfinite(x)], dtype=float)
    if len(r) < min_points:
        return 1.0
    return float(np.exp(np.median(np.log(r))))


def fast_rounds(samples: Sequence[float], rounds: Sequence[int] | None, window: float) -> tuple[list[float], int, int]:
    """(samples of the fast rounds, rounds kept, rounds in all).

    A round is one worker process. On a CPU a point's speed is partly a state of its process
    that lasts the whole process: where the physical pages of its buffers fell in the caches
    (measured here: naive softmax forward at N=512 ran at 5.5 ms in most processes and at 11 ms
    in others, every sample alike). A round is kept when its median is within ``window``
    (0.15 = 15 %) of the fastest round's median; the others are set aside, so both sides of a
    comparison describe the same state. With one round, no round information, or ``window``
    <= 0, every sample is kept.
    """
    n = len(samples)
    if window <= 0 or not rounds or len(rounds) != n:
        return list(samples), 1, 1
    groups: dict[int, list[float]] = defaultdict(list)
    for t, r in zip(samples, rounds, strict=True):
        groups[int(r)].append(float(t))
    if len(groups) < 2:
        return list(samples), 1, 1
    medians = {r: float(np.median(g)) for r, g in groups.items()}
    limit = min(medians.values()) * (1.0 + window)
    keep = {r for r, m in medians.items() if m <= limit}
    return [float(t) for t, r in zip(samples, rounds, strict=True) if int(r) in keep], len(keep), len(groups)
