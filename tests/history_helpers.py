"""Synthetic run directories and histories for the history tests (no benchmark is run).

Noise of a run's value (``REAL_NOISE``) was derived from real runs of the ci suite, see
tests/test_history_synthetic.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

from attnbench import results
from attnbench.point import Record

REPO = Path(__file__).resolve().parents[1]
ENV = {"device": "cpu", "cpu_model": "Test CPU", "torch": "2.13.0", "torch_cuda": None, "gpu": None, "threads": 1}
SUITE_SOURCE = '[params]\nimpl = "x"\nN = 1\n[gate]\nthresholds = ["latency:10%", "memory:5%"]\n'


def write_run(
    run_dir: Path,
    points: dict[str, list[list[float]]],
    started: str,
    commit: str = "c0",
    env: dict[str, Any] | None = None,
    suite: str = "t",
    status: dict[str, str] | None = None,
    peak: dict[str, float] | None = None,
    finished: bool = True,
    branch: str | None = "main",
) -> Path:
    """A finished run directory: ``points`` maps point_id -> samples per round."""
    run_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for pid, rounds in points.items():
        st = (status or {}).get(pid, "ok")
        xs = [t for rnd in rounds for t in rnd]
        row = {
            "point_id": pid,
            "impl": pid.split("/")[0],
            "pass": pid.split("/")[1] if pid.count("/") >= 1 else "fwd",
            "causal": True,
            "dtype": "float32",
            "N": 512,
            "status": st,
            "correct": True if st == "ok" else None,
            "peak_mib": (peak or {}).get(pid, 10.0),
            "time_ms_median": float(np.median(xs)) if xs and st == "ok" else None,
            "error": None if st == "ok" else f"{st} in a test",
        }
        for i, rnd in enumerate(rounds if st == "ok" else [[]]):
            records.append(Record({**row, "round": i}, [float(t) for t in rnd] if st == "ok" else []))
    df, smp = results.records_to_frames(records)
    df.to_parquet(run_dir / results.RESULTS, index=False)
    smp.to_parquet(run_dir / results.SAMPLES, index=False)
    e = dict(env or ENV)
    e["git_commit_cwd"] = commit
    if branch:
        e["git_branch"] = branch
    meta = {
        "env": e,
        "suite": {"name": suite, "path": f"{suite}.toml", "source": SUITE_SOURCE},
        "threads": e.get("threads", 1),
        "device": e["device"],
        "command": f"attnbench run --suite {suite} --out {run_dir}",
        "started": started,
        "finished": started if finished else None,
    }
    results.write_metadata(run_dir, meta)
    return run_dir


def rounds_around(
    value: float, rng: np.random.Generator, n_rounds: int = 3, n: int = 12, spread: float = 0.03
) -> list[list[float]]:
    """Samples of ``n_rounds`` rounds whose median is ``value`` (scaled to it exactly)."""
    xs = np.exp(rng.normal(0.0, spread, (n_rounds, n)))
    xs *= value / np.median(xs)
    return [list(row) for row in xs]


def stamp(i: int) -> str:
    """The i-th run's start time, one hour apart."""
    return f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00:00+0000"


def attnbench(*args: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env, timeout=300
    )
