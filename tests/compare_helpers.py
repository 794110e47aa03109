"""Synthetic run directories and sides for the compare tests (no benchmark is run)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attnbench import results
from attnbench.compare.io import PointData, Side
from attnbench.point import Record

ENV = {"device": "cpu", "cpu_model": "Test CPU", "torch": "2.13.0", "torch_cuda": None, "gpu": None, "threads": 1}
FAULT_US = 2.5  # cost of one page fault in the synthetic workers (the development machine: 2.1-2.9 us)


def samples(median: float, n: int = 30, noise: float = 0.03, seed: int = 0) -> list[float]:
    """``n`` lognormal samples around ``median`` with relative spread ``noise``."""
    rng = np.random.default_rng(seed)
    return list(median * np.exp(rng.normal(0.0, noise, n)))


def point(
    pid: str, xs: list[float] | None, status: str = "ok", correct: bool | None = True, mib: float | None = 10.0
) -> PointData:
    return PointData(pid, status, correct, xs, float(np.median(xs)) if xs else None, mib, pid.split("/")[0], "float32")


def rounds_point(
    pid: str,
    medians: list[float],
    seed: int,
    faults: list[float] | None = None,
    refs: list[float] | None = None,
    n: int = 12,
    noise: float = 0.02,
) -> PointData:
    """A point measured in ``len(medians)`` rounds (worker processes), each with ``n`` samples
    around its median; per round page faults per call and machine reference ms, if given."""
    xs: list[float] = []
    rs: list[int] = []
    for r, m in enumerate(medians):
        xs += samples(m, n, noise, seed=seed * 31 + r)
        rs += [r] * n
    p = point(pid, xs)
    p.sample_rounds = rs
    p.round_faults = list(faults) if faults is not None else None
    p.round_ref_ms = list(refs) if refs is not None else None
    p.round_fault_us = [FAULT_US] * len(medians) if faults is not None else None
    return p


def side(points: list[PointData], env: dict[str, Any] | None = None, label: str = "s") -> Side:
    return Side(label, {p.point_id: p for p in points}, dict(env or ENV), {}, 1)


def write_run(
    run_dir: Path,
    rows: list[dict[str, Any]],
    env: dict[str, Any] | None = None,
    suite_source: str = "",
    meta: dict[str, Any] | None = None,
) -> Path:
    """A run directory as `attnbench run` writes it; rows carry point_id, status and optional
    samples (or ``rounds``: one list of samples per worker process, with optional ``faults`` and
    ``refs``: page faults per call and machine reference ms per round), correct, peak_mib, dtype,
    impl, and any other result column under ``extra``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    records = []
    for r in rows:
        per_round = r.get("rounds") or [r.get("samples") or []]
        xs = [t for rnd in per_round for t in rnd]
        row = {
            "point_id": r["point_id"],
            "impl": r.get("impl", r["point_id"].split("/")[0]),
            "pass": "fwd",
            "dtype": r.get("dtype", "float32"),
            "status": r.get("status", "ok"),
            "correct": r.get("correct", True if r.get("status", "ok") == "ok" else None),
            "peak_mib": r.get("peak_mib", 10.0),
            "time_ms_median": float(np.median(xs)) if xs else None,
            "calls_per_sample": 2,
            "error": r.get("error"),
            **r.get("extra", {}),
        }
        for i, rnd in enumerate(per_round):
            per = dict(row, round=i)
            if r.get("faults") is not None:
                per.update(faults_per_call=r["faults"][i], ref_fault_us=FAULT_US)
            if r.get("refs") is not None:
                per["ref_ms"] = r["refs"][i]
            records.append(Record(per, [float(t) for t in rnd]))
    df, smp = results.records_to_frames(records)
    df.to_parquet(run_dir / results.RESULTS, index=False)
    smp.to_parquet(run_dir / results.SAMPLES, index=False)
    suite = {"name": "t", "path": "t.toml", "source": suite_source}
    doc = {"env": dict(env or ENV), "suite": suite, "threads": 1, "device": "cpu", **(meta or {})}
    results.write_metadata(run_dir, doc)
    return run_dir


# ---- a simulated ci suite: the process states and noise measured on the development machine ---
# (point, typical ms, chance a round is in a faulting state, faults per call when it is, spread of
# rounds (sd of logs)). Shapes from two ci runs on the 2-core machine (docs/ci.md): naive softmax
# forward N=512 faults 3,041 times per call in about half its processes and runs 2x slower; the
# linear-chunked forward at N=512 faults 570-976 times (1.4-2x); linear-cumsum faults in most.
CI_POINTS = [
    ("softmax/fwd/N256", 1.4, 0.0, 0, 0.03),
    ("softmax/fwd/N512", 5.8, 0.6, 3041, 0.04),
    ("softmax/fwdbwd/N256", 4.5, 0.5, 150, 0.05),
    ("softmax/fwdbwd/N512", 17.0, 0.4, 1000, 0.06),
    ("sdpa/fwd/N256", 0.95, 0.0, 0, 0.04),
    ("sdpa/fwd/N512", 3.8, 0.0, 0, 0.02),
    ("sdpa/fwdbwd/N256", 3.6, 0.0, 0, 0.03),
    ("sdpa/fwdbwd/N512", 13.0, 0.3, 200, 0.04),
    ("linear-cumsum/fwd/N256", 50.0, 0.8, 8100, 0.08),
    ("linear-cumsum/fwdbwd/N256", 120.0, 0.9, 12000, 0.08),
    ("linear-chunked/fwd/N256", 0.95, 0.0, 0, 0.04),
    ("linear-chunked/fwd/N512", 2.3, 0.4, 976, 0.05),
    ("linear-chunked/fwdbwd/N256", 3.5, 0.1, 60, 0.08),
    ("linear-chunked/fwdbwd/N512", 6.5, 0.5, 300, 0.04),
]


# Noise profiles: "loaded" is what the development machine showed with other jobs on both cores
# (round spreads of CI_POINTS, 1 round in 20 an outlier at +30 %, 1 sample in 6 hit by +40 %);
# "idle" halves the round spreads, with 1 outlier round in 100 and 1 hit sample in 20.
PROFILES = {"loaded": (1.0, 0.05, 1 / 6), "idle": (0.5, 0.01, 1 / 20)}


def simulated_rows(
    seed: int,
    slow: dict[str, float] | None = None,
    machine: float = 1.0,
    rounds: int = 7,
    n: int = 20,
    profile: str = "loaded",
) -> list[dict[str, Any]]:
    """Rows for :func:`write_run` (or :func:`simulated_side`): the ci suite's points, each round a
    process whose state (faulting or not) is drawn, its speed spread by the point's round spread
    (with outlier rounds, +30 %), its samples spread 5 % with bursts of load (+40 %), as often as
    the ``profile`` says. ``slow`` maps an impl (or "*") to a factor on its time (a code
    regression: the reference does not move); ``machine`` multiplies everything, the machine
    reference (0.3 ms) included (a slower machine)."""
    rng = np.random.default_rng(seed)
    scale, outliers, bursts = PROFILES[profile]
    slow = slow or {}
    rows = []
    for pid, ms, p_fault, faults, spread in CI_POINTS:
        impl = pid.split("/")[0]
        factor = slow.get(impl, slow.get("*", 1.0))
        per_round, fpc, refs = [], [], []
        for _ in range(rounds):
            f = faults * rng.uniform(0.99, 1.01) if rng.random() < p_fault else rng.uniform(0, 3)
            t = (ms + f * FAULT_US / 1e3) * factor * machine * float(np.exp(rng.normal(0, spread * scale)))
            if rng.random() < outliers:
                t *= 1.3
            xs = t * np.exp(rng.normal(0, 0.05, n))
            xs[rng.random(n) < bursts] *= 1.4
            per_round.append(list(xs))
            fpc.append(float(f))
            refs.append(0.3 * machine * float(np.exp(rng.normal(0, 0.08))))
        rows.append({"point_id": pid, "impl": impl, "rounds": per_round, "faults": fpc, "refs": refs})
    return rows


def simulated_side(seed: int, label: str = "s", **kw: Any) -> Side:
    """:func:`simulated_rows` as an in-memory side."""
    points = []
    for r in simulated_rows(seed, **kw):
        meds = [float(np.median(x)) for x in r["rounds"]]
        p = rounds_point(r["point_id"], meds, seed, r["faults"], r["refs"])
        p.samples = [t for x in r["rounds"] for t in x]
        p.sample_rounds = [i for i, x in enumerate(r["rounds"]) for _ in x]
        p.median = float(np.median(p.samples))
        points.append(p)
    return side(points, label=label)
