"""Child-process plumbing in one place: the fork server that preloads torch, starting a child
with a pipe, waiting for its messages under a deadline, and naming how it died.

Workers are forked from a multiprocessing fork server that imported torch and the measurement
code ahead of time (``attnbench.runner.worker``), so a point costs a fork, not an interpreter
start, and still gets a clean process. The main process never imports CUDA.
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

PRELOAD = ["attnbench.runner.worker"]
# After its result arrived, how long a worker may take to exit before it is killed.
EXIT_GRACE_S = 2.0

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
        stop()


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


@dataclass
class ChildResult:
    """What a child sent (``messages``, in order), how it ended, and when."""

    messages: list[Any] = field(default_factory=list)
    exitcode: int | None = None
    timed_out: bool = False
    elapsed_s: float = 0.0


def _call(target: str, *args: Any) -> None:
    """Child entry: ``target`` is ``module:function``; the fork server preloaded the module, so
    the parent never imports it (nor torch's heavy start-up with it)."""
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
    proc = ctx.Process(target=_call, args=(target, *args, send), daemon=True)
    started = time.perf_counter()
    with _main_not_reimported():
        proc.start()
    send.close()
    out = ChildResult()
    deadline = started + deadline_s
    try:
        while True:
            left = deadline - time.perf_counter()
            if left <= 0 or not recv.poll(left):
                out.timed_out = proc.is_alive()
                break
            try:
                msg = recv.recv()
            except EOFError:  # the child died without a (final) message
                break
            out.messages.append(msg)
            if is_final(msg):
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
    return out
