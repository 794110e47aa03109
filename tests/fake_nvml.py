"""A fake NVML at the pynvml function boundary: the real module, with the functions attnbench's
adapter calls replaced through monkeypatch, raising pynvml's real exception classes."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml

UUID = "GPU-12345678-1234-1234-1234-123456789abc"


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


def install(monkeypatch: Any, gpu: FakeGpu) -> FakeGpu:
    """Replace the pynvml functions the adapter uses with ones answering from ``gpu``."""
    import os

    handle = object()

    def fn(name: str, value: Any) -> None:
        def call(*args: Any) -> Any:
            gpu.calls[name] = gpu.calls.get(name, 0) + 1
            if name in gpu.missing:
                raise pynvml.NVMLError_FunctionNotFound()
            if name in gpu.not_supported:
                raise pynvml.NVMLError_NotSupported()
            return value(*args) if callable(value) else value

        monkeypatch.setattr(pynvml, name, call)

    def init() -> None:
        if gpu.init_error is not None:
            raise gpu.init_error()

    def by_uuid(uuid: bytes) -> object:
        if uuid.decode() != UUID:
            raise pynvml.NVMLError_NotFound()
        return handle

    def energy(_h: object) -> int:
        n = gpu.calls["nvmlDeviceGetTotalEnergyConsumption"] - 1
        return gpu.energy_mj[min(n, len(gpu.energy_mj) - 1)]

    fn("nvmlInit", init)
    fn("nvmlShutdown", lambda: None)
    fn("nvmlDeviceGetHandleByUUID", by_uuid)
    fn("nvmlDeviceGetHandleByIndex", lambda i: handle)
    fn("nvmlDeviceGetName", lambda h: "NVIDIA Fake H100")
    fn("nvmlDeviceGetUUID", lambda h: UUID)
    fn("nvmlSystemGetDriverVersion", lambda: "550.54.15")
    fn("nvmlSystemGetCudaDriverVersion", lambda: 12040)
    fn("nvmlDeviceGetPowerManagementLimit", lambda h: 700_000)
    fn("nvmlDeviceGetEccMode", lambda h: [1, 1])
    fn("nvmlDeviceGetPersistenceMode", lambda h: 1)
    fn("nvmlDeviceGetPowerUsage", lambda h: gpu.power_mw)
    fn("nvmlDeviceGetClockInfo", lambda h, kind: gpu.sm_clock_mhz)
    fn("nvmlDeviceGetTemperature", lambda h, sensor: gpu.temp_c)
    fn("nvmlDeviceGetUtilizationRates", lambda h: SimpleNamespace(gpu=gpu.util_pct, memory=40))
    fn("nvmlDeviceGetCurrentClocksEventReasons", lambda h: gpu.reasons)
    fn("nvmlDeviceGetCurrentClocksThrottleReasons", lambda h: gpu.reasons)
    fn("nvmlDeviceGetTotalEnergyConsumption", energy)
    fn(
        "nvmlDeviceGetComputeRunningProcesses",
        lambda h: [SimpleNamespace(pid=gpu.pid if gpu.pid is not None else os.getpid(), usedGpuMemory=gpu.used_bytes)],
    )
    return gpu
