"""Benchmark the compiled causal-product kernel on CPU: time, peak memory, share of the mm rate; and
the roofline prediction of the CUDA kernels on an A100 and an H100 (docs/kernels.md).

    PYTHONPATH=. python tools/bench_causal_product.py [--impl linear-causal-cpu] [--threads 2]
        [--ns 1024,2048,4096,8192,16384] [--memory-baseline linear-cumsum]
    python tools/bench_causal_product.py --roofline [--dtype float32]

Each point runs in a fresh process (so peak memory is its own): VmHWM from /proc/self/status,
reset by writing 5 to /proc/self/clear_refs once the inputs exist, so "peak MiB" is the working
memory of one forward+backward above the inputs. "% mm" is 12 B H N D M FLOPs / fwdbwd time
against the fp32 torch.mm rate (2048 x 2048) measured with the same thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def _reset_hwm() -> None:
    Path("/proc/self/clear_refs").write_text("5")


def _median_ms(fn, reps: int) -> tuple[float, float]:
    fn()  # warm-up (and the one-time build)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e3, ts[0] * 1e3


def run_point(impl: str, b: int, h: int, n: int, d: int, m: int, threads: int, reps: int, timing: bool) -> dict:
    """One point, in this process: median/min times and peak working memory of fwd+bwd."""
    import torch

    torch.set_num_threads(threads)
    from attnbench.impls.registry import get

    spec = get(impl)
    reason = spec.unavailable_reason("cpu")
    if reason:
        return {"error": reason}
    fn = spec.fn
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(b, h, n, d, generator=gen).requires_grad_() for _ in range(2))
    v = torch.randn(b, h, n, m, generator=gen).requires_grad_()

    def fwd() -> None:
        with torch.no_grad():
            fn(q, k, v, causal=True)

    def fwdbwd() -> None:
        q.grad = k.grad = v.grad = None
        fn(q, k, v, causal=True).sum().backward()

    res: dict = {}
    # Build/load the kernel on a tiny input: a full-size warm-up would leave freed pages in the
    # allocator and hide part of the peak that follows.
    tiny = [t.detach()[:, :, :8].clone().requires_grad_() for t in (q, k, v)]
    fn(*tiny, causal=True).sum().backward()
    base = _status_kib("VmRSS")
    _reset_hwm()
    fwdbwd()
    res["peak_mib"] = (_status_kib("VmHWM") - base) / 1024
    if timing:
        res["fwd_ms"], res["fwd_min_ms"] = _median_ms(fwd, reps)
        res["fwdbwd_ms"], res["fwdbwd_min_ms"] = _median_ms(fwdbwd, reps)
    return res


def mm_gflops(threads: int) -> float:
    import torch

    torch.set_num_threads(threads)
    a, bm = torch.randn(2048, 2048), torch.randn(2048, 2048)
    med, _ = _median_ms(lambda: a @ bm, 5)
    return 2 * 2048**3 / (med * 1e-3) / 1e9


def _spawn(args: argparse.Namespace, impl: str, n: int, timing: bool) -> dict:
    cmd = [sys.executable, __file__, "--point", impl, str(n), "--threads", str(args.threads), "--reps", str(args.reps)]
    cmd += ["--shape", f"{args.b},{args.h},{args.d},{args.m}"] + ([] if timing else ["--no-timing"])
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- roofline prediction of the CUDA kernels (docs/kernels.md) ----
# Vendor peaks (dense, no sparsity): NVIDIA A100 80GB SXM and H100 SXM5 datasheets. fp32_lanes: FP32
# lanes per SM sub-partition (a warp's FMA issues in 32 / lanes cycles), for the old kernel's model.
GPUS = {
    "A100": {"bw": 2.039e12, "fp32": 19.5e12, "tf32": 156e12, "f16": 312e12, "clock": 1.41e9, "fp32_lanes": 16},
    "H100": {"bw": 3.35e12, "fp32": 66.9e12, "tf32": 494.7e12, "f16": 989.4e12, "clock": 1.98e9, "fp32_lanes": 32},
}
LAUNCH_FLOOR_S = 2e-6  # no kernel takes less than this, however little it moves


def _pad16(x: int) -> int:
    return (x + 15) // 16 * 16


def new_kernel_model(n: int, d: int, m: int, eb: int) -> dict[str, list[tuple[float, float, float]]]:
    """Per pass, per kernel: (bytes, 16-bit-mma FLOPs, TF32 FLOPs) per (batch x head) sequence of n
    tokens, from the kernels' own chunk length, state records and products (causal_product_cuda.cu)."""
    dp, mp = _pad16(d), _pad16(m)
    chunk = 64 if eb == 2 and max(dp, mp) <= 64 else 32
    nc = -(-n // chunk)
    rec = (dp * mp + dp) * 4  # bytes of one chunk's state record (S, z) or (R, r)
    tri = (chunk + 16) / (2 * chunk)  # share of the causal L x L tiles computed (16 x 8 tiles, k in 16s)
    intra_d, intra_m, state = 2 * chunk * d * tri, 2 * chunk * m * tri, 2 * d * m  # FLOPs per token
    f16 = eb == 2
    tf32_x = 1 if f16 else 3  # fp32 inputs: every product is 3xTF32

    def k(byt: float, mma16: float, tf32: float) -> tuple[float, float, float]:
        return byt, (mma16 if f16 else 0.0), (tf32 + (0.0 if f16 else mma16)) * tf32_x

    fwd = [
        k(n * eb * (d + m) + nc * rec, n * state, 0),  # state_fwd: S_c = Kf^T V
        k(2 * nc * rec, 0, 0),  # scan
        k(n * eb * (2 * d + 2 * m) + n * 4 + nc * rec, n * (intra_d + intra_m), n * state),  # out
    ]
    bwd = [
        k(n * eb * (2 * d + 3 * m) + n * 8 + 2 * nc * rec, n * state, n * state),  # state_bwd (+ gd)
        k(4 * nc * rec, 0, 0),  # scan, prefix and suffix
        k(n * eb * (3 * d + 2 * m) + n * 8 + nc * rec, 0, n * (intra_m + intra_d + state)),  # dq
        k(n * eb * (3 * d + 3 * m) + n * 8 + nc * rec, n * intra_d, n * (2 * intra_m + intra_d + 2 * state)),  # dkdv
    ]
    return {"fwd": fwd, "fwdbwd": fwd + bwd}


def predict_new(gpu: dict, pass_: str, b: int, h: int, n: int, d: int, m: int, eb: int) -> float:
    """Seconds: each kernel at the larger of its memory time and its math time (tensor-core peaks),
    at least LAUNCH_FLOOR_S; the B*H sequences share the GPU (the grid has B*H*chunks blocks)."""
    total = 0.0
    for byt, mma16, tf32 in new_kernel_model(n, d, m, eb)[pass_]:
        bh = b * h
        total += max(bh * byt / gpu["bw"], bh * mma16 / gpu["f16"] + bh * tf32 / gpu["tf32"], LAUNCH_FLOOR_S)
    return total


def predict_old(gpu: dict, pass_: str, n: int, d: int, m: int) -> float:
    """Seconds for the previous kernel (one block of 64 threads per (batch x head) and 64 state columns,
    each thread walking all n tokens): per token a thread does 2 x 64 dependent FMAs (update and read-out
    of its register state column), and a warp's FMA issues every 32 / fp32_lanes cycles. The forward is
    one such kernel, the backward three (dq, dk, dv) run one after another. Shared-memory staging and
    the per-tile normaliser are left out, so this is the old kernel's best case."""
    cycles_per_token = 2 * max(d, m) * 32 / gpu["fp32_lanes"]
    one = n * cycles_per_token / gpu["clock"]
    return one if pass_ == "fwd" else 4 * one


def roofline_table(dtype: str) -> str:
    eb = {"float32": 4, "float16": 2, "bfloat16": 2}[dtype]
    b, h, d, m = 1, 4, 64, 64
    ns = [512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]
    lines = [
        f"seqlen suite, CUDA points: B={b}, H={h}, D=M={d}, {dtype}. Predicted ms (new / old kernel).",
        "",
        "| N | pass | A100 new | A100 old | H100 new | H100 old | new MB moved | minimal MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for n in ns:
        for pass_ in ("fwd", "fwdbwd"):
            moved = sum(x[0] for x in new_kernel_model(n, d, m, eb)[pass_]) * b * h
            minimal = eb * b * h * n * ((2 * d + 2 * m) + (0 if pass_ == "fwd" else 4 * d + 3 * m))
            cells = []
            for gpu in GPUS.values():
                cells += [
                    f"{predict_new(gpu, pass_, b, h, n, d, m, eb) * 1e3:.3f}",
                    f"{predict_old(gpu, pass_, n, d, m) * 1e3:.2f}",
                ]
            lines.append(f"| {n} | {pass_} | " + " | ".join(cells) + f" | {moved / 1e6:.1f} | {minimal / 1e6:.1f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", default="linear-causal-cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--ns", default="1024,2048,4096,8192,16384")
    ap.add_argument("--shape", default="1,4,64,64", help="B,H,D,M")
    ap.add_argument(
        "--memory-baseline", default="linear-cumsum", help="impl whose fwdbwd peak memory to compare ('' off)"
    )
    ap.add_argument("--baseline-ns", default="1024,16384", help="N values for the baseline memory points")
    ap.add_argument("--point", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    ap.add_argument("--no-timing", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--roofline", action="store_true", help="print the CUDA kernels' A100/H100 prediction table")
    ap.add_argument("--dtype", default="float32", help="dtype of the --roofline table")
    args = ap.parse_args(argv)
    if args.roofline:
        print(roofline_table(args.dtype))
        return 0
    args.b, args.h, args.d, args.m = (int(x) for x in args.shape.split(","))

    if args.point:
        res = run_point(
            args.point[0],
            args.b,
            args.h,
            int(args.point[1]),
            args.d,
            args.m,
            args.threads,
            args.reps,
            not args.no_timing,
        )
        print(json.dumps(res))
        return 0

    rate = mm_gflops(args.threads)
    print(
        f"{args.impl}: fp32, B={args.b} H={args.h} D={args.d} M={args.m}, {args.threads} threads; "
        f"torch.mm 2048^2 fp32: {rate:.1f} GFLOP/s"
    )
    print(f"{'N':>6} {'fwd ms':>8} {'fwdbwd ms':>10} {'(min)':>8} {'peak MiB':>9} {'% mm':>6}")
    rows = {}
    for n in (int(x) for x in args.ns.split(",")):
        r = _spawn(args, args.impl, n, True)
        rows[n] = r
        if "error" in r:
            print(f"{n:>6} error: {r['error']}")
            continue
        flops = 12 * args.b * args.h * n * args.d * args.m
        pct = 100 * flops / (r["fwdbwd_ms"] * 1e-3) / (rate * 1e9)
        print(
            f"{n:>6} {r['fwd_ms']:>8.1f} {r['fwdbwd_ms']:>10.1f} {r['fwdbwd_min_ms']:>8.1f} "
            f"{r['peak_mib']:>9.1f} {pct:>5.1f}%"
        )
    if args.memory_baseline:
        for n in (int(x) for x in args.baseline_ns.split(",")):
            r = _spawn(args, args.memory_baseline, n, False)
            mine = rows.get(n, {}).get("peak_mib")
            if "error" in r:
                print(f"{args.memory_baseline} N={n}: error: {r['error']}")
                continue
            ratio = f", {args.impl} uses 1/{r['peak_mib'] / mine:.0f} of it" if mine else ""
            print(f"{args.memory_baseline} N={n}: fwdbwd peak {r['peak_mib']:.1f} MiB{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
