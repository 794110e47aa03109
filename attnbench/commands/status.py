"""`attnbench status`: how far a run is, and for a Slurm run each shard and its job's state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attnbench.commands._common import user_errors
from attnbench.text import terminal_safe


@user_errors
def status(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `attnbench run`.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON on stdout.")] = False,
) -> None:
    """Show a run's progress: (point, round) pairs done by status and missing; for a Slurm run,
    each shard with its Slurm state, its own state, its host and its pairs journaled."""
    from rich.console import Console  # deferred: start-up time
    from rich.table import Table

    from attnbench.runner.executors.status import collect  # deferred: pandas via results/

    st = collect(run_dir)
    if as_json:
        print(json.dumps(st.to_json(), indent=1))
        return
    counts = ", ".join(f"{k} {v}" for k, v in sorted(st.by_status.items())) or "none yet"
    state = "finished" if st.finished else "not finished"
    console = Console(highlight=False)
    console.print(f"run {terminal_safe(st.run_dir)} ({st.executor} executor, {state})")
    console.print(f"(point, round) pairs: {st.done} of {st.total} done ({counts})")
    if st.in_live_shards:
        console.print(f"running or queued in shards: {st.in_live_shards}")
    if st.missing:
        console.print(f"missing: {st.missing}; `attnbench run --resume {terminal_safe(st.run_dir)}` runs them")
    if not st.shards:
        return
    table = Table(title="shards")
    for col in ("shard", "slurm job", "slurm state", "shard state", "host", "done", "points"):
        table.add_column(col, justify="right" if col in ("done", "points") else "left")
    for s in st.shards:
        table.add_row(
            s.id,
            terminal_safe(s.job_id or "-"),
            terminal_safe(s.slurm_state or "-"),
            s.state or "not started",
            terminal_safe(s.host or "-"),
            f"{s.done}/{s.items}",
            str(s.points),
        )
    console.print(table)
