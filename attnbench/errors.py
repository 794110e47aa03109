"""One user-facing error type, caught once by the CLI (exit code 2, one line, no traceback)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake the user can fix: bad suite, bad option, unknown name.

    The message is one line that names the field, the value and what was expected.
    """


EXIT_USAGE = 2
