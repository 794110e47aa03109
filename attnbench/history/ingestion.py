"""Ingesting a run directory into the history: validated first, written in one transaction.

Each point's **value** in its series is the median of the samples of its fast rounds (the
worker processes within ``round_window`` of its fastest, as ``attnbench compare`` judges a
point before the gate moved to rounds as its unit: :func:`fast_rounds`), or ``time_ms_median`` when the run kept no
samples. Failed, skipped or incorrect points get no value (their status is kept).

Idempotent: a run already in the history with the same contents is left alone; one whose
contents changed since (a resumed run, ingested when it was interrupted) is replaced. The old
rows are deleted and the new ones written in the same transaction, so a crash (even kill -9)
at any moment leaves the database as it was before the ingest or after it, never between.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from attnbench import results
from attnbench.errors import UserError
from attnbench.history import identity, store
from attnbench.suite import parse_suite

# typed columns of the points table, in table order (the rest of a results row goes to ``extra``)
POINT_COLUMNS = ("impl", "pass", "causal", "dtype", "B", "H", "N", "D", "M", "status", "error", "correct",
                 "time_ms_median", "time_ms_min", "n_samples", "peak_mib")  # fmt: skip
INT_COLUMNS = ("B", "H", "N", "D", "M", "n_samples")
DEFAULT_ROUND_WINDOW = 0.15  # a suite's [gate] round_window, when it sets none


@dataclass
class IngestSummary:
    """What one ingest did: ``action`` is added, unchanged (already there) or replaced."""

    run_id: str
    action: str
    run_dir: str
    suite: str
    commit: str | None
    n_points: int
    n_samples: int
    db: str
    seconds: float = 0.0  # reading and writing, wall clock

    def __str__(self) -> str:
        what = {"added": "added", "unchanged": "already in the history", "replaced": "updated"}[self.action]
        return (
            f"{self.run_dir}: {what} ({self.suite}, commit {identity.short_commit(self.commit)}, "
            f"{self.n_points} points, {self.n_samples} samples; run {self.run_id}) in {self.db}"
        )


@dataclass
class LoadedRun:
    """A run directory read and checked, ready to write."""

    run_dir: Path
    meta: dict[str, Any]
    run_id: str
    points: Any  # DataFrame in the points table's columns (without run_key)
    samples: Any  # DataFrame point_id, sample, time_ms, round
    gate: dict[str, Any]
    digest: str


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _clean(v: Any) -> Any:
    """A JSON-ready value (numpy scalars and NaN turned into Python values and None)."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            v = v.item()
        except (ValueError, AttributeError):
            v = v.tolist() if hasattr(v, "tolist") else str(v)
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return None
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def suite_gate(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``[gate]`` table of the run's stored suite source ({} if it has none or it no longer parses)."""
    suite = meta.get("suite") or {}
    source = suite.get("source")
    if not source:
        return {}
    try:
        return dict(parse_suite(source, str(suite.get("path") or "suite")).gate)
    except UserError:
        return {}


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


def point_value(
    samples: list[float] | None, rounds: list[int] | None, median: float | None, window: float
) -> tuple[float | None, int, int]:
    """(value in ms, rounds kept, rounds in all) of one point of one run (see the module doc)."""

    if not samples:
        return median, 1, 1
    kept, k, n = fast_rounds(samples, rounds, window)
    return float(np.median(kept)), k, n


def load(run_dir: Path) -> LoadedRun:
    """Read ``run_dir`` through attnbench.results and check it is a finished run of attnbench."""
    run_dir = Path(run_dir)
    where = str(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {where!r} does not exist")
    meta = results.read_metadata(run_dir)  # missing, invalid JSON or another schema_version: one line
    suite_name = (meta.get("suite") or {}).get("name") if isinstance(meta.get("suite"), dict) else None
    env = meta.get("env")
    if not suite_name or not isinstance(env, dict) or not env.get("device"):
        raise UserError(f"{where}: metadata.json lacks the suite name or the environment fingerprint (env.device)")
    if not meta.get("finished") or meta.get("interrupted"):
        raise UserError(
            f"{where}: the run did not finish (interrupted or still running); finish it with "
            f"`attnbench run --resume {where}`, then add it"
        )
    rid = identity.run_id(meta, where)
    try:
        df, samples, _ = results.load_run(run_dir)
    except UserError:
        raise
    except Exception as exc:  # a truncated or foreign Parquet/journal file: pyarrow, json, OS errors
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"{where}: cannot read the run's results ({type(exc).__name__}: {first})") from None
    if not isinstance(df, pd.DataFrame) or "point_id" not in df.columns or "status" not in df.columns:
        raise UserError(f"{where}: results have no point_id/status columns; expected a run of `attnbench run`")
    if df.empty:
        raise UserError(f"{where}: the run has no points")
    dup = df["point_id"][df["point_id"].duplicated()]
    if len(dup):
        raise UserError(f"{where}: point {dup.iloc[0]!r} appears twice in results.parquet")
    if samples is None:
        samples = pd.DataFrame(columns=["point_id", "sample", "time_ms", "round"])
    missing = {"point_id", "sample", "time_ms"} - set(samples.columns)
    if missing:
        raise UserError(f"{where}: samples.parquet lacks column(s) {', '.join(sorted(missing))}")
    samples = samples.copy()
    if "round" not in samples.columns:
        samples["round"] = 0
    samples = samples[["point_id", "sample", "time_ms", "round"]]
    gate = suite_gate(meta)
    window = float(gate.get("round_window", DEFAULT_ROUND_WINDOW))
    points = _points_frame(df, samples, window)
    digest = hashlib.sha256(
        json.dumps(
            [meta.get("finished"), len(samples), points[["point_id", "status", "value_ms"]].values.tolist()],
            default=str,
        ).encode()
    ).hexdigest()[:16]
    return LoadedRun(run_dir, meta, rid, points, samples, gate, digest)


def fast_state_values(samples: Any, window: float) -> dict[str, tuple[float, int, int]]:
    """point_id -> (median of the fast rounds' samples, rounds kept, rounds in all), for every
    point with samples. The same selection as :func:`fast_rounds`
    (a test holds them equal), done for all points at once: a run of 200 points with 70
    samples each would otherwise spend most of its ingest in per-round medians."""
    if not len(samples):
        return {}
    s = samples[["point_id", "round", "time_ms"]].copy()
    s["point_id"] = s["point_id"].astype(str)
    round_median = s.groupby(["point_id", "round"], sort=False)["time_ms"].median().rename("round_median")
    fastest = round_median.groupby(level="point_id").min().rename("fastest")
    rounds = round_median.reset_index().merge(fastest.reset_index(), on="point_id")
    rounds["keep"] = True if window <= 0 else rounds["round_median"] <= rounds["fastest"] * (1.0 + window)
    kept = s.merge(rounds[["point_id", "round", "keep"]], on=["point_id", "round"])
    values = kept[kept["keep"]].groupby("point_id")["time_ms"].median()
    n_kept = rounds[rounds["keep"]].groupby("point_id").size()
    n_all = rounds.groupby("point_id").size()
    return {
        pid: (float(values[pid]), int(n_kept[pid]) if window > 0 else 1, int(n_all[pid]) if window > 0 else 1)
        for pid in values.index
    }


def _points_frame(df: Any, samples: Any, window: float) -> Any:
    fast = fast_state_values(samples, window)
    rows = []
    for rec in df.to_dict(orient="records"):
        pid = str(rec["point_id"])
        row: dict[str, Any] = {"point_id": pid}
        for c in POINT_COLUMNS:
            v = _clean(rec.get(c))
            if c in INT_COLUMNS:
                v = None if _num(v) is None else int(v)
            elif c in ("causal", "correct"):
                v = None if v is None else bool(v)
            elif c in ("time_ms_median", "time_ms_min", "peak_mib"):
                v = _num(v)
            elif v is not None:
                v = str(v)
            row[c] = v
        row["status"] = row["status"] or "ok"
        value, kept, total = None, None, None
        if row["status"] == "ok" and row["correct"] is not False:
            value, kept, total = fast.get(pid, (row["time_ms_median"], 1, 1))
        row.update(value_ms=value, rounds_kept=kept, rounds_all=total)
        extra = {k: _clean(v) for k, v in rec.items() if k not in POINT_COLUMNS and k != "point_id"}
        row["extra"] = json.dumps({k: v for k, v in extra.items() if v is not None}, default=str)
        rows.append(row)
    out = pd.DataFrame(rows)
    for c in INT_COLUMNS + ("rounds_kept", "rounds_all"):
        out[c] = out[c].astype("Int64")
    return out


def insert_run(con: Any, run: LoadedRun, run_key: int, source: str) -> None:
    meta, env = run.meta, run.meta.get("env") or {}
    threads = meta.get("threads") or env.get("threads")
    con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run_key,
            run.run_id,
            utc(meta.get("started")),
            utc(meta.get("finished")),
            datetime.now(timezone.utc).replace(tzinfo=None),
            identity.commit_of(meta),
            identity.branch_of(meta),
            (meta.get("suite") or {}).get("name"),
            identity.env_key(env, threads),
            json.dumps(env, sort_keys=True, default=str),
            env.get("device"),
            int(threads) if threads else None,
            meta.get("command"),
            json.dumps(run.gate, sort_keys=True),
            source,
            run.digest,
            len(run.points),
        ],
    )


def insert_points(con: Any, run: LoadedRun, run_key: int) -> None:
    frame = run.points.assign(run_key=run_key)
    con.register("attnbench_points_in", frame)
    try:
        cols = ", ".join(["run_key", "point_id", *[f'"{c}"' for c in POINT_COLUMNS], "value_ms", "rounds_kept",
                          "rounds_all", "extra"])  # fmt: skip
        con.execute(f"INSERT INTO points ({cols}) SELECT {cols} FROM attnbench_points_in")
    finally:
        con.unregister("attnbench_points_in")


def insert_samples(con: Any, run: LoadedRun, run_key: int) -> None:
    if not len(run.samples):
        return
    frame = run.samples.assign(run_key=run_key)
    con.register("attnbench_samples_in", frame)
    try:
        con.execute(
            'INSERT INTO samples (run_key, point_id, sample, time_ms, "round") '
            'SELECT run_key, CAST(point_id AS VARCHAR), sample, time_ms, "round" FROM attnbench_samples_in'
        )
    finally:
        con.unregister("attnbench_samples_in")


def utc(text: Any) -> datetime | None:
    """``2026-12-02T13:13:56+0000`` (the runner's format) or any ISO time, as naive UTC."""
    if not text:
        return None
    s = str(text).replace("Z", "+00:00")
    if len(s) >= 5 and s[-5] in "+-" and s[-4:].isdigit():
        s = s[:-2] + ":" + s[-2:]
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def write(con: Any, run: LoadedRun, db: str) -> IngestSummary:
    """Write ``run`` in one transaction (see the module doc for re-ingests)."""
    source = str(run.run_dir.resolve())
    summary = IngestSummary(
        run.run_id,
        "added",
        str(run.run_dir),
        str((run.meta.get("suite") or {}).get("name")),
        identity.commit_of(run.meta),
        len(run.points),
        len(run.samples),
        db,
    )
    con.execute("BEGIN TRANSACTION")
    try:
        old = con.execute("SELECT run_key, digest FROM runs WHERE run_id = ?", [run.run_id]).fetchone()
        if old is not None and old[1] == run.digest:
            con.execute("ROLLBACK")
            summary.action = "unchanged"
            return summary
        if old is not None:
            for table in ("samples", "points", "runs"):
                con.execute(f"DELETE FROM {table} WHERE run_key = ?", [old[0]])
            summary.action = "replaced"
        key = con.execute("SELECT nextval('run_key_seq')").fetchone()[0]
        insert_run(con, run, int(key), source)
        insert_points(con, run, int(key))
        insert_samples(con, run, int(key))
        con.execute("COMMIT")
    except BaseException:
        # the connection may already be gone; an open transaction dies with it
        with contextlib.suppress(Exception):
            con.execute("ROLLBACK")
        raise
    return summary


def ingest(run_dir: Path | str, db_path: Path | str | None = None) -> IngestSummary:
    """Add the run in ``run_dir`` to the history at ``db_path`` (default: see store.default_path).

    Raises UserError (one line) for a missing, unfinished, corrupt or foreign run directory and
    for an unusable database. Safe to call twice on the same run.
    """
    return ingest_many([Path(run_dir)], db_path)[0]


def ingest_many(run_dirs: list[Path], db_path: Path | str | None = None) -> list[IngestSummary]:
    """Ingest several run directories, one transaction each, in the order given; the first bad
    directory raises (the runs before it stay ingested). Each run is read and checked before
    the database is opened or written."""
    out: list[IngestSummary] = []
    con = None
    try:
        for d in run_dirs:
            t0 = time.perf_counter()
            run = load(Path(d))
            if con is None:
                con = store.connect(db_path, write=True)
            out.append(write(con, run, str(store.resolve(db_path))))
            out[-1].seconds = time.perf_counter() - t0
    finally:
        if con is not None:
            con.close()
    return out
