"""Detection rates of the history's change points and gate on synthetic series, with the noise
of real ci-suite runs (the parameters and their provenance: tests/test_history_synthetic.py).

    python tools/history_detection_rates.py --seeds 300

For each noise model (stable: lognormal 3.3 %, the noisiest of the ci suite's stable points;
heavy: every observed deviation, slow outliers of linear-chunked included) and each scenario,
the share of seeds where the thing happened. Prints a Markdown table (docs/history.md).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_history_synthetic import GATE, heavy, make_series, stable  # noqa: E402

from attnbench.history.changes import analyse, gate_finding  # noqa: E402

RAMP = [1.03**j for j in range(1, 6)]
SCENARIOS = {
    "10 % step at run 20 of 40: a change point at 20 +/- 1": ([1.0] * 20 + [1.1] * 20, "found"),
    "no step (40 runs): no change point": ([1.0] * 40, "none"),
    "no step (40 runs): history check passes": ([1.0] * 40, "passes"),
    "5 % step (30 + 10 runs): history check passes (threshold 10 %)": ([1.0] * 30 + [1.05] * 10, "passes"),
    "15 % step, 3 runs after it: history check fails": ([1.0] * 30 + [1.15] * 3, "fails"),
    "15 % step, 5 runs after it: history check fails": ([1.0] * 30 + [1.15] * 5, "fails"),
    "3 %/commit drift over 5 commits, then 5 runs: history check fails": ([1.0] * 25 + RAMP + [RAMP[-1]] * 5, "fails"),
    "3 %/commit drift over 5 commits, then 2 runs: history check fails": ([1.0] * 25 + RAMP + [RAMP[-1]] * 2, "fails"),
    "3 %/commit drift, checked at the 5th commit: history check fails": ([1.0] * 25 + RAMP, "fails"),
}


def outcome(levels: list[float], want: str, seed: int, noise) -> bool:
    a = analyse(make_series(levels, seed, noise))
    if want == "found":
        return any(abs(s.index - 20) <= 1 for s in a.steps)
    if want == "none":
        return not a.steps
    failed = gate_finding(a, GATE) is not None
    return failed if want == "fails" else not failed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=300)
    args = ap.parse_args()
    t0 = time.time()
    print(f"| scenario ({args.seeds} seeds each) | stable noise | heavy noise |\n|---|---:|---:|")
    for name, (levels, want) in SCENARIOS.items():
        cells = []
        for noise in (stable, heavy):
            hits = sum(outcome(levels, want, 10_000 + s, noise) for s in range(args.seeds))
            cells.append(f"{100 * hits / args.seeds:.0f} %")
        print(f"| {name} | {cells[0]} | {cells[1]} |", flush=True)
    print(f"\n({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
