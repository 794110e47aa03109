"""`attnbench doctor`: check attnbench's numbers against independent tools on this machine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from attnbench.commands._common import user_errors
from attnbench.doctor import render
from attnbench.errors import UserError


@user_errors
def doctor(
    device: Annotated[str, typer.Option(help="auto (CUDA if visible, else CPU), cpu or cuda.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON bundle instead of the text.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Also write the JSON bundle (checks + environment) here, for a bug report.")
    ] = None,
    suite: Annotated[
        str, typer.Option(help="Suite whose shortest points are checked for being launch-bound.")
    ] = "seqlen",
) -> None:
    """Check that attnbench's timers agree with torch.utils.benchmark (and triton's do_bench on
    CUDA), launch overhead, the GPU's clocks/power/ECC/MIG/other processes, the NVML energy counter,
    and every available impl against the float64 oracle. Exit 0: all passed; 1: a check failed."""
    from attnbench.env import resolve_device  # deferred: torch

    if out is not None and not out.parent.is_dir():
        raise UserError(f"--out {str(out)!r}: directory {str(out.parent)!r} does not exist")
    if out is not None and out.is_dir():
        raise UserError(f"--out {str(out)!r}: is a directory; expected a file name for the JSON bundle")
    dev = resolve_device(device)
    from attnbench.suite import load_suite  # deferred: pydantic

    load_suite(suite)  # a bad name is a usage error before anything is measured
    from attnbench.doctor.run import run_doctor  # deferred: torch

    report = run_doctor(dev, suite, progress=lambda msg: print(f"doctor: {msg} ...", file=sys.stderr, flush=True))
    render.write(report, sys.stdout, as_json)
    if out is not None:
        render.write_bundle(report, out)
        print(f"doctor: JSON bundle written to {out}", file=sys.stderr)
    if report.exit_code:
        raise typer.Exit(report.exit_code)
