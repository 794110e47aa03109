"""The run's tables: the journal's records as tidy DataFrames (one row per point, a long table of
samples, a long table of decode steps), written as Parquet and read back. Reports, comparisons
and exports read runs only through :func:`load_run`."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from attnbench.errors import UserError
from attnbench.point import Record, TimerConfig
from attnbench.results import journal
from attnbench.results.layout import RunDir, write_atomic
from attnbench.results.metadata import read_metadata
from attnbench.results.rounds import pool
from attnbench.results.schema import COLUMNS, STEP_COLUMNS

SAMPLE_COLUMNS = ["point_id", "sample", "time_ms", "round"]


def records_to_frames(
    records: list[Record], timing: Mapping[str, Any] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results DataFrame, samples DataFrame) from journal records (rounds pooled; ``timing``,
    the run's ``[timing]`` table from its metadata, gives the noise target pooled rounds meet)."""
    pooled = pool(records, TimerConfig.from_timing(timing) if timing else None)
    df = pd.DataFrame([{k: v for k, v in rec.row.items() if k != "traceback"} for rec in pooled])
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = None
    front = [c for c in COLUMNS if c in df.columns]
    df = df[front + [c for c in df.columns if c not in COLUMNS]]
    samples = pd.DataFrame(
        [
            {"point_id": rec.point_id, "sample": i, "time_ms": t, "round": rnd}
            for rec in pooled
            for i, (t, rnd) in enumerate(zip(rec.samples, rec.sample_rounds or [0] * len(rec.samples), strict=True))
        ],
        columns=SAMPLE_COLUMNS,
    )
    return df, samples


def steps_frame(records: list[Record]) -> pd.DataFrame:
    """The steps table (STEP_COLUMNS) of the decode records among ``records``."""
    rows = [{"point_id": rec.point_id, **st} for rec in records for st in rec.steps]
    return pd.DataFrame(rows, columns=list(STEP_COLUMNS)) if not rows else pd.DataFrame(rows)[list(STEP_COLUMNS)]


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    write_atomic(path, buf.getvalue())


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise UserError(
            f"{path}: not a readable Parquet file ({type(exc).__name__}); delete it and run "
            f"`attnbench report {path.parent}` to rebuild it from the journal"
        ) from None


def finalize(run_dir: Path | RunDir) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write results.parquet, samples.parquet and steps.parquet from the journal (each atomically);
    return the results and samples frames (the steps table: :func:`load_steps`)."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    records = journal.load(rd)
    df, samples = records_to_frames(records, _timing(rd))
    _write_parquet(df, rd.results)
    _write_parquet(samples, rd.samples)
    _write_parquet(steps_frame(records), rd.steps)
    return df, samples


def _timing(rd: RunDir) -> Mapping[str, Any] | None:
    """The run's [timing] table, or None where its metadata is missing or unreadable."""
    try:
        timing = read_metadata(rd).get("timing")
    except UserError:
        return None
    return timing if isinstance(timing, Mapping) else None


def load_steps(run_dir: Path | RunDir) -> pd.DataFrame:
    """steps.parquet of a run (rebuilt from the journal if missing); empty without decode points."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    return _read_parquet(rd.steps) if rd.steps.exists() else steps_frame(journal.load(rd))


def load_run(run_dir: Path | RunDir) -> tuple[pd.DataFrame, pd.DataFrame | None, dict[str, Any]]:
    """(results, samples, metadata) of a run directory; rebuilt from the journal if the
    Parquet files are missing (a run that was killed before it could write them)."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    if not rd.path.is_dir():
        raise UserError(f"run directory {str(rd.path)!r} does not exist")
    meta = read_metadata(rd)
    if rd.results.exists():
        df = _read_parquet(rd.results)
        samples = _read_parquet(rd.samples) if rd.samples.exists() else None
    else:
        timing = meta.get("timing")
        df, samples = records_to_frames(journal.load(rd), timing if isinstance(timing, Mapping) else None)
    return df, samples, meta
