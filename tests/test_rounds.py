"""Pooling rounds: exact values on hand-made records."""

from __future__ import annotations

from attnbench.point import Record
from attnbench.results.rounds import pool


def rec(rnd, samples, peak, err, status="ok", correct=True):
    row = {
        "point_id": "p",
        "round": rnd,
        "status": status,
        "peak_mib": peak,
        "err_out": err,
        "correct": correct,
        "converged": True,
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
