"""Rounds (worker processes) as the unit of a comparison: the blocked test, page-fault states,
slow outlier rounds, and the gate's figures on a simulated ci suite (idle and loaded)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
from compare_helpers import rounds_point, side, simulated_side

from attnbench.compare import stats
from attnbench.compare.rounds import round_values, select_states
from attnbench.compare.verdicts import Verdict, compare
from attnbench.gate import GateConfig, make_config
from attnbench.suite.load import load_suite

# ---- the test ------------------------------------------------------------------------------


def test_one_block_is_students_t_test_on_the_logs():
    b, c = [1.0, 1.05, 0.97, 1.02, 0.99], [1.25, 1.3, 1.22, 1.27]
    p, ratio, lo, hi = stats.blocked_log_ratio([(b, c)], 0.99)
    want = scipy.stats.ttest_ind(np.log(c), np.log(b))
    assert p == pytest.approx(want.pvalue, rel=1e-9)
    ci = want.confidence_interval(0.99)
    assert (lo, hi) == pytest.approx((np.exp(ci.low), np.exp(ci.high)), rel=1e-9)
    assert ratio == pytest.approx(np.exp(np.mean(np.log(c)) - np.mean(np.log(b))))


def test_blocks_are_least_squares_with_a_level_per_block():
    cells = [([1.0, 1.05, 0.97], [1.25, 1.3]), ([2.0, 2.1], [2.6, 2.5, 2.55, 2.48])]
    p, ratio, _, _ = stats.blocked_log_ratio(cells)
    y = np.log([v for b, c in cells for v in b + c])
    x = np.zeros((len(y), 3))
    row = 0
    for k, (b, c) in enumerate(cells):
        for j, _v in enumerate(b + c):
            x[row, k], x[row, 2] = 1, float(j >= len(b))
            row += 1
    coef, res, *_ = np.linalg.lstsq(x, y, rcond=None)
    cov = res[0] / (len(y) - 3) * np.linalg.inv(x.T @ x)
    assert ratio == pytest.approx(np.exp(coef[2]))
    assert p == pytest.approx(2 * scipy.stats.t.sf(abs(coef[2]) / np.sqrt(cov[2, 2]), len(y) - 3))


def test_blocked_test_edges():
    assert stats.blocked_log_ratio([([1.0, 1.0], [1.0, 1.0])]) == (1.0, 1.0, 1.0, 1.0)
    p, ratio, lo, hi = stats.blocked_log_ratio([([1.0, 1.0], [2.0, 2.0])])
    assert (p, lo, hi) == (0.0, pytest.approx(2.0), pytest.approx(2.0))
    with pytest.raises(ValueError, match="more values than blocks"):
        stats.blocked_log_ratio([([1.0], [2.0])])
    with pytest.raises(ValueError, match="both sides"):
        stats.blocked_log_ratio([([1.0, 2.0], [])])


# ---- rounds and states ---------------------------------------------------------------------


def test_a_round_is_the_lower_quartile_of_its_samples():
    p = rounds_point("a/x", [1.0, 2.0], seed=1, faults=[0.0, 3000.0], n=12)
    p.samples[:3] = [50.0, 50.0, 50.0]  # a burst of load in round 0: three samples in twelve
    rv = round_values(p)
    assert [r.round for r in rv] == [0, 1] and [r.faults for r in rv] == [0.0, 3000.0]
    assert rv[0].value == pytest.approx(np.quantile(p.samples[:12], 0.25)) and rv[0].value < 1.1
    p.round_faults = [0.0]  # not one per round: unknown
    assert [r.faults for r in round_values(p)] == [None, None]


def _rv(values: list[float], faults: list[float] | None, seed: int = 0):
    return round_values(rounds_point("a/x", values, seed, faults, n=8, noise=0.0))


def test_states_split_where_faults_cost_a_tenth_of_the_time():
    # 5 ms a call, 2.5 us a fault: a gap of 200 faults (0.5 ms) starts a new state
    base = _rv([5.0, 5.0, 12.6, 5.1, 12.5], [0, 90, 3041, 150, 3043])
    cur = _rv([5.0, 12.6, 12.7, 5.05, 12.4], [3, 3040, 3041, 60, 3041])
    sel = select_states(base, cur, min_rounds=3)
    assert sel.why_not is None and len(sel.cells) == 2
    assert [len(b) for b, _ in sel.cells] == [3, 2] and [len(c) for _, c in sel.cells] == [2, 3]
    assert sel.levels == [0.0, 3040.0] and (sel.base_kept, sel.cur_kept) == ("5/5", "5/5")


def test_a_state_on_one_side_only_is_left_out_and_said():
    base = _rv([5.0, 5.0, 5.0, 5.0], [0, 0, 0, 0])
    cur = _rv([12.6, 12.6, 12.6, 5.0], [3041, 3041, 3041, 0])
    sel = select_states(base, cur, min_rounds=3)
    assert sel.why_not is not None and "3,041 faults/call: 0 vs 3" in sel.why_not
    assert "(4 vs 1, need 3 a side" in sel.why_not
    assert select_states(_rv([1.0, 1.0], None), _rv([1.0, 1.0, 1.0], None), 3).why_not == (
        "too few rounds (2 vs 3, need 3 a side)"
    )


def test_a_slow_outlier_round_is_set_aside_a_fast_one_is_not():
    base = _rv([1.0, 1.01, 0.99, 1.02, 1.0, 1.4], [0] * 6)
    cur = _rv([1.0, 0.7, 0.99, 1.01, 1.0, 1.02], [0] * 6)
    sel = select_states(base, cur, min_rounds=3)
    assert sel.outliers == 1 and len(sel.base) == 5 and len(sel.cur) == 6


# ---- verdicts in rounds --------------------------------------------------------------------

PIDS = [f"impl{i % 3}/fwd/causal/float32/N{i}" for i in range(8)]


def _sides(base_p, cur_p):
    """The point under test first, then clean points with a machine reference."""
    base, cur = [base_p], [cur_p]
    for i, p in enumerate(PIDS[1:], start=1):
        base.append(rounds_point(p, [1.0 + i] * 7, 10 + i, [0.0] * 7, [0.3] * 7))
        cur.append(rounds_point(p, [1.0 + i] * 7, 20 + i, [0.0] * 7, [0.3] * 7))
    return side(base, label="base"), side(cur, label="cur")


def _first(base_p, cur_p, **cfg):
    return compare(*_sides(base_p, cur_p), GateConfig(**cfg)).verdicts[0]


def test_issue_aa_the_slow_state_of_most_rounds_is_not_an_improvement():
    # issue 14: linear-chunked fwd N=512 "improved by 44 %" on 1-2 of 7 rounds a side. The
    # baseline's processes mostly faulted (570 or 976 times a call: 1.4x and 2x), the current's not.
    base = rounds_point(PIDS[0], [2.1, 3.3, 4.5, 4.4, 3.2, 4.5, 4.4], 1, [2, 570, 976, 976, 570, 976, 976], [0.3] * 7)
    cur = rounds_point(PIDS[0], [2.0, 2.1, 2.2, 3.3, 2.1, 2.0, 4.4], 2, [0, 1, 3, 570, 2, 0, 976], [0.3] * 7)
    got = _first(base, cur)
    assert got.verdict in (Verdict.UNCHANGED, Verdict.INCONCLUSIVE), got.reason
    assert got.ratio == pytest.approx(1.0, abs=0.06)
    assert "3 page-fault states" in got.reason or got.verdict == Verdict.UNCHANGED


def test_issue_aa_too_few_rounds_in_a_common_state_is_inconclusive():
    base = rounds_point(PIDS[0], [5.6, 12.0, 12.1, 12.0, 12.2, 11.9, 12.0], 1, [0] + [3041] * 6, [0.3] * 7)
    cur = rounds_point(PIDS[0], [5.5, 5.6, 5.7, 5.5, 5.6, 5.6, 5.5], 2, [0] * 7, [0.3] * 7)
    got = _first(base, cur)
    assert got.verdict == Verdict.INCONCLUSIVE and "too few rounds in page-fault states" in got.reason
    assert "3,041 faults/call: 6 vs 0" in got.reason


def test_a_25pct_slowdown_in_every_round_regresses_whatever_the_states():
    states = [0, 3041, 0, 0, 3041, 0, 0]
    base = rounds_point(PIDS[0], [5.6 if f == 0 else 12.0 for f in states], 1, states, [0.3] * 7)
    slow = [0, 0, 3041, 0, 0, 0, 3041]
    cur = rounds_point(PIDS[0], [1.25 * (5.6 if f == 0 else 12.0) for f in slow], 2, slow, [0.3] * 7)
    got = _first(base, cur)
    assert got.verdict == Verdict.REGRESSED, got.reason
    assert got.ratio == pytest.approx(1.25, rel=0.02) and got.unit == "rounds"
    assert "rounds 7/7 vs 7/7, in 2 page-fault states" in got.reason


def test_a_change_that_makes_every_round_fault_is_not_hidden_as_a_state():
    base = rounds_point(PIDS[0], [5.6] * 7, 1, [0] * 7, [0.3] * 7)
    cur = rounds_point(PIDS[0], [12.0] * 7, 2, [3041] * 7, [0.3] * 7)
    got = _first(base, cur)
    assert got.verdict == Verdict.INCONCLUSIVE and "on one side only" in got.reason


def test_unchanged_needs_an_interval_inside_the_thresholds():
    wide = [1.0, 1.3, 0.8, 1.2, 0.9, 1.15, 0.85]
    got = _first(rounds_point(PIDS[0], wide, 1, [0] * 7, [0.3] * 7), rounds_point(PIDS[0], wide[::-1], 2, [0] * 7))
    assert got.verdict == Verdict.INCONCLUSIVE and "reaches past the threshold" in got.reason
    tight = [1.0, 1.01, 0.99, 1.0, 1.02, 0.98, 1.0]
    got = _first(rounds_point(PIDS[0], tight, 1, [0] * 7), rounds_point(PIDS[0], tight[::-1], 2, [0] * 7))
    assert got.verdict == Verdict.UNCHANGED


def test_a_noisy_point_is_never_an_improvement():
    base = rounds_point(PIDS[0], [2.0] * 7, 1, [0] * 7, [0.3] * 7)
    cur = rounds_point(PIDS[0], [1.4] * 7, 2, [0] * 7, [0.3] * 7)
    assert _first(base, cur).verdict == Verdict.IMPROVED
    cur.noise = "did not converge"
    got = _first(base, cur)
    assert got.verdict == Verdict.INCONCLUSIVE and "noisy (current: did not converge)" in got.reason
    assert "not counted as an improvement" in got.reason


def test_min_rounds_is_a_setting():
    base = rounds_point(PIDS[0], [1.0, 1.01, 0.99], 1, [0] * 3, [0.3] * 3)
    cur = rounds_point(PIDS[0], [1.5, 1.51, 1.49], 2, [0] * 3, [0.3] * 3)
    assert _first(base, cur).verdict == Verdict.REGRESSED
    got = _first(base, cur, min_rounds=4)
    assert got.verdict == Verdict.INCONCLUSIVE and got.reason == "too few rounds (3 vs 3, need 4 a side)"


# ---- the gate on a simulated ci suite (compare_helpers.simulated_rows) -----------------------
# The figures issue 14 asks of the real gate, pinned on synthetic samples with the process states
# and noise measured on the development machine, for ten baselines each; the ci suite's 10 rounds.

SEEDS = range(10)
ROUNDS = 10
CHANGED = (Verdict.REGRESSED, Verdict.IMPROVED)
CI_GATE = make_config(load_suite("ci").gate)  # the ci suite's [gate] table, as `attnbench compare` reads it


def test_the_ci_suite_gates_at_ten_percent_with_a_90_percent_interval():
    assert CI_GATE.confidence == pytest.approx(0.90) and CI_GATE.alpha == pytest.approx(0.01)
    assert [(c.field, c.value, c.relative) for c in CI_GATE.for_field("latency")] == [
        ("latency", pytest.approx(0.10), True)
    ]


def test_a_25pct_slowdown_measured_at_20pct_is_regressed_at_90_and_inconclusive_at_99_percent():
    # Ten rounds a side, rounds spread 6 % (sd of logs; linear-chunked on the idle 2-core machine),
    # the slowdown measured at +20 %: the case that missed the bar with 99 % intervals.
    rng = np.random.default_rng(7)
    z = rng.normal(0, 1, 20)
    z = (z - z.mean()) / z.std(ddof=1)
    base = list(np.exp(0.06 * z[:10]))
    cur = list(1.20 * np.exp(0.06 * z[10:]))
    b, c = _sides(
        rounds_point(PIDS[0], base, 1, [0] * 10, [0.3] * 10), rounds_point(PIDS[0], cur, 2, [0] * 10, [0.3] * 10)
    )
    at90 = compare(b, c, CI_GATE).verdicts[0]
    assert at90.verdict == Verdict.REGRESSED and at90.ci_low > 1.10, at90.reason
    at99 = compare(b, c, make_config(load_suite("ci").gate, confidence=0.99)).verdicts[0]
    assert at99.verdict == Verdict.INCONCLUSIVE and at99.ci_low < 1.10 < at99.ci_high, at99.reason


def _changed(res, impl=None) -> list[str]:
    return [v.point_id for v in res.verdicts if v.verdict in CHANGED and (impl is None or v.impl == impl)]


@pytest.mark.parametrize("profile", ["idle", "loaded"])
def test_simulated_aa_changes_no_verdict(profile):
    for s in SEEDS:
        res = compare(
            simulated_side(100 + s, rounds=ROUNDS, profile=profile),
            simulated_side(200 + s, rounds=ROUNDS, profile=profile),
            CI_GATE,
        )
        assert _changed(res) == [], (s, [v.reason for v in res.verdicts if v.verdict in CHANGED])
        assert res.exit_code() == 0


@pytest.mark.parametrize("profile", ["idle", "loaded"])
def test_simulated_25pct_slowdown_of_one_impl(profile):
    for s in SEEDS:
        base = simulated_side(100 + s, rounds=ROUNDS, profile=profile)
        res = compare(
            base, simulated_side(300 + s, slow={"linear-chunked": 1.25}, rounds=ROUNDS, profile=profile), CI_GATE
        )
        mine = [v for v in res.verdicts if v.impl == "linear-chunked"]
        others = [v for v in res.verdicts if v.impl != "linear-chunked"]
        assert [v.point_id for v in others if v.verdict in CHANGED] == [], s  # the impls beside it
        hit = sum(v.verdict == Verdict.REGRESSED for v in mine)
        if profile == "idle":  # under load the intervals are wider: regressed or inconclusive
            assert hit / len(mine) >= 0.9, (s, [v.reason for v in mine])
        assert res.exit_code() == (1 if hit else 0)
        assert all(v.verdict in (Verdict.REGRESSED, Verdict.INCONCLUSIVE) for v in mine)


@pytest.mark.parametrize("profile", ["idle", "loaded"])
def test_simulated_20pct_slowdown_of_every_point_fails_the_gate(profile):
    for s in SEEDS:
        base = simulated_side(100 + s, rounds=ROUNDS, profile=profile)
        res = compare(base, simulated_side(400 + s, slow={"*": 1.2}, rounds=ROUNDS, profile=profile), CI_GATE)
        assert res.exit_code() == 1 and res.shift == pytest.approx(1.0, abs=0.05), s
        assert not [v for v in res.verdicts if v.verdict == Verdict.IMPROVED]


def test_simulated_slower_machine_is_divided_out():
    for s in SEEDS:
        base = simulated_side(100 + s, rounds=ROUNDS, profile="idle")
        res = compare(base, simulated_side(500 + s, machine=1.2, rounds=ROUNDS, profile="idle"), CI_GATE)
        assert res.shift == pytest.approx(1.2, rel=0.05) and _changed(res) == [], s


# ---- every point slower together -------------------------------------------------------------


def _noisy_run(factor: float, seed: int, ref: float = 0.3, spread: float = 0.12):
    """Eight points, 5 rounds each, spread so wide that no single point can be settled."""
    rng = np.random.default_rng(seed)
    pts = []
    for i, pid in enumerate(PIDS):
        meds = list((1.0 + i) * factor * np.exp(rng.normal(0, spread, 5)))
        pts.append(rounds_point(pid, meds, seed * 10 + i, [0.0] * 5, [ref] * 5))
    return side(pts)


def test_every_point_slower_together_fails_the_run_even_when_no_point_alone_can():
    res = compare(_noisy_run(1.0, 1), _noisy_run(1.25, 2))
    assert not [v for v in res.verdicts if v.verdict == Verdict.REGRESSED]  # each alone: too noisy
    assert res.exit_code() == 1 and len(res.failures) == 1
    assert res.failures[0].startswith("every point is slower: the points' typical ratio is +")
    assert "8 points" in res.failures[0] and "the code is slower" in res.failures[0]


def test_a_slower_machine_or_an_unchanged_run_is_not_a_run_failure():
    assert compare(_noisy_run(1.0, 1), _noisy_run(1.25, 2, ref=0.375)).failures == []  # reference 25 % slower too
    assert compare(_noisy_run(1.0, 1), _noisy_run(1.0, 2)).failures == []
    base, cur = _noisy_run(1.0, 1), _noisy_run(1.25, 2)
    for p in cur.points.values():
        p.round_ref_ms = None  # no reference: the machine cannot be told from the code
    res = compare(base, cur)
    assert res.failures == [] and any("to tell the code from the machine" in n for n in res.notes)
