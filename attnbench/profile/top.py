"""The top table: the profiled ops (and, on CUDA, kernels) by self time per call, with their
share of the point's measured time and the FLOPs torch's counters give (matmuls, convolutions;
elementwise ops have none). Printed in 80 columns, saved as CSV, JSON and Markdown.

Times are per call of the pass, in ms (see :func:`rows_from_events`); ``share`` is a fraction of
the median of the calls timed without the profiler beside the profiled ones.
"""

from __future__ import annotations

import csv
import io
import json
import re
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from attnbench.fmt import fmt_count, fmt_ms, fmt_pct, fmt_si
from attnbench.profile.trace import OpEvent
from attnbench.text import md_escape, terminal_safe

WIDTH = 80
COLUMNS = ("kind", "name", "calls", "self_ms", "total_ms", "share", "flops", "flops_per_s")


@dataclass
class TopRow:
    """One op or kernel. ``calls``, ``self_ms``, ``total_ms`` and ``flops`` are per call of the
    pass; ``share`` = self_ms / the point's median; ``flops_per_s`` = flops / self time."""

    kind: str  # "op" (host self time), "kernel" (device time) or "python" (a frame, with --stack)
    name: str
    calls: float
    self_ms: float
    total_ms: float
    share: float | None
    flops: float | None
    flops_per_s: float | None


def rows_from_events(
    events: list[OpEvent], calls: int, point_ms: float | None, flops: dict[str, float] | None = None
) -> list[TopRow]:
    """One row per (kind, name), by self time, per call of the pass. Each kind's time per call is
    the median over the profiled calls of its total (a call the machine slowed down does not
    skew it), split among the ops in proportion to their time over all the calls: the rows of
    a kind sum exactly to that median. ``calls`` per row is the median count. FLOPs per call by
    op name: ``flops`` (from a detailed profile), else the events' own."""
    per: dict[tuple[str, str], list[list[float]]] = {}
    kind_call: dict[str, list[float]] = {}
    for e in events:
        acc = per.setdefault((e.kind, e.name), [[0.0, 0.0, 0.0, 0.0] for _ in range(calls)])
        a = acc[e.call]
        a[0] += 1
        a[1] += e.self_us
        a[2] += e.total_us
        a[3] += e.flops
        kind_call.setdefault(e.kind, [0.0] * calls)[e.call] += e.self_us
    scale = {k: statistics.median(v) / sum(v) if sum(v) > 0 else 0.0 for k, v in kind_call.items()}
    rows = []
    for (kind, name), acc in per.items():
        self_ms = sum(a[1] for a in acc) * scale[kind] / 1e3
        flop = (flops or {}).get(name) if flops is not None else sum(a[3] for a in acc) / calls
        flop = flop or None
        rows.append(
            TopRow(
                kind=kind,
                name=name,
                calls=statistics.median(a[0] for a in acc),
                self_ms=self_ms,
                total_ms=sum(a[2] for a in acc) * scale[kind] / 1e3,
                share=self_ms / point_ms if point_ms else None,
                flops=flop,
                flops_per_s=flop / (self_ms / 1e3) if flop and self_ms > 0 else None,
            )
        )
    rows.sort(key=lambda r: r.self_ms, reverse=True)
    return rows


def flops_per_call(events: list[OpEvent], calls: int) -> dict[str, float]:
    """FLOPs per call of each op that torch counts them for (by name)."""
    out: dict[str, float] = {}
    for e in events:
        if e.flops:
            out[e.name] = out.get(e.name, 0.0) + e.flops / calls
    return out


def busy_kind(device: str) -> str:
    """The rows whose self times add up to a call's time: host ops on the CPU, kernels on CUDA."""
    return "kernel" if device == "cuda" else "op"


def self_sum_ms(rows: list[TopRow], device: str) -> float:
    kind = busy_kind(device)
    return sum(r.self_ms for r in rows if r.kind == kind)


def _cut(text: str, width: int) -> str:
    """``text`` in ``width`` columns, cut in the middle so that its last word stays whole (an
    autograd node's name is at the end: ``autograd::eng...CausalProductPhiBackward``)."""
    text = terminal_safe(text)
    if len(text) <= width:
        return text
    words = re.split(r"[\s:]+", text)
    last = words[-1] if words and re.fullmatch(r"\w{4,}", words[-1]) else ""
    tail = len(last) if 0 < len(last) <= width - 8 else (width - 3) * 2 // 3
    return text[: width - 3 - tail] + "..." + text[len(text) - tail :]


def render(rows: list[TopRow], device: str, limit: int = 15, width: int = WIDTH) -> str:
    """The table as text lines of at most ``width`` columns: the first ``limit`` rows, a line for
    the rest, and the sum of the self times."""
    kinds = device == "cuda" or any(r.kind != "op" for r in rows)
    num = [("calls", 5), ("self", 9), ("total", 9), ("share", 7), ("FLOP/s", 13)]
    name_w = width - sum(w + 1 for _, w in num) - (7 if kinds else 0)
    head = ("kind   " if kinds else "") + f"{'name' if kinds else 'op':<{name_w}}"
    lines = [head + "".join(f" {h:>{w}}" for h, w in num)]
    for r in rows[:limit]:
        cells = [
            _calls(r.calls),
            fmt_ms(r.self_ms),
            fmt_ms(r.total_ms),
            fmt_pct(None if r.share is None else 100 * r.share, ""),
            fmt_si(r.flops_per_s, "FLOP/s", ""),
        ]
        kind = f"{r.kind:<6} " if kinds else ""
        lines.append(
            kind
            + f"{_cut(r.name, name_w):<{name_w}}"
            + "".join(f" {c:>{w}}" for c, (_, w) in zip(cells, num, strict=True))
        )
    rest = rows[limit:]
    if rest:
        lines.append(f"({len(rest)} more, {fmt_ms(sum(r.self_ms for r in rest))} self time in all)")
    return "\n".join(line[:width].rstrip() for line in lines)


def _calls(x: float) -> str:
    return fmt_count(x) if abs(x - round(x)) < 1e-9 else f"{x:.2f}"


def write(
    rows: list[TopRow], out_dir: Path, header: dict[str, Any], csv_name: str, json_name: str, md_name: str
) -> list[Path]:
    """Write the whole table as CSV (raw numbers, ms), JSON (``header`` plus rows) and Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow(asdict(r))
    paths = [out_dir / csv_name, out_dir / json_name, out_dir / md_name]
    paths[0].write_text(buf.getvalue(), encoding="utf-8")
    paths[1].write_text(json.dumps({**header, "rows": [asdict(r) for r in rows]}, indent=1), encoding="utf-8")
    paths[2].write_text(markdown(rows, header), encoding="utf-8")
    return paths


def markdown(rows: list[TopRow], header: dict[str, Any]) -> str:
    """A GFM table of every row, under a line saying what the times are."""
    lines = [
        f"## Top ops: {md_escape(header.get('point_id', ''))}",
        "",
        md_escape(
            f"{header.get('calls')} profiled calls on {header.get('device')}, each beside calls timed without the "
            f"profiler (median {fmt_ms(header.get('point_ms'))}); per call (the median call's op time, split as over "
            "all calls): "
            f"self times sum to {fmt_ms(header.get('self_sum_ms'))}; share = self time / that median."
        ),
        "",
        "| kind | name | calls | self | total | share | FLOPs | FLOP/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        share = fmt_pct(None if r.share is None else 100 * r.share, "")
        cells = [r.kind, r.name, _calls(r.calls), fmt_ms(r.self_ms), fmt_ms(r.total_ms), share]
        cells += [fmt_si(r.flops, "", ""), fmt_si(r.flops_per_s, "FLOP/s", "")]
        lines.append("| " + " | ".join(md_escape(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"
