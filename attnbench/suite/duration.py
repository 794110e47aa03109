"""How long a suite takes on this machine: an estimate per (point, round) for ``attnbench list``
and the progress line's ETA. Torch-free and pandas-free (``list`` must answer in under a second).

Per (point, round), in this order:

1. a point skipped by the suite's limits costs nothing (no worker);
2. the wall time the same point (same ``point_id``, same device) took in an earlier run under
   ``runs/`` (the most recent :data:`HISTORY_RUNS` runs' journals; the median over its rounds);
3. otherwise the suite's caps: a worker's fixed cost (:data:`WORKER_S`: fork, inputs, the memory
   call and the check of a short point) + ``warmup_s`` + ``max_time_s``. A point whose one call
   outlasts the cap takes longer (with ``single_call_s`` about one call); one that converges
   early takes less.

Rounds after the first are left out for points whose first round took ``extra_rounds_max_s`` or
longer, or was skipped (as the sweep does). The run adds :data:`START_S` (start-up, the fork server, peak
calibration), a first-time kernel build (not estimated: see docs/kernels.md), and the report.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from attnbench.point import Point, TimingConfig

WORKER_S = 0.15
UNAVAILABLE_S = 0.05  # a worker that finds its impl cannot run here
START_S = 4.0
REPORT_S = 10.0  # six charts and two documents; measured 8-29 s on a 2-core machine (idle to loaded)
HISTORY_RUNS = 20


def history(runs_root: Path, device: str, limit: int = HISTORY_RUNS) -> dict[str, list[float]]:
    """point_id -> wall time of each (point, round) measured on ``device`` in the ``limit`` most
    recent runs under ``runs_root`` (unreadable runs are passed over)."""
    try:
        journals = sorted(runs_root.glob("*/journal.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
    except OSError:
        return {}
    seen: dict[str, list[float]] = defaultdict(list)
    for path in journals[:limit]:
        try:
            meta = json.loads((path.parent / "metadata.json").read_text(encoding="utf-8"))
            if meta.get("device") != device:
                continue
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, ValueError):
            continue
        for line in lines:
            try:
                row = json.loads(line)["row"]
                if row.get("status") not in ("skipped",) and isinstance(row.get("wall_s"), (int, float)):
                    seen[str(row["point_id"])].append(float(row["wall_s"]))
            except (ValueError, KeyError, TypeError):
                continue  # a torn last line
    return dict(seen)


@dataclass(frozen=True)
class Estimate:
    """Seconds per (point, round) in sweep order, and how many came from earlier runs."""

    pairs: list[tuple[Point, int, float]]
    from_history: int

    @property
    def sweep_s(self) -> float:
        return sum(s for _p, _r, s in self.pairs)

    def total_s(self, report: bool = True) -> float:
        return START_S + self.sweep_s + (REPORT_S if report else 0.0)


def point_s(point: Point, timing: TimingConfig, seen: dict[str, list[float]], unavailable: bool = False) -> float:
    """One round of ``point`` (see the module docstring)."""
    if point.skip:
        return 0.0
    if point.point_id in seen:
        return statistics.median(seen[point.point_id])
    if unavailable:
        return UNAVAILABLE_S
    return WORKER_S + timing.timer.warmup_s + timing.timer.max_time_s


def estimate(
    points: Iterable[Point],
    timing: TimingConfig,
    seen: dict[str, list[float]] | None = None,
    unavailable: frozenset[str] = frozenset(),
) -> Estimate:
    """Every (point, round) of a sweep of ``points`` with its estimated seconds (``unavailable``:
    impls that cannot run here)."""
    points = list(points)
    return estimate_pairs([(p, r) for r in range(timing.rounds) for p in points], timing, seen, unavailable)


def estimate_pairs(
    pairs: Iterable[tuple[Point, int]],
    timing: TimingConfig,
    seen: dict[str, list[float]] | None = None,
    unavailable: frozenset[str] = frozenset(),
) -> Estimate:
    """The given (point, round) pairs with their estimated seconds; later rounds that the sweep
    will leave out (skipped points, long points) are dropped."""
    seen = seen or {}
    out: list[tuple[Point, int, float]] = []
    hits = 0
    for p, rnd in pairs:
        if rnd > 0 and (p.skip or p.impl in unavailable):  # skipped in round 0: no more rounds
            continue
        s = point_s(p, timing, seen, p.impl in unavailable)
        if rnd > 0 and timing.extra_rounds_max_s is not None and s >= timing.extra_rounds_max_s:
            continue
        hits += p.point_id in seen and not p.skip
        out.append((p, rnd, s))
    return Estimate(out, hits)


class Eta:
    """Time left in a sweep: the estimates of the pairs not yet done, scaled by how the done ones
    compared with theirs (this machine today may be faster or slower than the estimate)."""

    def __init__(self, est: Estimate) -> None:
        self.left = {(p.point_id, r): s for p, r, s in est.pairs}
        self.done_est = 0.0
        self.done_real = 0.0

    def done(self, point_id: str, rnd: int, elapsed_s: float) -> None:
        est = self.left.pop((point_id, rnd), None)
        if est is not None and est > 0:
            self.done_est += est
            self.done_real += elapsed_s

    def skip_to(self, point_id: str, rnd: int, order: list[tuple[str, int]]) -> None:
        """Pairs before ``(point_id, rnd)`` in ``order`` that were left out (later rounds of long
        points) cost nothing."""
        for key in order:
            if key == (point_id, rnd):
                return
            self.left.pop(key, None)

    def seconds(self) -> float:
        scale = self.done_real / self.done_est if self.done_est > 1.0 else 1.0
        return sum(self.left.values()) * min(max(scale, 0.25), 4.0)
