"""Ahead-of-time compile check of the Triton kernels for sm_80 and sm_90, no GPU needed.

Compiles every kernel of attnbench/impls/_triton_kernels.py (fwd, dq, dk, dv) with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` for a few dtype and head-size
configurations, through the PTX to a cubin with the ptxas that the triton wheel bundles, and
prints shared memory, registers and spills per kernel (spills are reported, not failed).
Exits 1 if any compilation fails.

    PYTHONPATH=$PWD python tools/check_triton_compile.py [--arch 80 90] [--quick]

Configurations use the launch logic of attnbench/impls/chunked_triton.py (kernel_blocks,
chunk_for), so what is checked is what would be launched.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("check_triton_compile: unset TRITON_INTERPRET (the interpreter compiles nothing)")

# Triton 3.9 warns on every run that this default will change; keep today's behaviour (fusion on),
# which is also what a launch on a GPU uses.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as exc:  # pragma: no cover - exercised where triton is absent
    sys.exit(f"check_triton_compile: triton is not installed ({exc})")

from attnbench.impls import _triton_kernels as kern  # noqa: E402
from attnbench.impls.chunked_triton import NUM_STAGES, NUM_WARPS, chunk_for, kernel_blocks  # noqa: E402

TRITON_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}

# (kernel name, kernel, argument names that are tensors of the input dtype, fp32 tensors, i32, fp32)
KERNELS = {
    "fwd": (kern.chunked_fwd_kernel, ["q_ptr", "k_ptr", "v_ptr", "o_ptr"], ["rden_ptr"], ["N", "D", "M"], ["eps"]),
    "dq": (
        kern.chunked_dq_kernel,
        ["q_ptr", "k_ptr", "v_ptr", "o_ptr", "g_ptr", "dq_ptr"],
        ["rden_ptr"],
        ["N", "D", "M"],
        [],
    ),
    "dk": (
        kern.chunked_dk_kernel,
        ["q_ptr", "k_ptr", "v_ptr", "o_ptr", "g_ptr", "dk_ptr"],
        ["rden_ptr"],
        ["N", "D", "M"],
        [],
    ),
    "dv": (kern.chunked_dv_kernel, ["q_ptr", "k_ptr", "g_ptr", "dv_ptr"], ["rden_ptr"], ["N", "D", "M"], []),
}

# (dtype, D, M); the chunk size and blocks follow from chunked_triton's own rules.
FULL_CONFIGS = [
    ("float16", 64, 64),
    ("bfloat16", 64, 64),
    ("float32", 64, 64),
    ("bfloat16", 128, 128),
    ("float16", 32, 96),
]
QUICK_CONFIGS = [("bfloat16", 64, 64), ("float32", 32, 96)]


def signature_for(fn: triton.JITFunction, name: str, dtype: str, d: int, m: int):
    """signature, constexprs and attrs as the runtime would specialise a launch with these sizes."""
    _, elem, f32_ptrs, ints, floats = KERNELS[name]
    ty = TRITON_TYPES[dtype]
    prec = "ieee" if dtype == "float32" else "tf32"  # fp32: torch's default (TF32 matmuls off)
    chunk = chunk_for(None, d, m, prec)
    block_d, block_m = kernel_blocks(d, m)[name]
    constexprs = {"BLOCK_C": chunk, "BLOCK_D": block_d, "BLOCK_M": block_m, "DOT_PREC": prec}
    signature: dict[str, str] = {}
    attrs: dict[tuple[int, ...], list] = {}
    for i, arg in enumerate(fn.arg_names):
        if arg in constexprs:
            signature[arg] = "constexpr"
        elif arg in elem or arg in f32_ptrs:
            signature[arg] = f"*{ty}" if arg in elem else "*fp32"
            attrs[(i,)] = [["tt.divisibility", 16]]  # torch allocations are 16-byte aligned
        elif arg in ints:
            signature[arg] = "i32"
            if {"D": d, "M": m}.get(arg, 1) % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif arg in floats:
            signature[arg] = "fp32"
        else:
            raise KeyError(f"{name}: argument {arg} has no type in KERNELS")
    return signature, constexprs, attrs, chunk


def resource_usage(ptx: str, cc: int) -> str:
    """Registers and spills, from the ptxas triton itself uses, run again with -v ('' if unknown)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas  # private API: degrade gracefully

        ptxas = Path(get_ptxas(cc).path)
    except Exception:
        return ""
    arch = re.search(r"^\.target (\S+)", ptx, re.M)
    if not ptxas.exists() or arch is None:
        return ""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        res = subprocess.run(
            [str(ptxas), "-v", f"--gpu-name={arch[1]}", str(src), "-o", str(Path(tmp) / "k.cubin")],
            capture_output=True, text=True,
        )  # fmt: skip
    regs = re.search(r"Used (\d+) registers", res.stderr)
    spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", res.stderr)
    if not regs or not spill:
        return ""
    return f"regs={regs[1]} spill_st={spill[1]}B spill_ld={spill[2]}B"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities")
    ap.add_argument("--quick", action="store_true", help="two configurations instead of five")
    args = ap.parse_args(argv)
    configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS
    print(f"triton {triton.__version__}; archs {args.arch}; {len(configs)} configs x {len(KERNELS)} kernels")
    failures = 0
    t_all = time.perf_counter()
    for cc in args.arch:
        target = GPUTarget("cuda", cc, 32)
        for dtype, d, m in configs:
            for name, (fn, *_rest) in KERNELS.items():
                sig, consts, attrs, chunk = signature_for(fn, name, dtype, d, m)
                label = (
                    f"sm_{cc} {name:3s} {dtype:8s} D={d:<3d} M={m:<3d} C={chunk:<2d} "
                    f"BD={consts['BLOCK_D']:<3d} BM={consts['BLOCK_M']:<3d}"
                )
                t0 = time.perf_counter()
                try:
                    src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
                    ck = triton.compile(src, target=target, options={"num_warps": NUM_WARPS, "num_stages": NUM_STAGES})
                    if not ck.asm.get("cubin"):
                        raise RuntimeError("no cubin produced")
                except Exception as exc:
                    failures += 1
                    print(f"FAIL {label}: {type(exc).__name__}: {str(exc).strip()[:2000]}")
                    traceback.print_exc(limit=2, file=sys.stdout)
                    continue
                dt = time.perf_counter() - t0
                usage = resource_usage(ck.asm["ptx"], cc)
                print(f"ok   {label} shared={ck.metadata.shared}B {usage} ({dt:.1f}s)")
    print(f"{'FAILED' if failures else 'passed'}: {failures} failure(s) in {time.perf_counter() - t_all:.0f}s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
