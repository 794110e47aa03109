"""Rounds as the unit of a comparison, and the page-fault state they are compared in.

A round is one worker process measuring a point; a point of the ``ci`` suite has seven a side.
The samples inside one round are not independent draws of the point's speed: the process has a
state for its whole life (docs/ci.md). So each round becomes one value, and the test sees the
spread between processes (:func:`attnbench.compare.stats.blocked_log_ratio`).

* **A round's value** is the lower quartile of its samples: other processes on the machine only
  ever add time, and the lower quartile tracks the process's own speed while a burst of load
  touches up to three samples in four. Measured on the ci suite (two runs, shared machine): the
  spread between rounds in one state was 4.1 % (median over points, sd of logs) with the lower
  quartile, 6.5 % with the median, 4.8 % with the fastest sample.

* **The state** is the page faults per call of the round (``faults_per_call``, measured in the
  worker after the timing): a process whose allocator hands a large temporary back to the
  kernel at every call pays for faulting it in again (naive softmax forward at N=512: 5.7-6.3 ms
  with 0 faults per call, 11.7-12.8 ms with 3,041). Rounds of both sides are grouped into states
  where their fault counts differ by more than :data:`FAULT_BAND` of the point's time (priced at
  the measured cost of one fault, ``ref_fault_us``). Only states found on both sides are
  compared, each a block of its own (the ratio is estimated within states); a point with fewer
  than ``min_rounds`` rounds a side left is inconclusive and says why.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from attnbench.compare.io import PointData

LOW_QUANTILE = 0.25  # a round's value: this quantile of its samples
FAULT_BAND = 0.10  # a gap in faults per call costing 10 % of the point's time starts another state
OUTLIER_Z = 3.5  # a round this many robust standard deviations slower than its cell's median is set aside
OUTLIER_FLOOR = 0.02  # ... with the rounds' spread taken as at least 2 %
DEFAULT_FAULT_US = 2.5  # cost of a fault when the run did not measure it (2.1-2.9 us measured here)


@dataclass(frozen=True)
class RoundValue:
    """One round of one point: its value (ms) and what is known about its process."""

    round: int
    value: float
    n: int
    faults: float | None = None  # page faults per call
    fault_us: float | None = None  # the cost of one fault in this worker


@dataclass
class Selection:
    """The rounds compared, block by block (fault states found on both sides), or why not."""

    cells: list[tuple[list[RoundValue], list[RoundValue]]]
    base_all: int
    cur_all: int
    levels: list[float | None]  # the fault level (fewest faults per call) of each compared state
    why_not: str | None = None
    outliers: int = 0  # slow outlier rounds set aside

    @property
    def base(self) -> list[RoundValue]:
        return [r for b, _ in self.cells for r in b]

    @property
    def cur(self) -> list[RoundValue]:
        return [r for _, c in self.cells for r in c]

    @property
    def base_kept(self) -> str:
        return f"{len(self.base)}/{self.base_all}"

    @property
    def cur_kept(self) -> str:
        return f"{len(self.cur)}/{self.cur_all}"


def round_values(p: PointData) -> list[RoundValue]:
    """The rounds of ``p`` in round order (one round if the run did not record them)."""
    xs = p.samples or []
    rounds = p.sample_rounds if p.sample_rounds and len(p.sample_rounds) == len(xs) else [0] * len(xs)
    groups: dict[int, list[float]] = {}
    for t, r in zip(xs, rounds, strict=True):
        groups.setdefault(int(r), []).append(float(t))
    order = sorted(groups)
    faults = _aligned(p.round_faults, len(order))
    fault_us = _aligned(p.round_fault_us, len(order))
    return [
        RoundValue(r, float(np.quantile(groups[r], LOW_QUANTILE)), len(groups[r]), faults[i], fault_us[i])
        for i, r in enumerate(order)
    ]


def _aligned(vals: list[float | None] | None, n: int) -> list[float | None]:
    """Per-round values when there is one per round, else unknowns."""
    return list(vals) if vals is not None and len(vals) == n else [None] * n


def select_states(base: list[RoundValue], cur: list[RoundValue], min_rounds: int) -> Selection:
    """The rounds of the fault states found on both sides (see the module docstring), as blocks;
    ``why_not`` when fewer than ``min_rounds`` rounds a side are left."""
    cells, levels, dropped = [], [], []
    states = _states(base, cur)
    slow = _slow_outliers([cell for _, (b, c) in states for cell in (b, c)])
    for level, (b, c) in states:
        b, c = [r for r in b if r not in slow], [r for r in c if r not in slow]
        if b and c:
            cells.append((b, c))
            levels.append(level)
        else:
            dropped.append((level, len(b), len(c)))
    sel = Selection(cells, len(base), len(cur), levels, outliers=len(slow))
    nb, nc = len(sel.base), len(sel.cur)
    if nb >= min_rounds and nc >= min_rounds and nb + nc > len(cells) + 1:
        return sel
    if not dropped:
        sel.why_not = f"too few rounds ({nb} vs {nc}, need {min_rounds} a side)"
    else:
        alone = "; ".join(f"{_fmt_faults(lv)}: {b} vs {c}" for lv, b, c in dropped)
        sel.why_not = (
            f"too few rounds in page-fault states found on both sides ({nb} vs {nc}, need {min_rounds} a side; "
            f"on one side only: {alone})"
        )
    return sel


def _states(base: list[RoundValue], cur: list[RoundValue]) -> list[tuple[float | None, tuple[list, list]]]:
    """Rounds of both sides grouped into fault states, lowest first: (level, (base, cur)).

    Sorted by faults per call, a new state starts where the gap to the previous round's faults
    would cost more than :data:`FAULT_BAND` of the point's fastest round."""
    rounds = [(r, 0) for r in base] + [(r, 1) for r in cur]
    if not rounds or any(r.faults is None for r, _ in rounds):
        return [(None, (list(base), list(cur)))]
    costs = [r.fault_us for r, _ in rounds if r.fault_us is not None and r.fault_us > 0]
    fault_ms = (float(np.median(costs)) if costs else DEFAULT_FAULT_US) / 1e3
    band = FAULT_BAND * min(r.value for r, _ in rounds) / fault_ms  # faults that cost FAULT_BAND of the time
    ordered = sorted(rounds, key=lambda rs: float(rs[0].faults))  # type: ignore[arg-type]
    groups: list[list[tuple[RoundValue, int]]] = [[ordered[0]]]
    for prev, this in zip(ordered, ordered[1:], strict=False):
        if float(this[0].faults) - float(prev[0].faults) > band:  # type: ignore[arg-type]
            groups.append([])
        groups[-1].append(this)
    return [
        (float(g[0][0].faults), ([r for r, s in g if s == 0], [r for r, s in g if s == 1]))  # type: ignore[arg-type]
        for g in groups
    ]


def _slow_outliers(cells: list[list[RoundValue]]) -> set[RoundValue]:
    """Rounds far slower than the others of their side and state: more than :data:`OUTLIER_Z`
    robust standard deviations (1.4826 x the median absolute deviation of every round's log from
    its cell's median, pooled over the cells, at least :data:`OUTLIER_FLOOR`) above the cell's
    median, in cells of at least three rounds. Only slow ones: another process on the machine
    can slow a round down for its whole life, nothing makes one faster."""
    dev = [
        abs(math.log(r.value) - math.log(med))
        for cell in cells
        if len(cell) >= 3
        for med in [float(np.median([x.value for x in cell]))]
        for r in cell
    ]
    if not dev:
        return set()
    scale = max(1.4826 * float(np.median(dev)), OUTLIER_FLOOR)
    out = set()
    for cell in cells:
        if len(cell) >= 3:
            med = float(np.median([x.value for x in cell]))
            out |= {r for r in cell if math.log(r.value) - math.log(med) > OUTLIER_Z * scale}
    return out


def _fmt_faults(level: float | None) -> str:
    if level is None:
        return "all rounds"
    return f"{level:,.0f} faults/call" if level >= 1 or level == 0 else f"{level:.1g} faults/call"


def fault_note(sel: Selection) -> str:
    """', in 2 page-fault states (0 and 3,041 faults/call)' when rounds fault, and how many slow
    outlier rounds were set aside; else ''."""
    out = f", {sel.outliers} slow outlier round{'s' if sel.outliers > 1 else ''} set aside" if sel.outliers else ""
    faulting = [lv for lv in sel.levels if lv is not None and lv >= 1]
    if not faulting:
        return out
    if len(sel.levels) == 1:
        return f", in the {_fmt_faults(faulting[0])} state{out}"
    return f", in {len(sel.levels)} page-fault states ({', '.join(_fmt_faults(lv) for lv in sel.levels)}){out}"
