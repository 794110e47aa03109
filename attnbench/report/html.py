"""The report model as one self-contained HTML page (jinja2, templates/report.html.j2): a table
of contents, a collapsible ``<details>`` per section, charts inlined as base64 PNG with what
they leave out beside them, the tables with their noise and correctness marks, and a sortable,
filterable table of every point (a little vanilla JS, nothing fetched).

Escaping: jinja2's autoescape escapes every string from a result or a plugin (impl names,
error messages, metadata); the points table travels as JSON inside
``<script type="application/json">`` through jinja2's ``tojson`` (``<``, ``>``, ``&``, ``'``
written as ``\\u003c`` etc.), and the script renders cells with ``textContent`` only.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from attnbench.fmt import fmt_err, fmt_int, fmt_mib, fmt_ms, fmt_num, fmt_pct, fmt_si
from attnbench.report.frame import col, max_error, noise_reasons, with_config
from attnbench.report.model import MARKS, Cell, Chart, Note, Report, SkipList, Table

TEMPLATES = Path(__file__).parent / "templates"
# (header, column, formatter); optional ones appear only when the run has the column.
_NUMBERS = (
    ("median", "time_ms_median", fmt_ms),
    ("q1", "time_ms_q1", fmt_ms),
    ("q3", "time_ms_q3", fmt_ms),
    ("samples", "n_samples", fmt_int),
    ("peak memory", "peak_mib", fmt_mib),
)
_OPTIONAL = (
    ("TFLOP/s", "tflops", fmt_num),
    ("% peak FLOPs", "pct_peak_flops", fmt_pct),
    ("power W", "power_w_mean", fmt_num),
    ("other CPU %", "cpu_other_busy_pct", fmt_pct),
)


def _clean(v: Any) -> Any:
    """A JSON-ready scalar: None for missing/NaN/inf, numbers as numbers, the rest as text."""
    if v is None:
        return None
    if isinstance(v, bool):
        return str(v).lower()
    if hasattr(v, "item"):  # numpy scalars
        v = v.item()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        f = float(v)
        return None if math.isnan(f) or math.isinf(f) else (int(f) if f.is_integer() and abs(f) < 2**53 else f)
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def points_data(df: pd.DataFrame, meta: dict[str, Any]) -> dict[str, Any]:
    """The all-points table: ``{"columns": [...], "rows": [[raw, ...]], "text": [[shown, ...]]}``:
    raw values sort, the shown text is in attnbench.fmt's format."""
    data = with_config(df)
    raw: dict[str, pd.Series] = {"impl": data["impl"], "pass": data["pass"]}
    shown: dict[str, list[str]] = {}
    if data["config"].astype(bool).any():
        raw["config"] = data["config"]
    raw.update({"N": data["N"], "status": data["status"]})
    numbers: list[tuple[str, str, Callable[..., str]]] = list(_NUMBERS)
    numbers.insert(4, ("tokens/s", "_tokens_per_s", fmt_si))
    numbers += [o for o in _OPTIONAL if o[1] in data.columns and col(data, o[1]).notna().any()]
    numbers.append(("max rel err", "_max_err", fmt_err))
    data = data.assign(_tokens_per_s=col(data, "B").fillna(1) * data["N"] * 1000 / col(data, "time_ms_median"))
    data = data.assign(_max_err=max_error(data))
    for header, name, fmt in numbers:
        raw[header] = col(data, name)
        shown[header] = [fmt(v, "") for v in raw[header]]
    raw["noisy"] = noise_reasons(data, meta)
    mark = MARKS["noisy"][0]
    shown["median"] = [t + f" {mark}" if why and t else t for t, why in zip(shown["median"], raw["noisy"], strict=True)]
    raw["correct"] = data["correct"] if "correct" in data else pd.Series(None, index=data.index)
    why = data["error"] if "error" in data else pd.Series("", index=data.index)
    if "correctness_error" in data:
        why = why.where(why.notna() & (why.astype(str) != ""), data["correctness_error"])
    raw["error"] = why
    columns = list(raw)
    rows = [[_clean(raw[c].iloc[i]) for c in columns] for i in range(len(data))]
    text = [
        [shown[c][i] if c in shown else ("" if rows[i][j] is None else str(rows[i][j])) for j, c in enumerate(columns)]
        for i in range(len(data))
    ]
    return {"columns": columns, "rows": rows, "text": text, "numeric": [c for c in columns if c in shown or c == "N"]}


def data_uri(path: Path) -> str:
    """A PNG file as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def environment() -> jinja2.Environment:
    """The jinja2 environment: templates beside this module, autoescape on, undefined names fail."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["data_uri"] = data_uri
    env.tests.update(
        {
            "chart": lambda b: isinstance(b, Chart),
            "table": lambda b: isinstance(b, Table),
            "skiplist": lambda b: isinstance(b, SkipList),
            "note": lambda b: isinstance(b, Note),
            "cell": lambda c: isinstance(c, Cell),
        }
    )
    return env


def render(report: Report) -> str:
    """The whole HTML document as a string."""
    return environment().get_template("report.html.j2").render(r=report, marks=MARKS)
