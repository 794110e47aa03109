"""Which point to profile or reproduce, with the options it was measured under: a point of a
stored run (``RUN_DIR POINT_ID``) or one given on the command line (``--impl --set --pass``).

Every mistake is a one-line :class:`~attnbench.errors.UserError` naming what was given and
what was expected. Reads the run directory only (plan, metadata, results); never writes to it.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from attnbench.env import resolve_device
from attnbench.errors import UserError
from attnbench.impls import registry
from attnbench.point import DEVICES, CudaTimerOptions, Pass, Point, RunOptions, TimingConfig
from attnbench.results import load_run, read_metadata
from attnbench.results.layout import RunDir
from attnbench.results.plan import read_plan
from attnbench.suite import DEFAULTS, parse_set

SLUG_MAX = 120
PROFILE_SUBDIR = "profile"
# The run's stored numbers a profile or a repro puts next to its own (results columns).
ROW_KEYS = (
    "status",
    "error",
    "time_ms_median",
    "time_ms_q1",
    "time_ms_q3",
    "n_samples",
    "rel_noise",
    "converged",
    "peak_mib",
    "mem_method",
    "correct",
    "correctness_error",
    "err_out",
    "err_dq",
    "err_dk",
    "err_dv",
    "threads",
    "timer",
)


@dataclass
class Target:
    """A point and the options to measure it with. ``run_dir`` is None for a point given on the
    command line; ``row`` holds the run's stored numbers of this point (:data:`ROW_KEYS`, empty
    when there is no run or the point has no row yet); ``env`` the run's environment fingerprint."""

    point: Point
    options: RunOptions
    run_dir: Path | None = None
    row: dict[str, Any] = field(default_factory=dict)
    env: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return f"run {self.run_dir}" if self.run_dir is not None else "the command line"


def slug(point_id: str) -> str:
    """A point id as one directory name: ``linear-chunked/fwd/causal/...`` -> ``linear-chunked_fwd_causal_...``
    (long ids keep a hash of the whole id, so two ids never share a directory)."""
    s = re.sub(r"[^A-Za-z0-9.=-]+", "_", point_id).strip("._-") or "point"
    if len(s) > SLUG_MAX:
        s = s[: SLUG_MAX - 13] + "-" + hashlib.sha256(point_id.encode()).hexdigest()[:12]
    return s


def default_out(target: Target) -> Path:
    """``RUN_DIR/profile/<slug>/`` for a point of a run, else ``./profiles/<slug>/``."""
    name = slug(target.point.point_id)
    if target.run_dir is not None:
        return target.run_dir / PROFILE_SUBDIR / name
    return Path("profiles") / name


def from_run(run_dir: Path, point_id: str) -> Target:
    """The point ``point_id`` of the run in ``run_dir``, with the run's timing options and threads."""
    rd = RunDir(Path(run_dir))
    if not rd.path.is_dir():
        raise UserError(f"RUN_DIR {str(run_dir)!r}: no such directory; expected a directory written by `attnbench run`")
    meta = read_metadata(rd)
    df, _samples, _meta = load_run(rd)
    points = _plan_points(rd, df)
    if point_id not in points:
        close = difflib.get_close_matches(point_id, list(points), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(repr(c) for c in close)}?" if close else f"it has {len(points)} points"
        raise UserError(f"POINT_ID {point_id!r}: not a point of run {rd}; {hint} (ids are in its results.parquet)")
    point = points[point_id]
    if point.pass_ is Pass.DECODE:
        raise UserError(f"POINT_ID {point_id!r}: a decode point; profile and repro cover fwd, bwd and fwdbwd points")
    _check_device(point.device, f"POINT_ID {point_id!r}: measured on {point.device}")
    rows = df[df["point_id"].astype(str) == point_id] if "point_id" in df.columns else df.iloc[:0]
    row = {k: _plain(rows.iloc[0].get(k)) for k in ROW_KEYS if k in rows.columns} if len(rows) else {}
    env = meta.get("env") if isinstance(meta.get("env"), dict) else {}
    return Target(point, _run_options(meta, point.device), rd.path, row, dict(env or {}))


def from_options(
    impl: str,
    sets: list[str],
    pass_: str | None,
    device: str | None,
    params: list[str],
    threads: int | None,
) -> Target:
    """One point from ``--impl``, ``--set KEY=VALUE`` (one value each), ``--pass`` and ``--param``;
    the suite defaults (B=1, H=4, D=M=64, float32, causal, seed 0) fill the rest; N is required."""
    values: dict[str, Any] = {k: v[0] for k, v in DEFAULTS.items()}
    values["pass"] = Pass.FWDBWD.value
    for s in sets:
        key, vals = parse_set(s)
        if len(vals) != 1:
            raise UserError(f"--set {s!r}: profile takes one point; give one value for {key}")
        if key in ("impl", "pass"):
            raise UserError(f"--set {s!r}: give {key} with --{key}")
        if key in ("P", "T"):
            raise UserError(f"--set {s!r}: decode points (P, T) are not profiled; profile covers fwd, bwd and fwdbwd")
        values[key] = vals[0]
    if pass_ is not None:
        _key, vals = parse_set(f"pass={pass_}")
        values["pass"] = vals[0]
    if values["pass"] == Pass.DECODE.value:
        raise UserError("--pass decode: profile and repro cover fwd, bwd and fwdbwd points")
    if "N" not in values:
        raise UserError("--set N=...: missing; profile needs a sequence length, e.g. --set N=4096")
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: expected a positive integer")
    registry.get(impl)  # an unknown name is a one-line error listing what exists
    dev = resolve_device(device or "auto")
    point = Point(
        impl=impl,
        pass_=Pass(values["pass"]),
        causal=bool(values["causal"]),
        dtype=values["dtype"],
        B=int(values["B"]),
        H=int(values["H"]),
        N=int(values["N"]),
        D=int(values["D"]),
        M=int(values["M"]),
        seed=int(values["seed"]),
        device=dev,
        params=parse_params(params),
    )
    options = RunOptions(device=dev, threads=threads or os.cpu_count() or 1, timing=TimingConfig())
    return Target(point, options)


def parse_params(items: list[str]) -> dict[str, Any]:
    """``--param chunk_size=32`` -> {"chunk_size": 32}: JSON values (numbers, true/false), else text."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UserError(f"--param {item!r}: expected NAME=VALUE with NAME an impl keyword, e.g. chunk_size=32")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _plan_points(rd: Any, df: Any) -> dict[str, Point]:
    """The run's points by id: from plan.json, else (a run without one) from its results rows."""
    if rd.plan.exists():
        return {p.point_id: p for p in read_plan(rd).points}
    points: dict[str, Point] = {}
    for rec in df.to_dict("records"):
        try:
            raw = rec.get("impl_params")
            params = json.loads(raw) if isinstance(raw, str) and raw else {}
            p = Point.from_mapping({**rec, "params": params, "P": _plain(rec.get("P")), "T": _plain(rec.get("T"))})
        except (KeyError, ValueError, TypeError):
            continue
        points[p.point_id] = p
    return points


def _run_options(meta: dict[str, Any], device: str) -> RunOptions:
    """The run's timing table, threads, tolerances and CUDA timer choices (no reference cache,
    no telemetry: a profile shares nothing with the run's workers)."""
    doc = meta.get("options") or {}
    timing = TimingConfig.from_table(doc.get("timing") or meta.get("timing") or {})
    threads = int(doc.get("threads") or meta.get("threads") or os.cpu_count() or 1)
    cuda = doc.get("cuda") or meta.get("cuda_timer") or {}
    return RunOptions(
        device=device,
        threads=threads,
        timing=timing,
        tolerance=dict(doc.get("tolerance") or meta.get("tolerance") or {}),
        cuda=CudaTimerOptions(**{k: v for k, v in cuda.items() if k in ("graph", "flush_l2")}),
    )


def _check_device(device: str, what: str) -> None:
    if device not in DEVICES:
        raise UserError(f"{what}: unknown device {device!r}; expected {' or '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError(f"{what}, and no CUDA device is visible here (torch.cuda.is_available() is False)")


def _plain(v: Any) -> Any:
    """A results cell as a plain JSON value (numpy scalars unwrapped, NaN as None)."""
    if hasattr(v, "item") and not isinstance(v, (list, dict, str)):
        try:
            v = v.item()
        except (ValueError, TypeError):
            return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if v is not None and not isinstance(v, (bool, int, float, str)):
        try:
            if pd.isna(v):
                return None
        except (TypeError, ValueError):
            pass
        return str(v)
    return v
