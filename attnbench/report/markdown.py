"""The report model as GitHub-flavoured Markdown, fit for a CI job summary (``$GITHUB_STEP_SUMMARY``).

- Images only when the charts are uploaded somewhere: ``assets_url`` is the URL prefix of the
  charts folder (``--assets-url``); without it a chart is named, not linked (a job summary
  cannot show a relative path).
- Long tables fold into ``<details>``; sections marked detail-only (``summary=False``) are
  named at the end and shown in full in report.html.
- Every text is escaped (attnbench.text.md_escape): the only raw HTML is ``<details>`` and
  ``<summary>`` (summary text HTML-escaped), which GitHub renders.
"""

from __future__ import annotations

import html

from attnbench.report.model import MARKS, Chart, Note, Report, Section, SkipList, Table, cell_text
from attnbench.text import md_escape


def _table_lines(t: Table) -> list[str]:
    if not t.rows:
        return ["(nothing to show)"]
    align = ["---:" if i in t.numeric else "---" for i in range(len(t.headers))]
    lines = ["| " + " | ".join(md_escape(h) for h in t.headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(md_escape(cell_text(c)) for c in row) + " |" for row in t.rows]
    return lines


def table(t: Table) -> list[str]:
    """A table: a heading and a GFM table, or folded inside ``<details>`` when ``collapsed``."""
    note = [f"_{md_escape(t.note)}_", ""] if t.note else []
    if t.collapsed:
        summary = html.escape(f"{t.title} ({len(t.rows)} rows)", quote=False)
        return [f"<details><summary>{summary}</summary>", "", *note, *_table_lines(t), "", "</details>", ""]
    return [f"#### {md_escape(t.title)}", "", *_table_lines(t), "", *note]


def skip_list(s: SkipList) -> list[str]:
    """What the charts leave out, folded: one bullet per impl and status."""
    n = sum(len(i.ns) * max(len(i.passes), 1) for i in s.items)
    summary = html.escape(f"{s.title}: {len(s.items)} impl/status groups, about {n} points", quote=False)
    items = [
        f"- {md_escape(i.impl)}: {md_escape(i.status)} at {md_escape(i.where())}"
        + (f": {md_escape(i.reason)}" if i.reason else "")
        for i in s.items
    ]
    return [f"<details><summary>{summary}</summary>", "", *items, "", "</details>", ""]


def chart(c: Chart, assets_url: str | None) -> list[str]:
    """An image link under ``assets_url``, or the chart named when the charts are not uploaded."""
    if assets_url:
        base = assets_url.rstrip("/") + "/"
        return [
            f"![{md_escape(c.title)}]({base}{c.png.name}) _{md_escape(c.caption)}_",
            "",
        ]  # one line: CI summaries are short
    return [
        f"_Chart: {md_escape(c.title)} ({md_escape(c.caption)}), in charts/{md_escape(c.png.name)} and report.html._",
        "",
    ]


def folded(tables: list[Table]) -> list[str]:
    """Consecutive collapsed tables folded into one ``<details>`` (a summary stays short)."""
    if len(tables) == 1:
        return table(tables[0])
    summary = html.escape("; ".join(f"{t.title} ({len(t.rows)} rows)" for t in tables), quote=False)
    body: list[str] = []
    for t in tables:
        # a table may follow a paragraph line directly in GFM: its title, then the table
        note = f" _{md_escape(t.note)}_" if t.note else ""
        body += [f"**{md_escape(t.title)}**{note}", *_table_lines(t), ""]
    return [f"<details><summary>{summary}</summary>", "", *body, "</details>", ""]


def section(s: Section, assets_url: str | None, seen: set[int]) -> list[str]:
    lines = [f"### {md_escape(s.title)}", ""]
    pending: list[Table] = []
    for b in s.blocks:
        if isinstance(b, Table) and b.collapsed:
            pending.append(b)
            continue
        if pending:
            lines += folded(pending)
            pending = []
        if isinstance(b, Chart):
            lines += chart(b, assets_url)
            if b.skipped is not None and id(b.skipped) not in seen:  # the same list beside every chart: once
                seen.add(id(b.skipped))
                lines += skip_list(b.skipped)
        elif isinstance(b, Table):
            lines += table(b)
        elif isinstance(b, SkipList):
            lines += skip_list(b)
        elif isinstance(b, Note):
            lines += [md_escape(b.text), ""]
    if pending:
        lines += folded(pending)
    return lines


def render(report: Report, assets_url: str | None = None) -> str:
    """The whole Markdown report as a string."""
    lines = [f"## {md_escape(report.title)}", ""]
    if report.subtitle:
        lines += [f"_{md_escape(report.subtitle)}_", ""]
    for f in report.facts:
        lines.append(f"- {'⚠️ ' if f.warn else ''}**{md_escape(f.label)}**: {md_escape(f.value)}")
    lines.append("")
    seen: set[int] = set()
    rest = []
    for s in report.sections:
        if s.summary:
            lines += section(s, assets_url, seen)
        else:
            rest.append(s.title)
    marks = "; ".join(f"{sym} {what}" for sym, what in MARKS.values())
    footer = f"Marks: {marks}; skip, ERR, OOM, T/O, CRASH: no number."
    if rest:
        footer += f" In report.html: {', '.join(rest)}, and a sortable table of every point."
    lines += [f"_{md_escape(footer)}_", ""]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
