"""The decode table of the end-of-run summary: tokens/s, first and last step, state size."""

from __future__ import annotations

import math
from typing import Any


def _fmt(val: Any, fmt: str) -> str:
    if val is None or (isinstance(val, float) and math.isnan(val)):
        return "?"
    return format(val, fmt)


def decode_table(df: Any) -> Any:
    """A rich Table of the decode rows of ``df`` (one row per decode point)."""
    from rich.markup import escape
    from rich.table import Table

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
