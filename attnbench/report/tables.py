"""The report's tables as model Tables (text cells, numbers in attnbench.fmt's one format),
built once from the analysis so the Markdown and HTML reports say exactly the same thing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from attnbench.fmt import MISSING, fmt_err, fmt_int, fmt_mib, fmt_ms, fmt_num, fmt_pct
from attnbench.report.analysis import Analysis
from attnbench.report.frame import col, noise_reasons, with_config
from attnbench.report.model import Cell, Table
from attnbench.text import terminal_safe

MAX_ROWS = 200
SHORT_STATUS = {"skipped": "skip", "error": "ERR", "oom": "OOM", "timeout": "T/O", "crashed": "CRASH"}


def text(value: Any) -> str:
    """A cell value as one line of text ('' for None/NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return " ".join(terminal_safe(value).split())


def _with_config(headers: list[str], rows: list[list[Any]], configs: list[str]) -> tuple[list[str], list[list[Any]]]:
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
        rng = f"{fmt_int(r.get('n_lo_t'))}–{fmt_int(r.get('n_hi_t'))} ({fmt_int(r.get('points_t'))} pts)"
        rows.append(
            [
                text(r["impl"]),
                str(r["pass"]),
                fmt_num(r.get("exponent_t")),
                fmt_num(r.get("r2_t")),
                fmt_num(r.get("exponent_m")),
                fmt_num(r.get("r2_m")),
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
    return Table("scaling", "Scaling exponents", headers, rows, note, collapsed=True, numeric=(2, 3, 4, 5))


def crossover_table(a: Analysis) -> Table:
    """Where each linear impl starts to beat each reference."""
    rows, configs = [], []
    for r in a.crossovers.to_dict("records"):
        rows.append([text(r["impl"]), str(r["pass"]), text(r["versus"]), fmt_int(r["crossover_n"]), text(r["verdict"])])
        configs.append(str(r["config"]))
    headers, rows = _with_config(["impl", "pass", "versus", "crossover N", "verdict"], rows, configs)
    note = (
        "The sequence length above which the linear impl's median time is below the reference's, "
        "interpolated in log-log space between the two measured N around the crossing; "
        "only N where both ran are compared."
    )
    return Table("crossover", "Crossover sequence length", headers, rows, note, collapsed=True, numeric=(3,))


def frontier_table(a: Analysis) -> Table:
    """The largest N each impl ran and what stopped it."""
    rows, configs = [], []
    for r in a.frontier.to_dict("records"):
        rows.append(
            [
                text(r["impl"]),
                str(r["pass"]),
                fmt_int(r["largest_ok_n"], "none"),
                fmt_int(r["stopped_at_n"], ""),
                str(r["status"]),
                text(r["reason"]),
            ]
        )
        configs.append(str(r["config"]))
    headers, rows = _with_config(["impl", "pass", "largest N run", "stopped at N", "status", "reason"], rows, configs)
    return Table("frontier", "How far each impl got", headers, rows, collapsed=True, numeric=(2, 3))


def correctness_table(a: Analysis) -> Table:
    """Points checked and failed, worst errors, per impl and pass."""
    rows, configs = [], []
    for r in a.correctness.to_dict("records"):
        rows.append(
            [
                text(r["impl"]),
                str(r["pass"]),
                str(r["checked"]),
                Cell(str(r["failed"]), "incorrect") if r["failed"] else "0",
                fmt_err(r["max_err_out"]),
                fmt_err(r["max_err_grad"]),
                fmt_err(r["tolerance"], digits=1),
                text(r["first_failure"]),
            ]
        )
        configs.append(str(r["config"]))
    headers, rows = _with_config(
        ["impl", "pass", "checked", "failed", "max err out", "max err grads", "tolerance", "first failure"],
        rows,
        configs,
    )
    note = "Relative error ||x − ref|| / ||ref|| against the float64 reference; grads are dq, dk, dv."
    return Table("correctness", "Correctness", headers, rows, note, collapsed=True, numeric=(2, 3, 4, 5, 6))


def failures_table(a: Analysis) -> Table | None:
    """Every point that did not run or failed correctness (None when there are none)."""
    f = a.failures
    if not len(f):
        return None
    rows: list[list[Any]] = [
        [text(r["impl"]), str(r["pass"]), fmt_int(r["N"]), str(r["status"]), text(r["why"])]
        for r in f.head(MAX_ROWS).to_dict("records")
    ]
    headers, rows = _with_config(
        ["impl", "pass", "N", "status", "why"], rows, [str(c) for c in f["config"].head(MAX_ROWS)]
    )
    note = f"first {MAX_ROWS} of {len(f)}" if len(f) > MAX_ROWS else ""
    return Table("failures", "Points that did not run or failed correctness", headers, rows, note, collapsed=True)


def noisy_table(df: pd.DataFrame, meta: dict[str, Any]) -> Table | None:
    """Every noisy point and why (None when there are none)."""
    data = with_config(df)
    why = noise_reasons(data, meta)
    bad = data[why != ""].assign(_why=why[why != ""])
    if not len(bad):
        return None
    rows: list[list[Any]] = [
        [
            text(r["impl"]),
            str(r["pass"]),
            fmt_int(r["N"]),
            fmt_ms(r.get("time_ms_median")),
            fmt_int(r.get("n_samples")),
            fmt_pct(100 * float(r.get("rel_noise") or float("nan"))),
            r["_why"],
        ]
        for r in bad.head(MAX_ROWS).to_dict("records")
    ]
    headers, rows = _with_config(
        ["impl", "pass", "N", "median", "samples", "noise of the median", "why"],
        rows,
        [str(c) for c in bad["config"].head(MAX_ROWS)],
    )
    note = (
        "Noisy: the timer stopped at its time cap before the median's relative noise met the suite's target, "
        "or fewer samples than the suite's min_samples, or other processes busy on the CPU while timing. "
        "Their medians are less certain than the others (marked ≈, hollow in the charts)."
    )
    return Table("noisy", "Noisy points", headers, rows, note, collapsed=True, numeric=(2, 3, 4, 5))


def pivot_table(
    df: pd.DataFrame, meta: dict[str, Any], column: str, title: str, fmt: Callable[[Any], str], key: str
) -> Table:
    """``column`` by impl and pass (rows) and N (columns); failures show their status, noisy
    numbers carry the noisy mark and failed-correctness ones the incorrect mark."""
    data = with_config(df)
    why = noise_reasons(data, meta)
    ns = sorted(int(n) for n in data["N"].dropna().unique())
    rows: list[list[Any]] = []
    configs = []
    for (config, impl, pass_), grp in data.groupby(["config", "impl", "pass"], sort=False):
        cells: dict[int, str | Cell] = {}
        for idx, r in grp.assign(_v=col(grp, column)).iterrows():
            if r["status"] != "ok":
                cells[int(r["N"])] = SHORT_STATUS.get(str(r["status"]), str(r["status"]))
                continue
            value = fmt(r["_v"])
            if r.get("correct") is False:
                cells[int(r["N"])] = Cell(value, "incorrect", text(r.get("correctness_error")))
            elif why[idx]:
                cells[int(r["N"])] = Cell(value, "noisy", why[idx])
            else:
                cells[int(r["N"])] = value
        if not (grp["status"] == "ok").any():
            continue  # no number at any N: the skip lists beside the charts say why
        rows.append([text(impl), str(pass_)] + [cells.get(n, "") for n in ns])
        configs.append(str(config))
    headers, rows = _with_config(["impl", "pass"] + [f"N={n}" for n in ns], rows, configs)
    start = 3 if any(configs) else 2
    return Table(key, title, headers, rows, collapsed=True, numeric=tuple(range(start, start + len(ns))))


def environment_table(a: Analysis) -> Table:
    """Where and how the run was made."""
    return Table(
        "environment", "Environment", ["key", "value"], [[text(k), text(v)] for k, v in a.environment], collapsed=True
    )


def time_pivot(df: pd.DataFrame, meta: dict[str, Any]) -> Table:
    return pivot_table(df, meta, "time_ms_median", "Median time per call", fmt_ms, "pivot-time")


def memory_pivot(df: pd.DataFrame, meta: dict[str, Any]) -> Table:
    return pivot_table(df, meta, "peak_mib", "Peak memory", fmt_mib, "pivot-memory")


__all__ = ["MISSING", "Cell", "Table"]
