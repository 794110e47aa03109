"""The report as data: one tree that the Markdown (markdown.py) and HTML (html.py) renderers
both render, so the two say the same things. Plain dataclasses, no pandas.

Every string here is unescaped text; each renderer escapes it for its own format. A
:class:`Report` has a title, header :class:`Fact` s, warnings, and :class:`Section` s; a
section holds blocks in order: :class:`Chart`, :class:`Table`, :class:`Note`, :class:`SkipList`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Marks a table cell can carry: (symbol shown after the text, what it means).
MARKS = {
    "noisy": ("≈", "noisy: did not converge, too few samples, or a busy machine"),
    "incorrect": ("✗", "failed correctness"),
}


@dataclass
class Fact:
    """One line of the report's header: ``label: value``; ``warn`` shows it as a warning."""

    label: str
    value: str
    warn: bool = False


@dataclass
class Cell:
    """A table cell whose text carries a mark (a key of :data:`MARKS`) and an optional tooltip."""

    text: str
    mark: str = ""
    title: str = ""

    def plain(self) -> str:
        """The text with the mark's symbol appended (what a text-only renderer shows)."""
        return f"{self.text} {MARKS[self.mark][0]}" if self.mark else self.text


def cell_text(c: str | Cell) -> str:
    """A cell's text as shown without markup (the mark's symbol appended)."""
    return c.plain() if isinstance(c, Cell) else c


@dataclass
class Table:
    """A titled table. ``collapsed``: long or secondary, shown folded (``<details>``); ``numeric``:
    indices of right-aligned columns."""

    key: str
    title: str
    headers: list[str]
    rows: Sequence[Sequence[str | Cell]]
    note: str = ""
    collapsed: bool = False
    numeric: tuple[int, ...] = ()


@dataclass
class SkipItem:
    """Points of one impl and status that have no number on a chart: which passes and N, and why."""

    impl: str
    status: str
    passes: list[str]
    ns: list[int]
    reason: str

    def where(self) -> str:
        """``N 2048–16384 (fwd, fwdbwd)`` or ``every N``-style text of the points covered."""
        if not self.ns:
            return ", ".join(self.passes)
        ns = f"N={self.ns[0]}" if len(self.ns) == 1 else f"N {self.ns[0]}–{self.ns[-1]} ({len(self.ns)} sizes)"
        return f"{ns}, {', '.join(self.passes)}"


@dataclass
class SkipList:
    """What a chart leaves out (listed beside it, never drawn on a data axis)."""

    title: str
    items: list[SkipItem]


@dataclass
class Note:
    """A paragraph of text."""

    text: str


@dataclass
class Chart:
    """A written chart: its key (file stem), title, a one-line caption, files and what it left out."""

    key: str
    title: str
    caption: str
    png: Path
    svg: Path | None = None
    skipped: SkipList | None = None


Block = Chart | Table | Note | SkipList


@dataclass
class Section:
    """A titled part of the report. ``summary``: part of the short Markdown summary (the rest
    is listed there by title and shown in full in the HTML)."""

    key: str
    title: str
    blocks: Sequence[Block] = field(default_factory=list)
    summary: bool = True
    collapsed: bool = False


@dataclass
class Report:
    """The whole report."""

    title: str
    subtitle: str
    facts: list[Fact]
    sections: list[Section]
    points: dict[str, Any] = field(default_factory=dict)  # the all-points table (HTML)

    def charts(self) -> list[Chart]:
        """Every chart, in order."""
        return [b for s in self.sections for b in s.blocks if isinstance(b, Chart)]
