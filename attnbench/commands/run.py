"""`attnbench run`: expand a suite, measure every point in worker processes, store results."""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from attnbench.commands._common import split_list, user_errors

EXIT_INTERRUPTED = 130


def _resolve_device(device: str) -> str:
    from attnbench.errors import UserError

    if device not in ("auto", "cpu", "cuda"):
        raise UserError(f"--device {device!r}: expected auto, cpu or cuda")
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
    return device


def _new_plan(
    suite_name: str, impl: list[str], sets: list[str], device: str, dtype: list[str], out: Path | None
) -> tuple[Path, dict[str, Any], list[dict[str, Any]]]:
    from attnbench.errors import UserError
    from attnbench.impls import registry
    from attnbench.suite import expand, load_suite, parse_set

    suite = load_suite(suite_name)
    overrides: dict[str, list[Any]] = {}
    for s in sets:
        key, values = parse_set(s)
        overrides[key] = values
    if impl:
        overrides["impl"] = impl
    if dtype:
        overrides["dtype"] = [parse_set(f"dtype={d}")[1][0] for d in dtype]
    dev = _resolve_device(device)
    points = expand(suite, dev, overrides)
    for name in sorted({p["impl"] for p in points if p["pass"] != "decode"}):
        registry.get(name)  # an unknown name is a one-line error listing what exists
    if any(p["pass"] == "decode" for p in points):
        from attnbench.decode.decoders import get_decoder

        for name in sorted({p["impl"] for p in points if p["pass"] == "decode"}):
            get_decoder(name)
    if not points:
        raise UserError(f"suite {suite.name}: the overrides leave no points to run")
    run_dir = out or Path("runs") / f"{suite.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if run_dir.exists() and any(run_dir.iterdir()):
        raise UserError(f"--out {str(run_dir)!r}: directory is not empty; use --resume {run_dir} to continue it")
    run_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "suite": {"name": suite.name, "path": suite.path, "description": suite.description, "source": suite.source},
        "overrides": overrides,
        "device": dev,
        "timing": suite.timing,
        "tolerance": suite.tolerance,
    }
    (run_dir / "plan.json").write_text(json.dumps({"points": points, "meta": meta}, indent=1))
    return run_dir, meta, points


def _load_plan(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from attnbench.errors import UserError

    plan_path = run_dir / "plan.json"
    if not plan_path.exists():
        raise UserError(f"--resume {str(run_dir)!r}: no plan.json there; expected a directory made by `attnbench run`")
    plan = json.loads(plan_path.read_text())
    _resolve_device(plan["meta"]["device"])
    return plan["meta"], plan["points"]


@user_errors
def run(
    suite: Annotated[
        str, typer.Option("--suite", "-s", help="Suite name (see `attnbench list`) or a .toml path.")
    ] = "seqlen",
    impl: Annotated[list[str] | None, typer.Option(help="Only these impls (repeat or comma-separate).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override a parameter axis, e.g. --set N=1024,2048 (repeatable).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto (CUDA if visible, else CPU), cpu or cuda.")] = "auto",
    dtype: Annotated[list[str] | None, typer.Option(help="Only these dtypes (float32, bfloat16, ...).")] = None,
    out: Annotated[Path | None, typer.Option(help="Run directory to create (default runs/SUITE-TIMESTAMP).")] = None,
    resume: Annotated[
        Path | None, typer.Option(help="Continue an interrupted run: run only its missing points.")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads per worker (default: all cores).")] = None,
    max_time: Annotated[float | None, typer.Option(help="Sampling time cap per point, seconds.")] = None,
    rounds: Annotated[
        int | None, typer.Option(help="Worker processes per point, interleaved over the sweep; samples are pooled.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Kill a point's worker after this many seconds.")] = None,
    report: Annotated[bool, typer.Option(help="Write the Markdown and HTML report when done.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON on stdout.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 if any point errored, crashed or failed correctness.")] = False,
    cuda_graph: Annotated[bool, typer.Option(help="CUDA: time CUDA-graph replays (hides launch overhead).")] = False,
    l2_flush: Annotated[bool, typer.Option(help="CUDA: flush L2 before each sample (cold samples).")] = True,
) -> None:
    """Run a benchmark suite: every point in its own worker, journaled as it finishes."""
    import os

    from attnbench.errors import UserError

    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: expected a positive integer")
    if rounds is not None and rounds < 1:
        raise UserError(f"--rounds {rounds}: expected a positive integer")
    for name, val in (("--max-time", max_time), ("--timeout", timeout)):
        if val is not None and val <= 0:
            raise UserError(f"{name} {val}: expected a positive number of seconds")
    if resume is not None:
        run_dir = resume
        meta, points = _load_plan(run_dir)
    else:
        run_dir, meta, points = _new_plan(suite, split_list(impl), list(set_ or []), device, split_list(dtype), out)

    from attnbench import results
    from attnbench.env import fingerprint
    from attnbench.runner import journal
    from attnbench.runner.sweep import plan_rounds, run_points

    if rounds is not None and resume is None:
        meta["timing"] = {**meta.get("timing", {}), "rounds": rounds}
        (run_dir / "plan.json").write_text(json.dumps({"points": points, "meta": meta}, indent=1))
    n_rounds = int(meta.get("timing", {}).get("rounds", 1))
    done = {(rec["row"]["point_id"], int(rec["row"].get("round", 0))) for rec in journal.load(run_dir)}
    todo = plan_rounds(points, n_rounds, done)
    total = len(plan_rounds(points, n_rounds, set()))
    timing = dict(meta.get("timing", {}))
    if max_time is not None:
        timing["max_time_s"] = max_time
    if timeout is not None:
        timing["timeout_s"] = timeout
    nthreads = threads or os.cpu_count() or 1
    old: dict[str, Any] = {}
    if resume is not None and (run_dir / results.METADATA).exists():
        old = results.read_metadata(run_dir)
    facts = _device_facts(meta["device"], points, nthreads, old)
    cuda_timer = old.get("cuda_timer") or {"graph": cuda_graph, "flush_l2": l2_flush}
    options = {
        "threads": nthreads,
        "timing": timing,
        "tolerance": meta.get("tolerance", {}),
        "ref_cache_dir": str(run_dir / ".refcache"),
        "cuda_timer": cuda_timer,
        "telemetry": facts["telemetry_config"],
        "peaks": facts["peaks"],
    }
    results.write_metadata(
        run_dir,
        {
            **meta,
            "env": fingerprint(meta["device"], nthreads),
            "command": " ".join(shlex.quote(a) for a in sys.argv),
            "started": old.get("started", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
            "resumed": [*old.get("resumed", []), time.strftime("%Y-%m-%dT%H:%M:%S%z")] if resume else [],
            "finished": None,
            "threads": nthreads,
            "peaks": facts["peaks"],
            "telemetry": facts["telemetry"],
            "telemetry_config": facts["telemetry_config"],
            "cuda_timer": cuda_timer,
        },
    )
    interrupted = _sweep(run_dir, todo, options, total, total - len(todo), run_points)
    df, _samples = results.finalize(run_dir)
    meta_now = results.read_metadata(run_dir)
    meta_now["finished"] = None if interrupted else time.strftime("%Y-%m-%dT%H:%M:%S%z")
    meta_now["interrupted"] = interrupted
    results.write_metadata(run_dir, {k: v for k, v in meta_now.items() if k != "schema_version"})
    if not interrupted:
        shutil.rmtree(run_dir / ".refcache", ignore_errors=True)
    if report and not interrupted:
        _write_report(run_dir)
    _print_summary(df, run_dir, as_json)
    if interrupted:
        print(
            f"interrupted: {len(df)} of {len(points)} points are stored in {run_dir}; "
            f"continue with: attnbench run --resume {run_dir}",
            file=sys.stderr,
        )
        raise typer.Exit(EXIT_INTERRUPTED)
    if strict:
        bad = df[(df["status"].isin(["error", "crashed", "timeout"])) | (df["correct"] == False)]  # noqa: E712
        if len(bad):
            raise typer.Exit(1)


def _device_facts(
    device: str, points: list[dict[str, Any]], threads: int | None, old: dict[str, Any]
) -> dict[str, Any]:
    """Peaks and NVML state for the run: measured in a worker at the start, reused on --resume
    (so every row of a run is judged against the same peaks)."""
    if old.get("peaks") is not None and "telemetry" in old:
        return {"peaks": old["peaks"], "telemetry": old["telemetry"], "telemetry_config": old.get("telemetry_config")}
    from attnbench.runner.calibrate import device_facts_in_worker

    dtypes = sorted({p["dtype"] for p in points if not p.get("skip")})
    return device_facts_in_worker(device, dtypes, threads)


def _write_report(run_dir: Path) -> None:
    try:
        from attnbench.report import build
    except ImportError:
        return
    from attnbench.errors import UserError

    try:
        written = build(run_dir)
    except UserError as exc:  # the results are stored; a report can be made later
        print(f"report not written: {exc}", file=sys.stderr)
        return
    print(f"report: {written.get('html')} and {written.get('md')}", file=sys.stderr)


def _sweep(
    run_dir: Path,
    todo: list[tuple[dict[str, Any], int]],
    options: dict[str, Any],
    total: int,
    already: int,
    run_points: Any,
) -> bool:
    """Run ``todo`` under a progress bar; True if interrupted by Ctrl-C."""
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[last]}"),
        console=console,
        transient=False,
    )
    with progress:
        task = progress.add_task(f"{run_dir.name}", total=total, completed=already, last="")

        def on_done(rec: dict[str, Any]) -> None:
            row = rec["row"]
            status = row["status"]
            if status == "ok":
                mark = "" if row.get("correct", True) else " [red]INCORRECT[/]"
                msg = f"{row['point_id']}: {row.get('time_ms_median', float('nan')):.3g} ms{mark}"
            else:
                msg = f"{row['point_id']}: {status}"
            progress.update(task, advance=1, last=escape(msg)[:90])

        try:
            run_points(run_dir, todo, options, on_done)
        except KeyboardInterrupt:
            return True
    return False


def _print_summary(df: Any, run_dir: Path, as_json: bool) -> None:
    if as_json:
        records = json.loads(df.to_json(orient="records"))
        print(json.dumps({"run_dir": str(run_dir), "points": records}, indent=1))
        return
    from attnbench.commands.summary import print_summary

    print_summary(df, run_dir)
