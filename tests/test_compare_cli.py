"""`attnbench compare`, `baseline` and `export` through the real CLI (subprocess), on synthetic runs."""

from __future__ import annotations

import json
import os
import re
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
    assert "| 🔴 | impl0/fwd/causal/float32/N0 | regressed | +" in text
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


def test_rounds_faults_and_references_travel_through_the_run_directory(tmp_path):
    """Per-round page faults and machine references go through results.parquet (round_* lists)
    to the gate: a point whose rounds fault in different proportions is compared state by state."""

    def rows(states: list[int], seed: int, ref: float) -> list[dict]:
        out = []
        for i, p in enumerate(PIDS):
            faults = states if i == 0 else [0] * 7
            per = [(1 + i) * (2.0 if f else 1.0) * ref / 0.3 for f in faults]
            out.append(
                {
                    "point_id": p,
                    "rounds": [samples(m, 12, 0.01, seed + 7 * i + r) for r, m in enumerate(per)],
                    "faults": [3041.0 * f for f in faults],
                    "refs": [ref] * 7,
                }
            )
        return out

    base = write_run(tmp_path / "base", rows([0, 0, 1, 0, 1, 0, 0], 0, 0.3))
    cur = write_run(tmp_path / "cur", rows([1, 1, 0, 1, 1, 0, 0], 500, 0.36))  # the machine 20 % slower
    import pandas as pd

    df = pd.read_parquet(base / "results.parquet")
    row = df[df.point_id == PIDS[0]].iloc[0]
    assert list(row["round_faults_per_call"]) == [0, 0, 3041, 0, 3041, 0, 0] and row["faults_per_call"] == 0
    assert list(row["round_ref_ms"]) == [0.3] * 7
    res = attnbench("compare", str(base), str(cur), "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["shift"] == pytest.approx(1.2) and doc["shift_measured"] is True
    p0 = doc["points"][0]
    assert p0["verdict"] == "unchanged" and p0["unit"] == "rounds", p0
    assert (p0["base_rounds"], p0["cur_rounds"]) == ("7/7", "7/7")
    assert {p["verdict"] for p in doc["points"]} == {"unchanged"}
    res = attnbench("compare", str(base), str(cur), "--json", "--no-normalize")
    assert res.returncode == 1 and json.loads(res.stdout)["counts"]["regressed"] == len(PIDS)


@pytest.mark.parametrize(
    "opt,value,expected",
    [
        ("--confidence", "1.5", "expected a number between 0 and 1"),
        ("--confidence", "0", "expected a number between 0 and 1"),
        ("--confidence", "-1", "expected a number between 0 and 1"),
        ("--confidence", "nan", "expected a number between 0 and 1"),
        ("--alpha", "1", "expected a number between 0 and 1"),
        ("--alpha", "-0.5", "expected a number between 0 and 1"),
        ("--alpha", "inf", "expected a number between 0 and 1"),
        ("--min-samples", "0", "expected a positive integer"),
        ("--min-rounds", "1", "expected an integer of at least 2"),
        ("--max-missing", "1.5", "expected a share from 0 to 1"),
        ("--max-missing", "-0.1", "expected a share from 0 to 1"),
        ("-t", "latency:1e999%", "expected a finite value above 0"),
        ("-t", "latency:0%", "expected a finite value above 0"),
        ("-t", "latency:1000%", "expected a relative change below 1000%"),
        ("-t", "latency:abc", "expected FIELD:VALUE"),
    ],
)
def test_out_of_range_options_are_one_line_exit_2(runs, opt, value, expected):
    res = attnbench("compare", str(runs["base"]), str(runs["same"]), opt, value)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert expected in res.stderr and value in res.stderr, res.stderr


@pytest.mark.parametrize("which,code", [("same", 0), ("slow", 1)])
def test_a_closed_pipe_keeps_the_verdicts_exit_code(runs, which, code):
    """`attnbench compare ... | head`: the reader is gone before the output is written."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    for fmt in ([], ["--json"], ["--all"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "attnbench", "compare", str(runs["base"]), str(runs[which]), *fmt],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # like `head` exiting before attnbench writes
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=120) == code, err
        assert "Traceback" not in err and "BrokenPipe" not in err, err


def test_missing_points_fail_the_gate_unless_allowed(runs, tmp_path):
    part = write_run(tmp_path / "part", _rows(seed=50)[:5], meta={"interrupted": True, "planned_points": 8})
    res = attnbench("compare", str(runs["base"]), str(part), "--json")
    assert res.returncode == 1, res.stderr
    doc = json.loads(res.stdout)
    assert doc["counts"]["missing"] == 3 and doc["counts"]["regressed"] == 0
    assert doc["failures"] == [
        "the current run lacks 3 of the baseline's 8 points (38%), more than max_missing 5%; "
        "pass --allow-missing to accept it"
    ]
    assert "the current run was interrupted: 5 of 8 planned points stored" in doc["notes"]
    ok = attnbench("compare", str(runs["base"]), str(part), "--allow-missing")
    assert ok.returncode == 0 and "interrupted" in ok.stdout and "lacks 3 of the baseline's 8 points" in ok.stdout
    assert attnbench("compare", str(runs["base"]), str(part), "--max-missing", "0.5").returncode == 0
    text = attnbench("compare", str(runs["base"]), str(part)).stdout
    assert "gate failed: the current run lacks 3" in text


def test_one_missing_point_of_many_is_a_note(tmp_path):
    pids = [f"p{i}/fwd/N{i}" for i in range(25)]
    base = write_run(
        tmp_path / "b", [{"point_id": p, "samples": samples(1.0, 30, 0.02, i)} for i, p in enumerate(pids)]
    )
    cur = write_run(
        tmp_path / "c", [{"point_id": p, "samples": samples(1.0, 30, 0.02, 50 + i)} for i, p in enumerate(pids[1:])]
    )
    res = attnbench("compare", str(base), str(cur), "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["failures"] == []
    assert "the current run lacks 1 of the baseline's 25 points (4%)" in json.loads(res.stdout)["notes"]


HOSTILE = [
    "evil|name\nwith a newline",
    "<img src=x onerror=alert(1)>",
    "</script><script>alert(1)</script>",
    "tick`|`pipe",
    "\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\x1b[2J",
]


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("hostile")
    rows = lambda f, seed: [  # noqa: E731
        {"point_id": f"{name}/fwd/N{i}", "samples": samples((1 + i) * f, 30, 0.02, seed + i), "error": name}
        for i, name in enumerate(HOSTILE)
    ]
    return write_run(d / "b", rows(1.0, 0)), write_run(d / "c", rows(1.5, 50))


def test_markdown_escapes_names_and_reasons(hostile, tmp_path):
    md = tmp_path / "s.md"
    res = attnbench("compare", str(hostile[0]), str(hostile[1]), "--markdown", str(md), "--all")
    assert res.returncode == 1, res.stderr
    text = md.read_text()
    table = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len(table) == 1 + len(HOSTILE)  # the header and one line per point: no name broke a row
    assert {len(re.split(r"(?<!\\)\|", ln)) for ln in table} == {11}  # unescaped pipes: 10 cells a row
    assert "<img" not in text and "</script>" not in text and "\x1b" not in text
    assert "&lt;img src=x onerror=alert(1)&gt;" in text and "tick\\`\\|\\`pipe" in text
    cmarkgfm = pytest.importorskip("cmarkgfm", reason="cmarkgfm is in the test extra")
    from cmarkgfm.cmark import Options

    html = cmarkgfm.github_flavored_markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE)
    assert "<img" not in html and "<script>" not in html and html.count("<tr>") == 1 + len(HOSTILE)


def test_terminal_output_is_safe_and_fits_80_columns(hostile):
    res = attnbench("compare", str(hostile[0]), str(hostile[1]), "--all")
    assert res.returncode == 1
    assert "\x1b" not in res.stdout and "\x07" not in res.stdout
    assert max(len(line) for line in res.stdout.splitlines()) <= 80
    assert "evil|name with a newline/fwd/N0" in res.stdout.replace("\n", " ")
    assert "regressed" in res.stdout and re.search(r"\+(49|50|51)\.\d%", res.stdout)


def test_json_carries_the_config_and_the_units(runs):
    doc = json.loads(attnbench("compare", str(runs["base"]), str(runs["same"]), "--json").stdout)
    assert doc["config"]["min_rounds"] == 3 and doc["config"]["max_missing"] == 0.05
    assert doc["shift_measured"] is False and doc["failures"] == []
    assert {p["unit"] for p in doc["points"]} == {"samples"}
