"""A verdict per point, and the exit code of the whole comparison.

Latency rule (both sides ran and are correct):

0. Only the samples of each side's fast rounds count (``round_window``, see
   :func:`attnbench.compare.stats.fast_rounds`): a worker process stuck in a slow cache
   state for its whole life is set aside on either side, and the numbers below describe the
   point's fast state on both. How many rounds were kept is reported.
1. Fewer than ``min_samples`` timing samples on either side: **inconclusive**.
2. The run-wide shift ``s`` (geometric median over all points of median(cur)/median(base)) is
   divided out when ``normalize`` is on: a shared machine slows whole runs by 5-20 %, which is
   not a regression of any one point. ``s`` is reported, never hidden.
3. Mann-Whitney U on the samples (baseline scaled by ``s``); p-values of all points are
   adjusted with Benjamini-Hochberg; a point is significant when its q-value <= ``alpha``.
4. **regressed** only if significant AND every latency check is exceeded by the *lower* bound
   of the bootstrap interval of the (shift-corrected) ratio of medians AND by the ratio of the
   fastest samples. Contention on a shared machine only ever adds time, so a real slowdown
   moves the fastest sample too; a burst of load during one point does not.
   **improved** is the mirror image (upper bound, fastest samples both better).
5. A point whose median alone crosses a threshold without meeting 4 is **inconclusive**.

Memory: every memory check exceeded -> regressed (peak memory is near-deterministic).
Failures are states: "introduced a failure" (status not ok, or ``correct`` False, where the
baseline was fine, or a new point that fails) and "fixed a failure" are verdicts of their own.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from attnbench.compare import stats
from attnbench.compare.io import PointData, Side
from attnbench.gate import GateConfig

EXIT_PASS, EXIT_REGRESSION, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3


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
    """The verdict on one point and the numbers behind it (ratios are current / baseline)."""

    point_id: str
    impl: str
    verdict: Verdict
    reason: str = ""
    base_ms: float | None = None
    cur_ms: float | None = None
    ratio: float | None = None  # shift-corrected ratio of medians
    ci_low: float | None = None
    ci_high: float | None = None
    fast_ratio: float | None = None  # shift-corrected ratio of the fastest samples
    p: float | None = None
    q: float | None = None
    base_mib: float | None = None
    cur_mib: float | None = None
    base_rounds: str | None = None  # "kept/all" rounds of the baseline, e.g. "2/3"
    cur_rounds: str | None = None

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["verdict"] = self.verdict.value
        return d


@dataclass
class Comparison:
    """All verdicts, the run-wide shift that was divided out, and the config used."""

    base_label: str
    cur_label: str
    verdicts: list[PointVerdict]
    shift: float
    config: GateConfig
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        c = Counter(v.verdict for v in self.verdicts)
        return {k.value: c.get(k, 0) for k in Verdict}

    def exit_code(self, fail_on_inconclusive: bool = False) -> int:
        kinds = {v.verdict for v in self.verdicts}
        if Verdict.REGRESSED in kinds or Verdict.FAILURE in kinds:
            return EXIT_REGRESSION
        if fail_on_inconclusive and Verdict.INCONCLUSIVE in kinds:
            return EXIT_INCONCLUSIVE
        return EXIT_PASS


def _structural(b: PointData | None, c: PointData | None) -> tuple[Verdict, str] | None:
    """Verdicts decided by presence and status alone; None when both ran fine."""
    if b is None:
        assert c is not None
        return (
            (Verdict.FAILURE, f"new point fails: {c.error or c.status}")
            if c.failed
            else (Verdict.NEW, "not in the baseline")
        )
    if c is None:
        return Verdict.MISSING, "not in the current run"
    if c.failed and not b.failed:
        return Verdict.FAILURE, c.error or ("incorrect result" if c.correct is False else c.status)
    if b.failed and not c.failed:
        if c.status == "skipped":
            return Verdict.MISSING, f"failed in the baseline, skipped now: {c.error or ''}".strip()
        return Verdict.FIXED, f"baseline: {b.error or b.status}"
    if b.failed and c.failed:
        return Verdict.UNCHANGED, f"still failing: {c.error or c.status}"
    if b.status == "skipped" and c.status == "skipped":
        return Verdict.UNCHANGED, "skipped on both sides"
    if c.status == "skipped":
        return Verdict.MISSING, f"skipped now: {c.error or ''}".strip()
    if b.status == "skipped":
        return Verdict.NEW, "skipped in the baseline, ran now"
    return None


def _pct(r: float) -> str:
    return f"{(r - 1) * 100:+.1f}%"


def _rounds_note(pv: PointVerdict) -> str:
    """ ", fast rounds 2/3 vs 3/3" when slow rounds were set aside on either side, else ""."""
    sides = (pv.base_rounds, pv.cur_rounds)
    if None in sides or all(kept == total for kept, total in (s.split("/") for s in sides)):  # type: ignore[union-attr]
        return ""
    return f", fast rounds {pv.base_rounds} vs {pv.cur_rounds}"


def _latency(
    pv: PointVerdict, b: list[float], c: list[float], shift: float, fast_shift: float, cfg: GateConfig
) -> tuple[Verdict, str]:
    """Latency verdict of a tested point (p, q, ci, fast_ratio already filled in)."""
    checks = cfg.for_field("latency")
    if not checks:
        return Verdict.UNCHANGED, ""
    base_eff, base_fast = pv.base_ms * shift, min(b) * fast_shift  # type: ignore[operator]
    cur_fast = min(c)
    sig = pv.q is not None and pv.q <= cfg.alpha
    lo, hi = pv.ci_low, pv.ci_high
    assert lo is not None and hi is not None and pv.ratio is not None
    slower = all(k.exceeds(base_eff, base_eff * pv.ratio) for k in checks)
    faster = all(k.improves(base_eff, base_eff * pv.ratio) for k in checks)
    if sig and all(k.exceeds(base_eff, base_eff * lo) and k.exceeds(base_fast, cur_fast) for k in checks):
        return (
            Verdict.REGRESSED,
            f"latency {_pct(pv.ratio)} (CI {_pct(lo)}..{_pct(hi)}, q={pv.q:.2g}{_rounds_note(pv)})",
        )
    if sig and all(k.improves(base_eff, base_eff * hi) and k.improves(base_fast, cur_fast) for k in checks):
        return Verdict.IMPROVED, f"latency {_pct(pv.ratio)} (CI {_pct(lo)}..{_pct(hi)}, q={pv.q:.2g}{_rounds_note(pv)})"
    if slower or faster:
        if not sig:
            why = f"not significant (q={pv.q:.2g})"
        elif slower and not all(k.exceeds(base_eff, base_eff * lo) for k in checks):
            why = f"CI {_pct(lo)}..{_pct(hi)} reaches below the threshold"
        elif faster and not all(k.improves(base_eff, base_eff * hi) for k in checks):
            why = f"CI {_pct(lo)}..{_pct(hi)} reaches above the threshold"
        else:
            why = f"fastest samples moved only {_pct(pv.fast_ratio or 1.0)} (contention?)"
        return Verdict.INCONCLUSIVE, f"latency {_pct(pv.ratio)} but {why}{_rounds_note(pv)}"
    return Verdict.UNCHANGED, ""


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


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def compare(base: Side, cur: Side, cfg: GateConfig | None = None) -> Comparison:
    """Verdicts for every point of either side (baseline order first, then new points)."""
    cfg = cfg or GateConfig()
    ids = list(base.points) + [p for p in cur.points if p not in base.points]
    out: list[PointVerdict] = []
    tested: list[tuple[PointVerdict, list[float], list[float]]] = []
    pending: dict[str, tuple[Verdict, str]] = {}
    for pid in ids:
        b, c = base.points.get(pid), cur.points.get(pid)
        pv = PointVerdict(pid, (c or b).impl, Verdict.UNCHANGED)  # type: ignore[union-attr]
        if b is not None:
            pv.base_ms, pv.base_mib = b.median, b.peak_mib
        if c is not None:
            pv.cur_ms, pv.cur_mib = c.median, c.peak_mib
        out.append(pv)
        decided = _structural(b, c)
        if decided is not None:
            pv.verdict, pv.reason = decided
            continue
        assert b is not None and c is not None
        bs, bk, bn = stats.fast_rounds(b.samples or [], b.sample_rounds, cfg.round_window)
        cs, ck, cn = stats.fast_rounds(c.samples or [], c.sample_rounds, cfg.round_window)
        if bn > 1 or cn > 1:
            pv.base_rounds, pv.cur_rounds = f"{bk}/{bn}", f"{ck}/{cn}"
        nb, nc = len(bs), len(cs)
        if nb < cfg.min_samples or nc < cfg.min_samples:
            pending[pid] = (Verdict.INCONCLUSIVE, f"too few samples to decide ({nb} vs {nc}, need {cfg.min_samples})")
        else:
            pv.base_ms, pv.cur_ms = _median(bs), _median(cs)
            tested.append((pv, bs, cs))
        if pv.base_ms and pv.cur_ms:
            pv.ratio = pv.cur_ms / pv.base_ms
        pending.setdefault(pid, (Verdict.UNCHANGED, ""))  # the latency verdict of an untested point
    shift = stats.robust_shift([pv.ratio for pv, _, _ in tested if pv.ratio]) if cfg.normalize else 1.0
    # the fastest samples drift less than the medians under load: they get their own shift
    fast_shift = stats.robust_shift([min(cs) / min(bs) for _, bs, cs in tested]) if cfg.normalize else 1.0
    for pv, bs, cs in tested:
        scaled = [x * shift for x in bs]
        pv.p = stats.mann_whitney_p(scaled, cs)
        lo, hi = stats.bootstrap_ratio_ci(scaled, cs, cfg.confidence)
        pv.ci_low, pv.ci_high = lo, hi
        pv.ratio = pv.cur_ms / (pv.base_ms * shift)  # type: ignore[operator]
        pv.fast_ratio = min(cs) / (min(bs) * fast_shift)
    for (pv, _, _), q in zip(tested, stats.benjamini_hochberg([pv.p for pv, _, _ in tested]), strict=False):  # type: ignore[misc]
        pv.q = q
    tested_ids = {pv.point_id: (bs, cs) for pv, bs, cs in tested}
    for pv in out:
        if pv.point_id not in pending:
            continue
        b, c = base.points[pv.point_id], cur.points[pv.point_id]
        lat = pending[pv.point_id]
        if pv.point_id in tested_ids:
            lat = _latency(pv, *tested_ids[pv.point_id], shift, fast_shift, cfg)
        mem = _memory(b, c, cfg)
        pv.verdict, pv.reason = _combine(lat, mem)
    notes = []
    if cfg.normalize and abs(shift - 1) > 0.02:
        notes.append(f"the current run is {_pct(shift)} vs the baseline across all points; ratios are corrected for it")
    return Comparison(base.label, cur.label, out, shift, cfg, notes)


def _combine(lat: tuple[Verdict, str], mem: tuple[Verdict, str]) -> tuple[Verdict, str]:
    reasons = "; ".join(r for _, r in (lat, mem) if r)
    kinds = (lat[0], mem[0])
    for v in (Verdict.REGRESSED, Verdict.INCONCLUSIVE, Verdict.IMPROVED):
        if v in kinds:
            return v, reasons
    return Verdict.UNCHANGED, reasons
