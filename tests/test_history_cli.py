"""`attnbench history add/show/check/report` and `compare --baseline history:K` through the
real CLI (subprocesses), on a synthetic history of 30 runs of 8 points."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from history_helpers import attnbench, rounds_around, stamp, write_run

pytest.importorskip("duckdb")

POINTS = [f"{impl}/{p}/causal/float32/N512" for impl in ("softmax", "sdpa", "linear-chunked", "linear-cumsum")
          for p in ("fwd", "fwdbwd")]  # fmt: skip
DRIFT = POINTS[0]  # softmax/fwd: +3 % at each of the commits c20..c24, then steady
NOISY = POINTS[4]  # linear-chunked/fwd: 6 % between runs, like the real one on a busy CPU
N_RUNS = 30


def level(pid: str, i: int) -> float:
    base = 1.0 + POINTS.index(pid)
    if pid == DRIFT and i >= 20:
        return base * 1.03 ** min(i - 19, 5)
    return base


def run_values(i: int) -> dict[str, float]:
    rng = np.random.default_rng(1000 + i)
    out = {pid: level(pid, i) * float(np.exp(rng.normal(0, 0.01))) for pid in POINTS}
    out[NOISY] = level(NOISY, i) * float(np.exp(rng.normal(0, 0.06)))
    return out


def write(path: Path, i: int, values: dict[str, float], spread: float = 0.03, **kw) -> Path:
    rng = np.random.default_rng(i)
    pts = {pid: rounds_around(v, rng, spread=spread) for pid, v in values.items()}
    return write_run(path, pts, stamp(i), commit=f"c{i}", suite="ci", **kw)


@pytest.fixture(scope="module")
def hist(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hist")
    runs = [write(root / f"run{i:02d}", i, run_values(i), spread=0.005) for i in range(N_RUNS)]
    db = root / "history.duckdb"
    proc = attnbench("history", "add", *map(str, runs), "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count(": added (ci, commit c") == N_RUNS
    return {"db": db, "root": root, "last": runs[-1], "first": runs[0]}


def test_add_again_changes_nothing(hist: dict[str, Path]) -> None:
    proc = attnbench("history", "add", str(hist["first"]), "--db", str(hist["db"]), "--json")
    assert proc.returncode == 0
    (done,) = json.loads(proc.stdout)
    assert done["action"] == "unchanged" and done["n_points"] == 8 and done["commit"] == "c0"


def test_show_prints_a_series_with_its_commits_and_change_points(hist: dict[str, Path]) -> None:
    proc = attnbench("history", "show", "--db", str(hist["db"]), "--point", DRIFT, "--last", "12")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"ci {DRIFT}" in out and "cpu Test CPU, 1 thread, torch 2.13.0" in out
    assert "c29" in out and "c18" in out and "c17" not in out  # the newest 12 runs
    assert "regression at c" in out
    doc = json.loads(attnbench("history", "show", "--db", str(hist["db"]), "--impl", "softmax", "--json").stdout)
    assert [s["point_id"] for s in doc] == [DRIFT, POINTS[1]]
    drift = doc[0]
    assert len(drift["runs"]) == 20 and drift["runs"][-1]["commit"] == "c29"
    assert drift["change_points"] and all(cp["kind"] == "regression" for cp in drift["change_points"])
    assert all(19 <= int(cp["commit_after"][1:]) <= 25 for cp in drift["change_points"])
    assert doc[1]["change_points"] == []


def test_show_filters_and_their_errors(hist: dict[str, Path]) -> None:
    db = str(hist["db"])
    doc = json.loads(
        attnbench("history", "show", "--db", db, "--set", "pass=fwdbwd", "--point", "sdpa/*", "--json").stdout
    )
    assert [s["point_id"] for s in doc] == [POINTS[3]]
    since = json.loads(
        attnbench("history", "show", "--db", db, "--point", POINTS[3], "--since", "2026-11-02", "--json").stdout
    )
    assert len(since[0]["runs"]) == N_RUNS - 24
    for args, text in [
        (("--impl", "nope"), "no series in"),
        (("--set", "seed=1"), "not a history filter"),
        (("--set", "N=abc"), "N expects integers"),
        (("--since", "yesterday"), "--since 'yesterday': expected an ISO date"),
        (("--last", "0"), "--last 0"),
        (("--window", "1"), "--window 1"),
    ]:
        proc = attnbench("history", "show", "--db", db, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and text in proc.stderr, (args, proc.stderr)
    proc = attnbench("history", "show", "--db", str(hist["root"] / "absent.duckdb"))
    assert proc.returncode == 2 and "no history database at" in proc.stderr


def test_check_fails_on_the_drift_only(hist: dict[str, Path], tmp_path: Path) -> None:
    db = str(hist["db"])
    md = tmp_path / "summary.md"
    proc = attnbench("history", "check", "--db", db, "--markdown", str(md))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    flagged = [line for line in proc.stdout.splitlines() if line.startswith("REGRESSED")]
    assert len(flagged) == 1 and DRIFT in flagged[0] and "latency:10%" in flagged[0]
    assert "checked 8 series" in proc.stdout and "1 fail the history gate" in proc.stdout
    assert DRIFT in md.read_text() and "❌" in md.read_text()
    doc = json.loads(attnbench("history", "check", "--db", db, "--json").stdout)
    (f,) = doc["findings"]
    assert doc["exit_code"] == 1 and f["point_id"] == DRIFT and 1.10 < f["ratio"] < 1.22
    assert attnbench("history", "check", "--db", db, "-t", "latency:25%").returncode == 0
    assert attnbench("history", "check", "--db", db, "--impl", "sdpa").returncode == 0
    assert attnbench("history", "check", "--db", db, "--window", "8").returncode == 0  # the drift began before


def test_report_writes_one_page(hist: dict[str, Path], tmp_path: Path) -> None:
    proc = attnbench("history", "report", "--db", str(hist["db"]), "--out", str(tmp_path / "rep"))
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "rep" / "history.html").read_text()
    assert "8 series, 1 failing the history gate" in proc.stdout
    assert page.count('<svg class="trend"') == 8 and "fails the history gate" in page
    assert DRIFT in page and "http" not in page.replace("http-equiv", "").replace("http://www.w3.org/2000/svg", "")


# --- compare --baseline history:K ---------------------------------------------------------


def compare_json(hist: dict[str, Path], run: Path, *extra: str) -> tuple[int, dict]:
    proc = attnbench(
        "compare", "--baseline", "history:10", str(run), "--json", *extra, ATTNBENCH_HISTORY=str(hist["db"])
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def verdicts(doc: dict) -> dict[str, str]:
    return {p["point_id"]: p["verdict"] for p in doc["points"]}


def steady(i: int) -> dict[str, float]:
    return {pid: level(pid, 29) for pid in POINTS}


def test_history_gate_passes_a_steady_run(hist: dict[str, Path], tmp_path: Path) -> None:
    code, doc = compare_json(hist, write(tmp_path / "new", 40, steady(40)))
    assert code == 0, doc
    assert doc["baseline"].startswith("history:10 (10 runs c20..c29, cpu Test CPU")
    assert set(verdicts(doc).values()) <= {"unchanged", "inconclusive"}


def test_history_gate_finds_a_regression(hist: dict[str, Path], tmp_path: Path) -> None:
    values = steady(41)
    values[POINTS[2]] *= 1.4
    code, doc = compare_json(hist, write(tmp_path / "slow", 41, values))
    assert code == 1
    v = verdicts(doc)
    assert v[POINTS[2]] == "regressed" and list(v.values()).count("regressed") == 1
    pv = next(p for p in doc["points"] if p["point_id"] == POINTS[2])
    assert 1.3 < pv["ci_low"] < pv["ratio"] < pv["ci_high"] and pv["q"] < 0.01
    assert "vs 10 runs" in pv["reason"]


def test_a_whole_run_in_a_slow_state_is_not_a_regression(hist: dict[str, Path], tmp_path: Path) -> None:
    values = {pid: v * 1.15 for pid, v in steady(42).items()}
    code, doc = compare_json(hist, write(tmp_path / "slowmachine", 42, values))
    assert code == 0, verdicts(doc)
    assert doc["shift"] == pytest.approx(1.15, rel=0.01)
    assert any("% vs the history across all points" in n for n in doc["notes"]), doc["notes"]


def test_between_run_noise_is_not_called_a_regression(hist: dict[str, Path], tmp_path: Path) -> None:
    """The noisy point moves 6 % between runs; +13 % on the newest run, with tight samples, is a
    regression for a two-run comparison and not against the history."""
    values = steady(43)
    values[NOISY] = run_values(N_RUNS - 1)[NOISY] * 1.13
    new = write(tmp_path / "noisy", 43, values, spread=0.005)
    two_run = attnbench("compare", str(hist["last"]), str(new), "--json")
    assert verdicts(json.loads(two_run.stdout))[NOISY] == "regressed"
    code, doc = compare_json(hist, new)
    assert verdicts(doc)[NOISY] in ("unchanged", "inconclusive") and code == 0


def test_history_gate_failures_and_usage(hist: dict[str, Path], tmp_path: Path) -> None:
    new = write(tmp_path / "broken", 44, steady(44), status={POINTS[1]: "crashed"})
    code, doc = compare_json(hist, new)
    assert code == 1 and verdicts(doc)[POINTS[1]] == "introduced a failure"
    other = write(tmp_path / "other", 45, steady(45), env={"device": "cpu", "cpu_model": "Other CPU",
                  "torch": "2.13.0", "torch_cuda": None, "gpu": None, "threads": 1})  # fmt: skip
    proc = attnbench("compare", "--baseline", "history:10", str(other), ATTNBENCH_HISTORY=str(hist["db"]))
    assert proc.returncode == 2 and "has no run of suite 'ci' on cpu Other CPU" in proc.stderr
    for spec, text in [("history:1", "K >= 2"), ("history:x", "K >= 2")]:
        proc = attnbench("compare", "--baseline", spec, str(new), ATTNBENCH_HISTORY=str(hist["db"]))
        assert proc.returncode == 2 and text in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = attnbench("compare", str(new), "history:3")
    assert proc.returncode == 2 and "can only be the BASELINE side" in proc.stderr


def test_the_current_run_is_left_out_of_its_own_baseline(hist: dict[str, Path], tmp_path: Path) -> None:
    db = tmp_path / "copy.duckdb"
    db.write_bytes(hist["db"].read_bytes())
    values = steady(46)
    values[POINTS[3]] *= 1.5
    new = write(tmp_path / "ingested", 46, values)
    assert attnbench("history", "add", str(new), "--db", str(db)).returncode == 0
    proc = attnbench("compare", "--baseline", "history:10", str(new), "--json", ATTNBENCH_HISTORY=str(db))
    doc = json.loads(proc.stdout)
    assert doc["baseline"].startswith("history:10 (10 runs c20..c29")
    assert verdicts(doc)[POINTS[3]] == "regressed"


def test_run_with_history_ingests_the_finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`attnbench run --history` adds the run to ATTNBENCH_HISTORY's database when it finishes."""
    import subprocess
    import sys

    suite = tmp_path / "t.toml"
    suite.write_text(
        'name = "t"\n[params]\nimpl = "linear-chunked"\nN = 16\nB = 1\nH = 1\nD = 8\nM = 8\npass = "fwd"\n'
        "[timing]\nwarmup_s = 0.001\nmin_samples = 3\nmin_time_s = 0.001\nmax_time_s = 0.01\n"
    )
    db = tmp_path / "h.duckdb"
    env = {**__import__("os").environ, "ATTNBENCH_HISTORY": str(db)}
    res = subprocess.run(
        [sys.executable, "-m", "attnbench", "run", "--suite", str(suite), "--out", str(tmp_path / "r"), "--no-report",
         "--history"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert db.exists()
    shown = attnbench("history", "show", "--db", str(db), "--json")
    assert shown.returncode == 0, shown.stderr
    assert "linear-chunked/fwd/causal/float32/B1-H1-N16-D8-M8" in shown.stdout
