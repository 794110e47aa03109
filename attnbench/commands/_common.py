"""Helpers shared by the commands: user errors become one line on stderr and an exit code (2
for a usage mistake; 74 when a file could not be written: full disk, read-only file system)."""

from __future__ import annotations

import errno
import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from attnbench.errors import EXIT_USAGE, UserError
from attnbench.text import terminal_safe

F = TypeVar("F", bound=Callable[..., Any])
# sysexits.h EX_IOERR; the same value as attnbench.results.layout.EXIT_STORAGE (not imported
# here: that package loads pandas, and this module is on the CLI's start-up path)
EXIT_IO = 74
# OSErrors of the machine, not of attnbench: a full disk or a failing device (exit 74) ...
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EIO}
# ... or a path the user named that cannot be used: missing, a directory, no permission (exit 2).
_PATH_ERRNOS = {
    errno.EACCES, errno.EPERM, errno.ENOENT, errno.EISDIR, errno.ENOTDIR, errno.ENAMETOOLONG, errno.ELOOP,
    errno.EEXIST, errno.EBUSY,
}  # fmt: skip


def error_line(exc: BaseException) -> str:
    """``error: <message>`` on one line, with nothing in it that a terminal would act on (the
    message may quote an impl name, a path or an exception text from a plugin)."""
    return f"error: {terminal_safe(exc)}"


def user_errors(fn: F) -> F:
    """Turn a UserError raised by ``fn`` into ``error: <message>`` on stderr and its exit code
    (``exit_code`` attribute, default 2); an OSError into one line too: exit code 74 for a full
    disk, a read-only file system or an I/O error, 2 for a path that is missing, a directory or
    not permitted. Other OSErrors are bugs and keep their traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(error_line(exc), file=sys.stderr)
            raise typer.Exit(int(getattr(exc, "exit_code", EXIT_USAGE))) from None
        except OSError as exc:
            if exc.errno not in _STORAGE_ERRNOS | _PATH_ERRNOS:  # a bug, not the machine: keep its traceback
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            print(f"error: {terminal_safe(where)}{terminal_safe(exc.strerror or exc)}", file=sys.stderr)
            raise typer.Exit(EXIT_IO if exc.errno in _STORAGE_ERRNOS else EXIT_USAGE) from None

    return wrapper  # type: ignore[return-value]


def split_list(values: list[str] | None) -> list[str]:
    """Options given repeatedly and/or comma-separated: ["a,b", "c"] -> ["a", "b", "c"]."""
    out: list[str] = []
    for v in values or []:
        out.extend(s.strip() for s in v.split(",") if s.strip())
    return out


DEVICE_CHOICES = ("auto", "cpu", "cuda")
DEVICE_METAVAR = "|".join(DEVICE_CHOICES)  # the choices, shown in --help; checked by us: one-line errors


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of ``choices``, else a one-line UserError naming the option."""
    if value not in choices:
        raise UserError(f"{option} {value!r}: expected one of {', '.join(choices)}")
    return value


def safe(value: Any) -> str:
    """A string from a result or a plugin, fit for a rich renderable: one line without terminal
    escapes (attnbench.text.terminal_safe), then rich markup escaped."""
    from rich.markup import escape  # deferred: start-up time

    return escape(terminal_safe(value))
