"""Run a list of points, each in its own worker process, journaling every finished one.

Workers are forked from a fork server that has torch imported already, so a point costs a
fork, not an interpreter start, and still gets a clean process: a crash, an OOM kill or a
hang becomes that point's row (status crashed, oom or timeout) and the sweep goes on.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnbench.runner import journal

POINT_COLUMNS = ("point_id", "impl", "pass", "causal", "dtype", "B", "H", "N", "D", "M", "seed", "device")

_ctx: Any = None


def _context() -> Any:
    global _ctx
    if _ctx is None:
        _ctx = mp.get_context("forkserver")
        _ctx.set_forkserver_preload(["attnbench.runner.worker"])
    return _ctx


def restart_forkserver() -> None:
    """Start a fresh fork server for the next worker. Every worker forked from one server shares
    its memory layout; a layout that happens to be slow for one point (a whole run of linear-
    chunked fwd at 2-3x, all of its rounds alike) is then one draw per run. A server per round
    makes it one draw per round, which the pooled samples show as spread."""
    import multiprocessing.forkserver as fs

    stop = getattr(fs._forkserver, "_stop", None)  # private, present since Python 3.8
    if stop is not None:
        stop()


def base_row(point: dict[str, Any]) -> dict[str, Any]:
    row = {k: point[k] for k in POINT_COLUMNS}
    row.update({k: point[k] for k in ("P", "T") if k in point})  # decode points only
    row["impl_params"] = json.dumps(point.get("params", {}), sort_keys=True)
    return row


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def run_one(point: dict[str, Any], options: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    """Measure one point in a fresh worker; always returns a record, whatever happened."""
    ctx = _context()
    from attnbench.runner import worker

    recv_conn, send_conn = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=worker.main, args=(point, options, send_conn), daemon=True)
    started = time.perf_counter()
    proc.start()
    send_conn.close()
    record: dict[str, Any] | None = None
    try:
        if recv_conn.poll(timeout_s):
            try:
                record = recv_conn.recv()
            except EOFError:
                record = None
        proc.join(timeout=10)
    except BaseException:
        proc.kill()
        proc.join()
        raise
    finally:
        recv_conn.close()
    if proc.is_alive():
        proc.kill()
        proc.join()
    if record is None:
        code = proc.exitcode
        if code is None or (time.perf_counter() - started) >= timeout_s:
            row = {"status": "timeout", "error": f"no result within the {timeout_s:g} s timeout; worker killed"}
        elif code == -signal.SIGKILL:
            row = {"status": "oom", "error": "worker killed by SIGKILL (most likely the kernel's OOM killer)"}
        elif code < 0:
            row = {"status": "crashed", "error": f"worker died from {_signal_name(code)}"}
        else:
            row = {"status": "crashed", "error": f"worker exited with code {code} without a result"}
        record = {"row": row, "samples": []}
    record["row"].setdefault("wall_s", time.perf_counter() - started)
    return record


def plan_rounds(
    points: list[dict[str, Any]], rounds: int, done: set[tuple[str, int]]
) -> list[tuple[dict[str, Any], int]]:
    """(point, round) pairs still to run: round by round, every point in each round, so that a
    machine state that lasts a while (another job, a clock change) touches every point alike.
    A skipped point needs one round only."""
    return [
        (p, r)
        for r in range(rounds)
        for p in points
        if (p["point_id"], r) not in done and not (r > 0 and p.get("skip"))
    ]


def run_points(
    run_dir: Path,
    todo: list[tuple[dict[str, Any], int]],
    options: dict[str, Any],
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run each (point, round) of ``todo`` in a fresh worker (points with ``skip`` set become
    skipped rows without one), append each record to the journal at once and call
    ``on_done(record)``. Returns the records."""
    timeout_s = float(options.get("timing", {}).get("timeout_s", 300.0))
    records = []
    last_round: int | None = None
    for point, rnd in todo:
        if last_round is not None and rnd != last_round:
            restart_forkserver()
        last_round = rnd
        if point.get("skip"):
            record: dict[str, Any] = {"row": {"status": "skipped", "error": point["skip"]}, "samples": []}
        else:
            record = run_one(point, options, timeout_s)
        record["row"] = {**base_row(point), "round": rnd, **record["row"]}
        journal.append(run_dir, record)
        records.append(record)
        if on_done is not None:
            on_done(record)
    return records
