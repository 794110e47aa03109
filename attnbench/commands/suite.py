"""`attnbench suite`: the suite file's JSON Schema (for editor completion and validation)."""

from __future__ import annotations

import json

import typer

from attnbench.commands._common import user_errors

suite_app = typer.Typer(help="Suite files: their schema.", no_args_is_help=True, add_completion=False)


@suite_app.command("schema")
@user_errors
def schema() -> None:
    """Print the JSON Schema of a suite file (point an editor's TOML plugin at it, e.g. taplo's
    `#:schema ./suite.schema.json` first line)."""
    from attnbench.suite.schema import json_schema  # deferred: pydantic

    print(json.dumps(json_schema(), indent=2))
