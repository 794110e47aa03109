"""`attnbench repro`: a bundle that reproduces one point of a run outside the harness
(repro.py, point.json, env.json, README.md): what a user attaches to a kernel bug report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from attnbench.commands._common import user_errors
from attnbench.errors import UserError

EXIT_FAILED = 1


@user_errors
def repro(
    run_dir: Annotated[Path, typer.Argument(help="A run directory written by `attnbench run`.")],
    point_id: Annotated[str, typer.Argument(help="A point of that run (its point_id in results.parquet).")],
    out: Annotated[
        Path | None, typer.Option(help="Directory to write the bundle into (default RUN_DIR/repro/<point>/).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Kill the checksum worker after this many seconds.")] = 900.0,
) -> None:
    """Write a standalone repro bundle of one point: repro.py checks the output against stored
    checksums and the float64 oracle and times the pass with torch.utils.benchmark."""
    from attnbench.profile import driver, target  # deferred: torch, pandas

    if not timeout > 0:
        raise UserError(f"--timeout {timeout}: expected a positive number of seconds")
    tgt = target.from_run(run_dir, point_id)
    dest = out if out is not None else Path(run_dir) / "repro" / target.slug(tgt.point.point_id)
    print(f"making the checksums of {tgt.point.point_id} ({tgt.options.threads} threads) ...", file=sys.stderr)
    files, failure = driver.repro(tgt, dest, timeout)
    for name, path in files.items():
        print(f"{name + ':':<11}{path}")
    print(f"run it:    python {files['repro.py']}")
    if failure:
        print(f"failed: {failure}; the bundle reproduces the failure", file=sys.stderr)
        raise typer.Exit(EXIT_FAILED)
