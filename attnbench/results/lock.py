"""One writer per run directory: an exclusive lock held for the run's lifetime.

The lock is an advisory ``flock`` on ``RUN_DIR/.lock``, a file that also names its holder
(pid, host, start time, command) so that a second writer is told who holds it. The kernel drops
a ``flock`` when its holder dies, however it dies, so a lock file left by a killed run is stale
by construction: the next writer takes it over (and says so). The file descriptor is not
inherited (``O_CLOEXEC``), so the fork server and the workers never hold the lock.

A holder on this host that is gone but whose lock the kernel still reports held (an fd that
leaked into an orphan) is taken over as well: the file is replaced, which leaves the orphan
holding a lock on a file nobody opens any more.
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import json
import os
import shlex
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.errors import UserError
from attnbench.results.layout import RunDir


@dataclass
class RunLock:
    """A held lock; :meth:`release` (or process exit) gives it up. ``stale`` is the holder
    named by a lock file that was taken over (None when the file was new or released)."""

    path: Path
    fd: int | None
    stale: dict[str, Any] | None = None
    holder: dict[str, Any] = field(default_factory=dict)

    def release(self) -> None:
        """Remove the lock file, then drop the lock (in that order: a writer that opened the
        old file before the unlink finds it replaced and retries)."""
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):
                self.path.unlink()
        except OSError:
            pass  # a read-only directory: the file stays, and the next writer finds it unlocked
        finally:
            os.close(self.fd)
            self.fd = None

    def stale_note(self) -> str | None:
        """One line about the stale lock taken over, or None."""
        if not self.stale:
            return None
        return f"{self.path}: took over a stale lock of {describe(self.stale)} (no longer running)"


def describe(holder: dict[str, Any]) -> str:
    """``attnbench pid 123 on host since ...`` from a lock file's contents."""
    pid = holder.get("pid", "?")
    host = holder.get("host", "?")
    since = holder.get("started")
    return f"attnbench pid {pid} on {host}" + (f" since {since}" if since else "")


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


def _read_holder(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        doc = json.loads(raw.decode("utf-8", errors="replace")) if raw.strip() else {}
    except (OSError, ValueError):
        return {"pid": "?", "host": "?"}
    return doc if isinstance(doc, dict) else {"pid": "?", "host": "?"}


def _gone(holder: dict[str, Any]) -> bool:
    """The holder is a process of this host that no longer runs (a zombie counts as gone)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    if not isinstance(pid, int) or pid <= 0 or pid == os.getpid():
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X")
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False


def acquire(run_dir: RunDir | Path, label: str | None = None) -> RunLock:
    """Take the run directory's lock or raise a one-line UserError naming its holder.

    ``label`` names the directory in messages (default: its path)."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    path = rd.lock
    what = label or f"run directory {str(rd.path)!r}"
    for _attempt in range(20):  # a retry per file replaced under us; more means something is fighting
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise UserError(f"{what}: cannot create its lock file ({exc.strerror or exc})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise UserError(f"{what}: cannot lock {path.name} ({exc.strerror or exc})") from None
            if _gone(holder):  # held by an orphan that inherited it: replace the file
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as uexc:
                    raise UserError(f"{what}: stale lock {path} cannot be removed ({uexc.strerror})") from None
                continue
            raise UserError(
                f"{what}: in use by {describe(holder)} ({path}); wait for it to finish or stop it first"
            ) from None
        if not _same_file(fd, path):  # released and removed between our open and our flock
            os.close(fd)
            continue
        previous = _read_holder(fd)
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(shlex.quote(a) for a in sys.argv),
        }
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        except OSError:
            pass  # a full disk: the flock alone still excludes other writers
        lock = RunLock(path, fd, previous or None, holder)
        atexit.register(lock.release)  # an exception that ends the process still removes the file
        return lock
    raise UserError(f"{what}: its lock file {path} keeps being replaced; is another attnbench fighting over it?")
