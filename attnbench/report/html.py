"""One self-contained HTML report: charts inlined as base64 PNG, the analysis tables, and a
sortable, filterable table of every point (a little vanilla JS, nothing fetched).

Escaping: every string that comes from a result or a plugin (impl names, error messages,
metadata) goes through ``html.escape`` in markup; the points table travels as JSON inside
``<script type="application/json">`` with ``<``, ``>`` and ``&`` written as ``\\u003c`` etc.,
and the script renders cells with ``textContent`` only.
"""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.report.analysis import Analysis
from attnbench.report.frame import col, max_error, with_config
from attnbench.report.markdown import headline, status_counts
from attnbench.report.plots import Chart
from attnbench.report.tables import Table

TEMPLATE = Path(__file__).parent / "templates" / "report.html"
_SLOT = re.compile(r"@@(TITLE|BODY|DATA)@@")
# (header, column or callable over the frame); extra columns appear only when present.
_OPTIONAL = (("TFLOP/s", "tflops"), ("% peak FLOPs", "pct_peak_flops"), ("power W", "power_w"))


def esc(value: Any) -> str:
    """``value`` as text, safe in HTML element content and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def script_json(obj: Any) -> str:
    """JSON that cannot close or confuse the ``<script>`` element it is embedded in."""
    text = json.dumps(obj, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _clean(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, (int, float)):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else (int(f) if f.is_integer() and abs(f) < 2**53 else f)
    if hasattr(v, "item"):  # numpy scalars
        return _clean(v.item())
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def points_data(df: pd.DataFrame) -> dict[str, Any]:
    """The points table as ``{"columns": [...], "rows": [[...], ...]}`` (JSON-ready)."""
    data = with_config(df)
    tokens = col(data, "B").fillna(1) * data["N"]
    columns: dict[str, Any] = {"impl": data["impl"], "pass": data["pass"]}
    if data["config"].astype(bool).any():
        columns["config"] = data["config"]
    columns.update(
        {
            "N": data["N"],
            "status": data["status"],
            "median ms": col(data, "time_ms_median"),
            "q1 ms": col(data, "time_ms_q1"),
            "q3 ms": col(data, "time_ms_q3"),
            "peak MiB": col(data, "peak_mib"),
            "tokens/s": tokens * 1000 / col(data, "time_ms_median"),
        }
    )
    for header, name in _OPTIONAL:
        if name in data.columns and col(data, name).notna().any():
            columns[header] = col(data, name)
    columns["max rel err"] = max_error(data)
    columns["correct"] = data.get("correct")
    why = data["error"] if "error" in data else pd.Series("", index=data.index)
    if "correctness_error" in data:
        why = why.where(why.notna() & (why.astype(str) != ""), data["correctness_error"])
    columns["error"] = why
    frame = pd.DataFrame(columns)
    return {"columns": list(frame.columns), "rows": [[_clean(v) for v in row] for row in frame.itertuples(index=False)]}


def table_html(t: Table) -> str:
    """A static table with an id, a heading and its note."""
    out = [f'<h2 id="{esc(t.key)}">{esc(t.title)}</h2>']
    if t.note:
        out.append(f'<p class="note">{esc(t.note)}</p>')
    if not t.rows:
        return "\n".join(out + ["<p>(nothing to show)</p>"])
    out.append(f'<table class="analysis" data-key="{esc(t.key)}"><thead><tr>')
    out.append("".join(f"<th>{esc(h)}</th>" for h in t.headers) + "</tr></thead><tbody>")
    for row in t.rows:
        out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def chart_html(c: Chart) -> str:
    """A figure with the chart's PNG inlined as a data URI."""
    b64 = base64.b64encode(c.png.read_bytes()).decode("ascii")
    return (
        f'<figure id="chart-{esc(c.key)}"><img class="chart" alt="{esc(c.title)}" '
        f'src="data:image/png;base64,{b64}"><figcaption>{esc(c.title)}: {esc(c.caption)}</figcaption></figure>'
    )


def markdown_block(md: str, image_dir: Path) -> str:
    """HTML for a Markdown section made of headings, paragraphs, pipe tables and image links
    (the decode section's shape); every text escaped, images inlined from ``image_dir``."""
    out: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if rows:
            head, body = rows[0], rows[2:]
            out.append("<table><thead><tr>" + "".join(f"<th>{esc(c)}</th>" for c in head) + "</tr></thead><tbody>")
            out.extend("<tr>" + "".join(f"<td>{esc(c.strip('*'))}</td>" for c in r) + "</tr>" for r in body)
            out.append("</tbody></table>")
            rows.clear()

    for line in md.splitlines():
        line = line.strip()
        if line.startswith("|"):
            rows.append([c.strip() for c in line.strip("|").split("|")])
            continue
        flush()
        image = re.fullmatch(r"!\[(.*?)\]\((.*?)\)", line)
        if image:
            path = image_dir / Path(image.group(2)).name
            if path.is_file():
                b64 = base64.b64encode(path.read_bytes()).decode("ascii")
                out.append(
                    f'<figure><img class="chart" alt="{esc(image.group(1))}" src="data:image/png;base64,{b64}"></figure>'
                )
        elif line.startswith("### "):
            out.append(f"<h3>{esc(line[4:])}</h3>")
        elif line.startswith("## "):
            out.append(f"<h2>{esc(line[3:])}</h2>")
        elif line:
            out.append(f"<p>{esc(line)}</p>")
    flush()
    return "\n".join(out)


def render(
    df: pd.DataFrame,
    meta: dict[str, Any],
    a: Analysis,
    charts: Sequence[Chart],
    tables: Sequence[Table],
    extra_html: str = "",
) -> str:
    """The whole HTML document as a string."""
    suite = meta.get("suite") or {}
    name = suite.get("name", "?") if isinstance(suite, dict) else suite
    desc = suite.get("description", "") if isinstance(suite, dict) else ""
    title = f"attnbench report: {name} on {meta.get('device', '?')}"
    body = [f"<h1>{esc(title)}</h1>"]
    if desc:
        body.append(f'<p class="note">{esc(desc)}</p>')
    body.append(f"<p>{esc(status_counts(df))}</p>")
    findings = headline(a)
    if findings:
        body += ['<h2 id="findings">Findings</h2>', "<ul>", *[f"<li>{esc(f)}</li>" for f in findings], "</ul>"]
    if charts:
        body += ['<h2 id="charts">Charts</h2>', *[chart_html(c) for c in charts]]
    body += [table_html(t) for t in tables]
    if extra_html:
        body.append(extra_html)
    body += ['<h2 id="environment">Environment</h2>', '<table class="env"><tbody>']
    body += [f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in a.environment]
    body.append("</tbody></table>")
    slots = {"TITLE": esc(title), "BODY": "\n".join(body), "DATA": script_json(points_data(df))}
    return _SLOT.sub(lambda m: slots[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))
