"""``attnbench compare --baseline history:K RUN_DIR``: a run judged against its last K
comparable runs in the history, the run as the statistical unit.

Two runs' samples tell how noisy a point is *within* a run, not how far a whole run can move:
a run that lands in a slow machine state shifts every sample together, and a test on the
samples calls that a regression. Here the unit is the run. For each point the history gives
one value per run (the median of its fast rounds, ingestion.py); the new run gives one more.

Rule, per point that ran and was correct in the new run and in at least ``MIN_RUNS`` of the
K runs (otherwise *inconclusive*, or a failure/new/missing state as in ``compare``):

1. Log values. With ``normalize`` (default on) each run's run-wide effect is divided out
   first: the median over points of the run's deviation from each point's median across the
   history (one pass of a median polish); the new run's effect is reported as the shift.
2. Prediction test: ``t = (y - mean) / (sd * sqrt(1 + 1/n))`` over the n history runs, two-sided
   Student-t with n - 1 degrees of freedom; p-values adjusted with Benjamini-Hochberg over the
   points; significant when q <= ``alpha``. ``sd`` is floored at ``SD_FLOOR`` so that a history
   of identical values does not make every wobble significant.
3. The interval of the ratio new / history level is ``exp(d +- t_conf * sd * sqrt(1 + 1/n))``:
   *regressed* when significant and its lower bound exceeds every latency threshold;
   *improved* the mirror image; a point estimate past a threshold without that is
   *inconclusive*.
4. Memory: the new peak against the median peak of the history, every memory threshold
   exceeded -> regressed (as ``compare`` does).

The verdicts are ``attnbench.compare.verdicts`` objects, so tables, JSON, Markdown and exit
codes are those of ``compare``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats as sps

from attnbench import results
from attnbench.compare.io import PointData, Side
from attnbench.compare.stats import benjamini_hochberg
from attnbench.compare.verdicts import Comparison, PointVerdict, Verdict, structural_verdict
from attnbench.errors import UserError
from attnbench.gate import GateConfig
from attnbench.history import identity, store
from attnbench.history.ingestion import DEFAULT_ROUND_WINDOW, point_value

PREFIX = "history:"
MIN_RUNS = 3
SD_FLOOR = 0.002  # 0.2 % in log terms
MIN_POINTS_FOR_SHIFT = 6  # as compare's robust_shift


@dataclass
class HistoryRun:
    run_id: str
    commit: str | None
    values: dict[str, float | None]  # point_id -> value_ms (None: failed or skipped)
    peaks: dict[str, float | None]


@dataclass
class HistorySide(Side):
    """The last K comparable runs; ``points`` holds each point's newest state (for the
    comparability guard and the failure verdicts), ``runs`` the values, oldest first."""

    runs: list[HistoryRun] = field(default_factory=list)
    requested: int = 0


def parse_spec(spec: str) -> int:
    """``history:10`` -> 10 (at least 2)."""
    text = spec[len(PREFIX) :] if spec.startswith(PREFIX) else spec
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 2:
        raise UserError(f"baseline {spec!r}: expected history:K with K >= 2 runs, e.g. history:10")
    return k


def _current_run_id(cur_spec: str) -> str | None:
    p = Path(cur_spec)
    run_dir = p if p.is_dir() else p.parent
    try:
        return identity.run_id(results.read_metadata(run_dir), str(run_dir))
    except UserError:
        return None


def load_history_side(spec: str, cur: Side, cur_spec: str, db: Path | str | None = None) -> HistorySide:
    """The last K runs in the history of ``cur``'s suite on ``cur``'s environment class
    (the current run itself left out if it was already ingested)."""
    k = parse_spec(spec)
    suite = (cur.suite or {}).get("name")
    if not suite:
        raise UserError(f"{cur.label}: the run has no suite name; a history baseline needs one")
    ekey = identity.env_key(cur.env, cur.threads)
    label = identity.env_label(cur.env, cur.threads)
    con = store.connect(db)
    try:
        runs = con.execute(
            """SELECT run_key, run_id, git_commit, env, threads FROM runs
               WHERE suite = ? AND env_key = ? AND run_id IS DISTINCT FROM ?
               ORDER BY started DESC, run_key DESC LIMIT ?""",
            [suite, ekey, _current_run_id(cur_spec), k],
        ).fetchall()
        if not runs:
            raise UserError(
                f"history {store.resolve(db)} has no run of suite {suite!r} on {label}; nothing to compare against"
            )
        runs = runs[::-1]
        keys = [r[0] for r in runs]
        rows = con.execute(
            f"""SELECT run_key, point_id, impl, dtype, status, correct, value_ms, time_ms_median, peak_mib, error
                FROM points WHERE run_key IN ({", ".join("?" for _ in keys)})""",
            keys,
        ).fetchall()
    finally:
        con.close()
    by_run: dict[int, HistoryRun] = {rk: HistoryRun(rid, commit, {}, {}) for rk, rid, commit, _, _ in runs}
    order = {rk: i for i, rk in enumerate(keys)}
    newest: dict[str, tuple[int, PointData]] = {}
    for rk, pid, impl, dtype, status, correct, value, median, mib, error in rows:
        by_run[rk].values[pid] = value
        by_run[rk].peaks[pid] = mib
        pd_ = PointData(pid, status or "ok", correct, None, median, mib, impl or pid.split("/")[0], dtype, error)
        if pid not in newest or order[rk] > newest[pid][0]:
            newest[pid] = (order[rk], pd_)
    first, last = runs[0], runs[-1]
    env = json.loads(last[3] or "{}")
    commits = f"{identity.short_commit(first[2])}..{identity.short_commit(last[2])}"
    side_label = f"{PREFIX}{k} ({len(runs)} run{'s' if len(runs) != 1 else ''} {commits}, {label})"
    return HistorySide(
        side_label,
        {pid: p for pid, (_, p) in newest.items()},
        env,
        {"name": suite},
        last[4],
        runs=[by_run[rk] for rk in keys],
        requested=k,
    )


def _pct(r: float) -> str:
    return f"{(r - 1) * 100:+.1f}%"


def _run_effects(logs: dict[str, dict[int, float]], cur: dict[str, float], n_runs: int) -> tuple[list[float], float]:
    """Run-wide effect (log) of each history run and of the current run (median polish, one pass)."""
    centre = {pid: float(np.median(list(v.values()))) for pid, v in logs.items() if v}
    effects = []
    for j in range(n_runs):
        devs = [v[j] - centre[pid] for pid, v in logs.items() if j in v]
        effects.append(float(np.median(devs)) if len(devs) >= MIN_POINTS_FOR_SHIFT else 0.0)
    devs = [y - centre[pid] for pid, y in cur.items() if pid in centre]
    return effects, float(np.median(devs)) if len(devs) >= MIN_POINTS_FOR_SHIFT else 0.0


def compare_history(base: HistorySide, cur: Side, cfg: GateConfig | None = None) -> Comparison:
    """Verdicts for every point of the history's newest states and of the current run."""
    cfg = cfg or GateConfig()
    n_runs = len(base.runs)
    ids = list(base.points) + [p for p in cur.points if p not in base.points]
    out: list[PointVerdict] = []
    pending: dict[str, PointVerdict] = {}
    logs: dict[str, dict[int, float]] = {}
    cur_log: dict[str, float] = {}
    for pid in ids:
        b, c = base.points.get(pid), cur.points.get(pid)
        pv = PointVerdict(pid, (c or b).impl, Verdict.UNCHANGED)  # type: ignore[union-attr]
        out.append(pv)
        if c is not None:
            pv.cur_mib = c.peak_mib
        peaks = [m for run in base.runs if run.values.get(pid) and (m := run.peaks.get(pid)) is not None]
        pv.base_mib = float(np.median(peaks)) if peaks else (b.peak_mib if b else None)
        decided = structural_verdict(b, c, "the newest history run", "the history")
        if decided is not None:
            pv.verdict, pv.reason = decided
            continue
        assert c is not None
        value, _, _ = point_value(c.samples, c.sample_rounds, c.median, DEFAULT_ROUND_WINDOW)
        pv.cur_ms = value
        hist = {j: float(run.values[pid]) for j, run in enumerate(base.runs) if run.values.get(pid)}  # type: ignore[arg-type]
        hist = {j: v for j, v in hist.items() if v > 0}
        if hist:
            pv.base_ms = float(np.median(list(hist.values())))
        if value is None or value <= 0 or len(hist) < MIN_RUNS:
            pv.verdict = Verdict.INCONCLUSIVE
            pv.reason = f"only {len(hist)} of {n_runs} history runs have this point ok (need {MIN_RUNS})"
            if value is None:
                pv.reason = "no timing in the current run"
            continue
        logs[pid] = {j: math.log(v) for j, v in hist.items()}
        cur_log[pid] = math.log(value)
        pending[pid] = pv
    effects, cur_effect = _run_effects(logs, cur_log, n_runs) if cfg.normalize else ([0.0] * n_runs, 0.0)
    shift = math.exp(cur_effect)
    tested: list[tuple[PointVerdict, float, float, int]] = []
    for pid, pv in pending.items():
        resid = np.array([x - effects[j] for j, x in logs[pid].items()])
        n = len(resid)
        mean = float(resid.mean())
        sd = max(float(resid.std(ddof=1)), SD_FLOOR)
        se = sd * math.sqrt(1 + 1 / n)
        d = cur_log[pid] - cur_effect - mean
        pv.p = float(2 * sps.t.sf(abs(d) / se, n - 1))
        pv.base_ms = math.exp(mean)
        pv.ratio = math.exp(d)
        half = float(sps.t.ppf((1 + cfg.confidence) / 2, n - 1)) * se
        pv.ci_low, pv.ci_high = math.exp(d - half), math.exp(d + half)
        tested.append((pv, d, se, n))
    for (pv, _, _, _), q in zip(tested, benjamini_hochberg([pv.p for pv, _, _, _ in tested]), strict=True):  # type: ignore[misc]
        pv.q = q
    for pv, _, _, n in tested:
        c = cur.points[pv.point_id]
        lat = _latency(pv, shift, n, cfg)
        mem = _memory(pv.base_mib, c.peak_mib, cfg)
        pv.verdict, pv.reason = _combine(lat, mem)
    notes = []
    if n_runs < base.requested:
        notes.append(f"the history has only {n_runs} comparable run(s) of the {base.requested} asked for")
    if cfg.normalize and abs(shift - 1) > 0.02:
        notes.append(f"the current run is {_pct(shift)} vs the history across all points; ratios are corrected for it")
    return Comparison(base.label, cur.label, out, shift, cfg, notes)


def _latency(pv: PointVerdict, shift: float, n: int, cfg: GateConfig) -> tuple[Verdict, str]:
    checks = cfg.for_field("latency")
    if not checks:
        return Verdict.UNCHANGED, ""
    assert pv.base_ms is not None and pv.ratio is not None and pv.ci_low is not None and pv.ci_high is not None
    base = pv.base_ms * shift
    lo, hi, sig = pv.ci_low, pv.ci_high, pv.q is not None and pv.q <= cfg.alpha
    text = f"latency {_pct(pv.ratio)} vs {n} runs (interval {_pct(lo)}..{_pct(hi)}, q={pv.q:.2g})"
    if sig and all(k.exceeds(base, base * lo) for k in checks):
        return Verdict.REGRESSED, text
    if sig and all(k.improves(base, base * hi) for k in checks):
        return Verdict.IMPROVED, text
    slower = all(k.exceeds(base, base * pv.ratio) for k in checks)
    faster = all(k.improves(base, base * pv.ratio) for k in checks)
    if slower or faster:
        why = "not significant across runs" if not sig else "the interval reaches the threshold"
        return Verdict.INCONCLUSIVE, f"{text}: {why}"
    return Verdict.UNCHANGED, ""


def _memory(base: float | None, cur: float | None, cfg: GateConfig) -> tuple[Verdict, str]:
    checks = cfg.for_field("memory")
    if not checks or base is None or cur is None:
        return Verdict.UNCHANGED, ""
    text = f"peak memory {base:.4g} -> {cur:.4g} MiB (history median)"
    if all(k.exceeds(base, cur) for k in checks):
        return Verdict.REGRESSED, text
    if all(k.improves(base, cur) for k in checks):
        return Verdict.IMPROVED, text
    return Verdict.UNCHANGED, ""


def _combine(lat: tuple[Verdict, str], mem: tuple[Verdict, str]) -> tuple[Verdict, str]:
    reasons = "; ".join(r for _, r in (lat, mem) if r)
    for v in (Verdict.REGRESSED, Verdict.INCONCLUSIVE, Verdict.IMPROVED):
        if v in (lat[0], mem[0]):
            return v, reasons
    return Verdict.UNCHANGED, reasons
