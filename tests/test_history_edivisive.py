"""E-Divisive means against the definitions of Matteson & James (2014), computed the slow way."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from attnbench.history.edivisive import best_split, e_divisive


def q_direct(x: np.ndarray, y: np.ndarray, alpha: float = 1.0) -> float:
    """Q(X, Y) straight from the paper's formula, with explicit pairs."""
    n, m = len(x), len(y)
    cross = sum(abs(a - b) ** alpha for a in x for b in y)
    within_x = sum(abs(a - b) ** alpha for a, b in itertools.combinations(x, 2))
    within_y = sum(abs(a - b) ** alpha for a, b in itertools.combinations(y, 2))
    e = 2 * cross / (n * m) - within_x / (n * (n - 1) / 2) - within_y / (m * (m - 1) / 2)
    return n * m / (n + m) * e


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("alpha", [1.0, 0.5, 1.5])
def test_best_split_is_the_argmax_of_the_papers_statistic(seed: int, alpha: float) -> None:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 1, 22) + np.r_[np.zeros(9), np.full(13, rng.uniform(0, 2))]
    brute = max((q_direct(z[:t], z[t:k], alpha), t, k) for t in range(3, 20) for k in range(t + 3, 23))
    got = best_split(z, min_size=3, alpha=alpha)
    assert got is not None
    assert (got.tau, got.kappa) == (brute[1], brute[2])
    assert got.q == pytest.approx(brute[0], rel=1e-9)


def test_best_split_respects_min_size_and_short_series() -> None:
    assert best_split(np.arange(5.0), min_size=3) is None
    sp = best_split(np.r_[np.zeros(3), np.ones(3)] + np.arange(6) * 1e-3, min_size=3)
    assert sp is not None and (sp.tau, sp.kappa) == (3, 6)


def test_finds_two_changes_where_they_are() -> None:
    rng = np.random.default_rng(7)
    z = np.r_[rng.normal(0, 0.02, 30), rng.normal(0.1, 0.02, 25), rng.normal(0.04, 0.02, 25)]
    cps = e_divisive(z, seed=1)
    assert [c.index for c in cps] == [30, 55]
    assert all(c.p <= 0.01 for c in cps)


def test_same_seed_same_answer_and_a_constant_series_has_no_change() -> None:
    rng = np.random.default_rng(3)
    z = np.r_[rng.normal(0, 1, 20), rng.normal(1.5, 1, 20)]
    assert e_divisive(z, seed=5) == e_divisive(z, seed=5)
    assert e_divisive(np.ones(40)) == []


def test_false_positive_rate_is_near_the_level() -> None:
    """Pure noise: about ``sig`` of the series get a change point (0.01 asked; 3 of 100 allowed)."""
    hits = sum(bool(e_divisive(np.random.default_rng(100 + s).normal(0, 1, 40), seed=s)) for s in range(100))
    assert hits <= 3


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="alpha"):
        e_divisive(np.zeros(10), alpha=2.0)
    with pytest.raises(ValueError, match="finite"):
        e_divisive(np.array([1.0, np.nan, 2.0, 3.0, 4.0, 5.0]))
