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
    .lock              the running writer's pid and host, flock-ed for the run's lifetime (lock.py)

Every file but the journal is written whole or not at all (:func:`write_atomic`); the journal
is appended a line at a time and a failed append is cut back (:mod:`.journal`). A write that
fails is a :class:`StorageError`: one line, exit code 74, everything finished kept.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from attnbench.errors import UserError

JOURNAL = "journal.jsonl"
PLAN = "plan.json"
METADATA = "metadata.json"
RESULTS = "results.parquet"
SAMPLES = "samples.parquet"
STEPS = "steps.parquet"
REPORT = "report"
REFCACHE = ".refcache"
LOCK = ".lock"
# sysexits.h EX_IOERR: a file of the run could not be written (full disk, read-only directory)
EXIT_STORAGE = 74


class StorageError(UserError):
    """A file of the run could not be written; the message is one line naming the file and
    why, and everything finished before it is kept (``attnbench run --resume`` continues)."""

    exit_code = EXIT_STORAGE

    @classmethod
    def of(cls, path: Path, exc: OSError | Exception) -> StorageError:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else " ".join(str(exc).split())
        return cls(f"{path}: cannot be written ({why})")


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
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def name(self) -> str:
        return self.path.name

    def __str__(self) -> str:
        return str(self.path)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` whole or not at all: a temporary file in the same directory, fsynced, then
    renamed over it, so a reader never sees half a file. A failed write (full disk, read-only
    directory, file size limit) leaves ``path`` as it was and raises :class:`StorageError`."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StorageError.of(path, exc) from None
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide the run's files from other users
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StorageError.of(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temps(run_dir: RunDir) -> None:
    """Delete temporary files left by writes that were killed before their rename (only the
    lock holder calls this, so no write of another process is in flight)."""
    for tmp in run_dir.path.glob(".*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()
