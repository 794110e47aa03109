"""Reading the two sides of a comparison, and refusing to compare what is not comparable.

A side is a run directory, a run's ``results.parquet`` (its directory is used), a saved
baseline (:mod:`attnbench.compare.baseline`) or a pytest-benchmark JSON file (ours, from
``attnbench export``, or any other: its benchmarks' ``stats.data`` are the samples).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.compare.baseline import baseline_run_dir
from attnbench.errors import UserError
from attnbench.point import FAILED_STATUS_NAMES
from attnbench.results.layout import PLAN
from attnbench.results.pytest_benchmark import read_pytest_benchmark
from attnbench.results.tables import load_run

FAILED_STATUSES = FAILED_STATUS_NAMES
# env keys that must agree (None or absent on either side: not checked)
GUARD_KEYS = ("device", "gpu", "cpu_model", "torch", "torch_cuda")


@dataclass
class PointData:
    """What the verdicts need from one point of one side."""

    point_id: str
    status: str = "ok"
    correct: bool | None = None
    samples: list[float] | None = None  # per-call ms
    median: float | None = None  # ms
    peak_mib: float | None = None
    impl: str = ""
    dtype: str | None = None
    error: str | None = None
    sample_rounds: list[int] | None = None  # the round (worker process) of each sample, if known
    # per round, in round order (attnbench.measure.reference): machine reference ms, page faults
    # per call, cost of one fault in us; one-element lists for a single-round point; None: unknown
    round_ref_ms: list[float | None] | None = None
    round_faults: list[float | None] | None = None
    round_fault_us: list[float | None] | None = None
    noise: str = ""  # why the point's number is noisy (attnbench.report.frame.noise_reasons), or ""

    @property
    def failed(self) -> bool:
        """Errored, crashed, ran out of memory or time, or produced a wrong answer."""
        return self.status in FAILED_STATUSES or self.correct is False


@dataclass
class Side:
    """One side of a comparison: its points by id, its environment fingerprint and a label."""

    label: str
    points: dict[str, PointData]
    env: dict[str, Any] = field(default_factory=dict)
    suite: dict[str, Any] = field(default_factory=dict)
    threads: int | None = None
    device_models: dict[str, str] = field(default_factory=dict)  # point_id -> model it ran on, if recorded
    interrupted: bool = False  # the run was stopped before it finished (its metadata says so)
    planned: int | None = None  # points the run planned, when known (an interrupted run lacks some)

    @property
    def dtypes(self) -> set[str]:
        return {p.dtype for p in self.points.values() if p.dtype}


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def _str(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or v == "":
        return None
    return str(v)


def _bool(v: Any) -> bool | None:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return bool(v)


def _per_round(row: dict[str, Any], col: str) -> list[float | None] | None:
    """Column ``col`` of each round (``round_<col>`` of a pooled row, else the row's own value)."""
    vals = row.get("round_" + col)
    listed = vals is not None and not isinstance(vals, float)  # NaN when the column is absent
    out = [_num(v) for v in list(vals)] if listed else [_num(row.get(col))]  # type: ignore[arg-type]
    return out if any(v is not None for v in out) else None


def _noise(df: Any, meta: dict[str, Any]) -> dict[str, str]:
    """Why each point is noisy (the report's one definition), by point id."""
    from attnbench.report.frame import noise_reasons  # deferred: pandas

    if not len(df) or "status" not in df.columns or "pass" not in df.columns:
        return {}
    why = noise_reasons(df, meta)
    return {str(pid): str(w) for pid, w in zip(df["point_id"], why, strict=True) if w}


def side_from_tables(df: Any, samples: Any, meta: dict[str, Any], label: str) -> Side:
    """A side from a run's tables (results, samples, metadata)."""
    by_point: dict[str, list[float]] = {}
    rounds_of: dict[str, list[int]] = {}
    if samples is not None and len(samples):
        for pid, grp in samples.sort_values(["point_id", "sample"]).groupby("point_id", sort=False):
            by_point[str(pid)] = [float(t) for t in grp["time_ms"]]
            if "round" in grp.columns:  # runs written before rounds were recorded have none
                rounds_of[str(pid)] = [int(r) for r in grp["round"]]
    points: dict[str, PointData] = {}
    noise = _noise(df, meta)
    for row in df.to_dict(orient="records"):
        pid = str(row["point_id"])
        points[pid] = PointData(
            point_id=pid,
            status=str(row.get("status") or "ok"),
            correct=_bool(row.get("correct")),
            samples=by_point.get(pid),
            sample_rounds=rounds_of.get(pid),
            median=_num(row.get("time_ms_median")),
            peak_mib=_num(row.get("peak_mib")),
            impl=_str(row.get("impl")) or pid.split("/")[0],
            dtype=_str(row.get("dtype")),
            error=_str(row.get("error")) or _str(row.get("correctness_error")),
            round_ref_ms=_per_round(row, "ref_ms"),
            round_faults=_per_round(row, "faults_per_call"),
            round_fault_us=_per_round(row, "ref_fault_us"),
            noise=noise.get(pid, ""),
        )
    planned = meta.get("planned_points")
    side = Side(
        label,
        points,
        dict(meta.get("env") or {}),
        dict(meta.get("suite") or {}),
        meta.get("threads"),
        interrupted=bool(meta.get("interrupted")),
        planned=int(planned) if isinstance(planned, int) else None,
    )
    if "device_model" in df.columns:
        side.device_models = {
            str(p): str(m) for p, m in zip(df["point_id"], df["device_model"], strict=True) if _str(m)
        }
    return side


def side_from_run(run_dir: Path, label: str | None = None) -> Side:
    """A side from a run directory written by ``attnbench run`` (or a saved baseline's copy)."""
    side = side_from_tables(*load_run(run_dir), label or str(run_dir))
    if side.planned is None:  # runs finalized before metadata carried it: the plan says
        side.planned = _planned(Path(run_dir))
    return side


def _planned(run_dir: Path) -> int | None:
    try:
        return len(json.loads((run_dir / PLAN).read_text(encoding="utf-8"))["points"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def side_from_pytest_benchmark(path: Path, label: str | None = None) -> Side:
    """A side from a pytest-benchmark JSON file (ours from ``attnbench export``, or any other)."""
    return side_from_tables(*read_pytest_benchmark(path), label or str(path))


def load_side(spec: str | Path, label: str | None = None) -> Side:
    """A side from a run directory, a results.parquet, a pytest-benchmark JSON or ``baseline:NAME``."""
    text = str(spec)
    if text.startswith("history:"):
        raise UserError(f"{text!r}: a history baseline can only be the BASELINE side (--baseline {text} RUN_DIR)")
    if text.startswith("baseline:"):
        return side_from_run(baseline_run_dir(text.split(":", 1)[1]), label or text)
    p = Path(text)
    if p.is_dir():
        return side_from_run(p, label)
    if p.is_file() and p.suffix == ".parquet":
        return side_from_run(p.parent, label or text)
    if p.is_file() and p.suffix == ".json":
        if p.name == "metadata.json":
            return side_from_run(p.parent, label or text)
        return side_from_pytest_benchmark(p, label)
    if not p.exists():
        raise UserError(f"{text!r}: no such run directory or result file")
    raise UserError(f"{text!r}: expected a run directory, a results.parquet or a pytest-benchmark .json file")


def mismatch_reason(base: Side, cur: Side) -> str | None:
    """Why ``base`` and ``cur`` should not be compared (one line), or None if they may be."""
    diffs = []
    for key in GUARD_KEYS:
        a, b = base.env.get(key), cur.env.get(key)
        if a is not None and b is not None and a != b:
            diffs.append(f"{key} {a!r} vs {b!r}")
    if base.env.get("device") == "cpu" and base.threads and cur.threads and base.threads != cur.threads:
        diffs.append(f"threads {base.threads} vs {cur.threads}")
    if base.dtypes and cur.dtypes and base.dtypes != cur.dtypes:
        diffs.append(f"dtypes {sorted(base.dtypes)} vs {sorted(cur.dtypes)}")
    if not diffs:
        return None
    return "runs are not comparable: " + "; ".join(diffs) + " (pass --allow-mismatch to compare anyway)"


def device_mismatch_reason(base: Side, cur: Side) -> str | None:
    """Why comparing ``base`` and ``cur`` would pool points measured on different device models
    (one line), or None. A side whose points ran on several models (Slurm shards on a mixed
    partition) is refused, and so is a point measured on one model on one side and another on the
    other. Points without a recorded model (older runs, skipped points) are not judged."""
    problems = []
    for name, side in (("baseline", base), ("current", cur)):
        models = sorted(set(side.device_models.values()))
        if len(models) > 1:
            problems.append(f"{name} {side.label} mixes {', '.join(repr(m) for m in models)}")
    moved = sorted(
        pid
        for pid, model in cur.device_models.items()
        if pid in base.device_models and base.device_models[pid] != model
    )
    if moved:
        a, b = base.device_models[moved[0]], cur.device_models[moved[0]]
        problems.append(f"{len(moved)} point(s) ran on {a!r} in the baseline and {b!r} now (e.g. {moved[0]})")
    if not problems:
        return None
    return (
        "points from different device models: "
        + "; ".join(problems)
        + " (pass --allow-mixed-devices to compare anyway)"
    )
