"""The machine's shift between two runs, from the reference workload both measured.

Every worker of a CPU run times a fixed workload beside its point (``ref_ms``: a matmul and a
copy that are torch, not the code under test; :mod:`attnbench.measure.reference`). The ratio of
the two runs' typical reference times is how much slower the machine itself was for the current
run. It never comes from the points under test: a regression of every impl leaves it where it
was, and a regression of one impl cannot pull the others along.
"""

from __future__ import annotations

import statistics

from attnbench.compare.io import Side

MIN_REFERENCES = 10  # reference measurements (rounds) a side needs for a shift


def references(side: Side) -> list[float]:
    """Every round's reference time (ms) of the side's measured points."""
    return [
        float(v)
        for p in side.points.values()
        if p.status == "ok" and p.round_ref_ms
        for v in p.round_ref_ms
        if v is not None and v > 0
    ]


def machine_shift(base: Side, cur: Side) -> tuple[float | None, str]:
    """(current / baseline machine speed ratio, or None, and why not when None)."""
    b, c = references(base), references(cur)
    lacking = [name for name, refs in (("the baseline", b), ("the current run", c)) if len(refs) < MIN_REFERENCES]
    if lacking:
        return (
            None,
            f"no machine reference in {' and '.join(lacking)} (runs older than the reference, and GPU runs, have none)",
        )
    return statistics.median(c) / statistics.median(b), ""
