"""A verdict per point, and the exit code of the whole comparison (docs/ci.md has the why).

Latency rule, when both sides ran and are correct:

0. **The machine's shift** ``s`` (:mod:`attnbench.compare.machine`) comes from the reference
   workload both runs measured in every worker, never from the points under test; the current
   side is divided by it when ``normalize`` is on (without a reference on both sides: ``s = 1``,
   said in a note).
1. **Rounds are the unit** where both sides have several (:mod:`attnbench.compare.rounds`): one
   value per worker process (the lower quartile of its samples), compared only between rounds in
   the same page-fault state (states found on both sides are blocks), at least ``min_rounds`` a
   side, else **inconclusive** with the reason. Least squares on their logarithms with a level
   per state gives the ratio, its t-test and its interval at ``confidence``. Single-round sides (older runs, pytest-benchmark files) fall back to the
   samples: Mann-Whitney U, a bootstrap interval of the ratio of medians, ``min_samples`` a
   side, and the fastest samples must move too (load only ever adds time).
2. p-values of all points are adjusted with Benjamini-Hochberg (``alpha`` is the false discovery
   rate over the sweep).
3. **regressed**: significant and the interval's lower end beyond every latency threshold.
   **improved**: the mirror image, and neither side noisy (``noise_reasons``: a noisy point is
   weaker evidence and never counts as an improvement). **unchanged**: the interval inside the
   thresholds (evidence of no change, not merely no evidence of one). Anything else is
   **inconclusive**, with the reason.

Memory: every memory check exceeded -> regressed (peak memory is near-deterministic).
Failures are states: "introduced a failure" (status not ok, or ``correct`` False, where the
baseline was fine, or a new point that fails) and "fixed a failure" are verdicts of their own.
The run: more than ``max_missing`` of the baseline's points missing from the current run fails
the gate (exit 1) unless allowed; an interrupted run is said to be one; every point slower
together beyond the threshold (their typical ratio's interval, the machine divided out) fails
it too, even where no single point's rounds could settle it.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import numpy as np
import scipy.stats

from attnbench.compare import stats
from attnbench.compare.io import PointData, Side
from attnbench.compare.machine import machine_shift
from attnbench.compare.rounds import fault_note, round_values, select_states
from attnbench.gate import GateConfig

EXIT_PASS, EXIT_REGRESSION, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3
MIN_RUN_POINTS = 6  # tested points the whole-run check needs


class Verdict(str, Enum):
    IMPROVED = "improved"
    UNCHANGED = "unchanged"
    REGRESSED = "regressed"
    INCONCLUSIVE = "inconclusive"
    FAILURE = "introduced a failure"
    FIXED = "fixed a failure"
    NEW = "new"
    MISSING = "missing"


@dataclass
class PointVerdict:
    """The verdict on one point and the numbers behind it (ratios are current / baseline, the
    current side divided by the machine's shift)."""

    point_id: str
    impl: str
    verdict: Verdict
    reason: str = ""
    base_ms: float | None = None  # rounds: geometric mean of the lowest compared state's rounds; else the median
    cur_ms: float | None = None  # as measured (not divided by the shift)
    ratio: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    fast_ratio: float | None = None  # single-round sides: ratio of the fastest samples
    p: float | None = None
    q: float | None = None
    base_mib: float | None = None
    cur_mib: float | None = None
    base_rounds: str | None = None  # "compared/all" rounds of the baseline, e.g. "5/7"
    cur_rounds: str | None = None
    unit: str | None = None  # "rounds" or "samples": what the test counted
    noisy: str | None = None  # why either side is noisy

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d


@dataclass
class Comparison:
    """All verdicts, the machine's shift that was divided out, the config used, and run-level
    failures (too many missing points)."""

    base_label: str
    cur_label: str
    verdicts: list[PointVerdict]
    shift: float
    config: GateConfig
    notes: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    shift_measured: bool = False  # the shift came from both runs' machine reference

    def counts(self) -> dict[str, int]:
        c = Counter(v.verdict for v in self.verdicts)
        return {k.value: c.get(k, 0) for k in Verdict}

    def exit_code(self, fail_on_inconclusive: bool = False) -> int:
        kinds = {v.verdict for v in self.verdicts}
        if Verdict.REGRESSED in kinds or Verdict.FAILURE in kinds or self.failures:
            return EXIT_REGRESSION
        if fail_on_inconclusive and Verdict.INCONCLUSIVE in kinds:
            return EXIT_INCONCLUSIVE
        return EXIT_PASS


def structural_verdict(
    b: PointData | None, c: PointData | None, base: str = "the baseline", absent: str = "the baseline"
) -> tuple[Verdict, str] | None:
    """Verdicts decided by presence and status alone; None when both ran fine. ``base`` names
    the baseline's side in reasons (the history gate: "the newest history run"), ``absent``
    where a new point is missing from ("the history")."""
    if b is None:
        assert c is not None
        return (
            (Verdict.FAILURE, f"new point fails: {c.error or c.status}")
            if c.failed
            else (Verdict.NEW, f"not in {absent}")
        )
    if c is None:
        return Verdict.MISSING, "not in the current run"
    if c.failed and not b.failed:
        return Verdict.FAILURE, c.error or ("incorrect result" if c.correct is False else c.status)
    if b.failed and not c.failed:
        if c.status == "skipped":
            return Verdict.MISSING, f"failed in {base}, skipped now: {c.error or ''}".strip()
        return Verdict.FIXED, f"{base.removeprefix('the ')}: {b.error or b.status}"
    if b.failed and c.failed:
        return Verdict.UNCHANGED, f"still failing: {c.error or c.status}"
    if b.status == "skipped" and c.status == "skipped":
        return Verdict.UNCHANGED, "skipped on both sides"
    if c.status == "skipped":
        return Verdict.MISSING, f"skipped now: {c.error or ''}".strip()
    if b.status == "skipped":
        return Verdict.NEW, f"skipped in {base}, ran now"
    return None


def _pct(r: float) -> str:
    return f"{(r - 1) * 100:+.1f}%"


@dataclass
class _Test:
    """A point whose latency was tested: its verdict record and what the verdict needs."""

    pv: PointVerdict
    note: str = ""  # appended to the reason: rounds compared, the fault state
    base_fast: float | None = None  # single-round sides: the fastest samples
    cur_fast: float | None = None


def _test_rounds(pv: PointVerdict, b: PointData, c: PointData, shift: float, cfg: GateConfig) -> _Test | str:
    """Rounds as the unit (see the module docstring); the reason when the point cannot be tested."""
    sel = select_states(round_values(b), round_values(c), cfg.min_rounds)
    pv.unit, pv.base_rounds, pv.cur_rounds = "rounds", sel.base_kept, sel.cur_kept
    if sel.why_not:
        return sel.why_not
    low_b, low_c = sel.cells[0]  # shown: the typical round of the lowest state compared
    pv.base_ms, pv.cur_ms = _gmean([r.value for r in low_b]), _gmean([r.value for r in low_c])
    cells = [([r.value for r in bc], [r.value / shift for r in cc]) for bc, cc in sel.cells]
    pv.p, pv.ratio, pv.ci_low, pv.ci_high = stats.blocked_log_ratio(cells, cfg.confidence)
    return _Test(pv, f", rounds {sel.base_kept} vs {sel.cur_kept}" + fault_note(sel))


def _test_samples(pv: PointVerdict, b: PointData, c: PointData, shift: float, cfg: GateConfig) -> _Test | str:
    """Samples as the unit, for single-round sides."""
    bs, cs = list(b.samples or []), list(c.samples or [])
    pv.unit = "samples"
    if len(bs) < cfg.min_samples or len(cs) < cfg.min_samples:
        return f"too few samples to decide ({len(bs)} vs {len(cs)}, need {cfg.min_samples})"
    pv.base_ms, pv.cur_ms = float(np.median(bs)), float(np.median(cs))
    scaled = [x * shift for x in bs]
    pv.p = stats.mann_whitney_p(scaled, cs)
    pv.ci_low, pv.ci_high = stats.bootstrap_ratio_ci(scaled, cs, cfg.confidence)
    pv.ratio = pv.cur_ms / (pv.base_ms * shift)
    pv.fast_ratio = min(cs) / (min(bs) * shift)
    note = ", samples (one round a side: a process state cannot be told from a change)"
    return _Test(pv, note, min(bs) * shift, min(cs))


def _gmean(xs: list[float]) -> float:
    return float(math.exp(sum(math.log(x) for x in xs) / len(xs)))


def _latency(t: _Test, cfg: GateConfig) -> tuple[Verdict, str]:
    """Latency verdict of a tested point (p, q, interval filled in)."""
    pv = t.pv
    checks = cfg.for_field("latency")
    if not checks:
        return Verdict.UNCHANGED, ""
    assert pv.ratio is not None and pv.ci_low is not None and pv.ci_high is not None and pv.base_ms is not None
    base, lo, hi = pv.base_ms, pv.ci_low, pv.ci_high
    sig = pv.q is not None and pv.q <= cfg.alpha
    above = all(k.exceeds(base, base * lo) for k in checks)  # the whole interval past every threshold
    below = all(k.improves(base, base * hi) for k in checks)
    # the fastest samples must move too (single-round sides only: load adds time, never removes it)
    bf, cf = t.base_fast, t.cur_fast
    fast_up = bf is None or cf is None or all(k.exceeds(bf, cf) for k in checks)
    fast_down = bf is None or cf is None or all(k.improves(bf, cf) for k in checks)
    what = f"latency {_pct(pv.ratio)} (CI {_pct(lo)}..{_pct(hi)}, q={pv.q:.2g}{t.note})"
    if sig and above and fast_up:
        return Verdict.REGRESSED, what
    if sig and below and fast_down:
        if pv.noisy:
            return Verdict.INCONCLUSIVE, f"{what} but noisy ({pv.noisy}): not counted as an improvement"
        return Verdict.IMPROVED, what
    if not all(k.exceeds(base, base * hi) for k in checks) and not all(k.improves(base, base * lo) for k in checks):
        return Verdict.UNCHANGED, ""
    if (sig and above) or (sig and below):
        why = f"fastest samples moved only {_pct(pv.fast_ratio or 1.0)} (contention?)"
    else:
        why = (
            "" if sig else f"not significant (q={pv.q:.2g}), "
        ) + f"CI {_pct(lo)}..{_pct(hi)} reaches past the threshold"
    return Verdict.INCONCLUSIVE, f"latency {_pct(pv.ratio)} but {why}{t.note}"


def _memory(b: PointData, c: PointData, cfg: GateConfig) -> tuple[Verdict, str]:
    checks = cfg.for_field("memory")
    if not checks or b.peak_mib is None or c.peak_mib is None:
        return Verdict.UNCHANGED, ""
    text = f"peak memory {b.peak_mib:.4g} -> {c.peak_mib:.4g} MiB"
    if all(k.exceeds(b.peak_mib, c.peak_mib) for k in checks):
        return Verdict.REGRESSED, text
    if all(k.improves(b.peak_mib, c.peak_mib) for k in checks):
        return Verdict.IMPROVED, text
    return Verdict.UNCHANGED, ""


def compare(base: Side, cur: Side, cfg: GateConfig | None = None) -> Comparison:
    """Verdicts for every point of either side (baseline order first, then new points)."""
    cfg = cfg or GateConfig()
    measured, why_none = machine_shift(base, cur)
    shift = measured if (cfg.normalize and measured is not None) else 1.0
    ids = list(base.points) + [p for p in cur.points if p not in base.points]
    out: list[PointVerdict] = []
    tested: list[_Test] = []
    pending: dict[str, tuple[Verdict, str]] = {}
    for pid in ids:
        b, c = base.points.get(pid), cur.points.get(pid)
        pv = PointVerdict(pid, (c or b).impl, Verdict.UNCHANGED)  # type: ignore[union-attr]
        if b is not None:
            pv.base_ms, pv.base_mib = b.median, b.peak_mib
        if c is not None:
            pv.cur_ms, pv.cur_mib = c.median, c.peak_mib
        out.append(pv)
        decided = structural_verdict(b, c)
        if decided is not None:
            pv.verdict, pv.reason = decided
            continue
        assert b is not None and c is not None
        pv.noisy = "; ".join(f"{name}: {p.noise}" for name, p in (("baseline", b), ("current", c)) if p.noise) or None
        nb, nc = len(round_values(b)), len(round_values(c))
        test = (_test_rounds if nb >= 2 and nc >= 2 else _test_samples)(pv, b, c, shift, cfg)
        if isinstance(test, str):
            pending[pid] = (Verdict.INCONCLUSIVE, test)
        else:
            tested.append(test)
    for t, q in zip(tested, stats.benjamini_hochberg([t.pv.p for t in tested]), strict=True):  # type: ignore[misc]
        t.pv.q = q
    latency = {t.pv.point_id: _latency(t, cfg) for t in tested}
    for pv in out:
        if pv.point_id in latency or pv.point_id in pending:
            lat = latency.get(pv.point_id) or pending[pv.point_id]
            pv.verdict, pv.reason = _combine(lat, _memory(base.points[pv.point_id], cur.points[pv.point_id], cfg))
    result = Comparison(base.label, cur.label, out, shift, cfg, shift_measured=measured is not None)
    _run_notes(result, base, cur, measured, why_none)
    _whole_run(result, [t.pv.ratio for t in tested if t.pv.ratio], measured is not None or not cfg.normalize)
    return result


def _whole_run(result: Comparison, ratios: list[float], attributable: bool) -> None:
    """Every point slower together: a run-level failure when the points' typical ratio (geometric
    mean over the tested points, its t-interval at ``confidence`` over the points' spread) is
    beyond every relative latency threshold. The machine's own shift is already divided out, so
    this is the code: a slowdown of every kernel that no single point's rounds could settle under
    load is still caught. Needs :data:`MIN_RUN_POINTS` tested points and a machine reference
    (without one, a slower machine would read as a slower code)."""
    checks = [k for k in result.config.for_field("latency") if k.relative]
    if not checks or len(ratios) < MIN_RUN_POINTS:
        return
    logs = np.log(np.asarray(ratios, dtype=float))
    mean, se = float(logs.mean()), float(logs.std(ddof=1)) / math.sqrt(len(logs))
    half = float(scipy.stats.t.ppf(0.5 + result.config.confidence / 2, len(logs) - 1)) * se
    lo, hi, typical = math.exp(mean - half), math.exp(mean + half), math.exp(mean)
    what = f"the points' typical ratio is {_pct(typical)} (CI {_pct(lo)}..{_pct(hi)}, {len(logs)} points)"
    machine = f"the machine reference moved {_pct(result.shift)}" if result.shift_measured else "no machine reference"
    if all(k.exceeds(1.0, lo) for k in checks):
        if attributable:
            result.failures.append(f"every point is slower: {what}; {machine} and is divided out: the code is slower")
        else:
            result.notes.append(f"every point is slower: {what}, but {machine} to tell the code from the machine")
    elif all(k.improves(1.0, hi) for k in checks):
        result.notes.append(f"every point is faster: {what}; {machine}")


def _run_notes(result: Comparison, base: Side, cur: Side, measured: float | None, why_none: str) -> None:
    """The machine's shift, interrupted runs and missing points, as notes and failures."""
    cfg = result.config
    if measured is None:
        result.notes.append(f"{why_none}: times are compared as measured")
    elif abs(measured - 1) > 0.02:
        how = "divided out" if cfg.normalize else "not divided out (--no-normalize)"
        result.notes.append(f"the machine reference ran {_pct(measured)} in the current run; {how}")
    for name, side in (("baseline", base), ("current run", cur)):
        if side.interrupted:
            stored = len(side.points)
            of = f" of {side.planned} planned" if side.planned else ""
            result.notes.append(f"the {name} was interrupted: {stored}{of} points stored")
    missing = sum(1 for v in result.verdicts if v.verdict == Verdict.MISSING)
    total = len(base.points)
    if missing and total:
        share = missing / total
        text = f"the current run lacks {missing} of the baseline's {total} points ({share:.0%})"
        if share > cfg.max_missing:
            result.failures.append(
                f"{text}, more than max_missing {cfg.max_missing:.0%}; pass --allow-missing to accept it"
            )
        else:
            result.notes.append(text)


def _combine(lat: tuple[Verdict, str], mem: tuple[Verdict, str]) -> tuple[Verdict, str]:
    reasons = "; ".join(r for _, r in (lat, mem) if r)
    kinds = (lat[0], mem[0])
    for v in (Verdict.REGRESSED, Verdict.INCONCLUSIVE, Verdict.IMPROVED):
        if v in kinds:
            return v, reasons
    return Verdict.UNCHANGED, reasons
