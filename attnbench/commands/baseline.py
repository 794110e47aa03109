"""`attnbench baseline save|list`: named copies of runs to compare against (see docs/ci.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attnbench.commands._common import user_errors

baseline_app = typer.Typer(
    help="Save runs as named baselines and list them (stored in $ATTNBENCH_BASELINE_DIR or ./.attnbench/baselines).",
    no_args_is_help=True,
)


@baseline_app.command("save")
@user_errors
def save(
    name: Annotated[str, typer.Argument(help="Baseline name (letters, digits, '.', '_', '-').")],
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `attnbench run`.")],
    force: Annotated[bool, typer.Option(help="Replace a baseline of the same name.")] = False,
) -> None:
    """Save RUN_DIR as baseline NAME."""
    from attnbench.compare.baseline import save as do_save  # deferred: pandas

    dest = do_save(name, run_dir, force)
    print(f"saved baseline {name!r} in {dest}")


@baseline_app.command("list")
@user_errors
def list_(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List saved baselines: name, suite, device, when saved."""
    from attnbench.compare.baseline import baselines_dir, list_baselines  # deferred: pandas

    items = list_baselines()
    if as_json:
        print(json.dumps({"dir": str(baselines_dir()), "baselines": items}, indent=1, default=str))
        return
    if not items:
        print(f"no baselines in {baselines_dir()}")
        return
    for b in items:
        if "error" in b:
            print(f"{b['name']}: unreadable: {b['error']}")
            continue
        env = b.get("env") or {}
        where = env.get("gpu") or env.get("cpu_model") or "?"
        print(
            f"{b['name']}: suite {b.get('suite')}, {env.get('device')} ({where}), torch {env.get('torch')}, saved {b.get('saved')}"
        )
