"""`attnbench export`: a run in another tool's format (pytest-benchmark JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attnbench.commands._common import user_errors

FORMATS = ("pytest-benchmark",)


@user_errors
def export(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `attnbench run`.")],
    format_: Annotated[
        str, typer.Option("--format", "-f", help="Output format: pytest-benchmark.")
    ] = "pytest-benchmark",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")] = None,
) -> None:
    """Export RUN_DIR as pytest-benchmark JSON (readable by `pytest-benchmark compare` and `attnbench compare`)."""
    from attnbench.errors import UserError

    if format_ not in FORMATS:
        raise UserError(f"--format {format_!r}: expected one of {', '.join(FORMATS)}")
    from attnbench.compare.export import to_pytest_benchmark

    text = json.dumps(to_pytest_benchmark(run_dir), indent=2, default=str)
    if output is None:
        print(text)
    else:
        output.write_text(text + "\n")
        print(f"wrote {output}")
