"""CSV export of a run's results table (one row per point, the columns of results.parquet)."""

from __future__ import annotations

import json
from pathlib import Path

from attnbench.results.tables import load_run


def to_csv(run_dir: Path) -> str:
    """The results table of ``run_dir`` as CSV text (list-valued cells as JSON)."""
    df, _samples, _meta = load_run(run_dir)
    df = df.copy()
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, (list, tuple)) or hasattr(v, "tolist")).any():
            df[col] = df[col].map(_json_cell)
    return str(df.to_csv(index=False))


def _json_cell(v: object) -> str | None:
    if v is None:
        return None
    return json.dumps(v.tolist() if hasattr(v, "tolist") else list(v))  # type: ignore[call-overload]
