"""Child processes die with the run: no worker, fork server or resource tracker outlives a main
process killed with SIGKILL.

Two mechanisms, because neither covers every case alone:

* ``PR_SET_PDEATHSIG`` (Linux): the kernel sends SIGKILL to a process when its parent dies.
  The fork server sets it when it starts (its parent is the main process) and so does each
  worker (its parent is the fork server). Killing the main process then kills the server,
  which kills the worker, whatever either is doing, even inside C code holding the GIL.
* A watchdog thread in each worker on its result pipe: the main process holds the only read
  end, and on Linux the write end polls as an error once no reader is left. This also covers a
  fork server that outlives the main process: multiprocessing keeps a server alive while any
  worker holds its "alive" pipe, and a hanging worker holds it.

The resource tracker exits by itself once every holder of its pipe (main, server, workers) is
gone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import select
import signal
import sys
import threading

_PR_SET_PDEATHSIG = 1


def die_with_parent() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies; exit at once if the parent
    is already gone. False where prctl is unavailable (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)
    return True


def _watch(fd: int) -> None:
    poller = select.poll()
    poller.register(fd, 0)  # POLLERR, POLLHUP and POLLNVAL are always reported
    while True:
        try:
            events = poller.poll()
        except InterruptedError:
            continue
        for _fd, ev in events:
            if ev & select.POLLNVAL:  # our own end was closed: the worker is finishing
                return
            if ev & (select.POLLERR | select.POLLHUP):  # no reader left: the main process is gone
                os.kill(os.getpid(), signal.SIGKILL)
        return


def watch_result_pipe(conn: object) -> None:
    """Start a daemon thread that kills this worker once nobody reads ``conn`` (a
    multiprocessing Connection, the write end of the worker's result pipe)."""
    fileno = getattr(conn, "fileno", None)
    if fileno is None:
        return
    try:
        fd = fileno()
    except OSError:
        return
    threading.Thread(target=_watch, args=(fd,), name="attnbench-lifeline", daemon=True).start()
