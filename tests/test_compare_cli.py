"""`attnbench compare`, `baseline` and `export` through the real CLI (subprocess), on synthetic runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from compare_helpers import ENV, samples, write_run

REPO = Path(__file__).resolve().parents[1]
PIDS = [f"impl{i % 3}/fwd/causal/float32/N{i}" for i in range(8)]


def attnbench(*args: str, cwd: Path | None = None, **env_extra: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def _rows(factor0: float = 1.0, seed: int = 0, correct0: bool = True) -> list[dict]:
    return [
        {
            "point_id": p,
            "samples": samples((1 + i) * (factor0 if i == 0 else 1.0), 30, 0.03, seed + i),
            "correct": correct0 if i == 0 else True,
        }
        for i, p in enumerate(PIDS)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("runs")
    return {
        "base": write_run(d / "base", _rows()),
        "same": write_run(d / "same", _rows(seed=50)),
        "slow": write_run(d / "slow", _rows(1.4, seed=50)),
        "wrong": write_run(d / "wrong", _rows(seed=50, correct0=False)),
        "few": write_run(d / "few", [{"point_id": p, "samples": [1.0 + i] * 3} for i, p in enumerate(PIDS)]),
        "torch": write_run(d / "torch", _rows(seed=50), env={**ENV, "torch": "2.4.0"}),
        "strict": write_run(
            d / "strict",
            _rows(1.15, seed=50),
            suite_source='[params]\nimpl="x"\nN=1\n[gate]\nthresholds=["latency:25%"]\n',
        ),
    }


def test_exit_codes(runs, tmp_path):
    assert attnbench("compare", str(runs["base"]), str(runs["same"])).returncode == 0
    slow = attnbench("compare", str(runs["base"]), str(runs["slow"]), "--json")
    assert slow.returncode == 1
    doc = json.loads(slow.stdout)
    assert doc["counts"]["regressed"] == 1 and doc["points"][0]["verdict"] == "regressed"
    wrong = attnbench("compare", str(runs["base"]), str(runs["wrong"]), "--json")
    assert wrong.returncode == 1 and json.loads(wrong.stdout)["counts"]["introduced a failure"] == 1
    assert attnbench("compare", str(runs["base"]), str(runs["few"])).returncode == 0
    assert attnbench("compare", str(runs["base"]), str(runs["few"]), "--fail-on-inconclusive").returncode == 3
    # results.parquet paths work as well as directories
    assert attnbench("compare", str(runs["base"] / "results.parquet"), str(runs["same"])).returncode == 0


def test_suite_gate_table_is_the_default_and_options_override_it(runs):
    assert attnbench("compare", str(runs["base"]), str(runs["strict"])).returncode == 0  # latency:25% from [gate]
    assert attnbench("compare", str(runs["base"]), str(runs["strict"]), "-t", "latency:5%").returncode == 1


def test_markdown_is_appended(runs, tmp_path):
    md = tmp_path / "summary.md"
    md.write_text("# earlier step\n")
    res = attnbench("compare", str(runs["base"]), str(runs["slow"]), "--markdown", str(md))
    assert res.returncode == 1
    text = md.read_text()
    assert text.startswith("# earlier step\n") and "## attnbench compare: ❌" in text
    assert "| 🔴 | `impl0/fwd/causal/float32/N0` | regressed |" in text
    assert "7 unchanged points not shown." in text


def test_guard_refuses_other_torch_unless_allowed(runs):
    res = attnbench("compare", str(runs["base"]), str(runs["torch"]))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert res.stderr.startswith("error: runs are not comparable: torch '2.13.0' vs '2.4.0'")
    ok = attnbench("compare", str(runs["base"]), str(runs["torch"]), "--allow-mismatch")
    assert ok.returncode == 0 and "compared despite a mismatch" in ok.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["compare", "/nonexistent/a", "/nonexistent/b"], "no such run directory or result file"),
        (["compare", "only-one"], "expected BASELINE CURRENT"),
        (["compare", "-t", "latency:5", "x", "y"], "no such run directory"),
        (["export", "--format", "xml", "x"], "--format 'xml': expected one of pytest-benchmark, csv"),
        (["baseline", "save", "bad/name", "x"], "baseline name 'bad/name'"),
    ],
)
def test_usage_errors_are_one_line_exit_2(args, needle):
    res = attnbench(*args)
    assert res.returncode == 2, res.stderr
    assert needle in res.stderr and res.stderr.count("\n") == 1 and "Traceback" not in res.stderr


def test_bad_threshold_is_exit_2(runs):
    res = attnbench("compare", str(runs["base"]), str(runs["same"]), "-t", "latency:5")
    assert res.returncode == 2 and "unit '(none)'" in res.stderr


def test_baselines_save_list_compare_and_refuse_unknown_formats(runs, tmp_path):
    store = tmp_path / "store"
    res = attnbench("baseline", "save", "main", str(runs["base"]), ATTNBENCH_BASELINE_DIR=str(store))
    assert res.returncode == 0, res.stderr
    manifest = json.loads((store / "main" / "baseline.json").read_text())
    assert manifest["format"] == "attnbench-baseline" and manifest["format_version"] == 1
    assert attnbench("baseline", "save", "main", str(runs["base"]), ATTNBENCH_BASELINE_DIR=str(store)).returncode == 2
    listed = attnbench("baseline", "list", "--json", ATTNBENCH_BASELINE_DIR=str(store))
    assert [b["name"] for b in json.loads(listed.stdout)["baselines"]] == ["main"]
    assert (
        attnbench("compare", "--baseline", "main", str(runs["same"]), ATTNBENCH_BASELINE_DIR=str(store)).returncode == 0
    )
    assert (
        attnbench("compare", "--baseline", "main", str(runs["slow"]), ATTNBENCH_BASELINE_DIR=str(store)).returncode == 1
    )
    missing = attnbench("compare", "--baseline", "nope", str(runs["same"]), ATTNBENCH_BASELINE_DIR=str(store))
    assert (
        missing.returncode == 2 and "baseline 'nope': not found" in missing.stderr and "saved: main" in missing.stderr
    )
    manifest["format_version"] = 99
    (store / "main" / "baseline.json").write_text(json.dumps(manifest))
    res = attnbench("compare", "--baseline", "main", str(runs["same"]), ATTNBENCH_BASELINE_DIR=str(store))
    assert res.returncode == 2 and "format_version 99 is not one this attnbench reads" in res.stderr
    assert res.stderr.count("\n") == 1


def test_default_baseline_dir_is_under_the_cwd(runs, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ATTNBENCH_BASELINE_DIR"}
    res = subprocess.run(
        [sys.executable, "-m", "attnbench", "baseline", "save", "b1", str(runs["base"])],
        capture_output=True, text=True, cwd=tmp_path, env={**env, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert (tmp_path / ".attnbench" / "baselines" / "b1" / "baseline.json").is_file()


def test_rounds_travel_through_the_run_directory_and_slow_ones_are_set_aside(tmp_path):
    def rows(state: list[float], seed: int) -> list[dict]:
        out = []
        for i, p in enumerate(PIDS):
            per = state if i == 0 else [1.0, 1.0, 1.0]
            out.append(
                {"point_id": p, "rounds": [samples((1 + i) * f, 12, 0.02, seed + 7 * i + r) for r, f in enumerate(per)]}
            )
        return out

    base = write_run(tmp_path / "base", rows([1.0, 1.0, 2.0], 0))
    cur = write_run(tmp_path / "cur", rows([2.0, 1.0, 2.0], 500))
    import pandas as pd

    smp = pd.read_parquet(base / "samples.parquet")
    assert sorted(smp[smp.point_id == PIDS[0]]["round"].unique()) == [0, 1, 2]
    res = attnbench("compare", str(base), str(cur), "--json")
    assert res.returncode == 0, res.stderr
    p0 = json.loads(res.stdout)["points"][0]
    assert p0["verdict"] == "unchanged" and (p0["base_rounds"], p0["cur_rounds"]) == ("2/3", "1/3")
    res = attnbench("compare", str(base), str(cur), "--json", "--round-window", "0")
    assert json.loads(res.stdout)["points"][0]["verdict"] == "inconclusive"
    res = attnbench("compare", str(base), str(cur), "--round-window", "1.5")
    assert res.returncode == 2 and res.stderr.strip() == (
        "error: --round-window 1.5: expected a number from 0 (keep every round) to below 1"
    )
