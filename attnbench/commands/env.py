"""`attnbench env`: the device and software fingerprint, NVML state, and calibrated peaks."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from attnbench.commands._common import DEVICE_METAVAR, split_list, user_errors
from attnbench.errors import UserError
from attnbench.point import DTYPE_NAMES


@user_errors
def env_cmd(
    device: Annotated[str, typer.Option(metavar=DEVICE_METAVAR, help="auto: CUDA if visible, else CPU.")] = "auto",
    dtype: Annotated[
        list[str] | None,
        typer.Option(help=f"Dtypes to calibrate matmul peaks for: {', '.join(DTYPE_NAMES)}.", show_default="float32"),
    ] = None,
    calibrate: Annotated[
        bool, typer.Option(help="Measure peak FLOP/s and copy bandwidth (about 1 s on a CPU).")
    ] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show the machine and software fingerprint, NVML telemetry availability, and peak rates."""
    from attnbench.env import resolve_device  # deferred: loads torch

    dev = resolve_device(device)
    dtypes = split_list(dtype) or ["float32"]
    for d in dtypes:
        if d not in DTYPE_NAMES:
            raise UserError(f"--dtype {d!r}: expected one of {', '.join(DTYPE_NAMES)}")
    info = _gather(dev, dtypes, calibrate)
    if as_json:
        print(json.dumps(info, indent=2, default=str))
        return
    _print(info)


def _gather(device: str, dtypes: list[str], calibrate: bool) -> dict[str, Any]:
    # deferred: torch
    from attnbench.env import fingerprint
    from attnbench.runner.calibrate import device_facts

    if calibrate:
        facts = device_facts(device, dtypes, None)
    else:
        from attnbench.measure import telemetry  # deferred: torch

        index, uuid = telemetry.cuda_identity() if device == "cuda" else (0, None)
        facts = {"peaks": None, "telemetry": telemetry.probe(device, index, uuid)}
    return {"env": fingerprint(device), "telemetry": facts["telemetry"], "peaks": facts["peaks"]}


def _print(info: dict[str, Any]) -> None:
    from rich.console import Console  # deferred: start-up time
    from rich.table import Table

    table = Table(show_header=False, title="attnbench env")
    table.add_column("key", style="bold")
    table.add_column("value")
    for k, v in info["env"].items():
        table.add_row(k, str(v))
    tele = info["telemetry"]
    if tele.get("available"):
        table.add_row("nvml", f"available ({tele.get('mapped_by')})")
        for k, v in tele.get("device", {}).items():
            table.add_row(f"nvml.{k}", str(v))
    else:
        table.add_row("nvml", f"unavailable: {tele.get('reason')}")
    peaks = info["peaks"]
    if peaks and "error" not in peaks:
        for dt, rate in peaks["flops_per_s"].items():
            table.add_row(f"peak matmul {dt}", f"{rate / 1e12:.3f} TFLOP/s")
        table.add_row("peak copy bandwidth", f"{peaks['bytes_per_s'] / 1e9:.1f} GB/s")
        table.add_row("calibration", f"{peaks['calibration_s']:.2f} s")
    elif peaks:
        table.add_row("peaks", f"calibration failed: {peaks['error']}")
    Console().print(table)
