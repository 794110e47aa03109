"""The report's tables as plain strings (headers and rows), built once from the analysis so the
Markdown and HTML reports say exactly the same thing. Cells here are unescaped text: each
renderer escapes them for its own format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from attnbench.report.analysis import Analysis
from attnbench.report.frame import col, with_config

MAX_FAILURE_ROWS = 200
_SHORT = {"skipped": "skipped", "error": "ERR", "oom": "OOM", "timeout": "T/O", "crashed": "CRASH"}


@dataclass
class Table:
    """A titled table of text cells, with an optional note shown under the title."""

    key: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


def num(value: Any, fmt: str = ".3g") -> str:
    """``value`` formatted, or '' when missing/NaN."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "" if value is None else str(value)
    return "" if math.isnan(v) else format(v, fmt)


def n_text(value: Any) -> str:
    """A sequence length as an integer string ('' when missing)."""
    return num(value, ".0f")


def _with_config(headers: list[str], rows: list[list[str]], configs: list[str]) -> tuple[list[str], list[list[str]]]:
    if not any(configs):
        return headers, rows
    return headers[:2] + ["config"] + headers[2:], [r[:2] + [c] + r[2:] for r, c in zip(rows, configs, strict=True)]


def _notes(note: Any) -> list[str]:
    """A fit's notes, less the range one (the table has a column for the range)."""
    parts = note.split("; ") if isinstance(note, str) and note else []
    return [p for p in parts if "left out" not in p]


def scaling_table(a: Analysis) -> Table:
    """Time and memory exponents side by side, per impl and pass."""
    t, m = a.time_fits, a.memory_fits
    keys = ["config", "impl", "pass"]
    merged = t.merge(m, on=keys, how="outer", suffixes=("_t", "_m")) if len(t) or len(m) else t
    rows, configs = [], []
    for r in merged.to_dict("records"):
        notes = [f"{what}{n}" for what, key in (("", "note_t"), ("memory: ", "note_m")) for n in _notes(r.get(key))]
        rng = f"{n_text(r.get('n_lo_t'))}–{n_text(r.get('n_hi_t'))} ({n_text(r.get('points_t'))} pts)"
        rows.append(
            [
                str(r["impl"]),
                str(r["pass"]),
                num(r.get("exponent_t"), ".2f"),
                num(r.get("r2_t"), ".3f"),
                num(r.get("exponent_m"), ".2f"),
                num(r.get("r2_m"), ".3f"),
                rng,
                "; ".join(notes),
            ]
        )
        configs.append(str(r["config"]))
    headers, rows = _with_config(
        ["impl", "pass", "time exponent", "time R²", "memory exponent", "memory R²", "time fit over N", "note"],
        rows,
        configs,
    )
    note = (
        "Least-squares slope of log(time) and log(peak memory) against log(N): 1 is linear, 2 quadratic. "
        "Only N ≥ 1024 is fitted when there are at least 3 such points (small N is dominated by fixed "
        "per-call overhead); otherwise every measured N."
    )
    return Table("scaling", "Scaling exponents", headers, rows, note)


def crossover_table(a: Analysis) -> Table:
    """Where each linear impl starts to beat softmax and sdpa."""
    rows, configs = [], []
    for r in a.crossovers.to_dict("records"):
        rows.append([str(r["impl"]), str(r["pass"]), str(r["versus"]), n_text(r["crossover_n"]), str(r["verdict"])])
        configs.append(str(r["config"]))
    headers, rows = _with_config(["impl", "pass", "versus", "crossover N", "verdict"], rows, configs)
    note = (
        "The sequence length above which the linear impl's median time is below the reference's, "
        "interpolated in log-log space between the two measured N around the crossing; "
        "only N where both ran are compared."
    )
    return Table("crossover", "Crossover sequence length", headers, rows, note)


def frontier_table(a: Analysis) -> Table:
    """The largest N each impl ran and what stopped it."""
    rows, configs = [], []
    for r in a.frontier.to_dict("records"):
        rows.append(
            [
                str(r["impl"]),
                str(r["pass"]),
                n_text(r["largest_ok_n"]) or "none",
                n_text(r["stopped_at_n"]),
                str(r["status"]),
                str(r["reason"]),
            ]
        )
        configs.append(str(r["config"]))
    headers, rows = _with_config(["impl", "pass", "largest N run", "stopped at N", "status", "reason"], rows, configs)
    return Table("frontier", "How far each impl got", headers, rows)


def correctness_table(a: Analysis) -> Table:
    """Points checked and failed, worst errors, per impl and pass."""
    rows, configs = [], []
    for r in a.correctness.to_dict("records"):
        rows.append(
            [
                str(r["impl"]),
                str(r["pass"]),
                str(r["checked"]),
                str(r["failed"]),
                num(r["max_err_out"], ".2e"),
                num(r["max_err_grad"], ".2e"),
                num(r["tolerance"], ".0e"),
                str(r["first_failure"]),
            ]
        )
        configs.append(str(r["config"]))
    headers, rows = _with_config(
        ["impl", "pass", "checked", "failed", "max err out", "max err grads", "tolerance", "first failure"],
        rows,
        configs,
    )
    note = "Relative error ||x − ref|| / ||ref|| against the float64 reference; grads are dq, dk, dv."
    return Table("correctness", "Correctness", headers, rows, note)


def failures_table(a: Analysis) -> Table | None:
    """Every point that did not run or failed correctness (None when there are none)."""
    f = a.failures
    if not len(f):
        return None
    rows = [
        [str(r["impl"]), str(r["pass"]), n_text(r["N"]), str(r["status"]), str(r["why"])]
        for r in f.head(MAX_FAILURE_ROWS).to_dict("records")
    ]
    headers, rows = _with_config(["impl", "pass", "N", "status", "why"], rows, [str(c) for c in f["config"]])
    note = f"first {MAX_FAILURE_ROWS} of {len(f)}" if len(f) > MAX_FAILURE_ROWS else ""
    return Table("failures", "Points that did not run or failed correctness", headers, rows, note)


def pivot_table(df: pd.DataFrame, column: str, title: str, fmt: str = ".3g") -> Table:
    """``column`` by impl and pass (rows) and N (columns); failures show their status."""
    data = with_config(df)
    ns = sorted(int(n) for n in data["N"].dropna().unique())
    rows, configs = [], []
    for (config, impl, pass_), grp in data.groupby(["config", "impl", "pass"], sort=False):
        cells = {}
        for r in grp.assign(_v=col(grp, column)).to_dict("records"):
            text = num(r["_v"], fmt) if r["status"] == "ok" else _SHORT.get(r["status"], str(r["status"]))
            cells[int(r["N"])] = text + (" ✗" if r.get("correct") is False else "")
        rows.append([str(impl), str(pass_)] + [cells.get(n, "") for n in ns])
        configs.append(str(config))
    headers, rows = _with_config(["impl", "pass"] + [f"N={n}" for n in ns], rows, configs)
    return Table(f"pivot-{column}", title, headers, rows, "✗ = failed correctness")


def all_tables(df: pd.DataFrame, a: Analysis) -> list[Table]:
    """The report's tables in the order they appear."""
    tables = [scaling_table(a), crossover_table(a), frontier_table(a), correctness_table(a)]
    failed = failures_table(a)
    if failed is not None:
        tables.append(failed)
    tables.append(pivot_table(df, "time_ms_median", "Median time per call (ms)"))
    tables.append(pivot_table(df, "peak_mib", "Peak memory (MiB)", ".4g"))
    return tables
