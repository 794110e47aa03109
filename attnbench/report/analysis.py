"""Numbers a report states about a run: scaling exponents, crossover lengths, how far each
impl got, correctness and the environment. Pure pandas/numpy, no plotting.

Every function takes the results DataFrame (one row per point, see attnbench.results.COLUMNS)
and returns a small DataFrame (or a list of pairs) that markdown.py and html.py render as is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from attnbench.report.frame import ERR_COLS, col, families, max_error, measured, with_config

FIT_MIN_N = 1024  # below this, CPU timings are dominated by per-call overhead
FIT_MIN_POINTS = 3
POOR_R2 = 0.98
REFERENCES = ("softmax", "sdpa")


def fit_loglog(n: Any, y: Any) -> tuple[float, float, float]:
    """Least-squares fit of log(y) = slope * log(n) + c: (slope, c, R^2).

    R^2 is NaN when y is constant (nothing to explain); slope is NaN with fewer than 2 points.
    """
    x = np.log(np.asarray(n, dtype=float))
    ly = np.log(np.asarray(y, dtype=float))
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan, math.nan, math.nan
    slope, c = np.polyfit(x, ly, 1)
    ss_res = float(np.sum((ly - (slope * x + c)) ** 2))
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return float(slope), float(c), r2


def fit_range(ns: list[float], min_n: float = FIT_MIN_N, min_points: int = FIT_MIN_POINTS) -> list[float]:
    """The N values a fit uses: those >= ``min_n`` if there are ``min_points`` of them, else all."""
    upper = [n for n in ns if n >= min_n]
    return upper if len(upper) >= min_points else list(ns)


def scaling(df: pd.DataFrame, metric: str = "time_ms_median", min_n: float = FIT_MIN_N) -> pd.DataFrame:
    """Fitted exponent of ``metric`` against N per (config, impl, pass).

    Columns: config, impl, pass, metric, exponent, r2, points, n_lo, n_hi, note. Only ok points
    with a positive value are used; the upper part of the range is preferred (see fit_range).
    """
    rows = []
    data = with_config(measured(df))
    data = data.assign(_y=col(data, metric))
    data = data[data["_y"] > 0]
    for (config, impl, pass_), grp in data.groupby(["config", "impl", "pass"], sort=False):
        by_n = grp.groupby("N")["_y"].median()
        ns = fit_range(sorted(by_n.index), min_n)
        slope, _, r2 = fit_loglog(ns, by_n.loc[ns].to_numpy())
        notes = []
        if len(ns) < 3:
            notes.append(f"only {len(ns)} point{'s' if len(ns) != 1 else ''}")
        if len(ns) < len(by_n):
            notes.append(f"N < {int(ns[0])} left out (overhead-dominated)")
        if not math.isnan(r2) and r2 < POOR_R2:
            notes.append(f"poor fit (R² {r2:.3f} < {POOR_R2}): not a single power law here")
        rows.append(
            {
                "config": config,
                "impl": impl,
                "pass": pass_,
                "metric": metric,
                "exponent": slope,
                "r2": r2,
                "points": len(ns),
                "n_lo": int(ns[0]),
                "n_hi": int(ns[-1]),
                "note": "; ".join(notes),
            }
        )
    cols = ["config", "impl", "pass", "metric", "exponent", "r2", "points", "n_lo", "n_hi", "note"]
    return pd.DataFrame(rows, columns=cols)


def crossover_n(ns: list[float], ratio: list[float]) -> tuple[float, str]:
    """Where ``ratio`` (impl time / reference time, by increasing N) drops below 1 for good.

    Returns (N, verdict). N is interpolated linearly in (log N, log ratio) between the last
    measured N where the impl was not faster and the next one; NaN when there is no crossover.
    """
    lo, hi = int(ns[0]), int(ns[-1])
    faster = [r < 1 for r in ratio]
    if all(faster):
        return math.nan, f"faster at every measured N ({lo}–{hi})"
    if not any(faster):
        return math.nan, f"never within the measured range ({lo}–{hi})"
    if not faster[-1]:
        return math.nan, f"faster at some N but not at the largest common N ({hi})"
    i = max(j for j, f in enumerate(faster) if not f)
    x0, x1 = math.log(ns[i]), math.log(ns[i + 1])
    y0, y1 = math.log(ratio[i]), math.log(ratio[i + 1])
    x = x0 + (0.0 - y0) * (x1 - x0) / (y1 - y0) if y1 != y0 else x0
    n = math.exp(x)
    return n, f"faster from N ≈ {n:.0f} (between measured {int(ns[i])} and {int(ns[i + 1])})"


def crossovers(df: pd.DataFrame, references: tuple[str, ...] = REFERENCES) -> pd.DataFrame:
    """For each linear impl (family linear or kernel, see frame.families), pass and config: the N
    above which it beats each reference.

    Columns: config, pass, impl, versus, crossover_n (NaN if none), verdict. Only N where both
    ran ok are compared.
    """
    data = with_config(measured(df))
    fams = dict(zip(data["impl"].astype(str), families(data), strict=True))
    rows = []
    for (config, pass_), grp in data.groupby(["config", "pass"], sort=False):
        t = grp.groupby(["impl", "N"])["time_ms_median"].median().unstack("N")
        for ref in references:
            if ref not in t.index:
                continue
            for impl in t.index:
                if fams.get(impl) not in ("linear", "kernel") or impl == ref:
                    continue
                both = t.loc[[impl, ref]].dropna(axis=1)
                if both.shape[1] == 0:
                    continue
                ns = [float(n) for n in both.columns]
                ratio = (both.loc[impl] / both.loc[ref]).tolist()
                n, verdict = crossover_n(ns, ratio)
                rows.append(
                    {"config": config, "pass": pass_, "impl": impl, "versus": ref, "crossover_n": n, "verdict": verdict}
                )
    return pd.DataFrame(rows, columns=["config", "pass", "impl", "versus", "crossover_n", "verdict"])


def frontier(df: pd.DataFrame) -> pd.DataFrame:
    """How far each (config, impl, pass) got: the largest N that ran ok, and what stopped it.

    Columns: config, impl, pass, largest_ok_n (NaN if none), stopped_at_n, status, reason.
    ``stopped_at_n`` is the smallest N above ``largest_ok_n`` that did not run ok (NaN if the
    impl ran every N it was given).
    """
    data = with_config(df)
    rows = []
    for (config, impl, pass_), grp in data.groupby(["config", "impl", "pass"], sort=False):
        ok = grp[grp["status"] == "ok"]["N"]
        best = float(ok.max()) if len(ok) else math.nan
        above = grp[(grp["status"] != "ok") & ~(grp["N"] <= best)].sort_values("N")
        stop = above.iloc[0] if len(above) else None
        rows.append(
            {
                "config": config,
                "impl": impl,
                "pass": pass_,
                "largest_ok_n": best,
                "stopped_at_n": float(stop["N"]) if stop is not None else math.nan,
                "status": str(stop["status"]) if stop is not None else "ran every N",
                "reason": _text(stop.get("error")) if stop is not None else "",
            }
        )
    cols = ["config", "impl", "pass", "largest_ok_n", "stopped_at_n", "status", "reason"]
    return pd.DataFrame(rows, columns=cols)


def failures(df: pd.DataFrame) -> pd.DataFrame:
    """Every point that did not run ok or failed correctness: config, impl, pass, N, status, why."""
    data = with_config(df)
    bad = data[(data["status"] != "ok") | (data.get("correct") == False)]  # noqa: E712
    why = [
        _text(r.get("error")) if r["status"] != "ok" else "incorrect: " + _text(r.get("correctness_error"))
        for r in bad.to_dict("records")
    ]
    out = bad[["config", "impl", "pass", "N", "status"]].copy()
    out["status"] = out["status"].where(out["status"] != "ok", "incorrect")
    out["why"] = why
    return out.reset_index(drop=True)


def correctness(df: pd.DataFrame) -> pd.DataFrame:
    """Per (config, impl, pass): points checked, points failing, worst errors, tolerance.

    Columns: config, impl, pass, checked, failed, max_err_out, max_err_grad, tolerance, first_failure.
    """
    data = with_config(df[df["status"] == "ok"])
    data = data.assign(
        _grad=pd.concat([col(data, c) for c in ERR_COLS[1:]], axis=1).max(axis=1),
        _out=col(data, "err_out"),
        _tol=col(data, "tolerance"),
        _all=max_error(data),
    )
    rows = []
    for (config, impl, pass_), grp in data.groupby(["config", "impl", "pass"], sort=False):
        checked = grp[grp["_all"].notna()] if "correct" not in grp else grp[grp["correct"].notna()]
        bad = grp[grp["correct"] == False] if "correct" in grp else grp.iloc[:0]  # noqa: E712
        first = bad.iloc[0] if len(bad) else None
        rows.append(
            {
                "config": config,
                "impl": impl,
                "pass": pass_,
                "checked": len(checked),
                "failed": len(bad),
                "max_err_out": grp["_out"].max(),
                "max_err_grad": grp["_grad"].max(),
                "tolerance": grp["_tol"].max(),
                "first_failure": ""
                if first is None
                else f"N={int(first['N'])}: {_text(first.get('correctness_error'))}",
            }
        )
    cols = ["config", "impl", "pass", "checked", "failed", "max_err_out", "max_err_grad", "tolerance", "first_failure"]
    return pd.DataFrame(rows, columns=cols)


def environment(meta: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, value) pairs describing where and how the run was made, from its metadata."""
    suite = meta.get("suite") or {}
    pairs: list[tuple[str, Any]] = [
        ("suite", suite.get("name") if isinstance(suite, dict) else suite),
        ("command", meta.get("command")),
        ("started", meta.get("started")),
        ("finished", meta.get("finished")),
        ("device", meta.get("device")),
        ("threads", meta.get("threads")),
    ]
    env = meta.get("env") or {}
    if isinstance(env, dict):
        pairs += [(str(k), v) for k, v in env.items() if k not in ("device", "threads")]
    return [(k, _text(v)) for k, v in pairs if v not in (None, "", [], {})]


def _text(value: Any) -> str:
    """A one-line string of a cell value ('' for None/NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return " ".join(str(value).split())


@dataclass
class Analysis:
    """Everything the Markdown and HTML reports state, computed once."""

    time_fits: pd.DataFrame
    memory_fits: pd.DataFrame
    crossovers: pd.DataFrame
    frontier: pd.DataFrame
    failures: pd.DataFrame
    correctness: pd.DataFrame
    environment: list[tuple[str, str]] = field(default_factory=list)


def analyse(df: pd.DataFrame, meta: dict[str, Any], baseline: str | None = None) -> Analysis:
    """Run every analysis on one run's results; crossovers are found against softmax, sdpa and
    ``baseline``."""
    refs = REFERENCES + ((baseline,) if baseline and baseline not in REFERENCES else ())
    return Analysis(
        time_fits=scaling(df, "time_ms_median"),
        memory_fits=scaling(df, "peak_mib"),
        crossovers=crossovers(df, refs),
        frontier=frontier(df),
        failures=failures(df),
        correctness=correctness(df),
        environment=environment(meta),
    )
