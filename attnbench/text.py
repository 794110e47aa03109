"""Strings from results and plugins (impl names, error messages, metadata) made safe for where
they are shown: a terminal (:func:`terminal_safe`) or a GitHub-flavoured Markdown table cell
(:func:`md_escape`). A plugin's name or an exception message is data, never markup or a
terminal command. (Rich markup is a third language: pass text through ``rich.markup.escape``
after :func:`terminal_safe` when it goes into a rich renderable.)
"""

from __future__ import annotations

import re
from typing import Any

# Terminal escape sequences (ECMA-48): OSC (e.g. OSC 8 hyperlinks, window titles) up to BEL or
# ST, DCS/SOS/PM/APC strings up to ST, CSI (cursor moves, colours, clear screen), their 8-bit
# forms, and any other ESC + one character. An unterminated one is removed to the end.
_ESCAPES = re.compile(
    r"""
      \x1b\][^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?
    | \x9d[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?
    | \x1b[PX^_][^\x1b\x9c]*(?:\x1b\\|\x9c)?
    | [\x90\x98\x9e\x9f][^\x1b\x9c]*(?:\x1b\\|\x9c)?
    | \x1b\[[0-?]*[ -/]*[@-~]?
    | \x9b[0-?]*[ -/]*[@-~]?
    | \x1b[ -/]*[0-~]?
    """,
    re.VERBOSE,
)
_LINE_BREAKS = re.compile(r"[\t\n\r\v\f\x85\u2028\u2029]")
# C0 and C1 controls, DEL, and the bidirectional overrides/isolates that reorder what is shown
# ("Trojan Source"); zero-width marks are left alone (they do not change the order).
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Markdown punctuation that can start emphasis, links, images, code, strikethrough or a table
# cell boundary; escaped with a backslash (valid for any ASCII punctuation in CommonMark).
_MD_PUNCT = re.compile(r"([\\`*_\[\]|~!])")
# a heading, list item, thematic break or setext underline when first on a line
_MD_LINE_START = re.compile(r"^(?:([#+=-])(?=[\s#+=-]|$)|(\d+)([.)])(?=\s|$))")
_AUTOLINK_WWW = re.compile(r"(?i)\bwww\.")


def terminal_safe(text: Any) -> str:
    """``text`` as one line that prints as itself: escape sequences (CSI, OSC 8 links, ...)
    removed, line breaks and tabs made spaces, other C0/C1 controls and bidi overrides removed."""
    s = _ESCAPES.sub("", str(text))
    s = _LINE_BREAKS.sub(" ", s)
    return _CONTROLS.sub("", s)


def md_escape(text: Any) -> str:
    """``text`` as literal content of a GFM table cell or paragraph: one line (runs of
    whitespace become one space), controls removed, ``&``, ``<``, ``>`` as entities (no raw
    HTML), Markdown punctuation (pipes, backticks, emphasis, brackets) backslash-escaped, and
    URL-like text broken so GFM's autolinker does not make it a link."""
    s = " ".join(terminal_safe(text).split())
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_PUNCT.sub(r"\\\1", s)
    s = _MD_LINE_START.sub(lambda m: "\\" + m.group(1) if m.group(1) else m.group(2) + "\\" + m.group(3), s)
    # GFM autolinks www., scheme:// and e-mail addresses in text. For the first two, writing the
    # character that triggers it as an entity keeps the text and loses the link; e-mail links are
    # found after entities are decoded, so an invisible word joiner after "@" breaks them.
    s = _AUTOLINK_WWW.sub(lambda m: m.group(0)[:3] + "&#46;", s)
    return s.replace("://", "&#58;//").replace("@", "@\u2060")
