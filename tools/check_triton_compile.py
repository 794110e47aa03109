"""Ahead-of-time compile check of the Triton kernels for sm_80 and sm_90, no GPU needed.

Compiles every kernel of attnbench/impls/_triton_kernels.py with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", cc, 32))`` for a few dtype and head-size
configurations and for every autotune launch configuration of that architecture (``ARCH_LAUNCH``),
through the PTX to a cubin with the ptxas the triton wheel bundles, and prints registers, shared
memory, spills and the occupancy they allow (resident warps per SM on the architecture's published
limits). Exits 1 on a compile failure, on any spill, or on occupancy below the floor
(``MIN_WARPS_PER_SM`` of tools/check_cuda_compile.py, the same budget as the CUDA kernels).

    PYTHONPATH=$PWD python tools/check_triton_compile.py [--arch 80 90] [--quick]

Configurations use the launch logic of attnbench/impls/chunked_triton.py (kernel_blocks, chunk_for),
so what is checked is what would be launched.
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
    sys.exit("check_triton_compile: unset TRITON_INTERPRET (the interpreter compiles nothing)")

# Triton 3.9 warns on every run that this default will change; keep today's behaviour (fusion on),
# which is also what a launch on a GPU uses.
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

try:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
except ImportError as exc:  # pragma: no cover - exercised where triton is absent
    sys.exit(f"check_triton_compile: triton is not installed ({exc})")

from check_cuda_compile import ARCHS, MIN_WARPS_PER_SM, occupancy  # noqa: E402

from attnbench.impls import _triton_kernels as kern  # noqa: E402
from attnbench.impls.chunked_triton import SCAN_BLOCK, chunk_for, kernel_blocks  # noqa: E402

TRITON_TYPES = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
N_REP = 4096  # the sequence length whose integer specialisation (divisibility by 16) is checked

# kernel name -> (kernel, tensors of the input dtype, fp32 tensors, i32 scalars, fp32 scalars, extra constexprs)
KERNELS = {
    "gd": (kern.chunk_gd_kernel, ["g_ptr", "o_ptr"], ["rden_ptr", "gd_ptr"], ["N", "M"], [], {}),
    "state": (
        kern.chunk_state_kernel,
        ["q_ptr", "k_ptr", "v_ptr", "g_ptr"],
        ["rden_ptr", "gd_ptr", "st_ptr"],
        ["N", "D", "M", "NC", "E"],
        [],
        {"BWD": False},
    ),
    "state_bwd": (
        kern.chunk_state_kernel,
        ["q_ptr", "k_ptr", "v_ptr", "g_ptr"],
        ["rden_ptr", "gd_ptr", "st_ptr"],
        ["N", "D", "M", "NC", "E"],
        [],
        {"BWD": True},
    ),
    "scan": (kern.chunk_scan_kernel, [], ["st_ptr"], ["NC", "E", "PRE"], [], {}),
    "fwd": (
        kern.chunk_fwd_kernel,
        ["q_ptr", "k_ptr", "v_ptr", "o_ptr"],
        ["rden_ptr", "st_ptr"],
        ["N", "D", "M", "NC", "E"],
        ["eps"],
        {},
    ),
    "dq": (
        kern.chunk_dq_kernel,
        ["q_ptr", "k_ptr", "v_ptr", "g_ptr", "dq_ptr"],
        ["rden_ptr", "gd_ptr", "st_ptr"],
        ["N", "D", "M", "NC", "E"],
        [],
        {},
    ),
    "dk": (
        kern.chunk_dk_kernel,
        ["q_ptr", "k_ptr", "v_ptr", "g_ptr", "dk_ptr"],
        ["rden_ptr", "gd_ptr", "st_ptr"],
        ["N", "D", "M", "NC", "E"],
        [],
        {},
    ),
    "dv": (
        kern.chunk_dv_kernel,
        ["q_ptr", "k_ptr", "g_ptr", "dv_ptr"],
        ["rden_ptr", "st_ptr"],
        ["N", "D", "M", "NC", "E"],
        [],
        {},
    ),
}

# (dtype, D, M); the chunk size and blocks follow from chunked_triton's own rules.
FULL_CONFIGS = [
    ("float16", 64, 64),
    ("bfloat16", 64, 64),
    ("float32", 64, 64),
    ("float16", 128, 128),
    ("float32", 32, 96),
]
QUICK_CONFIGS = [("bfloat16", 64, 64), ("float32", 32, 96)]


def signature_for(name: str, dtype: str, d: int, m: int) -> tuple[dict, dict, dict, int]:
    """signature, constexprs and attrs as the runtime would specialise a launch with these sizes."""
    fn, elem, f32_ptrs, ints, floats, extra = KERNELS[name]
    ty = TRITON_TYPES[dtype]
    prec = "ieee" if dtype == "float32" else "tf32"  # fp32: torch's default (TF32 matmuls off)
    chunk = chunk_for(None, d, m, prec)
    nc = -(-N_REP // chunk)
    rec = (d * m + d) * (2 if name in ("state_bwd", "dq", "dk", "dv") else 1)
    values = {"N": N_REP, "D": d, "M": m, "NC": nc, "E": rec, "PRE": rec // 2}
    if name == "scan":
        constexprs: dict = {"BLOCK_E": SCAN_BLOCK}
    else:
        block_d, block_m = kernel_blocks(d, m)["state" if name == "state_bwd" else name]
        constexprs = {"BLOCK_C": chunk, "BLOCK_M": block_m, **extra}
        if "D" in ints:
            constexprs["BLOCK_D"] = block_d
        if name != "gd":
            constexprs["DOT_PREC"] = prec
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
            if values[arg] % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
        elif arg in floats:
            signature[arg] = "fp32"
        else:
            raise KeyError(f"{name}: argument {arg} has no type in KERNELS")
    return signature, constexprs, attrs, chunk


def resource_usage(ptx: str, cc: int) -> tuple[int, int, int] | None:
    """(registers, spill store bytes, spill load bytes) from the ptxas triton uses, run again with -v."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas  # private API: degrade gracefully

        ptxas = Path(get_ptxas(cc).path)
    except Exception:
        return None
    arch = re.search(r"^\.target (\S+)", ptx, re.M)
    if not ptxas.exists() or arch is None:
        return None
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
        return None
    return int(regs[1]), int(spill[1]), int(spill[2])


def compile_one(job: tuple[int, str, str, int, int, int, int]) -> tuple[str, str, list[str]]:
    """Compile one (arch, kernel, dtype, D, M, warps, stages): (label, report line, failures)."""
    cc, name, dtype, d, m, warps, stages = job
    fn = KERNELS[name][0]
    sig, consts, attrs, chunk = signature_for(name, dtype, d, m)
    label = (
        f"sm_{cc} {name:9s} {dtype:8s} D={d:<3d} M={m:<3d} C={chunk:<2d} "
        f"BD={consts.get('BLOCK_D', '-')!s:<3} BM={consts.get('BLOCK_M', '-')!s:<3} w={warps} s={stages}"
    )
    t0 = time.perf_counter()
    try:
        src = ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs)
        ck = triton.compile(src, target=GPUTarget("cuda", cc, 32), options={"num_warps": warps, "num_stages": stages})
        if not ck.asm.get("cubin"):
            raise RuntimeError("no cubin produced")
    except Exception as exc:
        return (
            label,
            f"FAIL {label}: {type(exc).__name__}: {str(exc).strip()[:2000]}\n{traceback.format_exc(limit=2)}",
            [f"{label}: compile error"],
        )
    usage = resource_usage(ck.asm["ptx"], cc)
    smem = int(ck.metadata.shared)
    if usage is None:
        return label, f"??   {label} shared={smem}B (no ptxas report)", []
    regs, st, ld = usage
    blocks, limit = occupancy(ARCHS.get(f"sm_{cc}", ARCHS["sm_80"]), regs, smem, warps)
    bad = []
    if st or ld:
        bad.append(f"spills {st}/{ld} B")
    if blocks * warps < MIN_WARPS_PER_SM:
        bad.append(f"{blocks * warps} warps/SM < {MIN_WARPS_PER_SM}")
    line = (
        f"{'FAIL ' if bad else 'ok   '}{label} regs={regs} shared={smem / 1024:.1f}KiB spill={st}/{ld}B "
        f"{blocks} blocks={blocks * warps} warps/SM ({limit}) ({time.perf_counter() - t0:.1f}s)"
        + (f"  <- {', '.join(bad)}" if bad else "")
    )
    return label, line, [f"{label}: {', '.join(bad)}"] if bad else []


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", type=int, nargs="+", default=[80, 90], help="compute capabilities")
    ap.add_argument("--quick", action="store_true", help="two configurations instead of five")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="compiles in parallel")
    args = ap.parse_args(argv)
    configs = QUICK_CONFIGS if args.quick else FULL_CONFIGS
    jobs = []
    for cc in args.arch:
        for dtype, d, m in configs:
            for name in KERNELS:
                _, consts, _, _ = signature_for(name, dtype, d, m)
                is_heavy = kern.heavy(consts.get("BLOCK_D", 16), consts.get("BLOCK_M", 16), consts.get("DOT_PREC"))
                for warps, stages in kern.launch_configs(cc // 10, is_heavy) if name != "scan" else [(4, 2)]:
                    jobs.append((cc, name, dtype, d, m, warps, stages))
    print(
        f"triton {triton.__version__}; archs {args.arch}; {len(configs)} shape configs x {len(KERNELS)} kernels x "
        f"the autotune launch configs of each arch = {len(jobs)} compiles; "
        f"floor: >= {MIN_WARPS_PER_SM} resident warps per SM"
    )
    t_all = time.perf_counter()
    failures: list[str] = []
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for _, line, bad in pool.map(compile_one, jobs):
            print(line, flush=True)
            failures += bad
    print(f"{'FAILED' if failures else 'passed'}: {len(failures)} failure(s) in {time.perf_counter() - t_all:.0f}s")
    for f in failures:
        print(f"  {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
