"""`attnbench run` executor options and `attnbench status` through the real CLI: mistakes are
one line, exit 2, and are caught before a run directory is created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def attnbench(*args: str, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["--gpus", "2", "--device", "cpu"], {}, "--gpus 2: with --device cpu points run one at a time"),
        (["--gpus", "none"], {}, "--gpus 'none': expected a positive number of GPUs or 'all'"),
        (["--executor", "gpu"], {}, "--executor 'gpu': expected one of local, slurm"),
        (["--slurm-partition", "p"], {}, "--slurm-partition: only with --executor slurm"),
        (["--no-wait"], {}, "--no-wait: only with --executor slurm"),
        (["--executor", "slurm", "--gpus", "2"], {}, "--gpus: with --executor slurm, give --slurm-gpus-per-node"),
        (["--executor", "slurm"], {"PATH": "/nonexistent"}, "--executor slurm: Slurm's sbatch is not on PATH"),
        (
            ["--executor", "slurm", "--slurm-time", "soon"],
            {"PATH": str(REPO / "tests" / "fixtures" / "fake_sbatch")},
            "--slurm-time 'soon': expected minutes",
        ),
        (
            ["--executor", "slurm", "--slurm-shards", "0"],
            {"PATH": str(REPO / "tests" / "fixtures" / "fake_sbatch")},
            "--slurm-shards 0: expected an integer >= 1",
        ),
    ],
)
def test_executor_mistakes_are_one_line_before_anything_exists(tmp_path, args, env, needle):
    out = tmp_path / "run"
    res = attnbench("run", "--suite", "smoke", "--out", str(out), *args, **env)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not out.exists()


def test_status_of_no_run_is_one_line(tmp_path):
    res = attnbench("status", str(tmp_path))
    assert res.returncode == 2 and "no plan.json" in res.stderr and res.stderr.count("\n") == 1
