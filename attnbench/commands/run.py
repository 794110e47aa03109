"""`attnbench run`: expand a suite, measure every point in worker processes, store results.

Thin: options become a :class:`attnbench.runner.session.RunRequest`; the session owns the run.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from attnbench.commands._common import DEVICE_METAVAR, safe, split_list, user_errors
from attnbench.errors import UserError
from attnbench.fmt import fmt_ms
from attnbench.history import ingest
from attnbench.impls import file_impls, registry
from attnbench.point import DTYPE_NAMES, FAILED_STATUS_NAMES
from attnbench.runner import signals
from attnbench.text import terminal_safe

EXIT_INTERRUPTED = 130
EXIT_NOISY = 3  # --strict-noise: noisy numbers and nothing worse (as compare's inconclusive)


@user_errors
def run(
    suite: Annotated[
        str | None,
        typer.Option("--suite", "-s", help="Suite name (see `attnbench list`) or a .toml path.", show_default="seqlen"),
    ] = None,
    impl: Annotated[
        list[str] | None,
        typer.Option(
            help="Only these impls (repeat or comma-separate); path/to/file.py:function adds a function "
            "from a file without packaging it.",
            show_default="the suite's",
        ),
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a parameter axis, e.g. --set N=1024,2048 (repeatable).")
    ] = None,
    device: Annotated[
        str | None, typer.Option(metavar=DEVICE_METAVAR, help="auto: CUDA if visible, else CPU.", show_default="auto")
    ] = None,
    dtype: Annotated[
        list[str] | None,
        typer.Option(help=f"Only these dtypes: {', '.join(DTYPE_NAMES)}.", show_default="the suite's"),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory to create.", show_default="runs/SUITE-TIMESTAMP")
    ] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted run with its own options: run only its missing points.")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads per worker.", show_default="the suite's, else all cores")
    ] = None,
    max_time: Annotated[
        float | None, typer.Option(help="Sampling time cap per point, seconds.", show_default="the suite's")
    ] = None,
    rounds: Annotated[
        int | None,
        typer.Option(
            help="Worker processes per point, interleaved over the sweep; samples are pooled.",
            show_default="the suite's",
        ),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Kill a point's worker after this many seconds.", show_default="the suite's")
    ] = None,
    report: Annotated[bool, typer.Option(help="Write the Markdown and HTML report when done.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    strict: Annotated[
        bool,
        typer.Option(help="Exit 1 if any point errored, ran out of memory, crashed, timed out or failed correctness."),
    ] = False,
    strict_noise: Annotated[
        bool,
        typer.Option(
            help="As --strict, and exit 3 if any number is noisy (≈: did not converge, too few samples, "
            "or other processes busy on the CPU while it was timed)."
        ),
    ] = False,
    cuda_graph: Annotated[
        bool | None,
        typer.Option("--cuda-graph/--no-cuda-graph", help="CUDA: time CUDA-graph replays (hides launch overhead)."),
    ] = None,
    l2_flush: Annotated[
        bool | None,
        typer.Option("--l2-flush/--no-l2-flush", help="CUDA: flush L2 before each sample.", show_default="on"),
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
    from attnbench.runner.executors import ExecutorRequest, choose  # deferred: pydantic
    from attnbench.runner.session import RunRequest, start  # deferred: torch, pandas

    names, files = [], []
    for value in split_list(impl):
        if file_impls.is_file_impl(value):  # path/to/file.py:function, registered here and in every worker
            names.append(file_impls.load_file_impl(value).name)
            path, _, func = value.rpartition(":")
            files.append(f"{Path(path).resolve()}:{func}")
        else:
            names.append(value)
    request = RunRequest(
        suite=suite,
        impls=tuple(names),
        impl_files=tuple(files),
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
    from attnbench.results.layout import StorageError  # deferred: pandas

    with signals.stoppable():  # Ctrl-C, SIGTERM, SIGHUP: stop, keep what is finished, exit 128 + signal
        session = None
        try:
            where = choose(ExecutorRequest(executor, gpus, slurm, slurm_config, wait), resume, device)
            session = start(request, resume, on_event=_event, remote=where.remote_device if where.remote else None)
            session.executor = where.build(session)
            session.prepare()
            try:
                interrupted = _sweep(session)
            except StorageError as exc:  # the journal could not be written: stop, keep what is stored
                raise session.failed(exc) from None
            if session.executor.detached:
                session.close()
                print(
                    f"submitted; follow with: attnbench status {session.run_dir}; once the shards end, "
                    f"attnbench run --resume {session.run_dir} collects them, re-submits what is missing "
                    "and writes the report",
                    file=sys.stderr,
                )
                return
            df = session.finalize(interrupted)
            if not interrupted:
                signals.check()  # a signal while the tables were written: stop before the report
            if report and not interrupted:
                _write_report(session.run_dir.path)
            _print_summary(df, session.run_dir.path, as_json)
            if history and not interrupted:
                print(str(ingest(session.run_dir.path)), file=sys.stderr)
        except KeyboardInterrupt:  # before the sweep (nothing measured) or while reporting (all stored)
            with signals.deferred():  # a second Ctrl-C while we say so is noted, not a traceback
                where_ = (
                    ""
                    if session is None
                    else f"; what finished is stored in {session.run_dir}; "
                    f"continue with: attnbench run --resume {session.run_dir}"
                )
                if session is not None:
                    session.close()
                print(f"interrupted ({_signal_name(signals.exit_code())}){where_}", file=sys.stderr)
                raise typer.Exit(signals.exit_code()) from None
    if interrupted:
        print(
            f"interrupted ({_signal_name(signals.exit_code())}): {len(df)} of {len(session.points)} points are "
            f"stored in {session.run_dir}; continue with: attnbench run --resume {session.run_dir}",
            file=sys.stderr,
        )
        raise typer.Exit(signals.exit_code(EXIT_INTERRUPTED))
    code = strict_exit(df, session.meta, strict, strict_noise)
    if code:
        raise typer.Exit(code)


def _signal_name(code: int) -> str:
    try:
        return signal.Signals(code - 128).name
    except ValueError:
        return "Ctrl-C"


def _failed(df: Any) -> int:
    """Points that failed: a failed status (error, oom, timeout, crashed) or a wrong result."""
    return int((df["status"].isin(FAILED_STATUS_NAMES) | (df["correct"] == False)).sum())  # noqa: E712


def strict_exit(df: Any, meta: dict[str, Any], strict: bool, strict_noise: bool) -> int:
    """The exit code --strict and --strict-noise ask for: 1 when a point failed, else 3 (with
    --strict-noise) when a number is noisy, else 0; the reason goes to stderr."""
    if not (strict or strict_noise):
        return 0
    failed = _failed(df)
    if failed:
        print(f"strict: {failed} of {len(df)} points failed (listed above)", file=sys.stderr)
        return 1
    if strict_noise:
        from attnbench.report.frame import noisy  # deferred: pandas

        n = int(noisy(df, meta).sum())
        if n:
            measured = int((df["status"] == "ok").sum())
            print(
                f"strict-noise: {n} of {measured} measured points are noisy (marked ≈ above); "
                "rerun on a quieter machine, or with more --max-time",
                file=sys.stderr,
            )
            return EXIT_NOISY
    return 0


def _event(msg: str) -> None:
    print(terminal_safe(msg), file=sys.stderr)  # may quote a plugin's name or exception text


def _write_report(run_dir: Path) -> None:
    from attnbench.report import build  # deferred: pandas, seaborn

    try:
        written = build(run_dir, svg=False)  # PNG only: SVGs cost a third of the report's time
    except UserError as exc:  # the results are stored; a report can be made later
        print(f"report not written: {terminal_safe(exc)}", file=sys.stderr)
        return
    print(
        f"report: {written.get('html')} and {written.get('md')} (SVG charts: attnbench report {run_dir})",
        file=sys.stderr,
    )


def point_label(point: Any, rnd: int, rounds: int) -> str:
    """``sdpa fwdbwd N=2048`` (``round 2/3`` added when the run has rounds): the point now
    running, short enough for an 80-column progress line."""
    label = f"{point.impl} {point.pass_} N={point.N}"
    if point.P is not None:
        label += f" P={point.P} T={point.T}"
    if not point.causal:
        label += " full"
    if point.dtype.value != "float32":
        label += f" {point.dtype.short}"
    return label + (f" round {rnd + 1}/{rounds}" if rounds > 1 else "")


def _sweep(session: Any) -> bool:
    """Run what is missing under a progress line (counter, bar, time left, the point now
    running); failures are printed above it as they happen. True if interrupted by Ctrl-C."""
    from rich.console import Console  # deferred: start-up time
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn
    from rich.text import Text

    from attnbench.runner.request import RUNS_ROOT  # deferred: pandas
    from attnbench.suite.duration import Eta, estimate_pairs, history  # deferred: pydantic

    todo, total = session.todo()
    timing = session.options.timing
    impls = {p.impl for p, _ in todo if p.pass_ != "decode"}
    unavailable = frozenset(i for i in impls if _unavailable(registry, i, session.options.device))
    eta = Eta(estimate_pairs(todo, timing, history(RUNS_ROOT, session.options.device), unavailable))
    order = [(p.point_id, r) for p, r in todo]
    now0 = time.monotonic()
    state = {"eta": eta.seconds(), "at": now0, "started": now0, "first": now0}
    console = Console(stderr=True)

    class TimeLeft(ProgressColumn):
        def render(self, task: Any) -> Text:
            left = max(state["eta"] - (time.monotonic() - state["at"]), 0.0)
            return Text(f"{int(left // 60)}:{int(left % 60):02d} left", style="cyan")

    progress = Progress(
        MofNCompleteColumn(),
        BarColumn(bar_width=12),
        TimeLeft(),
        TextColumn("{task.fields[now]}", markup=False),
        console=console,
        transient=False,
        refresh_per_second=2,  # the parent's display thread wakes rarely: it shares the cores with the worker
    )
    plain = not console.is_terminal  # a log (CI): one line per finished point instead of a live line
    with progress:
        task = progress.add_task("sweep", total=total, completed=total - len(todo), now="", visible=not plain)

        def on_start(point: Any, rnd: int) -> None:
            eta.skip_to(point.point_id, rnd, order)
            state.update(started=time.monotonic(), eta=eta.seconds(), at=time.monotonic())
            done = order.index((point.point_id, rnd)) if (point.point_id, rnd) in order else 0
            now = terminal_safe(point_label(point, rnd, timing.rounds))  # shown without markup
            progress.update(task, completed=total - len(todo) + done, now=now)

        def on_done(rec: Any) -> None:
            row = rec.row
            eta.done(rec.point_id, rec.round, time.monotonic() - state["started"])
            state.update(eta=eta.seconds(), at=time.monotonic())
            progress.advance(task)
            failed = row["status"] in FAILED_STATUS_NAMES or row.get("correct") is False
            if failed:  # the point's full identity and why, above the progress line
                what = "INCORRECT" if row["status"] == "ok" else row["status"]
                why = row.get("error") if row["status"] != "ok" else row.get("correctness_error")
                line = f"{safe(row['point_id'])} round {rec.round + 1}: {safe(what)}: {safe(why)}"
                progress.console.print(line, style="red", highlight=False)
            elif plain and row["status"] == "ok":
                n, now = int(progress.tasks[0].completed), progress.tasks[0].fields.get("now", "")
                line = f"[{n}/{total}] {safe(now)}: {fmt_ms(row.get('time_ms_median'))}"
                progress.console.print(line, highlight=False)

        interrupted = bool(session.sweep(on_done=on_done, on_start=on_start))
        if not interrupted:
            progress.update(task, completed=total, now=f"done in {_minutes(time.monotonic() - state['first'])}")
    return interrupted


def _unavailable(registry: Any, name: str, device: str) -> bool:
    try:
        return registry.get(name).unavailable_reason(device) is not None
    except UserError:
        return True


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _print_summary(df: Any, run_dir: Path, as_json: bool) -> None:
    if as_json:
        records = json.loads(df.to_json(orient="records"))
        print(json.dumps({"run_dir": str(run_dir), "points": records}, indent=1))
        return
    from attnbench.commands.summary import print_summary  # deferred: rich tables

    print_summary(df, run_dir)
