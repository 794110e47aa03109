"""`attnbench list`: implementations (available or not, and why) and suites (what they measure,
how many points, how long on this device).

Fast: the built-ins come from a static table (attnbench.impls.catalog, checked against the
registry by the tests) and the device is resolved without torch where no GPU driver is present,
so the list answers in well under a second. Installed plugins, a GPU, or ``--probe`` load the
registry (and torch) to ask the impls themselves.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated, Any

import typer

from attnbench.commands._common import DEVICE_CHOICES, DEVICE_METAVAR, check_choice, safe, user_errors
from attnbench.fmt import fmt_count, fmt_s
from attnbench.impls import registry
from attnbench.impls.catalog import BUILTINS, static_reason

RUNS_ROOT = Path("runs")  # attnbench.runner.request.RUNS_ROOT (its package loads torch)
# Files whose presence means a GPU driver torch could use (NVIDIA, WSL's GPU bridge, ROCm).
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/dxg", "/dev/kfd")


def device_without_torch(device: str) -> str | None:
    """``cpu`` or ``cuda`` when it can be decided without importing torch, else None: ``auto``
    is cpu where no GPU driver is installed (torch.cuda.is_available() is then False)."""
    if device == "cpu":
        return "cpu"
    if device == "auto" and not any(os.path.exists(f) for f in GPU_DRIVER_FILES):
        return "cpu"
    return None


def _plugins_installed() -> bool:
    return bool(list(entry_points(group=registry.ENTRY_POINT_GROUP)))


def _static_impls(device: str) -> list[dict[str, Any]]:
    out = []
    for b in sorted(BUILTINS, key=lambda b: b.name):
        reason = static_reason(b, device)
        out.append(
            {
                "name": b.name,
                "family": b.family,
                "causal": ["causal" if c else "non-causal" for c in b.causal],
                "devices": list(b.devices),
                "dtypes": list(b.dtypes),
                "backward": b.backward,
                "reference": b.reference_name,
                "origin": b.module,
                "available": reason is None,
                "reason": reason,
                "description": b.description,
            }
        )
    return out


def _registry_impls(device: str) -> list[dict[str, Any]]:
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
    return impls


def _suites(device: str, unavailable: frozenset[str]) -> list[dict[str, Any]]:
    # deferred: pydantic
    from attnbench.suite import available_suites, expand, load_suite
    from attnbench.suite.duration import estimate, history

    seen = history(RUNS_ROOT, device)
    out = []
    for name, path in available_suites().items():
        item: dict[str, Any] = {"name": name, "path": str(path)}
        try:
            suite = load_suite(str(path))
            points = expand(suite, device)
        except Exception as exc:  # a broken suite file is listed with its error, not fatal
            item.update(error=str(exc))
            out.append(item)
            continue
        runnable = [p for p in points if not p.skip and p.impl not in unavailable]
        timing = suite.timing_config
        est = estimate(points, timing, seen, unavailable)
        item.update(
            description=suite.description,
            points=len(runnable),
            skipped=len(points) - len(runnable),
            rounds=timing.rounds,
            estimate_s=round(est.total_s(), 1),
            estimate_from_history=est.from_history,
        )
        out.append(item)
    return out


@user_errors
def list_cmd(
    device: Annotated[
        str,
        typer.Option(metavar=DEVICE_METAVAR, help="Device whose availability and durations to show (auto: as `run`)."),
    ] = "auto",
    probe: Annotated[
        bool, typer.Option(help="Import every impl and run its own availability check (slower: loads torch).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List implementations (with availability on DEVICE and why not) and the shipped suites
    (description, points, rounds, estimated duration on DEVICE)."""
    check_choice("--device", device, DEVICE_CHOICES)
    dev = None if probe else device_without_torch(device)
    if dev is None or _plugins_installed():
        if dev is None:
            from attnbench.env import resolve_device  # deferred: loads torch

            # an explicit device is listed as asked (what would run there); auto is resolved as `run` does
            dev = device if device != "auto" else resolve_device(device)
        impls = _registry_impls(dev)
    else:
        impls = _static_impls(dev)
    unavailable = frozenset(i["name"] for i in impls if not i["available"])
    suites = _suites(dev, unavailable)
    if as_json:
        print(json.dumps({"device": dev, "impls": impls, "suites": suites}, indent=2))
        return
    _print(dev, impls, suites)


def _print(device: str, impls: list[dict[str, Any]], suites: list[dict[str, Any]]) -> None:
    from rich import box  # deferred: start-up time
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(
        title=f"implementations on {device}",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
        collapse_padding=True,
    )
    for col in ("name", "family", "modes", "devices", "dtypes", "bwd", "here"):
        table.add_column(col, no_wrap=col in ("name", "here"))
    why: list[str] = []
    plugins: list[str] = []
    for it in impls:
        modes = it.get("causal", [])
        table.add_row(
            safe(it["name"]),
            safe(it.get("family", "?")),
            "both" if len(modes) == 2 else ",".join(m.replace("non-causal", "full") for m in modes),
            safe(",".join(it.get("devices", []))),
            safe(" ".join(d.replace("float", "f").replace("bfloat", "bf") for d in it.get("dtypes", []))),
            "yes" if it.get("backward") else "no",
            "[green]yes[/]" if it["available"] else "[red]no[/]",
        )
        if not it["available"]:
            why.append(f"  {safe(it['name'])}: {safe(it['reason'])}")
        origin = str(it.get("origin", ""))
        if not origin.startswith("attnbench."):
            plugins.append(f"{safe(it['name'])} ({safe(origin)})")
    console.print(table)
    if plugins:
        console.print("not built in: " + ", ".join(plugins))
    if why:
        console.print(f"not available on {device}:")
        for line in why:
            console.print(line)
    st = Table(title=f"suites (time on {device}: estimated)", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    st.add_column("name", no_wrap=True)
    st.add_column("points", justify="right", no_wrap=True)
    st.add_column("rounds", justify="right", no_wrap=True)
    st.add_column("time", justify="right", no_wrap=True)
    st.add_column("what it measures")
    for s in suites:
        if "error" in s:
            st.add_row(safe(s["name"]), "", "", "", f"[red]unreadable:[/] {safe(s['error'])}")
            continue
        st.add_row(
            safe(s["name"]),
            fmt_count(s["points"]),
            fmt_count(s["rounds"]),
            "~" + fmt_s(s["estimate_s"]),
            safe(s["description"]),
        )
    console.print(st)
    console.print(
        "time: start-up, every point's rounds and the report; from earlier runs under runs/ where the "
        "same points ran, else the suite's time caps; a first build of the C++ kernel adds about 15 s on 2 cores",
        style="dim",
    )
