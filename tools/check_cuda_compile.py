"""Compile the causal-product CUDA kernels with nvcc, without a GPU, and check their resource budget.

    python tools/check_cuda_compile.py [--nvcc PATH] [--arch sm_80 --arch sm_90]

Per kernel and architecture it prints registers (ptxas), shared memory (the kernels' own plan,
``smem_plan`` in kernels/causal_product/causal_product_cuda.h, at the widest head dims of each
instantiation), spills, and the occupancy these allow: resident blocks per SM, limited by registers,
shared memory and warps, on the architecture's published per-SM limits. It fails on any spill and on
any kernel with fewer than MIN_BLOCKS_PER_SM resident blocks (docs/kernels.md, "Resource budget").

nvcc is taken from --nvcc, $NVCC, PATH, $CUDA_HOME/bin, or the pip wheels ``nvidia-cuda-nvcc``
(+ ``nvidia-cuda-runtime``, ``nvidia-cuda-crt``, ``nvidia-nvvm``, ``nvidia-cuda-cccl``; see
docs/kernels.md). Include directories are torch's when torch is importable (the .cu needs none of
them: this proves it builds against a CPU-only torch wheel). Exit status: 0 every kernel compiled
within budget, 1 a compile error, a spill or an occupancy below the floor, 2 no nvcc or no C++ compiler.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "kernels" / "causal_product"
CU = SRC / "causal_product_cuda.cu"
DEFAULT_ARCHS = ("sm_80", "sm_90")

# The floor: every kernel keeps at least this many warps resident per SM (2 blocks of 4 warps here).
# The kernels are memory-bound (docs/kernels.md, roofline): an SM hides DRAM latency with the loads of
# other resident blocks, and each block issues its whole chunk's loads (>= 12 KiB) at once; two blocks
# keep >= 24 KiB in flight per SM, above the ~15 KiB an H100 SM needs by Little's law (3.35 TB/s x
# ~600 ns / 132 SMs) and the ~9 KiB of an A100 SM (2.0 TB/s x ~500 ns / 108 SMs).
MIN_WARPS_PER_SM = 8
THREADS = 128  # kCudaThreads
MIN_BLOCKS_PER_SM = MIN_WARPS_PER_SM // (THREADS // 32)
WARP_ALLOC_REGS = 256  # registers are allocated per warp in units of 256


@dataclass(frozen=True)
class Arch:
    """Per-SM limits from NVIDIA's CUDA C++ Programming Guide (compute capability tables)."""

    regs_per_sm: int = 65536
    max_warps_per_sm: int = 64
    max_blocks_per_sm: int = 32
    smem_per_sm: int = 0  # bytes usable by blocks
    smem_per_block: int = 0  # opt-in maximum for one block
    smem_reserved_per_block: int = 1024  # the system's share of each block's shared memory


ARCHS = {
    "sm_80": Arch(smem_per_sm=164 * 1024, smem_per_block=163 * 1024),  # A100
    "sm_90": Arch(smem_per_sm=228 * 1024, smem_per_block=227 * 1024),  # H100
}
KERN_NAMES = {0: "state_fwd", 1: "state_bwd", 2: "out", 3: "dq", 4: "dkdv"}
DTYPES = {"float": ("fp32", 4), "__half": ("fp16", 2), "__nv_bfloat16": ("bf16", 2)}


def _wheel_dirs() -> list[Path]:
    """site-packages/nvidia/* of this interpreter (where the CUDA pip wheels unpack)."""
    dirs = []
    for key in ("purelib", "platlib"):
        nv = Path(sysconfig.get_paths()[key]) / "nvidia"
        if nv.is_dir():
            dirs += sorted(p for p in nv.iterdir() if p.is_dir())
            dirs += sorted(p for p in (nv / "cu13", nv / "cu12") if p.is_dir())
    return dirs


def find_nvcc(explicit: str | None = None) -> Path | None:
    """The nvcc to use, or None."""
    for cand in (explicit, os.environ.get("NVCC")):
        if cand:
            return Path(cand)
    on_path = shutil.which("nvcc")
    if on_path:
        return Path(on_path)
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").is_file():
        return Path(cuda_home) / "bin" / "nvcc"
    for d in _wheel_dirs():
        if (d / "bin" / "nvcc").is_file():
            return d / "bin" / "nvcc"
    if Path("/usr/local/cuda/bin/nvcc").is_file():
        return Path("/usr/local/cuda/bin/nvcc")
    return None


def wheel_include_dirs(nvcc: Path) -> list[str]:
    """With a pip-wheel nvcc, the headers (cuda_runtime.h, crt/, cuda_fp16.h) live in sibling wheels."""
    if "site-packages" not in str(nvcc):
        return []
    nv = nvcc.resolve().parent.parent.parent  # .../site-packages/nvidia[/cu13]
    return [str(p) for p in sorted(nv.glob("*/include")) if p.is_dir()]


def torch_include_dirs() -> list[str]:
    try:
        from torch.utils.cpp_extension import include_paths

        return list(include_paths())
    except Exception:  # torch is optional for this check: the .cu does not need its headers
        return []


def compile_arch(nvcc: Path, arch: str, includes: list[str]) -> tuple[int, str]:
    cmd = [str(nvcc), "-std=c++17", "-O3", "--use_fast_math", f"-arch={arch}", "-Xptxas", "-v"]
    cmd += [f"-I{p}" for p in includes]
    with tempfile.TemporaryDirectory() as tmp:
        cmd += ["-c", str(CU), "-o", str(Path(tmp) / "k.o")]
        env = dict(os.environ)
        env["PATH"] = f"{nvcc.parent}{os.pathsep}{env.get('PATH', '')}"
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    return proc.returncode, proc.stdout + proc.stderr


_ENTRY = re.compile(r"Compiling entry function '(\S+)' for '(\w+)'")
_USED = re.compile(r"Used (\d+) registers")
_SPILL = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def _demangle(names: list[str]) -> dict[str, str]:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return {n: n for n in names}
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout.splitlines()
    return dict(zip(names, out, strict=True)) if len(out) == len(names) else {n: n for n in names}


def parse_ptxas(log: str) -> list[tuple[str, str, int, int, int]]:
    """(kernel, arch, registers, spill store bytes, spill load bytes) per compiled entry."""
    rows: list[list] = []
    for line in log.splitlines():
        if m := _ENTRY.search(line):
            rows.append([m.group(1), m.group(2), -1, 0, 0])
        elif rows and (m := _SPILL.search(line)):
            rows[-1][3], rows[-1][4] = int(m.group(2)), int(m.group(3))
        elif rows and (m := _USED.search(line)):
            rows[-1][2] = int(m.group(1))
    names = _demangle([r[0] for r in rows])
    short = [re.sub(r"causal_product::\(anonymous namespace\)::", "", names[r[0]]) for r in rows]
    return [(s, r[1], r[2], r[3], r[4]) for s, r in zip(short, rows, strict=True)]


_CHUNK_KERNEL = re.compile(r"chunk_kernel<(\w+), (\d+), \(causal_product::Kern\)(\d)>")


def kernel_key(name: str) -> tuple[str, str, int] | None:
    """('out', 'fp16', 64) for chunk_kernel<__half, 64, (Kern)2>; None for the scan kernel."""
    m = _CHUNK_KERNEL.search(name)
    if m is None:
        return None
    return KERN_NAMES[int(m.group(3))], DTYPES[m.group(1)][0], int(m.group(2))


def smem_table(cxx: str) -> dict[tuple[str, str, int], tuple[int, int]]:
    """(kernel, dtype, width) -> (chunk length L, shared bytes at D = M = width), from the header itself."""
    prog = r"""
#include <cstdio>
#include "causal_product_cuda.h"
using namespace causal_product;
int main() {
  const int ebs[2] = {4, 2};
  const int ws[2] = {64, 128};
  std::printf("[");
  bool first = true;
  for (int eb : ebs)
    for (int w : ws)
      for (int k = 0; k < 5; ++k) {
        const int L = chunk_len_for(eb, w);
        const SmemPlan p = smem_plan(static_cast<Kern>(k), eb, L, w, w);
        std::printf("%s[%d, %d, %d, %d, %d]", first ? "" : ", ", k, eb, w, L, p.bytes);
        first = false;
      }
  std::printf("]\n");
}
"""
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "plan.cpp", Path(tmp) / "plan"
        src.write_text(prog)
        res = subprocess.run([cxx, "-std=c++17", f"-I{SRC}", str(src), "-o", str(exe)], capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"compiling the shared-memory plan failed:\n{res.stderr}")
        rows = json.loads(subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout)
    table = {}
    for k, eb, w, chunk, nbytes in rows:
        for dtype_name, size in DTYPES.values():
            if size == eb:
                table[(KERN_NAMES[k], dtype_name, w)] = (chunk, nbytes)
    return table


def occupancy(arch: Arch, regs: int, smem: int, warps: int = THREADS // 32) -> tuple[int, str]:
    """Resident blocks per SM of ``warps``-warp blocks using ``regs`` registers per thread and ``smem``
    bytes of shared memory, and which limit binds (registers are allocated per warp in 256s)."""
    per_warp = -(-regs * 32 // WARP_ALLOC_REGS) * WARP_ALLOC_REGS
    limits = {
        "warps": arch.max_warps_per_sm // warps,
        "blocks": arch.max_blocks_per_sm,
        "regs": arch.regs_per_sm // (per_warp * warps) if regs > 0 else arch.max_blocks_per_sm,
        "smem": arch.smem_per_sm // (smem + arch.smem_reserved_per_block) if smem > 0 else arch.max_blocks_per_sm,
    }
    if smem > arch.smem_per_block:
        limits["smem"] = 0
    which = min(limits, key=lambda k: limits[k])
    return limits[which], which


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nvcc", help="path to nvcc (default: $NVCC, PATH, $CUDA_HOME, pip wheels)")
    ap.add_argument("--arch", action="append", help="sm_XX to compile for (repeatable; default sm_80, sm_90)")
    args = ap.parse_args(argv)
    nvcc = find_nvcc(args.nvcc)
    if nvcc is None or not nvcc.is_file():
        print("no nvcc found (PATH, $CUDA_HOME, or pip install nvidia-cuda-nvcc; see docs/kernels.md)")
        return 2
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        print("no C++ compiler (c++ / g++ / $CXX) for the shared-memory plan")
        return 2
    version = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    print(f"nvcc: {nvcc} ({version[-1] if version else '?'})")
    smem = smem_table(cxx)
    includes = [str(SRC), *torch_include_dirs(), *wheel_include_dirs(nvcc)]
    failures: list[str] = []
    for arch_name in args.arch or DEFAULT_ARCHS:
        arch = ARCHS.get(arch_name, ARCHS["sm_80"])
        rc, log = compile_arch(nvcc, arch_name, includes)
        if rc != 0:
            print(f"[{arch_name}] compile FAILED (exit {rc}):\n{log}")
            failures.append(f"{arch_name}: compile error")
            continue
        rows = parse_ptxas(log)
        print(f"[{arch_name}] OK, {len(rows)} kernels; floor: >= {MIN_WARPS_PER_SM} resident warps per SM")
        print(f"  {'kernel':<10} {'dtype':<5} {'W':>3} {'L':>3} {'regs':>4} {'smem KiB':>8} {'spill st/ld':>11} "
              f"{'blocks/SM':>9} {'occupancy':>9}  limit")  # fmt: skip
        for name, _, regs, st, ld in sorted(rows):
            key = kernel_key(name)
            if key is None:
                label, dtype, width, chunk, nbytes = name.split("(")[0], "-", 0, 0, 0
            else:
                label, dtype, width = key
                chunk, nbytes = smem[key]
            blocks, limit = occupancy(arch, regs, nbytes)
            occ = 100 * blocks * THREADS // 32 / arch.max_warps_per_sm
            bad = []
            if st or ld:
                bad.append("spills")
            if blocks < MIN_BLOCKS_PER_SM:
                bad.append(f"{blocks} blocks/SM < {MIN_BLOCKS_PER_SM}")
            verdict = "FAIL: " + ", ".join(bad) if bad else "ok"
            print(f"  {label:<10} {dtype:<5} {width or '-':>3} {chunk or '-':>3} {regs:>4} {nbytes / 1024:>8.1f} "
                  f"{st:>5}/{ld:<5} {blocks:>9} {occ:>8.1f}%  {limit:<6} {verdict}")  # fmt: skip
            if bad:
                failures.append(f"{arch_name} {label} {dtype} W={width}: {', '.join(bad)}")
    print("grid at B*H=4, N=16384: " + ", ".join(
        f"{d} D=M={w}: {4 * -(-16384 // smem[('out', d, w)][0])} blocks"
        for d, w in (("fp16", 64), ("fp32", 64), ("fp16", 128))
    ) + " (an H100 has 132 SMs)")  # fmt: skip
    if failures:
        print("FAILED: " + "; ".join(failures))
        return 1
    print("passed: no spills, every kernel at or above the occupancy floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
