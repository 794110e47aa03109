"""Pooling the rounds of a point: each round is one worker process measuring the same point.

A machine state that lasts a whole process (where the allocator put things, which core the
threads landed on, another job's burst) is one draw per process. Several rounds, interleaved
over the sweep, turn that draw into noise the statistics can see, which a comparison between
runs needs (see docs/ci.md).
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from attnbench.measure.stats import summarize
from attnbench.point import Record, Status, TimerConfig

_ERR = ("err_out", "err_dq", "err_dk", "err_dv")
# measured once per round (attnbench.measure.reference): kept per round, in round order
PER_ROUND = ("ref_ms", "faults_per_call", "ref_fault_us")


def pool(records: list[Record], timer: TimerConfig | None = None) -> list[Record]:
    """One record per point: samples of every round pooled, statistics recomputed, peak memory
    the median over rounds, errors the worst round's; ``sample_rounds`` says which round took
    each sample (the gate compares rounds: attnbench.compare.rounds).
    A round that failed makes the point fail with that round's row. Records of single-round
    points pass through with ``rounds = 1``.

    A pooled point is ``converged`` when every round met its noise target, or, given the run's
    ``timer``, when the pooled samples meet it: at least ``min_samples`` of them and the
    relative noise of their median (between-round spread included) within ``target_rel_noise``.
    Two rounds that each stopped at the cap a little short of 1 % can pool to well under it."""
    by_point: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        by_point[rec.point_id].append(rec)
    out = []
    for recs in by_point.values():
        recs.sort(key=lambda r: r.round)
        if len(recs) == 1:
            rec = recs[0]
            out.append(
                Record(_drop_round({**rec.row, "rounds": 1}), rec.samples, rec.steps, [rec.round] * len(rec.samples))
            )
            continue
        failed = [r for r in recs if r.status is not Status.OK]
        if failed:
            out.append(Record(_drop_round({**failed[0].row, "rounds": len(recs)})))
            continue
        out.append(_pooled(recs, timer))
    return out


def pooled_correct(values: list[Any]) -> bool | None:
    """A point's verdict from its rounds': False if any round failed, True if any passed, else
    None (no round's check could run)."""
    if any(v is False for v in values):
        return False
    return True if any(v is True for v in values) else None


def _pooled(recs: list[Record], timer: TimerConfig | None) -> Record:
    rows = [r.row for r in recs]
    samples = [t for r in recs for t in r.samples]
    sample_rounds = [r.round for r in recs for _ in r.samples]
    row = dict(rows[0])
    stats = summarize(samples)
    pooled_met = timer is not None and stats.n >= timer.min_samples and stats.rel_noise <= timer.target_rel_noise
    row.update(stats.as_dict("time_ms"))
    row.update(
        n_samples=stats.n,
        rel_noise=stats.rel_noise,
        rounds=len(recs),
        round_medians_ms=[summarize(r.samples).median for r in recs if r.samples],
        converged=all(bool(r.get("converged")) for r in rows) or pooled_met,
        wall_s=sum(float(r.get("wall_s") or 0.0) for r in rows),
    )
    for col in PER_ROUND:  # the gate's machine reference and fault state, round by round
        per_round = [r.get(col) for r in rows]
        known = [v for v in per_round if v is not None]
        row["round_" + col] = per_round if known else None
        row[col] = statistics.median(known) if known else None
    peaks = [r["peak_mib"] for r in rows if r.get("peak_mib") is not None]
    row["peak_mib"] = statistics.median(peaks) if peaks else None
    for col in _ERR:
        vals = [r[col] for r in rows if r.get(col) is not None]
        row[col] = max(vals) if vals else None
    row["correct"] = pooled_correct([r.get("correct") for r in rows])
    problems = [r["correctness_error"] for r in rows if r.get("correctness_error")]
    row["correctness_error"] = problems[0] if problems else None
    return Record(_drop_round(row), samples, [], sample_rounds)


def _drop_round(row: dict[str, Any]) -> dict[str, Any]:
    row.pop("round", None)
    return row
