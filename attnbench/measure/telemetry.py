"""NVML telemetry joined to each point's timing.

A sampler thread reads NVML about every 10 ms while a point is measured. Only two windows count:

- the **timed window** (:class:`~attnbench.measure.cuda_timer.TimedWindow`, filled by the CUDA
  timer: first sample enqueued to last sample waited for), never the warm-up (first call,
  extension load, Triton compile, cuBLAS start-up);
- the **energy block** (:meth:`PointTelemetry.energy_block`): a dedicated run of back-to-back
  calls after timing, no flush and no host wait between calls, bracketed by two reads of the
  energy counter. Energy per call = the counter's increase / the calls; mean power = that
  energy / the block's wall time. Without an energy counter: the mean of the power readings
  inside the block.

NVML's power and utilisation readings are averages over up to about 1 s on Ampere and Hopper
(:data:`NVML_AVERAGING_S`): a window shorter than that reads values that partly belong to
whatever ran before, so such a point is flagged ``telemetry_window_short`` instead of reported
as if the value were its own. On a MIG instance the readings are the whole GPU's (the parent
handle), said so in ``telemetry_scope``.

Columns (None when telemetry is off or a reading is unsupported): power_w_mean (W),
energy_j_per_call (J), power_method (energy-counter, power-readings, or context-window for the
legacy call), energy_block_s (s), energy_block_calls, sm_clock_mhz_min / sm_clock_mhz_mean (MHz),
temp_c_max (C), gpu_util_pct_mean (%), throttle_reasons (names seen in either window), throttled
(a throttling reason, i.e. not idle/user clocks/display, was seen), telemetry_samples (readings
used), telemetry_window_s (s, the timed window), telemetry_window_short, telemetry_scope.

Without NVML the point is measured all the same; :func:`probe` says why telemetry is absent and
``attnbench run`` stores that in the run metadata.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from attnbench.measure.nvml import DeviceHandles, Nvml, Reading, decode_reasons, is_throttle, open_nvml

TELEMETRY_COLUMNS = (
    "power_w_mean",
    "energy_j_per_call",
    "power_method",
    "energy_block_s",
    "energy_block_calls",
    "sm_clock_mhz_min",
    "sm_clock_mhz_mean",
    "temp_c_max",
    "gpu_util_pct_mean",
    "throttle_reasons",
    "throttled",
    "telemetry_samples",
    "telemetry_window_s",
    "telemetry_window_short",
    "telemetry_scope",
)
INTERVAL_S = 0.01
NVML_AVERAGING_S = 1.0  # power/utilisation averaging window of NVML on Ampere and Hopper
ENERGY_BLOCK_S = 1.0  # default length of the energy block: at least one averaging window


class Sampler:
    """Reads ``nvml`` for ``handle`` every ``interval_s`` in a daemon thread between
    :meth:`start` and :meth:`stop`; one reading at each end, so even a short window has two."""

    def __init__(self, nvml: Nvml, handle: Any, interval_s: float = INTERVAL_S) -> None:
        self.nvml, self.handle, self.interval_s = nvml, handle, interval_s
        self.readings: list[Reading] = []
        self.energy_mj: int | None = None  # counter increase from start to stop
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


@dataclass(frozen=True)
class Span:
    """A stretch of host ``time.monotonic()``, seconds."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s

    def holds(self, t: float) -> bool:
        return self.start_s <= t <= self.end_s


@dataclass(frozen=True)
class EnergyBlock:
    """``calls`` back-to-back calls between two energy-counter reads (``energy_mj`` their
    difference, None without a counter) over ``span`` (host monotonic, the reads included)."""

    calls: int
    span: Span
    energy_mj: int | None


def run_energy_block(
    fn: Callable[[], object],
    energy_mj: Callable[[], int | None],
    min_s: float,
    sync: Callable[[], object],
    clock: Callable[[], float] = time.monotonic,
) -> EnergyBlock:
    """Wait for the device, read the counter, enqueue calls of ``fn`` back to back until
    ``min_s`` of host time went by (the launch queue keeps the device ahead of the host by at most
    a few thousand launches), wait for the device, read the counter again."""
    sync()
    e0 = energy_mj()
    t0 = clock()
    calls = 0
    while calls == 0 or clock() - t0 < min_s:
        fn()
        calls += 1
    sync()
    t1 = clock()
    e1 = energy_mj()
    energy = e1 - e0 if e0 is not None and e1 is not None else None
    return EnergyBlock(calls=calls, span=Span(t0, t1), energy_mj=energy)


def _vals(readings: Sequence[Reading], attr: str) -> list[float]:
    return [v for r in readings if (v := getattr(r, attr)) is not None]


def _reading_columns(readings: Sequence[Reading]) -> dict[str, Any]:
    cols: dict[str, Any] = {"telemetry_samples": len(readings)}
    clock, temp, util = _vals(readings, "sm_clock_mhz"), _vals(readings, "temp_c"), _vals(readings, "util_pct")
    if clock:
        cols["sm_clock_mhz_min"], cols["sm_clock_mhz_mean"] = min(clock), sum(clock) / len(clock)
    if temp:
        cols["temp_c_max"] = max(temp)
    if util:
        cols["gpu_util_pct_mean"] = sum(util) / len(util)
    masks = [r.reasons for r in readings if r.reasons is not None]
    if masks:
        seen: list[str] = []
        for m in masks:
            seen += [n for n in decode_reasons(m) if n not in seen]
        cols["throttle_reasons"] = ",".join(seen)
        cols["throttled"] = is_throttle(seen)
    return cols


def summarize_windows(
    readings: Sequence[Reading], timed: Span | None, block: EnergyBlock | None, scope: str = "gpu"
) -> dict[str, Any]:
    """Per-point telemetry columns from the readings inside the timed window and the energy block.

    Power and energy come from the energy block alone (see the module docstring); clocks,
    temperature, utilisation and clock reasons from the readings inside either window.
    """
    cols: dict[str, Any] = dict.fromkeys(TELEMETRY_COLUMNS)
    spans = [s for s in (timed, block.span if block is not None else None) if s is not None]
    cols.update(_reading_columns([r for r in readings if any(s.holds(r.t_s) for s in spans)]))
    cols["telemetry_scope"] = scope
    short = False
    if timed is not None:
        cols["telemetry_window_s"] = timed.duration_s
        short = timed.duration_s < NVML_AVERAGING_S
    if block is not None and block.calls > 0 and block.span.duration_s > 0:
        wall = block.span.duration_s
        cols["energy_block_s"], cols["energy_block_calls"] = wall, block.calls
        short = short or wall < NVML_AVERAGING_S
        power = _vals([r for r in readings if block.span.holds(r.t_s)], "power_w")
        if block.energy_mj is not None:
            joules = block.energy_mj / 1000.0
            cols.update(
                power_w_mean=joules / wall, energy_j_per_call=joules / block.calls, power_method="energy-counter"
            )
        elif power:
            mean = sum(power) / len(power)
            cols.update(power_w_mean=mean, energy_j_per_call=mean * wall / block.calls, power_method="power-readings")
    cols["telemetry_window_short"] = short
    return cols


def summarize_readings(
    readings: Sequence[Reading], energy_mj: int | None, window_s: float, calls: int
) -> dict[str, Any]:
    """Legacy columns over a whole sampling context (warm-up included): power is the mean
    reading, energy per call the counter's increase over the context / ``calls`` (mean power x
    window without a counter). Use :func:`summarize_windows` for a point's own numbers."""
    cols: dict[str, Any] = dict.fromkeys(TELEMETRY_COLUMNS)
    cols.update(_reading_columns(readings))
    power = _vals(readings, "power_w")
    if power:
        cols["power_w_mean"] = sum(power) / len(power)
    if calls > 0:
        if energy_mj is not None:
            cols["energy_j_per_call"] = energy_mj / 1000.0 / calls
        elif power:
            cols["energy_j_per_call"] = cols["power_w_mean"] * window_s / calls
    cols["power_method"] = "context-window"
    cols["telemetry_window_s"] = window_s
    cols["telemetry_window_short"] = window_s < NVML_AVERAGING_S
    return cols


class PointTelemetry:
    """Context manager around one point's measurement; a no-op when ``config`` is None or NVML fails.

    ``config`` (from the run's options): ``{"index": CUDA index, "uuid": CUDA UUID or None,
    "interval_s": seconds, "energy_block_s": seconds (default 1; 0 = no energy block)}``.
    Inside the block: time the point with a :class:`~attnbench.measure.cuda_timer.TimedWindow`,
    then call :meth:`energy_block`; after it, :meth:`columns` with the window.
    """

    def __init__(self, config: dict[str, Any] | None) -> None:
        self.config = config
        self.sampler: Sampler | None = None
        self.handles: DeviceHandles | None = None
        self.block: EnergyBlock | None = None
        self.reason: str | None = "telemetry off for this run" if config is None else None

    def __enter__(self) -> PointTelemetry:
        if self.config is None:
            return self
        nvml, self.reason = open_nvml()
        if nvml is None:
            return self
        try:
            self.handles = nvml.handles_for_cuda(int(self.config.get("index", 0)), self.config.get("uuid"))
            self.sampler = Sampler(nvml, self.handles.board, float(self.config.get("interval_s", INTERVAL_S)))
            self.sampler.start()
        except Exception as exc:  # telemetry never costs a point
            self.reason, self.sampler = f"{type(exc).__name__}: {exc}", None
            nvml.close()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.sampler is not None:
            self.sampler.stop()
            self.sampler.nvml.close()

    def energy_block(
        self, fn: Callable[[], object], sync: Callable[[], object] | None = None, min_s: float | None = None
    ) -> EnergyBlock | None:
        """Run the dedicated energy block (see the module docstring) on ``fn`` while sampling;
        None (nothing run) when telemetry is off or ``energy_block_s`` is 0. ``sync`` waits for the
        device (``torch.cuda.synchronize`` by default)."""
        s = self.sampler
        if s is None or self.config is None:
            return None
        length = float(self.config.get("energy_block_s", ENERGY_BLOCK_S)) if min_s is None else min_s
        if length <= 0:
            return None
        if sync is None:
            sync = torch.cuda.synchronize
        handle = s.handle
        self.block = run_energy_block(fn, lambda: s.nvml.energy_mj(handle), length, sync)
        return self.block

    def columns(self, calls: int | None = None, window: Any = None) -> dict[str, Any]:
        """Telemetry columns (all None without NVML).

        ``window``: the timed window (anything with ``start_s`` and ``end_s``, host monotonic),
        the point's own numbers from :func:`summarize_windows`. Without a window and without an
        energy block, the legacy numbers over the whole context for ``calls`` calls.
        """
        s = self.sampler
        if s is None:
            return dict.fromkeys(TELEMETRY_COLUMNS)
        scope = self.handles.scope if self.handles is not None else "gpu"
        if window is None and self.block is None:
            cols = summarize_readings(s.readings, s.energy_mj, s.window_s, int(calls or 0))
            cols["telemetry_scope"] = scope
            return cols
        timed = Span(float(window.start_s), float(window.end_s)) if window is not None else None
        return summarize_windows(s.readings, timed, self.block, scope)


def probe(device: str, index: int = 0, uuid: str | None = None) -> dict[str, Any]:
    """Run-metadata entry: ``{"available": True, "device": {...}, "mapped_by": ..., "scope": ...}``
    or ``{"available": False, "reason": ...}``. Never raises."""
    nvml, reason = open_nvml()
    if nvml is None:
        why = f"not sampled on {device} runs; NVML: {reason}" if device != "cuda" else str(reason)
        return {"available": False, "reason": why}
    try:
        handles = nvml.handles_for_cuda(index, uuid)
        info = nvml.device_info(handles.board)
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
    return {
        "available": True,
        "device": info,
        "mapped_by": handles.how,
        "scope": handles.scope,
        "unsupported": sorted(nvml.unsupported),
    }


def cuda_identity(index: int | None = None) -> tuple[int, str | None]:
    """(CUDA device index, its UUID as torch gives it, or None) for the current device. The NVML
    prefix (``GPU-`` or, for a MIG instance, ``MIG-``) is left to :meth:`Nvml.handle_for_cuda`."""
    idx = torch.cuda.current_device() if index is None else index
    uuid = getattr(torch.cuda.get_device_properties(idx), "uuid", None)
    text = str(uuid) if uuid is not None else ""
    return idx, text or None
