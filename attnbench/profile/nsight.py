"""Ready command lines for NVIDIA Nsight Systems (``nsys``) and Nsight Compute (``ncu``) that
profile exactly one point through its repro script (``repro.py --calls K``).

The script warms up, then runs K calls between ``cudaProfilerStart`` and ``cudaProfilerStop``
(each call in an NVTX range), so both tools see only the point's calls:

- nsys: ``--capture-range=cudaProfilerApi`` (the timeline of those calls: kernels, memcpys,
  NVTX ranges, OS runtime calls), CUDA memory usage tracked;
- ncu: ``--profile-from-start off`` (the same range), ``--target-processes all``, the top kernels
  of the torch trace as a ``--kernel-name regex:...`` filter, ``--launch-count`` one call's launches
  of them, and ``--set full`` (every section, roofline and source counters included: each kernel
  is replayed many times, which is affordable for one call's worth of launches).

A CPU point gets an nsys line with CPU sampling only: ncu profiles CUDA kernels.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

NSYS_CALLS = 5
NCU_CALLS = 1
NCU_SET = "full"
MAX_KERNELS = 5
MAX_LAUNCHES = 50


@dataclass
class Commands:
    """The command lines (``ncu`` None on the CPU, with ``why_no_ncu``)."""

    nsys: str
    ncu: str | None
    why_no_ncu: str = ""

    def script(self, title: str) -> str:
        """A shell script holding both lines (ncu commented out where it cannot run)."""
        lines = ["#!/bin/sh", f"# {title}", "# Nsight Systems: a timeline of the point's calls", self.nsys, ""]
        if self.ncu:
            lines += ["# Nsight Compute: the top kernels of one call, every section", self.ncu]
        else:
            lines += [f"# Nsight Compute: not for this point ({self.why_no_ncu})"]
        return "\n".join(lines) + "\n"


def base_name(kernel: str) -> str:
    """A kernel's function name from its demangled signature:
    ``void at::native::vectorized_elementwise_kernel<4, F>(int, F)`` -> ``vectorized_elementwise_kernel``."""
    s = kernel.strip().replace("(anonymous namespace)", "anonymous")
    depth, cut = 0, len(s)
    for i, ch in enumerate(s):  # the parameter list: the first "(" outside template brackets
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "(" and depth == 0 and i > 0:
            cut = i
            break
    s = s[:cut]
    out, depth = [], 0
    for ch in s:  # drop template arguments
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif depth == 0:
            out.append(ch)
    name = "".join(out).split()[-1] if "".join(out).split() else s
    return name.split("::")[-1] or kernel


def kernel_regex(kernels: list[str]) -> str | None:
    """The expression after ``regex:`` for ncu's ``--kernel-name``: the base names (the first
    :data:`MAX_KERNELS`), escaped, joined by ``|``; it matches a kernel whose name contains one."""
    names = list(dict.fromkeys(base_name(k) for k in kernels if k.strip()))[:MAX_KERNELS]
    return "|".join(re.escape(n) for n in names) if names else None


def commands(
    repro: Path,
    out_dir: Path,
    device: str,
    python: str = "python",
    kernels: list[str] | None = None,
    launches_per_call: int | None = None,
) -> Commands:
    """The nsys and ncu lines for ``repro`` (the bundle's repro.py), reports under ``out_dir``."""
    run = [python, str(repro)]
    if device != "cuda":
        nsys = ["nsys", "profile", "--trace=osrt", "--sample=process-tree", "--force-overwrite=true"]
        nsys += ["--output", str(out_dir / "nsys-point"), *run, "--calls", str(NSYS_CALLS)]
        return Commands(shlex.join(nsys), None, "ncu profiles CUDA kernels; this point runs on the CPU")
    nsys = ["nsys", "profile", "--trace=cuda,nvtx,osrt", "--cuda-memory-usage=true"]
    nsys += ["--capture-range=cudaProfilerApi", "--capture-range-end=stop", "--force-overwrite=true"]
    nsys += ["--output", str(out_dir / "nsys-point"), *run, "--calls", str(NSYS_CALLS)]
    ncu = ["ncu", "--target-processes", "all", "--profile-from-start", "off"]
    regex = kernel_regex(kernels or [])
    if regex:
        ncu += ["--kernel-name", f"regex:{regex}"]
    if launches_per_call:
        ncu += ["--launch-count", str(min(MAX_LAUNCHES, launches_per_call))]
    ncu += ["--set", NCU_SET, "--import-source", "yes", "--force-overwrite"]
    ncu += ["--export", str(out_dir / "ncu-point"), *run, "--calls", str(NCU_CALLS)]
    return Commands(shlex.join(nsys), shlex.join(ncu))
