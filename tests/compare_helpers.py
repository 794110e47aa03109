"""Synthetic run directories for the compare tests (no benchmark is run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attnbench import results
from attnbench.compare.io import PointData, Side
from attnbench.point import Record

ENV = {"device": "cpu", "cpu_model": "Test CPU", "torch": "2.13.0", "torch_cuda": None, "gpu": None, "threads": 1}


def samples(median: float, n: int = 30, noise: float = 0.03, seed: int = 0) -> list[float]:
    """``n`` lognormal samples around ``median`` with relative spread ``noise``."""
    rng = np.random.default_rng(seed)
    return list(median * np.exp(rng.normal(0.0, noise, n)))


def point(
    pid: str, xs: list[float] | None, status: str = "ok", correct: bool | None = True, mib: float | None = 10.0
) -> PointData:
    return PointData(pid, status, correct, xs, float(np.median(xs)) if xs else None, mib, pid.split("/")[0], "float32")


def side(points: list[PointData], env: dict[str, Any] | None = None, label: str = "s") -> Side:
    return Side(label, {p.point_id: p for p in points}, dict(env or ENV), {}, 1)


def write_run(
    run_dir: Path, rows: list[dict[str, Any]], env: dict[str, Any] | None = None, suite_source: str = ""
) -> Path:
    """A run directory as `attnbench run` writes it; rows carry point_id, status and optional
    samples (or ``rounds``: one list of samples per worker process), correct, peak_mib, dtype."""
    run_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for r in rows:
        per_round = r.get("rounds") or [r.get("samples") or []]
        xs = [t for rnd in per_round for t in rnd]
        row = {
            "point_id": r["point_id"],
            "impl": r["point_id"].split("/")[0],
            "pass": "fwd",
            "dtype": r.get("dtype", "float32"),
            "status": r.get("status", "ok"),
            "correct": r.get("correct", True if r.get("status", "ok") == "ok" else None),
            "peak_mib": r.get("peak_mib", 10.0),
            "time_ms_median": float(np.median(xs)) if xs else None,
            "calls_per_sample": 2,
            "error": r.get("error"),
        }
        for i, rnd in enumerate(per_round):
            records.append(Record({**row, "round": i}, [float(t) for t in rnd]))
    df, smp = results.records_to_frames(records)
    df.to_parquet(run_dir / results.RESULTS, index=False)
    smp.to_parquet(run_dir / results.SAMPLES, index=False)
    suite = {"name": "t", "path": "t.toml", "source": suite_source}
    results.write_metadata(run_dir, {"env": dict(env or ENV), "suite": suite, "threads": 1, "device": "cpu"})
    return run_dir
