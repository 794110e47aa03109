"""GitHub-flavoured Markdown report (fit to append to ``$GITHUB_STEP_SUMMARY``): headline
findings, image links to the charts (relative paths), the analysis tables, the environment.
No raw HTML: every cell is escaped so a plugin's name or error message renders as text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from attnbench.report.analysis import Analysis
from attnbench.report.plots import Chart
from attnbench.report.tables import Table, n_text

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>!|~])")


def escape(text: Any) -> str:
    """``text`` on one line, with Markdown and HTML syntax made literal."""
    one_line = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", one_line.replace("&", "&amp;"))


def table(t: Table) -> str:
    """A GFM table (with its title as a heading and its note in italics)."""
    lines = [f"### {escape(t.title)}", ""]
    if t.note:
        lines += [f"_{escape(t.note)}_", ""]
    if not t.rows:
        return "\n".join(lines + ["(nothing to show)", ""])
    lines.append("| " + " | ".join(escape(h) for h in t.headers) + " |")
    lines.append("|" + "|".join("---" for _ in t.headers) + "|")
    lines += ["| " + " | ".join(escape(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines + [""])


def headline(a: Analysis) -> list[str]:
    """Bullet points: time exponent per impl and pass, and each crossover found."""
    out = []
    for r in a.time_fits.to_dict("records"):
        cfg = f" ({r['config']})" if r["config"] else ""
        out.append(
            f"{r['impl']} {r['pass']}{cfg}: time ∝ N^{r['exponent']:.2f} (R² {r['r2']:.3f}, N {r['n_lo']}–{r['n_hi']})"
        )
    for r in a.crossovers.to_dict("records"):
        cfg = f" ({r['config']})" if r["config"] else ""
        out.append(f"{r['impl']} vs {r['versus']}, {r['pass']}{cfg}: {r['verdict']}")
    return out


def status_counts(df: Any) -> str:
    """e.g. ``84 points: ok 70, skipped 14; failed correctness 0``."""
    counts = df["status"].value_counts().to_dict()
    bad = int((df["correct"] == False).sum()) if "correct" in df else 0  # noqa: E712
    parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    return f"{len(df)} points: {parts}; failed correctness {bad}"


def render(
    df: Any,
    meta: dict[str, Any],
    a: Analysis,
    charts: Sequence[Chart],
    tables: Sequence[Table],
    chart_prefix: str = "charts/",
) -> str:
    """The whole Markdown report as a string; chart links are ``chart_prefix + file name``."""
    suite = meta.get("suite") or {}
    name = suite.get("name", "?") if isinstance(suite, dict) else suite
    desc = suite.get("description", "") if isinstance(suite, dict) else ""
    parts = [f"## attnbench report: {escape(name)} on {escape(meta.get('device', '?'))}", ""]
    if desc:
        parts += [f"_{escape(desc)}_", ""]
    parts += [escape(status_counts(df)), ""]
    findings = headline(a)
    if findings:
        parts += ["### Findings", ""] + [f"- {escape(f)}" for f in findings] + [""]
    if charts:
        parts += ["### Charts", ""]
        for c in charts:
            parts += [
                f"![{escape(c.title)}]({chart_prefix}{c.png.name})",
                "",
                f"_{escape(c.caption)}_ ([SVG]({chart_prefix}{c.svg.name}))",
                "",
            ]
    parts += [table(t) for t in tables]
    parts += ["### Environment", "", "| key | value |", "|---|---|"]
    parts += [f"| {escape(k)} | {escape(v)} |" for k, v in a.environment]
    parts.append("")
    return "\n".join(parts)


__all__ = ["escape", "headline", "n_text", "render", "status_counts", "table"]
