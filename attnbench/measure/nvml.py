"""The one adapter over NVML (``nvidia-ml-py``, import name ``pynvml``). Nothing else in attnbench
calls pynvml, so tests fake NVML by monkeypatching the pynvml functions used here.

NVML is optional: :func:`open_nvml` returns ``(None, reason)`` when the package, the driver's
library or the device is missing, and a reading the device does not support is None, never an
error. attnbench only reads NVML; it never changes clocks, power limits or persistence mode.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import Any

MIB = float(2**20)

# nvmlClocksEventReason* bits (same values as the older ClocksThrottleReason* names).
REASON_BITS: dict[int, str] = {
    0x001: "gpu_idle",
    0x002: "applications_clocks_setting",
    0x004: "sw_power_cap",
    0x008: "hw_slowdown",
    0x010: "sync_boost",
    0x020: "sw_thermal_slowdown",
    0x040: "hw_thermal_slowdown",
    0x080: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}
# Reasons that are not throttling under load: idle, clocks a user pinned, display clocks.
NOT_THROTTLE = {"gpu_idle", "applications_clocks_setting", "display_clock_setting"}


def decode_reasons(mask: int) -> list[str]:
    """Names of the set bits of a clocks-event-reasons bitmask (unknown bits as hex)."""
    names = [name for bit, name in REASON_BITS.items() if mask & bit]
    rest = mask & ~sum(REASON_BITS)
    if rest:
        names.append(hex(rest))
    return names


def is_throttle(names: list[str]) -> bool:
    """True if any reason lowers the clock under load (thermal, power cap, sync boost, ...)."""
    return any(n not in NOT_THROTTLE for n in names)


@dataclass(frozen=True)
class Reading:
    """One telemetry sample. Units: s (host monotonic), W, MHz, C, %; None = not supported."""

    t_s: float
    power_w: float | None
    sm_clock_mhz: float | None
    temp_c: float | None
    util_pct: float | None
    reasons: int | None


@dataclass(frozen=True)
class DeviceHandles:
    """``device``: the CUDA device's own handle (a MIG instance or a GPU); ``board``: where power,
    energy, clocks, temperature and utilisation are read; ``scope``: "gpu", or "whole gpu (MIG
    parent)" when those readings cover every MIG instance on the board; ``how``: the lookup."""

    device: Any
    board: Any
    scope: str
    how: str


def _err_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Nvml:
    """An initialised NVML session. Use :func:`open_nvml` to get one."""

    def __init__(self, pynvml: Any) -> None:
        self.nv = pynvml
        self.unsupported: set[str] = set()  # readings this device refused (NotSupported, ...)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.nv.nvmlShutdown()

    def _try(self, name: str, fn: Any, *args: Any) -> Any:
        """Call ``fn(*args)``; None (and ``name`` noted as unsupported) on any NVML error."""
        try:
            return fn(*args)
        except self.nv.NVMLError:
            self.unsupported.add(name)
            return None

    def handle_for_cuda(self, index: int = 0, uuid: str | None = None) -> tuple[Any, str]:
        """(NVML handle, how it was found) for CUDA device ``index``.

        By UUID (``torch.cuda.get_device_properties(i).uuid``, so CUDA_VISIBLE_DEVICES
        re-numbering cannot pick the wrong GPU); by NVML index only when no UUID is known. torch
        gives the UUID without NVML's prefix, and a MIG instance's UUID is NVML's ``MIG-`` one, not
        ``GPU-``: an unprefixed UUID is looked up as ``GPU-`` and then as ``MIG-``.
        """
        if uuid:
            text = str(uuid)
            if text.startswith(("GPU-", "MIG-")):
                return self.nv.nvmlDeviceGetHandleByUUID(text.encode()), f"uuid {text}"
            try:
                return self.nv.nvmlDeviceGetHandleByUUID(f"GPU-{text}".encode()), f"uuid GPU-{text}"
            except self.nv.NVMLError_NotFound:
                return self.nv.nvmlDeviceGetHandleByUUID(f"MIG-{text}".encode()), f"uuid MIG-{text}"
        return self.nv.nvmlDeviceGetHandleByIndex(index), f"nvml index {index} (no CUDA UUID known)"

    def parent_handle(self, handle: Any) -> Any | None:
        """The whole GPU's handle when ``handle`` is a MIG instance, else None."""
        nv = self.nv
        try:
            if not nv.nvmlDeviceIsMigDeviceHandle(handle):
                return None
            return nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
        except nv.NVMLError:  # an old driver without MIG calls: not a MIG handle
            return None

    def handles_for_cuda(self, index: int = 0, uuid: str | None = None) -> DeviceHandles:
        """The CUDA device's handle and the handle its board readings come from (the parent GPU
        for a MIG instance: power, energy, clocks and temperature exist only for the whole GPU)."""
        handle, how = self.handle_for_cuda(index, uuid)
        parent = self.parent_handle(handle)
        if parent is None:
            return DeviceHandles(handle, handle, "gpu", how)
        return DeviceHandles(handle, parent, "whole gpu (MIG parent)", how)

    def device_info(self, handle: Any) -> dict[str, Any]:
        """Name, UUID, driver and CUDA driver versions, power limit (W), ECC and persistence."""
        nv = self.nv
        cuda = self._try("cuda_driver_version", nv.nvmlSystemGetCudaDriverVersion)
        limit = self._try("power_limit", nv.nvmlDeviceGetPowerManagementLimit, handle)
        ecc = self._try("ecc", nv.nvmlDeviceGetEccMode, handle)
        persist = self._try("persistence", nv.nvmlDeviceGetPersistenceMode, handle)
        return {
            "name": _text(self._try("name", nv.nvmlDeviceGetName, handle)),
            "uuid": _text(self._try("uuid", nv.nvmlDeviceGetUUID, handle)),
            "driver_version": _text(self._try("driver_version", nv.nvmlSystemGetDriverVersion)),
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else None,
            "power_limit_w": limit / 1000.0 if limit is not None else None,
            "ecc_enabled": bool(ecc[0]) if ecc is not None else None,  # (current, pending)
            "persistence_mode": bool(persist) if persist is not None else None,
        }

    def clock_reasons(self, handle: Any) -> int | None:
        """Current clocks-event-reasons bitmask; falls back to the pre-R535 'throttle' name."""
        nv = self.nv
        try:
            return int(nv.nvmlDeviceGetCurrentClocksEventReasons(handle))
        except nv.NVMLError_FunctionNotFound:
            return self._try("clock_reasons", nv.nvmlDeviceGetCurrentClocksThrottleReasons, handle)
        except nv.NVMLError:
            self.unsupported.add("clock_reasons")
            return None

    def read(self, handle: Any) -> Reading:
        """One sample of power, SM clock, temperature, utilisation and clock reasons."""
        nv = self.nv
        power = self._try("power", nv.nvmlDeviceGetPowerUsage, handle)
        clock = self._try("sm_clock", nv.nvmlDeviceGetClockInfo, handle, nv.NVML_CLOCK_SM)
        temp = self._try("temperature", nv.nvmlDeviceGetTemperature, handle, nv.NVML_TEMPERATURE_GPU)
        util = self._try("utilization", nv.nvmlDeviceGetUtilizationRates, handle)
        return Reading(
            t_s=time.monotonic(),
            power_w=power / 1000.0 if power is not None else None,
            sm_clock_mhz=float(clock) if clock is not None else None,
            temp_c=float(temp) if temp is not None else None,
            util_pct=float(util.gpu) if util is not None else None,
            reasons=self.clock_reasons(handle),
        )

    def gpu_state(self, handles: DeviceHandles) -> dict[str, Any]:
        """What makes numbers move, read once (``attnbench doctor``): SM clock now and its max,
        application clocks against their default, clock-event reasons now, power limit against the
        default, persistence mode, ECC, MIG mode, and the other processes on the GPU (whether
        this process is among those listed: not when NVML reports another PID namespace's PIDs).
        A value the device does not report is None."""
        nv, board = self.nv, handles.board
        sm = nv.NVML_CLOCK_SM
        limit = self._try("power_limit", nv.nvmlDeviceGetPowerManagementLimit, board)
        default_limit = self._try("power_limit_default", nv.nvmlDeviceGetPowerManagementDefaultLimit, board)
        ecc = self._try("ecc", nv.nvmlDeviceGetEccMode, board)
        mig = self._try("mig_mode", nv.nvmlDeviceGetMigMode, board)
        persist = self._try("persistence", nv.nvmlDeviceGetPersistenceMode, board)
        reasons = self.clock_reasons(board)
        procs = self._try("processes", nv.nvmlDeviceGetComputeRunningProcesses, board)
        me = os.getpid()
        return {
            "sm_clock_mhz": self._try("sm_clock", nv.nvmlDeviceGetClockInfo, board, sm),
            "sm_clock_max_mhz": self._try("sm_clock_max", nv.nvmlDeviceGetMaxClockInfo, board, sm),
            "app_clock_mhz": self._try("app_clock", nv.nvmlDeviceGetApplicationsClock, board, sm),
            "app_clock_default_mhz": self._try(
                "app_clock_default", nv.nvmlDeviceGetDefaultApplicationsClock, board, sm
            ),
            "clock_reasons": decode_reasons(reasons) if reasons is not None else None,
            "power_limit_w": limit / 1000.0 if limit is not None else None,
            "power_limit_default_w": default_limit / 1000.0 if default_limit is not None else None,
            "persistence_mode": bool(persist) if persist is not None else None,
            "ecc_enabled": bool(ecc[0]) if ecc is not None else None,
            "mig_enabled": bool(mig[0]) if mig is not None else None,
            "mig_instance": handles.scope != "gpu",
            "other_pids": None if procs is None else sorted({p.pid for p in procs if p.pid != me}),
            # False in another PID namespace (a container): one of other_pids is then this process
            "self_listed": None if procs is None else any(p.pid == me for p in procs),
            "temp_c": self._try("temperature", nv.nvmlDeviceGetTemperature, board, nv.NVML_TEMPERATURE_GPU),
        }

    def energy_mj(self, handle: Any) -> int | None:
        """Total energy since the driver loaded, mJ (monotonic); None where unsupported."""
        return self._try("energy", self.nv.nvmlDeviceGetTotalEnergyConsumption, handle)

    def process_mib(self, handle: Any, pid: int | None = None) -> float | None:
        """Device memory NVML sees used by process ``pid`` (default: this one), MiB; None if not
        visible (unsupported, or another PID namespace, as in many containers)."""
        pid = os.getpid() if pid is None else pid
        procs = self._try("process_memory", self.nv.nvmlDeviceGetComputeRunningProcesses, handle)
        for p in procs or []:
            if p.pid == pid and p.usedGpuMemory is not None:
                return p.usedGpuMemory / MIB
        return None


def _text(x: Any) -> str | None:
    return x.decode() if isinstance(x, bytes) else x


def open_nvml() -> tuple[Nvml | None, str | None]:
    """(session, None) or (None, why NVML cannot be used). Never raises."""
    try:
        import pynvml  # optional dependency: nvidia-ml-py
    except ImportError:
        return None, "nvidia-ml-py is not installed (pip install 'attnbench[gpu]')"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError_LibraryNotFound:
        return None, "NVML library not found (libnvidia-ml.so.1): no NVIDIA driver on this machine"
    except pynvml.NVMLError as exc:
        return None, f"nvmlInit failed: {_err_text(exc)}"
    except Exception as exc:  # a broken install must not break a run
        return None, f"nvmlInit failed: {_err_text(exc)}"
    return Nvml(pynvml), None
