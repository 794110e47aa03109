"""The run directory: the one place that names its files.

::

    journal.jsonl      every finished (point, round), appended as it finishes: the source of truth
    plan.json          the points of the run and what it was asked to do, so --resume knows the rest
    metadata.json      schema_version, run_id, options, environment, suite, command lines, timestamps
    results.parquet    one row per point (columns in attnbench.results.schema.COLUMNS)
    samples.parquet    point_id, sample, time_ms, round: every timing sample
    steps.parquet      decode points only: one row per sampled step
    report/            report.md, report.html, charts/
    .refcache/         float64 references and correctness verdicts shared by the run's points
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

JOURNAL = "journal.jsonl"
PLAN = "plan.json"
METADATA = "metadata.json"
RESULTS = "results.parquet"
SAMPLES = "samples.parquet"
STEPS = "steps.parquet"
REPORT = "report"
REFCACHE = ".refcache"


@dataclass(frozen=True)
class RunDir:
    """Paths of one run directory (nothing is created or read here)."""

    path: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL

    @property
    def plan(self) -> Path:
        return self.path / PLAN

    @property
    def metadata(self) -> Path:
        return self.path / METADATA

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def samples(self) -> Path:
        return self.path / SAMPLES

    @property
    def steps(self) -> Path:
        return self.path / STEPS

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def refcache(self) -> Path:
        return self.path / REFCACHE

    @property
    def name(self) -> str:
        return self.path.name

    def __str__(self) -> str:
        return str(self.path)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` whole or not at all: a temporary file in the same directory, fsynced, then
    renamed over it, so a reader never sees half a file."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
