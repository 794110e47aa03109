"""Issue 18's timing check, run on an idle machine (a measurement, not a unit test).

For each impl, `attnbench profile --impl IMPL --set N=4096` (fwd+bwd, one thread, 15 profiled
calls) and the ratio of the top table's self times to the median of the calls timed beside
them without the profiler. Prints one line per impl and a JSON summary; exit 1 when a ratio is
off by more than --tolerance.

    python tools/profile_check.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def one(impl: str, n: int, calls: int, out: Path) -> dict:
    cmd = [
        "attnbench",
        "profile",
        "--impl",
        impl,
        "--set",
        f"N={n}",
        "--threads",
        "1",
        "--calls",
        str(calls),
        "--out",
        str(out),
        "--json",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}: {res.stderr.strip().splitlines()[-1:]}")
    s = json.loads(res.stdout)
    beside = s["profiled"]["unprofiled_ms_median"]
    return {"impl": impl, "self_sum_ms": s["self_sum_ms"], "unprofiled_ms": beside, "ratio": s["self_sum_ms"] / beside}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", action="append", default=None)
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--calls", type=int, default=15)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--tolerance", type=float, default=0.15)
    a = ap.parse_args()
    impls = a.impl or ["linear-chunked", "linear-causal-cpu"]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for r in range(a.repeat):
            for impl in impls:
                row = one(impl, a.n, a.calls, Path(d) / f"{impl}-{r}")
                rows.append(row)
                print(
                    f"{impl:20s} run {r + 1}: self times {row['self_sum_ms']:.1f} ms, "
                    f"unprofiled {row['unprofiled_ms']:.1f} ms, ratio {row['ratio']:.3f}",
                    flush=True,
                )
    bad = False
    for impl in impls:
        rs = [x["ratio"] for x in rows if x["impl"] == impl]
        med = statistics.median(rs)
        print(f"{impl:20s} ratio min {min(rs):.3f} median {med:.3f} max {max(rs):.3f}")
        bad |= abs(med - 1) > a.tolerance
    print(json.dumps(rows))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
