"""How good is the CI gate on this machine? A/A false regressions, injected slowdown and memory growth.

Runs the ``ci`` suite (plus two test-only impls from tests/fixtures/plugin_site: ``slowdown``
and ``extramem``, linear-chunked with work or memory injected through environment variables)
several times and compares the runs with ``attnbench compare --json``:

* A/A: ``--pairs`` pairs of identical runs; every "regressed" verdict is a false regression;
  then every other ordered pair of those runs, for more A/A comparisons from the same runs;
* slowdown: ATTNBENCH_TEST_SLOWDOWN=0.25 against the first A run: the share of the slowdown
  impl's points flagged as regressed, and the regressed points of the other impls;
* memory: ATTNBENCH_TEST_EXTRA_MEMORY=0.10 against the first A run: extramem points flagged;
* guard: the first A run with its torch version edited: compare must exit 2 with one line;
* slow rounds: per point, how many rounds (worker processes) of the A runs were in a slow
  state, and in how many runs every round was (the case the gate cannot tell from a regression).

Usage: PYTHONPATH=$PWD python tools/bench_gate.py [--pairs 3] [--threads 1] [--rounds N] [--out DIR]
Prints a Markdown summary (pasted into docs/ci.md) and writes DIR/bench_gate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SITE = REPO / "tests" / "fixtures" / "plugin_site"
IMPLS = "softmax,sdpa,linear-cumsum,linear-chunked,slowdown,extramem"


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGIN_SITE), str(REPO), env.get("PYTHONPATH", "")])
    env.pop("ATTNBENCH_TEST_SLOWDOWN", None)
    env.pop("ATTNBENCH_TEST_EXTRA_MEMORY", None)
    env.update(extra)
    return env


def attnbench(args: list[str], extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=_env(extra_env or {})
    )


def run(out: Path, threads: int, rounds: int | None, extra_env: dict[str, str] | None = None) -> Path:
    t0 = time.time()
    args = ["run", "--suite", "ci", "--impl", IMPLS, "--out", str(out), "--no-report", "--threads", str(threads)]
    res = attnbench(args + (["--rounds", str(rounds)] if rounds else []), extra_env)
    if res.returncode != 0:
        sys.exit(f"run {out} failed ({res.returncode}): {res.stderr[-2000:]}")
    print(f"  {out.name}: {time.time() - t0:.0f} s {extra_env or ''}", file=sys.stderr)
    return out


def compare(base: Path, cur: Path) -> dict[str, Any]:
    res = attnbench(["compare", str(base), str(cur), "--json"])
    if res.returncode not in (0, 1, 3):
        sys.exit(f"compare failed ({res.returncode}): {res.stderr}")
    return json.loads(res.stdout)


def _by_impl(doc: dict[str, Any], impl: str, verdict: str, reason: str = "") -> tuple[int, int]:
    pts = [p for p in doc["points"] if p["impl"] == impl and p["verdict"] not in ("new", "missing")]
    hit = [p for p in pts if p["verdict"] == verdict and reason in p["reason"]]
    return len(hit), len(pts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_gate")
    ap.add_argument("--rounds", type=int, default=None, help="worker processes per point (default: the suite's)")
    args = ap.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    print(f"bench_gate: {2 * args.pairs + 2} runs of the ci suite, threads={args.threads}", file=sys.stderr)

    a = [run(args.out / f"A{i}", args.threads, args.rounds) for i in range(2)]
    slow = run(args.out / "slow25", args.threads, args.rounds, {"ATTNBENCH_TEST_SLOWDOWN": "0.25"})
    mem = run(args.out / "mem10", args.threads, args.rounds, {"ATTNBENCH_TEST_EXTRA_MEMORY": "0.10"})
    a += [run(args.out / f"A{i}", args.threads, args.rounds) for i in range(2, 2 * args.pairs)]

    report: dict[str, Any] = {"threads": args.threads, "aa": []}
    lines = [
        "| comparison | points | regressed | inconclusive | improved | run-wide shift |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for i in range(args.pairs):
        doc = compare(a[2 * i], a[2 * i + 1])
        c = doc["counts"]
        report["aa"].append({"pair": i, "counts": c, "shift": doc["shift"]})
        lines.append(f"| A/A pair {i + 1} | {len(doc['points'])} | {c['regressed']} | {c['inconclusive']} | "
                     f"{c['improved']} | {(doc['shift'] - 1) * 100:+.1f}% |")  # fmt: skip

    # every other ordered pair of A runs too: more A/A comparisons from the same runs
    extra = [(i, j) for i in range(len(a)) for j in range(len(a)) if i != j and not (i % 2 == 0 and j == i + 1)]
    fp: dict[str, int] = {}
    inconclusive = 0
    for i, j in extra:
        doc = compare(a[i], a[j])
        inconclusive += doc["counts"]["inconclusive"]
        for p in doc["points"]:
            if p["verdict"] == "regressed":
                fp[p["point_id"]] = fp.get(p["point_id"], 0) + 1
    report["aa_all_pairs"] = {"comparisons": len(extra), "regressed": fp, "inconclusive": inconclusive}

    doc = compare(a[0], slow)
    hit, total = _by_impl(doc, "slowdown", "regressed")
    others = [p for p in doc["points"] if p["impl"] != "slowdown" and p["verdict"] == "regressed"]
    ratios = [p["ratio"] for p in doc["points"] if p["impl"] == "slowdown" and p["ratio"]]
    report["slowdown"] = {"flagged": hit, "points": total, "others_regressed": len(others), "ratios": ratios}
    c = doc["counts"]
    lines.append(f"| 25 % slowdown (slowdown impl: {hit}/{total} regressed; other impls: {len(others)} regressed) | "
                 f"{len(doc['points'])} | {c['regressed']} | {c['inconclusive']} | {c['improved']} | {(doc['shift'] - 1) * 100:+.1f}% |")  # fmt: skip

    doc = compare(a[0], mem)
    mhit, mtotal = _by_impl(doc, "extramem", "regressed", "peak memory")
    growth = [
        (p["point_id"], p["cur_mib"] / p["base_mib"] - 1)
        for p in doc["points"]
        if p["impl"] == "extramem" and p["base_mib"] and p["cur_mib"] is not None
    ]
    report["memory"] = {"flagged": mhit, "points": mtotal, "growth": growth}
    c = doc["counts"]
    lines.append(f"| 10 % memory growth (extramem: {mhit}/{mtotal} flagged) | {len(doc['points'])} | {c['regressed']} | "
                 f"{c['inconclusive']} | {c['improved']} | {(doc['shift'] - 1) * 100:+.1f}% |")  # fmt: skip

    other = args.out / "A0-other-torch"
    shutil.copytree(a[0], other)
    meta = json.loads((other / "metadata.json").read_text())
    meta["env"]["torch"] = "0.0.0+other"
    (other / "metadata.json").write_text(json.dumps(meta))
    res = attnbench(["compare", str(a[0]), str(other)])
    report["guard"] = {"exit": res.returncode, "stderr": res.stderr.strip()}

    print("\n".join(lines))
    n_pts = len(doc["points"])
    print(f"\nall other ordered A/A pairs ({len(extra)} comparisons, {len(extra) * n_pts} point comparisons): "
          f"{sum(fp.values())} regressed {fp or ''}, {inconclusive / max(len(extra), 1):.1f} inconclusive per comparison")  # fmt: skip
    print("\nmeasured memory growth of extramem points: " + ", ".join(f"{g * 100:+.1f}%" for _, g in growth))
    print(f"\ndifferent torch versions: exit {res.returncode}: `{res.stderr.strip()}`")
    slow = slow_rounds(a)
    report["slow_rounds"] = slow
    print(
        f"\nrounds in a slow state (median > 1.15 x the lower quartile of the point's round medians over the {len(a)} A runs):"
    )
    for pid, (n_slow, n, all_slow) in sorted(slow.items(), key=lambda kv: -kv[1][0]):
        if n_slow:
            print(f"  {pid}: {n_slow}/{n}" + (f", every round of {all_slow} run(s)" if all_slow else ""))
    (args.out / "bench_gate.json").write_text(json.dumps(report, indent=1))


def slow_rounds(runs: list[Path]) -> dict[str, tuple[int, int, int]]:
    """Per point over ``runs``: (rounds in a slow state, rounds, runs whose every round was slow)."""
    import numpy as np
    import pandas as pd

    per: dict[str, list[tuple[int, float]]] = {}
    for i, r in enumerate(runs):
        smp = pd.read_parquet(r / "samples.parquet")
        for (pid, _), grp in smp.groupby(["point_id", "round"]):
            per.setdefault(str(pid), []).append((i, float(grp["time_ms"].median())))
    out = {}
    for pid, meds in per.items():
        typical_fast = float(np.quantile([m for _, m in meds], 0.25))  # not the rare fastest round
        slow = [i for i, m in meds if m > 1.15 * typical_fast]
        all_slow = sum(1 for i in range(len(runs)) if 0 < slow.count(i) == sum(1 for j, _ in meds if j == i))
        out[pid] = (len(slow), len(meds), all_slow)
    return out


if __name__ == "__main__":
    main()
