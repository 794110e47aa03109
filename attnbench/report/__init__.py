"""Reports of a run: charts (plots.py), numbers (analysis.py), Markdown and HTML renderings.

Importing this package is cheap; pandas, matplotlib and seaborn load inside :func:`build`.
Layout written under ``out`` (default ``RUN_DIR/report/``)::

    report.md        GitHub-flavoured Markdown, links to charts/ by relative path
    report.html      one self-contained file (charts inlined)
    charts/*.png     one PNG and one SVG per chart
    charts/*.svg
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from attnbench.errors import UserError

FORMATS = ("md", "html")


def parse_formats(value: str) -> tuple[str, ...]:
    """``md``, ``html`` or ``both`` -> the formats to write."""
    if value == "both":
        return FORMATS
    if value in FORMATS:
        return (value,)
    raise UserError(f"--format {value!r}: expected md, html or both")


def build(
    run_dir: Path | str,
    formats: Iterable[str] = FORMATS,
    out: Path | str | None = None,
    baseline: str | None = None,
) -> dict[str, Path]:
    """Write the report of ``run_dir``; return ``{"md": path, "html": path, "charts": dir}``
    for what was written. ``baseline`` is the impl speedups are relative to (default softmax
    if it ran, else sdpa)."""
    formats = tuple(formats)
    for f in formats:
        if f not in FORMATS:
            raise UserError(f"report format {f!r}: expected one of {', '.join(FORMATS)}")
    from attnbench.report import html as html_report
    from attnbench.report import markdown
    from attnbench.report.analysis import analyse
    from attnbench.report.frame import default_baseline

    try:
        from attnbench.report.plots import make_charts
    except ImportError as exc:
        raise UserError(f"the report needs seaborn and matplotlib ({exc}); pip install 'attnbench[report]'") from None
    from attnbench.report.tables import all_tables
    from attnbench.results import load_run

    df, _samples, meta = load_run(Path(run_dir))
    from attnbench.results import load_steps

    if df is None or not len(df):
        raise UserError(f"run directory {str(run_dir)!r} holds no results yet")
    impls = set(df["impl"].astype(str))
    if baseline is not None and baseline not in impls:
        raise UserError(f"--baseline {baseline!r}: not an impl of this run; it has {', '.join(sorted(impls))}")
    baseline = baseline or default_baseline(df)
    out_dir = Path(out) if out is not None else Path(run_dir) / "report"
    chart_dir = out_dir / "charts"
    charts = make_charts(df, chart_dir, baseline)
    analysis = analyse(df, meta)
    tables = all_tables(df, analysis)
    decode_md = _decode_section(df, load_steps(Path(run_dir)), chart_dir)
    written: dict[str, Path] = {"charts": chart_dir}
    if "md" in formats:
        written["md"] = out_dir / "report.md"
        text = markdown.render(df, meta, analysis, charts, tables)
        if decode_md:
            text = text.rstrip("\n") + "\n\n" + decode_md.replace("](decode_", "](charts/decode_") + "\n"
        written["md"].write_text(text, encoding="utf-8")
    if "html" in formats:
        written["html"] = out_dir / "report.html"
        extra = html_report.markdown_block(decode_md, chart_dir) if decode_md else ""
        written["html"].write_text(html_report.render(df, meta, analysis, charts, tables, extra), encoding="utf-8")
    return written


def _decode_section(df: object, steps: object, chart_dir: Path) -> str:
    """The autoregressive-decoding section (attnbench.decode.report), "" without decode points."""
    if steps is None:
        return ""
    from attnbench.decode.report import decode_section

    return decode_section(df, steps, chart_dir)
