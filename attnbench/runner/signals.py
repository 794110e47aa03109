"""Stopping a run cleanly on SIGINT (Ctrl-C), SIGTERM and SIGHUP.

While a run is :func:`stoppable`, each of these signals raises :class:`Stop` (a
KeyboardInterrupt, so Ctrl-C and ``kill`` take the same path): the sweep stops, the point in
flight is abandoned (its worker killed, nothing journaled for it), everything finished stays in
the journal. A journal append is a :func:`critical` section: a signal that arrives during it is
raised once the line is whole. While the tables are written (:func:`deferred`), signals are
noted, not raised, so a second Ctrl-C cannot leave a run without its Parquet files. The exit
status is ``128 + signal`` (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)


class Stop(KeyboardInterrupt):
    """The run was asked to stop by signal ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


_state: dict[str, object] = {"requested": None, "critical": False, "pending": False, "active": False, "process": False}


def own_process() -> None:
    """Called by the console entry point only: once a stop signal has stopped the run, the
    process is on its way out, so :func:`stoppable` leaves further stop signals ignored instead of
    restoring Python's handlers (a second Ctrl-C while the process exits must not turn exit 130
    into a death by signal). In-process callers (tests, notebooks) get their handlers back."""
    _state["process"] = True


def requested() -> int | None:
    """The first stop signal received since :func:`stoppable` began, or None."""
    got = _state["requested"]
    return got if isinstance(got, int) else None


def check() -> None:
    """Raise :class:`Stop` if a stop signal arrived inside :func:`stoppable` (a worker killed by
    the same signal as the run must not be journaled as a crash)."""
    got = requested()
    if _state["active"] and got is not None:
        raise Stop(got)


def exit_code(default: int = 130) -> int:
    """128 + the signal that stopped the run (``default`` if none did: a plain KeyboardInterrupt)."""
    got = requested()
    return 128 + got if got is not None else default


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    if _state["requested"] is None:
        _state["requested"] = signum
    if _state["critical"]:
        _state["pending"] = True
        return
    raise Stop(signum)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextmanager
def stoppable() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Stop` inside this block (main thread only)."""
    if not _main_thread():
        yield
        return
    _state.update(requested=None, critical=False, pending=False, active=True)
    old = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    try:
        yield
    finally:
        _state["active"] = False
        leaving = _state["process"] and requested() is not None
        for s, handler in old.items():
            signal.signal(s, signal.SIG_IGN if leaving else handler)


@contextmanager
def critical() -> Iterator[None]:
    """A signal arriving inside this block is raised when it ends (a journal line stays whole)."""
    was = _state["critical"]
    _state["critical"] = True
    try:
        yield
    finally:
        _state["critical"] = was
        if not was and _state["pending"]:
            _state["pending"] = False
            got = requested()
            raise Stop(got if got is not None else signal.SIGINT)


@contextmanager
def deferred(on_signal: Callable[[int], None] | None = None) -> Iterator[None]:
    """Signals inside this block are recorded (``on_signal`` told once), not raised: the tables
    are written whole however often Ctrl-C is pressed. If a stop is under way when the block ends
    (a signal came before or during it), signals stay noted until :func:`stoppable` ends: the
    run is unwinding to its exit, and :func:`check` raises the stop where the code asks."""
    if not _main_thread():
        yield
        return
    told = False

    def note(signum: int, _frame: FrameType | None) -> None:
        nonlocal told
        if _state["requested"] is None:
            _state["requested"] = signum
        if not told and on_signal is not None:
            told = True
            on_signal(signum)

    old = {s: signal.signal(s, note) for s in SIGNALS}
    try:
        yield
    finally:
        if requested() is None or not _state["active"]:
            for s, handler in old.items():
                signal.signal(s, handler)
