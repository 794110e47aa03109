"""`attnbench profile`: one point in its own worker under torch.profiler: a trace, the top ops,
the memory over one call, the Nsight command lines and a repro bundle, in their own directory.

Thin: the point comes from :mod:`attnbench.profile.target`, the work from
:mod:`attnbench.profile.driver`; this module prints.
"""

from __future__ import annotations

import sys
import textwrap
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from attnbench.commands._common import user_errors
from attnbench.errors import UserError
from attnbench.fmt import fmt_mib, fmt_ms, fmt_pct
from attnbench.text import terminal_safe

if TYPE_CHECKING:  # torch-free names for the annotations only
    from attnbench.profile.driver import Profiled
    from attnbench.profile.target import Target

EXIT_FAILED = 1
DEFAULT_TIMEOUT_S = 900.0


@user_errors
def profile(
    run_dir: Annotated[
        Path | None,
        typer.Argument(help="A run directory written by `attnbench run` (or profile directly with --impl)."),
    ] = None,
    point_id: Annotated[
        str | None, typer.Argument(help="A point of that run (its point_id in results.parquet).")
    ] = None,
    impl: Annotated[
        str | None, typer.Option(help="Profile this impl directly, without a run (with --set, --pass).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="One value per key, e.g. --set N=4096 (repeatable; with --impl).")
    ] = None,
    pass_: Annotated[
        str | None, typer.Option("--pass", help="fwd, bwd or fwdbwd (with --impl; default fwdbwd).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option(help="An impl keyword, e.g. --param chunk_size=32 (repeatable; with --impl).")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda (with --impl; default auto).")] = None,
    threads: Annotated[
        int | None, typer.Option(help="torch threads (default: the run's; with --impl all cores).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Directory to write (default RUN_DIR/profile/<point>/ or ./profiles/<point>/).")
    ] = None,
    calls: Annotated[int | None, typer.Option(help="Calls to profile (default: about 1 s of calls, 5 to 20).")] = None,
    stack: Annotated[
        bool, typer.Option("--stack/--no-stack", help="Record Python stacks in the trace (slower).")
    ] = False,
    rows: Annotated[int, typer.Option("--top", help="Rows of the printed table (all rows are saved).")] = 15,
    timeout: Annotated[
        float, typer.Option(help="Kill the worker after this many seconds (a compiled impl builds first).")
    ] = DEFAULT_TIMEOUT_S,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on stdout.")] = False,
) -> None:
    """Profile one point: torch.profiler trace, top ops by self time, memory timeline, nsys/ncu
    command lines and a repro bundle. Never touches the run's journal or tables."""
    from attnbench.profile import driver, target  # deferred: torch

    if calls is not None and calls < 1:
        raise UserError(f"--calls {calls}: expected a positive integer")
    if not timeout > 0:
        raise UserError(f"--timeout {timeout}: expected a positive number of seconds")
    tgt = choose(run_dir, point_id, impl, set_ or [], pass_, device, param or [], threads)
    dest = out if out is not None else target.default_out(tgt)
    print(f"profiling {tgt.point.point_id} on {tgt.point.device} ({tgt.options.threads} threads) ...", file=sys.stderr)
    try:
        res = driver.profile(tgt, dest, calls, stack, timeout)
    except driver.PointFailed as exc:
        print(f"failed: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED) from None
    if as_json:
        print((dest / "summary.json").read_text(encoding="utf-8"))
        return
    print(report(res, rows))


def choose(
    run_dir: Path | None,
    point_id: str | None,
    impl: str | None,
    sets: list[str],
    pass_: str | None,
    device: str | None,
    params: list[str],
    threads: int | None,
) -> Target:
    """The target: ``RUN_DIR POINT_ID`` or ``--impl ...``, never both (one-line errors)."""
    from attnbench.profile import target  # deferred: torch, pandas

    if impl is not None:
        if run_dir is not None:
            raise UserError(
                f"RUN_DIR {str(run_dir)!r} and --impl {impl!r}: give a run's point (RUN_DIR POINT_ID) or --impl, not both"
            )
        return target.from_options(impl, sets, pass_, device, params, threads)
    direct = [name for name, v in (("--set", sets), ("--pass", pass_), ("--param", params), ("--device", device)) if v]
    if run_dir is None:
        raise UserError(
            "expected RUN_DIR POINT_ID, or --impl NAME --set N=... (e.g. --impl linear-chunked --set N=4096)"
        )
    if point_id is None:
        raise UserError(f"POINT_ID: missing after RUN_DIR {str(run_dir)!r}; expected one of the run's point ids")
    if direct:
        raise UserError(f"{direct[0]}: only with --impl; a run's point keeps the run's settings")
    tgt = target.from_run(run_dir, point_id)
    if threads is not None:
        if threads < 1:
            raise UserError(f"--threads {threads}: expected a positive integer")
        tgt.options = replace(tgt.options, threads=threads)
    return tgt


def report(res: Profiled, limit: int) -> str:
    """What the command prints: the times, the table, memory, the files and the commands."""
    from attnbench.profile import top  # deferred: torch

    data, point = res.data, res.target.point
    m, prof = data["measured"], data["profiled"]
    run_ms = res.target.row.get("time_ms_median")
    lines = [f"profile  {terminal_safe(point.point_id)}"]
    where = f"on {point.device}, {data['threads']} thread{'s' if data['threads'] != 1 else ''}"
    lines.append(f"measured {fmt_ms(m['median_ms'])} per call, median of {m['samples']} without the profiler ({where})")
    if run_ms:
        lines.append(f"run      {fmt_ms(run_ms)} per call, as stored in {terminal_safe(res.target.run_dir)}")
    block = prof.get("unprofiled_block", 1)
    lines.append(f"profiled {prof['calls']} calls, {fmt_ms(prof['call_ms_median'])} per call (median)")
    each = f"{block} unprofiled call{'s' if block != 1 else ''} each"
    lines.append(f"beside   {each}: {fmt_ms(res.beside_ms)} per call (median)")
    kind = "kernel" if point.device == "cuda" else "self"
    pct = fmt_pct(100 * res.self_sum_ms / res.beside_ms if res.beside_ms else None)
    lines.append(f"table    {kind} times sum to {fmt_ms(res.self_sum_ms)} per call, {pct} of the unprofiled calls")
    lines += ["", top.render(res.rows, point.device, limit), ""]
    mem = data["memory"]
    peak = (
        f"memory   peak {fmt_mib(mem['peak_mib'])} beyond the inputs at {fmt_ms(mem['peak_at_ms'])} ({mem['source']})"
    )
    lines.append(peak)
    if mem.get("during"):
        during = "during " + terminal_safe(" > ".join(mem["during"]))
        lines += textwrap.wrap(during, 80, initial_indent=" " * 9, subsequent_indent=" " * 11, break_on_hyphens=False)
    lines.append("")
    for name, path in res.files.items():
        lines.append(f"{name + ':':<17}{terminal_safe(path)}")
    lines += ["", f"nsys: {res.commands.nsys}"]
    lines.append(
        f"ncu:  {res.commands.ncu}" if res.commands.ncu else f"ncu:  not for this point ({res.commands.why_no_ncu})"
    )
    lines.append(f"repro: python {terminal_safe(res.files['repro'])}")
    return "\n".join(lines)
