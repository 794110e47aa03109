"""Issue 13, item 5: one writer per run directory. The lock (attnbench.results.lock) and a second
`attnbench run` on a directory that is being written."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from integrity_helpers import (
    HOSTILE_SITE,
    cli,
    descendants,
    journal_lines,
    kill_all,
    records,
    start,
    wait_for,
    write_suite,
)

HOLD = """
import sys, time
from attnbench.results.lock import acquire
lock = acquire(sys.argv[1])
print("held", flush=True)
time.sleep(600)
"""


def _holder(path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_is_refused_with_the_holder_named(tmp_path):
    from attnbench.errors import UserError
    from attnbench.results.lock import acquire

    holder = _holder(tmp_path)
    try:
        with pytest.raises(UserError) as info:
            acquire(tmp_path)
        msg = str(info.value)
        assert f"in use by attnbench pid {holder.pid} on {socket.gethostname()}" in msg and "\n" not in msg
    finally:
        holder.kill()
        holder.wait()
    lock = acquire(tmp_path)  # the kernel dropped the dead holder's flock: taken over
    assert lock.stale is not None and lock.stale["pid"] == holder.pid
    assert f"took over a stale lock of attnbench pid {holder.pid}" in (lock.stale_note() or "")
    doc = json.loads((tmp_path / ".lock").read_text())
    assert doc["pid"] == os.getpid() and doc["host"] == socket.gethostname()
    lock.release()
    assert not (tmp_path / ".lock").exists()
    again = acquire(tmp_path)  # released cleanly: nothing stale
    assert again.stale is None
    again.release()


def test_lock_held_by_an_orphan_of_a_dead_writer_is_taken_over(tmp_path):
    """The flock is still held (an fd that leaked into a surviving process) but the pid the file
    names is gone: the file is replaced and the new writer holds a lock on the new one."""
    from attnbench.results.lock import acquire

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    code = (
        "import fcntl, json, os, socket, sys, time\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX)\n"
        "os.write(fd, json.dumps({'pid': int(sys.argv[2]), 'host': socket.gethostname()}).encode())\n"
        "print('held', flush=True)\n"
        "time.sleep(600)\n"
    )
    orphan = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path / ".lock"), str(dead.pid)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert orphan.stdout is not None and orphan.stdout.readline().strip() == "held"
        lock = acquire(tmp_path)
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
        lock.release()
    finally:
        orphan.kill()
        orphan.wait()


def test_two_writers_on_one_run_directory(tmp_path):
    """A second `run --resume DIR` (or `run --out DIR`) while the first runs is refused in one
    line naming the holder; after the first is killed with SIGKILL, --resume takes the stale
    lock over and completes the run without a duplicate."""
    suite = write_suite(tmp_path / "t.toml", ["linear-chunked", "sleepy", "softmax"], timeout=25)
    out = tmp_path / "run"
    first = start("run", "--suite", str(suite), "--out", str(out), "--no-report", site=HOSTILE_SITE)
    try:
        assert wait_for(lambda: len(journal_lines(out)) >= 1 or first.poll() is not None), "no point finished"
        assert first.poll() is None
        for args in (["--resume", str(out)], ["--suite", str(suite), "--out", str(out)]):
            res = cli("run", *args, "--no-report", site=HOSTILE_SITE)
            assert res.returncode == 2, res.stderr[-2000:]
            err = res.stderr.strip()
            assert err.startswith("error:") and "\n" not in err and "Traceback" not in err, err
            assert f"in use by attnbench pid {first.pid} on {socket.gethostname()}" in err, err
        below = descendants(first.pid)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        assert wait_for(lambda: not any(os.path.exists(f"/proc/{p}/cmdline") and descendants(p) for p in below), 15)
    finally:
        kill_all([first.pid])
    done = len(records(out))
    res = cli("run", "--resume", str(out), "--no-report", site=HOSTILE_SITE)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"took over a stale lock of attnbench pid {first.pid}" in res.stderr
    rows = records(out)
    assert len(rows) == 3 and len({r["point_id"] for r in rows}) == 3 and len(rows) >= done
    assert {r["impl"]: r["status"] for r in rows} == {"linear-chunked": "ok", "sleepy": "timeout", "softmax": "ok"}
    assert not (out / ".lock").exists()
    time.sleep(0)  # nothing left running: the test's own cleanup found no process to kill
