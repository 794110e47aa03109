"""The end-of-run summary: median time and peak memory per impl and pass, by N."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

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
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

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
        from attnbench.decode.summary import decode_table

        console.print(decode_table(df))
    counts = df["status"].value_counts().to_dict()
    incorrect = int((df["correct"] == False).sum())  # noqa: E712
    console.print(
        "points: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; failed correctness {incorrect}"
    )
    bad = df[df["status"].isin(["error", "oom", "timeout", "crashed"]) | (df["correct"] == False)]  # noqa: E712
    for r in bad.to_dict("records")[:20]:
        why = r.get("error") or r.get("correctness_error")
        console.print(f"  {escape(str(r['point_id']))}: {r['status']}: {escape(str(why))}")
    console.print(f"results: {run_dir}")
