"""The run's journal: one JSON line per finished (point, round), appended and fsynced at once,
so an interrupted or crashed sweep keeps every point it finished and ``--resume`` can skip them.

A sharded run (Slurm) has one more journal per shard under ``journal.d/`` (one writer each, see
:mod:`attnbench.results.shards`); :func:`read` merges them after the main journal into the one
logical journal of the run.

An append that fails (full disk, file size limit, read-only file) is cut back to where the
file ended, so the lines before it stay whole, and raises :class:`StorageError`. A line torn by
a kill mid-write, or anything else that is not a record, is skipped by :func:`read` and named
in :meth:`JournalRead.warning`."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from attnbench.errors import UserError
from attnbench.point import Record
from attnbench.results.layout import RunDir, StorageError
from attnbench.results.shards import journal_files


@dataclass
class JournalRead:
    """The records of a journal, and the line numbers (1-based) it had to skip."""

    records: list[Record]
    bad_lines: list[int] = field(default_factory=list)
    torn_tail: bool = False  # the last line was cut off mid-write (a run killed while appending)
    shard_bad_lines: dict[str, list[int]] = field(default_factory=dict)  # shard journal name -> bad lines

    def warning(self, path: Path) -> str | None:
        """One line naming the skipped lines, or None."""
        if not self.bad_lines:
            return None
        shown = ", ".join(str(n) for n in self.bad_lines[:10]) + (" ..." if len(self.bad_lines) > 10 else "")
        what = "a torn last line" if self.torn_tail and len(self.bad_lines) == 1 else f"{len(self.bad_lines)} line(s)"
        return f"{path}: skipped {what} that are not records (line {shown})"


def _path(run_dir: Path | RunDir) -> Path:
    return (run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))).journal


def append(run_dir: Path | RunDir, record: Record) -> None:
    """Append one record durably (a torn last line, from a run killed mid-write, is closed
    first); on failure the file is cut back to its old length and StorageError is raised."""
    path = _path(run_dir)
    line = json.dumps(record.to_json()).encode("utf-8") + b"\n"
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StorageError.of(path, exc) from None
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        try:
            _write_all(fd, line)
            os.fsync(fd)
        except OSError as exc:
            # shrinking needs no space: the lines before this one stay whole (if even that fails,
            # the torn tail is skipped by read() and closed by the next append)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise StorageError.of(path, exc) from None
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """os.write until everything is written (a write near a size limit may be short)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def read(run_dir: Path | RunDir) -> JournalRead:
    """Every valid record of the main journal and then of each shard journal (a later record of
    the same point and round replaces an earlier one) and the lines that were not records."""
    by_id: dict[tuple[str, int], Record] = {}
    main = _read_file(_path(run_dir), by_id)
    for shard in journal_files(run_dir):
        part = _read_file(shard, by_id)
        if part.bad_lines:
            main.shard_bad_lines[shard.name] = part.bad_lines
    main.records = list(by_id.values())
    return main


def _read_file(path: Path, by_id: dict[tuple[str, int], Record]) -> JournalRead:
    """Add the records of one journal file to ``by_id``; its bad lines."""
    if not path.exists():
        return JournalRead([])
    bad: list[int] = []
    torn = False
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    for i, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = Record.from_json(json.loads(line))
        except (ValueError, TypeError, KeyError, RecursionError):  # JSONDecodeError is a ValueError
            bad.append(i)
            torn = torn or i == len(lines)
            continue
        by_id[(rec.point_id, rec.round)] = rec
    return JournalRead([], bad, torn)


def load(run_dir: Path | RunDir) -> list[Record]:
    """The valid records of the journal (see :func:`read` for the skipped lines)."""
    return read(run_dir).records
