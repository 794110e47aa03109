"""`attnbench list`: implementations (available or not, and why) and suites."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from attnbench.commands._common import user_errors
from attnbench.errors import UserError
from attnbench.point import DEVICES


@user_errors
def list_cmd(
    device: Annotated[str, typer.Option(help="Device whose availability to show: cpu or cuda.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List implementations (with availability on DEVICE and why not) and shipped suites."""
    from attnbench.impls import registry  # deferred: imports the built-in impls (torch)
    from attnbench.suite import available_suites  # deferred: pydantic

    if device not in DEVICES:
        raise UserError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    impls: list[dict[str, Any]] = []
    for name, spec in sorted(registry.all_specs().items()):
        reason = spec.unavailable_reason(device)
        impls.append(
            {
                "name": name,
                "family": spec.family,
                "causal": ["causal" if c else "non-causal" for c in spec.causal],
                "devices": list(spec.devices),
                "dtypes": list(spec.dtypes),
                "backward": spec.backward,
                "reference": spec.reference_name,
                "origin": spec.origin,
                "available": reason is None,
                "reason": reason,
                "description": spec.description,
            }
        )
    for name, reason in sorted(registry.broken_plugins().items()):
        impls.append({"name": name, "available": False, "reason": reason, "origin": "plugin"})
    suites = {name: str(path) for name, path in available_suites().items()}
    if as_json:
        print(json.dumps({"impls": impls, "suites": suites}, indent=2))
        return
    from rich.console import Console  # deferred: start-up time
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"implementations (availability on {device})")
    for col in ("name", "family", "modes", "devices", "dtypes", "bwd", "available", "origin"):
        table.add_column(col, no_wrap=col in ("name", "available"))
    why: list[str] = []
    for it in impls:
        origin = str(it.get("origin", ""))
        table.add_row(
            escape(it["name"]),
            it.get("family", "?"),
            ",".join(c.replace("non-causal", "full") for c in it.get("causal", [])),
            ",".join(it.get("devices", [])),
            ",".join(d.replace("float", "f").replace("bf16", "bf16") for d in it.get("dtypes", [])),
            "yes" if it.get("backward") else "no",
            "[green]yes[/]" if it["available"] else "[red]no[/]",
            escape("builtin" if origin.startswith("attnbench.") else origin),
        )
        if not it["available"]:
            why.append(f"  {escape(it['name'])}: {escape(str(it['reason']))}")
    console = Console()
    console.print(table)
    if why:
        console.print("not available here:")
        for line in why:
            console.print(line)
    st = Table(title="suites")
    st.add_column("name")
    st.add_column("file")
    for name, path in suites.items():
        st.add_row(name, path)
    console.print(st)
