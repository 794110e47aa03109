"""Once per run, before any point: calibrate peak rates and probe NVML, in a worker process
(the same fork server as the points, so the main process never initialises CUDA and the
calibration sees the same thread count and device as the points)."""

from __future__ import annotations

import contextlib
import traceback
from typing import Any

from attnbench.runner.procs import run_child


def device_facts(device: str, dtypes: list[str], threads: int | None) -> dict[str, Any]:
    """``{"peaks": ..., "telemetry": ..., "telemetry_config": ...}`` for run metadata and options.

    ``telemetry_config`` is what each point's worker needs to sample NVML (None when off).
    A calibration that fails leaves ``peaks`` as ``{"error": ...}``; it never fails the run.
    """
    # Runs in the child: the parent imports this module without torch (it only starts the child).
    import torch

    from attnbench.measure import telemetry
    from attnbench.measure.peaks import calibrate

    if threads:
        torch.set_num_threads(threads)
    index, uuid = telemetry.cuda_identity() if device == "cuda" else (0, None)
    tele = telemetry.probe(device, index, uuid)
    try:
        peaks: dict[str, Any] = calibrate(device, dtypes)
    except Exception as exc:
        peaks = {"error": f"{type(exc).__name__}: {exc}"}
    config = {"index": index, "uuid": uuid, "interval_s": telemetry.INTERVAL_S} if tele["available"] else None
    return {"peaks": peaks, "telemetry": tele, "telemetry_config": config}


def main(device: str, dtypes: list[str], threads: int | None, conn: Any) -> None:
    """Child entry (through :func:`attnbench.runner.procs.run_child`)."""
    try:
        facts = device_facts(device, dtypes, threads)
    except BaseException as exc:
        facts = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}
    with contextlib.suppress(OSError):  # BrokenPipeError: the main process stopped listening
        conn.send(facts)
        conn.close()


def device_facts_in_worker(
    device: str, dtypes: list[str], threads: int | None, timeout_s: float = 120.0
) -> dict[str, Any]:
    """:func:`device_facts` in a fresh worker process; an error dict if it crashes or hangs."""
    res = run_child("attnbench.runner.calibrate:main", (device, dtypes, threads), timeout_s)
    if res.messages:
        facts: dict[str, Any] = res.messages[-1]
    elif res.timed_out:
        facts = {"error": f"calibration worker gave no result within {timeout_s:g} s"}
    else:
        facts = {"error": f"calibration worker died (exit code {res.exitcode})"}
    if "error" in facts:
        why = facts["error"]
        return {
            "peaks": {"error": why},
            "telemetry": {"available": False, "reason": f"device probe failed: {why}"},
            "telemetry_config": None,
        }
    return facts
