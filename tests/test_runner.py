"""The runner: failures are rows, the sweep goes on, the journal survives, --resume fills gaps.
Runs the real CLI in a subprocess, with third-party plugins installed through entry points."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SITE = Path(__file__).resolve().parent / "fixtures" / "plugin_site"

SUITE = """
name = "t"
[params]
impl = {impls}
N = [16, 40]
B = 1
H = 2
D = 8
M = 8
pass = ["fwd", "fwdbwd"]
[timing]
warmup_s = 0.001
min_samples = 3
min_time_s = 0.001
max_time_s = 0.02
timeout_s = {timeout}
"""


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(PLUGIN_SITE), str(REPO), e.get("PYTHONPATH", "")])
    return e


def write_suite(tmp_path: Path, impls: list[str], timeout: float = 60) -> Path:
    p = tmp_path / "t.toml"
    p.write_text(SUITE.format(impls=json.dumps(impls), timeout=timeout))
    return p


def attnbench(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env(), timeout=300, **kw
    )


def test_failures_become_rows_and_the_sweep_goes_on(tmp_path):
    suite = write_suite(
        tmp_path, ["linear-chunked", "crasher", "raiser", "oomer", "sleeper", "nanout", "softmax"], timeout=8
    )
    out = tmp_path / "run"
    res = attnbench(
        "run", "--suite", str(suite), "--out", str(out), "--no-report", "--set", "N=16", "--set", "pass=fwd"
    )
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(out / "results.parquet").set_index("impl")
    assert df.loc["linear-chunked", "status"] == "ok" and bool(df.loc["linear-chunked", "correct"])
    assert df.loc["softmax", "status"] == "ok"  # ran after every failure
    assert df.loc["crasher", "status"] == "crashed" and "SIGSEGV" in df.loc["crasher", "error"]
    assert df.loc["raiser", "status"] == "error" and "boom from the raiser plugin" in df.loc["raiser", "error"]
    assert df.loc["oomer", "status"] == "oom"
    assert df.loc["sleeper", "status"] == "timeout" and "timeout" in df.loc["sleeper", "error"]
    assert df.loc["nanout", "status"] == "ok" and not df.loc["nanout", "correct"]
    assert "NaN" in df.loc["nanout", "correctness_error"]
    samples = pd.read_parquet(out / "samples.parquet")
    assert set(samples["point_id"]) == set(df[df["status"] == "ok"]["point_id"])


def test_off_by_one_plugin_fails_the_oracle_while_builtins_pass(tmp_path):
    suite = write_suite(tmp_path, ["offbyone", "linear-quadratic", "linear-chunked", "decorated"])
    out = tmp_path / "run"
    res = attnbench("run", "--suite", str(suite), "--out", str(out), "--no-report", "--json")
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["points"]
    by_impl: dict[str, list] = {}
    for r in rows:
        by_impl.setdefault(r["impl"], []).append(r)
    assert all(
        r["status"] == "ok" and r["correct"]
        for name in ("linear-quadratic", "linear-chunked", "decorated")
        for r in by_impl[name]
    )
    assert all(r["status"] == "ok" and r["correct"] is False for r in by_impl["offbyone"])
    assert all("relative error" in r["correctness_error"] for r in by_impl["offbyone"])
    # the fwd point ran the check; the fwdbwd point on the same inputs reused its verdict
    for r in by_impl["linear-chunked"]:
        assert r["checked_by"] == r["point_id"].replace("/fwdbwd/", "/fwd/")
    assert by_impl["decorated"][0]["family"] == "softmax"
    strict = attnbench(
        "run",
        "--suite",
        str(suite),
        "--out",
        str(tmp_path / "run2"),
        "--no-report",
        "--strict",
        "--impl",
        "offbyone",
        "--set",
        "N=16",
    )
    assert strict.returncode == 1


def test_broken_plugin_is_listed_not_fatal():
    res = attnbench("list", "--json")
    assert res.returncode == 0, res.stderr
    impls = {i["name"]: i for i in json.loads(res.stdout)["impls"]}
    assert impls["broken"]["available"] is False
    assert "failed to import" in impls["broken"]["reason"]
    assert impls["linear-chunked"]["available"] is True
    assert impls["offbyone"]["family"] == "linear" and impls["offbyone"]["origin"].startswith("plugin")


def test_resume_runs_only_what_is_missing(tmp_path):
    suite = write_suite(tmp_path, ["linear-chunked", "softmax"])
    out = tmp_path / "run"
    assert attnbench("run", "--suite", str(suite), "--out", str(out), "--no-report").returncode == 0
    lines = (out / "journal.jsonl").read_text().splitlines()
    assert len(lines) == 8
    (out / "journal.jsonl").write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # torn last line
    (out / "results.parquet").unlink()
    res = attnbench("run", "--resume", str(out), "--no-report")
    assert res.returncode == 0, res.stderr
    new_lines = (out / "journal.jsonl").read_text().splitlines()
    assert new_lines[:3] == lines[:3]  # finished points untouched
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 8 and df["point_id"].is_unique
    meta = json.loads((out / "metadata.json").read_text())
    assert len(meta["resumed"]) == 1 and meta["finished"]


def test_ctrl_c_keeps_finished_points(tmp_path):
    suite = write_suite(tmp_path, ["linear-chunked", "sleeper"], timeout=120)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "attnbench",
            "run",
            "--suite",
            str(suite),
            "--out",
            str(out),
            "--no-report",
            "--set",
            "pass=fwd",
        ],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    journal = out / "journal.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and (not journal.exists() or len(journal.read_text().splitlines()) < 2):
        time.sleep(0.2)
    time.sleep(1.0)  # the sleeper is running now
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "attnbench run --resume" in err
    df = pd.read_parquet(out / "results.parquet")
    assert set(df["impl"]) == {"linear-chunked"} and (df["status"] == "ok").all()


@pytest.mark.parametrize(
    "args,needle",
    [
        (["run", "--suite", "nope"], "unknown suite 'nope'; available:"),
        (["run", "--suite", "smoke", "--set", "N=abc"], "N expects integers, got 'abc'"),
        (["run", "--suite", "smoke", "--impl", "nosuch"], "unknown implementation 'nosuch'; available:"),
        (["run", "--suite", "smoke", "--device", "tpu"], "--device 'tpu': expected auto, cpu or cuda"),
        (["run", "--resume", "/nonexistent/run"], "no plan.json there"),
        (["run", "--suite", "smoke", "--threads", "0"], "--threads 0: expected a positive integer"),
    ],
)
def test_user_mistakes_are_one_line_exit_2(args, needle):
    res = attnbench(*args)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0, res.stderr
    assert needle in res.stderr and res.stderr.startswith("error:")
    assert "Traceback" not in res.stderr


def test_malformed_suite_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[params]\nimpl = 'softmax'\nN = [1, 'two']\n")
    res = attnbench("run", "--suite", str(bad))
    assert res.returncode == 2
    assert "bad.toml" in res.stderr and "N = 'two'" in res.stderr and "Traceback" not in res.stderr


def test_rounds_pool_samples_and_resume_per_round(tmp_path):
    suite = write_suite(tmp_path, ["linear-chunked"])
    out = tmp_path / "run"
    res = attnbench(
        "run",
        "--suite",
        str(suite),
        "--out",
        str(out),
        "--no-report",
        "--rounds",
        "3",
        "--set",
        "N=16",
        "--set",
        "pass=fwd",
    )
    assert res.returncode == 0, res.stderr
    lines = (out / "journal.jsonl").read_text().splitlines()
    assert [json.loads(x)["row"]["round"] for x in lines] == [0, 1, 2]
    assert len({json.loads(x)["row"]["server_pid"] for x in lines}) == 3  # a fresh fork server per round
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 1 and df["rounds"].iloc[0] == 3 and len(df["round_medians_ms"].iloc[0]) == 3
    per_round = sum(len(json.loads(x)["samples"]) for x in lines)
    assert df["n_samples"].iloc[0] == per_round
    # drop the last round: resume runs exactly that one
    (out / "journal.jsonl").write_text("\n".join(lines[:2]) + "\n")
    res = attnbench("run", "--resume", str(out), "--no-report")
    assert res.returncode == 0, res.stderr
    rounds = [json.loads(x)["row"]["round"] for x in (out / "journal.jsonl").read_text().splitlines()]
    assert rounds == [0, 1, 2]


@pytest.mark.parametrize("suite", ["seqlen", "smoke", "ci", "decode", "decode-long"])
def test_every_shipped_suite_runs_a_tiny_point(tmp_path, suite):
    """Each suite's [timing] and other tables reach the worker intact (a key the timer does not
    know once turned every point of the ci suite into an error row)."""
    decode = suite.startswith("decode")
    sizes = ["--set", "P=4", "--set", "T=16"] if decode else ["--set", "N=32", "--set", "B=1", "--set", "H=1"]
    res = attnbench(
        "run", "--suite", suite, "--impl", "linear-recurrent" if decode else "linear-chunked", *sizes,
        "--set", "D=8", "--set", "M=8", "--max-time", "0.02", "--rounds", "1", "--no-report", "--json",
        "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = json.loads(res.stdout)["points"]
    assert rows and all(r["status"] == "ok" and r["correct"] for r in rows), [(r["status"], r["error"]) for r in rows]
