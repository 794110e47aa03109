"""The `attnbench` command line. Thin: each command lives in attnbench/commands/ and imports
its heavy dependencies (torch, pandas, seaborn) only when it runs."""

from __future__ import annotations

from typing import Annotated

import typer

from attnbench import __version__
from attnbench.commands.baseline import baseline_app
from attnbench.commands.compare import compare
from attnbench.commands.doctor import doctor
from attnbench.commands.env import env_cmd
from attnbench.commands.export import export
from attnbench.commands.history import history_app
from attnbench.commands.list_ import list_cmd
from attnbench.commands.profile import profile
from attnbench.commands.report import report
from attnbench.commands.repro import repro
from attnbench.commands.run import run
from attnbench.commands.status import status
from attnbench.commands.suite import suite_app
from attnbench.runner import signals

app = typer.Typer(
    name="attnbench",
    help="Benchmark softmax and linear attention: latency, memory, throughput, correctness.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(f"attnbench {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Benchmark softmax and linear attention: latency, memory, throughput, correctness."""


app.command("run")(run)
app.command("status")(status)
app.command("list")(list_cmd)
app.command("env")(env_cmd)
app.command("compare")(compare)
app.command("export")(export)
app.add_typer(baseline_app, name="baseline")
app.add_typer(history_app, name="history")
app.command("report")(report)
app.add_typer(suite_app, name="suite")
app.command("doctor")(doctor)
app.command("profile")(profile)
app.command("repro")(repro)


def main() -> None:
    signals.own_process()
    app()
