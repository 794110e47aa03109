"""Shards of a run: the part of the run directory that Slurm jobs (and only they) write.

::

    shards.json              the submissions: each shard's id, Slurm job id and (point, round) items;
                             written by the submitting process only
    journal.d/
      shard-<n>-<k>.jsonl    shard k of submission n: its journal, one writer (the shard's process,
                             holding an exclusive flock on it while it runs)
      shard-<n>-<k>.json     the shard's status: state, host, job id, pid, device, timestamps

A shard never writes ``journal.jsonl``, ``plan.json``, ``metadata.json`` or the tables: those
belong to the submitting process (and its run-directory lock). :func:`journal_files` lists the
shard journals in the order :func:`attnbench.results.journal.read` merges them (after the main
journal; a later record of the same point and round replaces an earlier one).

No pandas or torch here: the CLI's ``status`` command and the shard's entry import it.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from attnbench.errors import UserError
from attnbench.point import Record
from attnbench.results.layout import RunDir, write_atomic

SHARD_DIR = "journal.d"
MANIFEST = "shards.json"
MANIFEST_VERSION = 1
_NAME = re.compile(r"^shard-(\d+)-(\d+)\.jsonl$")

# A shard's own states (its status file); Slurm's states are separate (attnbench status shows both).
RUNNING = "running"
FINISHED = "finished"  # every item ran (a point that failed is a row, not a failed shard)
STOPPED = "stopped"  # SIGTERM (scancel, preemption, time limit): items in flight were not journaled
FAILED = "failed"  # the shard's own code raised; the message is in the status file
ENDED_STATES = (FINISHED, STOPPED, FAILED)


def _rd(run_dir: Path | RunDir) -> RunDir:
    return run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))


def shard_id(submission: int, index: int) -> str:
    """``"2-0"``: shard 0 of the second submission."""
    return f"{submission}-{index}"


def parse_shard_id(text: str) -> tuple[int, int]:
    """Inverse of :func:`shard_id`; ValueError if ``text`` is not one."""
    a, _, b = text.partition("-")
    if not (a.isdigit() and b.isdigit()):
        raise ValueError(f"not a shard id: {text!r}")
    return int(a), int(b)


def shard_dir(run_dir: Path | RunDir) -> Path:
    return _rd(run_dir).path / SHARD_DIR


def journal_path(run_dir: Path | RunDir, sid: str) -> Path:
    return shard_dir(run_dir) / f"shard-{sid}.jsonl"


def status_path(run_dir: Path | RunDir, sid: str) -> Path:
    return shard_dir(run_dir) / f"shard-{sid}.json"


def manifest_path(run_dir: Path | RunDir) -> Path:
    return _rd(run_dir).path / MANIFEST


def journal_files(run_dir: Path | RunDir) -> list[Path]:
    """The shard journals, in submission then shard order (the order records are merged in)."""
    d = shard_dir(run_dir)
    if not d.is_dir():
        return []
    found = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m:
            found.append(((int(m.group(1)), int(m.group(2))), p))
    return [p for _key, p in sorted(found)]


# --- the submissions (written by the submitting process) ------------------------------------


@dataclass
class ShardEntry:
    """One shard of a submission: ``items`` are its (point_id, round) pairs, every round of a point
    in the same shard (so a point is measured on one machine and one device model)."""

    id: str
    job_id: str | None
    items: list[tuple[str, int]]

    @property
    def point_ids(self) -> list[str]:
        return list(dict.fromkeys(pid for pid, _r in self.items))


@dataclass
class Submission:
    """One ``sbatch`` of a job array: the run's first, or one ``--resume`` made."""

    n: int
    submitted: str
    executor: dict[str, Any]
    shards: list[ShardEntry] = field(default_factory=list)


@dataclass
class Manifest:
    submissions: list[Submission] = field(default_factory=list)

    @property
    def shards(self) -> list[ShardEntry]:
        return [s for sub in self.submissions for s in sub.shards]

    def next_submission(self) -> int:
        return 1 + max((s.n for s in self.submissions), default=0)


def read_manifest(run_dir: Path | RunDir) -> Manifest:
    """The run's submissions (empty for a run that never used shards)."""
    path = manifest_path(run_dir)
    if not path.exists():
        return Manifest()
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        subs = [
            Submission(
                n=int(s["n"]),
                submitted=str(s["submitted"]),
                executor=dict(s.get("executor") or {}),
                shards=[
                    ShardEntry(str(e["id"]), e.get("job_id"), [(str(p), int(r)) for p, r in e["items"]])
                    for e in s["shards"]
                ],
            )
            for s in doc["submissions"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{path}: not a readable shard manifest ({type(exc).__name__}: {exc})") from None
    return Manifest(subs)


def write_manifest(run_dir: Path | RunDir, manifest: Manifest) -> None:
    doc = {"version": MANIFEST_VERSION, "submissions": [asdict(s) for s in manifest.submissions]}
    write_atomic(manifest_path(run_dir), json.dumps(doc, indent=1) + "\n")


# --- a shard's status file and journal (written by the shard only) --------------------------


def read_status(run_dir: Path | RunDir, sid: str) -> dict[str, Any]:
    """The shard's status file, or {} if it never started (or the file is unreadable)."""
    try:
        doc = json.loads(status_path(run_dir, sid).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def write_status(run_dir: Path | RunDir, sid: str, doc: dict[str, Any]) -> None:
    path = status_path(run_dir, sid)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=1, default=str) + "\n")


class ShardBusy(UserError):
    """Another live process holds this shard's journal."""


class ShardJournal:
    """The one writer of a shard's journal: opened with an exclusive, non-blocking flock held until
    :meth:`close`, so a second process given the same shard (a duplicate job, a requeue racing a
    zombie) fails at once instead of interleaving lines. flock is per open file description:
    each opener, even in one process, is a separate writer."""

    def __init__(self, run_dir: Path | RunDir, sid: str) -> None:
        self.path = journal_path(run_dir, sid)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f: IO[bytes] | None = open(self.path, "ab")  # noqa: SIM115 (held open while the shard runs)
        self.locked = True
        try:
            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._f.close()
            self._f = None
            raise ShardBusy(f"{self.path}: another process is writing this shard's journal") from None
        except OSError:
            # a filesystem without flock (Lustre mounted without -o flock): shard ids are unique per
            # submission, so one writer still holds in normal operation; the status file says so
            self.locked = False
        self.writer = f"{socket.gethostname()}:{os.getpid()}"

    def done(self) -> set[tuple[str, int]]:
        """(point_id, round) pairs already in this journal (a requeued shard skips them)."""
        out: set[tuple[str, int]] = set()
        for rec in read_records(self.path):
            out.add((rec.point_id, rec.round))
        return out

    def append(self, record: Record) -> None:
        """Append one record durably; a torn last line (a killed earlier instance) is closed first."""
        if self._f is None:
            raise ValueError(f"{self.path}: shard journal is closed")
        size = os.fstat(self._f.fileno()).st_size
        torn = False
        if size:
            with open(self.path, "rb") as r:
                r.seek(size - 1)
                torn = r.read(1) != b"\n"
        line = ("\n" if torn else "") + json.dumps(record.to_json()) + "\n"
        self._f.write(line.encode("utf-8"))
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        if self._f is not None:
            self._f.close()  # releases the flock
            self._f = None

    def __enter__(self) -> ShardJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: Path) -> list[Record]:
    """The complete, valid records of one journal file in order (a torn or bad line is skipped;
    :func:`attnbench.results.journal.read` reports such lines)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    out = []
    for line in text.split("\n"):
        if not line.strip():
            continue
        try:
            out.append(Record.from_json(json.loads(line)))
        except (ValueError, TypeError, KeyError):
            continue
    return out


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
