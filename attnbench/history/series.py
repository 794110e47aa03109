"""Reading series out of the history: filters, and the runs of each series in order.

A series is one point_id of one suite on one environment class (see identity.py); its runs
are ordered by when they started (the commit is a label on each run, not an order: a history
back-filled by running old commits today is in the order they were run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from attnbench.errors import UserError
from attnbench.history import identity

FILTER_KEYS = ("impl", "pass", "causal", "dtype", "B", "H", "N", "D", "M")


@dataclass
class SeriesRun:
    """One run's entry in a series."""

    run_key: int
    run_id: str
    started: datetime | None
    commit: str | None
    branch: str | None
    status: str
    correct: bool | None
    value_ms: float | None  # None unless the point ran and was correct
    median_ms: float | None
    peak_mib: float | None

    @property
    def ok(self) -> bool:
        return self.value_ms is not None and self.value_ms > 0


@dataclass
class Series:
    """The runs of one point_id of one suite on one environment class, oldest first."""

    suite: str
    point_id: str
    env_key: str
    env_label: str
    impl: str
    gate: dict[str, Any] = field(default_factory=dict)  # the newest run's suite [gate] table
    runs: list[SeriesRun] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.suite, self.point_id, self.env_key)

    @property
    def name(self) -> str:
        return f"{self.suite} {self.point_id} [{self.env_label}]"


@dataclass
class Filters:
    """What `history show/check/report` select: every field None means everything."""

    suite: str | None = None
    point: str | None = None  # exact point_id, or a glob (``softmax/fwd/*``)
    sets: dict[str, list[Any]] = field(default_factory=dict)  # column -> allowed values (--impl, --set)
    since: str | None = None  # runs started at or after this ISO date/time
    branch: str | None = None
    env: str | None = None  # env_key prefix

    def where(self) -> tuple[str, list[Any]]:
        """A SQL WHERE clause over ``points p JOIN runs r`` and its parameters."""
        clauses: list[str] = ["TRUE"]
        params: list[Any] = []
        if self.suite:
            clauses.append("r.suite = ?")
            params.append(self.suite)
        if self.point:
            if any(ch in self.point for ch in "*?["):
                clauses.append("p.point_id GLOB ?")
            else:
                clauses.append("p.point_id = ?")
            params.append(self.point)
        for key, values in self.sets.items():
            if key not in FILTER_KEYS:
                raise UserError(f"--set {key}=...: not a history filter; expected one of {', '.join(FILTER_KEYS)}")
            clauses.append(f'p."{key}" IN ({", ".join("?" for _ in values)})')
            params.extend(values)
        if self.since:
            clauses.append("r.started >= ?")
            params.append(parse_since(self.since))
        if self.branch:
            clauses.append("r.branch = ?")
            params.append(self.branch)
        if self.env:
            clauses.append("starts_with(r.env_key, ?)")
            params.append(self.env)
        return " AND ".join(clauses), params


def parse_since(text: str) -> datetime:
    """``2026-11-30`` or ``2026-11-30T12:00:00+00:00`` as naive UTC; a one-line error otherwise."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UserError(
            f"--since {text!r}: expected an ISO date or time such as 2026-11-30 or 2026-11-30T12:00"
        ) from None
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def load_series(con: Any, filters: Filters, window: int | None = None) -> list[Series]:
    """Every series matching ``filters``, each with its newest ``window`` runs (all if None)."""
    where, params = filters.where()
    limit = ""
    if window is not None:
        limit = "QUALIFY row_number() OVER (PARTITION BY r.suite, p.point_id, r.env_key ORDER BY r.started DESC, r.run_key DESC) <= ?"
        params = [*params, int(window)]
    rows = con.execute(
        f"""SELECT r.suite, p.point_id, r.env_key, p.impl, r.gate,
                   r.run_key, r.run_id, r.started, r.git_commit, r.branch,
                   p.status, p.correct, p.value_ms, p.time_ms_median, p.peak_mib
            FROM points p JOIN runs r ON p.run_key = r.run_key
            WHERE {where}
            {limit}
            ORDER BY r.suite, p.point_id, r.env_key, r.started, r.run_key""",
        params,
    ).fetchall()
    # one fingerprint per environment class, not one per row (it is the widest column)
    labels = {
        ekey: identity.env_label(json.loads(env or "{}"), threads)
        for ekey, env, threads in con.execute(
            "SELECT env_key, arg_max(env, run_key), arg_max(threads, run_key) FROM runs GROUP BY env_key"
        ).fetchall()
    }
    out: list[Series] = []
    for (suite, pid, ekey, impl, gate, rk, rid, started, commit, branch, status, correct, value, median,
         mib) in rows:  # fmt: skip
        if not out or out[-1].key != (suite, pid, ekey):
            out.append(Series(suite, pid, ekey, labels.get(ekey, ekey), impl or pid.split("/")[0]))
        s = out[-1]
        s.gate = json.loads(gate or "{}")  # the newest run's, as rows come oldest first
        s.runs.append(SeriesRun(rk, rid, started, commit, branch, status or "ok", correct, value, median, mib))
    return out


def counts(con: Any) -> dict[str, int]:
    """Runs, points, samples and series in the database."""
    runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
    points = con.execute("SELECT count(*) FROM points").fetchone()[0]
    samples = con.execute("SELECT count(*) FROM samples").fetchone()[0]
    series = con.execute(
        "SELECT count(*) FROM (SELECT DISTINCT r.suite, p.point_id, r.env_key FROM points p JOIN runs r ON p.run_key = r.run_key)"
    ).fetchone()[0]
    return {"runs": int(runs), "points": int(points), "samples": int(samples), "series": int(series)}
