"""Robust statistics of timing samples (pure Python: exact-value tests on fixed samples)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

# Asymptotic standard error of a sample median is sqrt(pi/2) * sigma / sqrt(n) for normal data;
# sigma is estimated robustly as IQR / 1.349.
_SQRT_PI_2 = math.sqrt(math.pi / 2)
_IQR_TO_SIGMA = 1.349


def quantile(sorted_xs: Sequence[float], p: float) -> float:
    """Linear-interpolation quantile (numpy's default) of already sorted data."""
    if not sorted_xs:
        raise ValueError("quantile of no samples")
    pos = (len(sorted_xs) - 1) * p
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (pos - lo)


def rel_noise_of_median(xs: Sequence[float]) -> float:
    """Relative standard error of the median, sqrt(pi/2) * (IQR/1.349) / sqrt(n) / median.

    inf with fewer than 2 samples (no estimate yet); 0 when the samples are all equal.
    """
    n = len(xs)
    if n < 2:
        return math.inf
    s = sorted(xs)
    med = quantile(s, 0.5)
    iqr = quantile(s, 0.75) - quantile(s, 0.25)
    if med <= 0:
        return math.inf
    return _SQRT_PI_2 * (iqr / _IQR_TO_SIGMA) / math.sqrt(n) / med


@dataclass(frozen=True)
class Summary:
    """Named statistics of one point's samples (all in the samples' unit)."""

    n: int
    median: float
    q1: float
    q3: float
    iqr: float
    min: float
    max: float
    mean: float
    rel_noise: float

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_{k}": v for k, v in asdict(self).items() if k not in ("n", "rel_noise")}


def summarize(xs: Sequence[float]) -> Summary:
    if not xs:
        raise ValueError("summarize needs at least one sample")
    s = sorted(xs)
    q1, med, q3 = quantile(s, 0.25), quantile(s, 0.5), quantile(s, 0.75)
    return Summary(
        n=len(s),
        median=med,
        q1=q1,
        q3=q3,
        iqr=q3 - q1,
        min=s[0],
        max=s[-1],
        mean=sum(s) / len(s),
        rel_noise=rel_noise_of_median(s),
    )
