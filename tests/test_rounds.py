"""Pooling rounds: exact values on hand-made records."""

from __future__ import annotations

from attnbench.point import Record, TimerConfig
from attnbench.results.rounds import pool


def rec(rnd, samples, peak, err, status="ok", correct=True, converged=True):
    row = {
        "point_id": "p",
        "round": rnd,
        "status": status,
        "peak_mib": peak,
        "err_out": err,
        "correct": correct,
        "converged": converged,
    }
    return Record(row, samples)


def test_pool_concatenates_samples_and_takes_median_peak_and_worst_error():
    (out,) = pool([rec(1, [3.0, 4.0], 12.0, 1e-6), rec(0, [1.0, 2.0], 10.0, 2e-6), rec(2, [5.0], 11.0, 1e-7)])
    row = out.row
    assert out.samples == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert row["time_ms_median"] == 3.0 and row["n_samples"] == 5 and row["rounds"] == 3
    assert row["round_medians_ms"] == [1.5, 3.5, 5.0]
    assert row["peak_mib"] == 11.0 and row["err_out"] == 2e-6 and row["correct"] is True
    assert "round" not in row
    assert out.sample_rounds == [0, 0, 1, 1, 2]


def test_a_failed_round_fails_the_point():
    (out,) = pool([rec(0, [1.0], 1.0, 0.0), rec(1, [], None, None, status="crashed")])
    assert out.row["status"] == "crashed" and out.samples == []


def test_one_incorrect_round_makes_the_point_incorrect():
    (out,) = pool([rec(0, [1.0], 1.0, 0.0), rec(1, [1.0], 1.0, 0.5, correct=False)])
    assert out.row["correct"] is False and out.row["err_out"] == 0.5


def test_pooled_rounds_converge_when_their_samples_meet_the_target():
    # each round stopped at the cap unconverged; pooled, 10 samples sit within 1 % of the median
    a = rec(0, [10.0, 10.05, 9.95, 10.02, 9.98], 1.0, 0.0, converged=False)
    b = rec(1, [10.01, 9.99, 10.03, 9.97, 10.0], 1.0, 0.0, converged=False)
    timer = TimerConfig(min_samples=5, target_rel_noise=0.01)
    (out,) = pool([a, b], timer)
    assert out.row["converged"] is True and out.row["rel_noise"] <= 0.01
    # without the run's timer settings only the rounds' own verdicts count
    (out,) = pool([a, b])
    assert out.row["converged"] is False
    # two rounds in different speed states: the pooled noise is the spread between them
    c = rec(1, [12.0, 12.1, 11.9, 12.05, 11.95], 1.0, 0.0, converged=True)
    (out,) = pool([a, c], timer)
    assert out.row["converged"] is False and out.row["rel_noise"] > 0.01
    # too few samples pooled: not converged however steady
    (out,) = pool([rec(0, [10.0, 10.0], 1, 0, converged=False), rec(1, [10.0, 10.0], 1, 0, converged=False)], timer)
    assert out.row["converged"] is False
