"""The run session: options validated before anything is created, threads a clock needs,
resume reusing the run's own options, run directories kept inside runs/."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.errors import UserError
from attnbench.point import TimingConfig
from attnbench.runner.request import RunRequest, resolve_threads, slug

SUITE = """
name = "t"
[params]
impl = ["linear-chunked"]
N = [16, 32]
B = 1
H = 1
D = 8
M = 8
pass = "fwd"
[timing]
warmup_s = 0.001
min_samples = 3
min_time_s = 0.001
max_time_s = 0.01
"""


def attnbench(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.mark.parametrize(
    "request_,needle",
    [
        (RunRequest(timeout=float("nan")), "--timeout nan: expected a positive, finite number"),
        (RunRequest(timeout=float("inf")), "--timeout inf"),
        (RunRequest(max_time=-1.0), "--max-time -1.0"),
        (RunRequest(rounds=0), "--rounds 0: expected a positive integer"),
    ],
)
def test_bad_options_are_refused_before_anything_exists(request_, needle):
    with pytest.raises(UserError, match=needle.replace("(", r"\(").replace("+", r"\+")):
        request_.validate()


def test_a_process_time_clock_runs_on_one_thread():
    timing = TimingConfig(clock="process")
    assert resolve_threads(timing, RunRequest()) == 1
    with pytest.raises(UserError, match="--threads 2: this suite runs with threads = 1"):
        resolve_threads(timing, RunRequest(threads=2))
    assert resolve_threads(TimingConfig(threads=3), RunRequest(threads=3)) == 3
    assert resolve_threads(TimingConfig(), RunRequest(threads=2)) == 2


def test_slug_keeps_run_directories_inside_runs():
    assert slug("../../evil") == "evil" and "/" not in slug("a/b\\c") and slug("...") == "run"


def test_hostile_suite_name_stays_inside_runs(tmp_path):
    (tmp_path / "t.toml").write_text(SUITE.replace('name = "t"', 'name = "../../evil"'))
    res = attnbench("run", "--suite", "t.toml", "--no-report", "--set", "N=16", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    made = [p for p in (tmp_path / "runs").iterdir()]
    assert len(made) == 1 and made[0].name.startswith("evil-")
    assert not (tmp_path.parent / "evil").exists()


def test_resume_reuses_options_and_refuses_conflicts(tmp_path):
    suite = tmp_path / "t.toml"
    suite.write_text(SUITE)
    out = tmp_path / "run"
    res = attnbench("run", "--suite", str(suite), "--out", str(out), "--no-report", "--threads", "1", "--timeout", "30")
    assert res.returncode == 0, res.stderr
    lines = (out / "journal.jsonl").read_text().splitlines()
    (out / "journal.jsonl").write_text(lines[0] + "\n")
    bad = attnbench("run", "--resume", str(out), "--threads", "2")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "--threads 2: conflicts with the run being resumed (it was started with --threads 1)" in bad.stderr
    bad = attnbench("run", "--resume", str(out), "--impl", "softmax")
    assert bad.returncode == 2 and "--impl softmax: conflicts" in bad.stderr
    same = attnbench("run", "--resume", str(out), "--threads", "1", "--no-report")
    assert same.returncode == 0, same.stderr
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["options"]["threads"] == 1 and meta["options"]["timing"]["timeout_s"] == 30.0
    assert meta["command"] == meta["commands"][0] and len(meta["commands"]) == 2 and len(meta["resumed"]) == 1
    rows = [json.loads(x)["row"] for x in (out / "journal.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(r["threads"] == 1 for r in rows)


def test_suite_schema_command_prints_json_schema():
    res = attnbench("suite", "schema")
    assert res.returncode == 0, res.stderr
    schema = json.loads(res.stdout)
    assert schema["title"] == "attnbench suite"
    assert {"params", "timing", "gate", "device"} <= set(schema["properties"])
