"""Benchmark the compiled causal-product kernel on CPU: time, peak memory, share of the mm rate.

    PYTHONPATH=. python tools/bench_causal_product.py [--impl linear-causal-cpu] [--threads 2]
        [--ns 1024,2048,4096,8192,16384] [--memory-baseline linear-cumsum]

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
    args = ap.parse_args(argv)
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
