"""What the command line asked for (:class:`RunRequest`) and where a new run goes: the run
directory made, checked and locked (:func:`new_run_dir`), the run's threads and timing from the
suite and the options. No torch: :mod:`attnbench.runner.session` builds the run from these."""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from attnbench.errors import UserError
from attnbench.point import TimingConfig
from attnbench.results.layout import RunDir
from attnbench.results.lock import RunLock, acquire

RUNS_ROOT = Path("runs")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


@dataclass(frozen=True)
class RunRequest:
    """What the command line asked for. None (or empty) = not given: the suite's or the
    default value applies, and on ``--resume`` the run's stored value."""

    suite: str | None = None
    impls: tuple[str, ...] = ()
    sets: tuple[str, ...] = ()
    device: str | None = None
    dtypes: tuple[str, ...] = ()
    out: str | None = None
    threads: int | None = None
    max_time: float | None = None
    rounds: int | None = None
    timeout: float | None = None
    cuda_graph: bool | None = None
    l2_flush: bool | None = None
    impl_files: tuple[str, ...] = ()  # `--impl file.py:function`, as /abs/file.py:function

    def validate(self) -> None:
        """Option values that are wrong whatever the suite (before anything is created)."""
        for name, val in (("--threads", self.threads), ("--rounds", self.rounds)):
            if val is not None and val < 1:
                raise UserError(f"{name} {val}: expected a positive integer")
        for name, fval in (("--max-time", self.max_time), ("--timeout", self.timeout)):
            if fval is not None and not (math.isfinite(fval) and fval > 0):
                raise UserError(f"{name} {fval}: expected a positive, finite number of seconds")

    def given(self) -> dict[str, Any]:
        """The options actually given, by their command-line names."""
        out = {}
        for f in fields(self):
            val = getattr(self, f.name)
            if val not in (None, ()):
                out[f.name] = list(val) if isinstance(val, tuple) else val
        return out


_FLAG = {
    "impls": "--impl",
    "sets": "--set",
    "dtypes": "--dtype",
    "cuda_graph": "--cuda-graph",
    "l2_flush": "--l2-flush",
}


def flag(name: str) -> str:
    return _FLAG.get(name, "--" + name.replace("_", "-"))


def slug(name: str) -> str:
    """A suite name made safe as a directory name (no separators, no dots at the start)."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return s[:60] or "run"


def timing_for(suite_timing: TimingConfig, request: RunRequest) -> TimingConfig:
    timing = suite_timing.with_overrides(max_time_s=request.max_time, timeout_s=request.timeout, rounds=request.rounds)
    if request.timeout is not None:
        timing = timing.with_overrides(check_timeout_s=max(timing.check_timeout_s, request.timeout))
    return timing


def resolve_threads(timing: TimingConfig, request: RunRequest, remote: bool = False) -> int:
    """The run's torch threads: the suite's requirement (a process-time clock needs one), the
    command line's, else every core (0 for a remote run: each shard's node decides)."""
    need = timing.threads or (1 if timing.clock == "process" else None)
    if need is not None:
        if request.threads is not None and request.threads != need:
            why = "its CPU-time clock needs one thread" if timing.clock == "process" else "the suite says so"
            raise UserError(f"--threads {request.threads}: this suite runs with threads = {need} ({why})")
        return need
    return request.threads or (0 if remote else os.cpu_count() or 1)


def occupied(path: Path) -> bool:
    """The directory holds something other than a (stale) lock file."""
    return any(p.name != RunDir(path).lock.name for p in path.iterdir())


def new_run_dir(out: str | None, suite_name: str) -> tuple[RunDir, RunLock]:
    """The run directory to create: ``--out`` or ``runs/SUITE-TIMESTAMP``; checked, made and
    locked (two runs started at once into one directory: the second is refused)."""
    if out is not None:
        if not out.strip() or any(ord(c) < 32 or ord(c) == 127 for c in out):
            raise UserError(f"--out {out!r}: expected a directory path (not empty, no control characters)")
        path = Path(out)
        label = f"--out {out!r}"
    else:
        path = RUNS_ROOT / f"{slug(suite_name)}-{time.strftime('%Y%m%d-%H%M%S')}"
        label = f"run directory {str(path)!r}"
        if RUNS_ROOT.resolve() not in path.resolve().parents:
            raise UserError(f"{label}: resolves outside {RUNS_ROOT}/; rename the suite")
    try:
        if path.exists() and not path.is_dir():
            raise UserError(f"{label}: exists and is not a directory")
        if path.is_dir() and occupied(path):
            if RunDir(path).lock.exists():  # a run is writing it: name the writer, not only "not empty"
                acquire(RunDir(path), label).release()
            raise UserError(f"{label}: directory is not empty; use --resume {path} to continue it")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".attnbench-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{label}: cannot be created or written ({exc.strerror or exc})") from None
    run_dir = RunDir(path)
    lock = acquire(run_dir, label)
    if occupied(path):  # another run got here between our check and our lock
        lock.release()
        raise UserError(f"{label}: directory is not empty; use --resume {path} to continue it")
    return run_dir, lock


def show(val: Any) -> str:
    if isinstance(val, list):
        return ",".join(str(v) for v in val)
    return str(val)
