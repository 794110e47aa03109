"""`attnbench report`: charts, Markdown and HTML from a stored run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from attnbench.commands._common import user_errors


@user_errors
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `attnbench run`.")],
    format_: Annotated[str, typer.Option("--format", "-f", help="md, html or both.")] = "both",
    out: Annotated[Path | None, typer.Option(help="Directory to write to (default RUN_DIR/report/).")] = None,
    baseline: Annotated[
        str | None, typer.Option(help="Impl the speedup chart divides by (default softmax, else sdpa).")
    ] = None,
) -> None:
    """Write the report of a run: charts (PNG, SVG), report.md and a self-contained report.html."""
    from attnbench.report import build, parse_formats  # deferred: pandas, seaborn

    written = build(run_dir, parse_formats(format_), out, baseline)
    for kind in ("md", "html", "charts"):
        if kind in written:
            print(f"{kind}: {written[kind]}")
