"""The end-of-run summary on the terminal: median time and peak memory per impl and pass, by N,
noisy numbers marked (the report's definition: attnbench.report.frame.noisy) and counted,
failures listed (the first 20, then how many more), and the decode table.

Readable from 80 columns up: implementation names are never cut (an N axis too wide for the
terminal is split over several tables instead), every number goes through attnbench.fmt
(3 significant digits and a unit), and every string from a result or a plugin through
attnbench.text.terminal_safe, then rich.markup.escape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnbench.commands._common import safe
from attnbench.fmt import fmt_count, fmt_int, fmt_mib, fmt_ms, fmt_s, fmt_si
from attnbench.point import FAILED_STATUS_NAMES
from attnbench.report.content import noise_fact, status_counts
from attnbench.report.frame import NOISY_MARK, noise_reasons, with_config
from attnbench.results import read_metadata

SHORT_STATUS = {"skipped": "-", "error": "ERR", "oom": "OOM", "timeout": "T/O", "crashed": "CRASH"}
INCORRECT_MARK = "✗"
MAX_FAILURES = 20  # failures listed one per line; the rest are counted
SINGLE_MARK = "¹"  # measured by one call: the suite's single_call_s (a long call is timed once)
LEGEND = (
    f"{NOISY_MARK} noisy time  {SINGLE_MARK} one call  {INCORRECT_MARK} incorrect  - skipped  ERR OOM T/O CRASH: failed"
)
PASS_ORDER = ("fwd", "bwd", "fwdbwd")


def _cell(row: dict[str, Any], column: str, fmt: Any, why: str) -> str:
    status = str(row["status"])
    if status != "ok":
        return SHORT_STATUS.get(status, safe(status))
    text = fmt(row.get(column))
    if row.get("correct") is False:
        return text + INCORRECT_MARK
    if column != "time_ms_median":  # noise and single calls are about the timing, not the memory
        return text
    if why:
        return text + NOISY_MARK
    return text + SINGLE_MARK if row.get("single_call") is True else text


def _column_groups(console: Console, make: Any, n_cols: int) -> list[range]:
    """Split ``n_cols`` N columns into consecutive groups whose table fits the console's width
    (at least one column per group; ``make(range)`` builds the table of a group)."""
    wide = console.options.update(width=10_000, max_width=10_000)  # a measurement is capped at its width
    groups: list[range] = []
    start = 0
    while start < n_cols:
        end = start + 1
        while end < n_cols and console.measure(make(range(start, end + 1)), options=wide).maximum <= console.width:
            end += 1
        groups.append(range(start, end))
        start = end
    if len(groups) > 1:  # balance the groups: 4 + 3 columns reads better than 5 + 2
        per = -(-n_cols // len(groups))
        groups = [range(i, min(i + per, n_cols)) for i in range(0, n_cols, per)]
    return groups


def by_n_tables(
    df: pd.DataFrame, meta: dict[str, Any], column: str, title: str, fmt: Any, console: Console
) -> list[Any]:
    """``column`` by impl and pass (rows) and N (columns), one table per configuration and per
    slice of the N axis that fits the console. Impls with no measured point are left out (the
    summary lists them with the reason)."""
    data = with_config(df)
    why = noise_reasons(data, meta)
    order = {impl: i for i, impl in enumerate(dict.fromkeys(df["impl"].astype(str)))}  # the suite's order
    data = data.assign(_why=why, _order=data["impl"].astype(str).map(order)).sort_values(["_order", "N"], kind="stable")
    out: list[Any] = []
    for config, conf in data.groupby("config", sort=False):
        ran = conf.groupby("impl")["status"].transform(lambda s: (s != "skipped").any())
        conf = conf[ran]
        if not len(conf):
            continue
        ns = sorted(int(n) for n in conf["N"].dropna().unique())
        rows: list[tuple[str, str, dict[int, str]]] = []
        passes = [p for p in PASS_ORDER if p in set(conf["pass"])] + sorted(set(conf["pass"]) - set(PASS_ORDER))
        for pass_ in passes:
            for impl, grp in conf[conf["pass"] == pass_].groupby("impl", sort=False):
                cells = {int(r["N"]): _cell(r, column, fmt, r["_why"]) for r in grp.to_dict("records")}
                rows.append((str(pass_), str(impl), cells))
        name = f"{title} ({safe(config)})" if config else title

        def make(cols: range, name: str = name, ns: list[int] = ns, rows: list[Any] = rows) -> Table:
            shown = [ns[i] for i in cols]
            span = "" if len(shown) == len(ns) else f", N={fmt_int(shown[0])} to {fmt_int(shown[-1])}"
            table = Table(title=f"{name}{span}", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
            table.add_column("pass")
            table.add_column("impl", no_wrap=True)
            for n in shown:
                table.add_column(f"N={fmt_int(n)}", justify="right", no_wrap=True)
            last = None
            for pass_, impl, cells in rows:
                if last is not None and pass_ != last:
                    table.add_section()
                table.add_row(pass_ if pass_ != last else "", safe(impl), *[cells.get(n, "") for n in shown])
                last = pass_
            return table

        out += [make(g) for g in _column_groups(console, make, len(ns))]
    return out


def not_run_lines(df: pd.DataFrame) -> list[str]:
    """One line per impl that ran nowhere in the run, with the first reason given."""
    lines = []
    for impl, grp in df.groupby("impl", sort=True):
        if (grp["status"] == "skipped").all():
            reason = next((str(e) for e in grp["error"] if isinstance(e, str) and e), "skipped")
            lines.append(f"  {safe(impl)}: {safe(reason)}")
    return lines


def single_call_line(df: pd.DataFrame, meta: dict[str, Any]) -> str | None:
    """``12 points were timed by one call (calls of 150 ms or more)``, or None."""
    if "single_call" not in df.columns:
        return None
    n = int(df["single_call"].astype(object).eq(True).sum())
    if not n:
        return None
    limit = (meta.get("timing") or {}).get("single_call_s") if isinstance(meta, dict) else None
    when = f" (calls of {fmt_s(limit)} or more)" if limit else ""
    return f"{SINGLE_MARK} {fmt_count(n)} points were timed by one call{when}: no noise estimate, one process"


def failure_lines(df: pd.DataFrame, limit: int = MAX_FAILURES) -> list[str]:
    """The first ``limit`` points that failed (a failed status or a wrong result), one line
    each, then ``N more`` when there are more."""
    failed = df["status"].isin(FAILED_STATUS_NAMES) | df["correct"].astype(object).eq(False)
    bad = df[failed].to_dict("records")
    lines = []
    for r in bad[:limit]:
        why = r.get("error") if r["status"] != "ok" else r.get("correctness_error")
        what = "incorrect" if r["status"] == "ok" else str(r["status"])
        reason = f": {safe(why)}" if isinstance(why, str) and why else ""
        lines.append(f"  {safe(r['point_id'])}: {safe(what)}{reason}")
    if len(bad) > limit:
        lines.append(f"  ... {fmt_count(len(bad) - limit)} more (all in results.parquet, columns status and error)")
    return lines


def print_summary(
    df: pd.DataFrame, run_dir: Path, meta: dict[str, Any] | None = None, console: Console | None = None
) -> None:
    """Print the run's summary (see the module docstring). ``meta`` defaults to the run's
    metadata (its min_samples decides which points have too few samples)."""
    if meta is None:
        try:
            meta = read_metadata(run_dir)
        except Exception:  # the summary of a run with unreadable metadata still shows the numbers
            meta = {}
    console = console or Console()
    kernel = df[df["pass"].astype(str) != "decode"]
    if len(kernel):
        for title, column, fmt in (
            ("median time per call", "time_ms_median", fmt_ms),
            ("peak memory", "peak_mib", fmt_mib),
        ):
            for table in by_n_tables(kernel, meta, column, title, fmt, console):
                console.print(table)
        console.print(escape(LEGEND), style="dim")
    if "decode" in set(df["pass"].astype(str)):  # per-token columns of the decode pass (N = P + T)
        console.print(decode_table(df, meta))
    skipped = not_run_lines(kernel) if len(kernel) else []
    if skipped:
        console.print("not run here:")
        for line in skipped:
            console.print(line)
    console.print(escape(status_counts(df)))
    noise = noise_fact(df, meta)
    console.print(escape(noise.value), style="yellow" if noise.warn else None)
    single = single_call_line(df, meta)
    if single:
        console.print(single)
    bad = failure_lines(df)
    if bad:
        console.print(f"failed: {fmt_count(_n_failed(df))} points", style="red")
        for line in bad:
            console.print(line)
    console.print(f"results: {safe(run_dir)}")


def _n_failed(df: pd.DataFrame) -> int:
    return int((df["status"].isin(FAILED_STATUS_NAMES) | df["correct"].astype(object).eq(False)).sum())


def decode_table(df: pd.DataFrame, meta: dict[str, Any] | None = None) -> Table:
    """A rich Table of the decode rows of ``df`` (one row per decode point)."""
    table = Table(
        title=f"decode: per generated token ({INCORRECT_MARK} failed correctness)",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
    )
    for col in ("impl", "P", "T", "tok/s", "step 1", "step T", "state", "peak"):
        table.add_column(col, justify="left" if col == "impl" else "right", no_wrap=True)
    rows = df[df["pass"] == "decode"].sort_values(["P", "T", "impl"])
    why = noise_reasons(rows, meta or {})
    for idx, r in zip(rows.index, rows.to_dict("records"), strict=True):
        if r["status"] != "ok":
            cells = [SHORT_STATUS.get(str(r["status"]), safe(r["status"]))] + [""] * 4
        else:
            mark = INCORRECT_MARK if r.get("correct") is False else (NOISY_MARK if why[idx] else "")
            cells = [
                fmt_si(r.get("tokens_per_s")) + ("~" if r.get("tokens_per_s_method") == "interpolated" else "") + mark,
                fmt_ms(r.get("step_ms_first")),
                fmt_ms(r.get("step_ms_last")),
                fmt_mib(r.get("state_mib_last")),
                fmt_mib(r.get("peak_mib")),
            ]
        table.add_row(safe(r["impl"]), fmt_int(r.get("P")), fmt_int(r.get("T")), *cells)
    table.caption = (
        "step 1, step T: median time of that step; state: cache/state after step T; ~ integrated from sampled steps"
    )
    return table
