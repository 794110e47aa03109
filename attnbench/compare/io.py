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

from attnbench.errors import UserError

FAILED_STATUSES = ("error", "oom", "timeout", "crashed")
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


def side_from_run(run_dir: Path, label: str | None = None) -> Side:
    """A side from a run directory written by ``attnbench run`` (or a saved baseline's copy)."""
    from attnbench import results

    df, samples, meta = results.load_run(run_dir)
    by_point: dict[str, list[float]] = {}
    rounds_of: dict[str, list[int]] = {}
    if samples is not None and len(samples):
        for pid, grp in samples.sort_values(["point_id", "sample"]).groupby("point_id", sort=False):
            by_point[str(pid)] = [float(t) for t in grp["time_ms"]]
            if "round" in grp.columns:  # runs written before rounds were recorded have none
                rounds_of[str(pid)] = [int(r) for r in grp["round"]]
    points: dict[str, PointData] = {}
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
        )
    return Side(
        label or str(run_dir), points, dict(meta.get("env") or {}), dict(meta.get("suite") or {}), meta.get("threads")
    )


def side_from_pytest_benchmark(path: Path, label: str | None = None) -> Side:
    """A side from a pytest-benchmark JSON file (times in seconds there, ms here)."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise UserError(f"{path}: not a pytest-benchmark file (no 'benchmarks' list)")
    points: dict[str, PointData] = {}
    for b in doc["benchmarks"]:
        extra = b.get("extra_info") or {}
        stats = b.get("stats") or {}
        pid = str(extra.get("point_id") or b.get("fullname") or b.get("name"))
        data = stats.get("data")
        points[pid] = PointData(
            point_id=pid,
            status=str(extra.get("status", "ok")),
            correct=_bool(extra.get("correct")),
            samples=[float(t) * 1e3 for t in data] if data else None,
            median=_num(stats.get("median")) * 1e3 if _num(stats.get("median")) is not None else None,  # type: ignore[operator]
            peak_mib=_num(extra.get("peak_mib")),
            impl=str(extra.get("impl") or b.get("group") or ""),
            dtype=extra.get("dtype"),
            error=extra.get("error"),
        )
    for pid, failed in (doc.get("attnbench") or {}).get("not_ok", {}).items():
        fields = {
            k: v
            for k, v in (failed or {}).items()
            if k in ("status", "correct", "impl", "dtype", "error") and v is not None
        }
        points.setdefault(pid, PointData(point_id=pid, **fields))
    mi = doc.get("machine_info") or {}
    env = dict(mi.get("attnbench_env") or {})
    if not env:
        cpu = mi.get("cpu") or {}
        env = {"cpu_model": cpu.get("brand_raw") or mi.get("processor") or None}
    return Side(label or str(path), points, env, {}, env.get("threads"))


def load_side(spec: str | Path, label: str | None = None) -> Side:
    """A side from a run directory, a results.parquet, a pytest-benchmark JSON or ``baseline:NAME``."""
    text = str(spec)
    if text.startswith("history:"):
        raise UserError(f"{text!r}: a history baseline can only be the BASELINE side (--baseline {text} RUN_DIR)")
    if text.startswith("baseline:"):
        from attnbench.compare.baseline import baseline_run_dir

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
