"""The findings: one short table after the lead chart, a row per measured impl and pass, that
says how its time grows with N, from which N it beats the baseline, how it compares at the
largest N both ran, how far it got and at what time and memory, and how many of its numbers
are noisy."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from attnbench.fmt import fmt_int, fmt_mib, fmt_ms, fmt_num, fmt_speedup
from attnbench.report.analysis import Analysis
from attnbench.report.frame import FAMILY_ORDER, families, measured, noisy, with_config
from attnbench.report.model import Cell, Table
from attnbench.report.tables import text

FAMILY_SHORT = {"softmax": "softmax", "linear": "linear", "kernel": "kernel", "other": "?"}


def _crossover_text(a: Analysis, config: str, pass_: str, impl: str, baseline: str | None) -> str:
    if baseline is None or impl == baseline:
        return "baseline" if impl == baseline else ""
    c = a.crossovers
    row = c[(c["config"] == config) & (c["pass"] == pass_) & (c["impl"] == impl) & (c["versus"] == baseline)]
    if not len(row):
        return ""
    r = row.iloc[0]
    if r["crossover_n"] == r["crossover_n"]:  # a number
        return f"from N ≈ {fmt_int(r['crossover_n'])}"
    verdict = str(r["verdict"])
    if verdict.startswith("faster at every"):
        return "at every N"
    if verdict.startswith("never"):
        return "never"
    return "not at the largest N"


def findings(df: pd.DataFrame, meta: dict[str, Any], a: Analysis, baseline: str | None) -> pd.DataFrame:
    """One row per (config, impl, pass) with a measured point: columns config, impl, pass,
    family, exponent, crossover, speedup, common_n, largest_n, time_ms, peak_mib, noisy, points."""
    data = with_config(df)
    data = data.assign(_family=families(data).to_numpy(), _noisy=noisy(data, meta).to_numpy())
    ok = measured(data)
    fits = {(r["config"], r["impl"], r["pass"]): r["exponent"] for r in a.time_fits.to_dict("records")}
    base = ok[ok["impl"] == baseline].groupby(["config", "pass", "N"])["time_ms_median"].median()
    rows = []
    for (config, impl, pass_), grp in ok.groupby(["config", "impl", "pass"], sort=False):
        by_n = grp.groupby("N").agg(t=("time_ms_median", "median"), m=("peak_mib", "median"))
        largest = float(by_n.index.max())
        common = [n for n in by_n.index if (config, pass_, n) in base.index]
        top = max(common) if common and impl != baseline else math.nan
        speedup = base[(config, pass_, top)] / by_n.loc[top, "t"] if top == top else math.nan
        rows.append(
            {
                "config": config,
                "impl": impl,
                "pass": pass_,
                "family": str(grp["_family"].iloc[0]),
                "exponent": fits.get((config, impl, pass_), math.nan),
                "crossover": _crossover_text(a, str(config), str(pass_), str(impl), baseline),
                "speedup": speedup,
                "common_n": top,
                "largest_n": largest,
                "time_ms": by_n.loc[largest, "t"],
                "peak_mib": by_n.loc[largest, "m"],
                "noisy": int(grp["_noisy"].sum()),
                "points": len(grp),
            }
        )
    out = pd.DataFrame(rows)
    if not len(out):
        return out
    rank = {f: i for i, f in enumerate(FAMILY_ORDER)}
    pass_rank = {p: i for i, p in enumerate(dict.fromkeys(data["pass"]))}
    out = out.assign(_f=out["family"].map(rank), _p=out["pass"].map(pass_rank))
    return out.sort_values(["config", "_p", "_f", "impl"]).drop(columns=["_f", "_p"]).reset_index(drop=True)


def findings_table(df: pd.DataFrame, meta: dict[str, Any], a: Analysis, baseline: str | None) -> Table:
    """The findings as the report's first table."""
    f = findings(df, meta, a, baseline)
    b = baseline or "the baseline"
    rows: list[list[Any]] = []
    configs = []
    for r in f.to_dict("records"):
        noisy_cell: str | Cell = f"{r['noisy']} of {r['points']}" if r["noisy"] else "0"
        if r["noisy"]:
            noisy_cell = Cell(str(noisy_cell), "noisy")
        speed = "" if r["common_n"] != r["common_n"] else f"{fmt_speedup(r['speedup'])} at {fmt_int(r['common_n'])}"
        rows.append(
            [
                text(r["impl"]),
                str(r["pass"]),
                FAMILY_SHORT.get(r["family"], "?"),
                fmt_num(r["exponent"]) if r["exponent"] == r["exponent"] else "",
                r["crossover"],
                speed,
                fmt_int(r["largest_n"]),
                fmt_ms(r["time_ms"]),
                fmt_mib(r["peak_mib"]),
                noisy_cell,
            ]
        )
        configs.append(str(r["config"]))
    headers = [
        "impl",
        "pass",
        "family",
        "time ∝ N^",
        f"faster than {b}",
        f"× {b} (largest common N)",
        "largest N",
        "time there",
        "memory there",
        "noisy",
    ]
    if any(configs):
        headers = headers[:2] + ["config"] + headers[2:]
        rows = [r[:2] + [c] + r[2:] for r, c in zip(rows, configs, strict=True)]
    off = 1 if any(configs) else 0
    note = (
        f"time ∝ N^: fitted exponent of the median time (1 linear, 2 quadratic); faster than {b}: the N above "
        f"which it stays faster; ×: {b}'s time over its own (> 1: faster); noisy: points whose median is "
        "uncertain (≈ in the tables, hollow in the charts)."
    )
    return Table("findings", "Findings", headers, rows, note, numeric=tuple(i + off for i in (3, 6, 7, 8)))
