"""attnbench.fmt (one number format) and attnbench.text (terminal and Markdown safety), exact values."""

from __future__ import annotations

import math

import pytest

from attnbench import fmt
from attnbench.text import md_escape, terminal_safe

NAN = float("nan")


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (0.000712, "712 ns"),
        (0.001, "1.00 µs"),
        (0.0123456, "12.3 µs"),
        (1.0, "1.00 ms"),
        (21.54, "21.5 ms"),
        (0.9996, "1.00 ms"),  # rounds up into the next unit, not "1000 µs"
        (999.4, "999 ms"),
        (999.6, "1.00 s"),
        (1234.5, "1.23 s"),
        (3.6e6, "3600 s"),  # past the largest unit: that unit, no e-notation
        (-2.5, "-2.50 ms"),
        (0, "0 ms"),
        (math.inf, "∞ s"),
    ],
)
def test_fmt_ms(ms: float, text: str) -> None:
    assert fmt.fmt_ms(ms) == text


@pytest.mark.parametrize(
    ("mib", "text"),
    [
        (0.5, "512 KiB"),
        (65.3, "65.3 MiB"),
        (1023.9, "1.00 GiB"),
        (4300, "4.20 GiB"),
        (2**21, "2.00 TiB"),
        (2.0**-20, "1.00 B"),
        (0, "0 MiB"),
    ],
)
def test_fmt_mib(mib: float, text: str) -> None:
    assert fmt.fmt_mib(mib) == text


def test_other_units() -> None:
    assert fmt.fmt_s(92) == "92.0 s" and fmt.fmt_s(0.0021) == "2.10 ms"
    assert fmt.fmt_bytes(1536) == "1.50 KiB" and fmt.fmt_bytes(100) == "100 B"
    assert fmt.fmt_si(1.5e12, "FLOP/s") == "1.50 TFLOP/s"
    assert fmt.fmt_si(123456) == "123k" and fmt.fmt_si(999.9) == "1.00k" and fmt.fmt_si(0.5) == "0.500"
    assert fmt.fmt_speedup(2.5) == "2.50×" and fmt.fmt_pct(12.34) == "12.3%" and fmt.fmt_pct(100) == "100%"
    assert fmt.fmt_count(12345) == "12,345" and fmt.fmt_count(80) == "80"
    assert fmt.fmt_int(16384.0) == "16384" and fmt.fmt_int(255.6) == "256"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0123, "0.0123"),
        (1.0, "1.00"),
        (12345.6, "12300"),
        (-0.5, "-0.500"),
        (0, "0"),
        (2e-7, "2.00e-7"),
        (1e6, "1.00e6"),
    ],
)
def test_fmt_num_is_plain_for_ordinary_values(value: float, text: str) -> None:
    assert fmt.fmt_num(value) == text


def test_fmt_err_is_always_scientific_with_a_short_exponent() -> None:
    assert fmt.fmt_err(1.234e-7) == "1.2e-7"
    assert fmt.fmt_err(0.5) == "5.0e-1"
    assert fmt.fmt_err(3e-12) == "3.0e-12"
    assert fmt.fmt_err(0) == "0"


@pytest.mark.parametrize("missing", [None, NAN, "n/a", True, ""])
def test_missing_values(missing: object) -> None:
    for f in (fmt.fmt_ms, fmt.fmt_mib, fmt.fmt_num, fmt.fmt_speedup, fmt.fmt_pct, fmt.fmt_err, fmt.fmt_count):
        assert f(missing) == fmt.MISSING, f
    assert fmt.fmt_ms(None, missing="") == ""


def test_no_e_notation_for_ordinary_times_and_memory() -> None:
    for exp in range(-6, 7):
        for mant in (1.0, 2.5, 9.999):
            assert "e" not in fmt.fmt_ms(mant * 10.0**exp)
            assert "e" not in fmt.fmt_mib(mant * 10.0**exp)
            # three significant digits: the digits of the number, less any leading zeros
            digits = fmt.fmt_ms(mant * 10.0**exp).split()[0].replace(".", "").lstrip("0")
            assert len(digits) == 3 or (digits.endswith("0") and len(digits) >= 3)


# --- attnbench.text -------------------------------------------------------------------------

HOSTILE = [
    "\x1b[2J",
    "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\",
    "<img src=x onerror=alert(1)>",
    "</script>",
    "a|b",
    "`code` and ``more``",
    "line one\nline two\r\nthree",
]


@pytest.mark.parametrize(
    ("text", "safe"),
    [
        ("\x1b[2Jcleared", "cleared"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),  # OSC 8 hyperlink: the text stays, the link goes
        ("\x1b]0;title\x07after", "after"),  # OSC ended by BEL (window title)
        ("red \x1b[31;1mbold\x1b[0m", "red bold"),
        ("\x9b2Jeight-bit CSI", "eight-bit CSI"),
        ("tab\there\nnew\r\nline", "tab here new  line"),
        ("bell\x07 nul\x00 del\x7f c1\x85x", "bell nul del c1 x"),
        ("\u202eevil\u202c", "evil"),  # bidi override: would show reversed
        ("\x1b[", ""),  # unterminated
        ("plain ünïcödé µs ✗", "plain ünïcödé µs ✗"),
    ],
)
def test_terminal_safe(text: str, safe: str) -> None:
    assert terminal_safe(text) == safe


@pytest.mark.parametrize("text", HOSTILE)
def test_terminal_safe_leaves_no_control_characters(text: str) -> None:
    out = terminal_safe(text)
    assert all(ch >= " " and not ("\x7f" <= ch <= "\x9f") for ch in out), repr(out)


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("a|b", r"a\|b"),
        ("<img src=x onerror=alert(1)>", "&lt;img src=x onerror=alert(1)&gt;"),
        ("</script>", "&lt;/script&gt;"),
        ("`x`", r"\`x\`"),
        ("*em* _u_ ~s~ [l](u) ![i](x)", r"\*em\* \_u\_ \~s\~ \[l\](u) \!\[i\](x)"),
        ("a & b", "a &amp; b"),
        ("line\nbreak  and\tspace", "line break and space"),
        ("# heading", r"\# heading"),
        ("1. item", r"1\. item"),
        ("- item", r"\- item"),
        ("linear-chunked", "linear-chunked"),  # inner punctuation untouched: the raw file stays readable
        ("\x1b[2Jx", "x"),
    ],
)
def test_md_escape(text: str, escaped: str) -> None:
    assert md_escape(text) == escaped


def _gfm(md: str) -> str:
    cmarkgfm = pytest.importorskip("cmarkgfm", reason="cmarkgfm is in the test extra")
    from cmarkgfm.cmark import Options

    return cmarkgfm.github_flavored_markdown_to_html(md, options=Options.CMARK_OPT_UNSAFE)


@pytest.mark.parametrize(
    "text",
    [*HOSTILE, "see http://evil.example/x, www.evil.example and me@evil.example", "**bold** ~~gone~~ <b>b</b>"],
)
def test_md_escape_renders_as_literal_text_in_a_gfm_table(text: str) -> None:
    html = _gfm(f"| name | n |\n|---|---|\n| {md_escape(text)} | 1 |\n")
    cells = html.split("<tbody>")[1]
    assert cells.count("<td>") == 2  # a pipe did not split the cell, a newline did not end the table
    for tag in ("<img", "<script", "</script", "<a ", "<b>", "<strong>", "<code>", "<del>", "<em>"):
        assert tag not in cells, (tag, cells)
    import html as html_mod

    shown = html_mod.unescape(cells.split("<td>")[1].split("</td>")[0]).replace("\u2060", "")
    assert shown == " ".join(terminal_safe(text).split())
