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
from attnbench.text import terminal_safe

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
) -> None:
    """Run a benchmark suite: every point in its own worker, journaled as it finishes."""
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
    from attnbench.results.layout import StorageError
    from attnbench.runner import signals

    with signals.stoppable():  # Ctrl-C, SIGTERM, SIGHUP: stop, keep what is finished, exit 128 + signal
        session = None
        try:
            session = start(request, resume, on_event=_event)
            session.prepare()
            try:
                interrupted = _sweep(session)
            except StorageError as exc:  # the journal could not be written: stop, keep what is stored
                raise session.failed(exc) from None
            df = session.finalize(interrupted)
            if not interrupted:
                signals.check()  # a signal while the tables were written: stop before the report
            if report and not interrupted:
                _write_report(session.run_dir.path)
            _print_summary(df, session.run_dir.path, as_json)
        except KeyboardInterrupt:  # before the sweep (nothing measured) or while reporting (all stored)
            where = "" if session is None else f"; what finished is stored in {session.run_dir}"
            if session is not None:
                session.close()
            print(f"interrupted ({_signal_name(signals.exit_code())}){where}", file=sys.stderr)
            raise typer.Exit(signals.exit_code()) from None
    if interrupted:
        print(
            f"interrupted ({_signal_name(signals.exit_code())}): {len(df)} of {len(session.points)} points are "
            f"stored in {session.run_dir}; continue with: attnbench run --resume {session.run_dir}",
            file=sys.stderr,
        )
        raise typer.Exit(signals.exit_code(EXIT_INTERRUPTED))
    if strict and _failed(df):
        raise typer.Exit(1)


def _signal_name(code: int) -> str:
    import signal

    try:
        return signal.Signals(code - 128).name
    except ValueError:
        return "Ctrl-C"


def _failed(df: Any) -> int:
    """Points that failed: a failed status (error, oom, timeout, crashed) or a wrong result."""
    return int((df["status"].isin(FAILED_STATUS_NAMES) | (df["correct"] == False)).sum())  # noqa: E712


def _event(msg: str) -> None:
    print(terminal_safe(msg), file=sys.stderr)  # may quote a plugin's name or exception text


def _write_report(run_dir: Path) -> None:
    from attnbench.report import build  # deferred: pandas, seaborn

    try:
        written = build(run_dir)
    except UserError as exc:  # the results are stored; a report can be made later
        print(f"report not written: {terminal_safe(exc)}", file=sys.stderr)
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
        name = escape(terminal_safe(session.run_dir.name))  # --out may hold rich markup or escapes
        task = progress.add_task(name, total=total, completed=total - len(todo), last="")

        def on_done(rec: Any) -> None:
            row = rec.row
            pid = escape(terminal_safe(row["point_id"])[:70])  # a plugin's name: text, not markup
            if row["status"] == "ok":
                mark = " [red]INCORRECT[/]" if row.get("correct") is False else ""
                msg = f"{pid}: {row.get('time_ms_median', float('nan')):.3g} ms{mark}"
            else:
                msg = f"{pid}: {escape(terminal_safe(row['status']))}"
            progress.update(task, advance=1, last=msg)

        return bool(session.sweep(on_done=on_done))


def _print_summary(df: Any, run_dir: Path, as_json: bool) -> None:
    if as_json:
        records = json.loads(df.to_json(orient="records"))
        print(json.dumps({"run_dir": str(run_dir), "points": records}, indent=1))
        return
    from attnbench.commands.summary import print_summary  # deferred: rich tables

    print_summary(df, run_dir)
