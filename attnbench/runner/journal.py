"""The run's journal: one JSON line per finished point, appended and flushed at once, so an
interrupted or crashed sweep keeps every point it finished and ``--resume`` can skip them."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

JOURNAL = "journal.jsonl"


def _clean(obj: Any) -> Any:
    # JSON has no inf/nan: store them as strings and turn them back on load.
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _restore(obj: Any) -> Any:
    if obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v) for v in obj]
    return obj


def append(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one finished point ({"row": {...}, "samples": [...]}) durably."""
    path = Path(run_dir) / JOURNAL
    torn = False
    if path.exists() and path.stat().st_size:
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"  # a run killed mid-write: start on a fresh line
    with open(path, "a") as f:
        f.write(("\n" if torn else "") + json.dumps(_clean(record)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load(run_dir: Path) -> list[dict[str, Any]]:
    """Every record in the journal; a torn line (killed mid-write) is ignored. A later record
    of the same point and round replaces an earlier one."""
    path = Path(run_dir) / JOURNAL
    if not path.exists():
        return []
    by_id: dict[tuple[str, int], dict[str, Any]] = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = _restore(json.loads(line))
            except json.JSONDecodeError:
                continue
            by_id[(rec["row"]["point_id"], int(rec["row"].get("round", 0)))] = rec
    return list(by_id.values())
