"""Is a point slower in attnbench's worker than in a fresh interpreter? A controlled A/B experiment.

The same measurement (one impl, pass and N; warm-up, then single calls timed one by one) runs in
interleaved pairs of processes:

- ``fresh``: a new interpreter (``python tools/worker_speed.py --child``) that imports torch and
  the impls itself;
- ``worker``: a child of attnbench's fork server (``attnbench.runner.procs.run_child``), as a
  sweep point runs;
- ``worker+display``: the same while the parent draws a rich progress display refreshing
  ``--refresh`` times a second (the run command's display thread).

Per process it reports the median wall time and CPU time per call (``time.process_time``: all
threads; with ``--threads 1`` it does not grow when other processes take the core, so it reads
through a loaded machine), minor page faults and involuntary context switches per call, the
input buffers' offsets within a 4 KiB page and a 2 MiB huge page, the process's huge pages
(AnonHugePages) and its thread count. The order within each pair alternates.

    python tools/worker_speed.py --pairs 6 --threads 1              # sdpa fwd N=2048 (the issue's point)
    python tools/worker_speed.py --pairs 6 --threads 2 --refresh 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]


def _smaps_huge_kib() -> int | None:
    try:
        for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
            if line.startswith("AnonHugePages:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(cfg: dict[str, Any]) -> dict[str, Any]:
    """The measurement both kinds of process run (imports torch and the impls)."""
    import torch

    from attnbench.impls import registry
    from attnbench.measure.inputs import make_inputs, make_pass
    from attnbench.point import Point

    threads_before = len(os.listdir("/proc/self/task"))
    torch.set_num_threads(cfg["threads"])
    point = Point(impl=cfg["impl"], pass_=cfg["pass"], causal=True, dtype="float32", B=1, H=4, N=cfg["N"], D=64, M=64)
    spec = registry.get(point.impl)
    inp = make_inputs(point)
    fn = make_pass(spec.fn, inp, point, dict(spec.params))
    for _ in range(cfg["warmup"]):
        fn()
    walls, cpus = [], []
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(cfg["calls"]):
        w0, c0 = time.perf_counter_ns(), time.process_time_ns()
        fn()
        cpus.append((time.process_time_ns() - c0) / 1e6)
        walls.append((time.perf_counter_ns() - w0) / 1e6)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    n = cfg["calls"]
    return {
        "wall_ms": statistics.median(walls),
        "cpu_ms": statistics.median(cpus),
        "wall_ms_min": min(walls),
        "minflt_per_call": (ru1.ru_minflt - ru0.ru_minflt) / n,
        "ivcsw_per_call": (ru1.ru_nivcsw - ru0.ru_nivcsw) / n,
        "page_offsets": [t.data_ptr() % 4096 for t in (inp.q, inp.k, inp.v)],
        "hugepage_offsets": [t.data_ptr() % (2 << 20) for t in (inp.q, inp.k, inp.v)],
        "anon_huge_kib": _smaps_huge_kib(),
        "threads_before": threads_before,
        "threads_after": len(os.listdir("/proc/self/task")),
    }


def child(cfg: dict[str, Any], conn: Any) -> None:
    """Fork-server child entry (``worker_speed:child``)."""
    conn.send(measure(cfg))
    conn.close()


def run_fresh(cfg: dict[str, Any]) -> dict[str, Any]:
    res = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(cfg)], capture_output=True, text=True, check=True
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def run_worker(cfg: dict[str, Any], refresh: float | None) -> dict[str, Any]:
    from attnbench.runner import procs

    display = None
    if refresh:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        display = Progress(TextColumn("measuring"), BarColumn(), TimeRemainingColumn(), refresh_per_second=refresh)
        display.start()
        display.add_task("x", total=100)
    try:
        res = procs.run_child("worker_speed:child", (cfg,), 300)
    finally:
        if display is not None:
            display.stop()
    return res.messages[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--impl", default="sdpa")
    ap.add_argument("--pass", dest="pass_", default="fwd")
    ap.add_argument("--N", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--refresh", type=float, default=10.0, help="display refreshes per second in worker+display")
    ap.add_argument("--json", dest="as_json", action="store_true")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(measure(json.loads(a.child))))
        return
    cfg = {"impl": a.impl, "pass": a.pass_, "N": a.N, "threads": a.threads, "calls": a.calls, "warmup": a.warmup}
    kinds = ["fresh", "worker", "worker+display"]
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for i in range(a.pairs):
        order = kinds if i % 2 == 0 else kinds[::-1]
        for kind in order:
            r = run_fresh(cfg) if kind == "fresh" else run_worker(cfg, a.refresh if kind == "worker+display" else None)
            out[kind].append(r)
            print(
                f"pair {i} {kind:15s} wall {r['wall_ms']:8.3f} ms  cpu {r['cpu_ms']:8.3f} ms  "
                f"minflt/call {r['minflt_per_call']:7.1f}  ivcsw/call {r['ivcsw_per_call']:5.2f}  "
                f"page offsets {r['page_offsets']}  2M offsets {[o >> 12 for o in r['hugepage_offsets']]} pages  "
                f"huge {r['anon_huge_kib']} KiB  threads {r['threads_before']}->{r['threads_after']}",
                flush=True,
            )
    print(f"\n{cfg}")
    for kind in kinds:
        rs = out[kind]
        w = sorted(r["wall_ms"] for r in rs)
        c = sorted(r["cpu_ms"] for r in rs)
        print(
            f"{kind:15s} wall median {statistics.median(w):8.3f} ms (range {w[0]:.3f}-{w[-1]:.3f})  "
            f"cpu median {statistics.median(c):8.3f} ms (range {c[0]:.3f}-{c[-1]:.3f})  "
            f"minflt/call {statistics.median(r['minflt_per_call'] for r in rs):.1f}"
        )
    if a.as_json:
        print(json.dumps({"config": cfg, "results": out}))


if __name__ == "__main__":  # fork-server children re-import the main module: never run main() there
    main()
