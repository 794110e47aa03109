"""Predict how long a suite's sweep takes under new [timing] settings, from the per-call times and
check costs of an earlier run of it (same machine, same threads): a what-if for the 90-second
budget of issue 16 without running the sweep again.

    python tools/budget.py reports/example-cpu-seqlen/run --suite suites/seqlen.toml

Per (point, round), from the earlier run's median call time c and the time its worker spent
outside the timer (the check's float64 reference, fork and inputs: ``wall_s`` minus its calls):

- c >= single_call_s: one call (time, memory and the check's output) + the check (round 0);
- else: warm-up (calls until warmup_s) + sampling (the earlier run's, capped at max_time_s, at
  least 3 calls past the cap) + the memory call + the check (round 0);
- rounds after the first only when round 0 took less than extra_rounds_max_s.

Prints the sweep's predicted seconds, the worst points and the per-impl totals. It knows nothing
of the machine's load: predict from an idle run.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKER_S = 0.015  # fork, inputs, result, outside the timer: the smallest points, idle, once the CLI is not re-imported per worker


def predict(run_dir: Path, suite: str) -> None:
    import pandas as pd

    from attnbench.results import load_run
    from attnbench.suite import expand, load_suite

    df, _samples, _meta = load_run(run_dir)
    s = load_suite(suite)
    timing = s.timing_config
    t = timing.timer
    keep = {p.point_id for p in expand(s, str(df["device"].iloc[0])) if not p.skip}  # the suite's limits now
    rows = []
    for r in df[(df["status"] == "ok") & df["point_id"].isin(keep)].to_dict("records"):
        c = float(r["time_ms_median"]) / 1e3
        calls = float(r["warmup_calls"]) + float(r["n_samples"]) * float(r["calls_per_sample"]) + 1
        outside = max(float(r["wall_s"]) - calls * c, WORKER_S)  # check + fork + inputs
        check = outside - WORKER_S if r["pass"] == "fwdbwd" else 0.0
        s_old = float(r["n_samples"]) * float(r["calls_per_sample"]) * c
        if t.single_call_s is not None and c >= t.single_call_s:
            first, later = WORKER_S + c + check, WORKER_S + c
        else:
            warm = max(c, math.ceil(t.warmup_s / c) * c)
            if c >= t.max_time_s:
                sample = c
            elif s_old <= t.max_time_s:
                sample = s_old
            else:
                sample = max(t.max_time_s, min(3, t.min_samples) * c)
            first = WORKER_S + warm + sample + c + check
            later = first - check
        total = first
        if timing.rounds > 1 and (timing.extra_rounds_max_s is None or first < timing.extra_rounds_max_s):
            total += (timing.rounds - 1) * later
        rows.append({"impl": r["impl"], "pass": r["pass"], "N": r["N"], "call_s": c, "predicted_s": total})
    pred = pd.DataFrame(rows)
    others = len(df) - len(pred)  # skipped, unavailable here, or beyond the suite's limits now
    print(f"{run_dir}: {len(pred)} measured points, {others} others; timing {timing.to_table()}")
    print(f"predicted sweep: {pred['predicted_s'].sum():.1f} s (+ about {0.03 * others:.1f} s for the others)")
    print(pred.groupby("impl")["predicted_s"].sum().sort_values(ascending=False).round(1).to_string())
    print(pred.sort_values("predicted_s", ascending=False).head(12).round(3).to_string(index=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--suite", default=str(ROOT / "suites" / "seqlen.toml"))
    a = ap.parse_args()
    predict(a.run_dir, a.suite)


if __name__ == "__main__":
    main()
