"""pytest-benchmark JSON (the schema of pytest-benchmark 5.x): export a run, import any file.

Each point with timing samples becomes one benchmark: ``stats.data`` holds the per-call times
in seconds (one per round, each round a block of ``calls_per_sample`` calls: pytest-benchmark's
``iterations``); the other statistics are computed the way ``pytest_benchmark.stats.Stats``
computes them, so ``pytest-benchmark compare FILE`` shows the same numbers. ``extra_info``
carries the point's identity, status, correctness and peak memory, and ``machine_info`` carries
attnbench's environment fingerprint, so ``attnbench compare`` reads the file back losslessly
enough to gate on it. Points without samples (skipped or failed) are listed under
``attnbench.not_ok``, which pytest-benchmark ignores.

:func:`read_pytest_benchmark` turns any such file (ours or pytest-benchmark's own) back into a
run's tables, so ``attnbench compare`` reads both the same way.
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import time
from bisect import bisect_left, bisect_right
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.errors import UserError
from attnbench.results.tables import SAMPLE_COLUMNS, load_run

PYTEST_BENCHMARK_VERSION = "5.1.0"  # the schema written; pytest-benchmark 4 and 5 read it


def _quartiles(data: list[float]) -> tuple[float, float]:
    """q1, q3 exactly as pytest_benchmark.stats.Stats computes them."""
    s, n = sorted(data), len(data)
    if n == 1:
        return s[0], s[0]
    if n % 2:
        k, r = n // 4, n % 4
        if r == 1:
            return 0.25 * s[k - 1] + 0.75 * s[k], 0.75 * s[3 * k] + 0.25 * s[3 * k + 1]
        return 0.75 * s[k] + 0.25 * s[k + 1], 0.25 * s[3 * k + 1] + 0.75 * s[3 * k + 2]
    return statistics.median(s[: n // 2]), statistics.median(s[n // 2 :])


def pb_stats(data: list[float], iterations: int) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` dict for ``data`` (seconds per call, one per round)."""
    s, n = sorted(data), len(data)
    mean = statistics.mean(data)
    stddev = statistics.stdev(data) if n > 1 else 0
    q1, q3 = _quartiles(data)
    iqr = q3 - q1
    total = sum(data)
    ld = s[0] if n == 1 else s[bisect_left(s, q1 - 1.5 * iqr)]
    hd = s[0] if n == 1 else s[bisect_right(s, q3 + 1.5 * iqr) - 1]
    sd_out = sum(1 for v in data if v < mean - stddev or v > mean + stddev)
    iqr_out = sum(1 for v in data if v < q1 - 1.5 * iqr or v > q3 + 1.5 * iqr)
    return {
        "min": s[0],
        "max": s[-1],
        "mean": mean,
        "stddev": stddev,
        "rounds": n,
        "median": statistics.median(data),
        "iqr": iqr,
        "q1": q1,
        "q3": q3,
        "iqr_outliers": iqr_out,
        "stddev_outliers": sd_out,
        "outliers": f"{sd_out};{iqr_out}",
        "ld15iqr": ld,
        "hd15iqr": hd,
        "ops": n / total if total else 0,
        "total": total,
        "data": list(data),
        "iterations": iterations,
    }


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if hasattr(v, "item"):  # numpy scalars
        return _clean(v.item())
    return v


def to_pytest_benchmark(run_dir: Path) -> dict[str, Any]:
    """The pytest-benchmark document for run ``run_dir``."""
    df, samples, meta = load_run(run_dir)
    env = meta.get("env") or {}
    by_point: dict[str, list[float]] = {}
    if samples is not None:
        for pid, grp in samples.sort_values(["point_id", "sample"]).groupby("point_id", sort=False):
            by_point[str(pid)] = [float(t) / 1e3 for t in grp["time_ms"]]
    benchmarks, not_ok = [], {}
    keep = ("impl", "family", "pass", "causal", "dtype", "B", "H", "N", "D", "M", "seed", "device", "status",
            "correct", "peak_mib", "err_out", "converged", "rel_noise", "threads", "point_id", "error")  # fmt: skip
    for row in df.to_dict(orient="records"):
        pid = str(row["point_id"])
        extra = {k: _clean(row.get(k)) for k in keep if k in row}
        data = by_point.get(pid)
        if not data:
            not_ok[pid] = {k: extra.get(k) for k in ("status", "correct", "impl", "dtype", "error")}
            continue
        iterations = int(_clean(row.get("calls_per_sample")) or 1)
        benchmarks.append(
            {
                "group": f"{row.get('impl')}/{row.get('pass')}",
                "name": pid,
                "fullname": f"attnbench::{pid}",
                "params": None,
                "param": None,
                "extra_info": extra,
                "options": {
                    "timer": _clean(row.get("timer")) or "perf_counter",
                    "max_time": None,
                    "min_rounds": None,
                    "min_time": None,
                    "disable_gc": False,
                    "warmup": bool(row.get("warmup_calls")),
                },  # fmt: skip
                "stats": pb_stats(data, iterations),
            }
        )
    commit = str(env.get("git_commit_cwd") or "unknown")
    return {
        "machine_info": {
            "node": platform.node(),
            "processor": env.get("cpu_model") or platform.processor(),
            "machine": env.get("machine") or platform.machine(),
            "python_implementation": platform.python_implementation(),
            "python_version": env.get("python") or platform.python_version(),
            "system": platform.system(),
            "release": platform.release(),
            "cpu": {"brand_raw": env.get("cpu_model"), "count": env.get("cpu_count")},
            "attnbench_env": {**env, "threads": meta.get("threads") or env.get("threads")},
        },
        "commit_info": {
            "id": commit.removesuffix("-dirty"),
            "time": None,
            "author_time": None,
            "dirty": commit.endswith("-dirty"),
            "project": "attnbench",
            "branch": "(unknown)",
        },
        "benchmarks": benchmarks,
        "datetime": meta.get("finished") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "version": PYTEST_BENCHMARK_VERSION,
        "attnbench": {"suite": (meta.get("suite") or {}).get("name"), "not_ok": not_ok},
    }


def read_pytest_benchmark(path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(results, samples, metadata) from a pytest-benchmark JSON file (times in seconds there,
    ms here); a one-line UserError if it is not one."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not a readable JSON file ({' '.join(str(exc).split())})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
        raise UserError(f"{path}: not a pytest-benchmark file (no 'benchmarks' list)")
    rows: list[dict[str, Any]] = []
    samples: list[dict[str, Any]] = []
    for b in doc["benchmarks"]:
        if not isinstance(b, dict):
            raise UserError(f"{path}: not a pytest-benchmark file (a benchmark is not an object)")
        extra = b.get("extra_info") or {}
        stats = b.get("stats") or {}
        pid = str(extra.get("point_id") or b.get("fullname") or b.get("name"))
        data = [float(t) * 1e3 for t in stats.get("data") or []]
        median = _num(stats.get("median"))
        rows.append(
            {
                "point_id": pid,
                "status": str(extra.get("status", "ok")),
                "correct": extra.get("correct"),
                "time_ms_median": None if median is None else median * 1e3,
                "peak_mib": _num(extra.get("peak_mib")),
                "impl": str(extra.get("impl") or b.get("group") or ""),
                "dtype": extra.get("dtype"),
                "error": extra.get("error"),
            }
        )
        samples += [{"point_id": pid, "sample": i, "time_ms": t, "round": 0} for i, t in enumerate(data)]
    for pid, failed in (doc.get("attnbench") or {}).get("not_ok", {}).items():
        if any(r["point_id"] == pid for r in rows):
            continue
        fields = {k: v for k, v in (failed or {}).items() if k in ("status", "correct", "impl", "dtype", "error")}
        rows.append({"point_id": pid, "status": "ok", **fields})
    mi = doc.get("machine_info") or {}
    env = dict(mi.get("attnbench_env") or {})
    if not env:
        cpu = mi.get("cpu") or {}
        env = {"cpu_model": cpu.get("brand_raw") or mi.get("processor") or None}
    meta = {"env": env, "threads": env.get("threads"), "suite": {}, "device": env.get("device")}
    return pd.DataFrame(rows), pd.DataFrame(samples, columns=SAMPLE_COLUMNS), meta


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f
