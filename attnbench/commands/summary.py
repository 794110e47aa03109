"""The end-of-run summary: median time and peak memory per impl and pass, by N, and the decode
table (tokens/s, first and last step, state size)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnbench.point import FAILED_STATUS_NAMES

_SHORT = {"skipped": "-", "error": "ERR", "oom": "OOM", "timeout": "T/O", "crashed": "CRASH"}


def _cell(row: Any, col: str, fmt: str) -> str:
    if row["status"] != "ok":
        return _SHORT.get(row["status"], row["status"])
    val = row.get(col)
    text = "?" if val is None or (isinstance(val, float) and math.isnan(val)) else format(val, fmt)
    if row.get("correct") is False:
        text += " ✗"
    return text


def print_summary(df: Any, run_dir: Path) -> None:
    console = Console()
    ns = sorted(df["N"].unique())
    keys = ["impl", "pass"] + [
        c for c in ("causal", "dtype", "B", "H", "D", "M", "seed", "P") if c in df and df[c].nunique() > 1
    ]
    for col, title, fmt in (("time_ms_median", "median ms per call", ".3g"), ("peak_mib", "peak MiB", ".4g")):
        table = Table(title=f"{title} (✗ = failed correctness, - = skipped)")
        for key in keys:
            table.add_column(key)
        for n in ns:
            table.add_column(f"N={n}", justify="right")
        for ident, grp in df.groupby(keys, sort=True, dropna=False):
            by_n = {r["N"]: r for r in grp.to_dict("records")}
            cells = [_cell(by_n[n], col, fmt) if n in by_n else "" for n in ns]
            table.add_row(*[escape(str(x)) for x in ident], *cells)
        console.print(table)
    if "decode" in set(df["pass"]):  # per-token columns of the decode pass (N = P + T)
        console.print(decode_table(df))
    counts = df["status"].value_counts().to_dict()
    incorrect = int((df["correct"] == False).sum())  # noqa: E712
    console.print(
        "points: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; failed correctness {incorrect}"
    )
    bad = df[df["status"].isin(FAILED_STATUS_NAMES) | (df["correct"] == False)]  # noqa: E712
    for r in bad.to_dict("records")[:20]:
        why = r.get("error") or r.get("correctness_error")
        console.print(f"  {escape(str(r['point_id']))}: {r['status']}: {escape(str(why))}")
    console.print(f"results: {run_dir}")


def _fmt(val: Any, fmt: str) -> str:
    if val is None or (isinstance(val, float) and math.isnan(val)):
        return "?"
    return format(val, fmt)


def decode_table(df: Any) -> Any:
    """A rich Table of the decode rows of ``df`` (one row per decode point)."""
    table = Table(title="decode: per generated token (✗ = failed correctness)")
    for col in ("impl", "P", "T", "tok/s", "ms@1", "ms@T", "state MiB", "peak MiB"):
        table.add_column(col, justify="left" if col == "impl" else "right", no_wrap=col == "impl")
    rows = df[df["pass"] == "decode"].sort_values(["P", "T", "impl"])
    for r in rows.to_dict("records"):
        if r["status"] != "ok":
            cells = [r["status"]] + [""] * 4
        else:
            mark = "" if r.get("correct") is not False else " ✗"
            cells = [
                _fmt(r.get("tokens_per_s"), ".0f" if (r.get("tokens_per_s") or 0) >= 10 else ".3g")
                + ("~" if r.get("tokens_per_s_method") == "interpolated" else "")
                + mark,
                _fmt(r.get("step_ms_first"), ".3g"),
                _fmt(r.get("step_ms_last"), ".3g"),
                _fmt(r.get("state_mib_last"), ".3g"),
                _fmt(r.get("peak_mib"), ".3g"),
            ]
        table.add_row(escape(str(r["impl"])), str(int(r["P"])), str(int(r["T"])), *cells)
    table.caption = (
        "ms@1, ms@T: step 1 and step T; state: cache/state after step T; ~ = integrated from the sampled steps"
    )
    return table
