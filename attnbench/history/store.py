"""The history database: where it lives, opening it, and its versioned schema.

One DuckDB file (embedded, no server). Where: ``--db PATH``, else ``$ATTNBENCH_HISTORY``, else
``$XDG_DATA_HOME/attnbench/history.duckdb`` (``~/.local/share/attnbench/history.duckdb``).

Tables (``SCHEMA_VERSION`` 1)::

    meta     key, value: schema_version, created_by
    runs     one row per ingested run: run_key (surrogate), run_id (stable identity, see
             identity.py), started, finished, ingested, git commit and branch, suite name,
             env_key (the comparability class, identity.py), env (JSON fingerprint),
             device, threads, command, gate (the suite's [gate] table, JSON), source path,
             digest (of the contents, to tell a re-ingest from an update)
    points   one row per point per run: the query columns of results.parquet (impl, pass,
             shape, status, correct, times, peak memory) plus value_ms (the point's value in
             its series: median of its fast rounds, see ingestion.py) and the rest of the row as
             JSON in ``extra``
    samples  run_key, point_id, sample, time_ms (32-bit float), round: every timing sample

A file with another schema_version, or a DuckDB file that is not an attnbench history, is
refused with one line; so is a file DuckDB cannot open.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from attnbench.errors import UserError

SCHEMA_VERSION = 1
ENV_VAR = "ATTNBENCH_HISTORY"
EXTRA = "history"  # the pyproject extra that brings duckdb
# Another process holding the write lock (a concurrent ingest): wait this long before giving up.
LOCK_WAIT_S = 30.0

SCHEMA = [
    "CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR)",
    "CREATE SEQUENCE run_key_seq START 1",
    """CREATE TABLE runs (
        run_key INTEGER PRIMARY KEY,
        run_id VARCHAR UNIQUE NOT NULL,
        started TIMESTAMP,  -- UTC
        finished TIMESTAMP,
        ingested TIMESTAMP,
        git_commit VARCHAR,
        branch VARCHAR,
        suite VARCHAR NOT NULL,
        env_key VARCHAR NOT NULL,
        env VARCHAR,
        device VARCHAR,
        threads INTEGER,
        command VARCHAR,
        gate VARCHAR,
        source VARCHAR,
        digest VARCHAR,
        n_points INTEGER
    )""",
    """CREATE TABLE points (
        run_key INTEGER NOT NULL,
        point_id VARCHAR NOT NULL,
        impl VARCHAR,
        pass VARCHAR,
        causal BOOLEAN,
        dtype VARCHAR,
        B INTEGER, H INTEGER, N INTEGER, D INTEGER, M INTEGER,
        status VARCHAR,
        error VARCHAR,
        correct BOOLEAN,
        time_ms_median DOUBLE,
        time_ms_min DOUBLE,
        n_samples INTEGER,
        peak_mib DOUBLE,
        value_ms DOUBLE,
        rounds_kept INTEGER,
        rounds_all INTEGER,
        extra VARCHAR
    )""",
    """CREATE TABLE samples (
        run_key INTEGER NOT NULL,
        point_id VARCHAR NOT NULL,
        sample INTEGER,
        time_ms FLOAT,  -- 32-bit: 7 significant digits, far finer than any timer's repeatability; half the size
        round SMALLINT
    )""",
]


def default_path() -> Path:
    """``$ATTNBENCH_HISTORY``, else the user's data directory (XDG)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "attnbench" / "history.duckdb"


def resolve(db: Path | str | None) -> Path:
    return Path(db).expanduser() if db else default_path()


def import_duckdb() -> Any:
    """The duckdb module, or a one-line error naming the extra that installs it."""
    try:
        import duckdb  # optional dependency: the history extra
    except ImportError:
        raise UserError(
            f"the history database needs duckdb, which is not installed: pip install 'attnbench[{EXTRA}]'"
        ) from None
    return duckdb


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc).lower()
    return "lock" in text and ("conflicting" in text or "could not set" in text)


def connect(db: Path | str | None = None, write: bool = False) -> Any:
    """An open connection to the history at ``db`` (see :func:`resolve`), schema checked.

    ``write``: create the file and schema if missing, and take the write lock (waiting up to
    LOCK_WAIT_S for another writer). Read-only opens of a missing file are a one-line error.
    """
    duckdb = import_duckdb()
    path = resolve(db)
    if not write and not path.exists():
        raise UserError(f"no history database at {path}; add runs with `attnbench history add RUN_DIR`")
    if write:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"history database {path}: cannot create its directory ({exc})") from None
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            con = duckdb.connect(str(path), read_only=not write)
            break
        except duckdb.Error as exc:
            if _is_lock_error(exc) and time.monotonic() < deadline:
                time.sleep(0.5)
                continue
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if _is_lock_error(exc):
                raise UserError(f"history database {path} is in use by another process: {first}") from None
            raise UserError(f"history database {path}: cannot open it ({first})") from None
    try:
        _check_schema(con, path, write)
    except BaseException:
        con.close()
        raise
    return con


def _tables(con: Any) -> set[str]:
    rows = con.execute("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main'").fetchall()
    return {str(r[0]) for r in rows}


def _check_schema(con: Any, path: Path, write: bool) -> None:
    tables = _tables(con)
    if not tables and write:
        con.execute("BEGIN TRANSACTION")
        for stmt in SCHEMA:
            con.execute(stmt)
        con.execute("INSERT INTO meta VALUES ('schema_version', ?), ('created_by', 'attnbench')", [str(SCHEMA_VERSION)])
        con.execute("COMMIT")
        return
    if "meta" not in tables:
        what = ", ".join(sorted(tables)) or "no tables"
        raise UserError(f"{path}: not an attnbench history database (it has {what}); pass another --db")
    row = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    version = row[0] if row else None
    if version != str(SCHEMA_VERSION):
        raise UserError(
            f"{path}: history schema_version {version!r} is not one this attnbench reads (expected {SCHEMA_VERSION})"
        )
    missing = {"runs", "points", "samples"} - tables
    if missing:
        raise UserError(f"{path}: history database is missing table(s) {', '.join(sorted(missing))}")
