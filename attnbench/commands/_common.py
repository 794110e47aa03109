"""Helpers shared by the commands: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from attnbench.errors import EXIT_USAGE, UserError

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(fn: F) -> F:
    """Turn a UserError raised by ``fn`` into ``error: <message>`` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(EXIT_USAGE) from None

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

    from attnbench.text import terminal_safe

    return escape(terminal_safe(value))
