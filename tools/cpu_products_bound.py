"""How close can the CPU causal-product kernel get to the mm rate on this machine? The time of its
matrix products alone, as a lower bound on its fwd+bwd time, against the run's own torch.mm rate.

    PYTHONPATH=. python tools/cpu_products_bound.py [--N 16384] [--B 1 --H 4 --D 64 --M 64]
        [--threads 2] [--reps 7] [--target 50] [--json]

It compiles tools/cpu_products_bound.cpp (every product of one chunk of the kernel's chunked
decomposition, through the kernel's own gemm, with the kernel's compiler flags; no loads, phi,
transposes, epilogues or stores) and runs it on ``--threads`` threads at once, then calibrates
torch.mm as ``attnbench run`` does (attnbench.measure.peaks.calibrate, same thread count). From these:

- ``bound_ms``: the products' time for the whole fwd+bwd, B*H*ceil(N/C) chunks shared by the threads;
  the kernel cannot be faster than this with these products.
- ``ceiling_pct``: the best ``pct_peak_flops`` the kernel could report with that time (the seqlen
  model's FLOPs, attnbench.measure.roofline.pass_flops, over bound_ms, against the mm rate).
- ``budget_ms``: the fwd+bwd time at which ``pct_peak_flops`` equals ``--target`` per cent, and
  ``products_share_pct``, the share of that budget the products alone take.

Exit 0 with the figures; 2 with a one-line error for bad arguments or a failed build.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tools" / "cpu_products_bound.cpp"
KERNEL_DIR = ROOT / "kernels" / "causal_product"


def kernel_chunk() -> int:
    """Tokens per chunk of the CPU kernel (CP_CHUNK in causal_product_cpu.cpp)."""
    text = (KERNEL_DIR / "causal_product_cpu.cpp").read_text()
    found = re.search(r"#define CP_CHUNK (\d+)", text)
    if not found:
        raise RuntimeError("CP_CHUNK not found in causal_product_cpu.cpp")
    return int(found.group(1))


def build(out_dir: Path) -> Path:
    """Compile the products program with the kernel's CPU flags (less OpenMP, which it does not use)."""
    from attnbench.impls.kernel_build import CPU_FLAGS

    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++ or c++) on PATH")
    exe = out_dir / "cpu_products_bound"
    flags = [f for f in CPU_FLAGS if f != "-fopenmp"]
    cmd = [cxx, *flags, "-std=c++17", "-pthread", f"-I{KERNEL_DIR}", str(SOURCE), "-o", str(exe)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"building {SOURCE.name} failed: {last}")
    return exe


def products_ns(exe: Path, d: int, m: int, c: int, threads: int, reps: int) -> dict[str, float]:
    done = subprocess.run([str(exe), str(d), str(m), str(c), str(threads), str(reps)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{exe.name} failed: {done.stderr.strip()}")
    return json.loads(done.stdout)


def figures(
    prod: dict[str, float],
    b: int,
    h: int,
    n: int,
    d: int,
    m: int,
    c: int,
    threads: int,
    mm_flops_per_s: float,
    target_pct: float,
) -> dict[str, Any]:
    """The bound and what it means for pct_peak_flops, from the per-chunk product times."""
    from attnbench.measure.roofline import pass_flops

    chunks = b * h * math.ceil(n / c)
    ns_chunk = prod["ns_forward"] + prod["ns_prefix"] + prod["ns_suffix"]
    # Whole sequences go to threads when B*H >= threads (the kernel's own split), else chunks do.
    per_thread = math.ceil(b * h / threads) * math.ceil(n / c) if b * h >= threads else math.ceil(chunks / threads)
    bound_s = per_thread * ns_chunk * 1e-9
    model = pass_flops("linear", "fwdbwd", b, h, n, d, m, True)
    macs = prod["macs_forward"] + prod["macs_prefix"] + prod["macs_suffix"]
    budget_s = model / (target_pct / 100.0 * mm_flops_per_s)
    return {
        "B": b,
        "H": h,
        "N": n,
        "D": d,
        "M": m,
        "chunk": c,
        "threads": threads,
        "ns_per_chunk": {k[3:]: prod[k] for k in ("ns_forward", "ns_prefix", "ns_suffix")},
        "real_flops_over_model": round(2 * macs * chunks / model, 3),
        "products_gflops_per_thread": round(2 * macs / ns_chunk, 1),
        "mm_gflops": round(mm_flops_per_s / 1e9, 1),
        "bound_ms": round(bound_s * 1e3, 2),
        "ceiling_pct": round(100.0 * model / bound_s / mm_flops_per_s, 1),
        "target_pct": target_pct,
        "budget_ms": round(budget_s * 1e3, 2),
        "products_share_pct": round(100.0 * bound_s / budget_s, 1),
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("B", 1), ("H", 4), ("N", 16384), ("D", 64), ("M", 64), ("threads", 2), ("reps", 7)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--chunk", type=int, default=None, help="tokens per chunk (default: the kernel's CP_CHUNK)")
    ap.add_argument("--target", type=float, default=50.0, help="pct_peak_flops to compare against (default 50)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    return ap.parse_args(argv)


def check(args: argparse.Namespace) -> str | None:
    for name in ("B", "H", "N", "D", "M", "threads", "reps"):
        if getattr(args, name) < 1:
            return f"--{name}: got {getattr(args, name)}, expected an integer >= 1"
    if args.chunk is not None and (args.chunk < 16 or args.chunk % 16):
        return f"--chunk: got {args.chunk}, expected a multiple of 16"
    if not 0 < args.target <= 100:
        return f"--target: got {args.target:g}, expected a percentage in (0, 100]"
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    err = check(args)
    if err:
        print(f"cpu_products_bound: {err}", file=sys.stderr)
        return 2
    c = args.chunk or kernel_chunk()
    try:
        with tempfile.TemporaryDirectory(prefix="attnbench-bound-") as tmp:
            exe = build(Path(tmp))
            prod = products_ns(exe, args.D, args.M, c, args.threads, args.reps)
    except RuntimeError as e:
        print(f"cpu_products_bound: {e}", file=sys.stderr)
        return 2
    import torch

    from attnbench.measure.peaks import calibrate

    torch.set_num_threads(args.threads)
    mm = calibrate("cpu")["flops_per_s"]["float32"]
    out = figures(prod, args.B, args.H, args.N, args.D, args.M, c, args.threads, mm, args.target)
    if args.json:
        print(json.dumps(out))
        return 0
    ns = out["ns_per_chunk"]
    print(f"B={args.B} H={args.H} N={args.N} D={args.D} M={args.M} fp32, chunk {c}, {args.threads} threads")
    print(
        f"products per chunk: forward {ns['forward']:.0f} ns, prefix {ns['prefix']:.0f} ns, "
        f"suffix {ns['suffix']:.0f} ns ({out['products_gflops_per_thread']} GFLOP/s of real work per thread; "
        f"{out['real_flops_over_model']}x the seqlen model's FLOPs)"
    )
    print(f"torch.mm: {out['mm_gflops']} GFLOP/s")
    print(f"products alone: {out['bound_ms']} ms for fwd+bwd -> pct_peak_flops at most {out['ceiling_pct']} %")
    print(
        f"{args.target:g} % needs fwd+bwd in {out['budget_ms']} ms: the products alone take "
        f"{out['products_share_pct']} % of it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
