"""Is `attnbench compare` a gate on this machine? The experiment of issue 14, end to end.

Every repetition runs the ``ci`` suite exactly as shipped four times and compares the runs with
``attnbench compare --json`` (the suite's own [gate] table):

* ``A`` and ``B``: unchanged code. A/A (A vs B): every regressed or improved point is a false verdict;
* ``S25``: linear-chunked made 25 % slower in its forward and its backward (ATTNBENCH_TEST_SLOW_IMPL,
  read by tests/fixtures/plugin_site), compared against A: its points should be regressed, the
  other impls beside it unchanged;
* ``S20``: every impl made 20 % slower (a code regression of every point; the machine reference,
  torch's own matmul, is untouched), against A: the gate must fail (exit 1).

``--loaded`` runs a second ``ci`` sweep beside every measured run (both cores busy). ``--analyze DIR``
re-reads the runs of an earlier invocation instead of running anything. Prints a Markdown table per
repetition and a summary (what docs/ci.md quotes), and writes DIR/bench_gate.json.

Usage:
  PYTHONPATH=$PWD python tools/bench_gate.py --repetitions 5 --out runs/gate-idle
  PYTHONPATH=$PWD python tools/bench_gate.py --repetitions 5 --loaded --out runs/gate-loaded
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
PLANTED = "linear-chunked"
KINDS = {  # name: (ATTNBENCH_TEST_SLOW_IMPL, what it is)
    "A": ("", "unchanged"),
    "B": ("", "unchanged"),
    "S25": (f"{PLANTED}:0.25", f"{PLANTED} 25 % slower (fwd and bwd)"),
    "S20": ("*:0.20", "every impl 20 % slower"),
}
CHANGED = ("regressed", "improved")


def _env(slow: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGIN_SITE), str(REPO), env.get("PYTHONPATH", "")])
    env.pop("ATTNBENCH_TEST_SLOW_IMPL", None)
    if slow:
        env["ATTNBENCH_TEST_SLOW_IMPL"] = slow
    return env


def attnbench(args: list[str], slow: str = "", **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=_env(slow), **kw
    )


def run_ci(out: Path, slow: str) -> dict[str, Any]:
    t0 = time.time()
    res = attnbench(["run", "--suite", "ci", "--out", str(out), "--no-report"], slow)
    if res.returncode != 0:
        sys.exit(f"run {out} failed ({res.returncode}): {res.stderr[-2000:]}")
    took = time.time() - t0
    print(f"  {out.name}: {took:.0f} s, load {os.getloadavg()[0]:.1f} {slow or ''}", file=sys.stderr)
    return {"seconds": took, "load": os.getloadavg()[0]}


class Beside:
    """A second ci sweep running beside the measured ones, over and over, until stopped."""

    def __init__(self, scratch: Path):
        self.scratch = scratch
        script = (
            "import itertools, shutil, subprocess, sys\n"
            "for i in itertools.count():\n"
            f"    out = {str(scratch)!r} + f'/bg{{i % 2}}'\n"
            "    shutil.rmtree(out, ignore_errors=True)\n"
            "    subprocess.run([sys.executable, '-m', 'attnbench', 'run', '--suite', 'ci', '--no-report', "
            "'--out', out], capture_output=True)\n"
        )
        self.proc = subprocess.Popen([sys.executable, "-c", script], env=_env(""), start_new_session=True)

    def stop(self) -> None:
        os.killpg(self.proc.pid, 15)
        self.proc.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)


def compare(base: Path, cur: Path) -> dict[str, Any]:
    res = attnbench(["compare", str(base), str(cur), "--json"])
    if res.returncode not in (0, 1, 3):
        sys.exit(f"compare failed ({res.returncode}): {res.stderr}")
    doc = json.loads(res.stdout)
    doc["exit"] = res.returncode
    return doc


def _impl_counts(doc: dict[str, Any], impl: str | None, others: bool = False) -> dict[str, int]:
    pts = [p for p in doc["points"] if p["verdict"] not in ("new", "missing") and p["status_ok"]]
    if impl is not None:
        pts = [p for p in pts if (p["impl"] != impl) == others]
    out: dict[str, int] = {"points": len(pts)}
    for p in pts:
        out[p["verdict"]] = out.get(p["verdict"], 0) + 1
    return out


def summarize(doc: dict[str, Any]) -> dict[str, Any]:
    for p in doc["points"]:
        p["status_ok"] = not p["reason"].startswith(("skipped", "still failing"))
    return {
        "exit": doc["exit"],
        "run_failures": doc["failures"],
        "shift": doc["shift"],
        "shift_measured": doc["shift_measured"],
        "all": _impl_counts(doc, None),
        "planted": _impl_counts(doc, PLANTED),
        "others": _impl_counts(doc, PLANTED, others=True),
        "planted_ratios": {p["point_id"]: p["ratio"] for p in doc["points"] if p["impl"] == PLANTED},
        "changed": [(p["point_id"], p["verdict"], p["reason"]) for p in doc["points"] if p["verdict"] in CHANGED],
        "inconclusive": [(p["point_id"], p["reason"]) for p in doc["points"] if p["verdict"] == "inconclusive"],
    }


def fault_tally(runs: list[Path]) -> dict[str, tuple[int, int]]:
    """Per point over ``runs``: (rounds whose faults cost >= 10 % of the point's fastest round, rounds)."""
    import pandas as pd

    out: dict[str, list[int]] = {}
    for r in runs:
        df = pd.read_parquet(r / "results.parquet")
        for row in df.to_dict(orient="records"):
            faults, us, meds = (
                row.get("round_faults_per_call"),
                row.get("round_ref_fault_us"),
                row.get("round_medians_ms"),
            )
            if faults is None or us is None or meds is None or row.get("status") != "ok":
                continue
            fastest = min(meds)
            lo = min(faults)
            slow = sum(1 for f, u in zip(faults, us, strict=False) if (f - lo) * (u or 2.5) / 1e3 >= 0.1 * fastest)
            acc = out.setdefault(str(row["point_id"]), [0, 0])
            acc[0] += slow
            acc[1] += len(faults)
    return {k: (v[0], v[1]) for k, v in out.items()}


def _fmt_counts(c: dict[str, int]) -> str:
    return f"{c.get('regressed', 0)}/{c.get('inconclusive', 0)}/{c.get('improved', 0)}/{c.get('unchanged', 0)}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repetitions", type=int, default=5)
    ap.add_argument("--loaded", action="store_true", help="run a second ci sweep beside every measured run")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench_gate")
    ap.add_argument("--analyze", action="store_true", help="re-read the runs already in --out; run nothing")
    ap.add_argument("--label", help="heading of the table (default: idle or loaded, as the runs were made)")
    args = ap.parse_args()
    reps = list(range(args.repetitions))
    if not args.analyze:
        shutil.rmtree(args.out, ignore_errors=True)
        args.out.mkdir(parents=True)
        print(f"bench_gate: {len(reps)} repetitions x {len(KINDS)} runs of the ci suite"
              f"{', a second sweep beside' if args.loaded else ''}", file=sys.stderr)  # fmt: skip
        beside = Beside(args.out / "beside") if args.loaded else None
        timings: dict[str, Any] = {}
        try:
            for rep in reps:
                for kind, (slow, _what) in KINDS.items():
                    timings[f"{rep}/{kind}"] = run_ci(args.out / f"r{rep}-{kind}", slow)
        finally:
            if beside is not None:
                beside.stop()
        (args.out / "timings.json").write_text(json.dumps(timings, indent=1))
        experiment = {"loaded": args.loaded, "repetitions": len(reps), "finished": time.strftime("%Y-%m-%d %H:%M"),
                      "command": " ".join(sys.argv)}  # fmt: skip
        (args.out / "experiment.json").write_text(json.dumps(experiment, indent=1))
    timings = json.loads((args.out / "timings.json").read_text()) if (args.out / "timings.json").exists() else {}
    done = args.out / "experiment.json"
    experiment = json.loads(done.read_text()) if done.exists() else {}
    loaded = experiment.get("loaded", args.loaded)

    report: dict[str, Any] = {"loaded": loaded, "experiment": experiment, "repetitions": []}
    lines = [
        "| rep | comparison | exit | run-level failure | machine ref | all: reg/inc/imp/unch | linear-chunked | other impls | false verdicts |",
        "|---:|---|---:|---|---:|---|---|---|---|",
    ]
    for rep in reps:
        run = {k: args.out / f"r{rep}-{k}" for k in KINDS}
        got = {
            "A/A": summarize(compare(run["A"], run["B"])),
            "25 % linear-chunked": summarize(compare(run["A"], run["S25"])),
            "20 % every impl": summarize(compare(run["A"], run["S20"])),
        }
        report["repetitions"].append(got)
        for name, s in got.items():
            shift = f"{(s['shift'] - 1) * 100:+.1f}%" if s["shift_measured"] else "none"
            false = [f"{pid} {v}" for pid, v, _ in s["changed"] if name == "A/A" or not pid.startswith(PLANTED)]
            if name == "20 % every impl":
                false = [f"{pid} {v}" for pid, v, _ in s["changed"] if v == "improved"]
            run_fail = "every point slower" if any("every point is slower" in f for f in s["run_failures"]) else ""
            run_fail = run_fail or ("; ".join(s["run_failures"])[:60])
            lines.append(f"| {rep + 1} | {name} | {s['exit']} | {run_fail} | {shift} | {_fmt_counts(s['all'])} | "
                         f"{_fmt_counts(s['planted'])} | {_fmt_counts(s['others'])} | {', '.join(false)} |")  # fmt: skip

    heading = args.label or ("Loaded (a second ci sweep beside)" if loaded else "Idle")
    print(f"\n{heading}: {len(reps)} repetitions of the ci suite as shipped"
          f"{', ' + experiment['finished'] if experiment.get('finished') else ''}; "
          "counts are regressed/inconclusive/improved/unchanged\n")  # fmt: skip
    print("\n".join(lines))
    aa = [len(r["A/A"]["changed"]) for r in report["repetitions"]]
    s25 = [r["25 % linear-chunked"] for r in report["repetitions"]]
    s20 = [r["20 % every impl"] for r in report["repetitions"]]
    print("\nSummary")
    print(f"- A/A: points with a changed verdict per repetition: {aa}")
    print("- 25 % linear-chunked: its points regressed per repetition: "
          + str([f"{s['planted'].get('regressed', 0)}/{s['planted']['points']}" for s in s25])
          + "; other impls changed: " + str([s["others"].get("regressed", 0) + s["others"].get("improved", 0) for s in s25]))  # fmt: skip
    print("- 20 % every impl: exit codes " + str([s["exit"] for s in s20]) + "; points regressed: "
          + str([f"{s['all'].get('regressed', 0)}/{s['all']['points']}" for s in s20])
          + "; run-level failure (every point slower): "
          + str([any("every point is slower" in f for f in s["run_failures"]) for s in s20]))  # fmt: skip
    ratios = [r for s in s25 for r in s["planted_ratios"].values() if r]
    if ratios:
        print(f"- measured slowdown of the planted impl (its points, all repetitions): "
              f"{(min(ratios) - 1) * 100:+.0f}% to {(max(ratios) - 1) * 100:+.0f}%")  # fmt: skip
    shifts = [r[k]["shift"] for r in report["repetitions"] for k in r if r[k]["shift_measured"]]
    if shifts:
        print(
            f"- machine reference shift between runs: {(min(shifts) - 1) * 100:+.1f}% to {(max(shifts) - 1) * 100:+.1f}%"
        )
    if timings:
        secs = [t["seconds"] for t in timings.values()]
        loads = [t["load"] for t in timings.values()]
        print(f"- run time {min(secs):.0f}-{max(secs):.0f} s; 1-minute load average at the end of a run "
              f"{min(loads):.1f}-{max(loads):.1f}")  # fmt: skip
    reasons: dict[str, int] = {}
    for r in report["repetitions"]:
        for name in ("A/A", "25 % linear-chunked"):
            for pid, why in r[name]["inconclusive"]:
                key = f"{pid.split('/')[0]}: " + why.split(" (")[0].split(", rounds")[0][:60]
                reasons[key] = reasons.get(key, 0) + 1
    if reasons:
        print("- inconclusive verdicts (A/A and 25 % comparisons), by impl and reason:")
        for key, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:12]:
            print(f"  {n} x {key}")
    tally = fault_tally([args.out / f"r{rep}-{k}" for rep in reps for k in ("A", "B")])
    if tally:
        print("- rounds in a page-fault state (faults costing >= 10 % of the point's fastest round), A and B runs:")
        for pid, (n, total) in sorted(tally.items(), key=lambda kv: -kv[1][0]):
            if n:
                print(f"  {pid}: {n}/{total}")
    for rep, r in enumerate(report["repetitions"]):
        for pid, v, why in r["A/A"]["changed"] + r["25 % linear-chunked"]["changed"]:
            if not pid.startswith(PLANTED):
                print(f"- false verdict, repetition {rep + 1}: {pid} {v}: {why}")
    (args.out / "bench_gate.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
