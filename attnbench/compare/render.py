"""A comparison as a Markdown verdict table (for ``$GITHUB_STEP_SUMMARY``), JSON, or a rich table."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from attnbench.compare.verdicts import Comparison, PointVerdict, Verdict

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


def _f(v: float | None, fmt: str) -> str:
    return "" if v is None else format(v, fmt)


def _ratio(pv: PointVerdict) -> str:
    return "" if pv.ratio is None else f"{(pv.ratio - 1) * 100:+.1f}%"


def _ci(pv: PointVerdict) -> str:
    if pv.ci_low is None or pv.ci_high is None:
        return ""
    return f"{(pv.ci_low - 1) * 100:+.1f}%..{(pv.ci_high - 1) * 100:+.1f}%"


def rows(cmp: Comparison, all_points: bool = True) -> list[PointVerdict]:
    out = sorted(cmp.verdicts, key=lambda v: (ORDER.index(v.verdict), v.point_id))
    return out if all_points else [v for v in out if v.verdict != Verdict.UNCHANGED]


def summary_line(cmp: Comparison) -> str:
    counts = {k: n for k, n in cmp.counts().items() if n}
    return ", ".join(f"{n} {k}" for k, n in counts.items()) or "no points"


def to_markdown(cmp: Comparison, exit_code: int, all_points: bool = False) -> str:
    """A GitHub-flavoured Markdown report: headline, counts, notes, then the verdict table."""
    status = {0: "✅ pass", 1: "❌ regression or failure", 3: "❔ inconclusive"}.get(exit_code, str(exit_code))
    thresholds = ", ".join(c.text for c in cmp.config.checks)
    lines = [
        f"## attnbench compare: {status}",
        "",
        f"`{cmp.base_label}` → `{cmp.cur_label}`: {summary_line(cmp)}.",
        "",
        f"Thresholds {thresholds}; FDR {cmp.config.alpha:g} (Benjamini-Hochberg); "
        f"run-wide shift {(cmp.shift - 1) * 100:+.1f}%{' (divided out)' if cmp.config.normalize else ''}.",
    ]
    lines += [f"> {n}" for n in cmp.notes]
    shown = rows(cmp, all_points)
    if shown:
        lines += ["", "| | point | verdict | baseline ms | current ms | Δ time | CI | q | MiB | why |",
                  "|---|---|---|---:|---:|---:|---|---:|---:|---|"]  # fmt: skip
        for pv in shown:
            mib = "" if pv.cur_mib is None else f"{_f(pv.base_mib, '.4g')} → {_f(pv.cur_mib, '.4g')}"
            reason = pv.reason.replace("|", "\\|")
            lines.append(
                f"| {ICON[pv.verdict]} | `{pv.point_id}` | {pv.verdict.value} | {_f(pv.base_ms, '.4g')} | "
                f"{_f(pv.cur_ms, '.4g')} | {_ratio(pv)} | {_ci(pv)} | {_f(pv.q, '.2g')} | {mib} | {reason} |"
            )
    hidden = len(cmp.verdicts) - len(shown)
    if hidden:
        lines += ["", f"{hidden} unchanged points not shown."]
    return "\n".join(lines) + "\n"


def to_json(cmp: Comparison, exit_code: int) -> dict[str, Any]:
    return {
        "baseline": cmp.base_label,
        "current": cmp.cur_label,
        "exit_code": exit_code,
        "counts": cmp.counts(),
        "shift": cmp.shift,
        "notes": cmp.notes,
        "config": {
            "thresholds": [c.text for c in cmp.config.checks],
            "alpha": cmp.config.alpha,
            "confidence": cmp.config.confidence,
            "min_samples": cmp.config.min_samples,
            "normalize": cmp.config.normalize,
        },
        "points": [pv.as_dict() for pv in cmp.verdicts],
    }


def print_table(cmp: Comparison, exit_code: int, all_points: bool = False) -> None:
    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"{escape(cmp.base_label)} → {escape(cmp.cur_label)}", title_justify="left")
    for col, just in (("point", "left"), ("verdict", "left"), ("base ms", "right"), ("cur ms", "right"),
                      ("Δ", "right"), ("CI", "right"), ("q", "right"), ("MiB", "right"), ("why", "left")):  # fmt: skip
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for pv in rows(cmp, all_points):
        mib = "" if pv.cur_mib is None else f"{_f(pv.base_mib, '.4g')}→{_f(pv.cur_mib, '.4g')}"
        style = STYLE.get(pv.verdict, "")
        table.add_row(escape(pv.point_id), f"[{style}]{pv.verdict.value}[/]" if style else pv.verdict.value,
                      _f(pv.base_ms, ".4g"), _f(pv.cur_ms, ".4g"), _ratio(pv), _ci(pv), _f(pv.q, ".2g"), mib,
                      escape(pv.reason))  # fmt: skip
    if table.row_count:
        console.print(table)
    for note in cmp.notes:
        console.print(f"note: {escape(note)}")
    word = {0: "[green]pass[/]", 1: "[bold red]regression[/]", 3: "[yellow]inconclusive[/]"}.get(
        exit_code, str(exit_code)
    )
    console.print(f"{word}: {summary_line(cmp)} (run-wide shift {(cmp.shift - 1) * 100:+.1f}%)")
