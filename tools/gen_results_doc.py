"""Write docs/results.md from attnbench.results.COLUMNS (tests check it is up to date)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def render() -> str:
    from attnbench.results import COLUMNS, SCHEMA_VERSION

    lines = [
        "# Result columns",
        "",
        f"`results.parquet` holds one row per point (schema version {SCHEMA_VERSION}); generated from",
        "`attnbench.results.COLUMNS` by `python tools/gen_results_doc.py`. Memory is in MiB (2^20 bytes).",
        "",
        "| column | unit | meaning |",
        "|---|---|---|",
    ]
    lines += [f"| `{name}` | {unit} | {text} |" for name, (unit, text) in COLUMNS.items()]
    lines += [
        "",
        "`samples.parquet`: `point_id`, `sample` (index), `time_ms` (per call, the block's time divided by its calls), `round` (the worker process that took it; 0 for single-round points).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    (ROOT / "docs" / "results.md").write_text(render())
