"""pytest-benchmark export: the real pytest-benchmark reads it, and attnbench compare reads it back."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from compare_helpers import samples, write_run
from pytest_benchmark.stats import Stats
from test_compare_cli import PIDS, _rows, attnbench

from attnbench.compare.io import load_side, side_from_run
from attnbench.results.pytest_benchmark import pb_stats, to_pytest_benchmark

PB_CLI = Path(__file__).resolve().parents[1]  # the venv's pytest-benchmark script is beside python


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 9, 30])
def test_stats_are_pytest_benchmarks_own(n):
    data = samples(0.001, n, 0.2, seed=n)
    ref = Stats()
    for x in data:
        ref.update(x)
    got = pb_stats(data, 3)
    for field in Stats.fields:
        assert got[field] == pytest.approx(getattr(ref, field)), field
    assert got["data"] == data and got["iterations"] == 3


def test_export_round_trip(tmp_path):
    rows = _rows() + [{"point_id": "impl9/fwd/causal/float32/N9", "status": "error", "error": "boom"}]
    run = write_run(tmp_path / "run", rows)
    doc = to_pytest_benchmark(run)
    assert doc["version"].startswith("5.") and {"machine_info", "commit_info", "benchmarks", "datetime"} <= set(doc)
    assert (
        len(doc["benchmarks"]) == len(PIDS)
        and doc["attnbench"]["not_ok"]["impl9/fwd/causal/float32/N9"]["status"] == "error"
    )
    path = tmp_path / "pb.json"
    path.write_text(json.dumps(doc))
    a, b = side_from_run(run), load_side(path)
    assert set(a.points) == set(b.points) and b.env["torch"] == a.env["torch"]
    for pid, p in a.points.items():
        q = b.points[pid]
        assert (q.status, q.correct, q.error) == (p.status, p.correct, p.error)
        if p.samples:
            assert q.peak_mib == p.peak_mib
            assert q.samples == pytest.approx(p.samples) and q.median == pytest.approx(p.median)


def test_cli_export_then_pytest_benchmark_compare_and_attnbench_compare(tmp_path):
    base = write_run(tmp_path / "base", _rows())
    slow = write_run(tmp_path / "slow", _rows(1.4, seed=50))
    for name, run in (("base", base), ("slow", slow)):
        res = attnbench("export", "--format", "pytest-benchmark", str(run), "-o", str(tmp_path / f"{name}.json"))
        assert res.returncode == 0, res.stderr
    pb = shutil.which("pytest-benchmark") or str(Path(__import__("sys").executable).parent / "pytest-benchmark")
    res = subprocess.run(
        [pb, "compare", str(tmp_path / "base.json"), str(tmp_path / "slow.json")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "impl0/fwd/causal/float32/N0" in res.stdout and "Legend" in res.stdout
    # both sides as pytest-benchmark files, and mixed
    assert attnbench("compare", str(tmp_path / "base.json"), str(tmp_path / "slow.json")).returncode == 1
    assert attnbench("compare", str(base), str(tmp_path / "base.json")).returncode == 0
    stdout = attnbench("export", str(base)).stdout
    assert json.loads(stdout)["benchmarks"][0]["stats"]["rounds"] == 30
