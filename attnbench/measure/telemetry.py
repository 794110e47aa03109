"""NVML telemetry joined to each point's timing: a sampler thread (about every 10 ms) runs while
the point is timed and its readings become per-point columns.

Columns (None when telemetry is off or a reading is unsupported):
power_w_mean (W), energy_j_per_call (J: the energy counter's increase over the sampling window,
divided by the calls made in it, warm-up included), sm_clock_mhz_min / sm_clock_mhz_mean (MHz),
temp_c_max (C), gpu_util_pct_mean (%), throttle_reasons (comma-separated names seen in any
sample), throttled (a throttling reason, i.e. not idle/user clocks/display, was seen),
telemetry_samples (readings taken).

Without NVML the point is measured all the same; :func:`probe` says why telemetry is absent and
``attnbench run`` stores that in the run metadata.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from attnbench.measure.nvml import Nvml, Reading, decode_reasons, is_throttle, open_nvml

TELEMETRY_COLUMNS = (
    "power_w_mean",
    "energy_j_per_call",
    "sm_clock_mhz_min",
    "sm_clock_mhz_mean",
    "temp_c_max",
    "gpu_util_pct_mean",
    "throttle_reasons",
    "throttled",
    "telemetry_samples",
)
INTERVAL_S = 0.01


class Sampler:
    """Reads ``nvml`` for ``handle`` every ``interval_s`` in a daemon thread between
    :meth:`start` and :meth:`stop`; one reading at each end, so even a short window has two."""

    def __init__(self, nvml: Nvml, handle: Any, interval_s: float = INTERVAL_S) -> None:
        self.nvml, self.handle, self.interval_s = nvml, handle, interval_s
        self.readings: list[Reading] = []
        self.energy_mj: int | None = None  # counter increase over the window
        self.window_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._e0: int | None = None
        self._t0 = 0.0

    def start(self) -> None:
        self._e0 = self.nvml.energy_mj(self.handle)
        self._t0 = time.monotonic()
        self.readings.append(self.nvml.read(self.handle))
        self._thread = threading.Thread(target=self._loop, name="attnbench-nvml", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.readings.append(self.nvml.read(self.handle))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.readings.append(self.nvml.read(self.handle))
        self.window_s = time.monotonic() - self._t0
        e1 = self.nvml.energy_mj(self.handle)
        self.energy_mj = e1 - self._e0 if e1 is not None and self._e0 is not None else None


def _vals(readings: Sequence[Reading], attr: str) -> list[float]:
    return [v for r in readings if (v := getattr(r, attr)) is not None]


def summarize_readings(
    readings: Sequence[Reading], energy_mj: int | None, window_s: float, calls: int
) -> dict[str, Any]:
    """Per-point telemetry columns from a window's readings (see the module docstring).

    Energy per call falls back to mean power x window when the device has no energy counter.
    """
    cols: dict[str, Any] = dict.fromkeys(TELEMETRY_COLUMNS)
    cols["telemetry_samples"] = len(readings)
    power, clock = _vals(readings, "power_w"), _vals(readings, "sm_clock_mhz")
    temp, util = _vals(readings, "temp_c"), _vals(readings, "util_pct")
    if power:
        cols["power_w_mean"] = sum(power) / len(power)
    if clock:
        cols["sm_clock_mhz_min"], cols["sm_clock_mhz_mean"] = min(clock), sum(clock) / len(clock)
    if temp:
        cols["temp_c_max"] = max(temp)
    if util:
        cols["gpu_util_pct_mean"] = sum(util) / len(util)
    if calls > 0:
        if energy_mj is not None:
            cols["energy_j_per_call"] = energy_mj / 1000.0 / calls
        elif power:
            cols["energy_j_per_call"] = cols["power_w_mean"] * window_s / calls
    masks = [r.reasons for r in readings if r.reasons is not None]
    if masks:
        seen: list[str] = []
        for m in masks:
            seen += [n for n in decode_reasons(m) if n not in seen]
        cols["throttle_reasons"] = ",".join(seen)
        cols["throttled"] = is_throttle(seen)
    return cols


class PointTelemetry:
    """Context manager around one point's timing; a no-op when ``config`` is None or NVML fails.

    ``config`` (from the run's options): ``{"index": CUDA index, "uuid": CUDA UUID or None,
    "interval_s": seconds}``. Use :meth:`columns` after the block.
    """

    def __init__(self, config: dict[str, Any] | None) -> None:
        self.config = config
        self.sampler: Sampler | None = None
        self.reason: str | None = "telemetry off for this run" if config is None else None

    def __enter__(self) -> PointTelemetry:
        if self.config is None:
            return self
        nvml, self.reason = open_nvml()
        if nvml is None:
            return self
        try:
            handle, _how = nvml.handle_for_cuda(int(self.config.get("index", 0)), self.config.get("uuid"))
            self.sampler = Sampler(nvml, handle, float(self.config.get("interval_s", INTERVAL_S)))
            self.sampler.start()
        except Exception as exc:  # telemetry never costs a point
            self.reason, self.sampler = f"{type(exc).__name__}: {exc}", None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler.nvml.close()

    def columns(self, calls: int) -> dict[str, Any]:
        """Telemetry columns for ``calls`` calls made while sampling (all None without NVML)."""
        s = self.sampler
        if s is None:
            return dict.fromkeys(TELEMETRY_COLUMNS)
        return summarize_readings(s.readings, s.energy_mj, s.window_s, calls)


def probe(device: str, index: int = 0, uuid: str | None = None) -> dict[str, Any]:
    """Run-metadata entry: ``{"available": True, "device": {...}, "mapped_by": ...}`` or
    ``{"available": False, "reason": ...}``. Never raises."""
    nvml, reason = open_nvml()
    if nvml is None:
        why = f"not sampled on {device} runs; NVML: {reason}" if device != "cuda" else str(reason)
        return {"available": False, "reason": why}
    try:
        handle, how = nvml.handle_for_cuda(index, uuid)
        info = nvml.device_info(handle)
    except Exception as exc:
        nvml.close()
        return {"available": False, "reason": f"no NVML handle for CUDA device {index}: {type(exc).__name__}: {exc}"}
    nvml.close()
    if device != "cuda":
        return {
            "available": False,
            "reason": f"not sampled on {device} runs (NVML sees {info['name']})",
            "device": info,
        }
    return {"available": True, "device": info, "mapped_by": how, "unsupported": sorted(nvml.unsupported)}


def cuda_identity(index: int | None = None) -> tuple[int, str | None]:
    """(CUDA device index, its UUID as NVML spells it, or None) for the current device."""
    import torch

    idx = torch.cuda.current_device() if index is None else index
    uuid = getattr(torch.cuda.get_device_properties(idx), "uuid", None)
    text = str(uuid) if uuid is not None else ""
    if text and not text.startswith(("GPU-", "MIG-")):
        text = "GPU-" + text
    return idx, text or None
