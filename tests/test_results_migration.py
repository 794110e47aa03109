"""Runs written by schema version 1 (the first landing) still read, report, compare and resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.errors import UserError
from attnbench.results import SCHEMA_VERSION, load_run, read_metadata
from attnbench.results.metadata import migrate

V1 = Path(__file__).resolve().parent / "fixtures" / "v1_run"  # `attnbench run --suite smoke` at 593108b


def test_v1_metadata_is_migrated_in_memory():
    raw = json.loads((V1 / "metadata.json").read_text())
    assert raw["schema_version"] == 1 and "run_id" not in raw
    meta = read_metadata(V1)
    assert meta["schema_version"] == SCHEMA_VERSION == 2
    assert len(meta["run_id"]) == 16 and meta["run_id"] == read_metadata(V1)["run_id"]  # stable
    assert meta["commands"] == [raw["command"]] and meta["options"] is None


def test_v1_tables_read_unchanged():
    df, samples, _meta = load_run(V1)
    assert len(df) == 8 and (df["status"] == "ok").all() and df["correct"].all()
    assert set(samples["point_id"]) == set(df["point_id"])


def test_unknown_versions_are_refused():
    with pytest.raises(UserError, match="schema_version 99 is not one this attnbench reads"):
        migrate({"schema_version": 99, "suite": {}, "device": "cpu"})
    with pytest.raises(UserError, match="no 'suite'"):
        migrate({"schema_version": 2, "device": "cpu"})


def test_v1_run_resumes_and_reports(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(V1, run)
    lines = (run / "journal.jsonl").read_text().splitlines()
    (run / "journal.jsonl").write_text("\n".join(lines[:-2]) + "\n")  # two points lost
    (run / "results.parquet").unlink()
    res = subprocess.run(
        [sys.executable, "-m", "attnbench", "run", "--resume", str(run), "--no-report"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["schema_version"] == 2 and meta["run_id"] and len(meta["commands"]) == 2
    assert meta["options"]["threads"] == 1  # the v1 run's own thread count, not today's default
    df, _samples, _ = load_run(run)
    assert len(df) == 8 and df["point_id"].is_unique
