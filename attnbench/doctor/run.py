"""Run the doctor's groups of checks for one device, in an order that keeps each honest: the
timers first (nothing else has loaded the host or the GPU yet), the GPU's state once a CUDA
context exists (so this process shows in NVML's process list), the kernels last (a first use may
build a C++ extension)."""

from __future__ import annotations

from collections.abc import Callable

from attnbench.doctor import energy, gpu, kernels, launch, timers
from attnbench.doctor.result import Check, Report
from attnbench.env import fingerprint


def run_doctor(device: str, suite: str = "seqlen", progress: Callable[[str], None] | None = None) -> Report:
    """Every check for ``device`` ("cpu" or "cuda"), with the environment fingerprint."""
    say = progress or (lambda _msg: None)
    checks: list[Check] = []
    if device == "cuda":
        say("timer agreement (attnbench against torch.utils.benchmark and triton's do_bench)")
        checks += timers.check_cuda_timers()
        say("GPU state through NVML")
        checks += gpu.check_gpu_state()
        say("launch overhead")
        checks.append(launch.check_launch_overhead(device))
        say(f"shortest points of suite {suite}")
        checks.append(launch.check_short_points(suite, device))
        say("NVML energy counter (a 2 s busy block)")
        checks.append(energy.check_energy())
    else:
        say("timer agreement (attnbench against torch.utils.benchmark, one thread)")
        checks += timers.check_cpu_timers()
        say("dispatch overhead")
        checks.append(launch.check_launch_overhead(device))
        checks.append(launch.check_short_points(suite, device))
    say("kernels against the float64 oracle (a first use may build the C++ kernel)")
    checks += kernels.check_kernels(device)
    return Report(device=device, checks=checks, env=fingerprint(device))
