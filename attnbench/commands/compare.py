"""`attnbench compare`: a verdict per point and an exit code for CI (see docs/ci.md)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from attnbench.commands._common import split_list, user_errors
from attnbench.errors import UserError


def _suite_gate(*sides: Any) -> dict[str, Any]:
    """The ``[gate]`` table of the first side whose suite source is stored, else {}."""
    from attnbench.suite import parse_suite  # deferred: pydantic

    for side in sides:
        source = (side.suite or {}).get("source")
        if source:
            return parse_suite(source, str(side.suite.get("path") or side.label)).gate
    return {}


@user_errors
def compare(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="BASELINE CURRENT (run directories, results.parquet or pytest-benchmark .json), or CURRENT with --baseline."
        ),
    ],
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Compare against this saved baseline (see `attnbench baseline list`), or history:K, the last K comparable runs in the history (docs/history.md)."
        ),
    ] = None,
    threshold: Annotated[
        list[str] | None,
        typer.Option("--threshold", "-t", help="FIELD:VALUE, e.g. latency:10%, memory:2%, memory:1MiB (repeatable)."),
    ] = None,
    alpha: Annotated[
        float | None, typer.Option(help="False discovery rate across points (Benjamini-Hochberg). Default 0.01.")
    ] = None,
    confidence: Annotated[
        float | None, typer.Option(help="Level of the interval on the ratio current/baseline. Default 0.99.")
    ] = None,
    min_samples: Annotated[
        int | None,
        typer.Option(
            help="Single-round sides: fewer timing samples than this on either side: inconclusive. Default 10."
        ),
    ] = None,
    normalize: Annotated[
        bool | None,
        typer.Option(
            "--normalize/--no-normalize",
            help="Divide out the machine's shift, measured by the reference workload in both runs (default: on).",
        ),
    ] = None,
    min_rounds: Annotated[
        int | None,
        typer.Option(
            help="Rounds (worker processes) a side needs in the compared page-fault state; fewer: inconclusive. Default 3."
        ),
    ] = None,
    max_missing: Annotated[
        float | None,
        typer.Option(help="Share of the baseline's points the current run may lack (0.05 = 5 %). Default 0.05."),
    ] = None,
    allow_missing: Annotated[
        bool, typer.Option(help="Pass however many of the baseline's points the current run lacks.")
    ] = False,
    allow_mismatch: Annotated[
        bool, typer.Option(help="Compare runs from different devices, CPUs, GPUs, torch versions or dtypes.")
    ] = False,
    allow_mixed_devices: Annotated[
        bool, typer.Option(help="Compare points measured on different device models (sharded runs).")
    ] = False,
    fail_on_inconclusive: Annotated[
        bool, typer.Option(help="Exit 3 when a point is inconclusive (and none regressed).")
    ] = False,
    markdown: Annotated[
        Path | None, typer.Option(help="Append a Markdown verdict table to FILE (e.g. $GITHUB_STEP_SUMMARY).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the verdicts as JSON on stdout instead of a table.")
    ] = False,
    all_points: Annotated[bool, typer.Option("--all", help="Show unchanged points too.")] = False,
) -> None:
    """Compare CURRENT against BASELINE: improved, unchanged, regressed, inconclusive, failures, new, missing.

    Exit codes: 0 pass, 1 a regression or a new failure, 2 usage error or runs not comparable,
    3 inconclusive (only with --fail-on-inconclusive).
    """
    if baseline is not None:
        if len(runs) != 1:
            raise UserError(f"with --baseline {baseline!r}, give exactly one CURRENT run (got {len(runs)})")
        sides = [baseline if baseline.startswith("history:") else f"baseline:{baseline}", runs[0]]
    elif len(runs) != 2:
        raise UserError(f"expected BASELINE CURRENT (two runs) or --baseline NAME CURRENT; got {len(runs)} argument(s)")
    else:
        sides = runs

    # deferred: pandas, scipy, rich
    from attnbench.compare import render
    from attnbench.compare.io import device_mismatch_reason, load_side, mismatch_reason
    from attnbench.compare.verdicts import compare as do_compare
    from attnbench.gate import make_config

    from_history = sides[0].startswith("history:")  # the run as the unit: attnbench.history.gate
    if from_history:
        from attnbench.history.gate import compare_history, load_history_side  # deferred: pandas, scipy

        cur = load_side(sides[1])
        base: Any = load_history_side(sides[0], cur, sides[1])
    else:
        base, cur = load_side(sides[0]), load_side(sides[1])
    reason = mismatch_reason(base, cur)
    if reason and not allow_mismatch:
        raise UserError(reason)
    devices = device_mismatch_reason(base, cur)
    if devices and not allow_mixed_devices:
        raise UserError(devices)
    cfg = make_config(
        _suite_gate(cur, base),
        split_list(threshold),
        alpha=alpha,
        confidence=confidence,
        min_samples=min_samples,
        normalize=normalize,
        min_rounds=min_rounds,
        max_missing=1.0 if allow_missing else max_missing,
    )
    result = compare_history(base, cur, cfg) if from_history else do_compare(base, cur, cfg)
    if reason:
        result.notes.append(f"compared despite a mismatch: {reason.split(': ', 1)[1].split(' (pass')[0]}")
    code = result.exit_code(fail_on_inconclusive)
    if markdown is not None:
        with open(markdown, "a", encoding="utf-8") as f:
            f.write(render.to_markdown(result, code, all_points))
    with closed_pipe_ok():
        if as_json:
            print(json.dumps(render.to_json(result, code), indent=1))
        else:
            render.print_table(result, code, all_points)
    if code:
        raise typer.Exit(code)


@contextlib.contextmanager
def closed_pipe_ok() -> Iterator[None]:
    """Output to a reader that went away (``compare ... | head``) is not the gate's failure: the
    rest of the output is dropped, no traceback, and the exit code stays the verdict's."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # stdout's buffer cannot be flushed at exit either: point it at /dev/null (Python's docs, signal)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
