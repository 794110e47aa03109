"""What a chart cannot show: the points that did not run (skipped, error, crashed, oom,
timeout), grouped per impl and status into a few lines, to list beside the chart."""

from __future__ import annotations

import pandas as pd

from attnbench.report.frame import passes
from attnbench.report.model import SkipItem, SkipList
from attnbench.text import terminal_safe


def skip_items(df: pd.DataFrame) -> list[SkipItem]:
    """One item per (impl, status) among the rows that are not ok: the passes and sizes it
    covers and the reason of its smallest N (reasons that differ only by N read alike)."""
    bad = df[df["status"].astype(str) != "ok"]
    items = []
    for (impl, status), grp in bad.groupby([bad["impl"].astype(str), bad["status"].astype(str)], sort=True):
        grp = grp.assign(_n=pd.to_numeric(grp["N"], errors="coerce")).sort_values("_n")
        ns = sorted({int(n) for n in grp["_n"].dropna()})
        why = grp["error"].dropna().astype(str) if "error" in grp else pd.Series(dtype=str)
        reason = terminal_safe(why.iloc[0]) if len(why) else ""
        items.append(SkipItem(str(impl), str(status), passes(grp), ns, " ".join(reason.split())))
    order = {"skipped": 1}  # failures first: they matter more than planned skips
    return sorted(items, key=lambda i: (order.get(i.status, 0), i.impl))


def skip_list(df: pd.DataFrame) -> SkipList | None:
    """The list for a chart of ``df``, or None when every point ran."""
    items = skip_items(df)
    return SkipList("Not on the charts (no number)", items) if items else None
