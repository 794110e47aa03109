"""Run history: every run remembered in an embedded DuckDB database, series across commits,
change points (E-Divisive means), a gate over history and a trend page. See docs/history.md.

Public entry point for the runner (``attnbench run --history``)::

    from attnbench.history import ingest
    summary = ingest(run_dir)            # or ingest(run_dir, db_path)
    print(summary)                       # one line: added / already in the history / updated

Nothing heavy is imported here: duckdb, pandas and numpy load when a function runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attnbench.history.ingestion import IngestSummary


def ingest(run_dir: Path | str, db_path: Path | str | None = None) -> IngestSummary:
    """Add the finished run in ``run_dir`` to the history (default database: see docs/history.md).

    Idempotent; one transaction. Raises :class:`attnbench.errors.UserError` (one line) for a
    missing, unfinished, corrupt or foreign run directory, an unusable database, or when duckdb
    (the ``history`` extra) is not installed.
    """
    from attnbench.history.ingestion import ingest as _ingest  # deferred: numpy, pandas (see the module doc)

    return _ingest(run_dir, db_path)


__all__ = ["ingest"]
