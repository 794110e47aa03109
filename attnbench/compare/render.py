"""A comparison as a Markdown verdict table (for ``$GITHUB_STEP_SUMMARY``), JSON, or terminal text.

Every string that came from a run (labels, point ids, impl names, reasons built from error
messages) is data: :func:`attnbench.text.md_escape` for Markdown, :func:`attnbench.text.terminal_safe`
then ``rich.markup.escape`` for the terminal. Numbers go through :mod:`attnbench.fmt`. The
terminal layout is a two-column grid (verdict, then the point and its numbers below it), so it
reads at 80 columns and wraps rather than truncates when piped.
"""

from __future__ import annotations

import io
import shutil
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnbench.compare.verdicts import Comparison, PointVerdict, Verdict
from attnbench.fmt import fmt_mib, fmt_ms, fmt_num, fmt_pct
from attnbench.text import md_escape, terminal_safe

ICON = {
    Verdict.REGRESSED: "🔴",
    Verdict.FAILURE: "❌",
    Verdict.INCONCLUSIVE: "❔",
    Verdict.IMPROVED: "🟢",
    Verdict.FIXED: "✅",
    Verdict.UNCHANGED: "⚪",
    Verdict.NEW: "🆕",
    Verdict.MISSING: "➖",
}
STYLE = {Verdict.REGRESSED: "bold red", Verdict.FAILURE: "bold red", Verdict.INCONCLUSIVE: "yellow",
         Verdict.IMPROVED: "green", Verdict.FIXED: "green"}  # fmt: skip
# worst first, so the table opens with what needs attention
ORDER = [Verdict.FAILURE, Verdict.REGRESSED, Verdict.INCONCLUSIVE, Verdict.MISSING, Verdict.FIXED,
         Verdict.IMPROVED, Verdict.NEW, Verdict.UNCHANGED]  # fmt: skip
HEADLINE = {0: "✅ pass", 1: "❌ regression or failure", 3: "❔ inconclusive"}


def delta(ratio: float | None) -> str:
    """A ratio as a signed change: ``delta(1.253) == "+25.3%"``, ``delta(0.968) == "-3.20%"``."""
    if ratio is None:
        return ""
    d = (ratio - 1) * 100
    return "±0%" if abs(d) < 0.05 else ("+" if d > 0 else "-") + fmt_pct(abs(d))


def interval(pv: PointVerdict) -> str:
    if pv.ci_low is None or pv.ci_high is None:
        return ""
    return f"{delta(pv.ci_low)}..{delta(pv.ci_high)}"


def times(pv: PointVerdict) -> str:
    if pv.base_ms is None and pv.cur_ms is None:
        return ""
    return f"{fmt_ms(pv.base_ms)} → {fmt_ms(pv.cur_ms)}"


def memory(pv: PointVerdict) -> str:
    return "" if pv.cur_mib is None else f"{fmt_mib(pv.base_mib)} → {fmt_mib(pv.cur_mib)}"


def rows(cmp: Comparison, all_points: bool = True) -> list[PointVerdict]:
    out = sorted(cmp.verdicts, key=lambda v: (ORDER.index(v.verdict), v.point_id))
    return out if all_points else [v for v in out if v.verdict != Verdict.UNCHANGED]


def summary_line(cmp: Comparison) -> str:
    counts = {k: n for k, n in cmp.counts().items() if n}
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no points"


def shift_text(cmp: Comparison) -> str:
    if not cmp.shift_measured:
        return "no machine reference"
    return f"machine reference {delta(cmp.shift)}{' (divided out)' if cmp.config.normalize else ''}"


def to_markdown(cmp: Comparison, exit_code: int, all_points: bool = False) -> str:
    """A GitHub-flavoured Markdown report: headline, counts, notes, then the verdict table."""
    thresholds = ", ".join(c.text for c in cmp.config.checks)
    lines = [
        f"## attnbench compare: {HEADLINE.get(exit_code, str(exit_code))}",
        "",
        f"{md_escape(cmp.base_label)} → {md_escape(cmp.cur_label)}: {md_escape(summary_line(cmp))}.",
        "",
        md_escape(
            f"Thresholds {thresholds}; FDR {cmp.config.alpha:g} (Benjamini-Hochberg); "
            f"{cmp.config.confidence * 100:g}% intervals; at least {cmp.config.min_rounds} rounds a side; "
            f"{shift_text(cmp)}."
        ),
    ]
    lines += [f"> **{md_escape(f)}**" for f in cmp.failures]
    lines += [f"> {md_escape(n)}" for n in cmp.notes]
    shown = rows(cmp, all_points)
    if shown:
        lines += ["", "| | point | verdict | Δ time | interval | q | baseline → current | memory | why |",
                  "|---|---|---|---:|---|---:|---|---|---|"]  # fmt: skip
        for pv in shown:
            cells = [pv.point_id, pv.verdict.value, delta(pv.ratio), interval(pv),
                     "" if pv.q is None else fmt_num(pv.q), times(pv), memory(pv), pv.reason]  # fmt: skip
            lines.append(f"| {ICON[pv.verdict]} | " + " | ".join(md_escape(c) for c in cells) + " |")
    hidden = len(cmp.verdicts) - len(shown)
    if hidden:
        lines += ["", f"{hidden} unchanged points not shown."]
    return "\n".join(lines) + "\n"


def to_json(cmp: Comparison, exit_code: int) -> dict[str, Any]:
    c = cmp.config
    return {
        "baseline": cmp.base_label,
        "current": cmp.cur_label,
        "exit_code": exit_code,
        "counts": cmp.counts(),
        "shift": cmp.shift,
        "shift_measured": cmp.shift_measured,
        "failures": cmp.failures,
        "notes": cmp.notes,
        "config": {
            "thresholds": [k.text for k in c.checks],
            "alpha": c.alpha,
            "confidence": c.confidence,
            "min_samples": c.min_samples,
            "min_rounds": c.min_rounds,
            "normalize": c.normalize,
            "max_missing": c.max_missing,
        },
        "points": [pv.as_dict() for pv in cmp.verdicts],
    }


def _safe(text: Any) -> str:
    return escape(terminal_safe(text))


def print_table(cmp: Comparison, exit_code: int, all_points: bool = False, file: TextIO | None = None) -> None:
    """:func:`table_text` written to ``file`` (stdout): the terminal's width and colours on a
    terminal, 80 plain columns otherwise. Rendered first and written by us, so a closed pipe is
    a BrokenPipeError for the caller (rich would exit with 1 itself)."""
    out = file or sys.stdout
    tty = out.isatty()
    out.write(table_text(cmp, exit_code, all_points, shutil.get_terminal_size().columns if tty else 80, tty))
    out.flush()


def table_text(cmp: Comparison, exit_code: int, all_points: bool = False, width: int = 80, color: bool = False) -> str:
    """The verdicts as terminal text: a verdict column, and the point with its numbers and reason
    beside it (one grid row per point, wrapped to ``width``)."""
    buf = io.StringIO()
    console = Console(file=buf, width=width, force_terminal=color, no_color=not color, highlight=False)
    console.print(f"{_safe(cmp.base_label)} → {_safe(cmp.cur_label)}")
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="fold")
    for pv in rows(cmp, all_points):
        style = STYLE.get(pv.verdict, "")
        verdict = f"[{style}]{pv.verdict.value}[/]" if style else pv.verdict.value
        numbers = "  ".join(
            x for x in (delta(pv.ratio), f"({interval(pv)})" if interval(pv) else "", times(pv), memory(pv)) if x
        )
        detail = [_safe(pv.point_id)]
        if numbers:
            detail.append("  " + _safe(numbers))
        if pv.reason:
            detail.append("  [dim]" + _safe(pv.reason) + "[/]")
        grid.add_row(verdict, "\n".join(detail))
    if grid.row_count:
        console.print(grid)
    for failure in cmp.failures:
        console.print(f"[bold red]gate failed:[/] {_safe(failure)}")
    for note in cmp.notes:
        console.print(f"note: {_safe(note)}")
    word = {0: "[green]pass[/]", 1: "[bold red]regression[/]", 3: "[yellow]inconclusive[/]"}.get(
        exit_code, str(exit_code)
    )
    console.print(f"{word}: {_safe(summary_line(cmp))} ({_safe(shift_text(cmp))})")
    return buf.getvalue()
