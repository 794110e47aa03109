"""Run a list of (point, round) pairs, each in its own worker process, journaling every finished
one at once: a crash, an OOM kill or a hang becomes that point's row (status crashed, oom or
timeout) and the sweep goes on. A worker lost because its fork server died is not the point's
fault: the point runs again in a fresh server. A worker lost to the signal that stops the run is
not journaled at all (``--resume`` runs it)."""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Mapping
from typing import Any

from attnbench.point import Point, Record, RunOptions, Status
from attnbench.results import journal
from attnbench.results.layout import RunDir
from attnbench.runner import procs, signals

# Runs of a point whose fork server died under it before the point is given up as crashed.
SERVER_LOST_TRIES = 3

POINT_COLUMNS = ("point_id", "impl", "pass", "causal", "dtype", "B", "H", "N", "D", "M", "seed", "device")


def base_row(point: Point) -> dict[str, Any]:
    """The identity columns of ``point``'s row."""
    m = point.as_mapping()
    row = {k: m[k] for k in POINT_COLUMNS}
    row.update({k: m[k] for k in ("P", "T") if k in m})  # decode points only
    row["impl_params"] = json.dumps(dict(point.params), sort_keys=True)
    return row


def _lost(res: procs.ChildResult, timeout_s: float) -> dict[str, Any]:
    """The row of a worker that sent nothing: why it is gone."""
    code = res.exitcode
    if res.timed_out:
        return {"status": Status.TIMEOUT.value, "error": f"no result within the {timeout_s:g} s timeout; worker killed"}
    if code == -signal.SIGKILL:
        return {
            "status": Status.CRASHED.value,
            "error": "worker killed by SIGKILL (the kernel's OOM killer is the usual cause; check dmesg)",
        }
    if code is not None and code < 0:
        return {"status": Status.CRASHED.value, "error": f"worker died from {procs.signal_name(code)}"}
    if res.server_lost:
        return {
            "status": Status.CRASHED.value,
            "error": "the fork server died while the worker ran (and took it along)",
        }
    return {"status": Status.CRASHED.value, "error": f"worker exited with code {code} without a result"}


def run_one(point: Point, options: RunOptions) -> Record:
    """Measure one point in a fresh worker; always returns a record, whatever happened.

    The worker sends its timing before its correctness check; a check that then outlives
    ``check_timeout_s`` (or crashes) leaves the timing with an unknown verdict, not a lost point.
    """
    timing = options.timing
    for _try in range(SERVER_LOST_TRIES):
        res = procs.run_child(
            "attnbench.runner.worker:main",
            (point, options),
            timing.timeout_s,
            is_final=lambda msg: bool(getattr(msg, "final", True)),
            extend_s=lambda _msg: timing.check_timeout_s,
        )
        if not res.server_lost:
            break
        signals.check()  # the server died of the signal that stops the run
        procs.restart_forkserver()
    final = [m for m in res.messages if getattr(m, "final", True)]
    if final:
        record: Record = final[-1]
    elif res.messages:  # the timing came, the check did not finish
        record = res.messages[-1]
        why = (
            f"the check did not finish within {timing.check_timeout_s:g} s; worker killed"
            if res.timed_out
            else f"the worker died during the check ({_lost(res, timing.check_timeout_s)['error']})"
        )
        record.row.update(correct=None, correctness_error=f"check could not run: {why}")
        record.final = True
    else:
        record = Record(_lost(res, timing.timeout_s))
    record.row.setdefault("wall_s", res.elapsed_s)
    return record


def plan_rounds(points: list[Point], rounds: int, done: set[tuple[str, int]]) -> list[tuple[Point, int]]:
    """(point, round) pairs still to run: round by round, every point in each round, so that a
    machine state that lasts a while (another job, a clock change) touches every point alike.
    A skipped point needs one round only."""
    return [(p, r) for r in range(rounds) for p in points if (p.point_id, r) not in done and not (r > 0 and p.skip)]


def wants_round(rnd: int, first_round_s: float | None, max_s: float | None) -> bool:
    """Whether round ``rnd`` of a point runs, given its first round's wall time (None: not run
    yet; ``inf``: it was skipped, e.g. its impl cannot run here): later rounds only while that
    was under ``[timing] extra_rounds_max_s`` (None: always, unless skipped)."""
    if rnd == 0 or first_round_s is None:
        return True
    return first_round_s != float("inf") and (max_s is None or first_round_s < max_s)


def _first_s(record: Record) -> float:
    """A first round's wall time for :func:`wants_round` (``inf`` when it was skipped)."""
    if record.status is Status.SKIPPED:
        return float("inf")
    return float(record.row.get("wall_s") or 0.0)


def run_points(
    run_dir: RunDir,
    todo: list[tuple[Point, int]],
    options: RunOptions,
    on_done: Callable[[Record], None] | None = None,
    on_start: Callable[[Point, int], None] | None = None,
    *,
    columns: Mapping[str, Any] | None = None,
    write: Callable[[Record], None] | None = None,
) -> list[Record]:
    """Run each (point, round) of ``todo`` in a fresh worker (points with ``skip`` set become
    skipped rows without one), append each record to the journal at once and call
    ``on_done(record)``. Later rounds of a long point are left out (:func:`wants_round`).
    Returns the records. ``columns`` (where the point ran: host, device) are added to every row;
    ``write`` replaces the append to the run's journal (a Slurm shard writes its own journal)."""
    records = []
    last_round: int | None = None
    max_s = options.timing.extra_rounds_max_s
    first_s = {r.point_id: _first_s(r) for r in journal.load(run_dir) if r.round == 0}
    for point, rnd in todo:
        if not wants_round(rnd, first_s.get(point.point_id), max_s):
            continue
        if last_round is not None and rnd != last_round:
            procs.restart_forkserver()
        last_round = rnd
        if on_start is not None:
            on_start(point, rnd)
        if point.skip:
            record = Record({"status": Status.SKIPPED.value, "error": point.skip})
        else:
            record = run_one(point, options)
        record.row = {**base_row(point), "round": rnd, **(columns or {}), **record.row}
        signals.check()  # a stop signal arrived: this worker may have died of it, keep it out
        with signals.critical():  # a signal during the append is raised once the line is whole
            if write is not None:
                write(record)
            else:
                journal.append(run_dir, record)
        if rnd == 0:
            first_s[point.point_id] = _first_s(record)
        records.append(record)
        if on_done is not None:
            on_done(record)
    return records
