"""`attnbench export`: a run in another tool's format (pytest-benchmark JSON, CSV)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attnbench.commands._common import check_choice, user_errors
from attnbench.errors import UserError

FORMATS = ("pytest-benchmark", "csv")


@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `attnbench run`.")],
    format_: Annotated[
        str, typer.Option("--format", "-f", metavar="|".join(FORMATS), help="Output format.")
    ] = "pytest-benchmark",
    out: Annotated[
        Path | None, typer.Option("--out", "--output", "-o", help="File to write.", show_default="stdout")
    ] = None,
) -> None:
    """Export RUN_DIR as pytest-benchmark JSON (readable by `pytest-benchmark compare` and
    `attnbench compare`) or as CSV (one row per point)."""
    if out is not None and not out.parent.is_dir():
        raise UserError(f"--out {str(out)!r}: directory {str(out.parent)!r} does not exist")
    if out is not None and out.is_dir():
        raise UserError(f"--out {str(out)!r}: is a directory; expected a file name")
    check_choice("--format", format_, FORMATS)
    if format_ == "csv":
        from attnbench.results.csv_export import to_csv  # deferred: pandas

        text = to_csv(run_dir)
    else:
        from attnbench.results.pytest_benchmark import to_pytest_benchmark  # deferred: pandas

        text = json.dumps(to_pytest_benchmark(run_dir), indent=2, default=str) + "\n"
    if out is None:
        print(text, end="")
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--out {str(out)!r}: cannot be written ({exc.strerror or exc})") from None
    print(f"wrote {out}")
