"""Correctness verdicts shared between the points of one run: a verdict depends on the impl,
its parameters and the inputs (shape, dtype, causal, seed, device), not on the pass or the
round, so it is computed once and read back by the others.

The cache is an optimisation only: a file that cannot be read or written (a full disk, a
read-only directory) means the check runs again, never a different verdict.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from pathlib import Path
from typing import Any

from attnbench.point import Point


def _path(cache_dir: Path, point: Point) -> Path:
    ident: dict[str, Any] = {
        "impl": point.impl,
        "B": point.B,
        "H": point.H,
        "N": point.N,
        "D": point.D,
        "M": point.M,
        "dtype": point.dtype.value,
        "causal": point.causal,
        "seed": point.seed,
        "device": point.device,
        "params": dict(point.params),
    }
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]
    return cache_dir / f"verdict-{key}.json"


def load(cache_dir: Path | None, point: Point) -> dict[str, Any] | None:
    """The stored verdict of ``point``'s impl on its inputs, or None."""
    if cache_dir is None:
        return None
    try:
        doc = json.loads(_path(cache_dir, point).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "correct" in doc else None


def store(cache_dir: Path | None, point: Point, verdict: dict[str, Any]) -> None:
    """Store ``verdict`` atomically; silently nothing when the directory refuses the write."""
    if cache_dir is None or verdict.get("correct") is None:
        return
    path = _path(cache_dir, point)
    tmp = path.with_name(f".{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")  # shards share the cache
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(verdict, default=float))
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)
