"""The NVML energy counter: present, and consistent with power x time over a busy block.

attnbench's ``energy_j_per_call`` is the counter's increase over a block of calls, so the counter
must agree with the power NVML reports. A warm-up keeps the device busy first (NVML's power
reading is an average over up to about 1 s: a block that starts from idle would compare the
counter with readings that still average in the idle time), then :data:`BLOCK_S` of back-to-back
matmuls with power read every :data:`INTERVAL_S`; the counter's joules / (mean power x wall time)
must be within :data:`TOLERANCE` of 1.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import torch

from attnbench.doctor.gpu import open_device
from attnbench.doctor.result import FAIL, PASS, SKIP, WARN, Check
from attnbench.measure.telemetry import run_energy_block

BLOCK_S = 2.0
WARM_S = 1.0
INTERVAL_S = 0.05
TOLERANCE = 0.15


def busy_matmul(device: str = "cuda") -> Callable[[], object]:
    a = torch.randn(4096, 4096, device=device, dtype=torch.float16 if device == "cuda" else torch.float32)
    return lambda: a @ a


def check_energy(
    index: int | None = None,
    work: Callable[[], object] | None = None,
    sync: Callable[[], object] | None = None,
    block_s: float = BLOCK_S,
    warm_s: float = WARM_S,
) -> Check:
    """Run the busy block and compare the counter with power x time. ``work``/``sync`` default
    to a CUDA matmul and ``torch.cuda.synchronize`` (tests pass CPU stand-ins)."""
    nvml, handles, why = open_device(index)
    if nvml is None or handles is None:
        return Check("nvml", "energy counter", SKIP, f"NVML unavailable: {why}")
    try:
        board = handles.board
        if nvml.energy_mj(board) is None:
            return Check(
                "nvml",
                "energy counter",
                WARN,
                "no energy counter on this device: energy_j_per_call falls back to NVML's averaged power readings",
                None,
                {"unsupported": sorted(nvml.unsupported)},
            )
        if sync is None:
            sync = torch.cuda.synchronize
        fn = work if work is not None else busy_matmul()
        run_energy_block(fn, lambda: None, warm_s, sync)  # let NVML's power average reach the busy level
        readings: list[float] = []
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(INTERVAL_S):
                r = nvml.read(board)
                if r.power_w is not None:
                    readings.append(r.power_w)

        thread = threading.Thread(target=sample, name="attnbench-doctor-nvml", daemon=True)
        thread.start()
        try:
            block = run_energy_block(fn, lambda: nvml.energy_mj(board), block_s, sync)
        finally:
            stop.set()
            thread.join()
    finally:
        nvml.close()
    return judge_energy(block.energy_mj, readings, block.span.duration_s, handles.scope)


def judge_energy(energy_mj: int | None, power_w: list[float], wall_s: float, scope: str = "gpu") -> Check:
    """Counter joules against mean power x wall time (see the module docstring)."""
    data: dict[str, Any] = {"energy_mj": energy_mj, "power_w": power_w, "wall_s": wall_s, "scope": scope}
    if energy_mj is None or not power_w or wall_s <= 0:
        return Check(
            "nvml",
            "energy counter",
            FAIL,
            "the energy counter or the power readings stopped during the block",
            None,
            data,
        )
    counter_j = energy_mj / 1000.0
    mean_w = sum(power_w) / len(power_w)
    ratio = counter_j / (mean_w * wall_s)
    data.update(counter_j=counter_j, mean_power_w=mean_w, ratio=ratio)
    text = (
        f"counter {counter_j:.1f} J over {wall_s:.2f} s busy = {counter_j / wall_s:.0f} W; power readings {mean_w:.0f} W; "
        f"ratio {ratio:.3f}"
    )
    if scope != "gpu":
        text += f" ({scope})"
    if abs(ratio - 1) <= TOLERANCE:
        return Check("nvml", "energy counter", PASS, text + f" (within {100 * TOLERANCE:.0f} %)", None, data)
    return Check(
        "nvml",
        "energy counter",
        FAIL,
        text + f" (outside {100 * TOLERANCE:.0f} %): energy_j_per_call cannot be trusted here",
        "update the driver; report the JSON bundle (--out) with the GPU model",
        data,
    )
