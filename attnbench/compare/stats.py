"""Statistics for comparing two sets of timing samples (scipy.stats where it has the test).

* :func:`mann_whitney_p`: two-sided Mann-Whitney U test, normal approximation with tie and
  continuity correction (``scipy.stats.mannwhitneyu(..., method="asymptotic")``).
* :func:`bootstrap_ratio_ci`: percentile bootstrap confidence interval of
  median(current) / median(baseline), resampling each side independently
  (``scipy.stats.bootstrap``), with a fixed seed so the same inputs always give the same verdict.
* :func:`benjamini_hochberg`: adjusted p-values (q-values) controlling the false discovery
  rate across the many points of a sweep (``scipy.stats.false_discovery_control``).
* :func:`blocked_log_ratio`: per-round values (one per worker process) in blocks (process
  states), the log ratio between the sides by least squares with a level per block, its
  t-test and interval: the test for rounds as the unit.
"""

from __future__ import annotations

import math
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


def blocked_log_ratio(
    cells: Sequence[tuple[Sequence[float], Sequence[float]]], confidence: float = 0.99
) -> tuple[float, float, float, float]:
    """(p, ratio, low, high) of cur / base from per-round values grouped into blocks (states):
    least squares on the logarithms with one level per block and one shift between the sides
    (log v = state + side * log ratio + noise), a two-sided t-test of the shift, and its interval
    at ``confidence``. ``cells`` holds (base values, cur values) per block; a block missing
    either side tells nothing about the shift and must be left out by the caller.

    The shift's estimate is the blocks' mean differences weighted by n_b n_c / (n_b + n_c); the
    noise is pooled over every block and side, with n - blocks - 1 degrees of freedom (at least
    one is needed). With one block this is Student's two-sample t-test on the logarithms. No
    spread at all gives p = 1 for equal values, else p = 0, and the interval of the ratio itself.
    """
    weights, diffs, ss, n = [], [], 0.0, 0
    for base, cur in cells:
        lb, lc = np.log(np.asarray(base, dtype=float)), np.log(np.asarray(cur, dtype=float))
        if not len(lb) or not len(lc):
            raise ValueError("every block needs values on both sides")
        weights.append(len(lb) * len(lc) / (len(lb) + len(lc)))
        diffs.append(float(lc.mean() - lb.mean()))
        ss += float(((lb - lb.mean()) ** 2).sum() + ((lc - lc.mean()) ** 2).sum())
        n += len(lb) + len(lc)
    df = n - len(cells) - 1
    if df < 1:
        raise ValueError(f"blocked_log_ratio needs more values than blocks + 1 (got {n} in {len(cells)} blocks)")
    w, d = np.asarray(weights), np.asarray(diffs)
    shift = float((w * d).sum() / w.sum())
    ss += float((w * (d - shift) ** 2).sum())  # blocks that disagree on the shift are noise too
    ratio = math.exp(shift)
    if ss <= 0:
        return (1.0 if shift == 0 else 0.0), ratio, ratio, ratio
    se = math.sqrt(ss / df / float(w.sum()))
    p = float(2 * scipy.stats.t.sf(abs(shift) / se, df))
    half = float(scipy.stats.t.ppf(0.5 + confidence / 2, df)) * se
    return p, ratio, math.exp(shift - half), math.exp(shift + half)
