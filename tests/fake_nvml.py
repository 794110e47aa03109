"""A fake NVML at the pynvml function boundary: the real module, with the functions attnbench's
adapter calls replaced through monkeypatch, raising pynvml's real exception classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

UUID = "GPU-12345678-1234-1234-1234-123456789abc"
MIG_UUID = "MIG-87654321-4321-4321-4321-cba987654321"  # a MIG instance on the GPU above


@dataclass
class FakeGpu:
    """What the fake device reports. ``energy_mj`` is returned in order, then its last value."""

    power_mw: int = 300_000
    sm_clock_mhz: int = 1980
    temp_c: int = 61
    util_pct: int = 97
    reasons: int = 0  # clocks-event-reasons bitmask
    energy_mj: list[int] = field(default_factory=lambda: [1_000_000, 1_050_000])
    not_supported: set[str] = field(default_factory=set)  # pynvml function names to fail
    missing: set[str] = field(default_factory=set)  # pynvml function names absent (FunctionNotFound)
    init_error: type[Exception] | None = None
    pid: int | None = None
    used_bytes: int = 512 * 2**20
    calls: dict[str, int] = field(default_factory=dict)
    mig: bool = False  # the GPU is split into MIG instances; MIG_UUID names one of them
    sm_clock_max_mhz: int = 1980
    app_clock_mhz: int = 1980
    app_clock_default_mhz: int = 1980
    power_limit_mw: int = 700_000
    power_limit_default_mw: int = 700_000
    persistence: int = 1
    ecc: int = 1
    other_pids: list[int] = field(default_factory=list)  # processes besides this one


def install(monkeypatch: Any, gpu: FakeGpu) -> FakeGpu:
    """Replace the pynvml functions the adapter uses with ones answering from ``gpu``."""
    import os

    handle = object()
    mig_handle = object()  # a MIG instance: board readings are NotSupported on it, as on real drivers

    def fn(name: str, value: Any) -> None:
        def call(*args: Any) -> Any:
            gpu.calls[name] = gpu.calls.get(name, 0) + 1
            if name in gpu.missing:
                raise pynvml.NVMLError_FunctionNotFound()
            if name in gpu.not_supported:
                raise pynvml.NVMLError_NotSupported()
            if args and args[0] is mig_handle and name in BOARD_ONLY:
                raise pynvml.NVMLError_NotSupported()
            return value(*args) if callable(value) else value

        monkeypatch.setattr(pynvml, name, call)

    def init() -> None:
        if gpu.init_error is not None:
            raise gpu.init_error()

    def by_uuid(uuid: bytes) -> object:
        if uuid.decode() == UUID:
            return handle
        if gpu.mig and uuid.decode() == MIG_UUID:
            return mig_handle
        raise pynvml.NVMLError_NotFound()

    def energy(_h: object) -> int:
        n = gpu.calls["nvmlDeviceGetTotalEnergyConsumption"] - 1
        return gpu.energy_mj[min(n, len(gpu.energy_mj) - 1)]

    def parent(h: object) -> object:
        if h is not mig_handle:
            raise pynvml.NVMLError_InvalidArgument()
        return handle

    def processes(_h: object) -> list[SimpleNamespace]:
        me = gpu.pid if gpu.pid is not None else os.getpid()
        return [SimpleNamespace(pid=p, usedGpuMemory=gpu.used_bytes) for p in (me, *gpu.other_pids)]

    fn("nvmlInit", init)
    fn("nvmlShutdown", lambda: None)
    fn("nvmlDeviceGetHandleByUUID", by_uuid)
    fn("nvmlDeviceGetHandleByIndex", lambda i: handle)
    fn("nvmlDeviceIsMigDeviceHandle", lambda h: h is mig_handle)
    fn("nvmlDeviceGetDeviceHandleFromMigDeviceHandle", parent)
    fn("nvmlDeviceGetMigMode", lambda h: [int(gpu.mig), int(gpu.mig)])
    fn("nvmlDeviceGetName", lambda h: "NVIDIA Fake H100")
    fn("nvmlDeviceGetUUID", lambda h: MIG_UUID if h is mig_handle else UUID)
    fn("nvmlSystemGetDriverVersion", lambda: "550.54.15")
    fn("nvmlSystemGetCudaDriverVersion", lambda: 12040)
    fn("nvmlDeviceGetPowerManagementLimit", lambda h: gpu.power_limit_mw)
    fn("nvmlDeviceGetPowerManagementDefaultLimit", lambda h: gpu.power_limit_default_mw)
    fn("nvmlDeviceGetEccMode", lambda h: [gpu.ecc, gpu.ecc])
    fn("nvmlDeviceGetPersistenceMode", lambda h: gpu.persistence)
    fn("nvmlDeviceGetPowerUsage", lambda h: gpu.power_mw)
    fn("nvmlDeviceGetClockInfo", lambda h, kind: gpu.sm_clock_mhz)
    fn("nvmlDeviceGetMaxClockInfo", lambda h, kind: gpu.sm_clock_max_mhz)
    fn("nvmlDeviceGetApplicationsClock", lambda h, kind: gpu.app_clock_mhz)
    fn("nvmlDeviceGetDefaultApplicationsClock", lambda h, kind: gpu.app_clock_default_mhz)
    fn("nvmlDeviceGetTemperature", lambda h, sensor: gpu.temp_c)
    fn("nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=gpu.util_pct, memory=40))
    fn("nvmlDeviceGetCurrentClocksEventReasons", lambda h: gpu.reasons)
    fn("nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: gpu.reasons)
    fn("nvmlDeviceGetTotalEnergyConsumption", energy)
    fn("nvmlDeviceGetComputeRunningProcesses", processes)
    return gpu


# Readings a real driver answers only for the whole GPU, not for a MIG instance's handle.
BOARD_ONLY = {
    "nvmlDeviceGetPowerUsage",
    "nvmlDeviceGetTotalEnergyConsumption",
    "nvmlDeviceGetClockInfo",
    "nvmlDeviceGetMaxClockInfo",
    "nvmlDeviceGetTemperature",
    "nvmlDeviceGetUtilizationRates",
    "nvmlDeviceGetPowerManagementLimit",
    "nvmlDeviceGetMigMode",
}
