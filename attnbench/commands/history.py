"""`attnbench history add|show|check|report`: every run remembered (docs/history.md)."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from attnbench.commands._common import split_list, user_errors
from attnbench.errors import UserError

history_app = typer.Typer(
    help="Run history in an embedded database: ingest runs, show series, find change points, gate on drifts.",
    no_args_is_help=True,
)

DEFAULT_WINDOW = 100

DbOpt = Annotated[
    Path | None,
    typer.Option(
        "--db", help="History database (default $ATTNBENCH_HISTORY, else ~/.local/share/attnbench/history.duckdb)."
    ),
]
SuiteOpt = Annotated[str | None, typer.Option(help="Only this suite's series.")]
PointOpt = Annotated[str | None, typer.Option(help="Only this point_id (a glob such as 'softmax/fwd/*' works).")]
ImplOpt = Annotated[list[str] | None, typer.Option(help="Only these impls (repeat or comma-separate).")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Only points with these values, e.g. --set N=512 (repeatable).")
]
SinceOpt = Annotated[str | None, typer.Option(help="Only runs started on or after this ISO date/time.")]
BranchOpt = Annotated[str | None, typer.Option(help="Only runs recorded on this branch.")]
WindowOpt = Annotated[int, typer.Option(help="Analyse the newest this many runs of each series.")]
ThresholdOpt = Annotated[
    list[str] | None,
    typer.Option("--threshold", "-t", help="Latency threshold(s) replacing the suite's, e.g. latency:10%."),
]
SigOpt = Annotated[float | None, typer.Option(help="Significance level of each change point (default 0.01).")]


def _filters(suite: str | None, point: str | None, impl: list[str] | None, sets: list[str] | None,
             since: str | None, branch: str | None) -> Any:  # fmt: skip
    from attnbench.history.series import Filters  # deferred: pandas
    from attnbench.suite import parse_set  # deferred: pydantic

    f = Filters(suite=suite, point=point, since=since, branch=branch)
    for s in sets or []:
        key, values = parse_set(s)
        f.sets[key] = values
    names = split_list(impl)
    if names:
        f.sets["impl"] = names
    f.where()  # validates the keys now, as a one-line error
    return f


def _params(sig: float | None) -> Any:
    from attnbench.history.changes import Params  # deferred: pandas, pydantic

    p = Params()
    if sig is not None:
        if not 0 < sig < 1:
            raise UserError(f"--sig {sig}: expected a number between 0 and 1")
        p.sig = sig
        p.permutations = max(p.permutations, int(round(2 / sig)) - 1)  # enough permutations to reach the level
    return p


def _window(window: int) -> int:
    if window < 2:
        raise UserError(f"--window {window}: expected at least 2 runs")
    return window


def _load(db: Path | None, filters: Any, window: int, with_counts: bool = False) -> tuple[Any, dict[str, int], str]:
    """The matching series (newest ``window`` runs each), the database's counts if asked for
    (they scan the whole database), and its path."""
    from attnbench.history import series, store  # deferred: pandas (series)

    con = store.connect(db)
    try:
        found = series.load_series(con, filters, window)
        counts = series.counts(con) if with_counts or not found else {}
    finally:
        con.close()
    if not found:
        raise UserError(
            f"no series in {store.resolve(db)} match the filters ({counts['runs']} runs, {counts['series']} series in all)"
        )
    return found, counts, str(store.resolve(db))


def _gate_config(gate: dict[str, Any], thresholds: list[str] | None) -> Any:
    from attnbench.gate import make_config  # deferred: pydantic

    return make_config(gate, split_list(thresholds))


@history_app.command("add")
@user_errors
def add(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories written by `attnbench run`.")],
    db: DbOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was ingested as JSON.")] = False,
) -> None:
    """Ingest run directories (one transaction each; a run already there is left alone)."""
    from attnbench.history.ingestion import ingest_many  # deferred: pandas, pydantic

    done = ingest_many(run_dirs, db)
    if as_json:
        print(json.dumps([asdict(s) for s in done], indent=1))
        return
    for s in done:
        print(s)


@history_app.command("show")
@user_errors
def show(
    db: DbOpt = None,
    suite: SuiteOpt = None,
    point: PointOpt = None,
    impl: ImplOpt = None,
    set_: SetOpt = None,
    since: SinceOpt = None,
    branch: BranchOpt = None,
    last: Annotated[int, typer.Option(help="Show the newest this many runs of each series.")] = 20,
    window: WindowOpt = DEFAULT_WINDOW,
    sig: SigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the series, runs and change points as JSON.")] = False,
) -> None:
    """Print each matching series: its runs (commit, value) and change points."""
    from attnbench.history.changes import analyse  # deferred: pandas, pydantic

    if last < 1:
        raise UserError(f"--last {last}: expected a positive number of runs")
    found, _, _ = _load(db, _filters(suite, point, impl, set_, since, branch), max(_window(window), last))
    params = _params(sig)
    analyses = [analyse(s, params) for s in found]
    if as_json:
        print(json.dumps([_series_json(a, last) for a in analyses], indent=1, default=str))
        return
    _print_series(analyses, last)


def _series_json(a: Any, last: int) -> dict[str, Any]:
    s = a.series
    return {
        "suite": s.suite,
        "point_id": s.point_id,
        "env_key": s.env_key,
        "env": s.env_label,
        "runs": [
            {
                "run_id": r.run_id,
                "started": r.started,
                "commit": r.commit,
                "branch": r.branch,
                "status": r.status,
                "correct": r.correct,
                "value_ms": r.value_ms,
                "median_ms": r.median_ms,
                "peak_mib": r.peak_mib,
            }
            for r in s.runs[-last:]
        ],  # fmt: skip
        "levels_ms": a.levels,
        "change_points": [st.as_dict() for st in a.steps],
    }


def _print_series(analyses: list[Any], last: int) -> None:
    from rich.console import Console  # deferred: start-up time
    from rich.markup import escape
    from rich.table import Table

    from attnbench.history.identity import short_commit  # deferred: pandas

    console = Console(width=None if sys.stdout.isatty() else 160)
    for a in analyses:
        s = a.series
        steps = {st.run_id: st for st in a.steps}
        table = Table(title=escape(s.name), title_justify="left")
        for col, just in (("started", "left"), ("commit", "left"), ("branch", "left"), ("value ms", "right"),
                          ("status", "left"), ("change", "left")):  # fmt: skip
            table.add_column(col, justify=just)  # type: ignore[arg-type]
        for r in s.runs[-last:]:
            st = steps.get(r.run_id)
            change = ""
            if st is not None:
                style = {"regression": "bold red", "improvement": "green"}.get(st.kind, "yellow")
                change = f"[{style}]{escape(st.describe())}[/]"
            status = r.status if r.correct is not False else "incorrect"
            table.add_row(
                r.started.strftime("%Y-%m-%d %H:%M") if r.started else "?",
                escape(short_commit(r.commit)),
                escape(r.branch or ""),
                "" if r.value_ms is None else f"{r.value_ms:.4g}",
                escape(status),
                change,
            )
        console.print(table)
        older = [st for st in a.steps if st.run_id not in {r.run_id for r in s.runs[-last:]}]
        for st in older:
            console.print(f"  earlier change point: {escape(st.describe())}")
        if len(s.runs) > last:
            console.print(f"  ({len(s.runs) - last} older run(s) in the window not shown; --last to see more)")


@history_app.command("check")
@user_errors
def check(
    db: DbOpt = None,
    suite: SuiteOpt = None,
    point: PointOpt = None,
    impl: ImplOpt = None,
    set_: SetOpt = None,
    since: SinceOpt = None,
    branch: BranchOpt = None,
    window: WindowOpt = DEFAULT_WINDOW,
    threshold: ThresholdOpt = None,
    sig: SigOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the findings as JSON.")] = False,
    markdown: Annotated[Path | None, typer.Option(help="Append a Markdown summary to FILE.")] = None,
) -> None:
    """Exit 1 when the newest change point of any series is a regression larger than the suite's
    latency threshold (a run of consecutive regressions counts as one: slow drifts are caught)."""
    from attnbench.history.changes import analyse, gate_finding  # deferred: pandas, pydantic

    found, _, where = _load(db, _filters(suite, point, impl, set_, since, branch), _window(window))
    params = _params(sig)
    findings = []
    for s in found:
        f = gate_finding(analyse(s, params), _gate_config(s.gate, threshold))
        if f is not None:
            findings.append(f)
    code = 1 if findings else 0
    head = f"checked {len(found)} series in {where} (newest {window} runs each): {len(findings)} fail the history gate"
    if markdown is not None:
        with open(markdown, "a", encoding="utf-8") as fh:
            fh.write(f"## attnbench history check: {'❌' if findings else '✅'}\n\n{head}.\n\n")
            for f in findings:
                fh.write(f"- `{f.analysis.series.name}`: {f.describe()}\n")
            fh.write("\n")
    if as_json:
        print(json.dumps({"exit_code": code, "series": len(found), "window": window, "findings": [
            {"suite": f.analysis.series.suite, "point_id": f.analysis.series.point_id, "env": f.analysis.series.env_label,
             "ratio": f.ratio, "base_ms": f.base_ms, "cur_ms": f.cur_ms, "first": f.first.as_dict(),
             "last": f.last.as_dict(), "thresholds": f.thresholds} for f in findings]}, indent=1, default=str))  # fmt: skip
    else:
        for f in findings:
            print(f"REGRESSED {f.analysis.series.name}: {f.describe()}")
        print(head)
    if code:
        raise typer.Exit(code)


@history_app.command("report")
@user_errors
def report(
    out: Annotated[Path, typer.Option(help="Directory to write history.html into.")],
    db: DbOpt = None,
    suite: SuiteOpt = None,
    point: PointOpt = None,
    impl: ImplOpt = None,
    set_: SetOpt = None,
    since: SinceOpt = None,
    branch: BranchOpt = None,
    window: WindowOpt = DEFAULT_WINDOW,
    threshold: ThresholdOpt = None,
    sig: SigOpt = None,
) -> None:
    """Write one self-contained HTML page: a trend chart per series with its change points, and
    a table of the latest regressions."""
    # deferred: pandas, pydantic
    from attnbench.history import trendpage
    from attnbench.history.changes import analyse, gate_finding

    found, counts, where = _load(db, _filters(suite, point, impl, set_, since, branch), _window(window), True)
    params = _params(sig)
    analyses = [analyse(s, params) for s in found]
    findings = [f for a in analyses if (f := gate_finding(a, _gate_config(a.series.gate, threshold))) is not None]
    path = trendpage.write(out / "history.html", trendpage.render(analyses, findings, where, counts, window))
    print(f"wrote {path} ({len(analyses)} series, {len(findings)} failing the history gate)")
