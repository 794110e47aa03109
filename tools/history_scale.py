"""Scale figures of the run history: ingest R synthetic runs of P points, then time
`attnbench history show` (one series) and `attnbench history check` (all series), and report
the database size per run.

    python tools/history_scale.py --runs 10000 --points 200 --db /tmp/scale.duckdb

Each run directory is written as `attnbench run` writes one (results.parquet, samples.parquet,
metadata.json, through attnbench.results), ingested with attnbench.history.ingest (one
connection and one transaction per run, as `attnbench run --history` does) and deleted; only
the ingest is timed. Values: every point at its own level with 3 % noise between runs; a few
series get a 10 % step, two drift 3 % per run over the last five runs. Samples: --rounds
rounds of --samples per point. The show/check timings are wall clock of the CLI as a user runs
it (interpreter start included).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def point_ids(n: int) -> list[str]:
    impls = ["softmax", "sdpa", "linear-cumsum", "linear-chunked", "linear-recurrent"]
    out = []
    for i in range(n):
        impl, p = impls[i % len(impls)], ("fwd", "fwdbwd")[(i // len(impls)) % 2]
        out.append(f"{impl}/{p}/causal/float32/B1-H4-N{256 * (1 + i // 10)}-D64-M64")
    return out


def write_run(run_dir: Path, i: int, pids: list[str], levels: np.ndarray, n_runs: int, rounds: int, per: int) -> None:
    from attnbench import results
    from attnbench.point import Record

    rng = np.random.default_rng(i)
    factor = np.exp(rng.normal(0, 0.03, len(pids)))
    factor[:5] *= 1.1 if i >= n_runs // 2 else 1.0  # a 10 % step half way
    factor[5:7] *= 1.03 ** max(0, min(5, i - (n_runs - 6)))  # a drift at the end
    records = []
    for pid, lv, f in zip(pids, levels, factor, strict=True):
        xs = lv * f * np.exp(rng.normal(0, 0.03, (rounds, per)))
        row = {"point_id": pid, "impl": pid.split("/")[0], "pass": pid.split("/")[1], "causal": True,
               "dtype": "float32", "N": int(pid.split("-N")[1].split("-")[0]), "status": "ok", "correct": True,
               "peak_mib": 10.0, "time_ms_median": float(np.median(xs))}  # fmt: skip
        for r in range(rounds):
            records.append(Record({**row, "round": r}, xs[r].tolist()))
    df, samples = results.records_to_frames(records)
    run_dir.mkdir(parents=True)
    df.to_parquet(run_dir / results.RESULTS, index=False)
    samples.to_parquet(run_dir / results.SAMPLES, index=False)
    env = {"device": "cpu", "cpu_model": "Scale CPU", "torch": "2.13.0", "torch_cuda": None, "gpu": None,
           "threads": 1, "git_commit_cwd": f"{i:08x}" + "0" * 32}  # fmt: skip
    t = time.gmtime(1_700_000_000 + 3600 * i)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+0000", t)
    results.write_metadata(run_dir, {"env": env, "suite": {"name": "scale", "path": "scale.toml", "source": ""},
                                     "threads": 1, "device": "cpu", "command": "attnbench run --suite scale",
                                     "started": stamp, "finished": stamp})  # fmt: skip


def cli(*args: str) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "attnbench", *args], capture_output=True, text=True)
    return time.perf_counter() - t0, proc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--points", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--samples", type=int, default=10, help="samples per round")
    ap.add_argument("--db", type=Path, required=True, help="database to create (must not exist, unless --resume)")
    ap.add_argument("--resume", action="store_true", help="add runs to an existing --db (skips ingest timing of those)")
    ap.add_argument("--window", type=int, default=100, help="--window of history check")
    ap.add_argument("--json", type=Path, help="write the figures here too")
    args = ap.parse_args()

    from attnbench.history import ingest
    from attnbench.history.store import connect

    if args.db.exists() and not args.resume:
        sys.exit(f"{args.db} exists; pass --resume to add to it or remove it")
    pids = point_ids(args.points)
    levels = np.random.default_rng(12345).uniform(0.2, 50.0, len(pids))
    start = 0
    if args.db.exists():
        con = connect(args.db)
        start = int(con.execute("SELECT count(*) FROM runs").fetchone()[0])
        con.close()
    work = Path(tempfile.mkdtemp(prefix="history-scale-"))
    ingest_s, t_report = [], time.perf_counter()
    try:
        for i in range(start, args.runs):
            d = work / f"run{i}"
            write_run(d, i, pids, levels, args.runs, args.rounds, args.samples)
            t0 = time.perf_counter()
            ingest(d, args.db)
            ingest_s.append(time.perf_counter() - t0)
            shutil.rmtree(d)
            if (i + 1) % 500 == 0 or i + 1 == args.runs:
                size = args.db.stat().st_size + sum(
                    p.stat().st_size for p in args.db.parent.glob(args.db.name + ".wal")
                )
                print(f"{i + 1} runs: ingest median {1e3 * float(np.median(ingest_s[-500:])):.0f} ms/run, "
                      f"db {size / 2**20:.0f} MiB ({size / (i + 1) / 2**10:.0f} KiB/run), "
                      f"{time.perf_counter() - t_report:.0f} s for the last batch", flush=True)  # fmt: skip
                t_report = time.perf_counter()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = args.db.stat().st_size
    show_s, show = cli("history", "show", "--db", str(args.db), "--point", pids[0], "--last", "20")
    check_s, check = cli("history", "check", "--db", str(args.db), "--window", str(args.window))
    figures = {
        "runs": args.runs,
        "points": args.points,
        "samples_per_point": args.rounds * args.samples,
        "ingest_ms_per_run_median": 1e3 * float(np.median(ingest_s)) if ingest_s else None,
        "ingest_ms_per_run_p90": 1e3 * float(np.quantile(ingest_s, 0.9)) if ingest_s else None,
        "ingest_s_total": float(np.sum(ingest_s)),
        "db_mib": size / 2**20,
        "db_kib_per_run": size / args.runs / 2**10,
        "show_one_series_s": show_s,
        "show_exit": show.returncode,
        "check_all_series_s": check_s,
        "check_exit": check.returncode,
        "check_window": args.window,
        "check_summary": check.stdout.strip().splitlines()[-1] if check.stdout.strip() else check.stderr.strip(),
    }
    print(json.dumps(figures, indent=1))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
