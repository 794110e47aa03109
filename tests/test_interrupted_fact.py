"""The report of an interrupted run says how many points are missing (issue 14, item 4)."""

from __future__ import annotations

import pandas as pd

from attnbench.report.content import header


def _df(n: int) -> pd.DataFrame:
    return pd.DataFrame({"status": ["ok"] * n, "pass": ["fwd"] * n, "correct": [True] * n})


def _facts(meta: dict) -> dict[str, tuple[str, bool]]:
    return {f.label: (f.value, f.warn) for f in header(_df(3), {"env": {}, **meta})}


def test_an_interrupted_run_says_how_many_points_are_missing():
    value, warn = _facts({"interrupted": True, "planned_points": 56})["interrupted"]
    assert warn and value.startswith("3 of 56 planned points stored, 53 missing")
    assert "attnbench run --resume" in value


def test_without_the_plan_count_it_still_says_interrupted():
    value, _ = _facts({"interrupted": True})["interrupted"]
    assert value.startswith("3 points stored; the rest of the plan is missing")


def test_a_finished_run_has_no_such_fact():
    assert "interrupted" not in _facts({"interrupted": False, "planned_points": 3})
    assert "interrupted" not in _facts({})
