"""`attnbench history report`: one self-contained HTML page of trends.

A chart per series (inline SVG drawn here: one dot per run, the median of each segment between
change points as a line, each change point a dashed line labelled with its commit range and
step), a table of the latest regressions, and a filter box. Nothing is fetched: no scripts,
styles, fonts or images from anywhere (a Content-Security-Policy says so).

Escaping, as in the run report: every string that comes from a run (point ids, impl names,
commits, branches, environment) goes through ``html.escape`` in markup and in SVG; the only
script reads the DOM and filters by ``textContent``.
"""

from __future__ import annotations

import hashlib
import html
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnbench.history.changes import Analysis, Finding, Step
from attnbench.history.identity import short_commit

W, H = 760, 200  # chart size, px
PAD_L, PAD_R, PAD_T, PAD_B = 64, 16, 26, 30
COLOURS = {"regression": "#cf222e", "improvement": "#1a7f37", "unclear": "#6e7781"}

STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px; padding: 0 16px 48px; color: #1f2328; }
h1 { font-size: 1.6em; margin-top: 24px; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: 4px; margin-top: 32px; }
h3 { font-size: 1em; margin: 20px 0 4px; font-family: ui-monospace, monospace; word-break: break-all; }
.note { color: #57606a; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.fails td { background: #fff5f5; }
svg.trend { border: 1px solid #d0d7de; background: #fff; max-width: 100%; height: auto; }
svg.trend text { font: 11px system-ui, sans-serif; fill: #57606a; }
svg.trend text.cp { font-weight: 600; }
.series.fails h3::before { content: "\\25CF "; color: #cf222e; }
.controls { margin: 8px 0; }
.controls input { width: 24em; padding: 3px 6px; }
"""

SCRIPT = """
(function () {
  "use strict";
  var box = document.getElementById("filter");
  var count = document.getElementById("count");
  var items = Array.prototype.slice.call(document.querySelectorAll("section.series, #regressions tbody tr"));
  function apply() {
    var words = box.value.toLowerCase().split(/\\s+/).filter(function (w) { return w; });
    var shown = 0;
    items.forEach(function (el) {
      var text = el.textContent.toLowerCase();
      var ok = words.every(function (w) { return text.indexOf(w) >= 0; });
      el.hidden = !ok;
      if (ok && el.tagName === "SECTION") { shown += 1; }
    });
    count.textContent = shown + " of " + document.querySelectorAll("section.series").length + " series";
  }
  box.addEventListener("input", apply);
  apply();
})();
"""


def esc(value: Any) -> str:
    """``value`` as text, safe in element content and quoted attributes (HTML and SVG)."""
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _pct(r: float) -> str:
    return f"{(r - 1) * 100:+.1f}%"


def chart_svg(a: Analysis) -> str:
    """The trend chart of one analysed series as an inline SVG element."""
    runs = a.runs
    if not runs:
        return '<p class="note">no successful run in this series</p>'
    values = [float(r.value_ms) for r in runs]  # type: ignore[arg-type]
    lo, hi = min(values), max(values)
    span = hi - lo or max(hi * 0.05, 1e-9)
    lo, hi = lo - span * 0.08, hi + span * 0.08
    n = len(values)
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def x(i: float) -> float:
        return PAD_L + (pw * (i / (n - 1)) if n > 1 else pw / 2)

    def y(v: float) -> float:
        return PAD_T + ph * (1 - (v - lo) / (hi - lo))

    out = [
        f'<svg class="trend" xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">'
    ]
    out.append(f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="#fbfcfd" stroke="#d0d7de"/>')
    for v in (lo + (hi - lo) * f for f in (0.1, 0.5, 0.9)):
        out.append(f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{esc(_fmt(v))}</text>')
        out.append(f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eaeef2"/>')
    out.append(f'<text x="{PAD_L - 6}" y="{PAD_T - 10}" text-anchor="end">ms</text>')
    # segment levels
    bounds = [0, *[s.index for s in a.steps], n]
    for (s, e), level in zip(zip(bounds[:-1], bounds[1:], strict=True), a.levels, strict=True):
        out.append(
            f'<line class="level" x1="{x(s):.1f}" x2="{x(e - 1):.1f}" y1="{y(level):.1f}" y2="{y(level):.1f}" '
            f'stroke="#0969da" stroke-width="2" opacity="0.6"/>'
        )
    # change points
    for step in a.steps:
        cx = (x(step.index - 1) + x(step.index)) / 2
        colour = COLOURS[step.kind]
        label = f"{_pct(step.ratio)} {step.commits}"
        anchor = "end" if cx > W * 0.6 else "start"
        dx = -4 if anchor == "end" else 4
        out.append(
            f'<line class="cp" x1="{cx:.1f}" x2="{cx:.1f}" y1="{PAD_T}" y2="{PAD_T + ph}" stroke="{colour}" '
            f'stroke-dasharray="4 3" stroke-width="1.5"><title>{esc(step.describe())}</title></line>'
        )
        out.append(
            f'<text class="cp" x="{cx + dx:.1f}" y="{PAD_T - 8}" text-anchor="{anchor}" style="fill:{colour}">{esc(label)}</text>'
        )
    # runs
    for i, (r, v) in enumerate(zip(runs, values, strict=True)):
        started = r.started.strftime("%Y-%m-%d %H:%M") if r.started else "?"
        tip = f"{short_commit(r.commit)} {r.branch or ''} {started}: {_fmt(v)} ms"
        out.append(
            f'<circle class="run" cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.6" fill="#24292f"><title>{esc(tip)}</title></circle>'
        )
    # x axis: first and last commit, and a few in between
    ticks = sorted({0, n - 1, *[round(f * (n - 1)) for f in (0.25, 0.5, 0.75)]}) if n > 1 else [0]
    for i in ticks:
        anchor = "start" if i == 0 and n > 1 else "end" if i == n - 1 and n > 1 else "middle"
        out.append(
            f'<text x="{x(i):.1f}" y="{H - 10}" text-anchor="{anchor}">{esc(short_commit(runs[i].commit)[:7])}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def _regressions_table(analyses: Sequence[Analysis], findings: dict[tuple[str, str, str], Finding]) -> str:
    rows = []
    for a in analyses:
        if not a.steps or a.steps[-1].kind != "regression":
            continue
        step: Step = a.steps[-1]
        f = findings.get(a.series.key)
        rows.append((f is not None, step.ratio, a, step, f))
    rows.sort(key=lambda t: (not t[0], -(t[4].ratio if t[4] else t[1])))
    if not rows:
        return '<p id="regressions-none">No series ends in a regression.</p>'
    out = [
        '<table id="regressions"><thead><tr><th>series</th><th>environment</th><th>commits</th><th>step</th>'
        "<th>interval</th><th>episode</th><th>gate</th></tr></thead><tbody>"
    ]
    for fails, _, a, step, f in rows:
        episode = f"{_pct(f.ratio)} ({_fmt(f.base_ms)} → {_fmt(f.cur_ms)} ms)" if f else ""
        out.append(
            f'<tr class="{"fails" if fails else ""}"><td><a href="#{esc(_anchor(a))}">{esc(a.series.suite)} '
            f"{esc(a.series.point_id)}</a></td><td>{esc(a.series.env_label)}</td><td>{esc(step.commits)}</td>"
            f'<td class="num">{esc(_pct(step.ratio))}</td>'
            f'<td class="num">{esc(_pct(step.ci_low))}..{esc(_pct(step.ci_high))}</td><td>{esc(episode)}</td>'
            f"<td>{'fails' if fails else 'below threshold'}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def _anchor(a: Analysis) -> str:
    return "s-" + hashlib.sha256("\0".join(a.series.key).encode()).hexdigest()[:12]


def _section(a: Analysis, finding: Finding | None) -> str:
    s = a.series
    failed = len(s.runs) - len(a.runs)
    facts = [f"{len(a.runs)} runs", s.env_label]
    if failed:
        facts.append(f"{failed} failed or skipped run(s) not drawn")
    if a.runs:
        facts.append(f"latest {_fmt(float(a.runs[-1].value_ms))} ms")  # type: ignore[arg-type]
    out = [f'<section class="series{" fails" if finding else ""}" id="{esc(_anchor(a))}">']
    out.append(f"<h3>{esc(s.suite)} · {esc(s.point_id)}</h3>")
    out.append(f'<p class="note">{esc("; ".join(facts))}</p>')
    out.append(chart_svg(a))
    if a.steps:
        out.append("<ul>")
        for step in a.steps:
            out.append(f'<li class="{esc(step.kind)}">{esc(step.describe())} (p={step.p:.2g})</li>')
        out.append("</ul>")
    if finding:
        out.append(f'<p class="gate"><strong>fails the history gate</strong>: {esc(finding.describe())}</p>')
    out.append("</section>")
    return "\n".join(out)


def render(
    analyses: Sequence[Analysis], findings: Sequence[Finding], db: str, counts: dict[str, int], window: int | None
) -> str:
    """The whole page as a string."""
    by_key = {f.analysis.series.key: f for f in findings}
    order = sorted(
        analyses,
        key=lambda a: (a.series.key not in by_key, not a.steps, a.series.suite, a.series.point_id, a.series.env_key),
    )
    title = "attnbench history"
    body = [f"<h1>{esc(title)}</h1>"]
    body.append(
        f'<p class="note">{esc(db)}: {counts.get("runs", 0)} runs, {counts.get("series", 0)} series; '
        f"{len(analyses)} series shown{esc(f', newest {window} runs of each' if window else '')}; "
        f"generated {esc(time.strftime('%Y-%m-%d %H:%M %Z'))}. Values are each run's median of its fast rounds; "
        "change points by E-Divisive means; dashed lines mark change points with the commit range "
        "(last commit before .. first commit after) and the step.</p>"
    )
    body.append(f'<h2 id="latest">Latest regressions ({len(findings)} failing the gate)</h2>')
    body.append(_regressions_table(analyses, by_key))
    body.append('<h2 id="trends">Trends</h2>')
    body.append(
        '<div class="controls"><label>Filter <input id="filter" type="search" '
        'placeholder="words in the series name, e.g. softmax fwdbwd"></label> <span id="count"></span></div>'
    )
    body.extend(_section(a, by_key.get(a.series.key)) for a in order)
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">\n'
        f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f"\n<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
