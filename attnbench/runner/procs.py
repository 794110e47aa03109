"""Child-process plumbing in one place: the fork server that preloads torch, starting a child
with a pipe, waiting for its messages under a deadline, and naming how it died.

Workers are forked from a multiprocessing fork server that imported torch and the measurement
code ahead of time (``attnbench.runner.worker``), so a point costs a fork, not an interpreter
start, and still gets a clean process. The main process never imports CUDA. The server and the
workers die with the main process (:mod:`attnbench.runner.lifeline`).
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing as mp
import multiprocessing.forkserver as forkserver
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from attnbench.runner.lifeline import die_with_parent, watch_result_pipe

# server_init first: the server is tied to the main process before the slow torch import.
PRELOAD = ["attnbench.runner.server_init", "attnbench.runner.worker"]
# After its result arrived, how long a worker may take to exit before it is killed.
EXIT_GRACE_S = 2.0
# Tries to reach a fork server before giving up (one that died is replaced between tries).
START_ATTEMPTS = 3

_ctx: Any = None


def context() -> Any:
    """The fork-server multiprocessing context (created once, preloading the worker module)."""
    global _ctx
    if _ctx is None:
        _ctx = mp.get_context("forkserver")
        _ctx.set_forkserver_preload(PRELOAD)
    return _ctx


def restart_forkserver() -> None:
    """Start a fresh fork server for the next worker. Every worker forked from one server shares
    its memory layout; a layout that happens to be slow for one point (a whole run of linear-
    chunked fwd at 2-3x, all of its rounds alike) is then one draw per run. A server per round
    makes it one draw per round, which the pooled samples show as spread."""
    stop = getattr(forkserver._forkserver, "_stop", None)  # noqa: SLF001 (stdlib private, present since 3.8)
    if stop is not None:
        try:
            stop()
        except (OSError, ChildProcessError):  # already gone (and reaped): forget it, start afresh
            server: Any = forkserver._forkserver  # noqa: SLF001
            server._forkserver_pid = server._forkserver_alive_fd = server._forkserver_address = None


@contextlib.contextmanager
def _main_not_reimported() -> Iterator[None]:
    """While a child starts, hide the main module's file and spec from multiprocessing: it would
    otherwise re-import the parent's main module in every worker (the attnbench script, hence
    the CLI and typer: 0.04 s of CPU per point, 0.26 s of wall time on a loaded 2-core machine).
    The targets are ``module:function`` names, never ``__main__`` objects."""
    main = sys.modules.get("__main__")
    saved: dict[str, Any] = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__dict__["__spec__"] = None
        yield
    finally:
        if main is not None:
            main.__dict__.pop("__spec__", None)
            main.__dict__.update(saved)


def signal_name(code: int) -> str:
    """``SIGKILL`` for exit code -9."""
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def server_pid() -> int | None:
    """The pid of the current fork server, or None before one was started."""
    pid = getattr(forkserver._forkserver, "_forkserver_pid", None)  # noqa: SLF001 (stdlib private, 3.4+)
    return pid if isinstance(pid, int) else None


def server_alive(pid: int | None) -> bool:
    """Whether fork server ``pid`` still runs (without reaping it: multiprocessing does that
    when it starts the next one)."""
    if pid is None:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False
    except (OSError, IndexError):
        return True  # no /proc: assume alive


@dataclass
class ChildResult:
    """What a child sent (``messages``, in order), how it ended, and when. ``server_lost``: the
    fork server the child came from died while it ran (the child died with it; not the point's
    fault)."""

    messages: list[Any] = field(default_factory=list)
    exitcode: int | None = None
    timed_out: bool = False
    elapsed_s: float = 0.0
    server_lost: bool = False


def _call(target: str, *args: Any) -> None:
    """Child entry: ``target`` is ``module:function``; the fork server preloaded the module, so
    the parent never imports it (nor torch's heavy start-up with it). The child dies with the
    server and with the main process (its last argument is the result pipe the main reads)."""
    die_with_parent()
    if args:
        watch_result_pipe(args[-1])
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(*args)


def run_child(
    target: str,
    args: tuple[Any, ...],
    deadline_s: float,
    *,
    is_final: Callable[[Any], bool] = lambda _msg: True,
    extend_s: Callable[[Any], float | None] = lambda _msg: None,
) -> ChildResult:
    """Run ``target(*args, conn)`` (``module:function``) in a forked worker and collect what it sends until a message
    ``is_final`` or the deadline passes; ``extend_s(msg)`` may set a new deadline (seconds from
    that message) for what comes after it. A worker past its deadline is killed at once."""
    ctx = context()
    recv, send = ctx.Pipe(duplex=False)
    started = time.perf_counter()
    for attempt in range(START_ATTEMPTS):
        proc = ctx.Process(target=_call, args=(target, *args, send), daemon=True)
        try:
            with _main_not_reimported():
                proc.start()
            break
        except (OSError, EOFError):  # the fork server died under us: start a fresh one
            if attempt == START_ATTEMPTS - 1:
                recv.close()
                send.close()
                raise
            restart_forkserver()
    server = server_pid()
    send.close()
    out = ChildResult()
    finished = False
    deadline = started + deadline_s
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or not recv.poll(left):
                out.timed_out = proc.is_alive()
                break
            try:
                msg = recv.recv()
            except (EOFError, OSError):  # the child died without a (final) message
                break
            out.messages.append(msg)
            if is_final(msg):
                finished = True
                break
            more = extend_s(msg)
            if more is not None:
                deadline = time.perf_counter() + more
        if not out.timed_out:
            proc.join(timeout=EXIT_GRACE_S)
    except BaseException:
        proc.kill()
        proc.join()
        raise
    finally:
        recv.close()
    if proc.is_alive():
        proc.kill()
        proc.join()
    out.exitcode = proc.exitcode
    out.elapsed_s = time.perf_counter() - started
    out.server_lost = not finished and not out.timed_out and not server_alive(server)
    return out
