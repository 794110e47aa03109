"""`attnbench report`: charts, Markdown and HTML from a stored run directory."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from attnbench.commands._common import user_errors
from attnbench.text import terminal_safe


@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `attnbench run`.")],
    format_: Annotated[str, typer.Option("--format", "-f", metavar="md|html|both", help="What to write.")] = "both",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Directory to write to.", show_default="RUN_DIR/report/")
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(help="Impl that speedups and crossovers are measured against.", show_default="sdpa, else softmax"),
    ] = None,
    svg: Annotated[bool, typer.Option("--svg/--no-svg", help="Write each chart as SVG too (PNG always).")] = True,
    assets_url: Annotated[
        str | None,
        typer.Option(
            "--assets-url",
            metavar="PREFIX",
            help="URL the charts/ folder will be served from: report.md then shows the charts as images "
            "(without it, report.md names them: a CI job summary cannot show a relative path).",
        ),
    ] = None,
    device_model: Annotated[
        str | None, typer.Option(help="Report only the points measured on this device model (a mixed run).")
    ] = None,
    allow_mixed_devices: Annotated[
        bool, typer.Option(help="Pool points measured on different device models into one report.")
    ] = False,
) -> None:
    """Write the report of a run: charts (PNG, SVG), report.md (fit for a CI job summary) and a
    self-contained report.html."""
    from attnbench.report import build, parse_formats  # deferred: pandas, seaborn
    from attnbench.results import journal
    from attnbench.results.layout import RunDir

    rd = RunDir(run_dir)
    if run_dir.is_dir() and not rd.results.exists():  # the tables are rebuilt from the journal: say what it skips
        warning = journal.read(rd).warning(rd.journal)
        if warning:
            print(f"warning: {terminal_safe(warning)}", file=sys.stderr)
    written = build(run_dir, parse_formats(format_), out, baseline, assets_url, device_model, allow_mixed_devices, svg)
    for kind in ("md", "html", "charts"):
        if kind in written:
            print(f"{kind}: {written[kind]}")
