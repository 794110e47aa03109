"""`attnbench run`: expand a suite, measure every point in worker processes, store results.

Thin: options become a :class:`attnbench.runner.session.RunRequest`; the session owns the run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from attnbench.commands._common import split_list, user_errors
from attnbench.errors import UserError
from attnbench.point import FAILED_STATUS_NAMES

EXIT_INTERRUPTED = 130


@user_errors
def run(
    suite: Annotated[
        str | None,
        typer.Option("--suite", "-s", help="Suite name (see `attnbench list`) or a .toml path [default: seqlen]."),
    ] = None,
    impl: Annotated[list[str] | None, typer.Option(help="Only these impls (repeat or comma-separate).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a parameter axis, e.g. --set N=1024,2048 (repeatable).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto (CUDA if visible, else CPU), cpu or cuda [default: auto].")
    ] = None,
    dtype: Annotated[list[str] | None, typer.Option(help="Only these dtypes (float32, bfloat16, ...).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory to create (default runs/SUITE-TIMESTAMP).")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted run with its own options: run only its missing points.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads per worker (default: the suite's, else all cores).")
    ] = None,
    max_time: Annotated[
        float | None, typer.Option(help="Sampling time cap per point, seconds (default: the suite's).")
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            help="Worker processes per point, interleaved over the sweep; samples are pooled (default: the suite's)."
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Kill a point's worker after this many seconds (default: the suite's).")
    ] = None,
    report: Annotated[bool, typer.Option(help="Write the Markdown and HTML report when done.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    strict: Annotated[
        bool,
        typer.Option(help="Exit 1 if any point errored, ran out of memory, crashed, timed out or failed correctness."),
    ] = False,
    cuda_graph: Annotated[
        bool | None,
        typer.Option("--cuda-graph/--no-cuda-graph", help="CUDA: time CUDA-graph replays (hides launch overhead)."),
    ] = None,
    l2_flush: Annotated[
        bool | None, typer.Option("--l2-flush/--no-l2-flush", help="CUDA: flush L2 before each sample [default: on].")
    ] = None,
    history: Annotated[
        bool,
        typer.Option(
            help="Add the finished run to the history database (see `attnbench history`; needs attnbench[history])."
        ),
    ] = False,
    executor: Annotated[
        str | None,
        typer.Option(
            help="local (this machine) or slurm (shards as a Slurm job array) [default: local, or the run's]."
        ),
    ] = None,
    gpus: Annotated[
        str | None, typer.Option(help="local, CUDA: one point per GPU at a time on N GPUs (or all), pinned by UUID.")
    ] = None,
    slurm_partition: Annotated[str | None, typer.Option(help="slurm: the partition to submit to.")] = None,
    slurm_gpus_per_node: Annotated[int | None, typer.Option(help="slurm: GPUs per shard (0: CPU points).")] = None,
    slurm_time: Annotated[
        str | None, typer.Option(help="slurm: time limit per shard, minutes or [D-]HH:MM:SS.")
    ] = None,
    slurm_array_parallelism: Annotated[int | None, typer.Option(help="slurm: shards running at once.")] = None,
    slurm_shards: Annotated[int | None, typer.Option(help="slurm: shards to split the missing points into.")] = None,
    slurm_cpus_per_task: Annotated[int | None, typer.Option(help="slurm: CPUs per shard.")] = None,
    slurm_config: Annotated[
        Path | None, typer.Option(help="slurm: a TOML file with a [slurm] table (see docs/cluster.md).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="slurm: wait for the shards, or return once they are submitted.")
    ] = True,
) -> None:
    """Run a benchmark suite: every point in its own worker, journaled as it finishes."""
    from attnbench.runner.executors import ExecutorRequest, choose
    from attnbench.runner.session import RunRequest, start  # deferred: torch, pandas

    request = RunRequest(
        suite=suite,
        impls=tuple(split_list(impl)),
        sets=tuple(set_ or ()),
        device=device,
        dtypes=tuple(split_list(dtype)),
        out=None if out is None else str(out),
        threads=threads,
        max_time=max_time,
        rounds=rounds,
        timeout=timeout,
        cuda_graph=cuda_graph,
        l2_flush=l2_flush,
    )
    slurm = {
        "partition": slurm_partition,
        "gpus_per_node": slurm_gpus_per_node,
        "time": slurm_time,
        "array_parallelism": slurm_array_parallelism,
        "shards": slurm_shards,
        "cpus_per_task": slurm_cpus_per_task,
    }
    where = choose(ExecutorRequest(executor, gpus, slurm, slurm_config, wait), resume, device)
    session = start(request, resume, on_event=_event, remote=where.remote_device if where.remote else None)
    session.executor = where.build(session)
    session.prepare()
    interrupted = _sweep(session)
    if session.executor.detached:
        print(
            f"submitted; follow with: attnbench status {session.run_dir}; once the shards end, "
            f"attnbench run --resume {session.run_dir} collects them, re-submits what is missing and writes the report",
            file=sys.stderr,
        )
        return
    df = session.finalize(interrupted)
    if report and not interrupted:
        _write_report(session.run_dir.path)
    _print_summary(df, session.run_dir.path, as_json)
    if history and not interrupted:
        from attnbench.history import ingest  # deferred: duckdb

        print(str(ingest(session.run_dir.path)), file=sys.stderr)
    if interrupted:
        print(
            f"interrupted: {len(df)} of {len(session.points)} points are stored in {session.run_dir}; "
            f"continue with: attnbench run --resume {session.run_dir}",
            file=sys.stderr,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if strict and _failed(df):
        raise typer.Exit(1)


def _failed(df: Any) -> int:
    """Points that failed: a failed status (error, oom, timeout, crashed) or a wrong result."""
    return int((df["status"].isin(FAILED_STATUS_NAMES) | (df["correct"] == False)).sum())  # noqa: E712


def _event(msg: str) -> None:
    print(msg, file=sys.stderr)


def _write_report(run_dir: Path) -> None:
    from attnbench.report import build  # deferred: pandas, seaborn

    try:
        written = build(run_dir)
    except UserError as exc:  # the results are stored; a report can be made later
        print(f"report not written: {exc}", file=sys.stderr)
        return
    print(f"report: {written.get('html')} and {written.get('md')}", file=sys.stderr)


def _sweep(session: Any) -> bool:
    """Run what is missing under a progress bar; True if interrupted by Ctrl-C."""
    from rich.console import Console  # deferred: start-up time
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    todo, total = session.todo()
    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(session.run_dir.name, total=total, completed=total - len(todo), last="")

        def on_done(rec: Any) -> None:
            row = rec.row
            if row["status"] == "ok":
                mark = " [red]INCORRECT[/]" if row.get("correct") is False else ""
                msg = f"{row['point_id']}: {row.get('time_ms_median', float('nan')):.3g} ms{mark}"
            else:
                msg = f"{row['point_id']}: {row['status']}"
            progress.update(task, advance=1, last=escape(msg)[:90])

        return bool(session.sweep(on_done=on_done))


def _print_summary(df: Any, run_dir: Path, as_json: bool) -> None:
    if as_json:
        records = json.loads(df.to_json(orient="records"))
        print(json.dumps({"run_dir": str(run_dir), "points": records}, indent=1))
        return
    from attnbench.commands.summary import print_summary  # deferred: rich tables

    print_summary(df, run_dir)
