"""Reports of a run. One report model (model.py), assembled by content.py from the numbers
(analysis.py, findings.py, tables.py), the charts (charts.py, plots.py, style.py) and the decode
section (decode.py), rendered by markdown.py and html.py (jinja2, templates/).

Importing this package is cheap; pandas, matplotlib, seaborn and jinja2 load inside :func:`build`.
Layout written under ``out`` (default ``RUN_DIR/report/``)::

    report.md        GitHub-flavoured Markdown for a CI job summary (image links only with assets_url)
    report.html      one self-contained file (charts inlined)
    charts/*.png     one PNG and one SVG per chart (decode charts: PNG)
    charts/*.svg
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from attnbench.errors import UserError
from attnbench.report import markdown
from attnbench.report.devices import select_device

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
    assets_url: str | None = None,
    device_model: str | None = None,
    allow_mixed_devices: bool = False,
    svg: bool = True,
) -> dict[str, Path]:
    """Write the report of ``run_dir``; return ``{"md": path, "html": path, "charts": dir}``
    for what was written. ``baseline`` is the impl speedups and crossovers are relative to
    (default sdpa if it ran, else softmax); ``assets_url`` is where the charts/ folder will be
    served from, for image links in report.md (none without it). A run measured on several
    device models is refused unless ``device_model`` picks one or ``allow_mixed_devices``
    (:mod:`attnbench.report.devices`); ``svg=False`` writes the charts as PNG only (about a
    third faster)."""
    formats = tuple(formats)
    for f in formats:
        if f not in FORMATS:
            raise UserError(f"report format {f!r}: expected one of {', '.join(FORMATS)}")
    if assets_url is not None and not assets_url.strip():
        raise UserError("--assets-url '': expected a URL prefix such as https://example.org/run-42/charts")
    try:
        from attnbench.report.charts import make_charts  # optional dependencies: seaborn, matplotlib
    except ImportError as exc:
        raise UserError(f"the report needs seaborn and matplotlib ({exc}); pip install 'attnbench[report]'") from None
    # deferred: pandas, numpy, jinja2; importing this package stays cheap
    from attnbench.report import html as html_report
    from attnbench.report.analysis import analyse
    from attnbench.report.content import build_report
    from attnbench.report.decode import decode_section
    from attnbench.report.frame import default_baseline
    from attnbench.report.skips import skip_list
    from attnbench.results import load_run, load_steps

    df, _samples, meta = load_run(Path(run_dir))
    if df is None or not len(df):
        raise UserError(f"run directory {str(run_dir)!r} holds no results yet")
    df = select_device(df, device_model, allow_mixed_devices, f"run {str(run_dir)!r}")
    impls = set(df["impl"].astype(str))
    if baseline is not None and baseline not in impls:
        raise UserError(f"--baseline {baseline!r}: not an impl of this run; it has {', '.join(sorted(impls))}")
    baseline = baseline or default_baseline(df)
    out_dir = Path(out) if out is not None else Path(run_dir) / "report"
    chart_dir = out_dir / "charts"
    chart_dir.mkdir(parents=True, exist_ok=True)
    kernel = df[df["pass"].astype(str) != "decode"]
    analysis = analyse(kernel, meta, baseline)
    charts = make_charts(kernel, meta, analysis, chart_dir, baseline, skip_list(kernel), svg)
    decode = decode_section(df, load_steps(Path(run_dir)), chart_dir)
    points = html_report.points_data(df, meta) if "html" in formats else None
    report = build_report(df, meta, analysis, charts, baseline, decode, points, run_dir=str(run_dir))
    written: dict[str, Path] = {"charts": chart_dir}
    if "md" in formats:
        written["md"] = out_dir / "report.md"
        written["md"].write_text(markdown.render(report, assets_url), encoding="utf-8")
    if "html" in formats:
        written["html"] = out_dir / "report.html"
        written["html"].write_text(html_report.render(report), encoding="utf-8")
    return written
