"""Compile the causal-product CUDA kernel with nvcc, without a GPU, and report registers and spills.

    python tools/check_cuda_compile.py [--nvcc PATH] [--arch sm_80 --arch sm_90]

nvcc is taken from --nvcc, $NVCC, PATH, $CUDA_HOME/bin, or the pip wheels ``nvidia-cuda-nvcc``
(+ ``nvidia-cuda-runtime``, ``nvidia-cuda-crt`` for the headers; see docs/kernels.md). Include
directories are torch's (``torch.utils.cpp_extension.include_paths()``), so this also proves the
.cu builds against a CPU-only torch wheel. Exit status: 0 compiled everywhere, 1 a compile error
(or spills with --fail-on-spill), 2 no nvcc found.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CU = ROOT / "kernels" / "causal_product" / "causal_product_cuda.cu"
DEFAULT_ARCHS = ("sm_80", "sm_90")


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
_SPILL = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


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
            rows[-1][3], rows[-1][4] = int(m.group(1)), int(m.group(2))
        elif rows and (m := _USED.search(line)):
            rows[-1][2] = int(m.group(1))
    names = _demangle([r[0] for r in rows])
    short = [re.sub(r"causal_product::\(anonymous namespace\)::", "", names[r[0]]) for r in rows]
    return [(s, r[1], r[2], r[3], r[4]) for s, r in zip(short, rows, strict=True)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nvcc", help="path to nvcc (default: $NVCC, PATH, $CUDA_HOME, pip wheels)")
    ap.add_argument("--arch", action="append", help="sm_XX to compile for (repeatable; default sm_80, sm_90)")
    ap.add_argument("--fail-on-spill", action="store_true", help="exit 1 if any kernel spills registers")
    args = ap.parse_args(argv)
    nvcc = find_nvcc(args.nvcc)
    if nvcc is None or not nvcc.is_file():
        print("no nvcc found (PATH, $CUDA_HOME, or pip install nvidia-cuda-nvcc; see docs/kernels.md)")
        return 2
    version = subprocess.run([str(nvcc), "--version"], capture_output=True, text=True).stdout.strip().splitlines()
    print(f"nvcc: {nvcc} ({version[-1] if version else '?'})")
    includes = [str(CU.parent), *torch_include_dirs(), *wheel_include_dirs(nvcc)]
    failed = spilled = False
    for arch in args.arch or DEFAULT_ARCHS:
        rc, log = compile_arch(nvcc, arch, includes)
        if rc != 0:
            print(f"[{arch}] compile FAILED (exit {rc}):\n{log}")
            failed = True
            continue
        rows = parse_ptxas(log)
        print(f"[{arch}] OK, {len(rows)} kernels")
        print(f"  {'regs':>4} {'spill st':>8} {'spill ld':>8}  kernel")
        for name, _, regs, st, ld in rows:
            print(f"  {regs:>4} {st:>8} {ld:>8}  {name}")
            spilled |= st > 0 or ld > 0
    if failed:
        return 1
    if spilled:
        print("some kernels spill registers" + (" (failing: --fail-on-spill)" if args.fail_on_spill else ""))
        if args.fail_on_spill:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
