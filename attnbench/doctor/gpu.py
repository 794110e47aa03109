"""The GPU's state through NVML, one line each on whether it makes numbers move: clocks (locked
or not, now against max, throttle reasons now), power limit, persistence mode, ECC, MIG, and other
processes on the GPU. attnbench only reads these; the fixes are the administrator's commands.
"""

from __future__ import annotations

from typing import Any

from attnbench.doctor.result import FAIL, PASS, SKIP, WARN, Check
from attnbench.measure import telemetry
from attnbench.measure.nvml import DeviceHandles, Nvml, is_throttle, open_nvml


def open_device(index: int | None = None) -> tuple[Nvml | None, DeviceHandles | None, str | None]:
    """(NVML session, handles of the current CUDA device, None) or (None, None, why not)."""
    nvml, reason = open_nvml()
    if nvml is None:
        return None, None, reason
    try:
        idx, uuid = telemetry.cuda_identity(index)
        return nvml, nvml.handles_for_cuda(idx, uuid), None
    except Exception as exc:
        nvml.close()
        return None, None, f"no NVML handle for the CUDA device: {type(exc).__name__}: {exc}"


def _clocks(st: dict[str, Any]) -> Check:
    reasons = st.get("clock_reasons") or []
    app, app_default = st.get("app_clock_mhz"), st.get("app_clock_default_mhz")
    now, top = st.get("sm_clock_mhz"), st.get("sm_clock_max_mhz")
    clocks = f"SM clock {now} of max {top} MHz now"
    locked = "applications_clocks_setting" in reasons or (
        app is not None and app_default is not None and app != app_default
    )
    if locked:
        return Check(
            "gpu",
            "clocks",
            PASS,
            f"clocks set by the user (application/locked clocks): {clocks}; numbers repeat",
            None,
            st,
        )
    return Check(
        "gpu",
        "clocks",
        WARN,
        f"clocks not locked: {clocks}; boost follows temperature and power, so numbers move by a few %",
        "for repeatable numbers lock them: nvidia-smi --lock-gpu-clocks=<MHz> (root); attnbench never changes clocks",
        st,
    )


def _throttle(st: dict[str, Any]) -> Check:
    reasons = st.get("clock_reasons")
    if reasons is None:
        return Check("gpu", "throttling", SKIP, "clock event reasons not reported by this device")
    if is_throttle(reasons):
        return Check(
            "gpu",
            "throttling",
            WARN,
            f"throttling now ({', '.join(reasons)}): clocks are lowered while it lasts",
            "check cooling and the power limit; points measured while throttled are flagged `throttled`",
            st,
        )
    return Check("gpu", "throttling", PASS, f"no throttling now ({', '.join(reasons) or 'no reasons'})", None, st)


def _power(st: dict[str, Any]) -> Check:
    limit, default = st.get("power_limit_w"), st.get("power_limit_default_w")
    if limit is None:
        return Check("gpu", "power limit", SKIP, "power limit not reported by this device")
    if default is not None and limit < default:
        return Check(
            "gpu",
            "power limit",
            WARN,
            f"power limit {limit:.0f} W, below the default {default:.0f} W: lower clocks under heavy load",
            "nvidia-smi --power-limit=<W> (root), or compare only with runs under the same limit",
            st,
        )
    return Check("gpu", "power limit", PASS, f"power limit {limit:.0f} W (default {default or limit:.0f} W)", None, st)


def _persistence(st: dict[str, Any]) -> Check:
    mode = st.get("persistence_mode")
    if mode is None:
        return Check("gpu", "persistence mode", SKIP, "persistence mode not reported (not a Linux driver?)")
    if mode:
        return Check(
            "gpu", "persistence mode", PASS, "persistence mode on: the driver stays loaded between workers", None, st
        )
    return Check(
        "gpu",
        "persistence mode",
        WARN,
        "persistence mode off: the driver may unload between worker processes, so each point starts a cold GPU (slower start, clocks ramping)",
        "nvidia-smi --persistence-mode=1 (root)",
        st,
    )


def _ecc(st: dict[str, Any]) -> Check:
    ecc = st.get("ecc_enabled")
    if ecc is None:
        return Check("gpu", "ECC", SKIP, "ECC not reported by this device")
    state = "on" if ecc else "off"
    return Check(
        "gpu",
        "ECC",
        PASS,
        f"ECC {state}: memory bandwidth differs by a few % between on and off; compare runs with the same setting",
        None,
        st,
    )


def _mig(st: dict[str, Any]) -> Check:
    if st.get("mig_instance"):
        return Check(
            "gpu",
            "MIG",
            WARN,
            "this CUDA device is a MIG instance: a slice of the GPU's SMs and memory bandwidth; power, energy and clocks are the whole GPU's (other instances' work included)",
            "compare only with runs on the same MIG profile; energy per call is not this instance's alone",
            st,
        )
    if st.get("mig_enabled"):
        return Check(
            "gpu", "MIG", WARN, "MIG mode is on for this GPU", "other instances share its power and memory system", st
        )
    return Check("gpu", "MIG", PASS, "MIG off: the whole GPU", None, st)


def _others(st: dict[str, Any]) -> Check:
    pids = st.get("other_pids")
    if pids is None:
        return Check("gpu", "other processes", SKIP, "running processes not reported by this device")
    if not pids:
        return Check("gpu", "other processes", PASS, "no other process on the GPU", None, st)
    if st.get("self_listed") is False:  # another PID namespace (a container): one of them is this process
        n = len(pids) - 1
        if n <= 0:
            return Check(
                "gpu", "other processes", PASS, "no other process on the GPU (PIDs from another namespace)", None, st
            )
        return Check(
            "gpu",
            "other processes",
            WARN,
            f"{n} other process(es) on the GPU, probably (PIDs {', '.join(map(str, pids))} are from another namespace)",
            "stop other GPU work while measuring: it shares SMs and memory bandwidth",
            st,
        )
    return Check(
        "gpu",
        "other processes",
        FAIL,
        f"{len(pids)} other process(es) on the GPU (PIDs {', '.join(map(str, pids))}): they share its SMs and memory bandwidth, so times move",
        "stop the other GPU work and rerun",
        st,
    )


def check_gpu_state(index: int | None = None) -> list[Check]:
    """One check per state that can move numbers (see the module docstring)."""
    nvml, handles, why = open_device(index)
    if nvml is None or handles is None:
        return [
            Check(
                "gpu",
                "NVML",
                WARN,
                f"NVML unavailable: {why}",
                "pip install nvidia-ml-py; without it no clocks, power or energy columns",
            )
        ]
    try:
        st = nvml.gpu_state(handles)
    finally:
        nvml.close()
    return [_clocks(st), _throttle(st), _power(st), _persistence(st), _ecc(st), _mig(st), _others(st)]
