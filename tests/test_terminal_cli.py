"""CLI conventions and the run's terminal output through the real CLI: --version, choices and
suite defaults in --help, --out everywhere, `--impl file.py:function` in the workers (and on
--resume), --strict-noise, single-call points and rounds left out for long points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from attnbench.report.frame import NOISY_MARK

REPO = Path(__file__).resolve().parents[1]

IMPL_FILE = '''
import torch
import torch.nn.functional as F

from attnbench.impls.registry import register


def my_linear(q, k, v, *, causal):
    """Linear attention the quadratic way, written out (phi = elu + 1)."""
    qf, kf = F.elu(q) + 1, F.elu(k) + 1
    scores = qf @ kf.transpose(-1, -2)
    if causal:
        n = q.shape[-2]
        scores = scores * torch.ones(n, n, dtype=q.dtype).tril()
    return (scores @ v) / (scores.sum(-1, keepdim=True) + 1e-6)


@register("my-softmax", family="softmax", causal=(True,), devices=("cpu",))
def my_softmax(q, k, v, *, causal):
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def softmax(q, k, v, *, causal):
    return v


NOT_A_FUNCTION = 3
'''

SUITE = """
name = "term"
[params]
impl = ["linear-chunked"]
N = [32]
B = 1
H = 2
D = 8
M = 8
pass = ["fwdbwd", "fwd"]
[impl_params]
linear-chunked = {{ chunk_size = 16 }}
[timing]
warmup_s = 0.001
timeout_s = 120
{extra}
"""


def attnbench(*args: str, cwd: Path | None = None, columns: int = 80) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": str(columns)}
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env, timeout=600, cwd=cwd
    )


def suite_file(tmp_path: Path, extra: str = "") -> Path:
    """The suite with [timing] keys of ``extra`` ("key = value" lines) over short defaults."""
    timing = {"min_samples": "3", "min_time_s": "0.001", "max_time_s": "0.02"}
    timing.update(dict(line.split(" = ", 1) for line in extra.splitlines() if line.strip()))
    path = tmp_path / "term.toml"
    path.write_text(SUITE.format(extra="\n".join(f"{k} = {v}" for k, v in timing.items())))
    return path


def test_version():
    from attnbench import __version__

    res = attnbench("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"attnbench {__version__}"


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (["run"], ["auto|cpu|cuda", "(the suite's)", "--strict-noise", "--out", "file.py:function"]),
        (["list"], ["auto|cpu|cuda", "--probe", "[default: auto]"]),
        (["env"], ["auto|cpu|cuda"]),
        (["report"], ["md|html|both", "--out"]),
        (["export"], ["pytest-benchmark|csv", "--out", "--output"]),
        (["suite", "schema"], ["--out"]),
    ],
)
def test_help_shows_choices_defaults_and_out(command, shown):
    res = attnbench(*command, "--help", columns=200)
    assert res.returncode == 0, res.stderr
    for text in shown:
        assert text in res.stdout, (command, text)


def test_suite_schema_out(tmp_path):
    res = attnbench("suite", "schema", "--out", str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "s.json").read_text())["title"] == "attnbench suite"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nowhere.py:f", "--impl 'nowhere.py:f': no such file 'nowhere.py'"),
        ("{f}:missing", "has no function 'missing'"),
        ("{f}:NOT_A_FUNCTION", "names a int, not a callable"),
        ("{f}:softmax", "'softmax' is already an implementation"),
    ],
)
def test_file_impl_mistakes_are_one_line(tmp_path, spec, message):
    impl = tmp_path / "impls.py"
    impl.write_text(IMPL_FILE)
    res = attnbench("run", "--suite", str(suite_file(tmp_path)), "--impl", spec.format(f=impl), "--no-report")
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr


def test_file_impls_run_in_the_workers_and_on_resume(tmp_path):
    impl = tmp_path / "impls.py"
    impl.write_text(IMPL_FILE)
    out = tmp_path / "run"
    args = ["--impl", f"{impl}:my_linear,{impl}:my_softmax", "--impl", "linear-chunked"]
    res = attnbench("run", "--suite", str(suite_file(tmp_path)), *args, "--out", str(out), "--no-report", "--json")
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(out / "results.parquet").set_index("point_id")
    assert set(df["impl"]) == {"my_linear", "my-softmax", "linear-chunked"}
    assert (df["status"] == "ok").all(), df[["status", "error"]]
    assert df["correct"].astype(bool).all(), df[["correctness_error"]]  # against the float64 references
    assert set(df.loc[df["impl"] == "my-softmax", "reference"]) == {"softmax float64"}
    assert set(df.loc[df["impl"] == "my_linear", "reference"]) == {"linear-quadratic float64"}
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["options"]["impl_files"] == [f"{impl.resolve()}:my_linear", f"{impl.resolve()}:my_softmax"]
    # drop the last points and resume: the parent and the workers register the file again
    lines = (out / "journal.jsonl").read_text().splitlines()
    (out / "journal.jsonl").write_text("\n".join(lines[:2]) + "\n")
    (out / "results.parquet").unlink()
    res = attnbench("run", "--resume", str(out), "--no-report")
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 6 and (df["status"] == "ok").all()


def test_single_call_points_and_rounds_left_out(tmp_path):
    # every call is "long" here: one call each, one round each (the first outlasted the limit)
    suite = suite_file(tmp_path, "single_call_s = 1e-9\nrounds = 3\nextra_rounds_max_s = 1e-9")
    out = tmp_path / "run"
    res = attnbench("run", "--suite", str(suite), "--out", str(out), "--no-report")
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(out / "results.parquet").set_index("pass")
    assert (df["n_samples"] == 1).all() and (df["warmup_calls"] == 0).all() and df["single_call"].all()
    assert (df["rounds"] == 1).all()
    assert set(df["mem_method"]) == {"rss-hwm-single-call"} and (df["peak_mib"] > 0).all()
    assert df.loc["fwdbwd", "correct"] and df.loc["fwd", "correct"]  # the one call's output was checked
    assert df.loc["fwd", "checked_by"] == df.loc["fwdbwd", "point_id"]
    text = " ".join(res.stdout.split())
    assert "2 points were timed by one call (calls of" in text and "¹" in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 80


def test_strict_noise_fails_a_run_with_noisy_points(tmp_path):
    # a noise target no CPU meets (1e-9 of the median) within a 5 ms cap: every point is noisy
    suite = suite_file(tmp_path, "target_rel_noise = 1e-9\nmax_time_s = 0.005\nmin_time_s = 0.001")
    out = tmp_path / "run"
    res = attnbench("run", "--suite", str(suite), "--out", str(out), "--no-report", "--strict-noise")
    assert res.returncode == 3, res.stderr
    assert "strict-noise: 2 of 2 measured points are noisy" in res.stderr
    assert NOISY_MARK in res.stdout and "2 of 2 measured points are noisy" in " ".join(res.stdout.split())
    assert max(len(line) for line in res.stdout.splitlines()) <= 80


def test_strict_exit_codes():
    from attnbench.commands.run import EXIT_NOISY, strict_exit

    meta = {"timing": {"min_samples": 5}}
    ok = pd.DataFrame([{"status": "ok", "correct": True, "converged": True, "n_samples": 9, "pass": "fwd"}])
    noisy = ok.assign(converged=False)
    failed = pd.concat([noisy, ok.assign(status="error", correct=None)])
    assert strict_exit(noisy, meta, strict=False, strict_noise=False) == 0
    assert strict_exit(noisy, meta, strict=True, strict_noise=False) == 0
    assert strict_exit(noisy, meta, strict=False, strict_noise=True) == EXIT_NOISY == 3
    assert strict_exit(ok, meta, strict=False, strict_noise=True) == 0
    assert strict_exit(failed, meta, strict=False, strict_noise=True) == 1
    assert strict_exit(failed, meta, strict=True, strict_noise=False) == 1


def test_progress_label_is_short():
    from attnbench.commands.run import point_label
    from attnbench.point import Point

    p = Point(impl="linear-chunked-triton", pass_="fwdbwd", causal=True, dtype="float32", B=1, H=4, N=16384, D=64, M=64)
    assert point_label(p, 1, 2) == "linear-chunked-triton fwdbwd N=16384 round 2/2"
    q = Point(impl="sdpa", pass_="fwd", causal=False, dtype="bfloat16", B=1, H=4, N=64, D=8, M=8)
    assert point_label(q, 0, 1) == "sdpa fwd N=64 full bf16"


def test_later_rounds_only_for_short_points_that_ran():
    from attnbench.runner.sweep import wants_round

    assert wants_round(0, None, 0.5) and wants_round(0, 9.0, 0.5)  # the first round always runs
    assert wants_round(1, 0.2, 0.5) and not wants_round(1, 0.7, 0.5)
    assert wants_round(2, 30.0, None)  # no limit: every round
    assert not wants_round(1, float("inf"), None)  # skipped in round 0 (impl unavailable here)
