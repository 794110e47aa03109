"""Statistics for comparing two sets of timing samples (numpy only, no scipy).

* :func:`mann_whitney_p`: two-sided Mann-Whitney U test, normal approximation with tie and
  continuity correction (the same number as ``scipy.stats.mannwhitneyu(..., method="asymptotic")``).
* :func:`bootstrap_ratio_ci`: percentile bootstrap confidence interval of
  median(current) / median(baseline), resampling each side independently, with a fixed seed
  so the same inputs always give the same verdict.
* :func:`benjamini_hochberg`: adjusted p-values (q-values) controlling the false discovery
  rate across the many points of a sweep.
* :func:`fast_rounds`: the samples of the rounds (worker processes) in a point's fastest state.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

DEFAULT_RESAMPLES = 2000


def _rankdata(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average ranks (1-based) of ``x`` and the sizes of its tie groups."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=float)
    # boundaries of runs of equal values
    edges = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1], True])
    counts = np.diff(edges)
    avg = (edges[:-1] + edges[1:] + 1) / 2.0  # mean of 1-based positions start+1 .. end
    ranks[order] = np.repeat(avg, counts)
    return ranks, counts


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value that ``a`` and ``b`` come from the same distribution.

    1.0 when either side is empty or every value is equal (nothing to tell apart).
    """
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n1, n2 = len(x), len(y)
    if n1 == 0 or n2 == 0:
        return 1.0
    ranks, ties = _rankdata(np.concatenate([x, y]))
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    n = n1 + n2
    tie_term = float((ties**3 - ties).sum())
    var = n1 * n2 / 12.0 * ((n + 1) - tie_term / (n * (n - 1)))
    if var <= 0:
        return 1.0
    mu = n1 * n2 / 2.0
    u = max(u1, n1 * n2 - u1)
    z = (u - mu - 0.5) / math.sqrt(var)
    return float(min(1.0, math.erfc(z / math.sqrt(2.0))))


def bootstrap_ratio_ci(
    base: Sequence[float],
    cur: Sequence[float],
    confidence: float = 0.99,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high) percentile-bootstrap bounds of median(cur) / median(base)."""
    b, c = np.asarray(base, dtype=float), np.asarray(cur, dtype=float)
    if len(b) == 0 or len(c) == 0:
        raise ValueError("bootstrap_ratio_ci needs samples on both sides")
    rng = np.random.default_rng(seed)
    mb = np.median(b[rng.integers(0, len(b), size=(resamples, len(b)))], axis=1)
    mc = np.median(c[rng.integers(0, len(c), size=(resamples, len(c)))], axis=1)
    ratios = mc / mb
    tail = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(ratios, [tail, 1.0 - tail])
    return float(lo), float(hi)


def benjamini_hochberg(pvalues: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values, in the input order.

    A point is a discovery at false discovery rate ``alpha`` when its adjusted value is <= alpha.
    """
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="mergesort")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(adjusted, 1.0)
    return [float(v) for v in out]


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
