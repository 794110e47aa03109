"""`attnbench suite`: the suite file's JSON Schema (for editor completion and validation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from attnbench.commands._common import user_errors
from attnbench.errors import UserError

suite_app = typer.Typer(help="Suite files: their schema.", no_args_is_help=True, add_completion=False)


@suite_app.command("schema")
@user_errors
def schema(
    out: Annotated[Path | None, typer.Option("--out", "-o", help="File to write.", show_default="stdout")] = None,
) -> None:
    """Print the JSON Schema of a suite file (point an editor's TOML plugin at it, e.g. taplo's
    `#:schema ./suite.schema.json` first line)."""
    from attnbench.suite.schema import json_schema  # deferred: pydantic

    text = json.dumps(json_schema(), indent=2) + "\n"
    if out is None:
        print(text, end="")
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--out {str(out)!r}: cannot be written ({exc.strerror or exc})") from None
    print(f"wrote {out}")
