"""Issue 13's bad-input table: suites, CLI values, corrupted run directories and hostile names.
Every case is a one-line error with exit code 2 (or a row with a status), never a traceback,
and a refused `run` creates nothing. The CLI runs in-process (typer's CliRunner): no interpreter
start per case."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.cli import app

FIXTURES = Path(__file__).resolve().parent / "fixtures"
V1 = FIXTURES / "v1_run"  # a real run (schema 1): copied, then damaged
ESC = "\x1b"

GOOD_SUITE = """
name = "t"
[params]
impl = ["linear-chunked"]
N = [16]
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


def _suite(text: str | bytes) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        if isinstance(text, bytes):
            (tmp / "s.toml").write_bytes(text)
        else:
            (tmp / "s.toml").write_text(text)
        return ["run", "--suite", "s.toml", "--no-report"]

    return make


def _suite_edit(old: str, new: str) -> Callable[[Path], list[str]]:
    assert old in GOOD_SUITE, old
    return _suite(GOOD_SUITE.replace(old, new, 1))


def _run(*args: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / "s.toml").write_text(GOOD_SUITE)
        return ["run", "--suite", "s.toml", "--no-report", *args]

    return make


def _damaged(edit: Callable[[Path], None], *command: str) -> Callable[[Path], list[str]]:
    """A copy of a real run at tmp/run, damaged by ``edit``, then ``command`` (RUN = its path)."""

    def make(tmp: Path) -> list[str]:
        run = tmp / "run"
        shutil.copytree(V1, run)
        edit(run)
        return [str(run) if a == "RUN" else a for a in command]

    return make


def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        path = run / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return edit


def _truncate(name: str, keep: int = 100) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        path = run / name
        path.write_bytes(path.read_bytes()[:keep])

    return edit


def _remove(name: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        (run / name).unlink()

    return edit


def _as_dir(name: str) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        (run / name).unlink()
        (run / name).mkdir()

    return edit


def _both(*edits: Callable[[Path], None]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        for e in edits:
            e(run)

    return edit


def _nothing(_run: Path) -> None:
    return None


def _saved_then_truncated(run: Path) -> None:
    """A run saved as baseline b1 whose stored results.parquet is damaged afterwards."""
    res = _invoke(["baseline", "save", "b1", str(run)])
    assert res.exit_code == 0, res.stderr
    saved = Path(res.stdout.split(" in ", 1)[1].strip()) / "results.parquet"
    saved.write_bytes(saved.read_bytes()[:100])


def _plain(*args: str) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        (tmp / "afile").write_text("x")
        return [a.replace("TMP", str(tmp)) for a in args]

    return make


# (case id, how to build the command in a temp dir, text the one-line error must contain)
CASES: list[tuple[str, Callable[[Path], list[str]], str]] = [
    # --- suite files -----------------------------------------------------------------------
    ("suite-not-toml", _suite("this is [not toml"), "not valid TOML"),
    ("suite-binary", _suite(b"\xff\xfe\x00name"), "s.toml"),
    ("suite-no-params", _suite('name = "t"\n'), "[params]"),
    ("suite-N-negative", _suite_edit("N = [16]", "N = [-16]"), "N"),
    ("suite-N-zero", _suite_edit("N = [16]", "N = [0]"), "N"),
    ("suite-N-string", _suite_edit("N = [16]", 'N = ["abc"]'), "N"),
    ("suite-N-float", _suite_edit("N = [16]", "N = [1e30]"), "N"),
    ("suite-N-empty", _suite_edit("N = [16]", "N = []"), "N"),
    ("suite-B-zero", _suite_edit("B = 1", "B = 0"), "B"),
    ("suite-D-negative", _suite_edit("D = 8", "D = -3"), "D"),
    ("suite-unknown-param", _suite_edit("B = 1", "B = 1\nQ = 3"), "Q"),
    ("suite-unknown-table", _suite(GOOD_SUITE + "\n[bogus]\nx = 1\n"), "bogus"),
    ("suite-impl-unknown", _suite_edit('impl = ["linear-chunked"]', 'impl = ["nosuch"]'), "unknown implementation 'nosuch'"),
    ("suite-impl-empty", _suite_edit('impl = ["linear-chunked"]', "impl = []"), "impl"),
    ("suite-impl-escape", _suite_edit('impl = ["linear-chunked"]', 'impl = ["evil\\u001b[2J"]'), "unknown implementation"),
    ("suite-dtype", _suite_edit('pass = "fwd"', 'pass = "fwd"\ndtype = "float8"'), "dtype"),
    ("suite-pass", _suite_edit('pass = "fwd"', 'pass = "sideways"'), "pass"),
    ("suite-causal", _suite_edit('pass = "fwd"', 'pass = "fwd"\ncausal = "maybe"'), "causal"),
    ("suite-max-time-negative", _suite_edit("max_time_s = 0.01", "max_time_s = -1"), "max_time_s"),
    ("suite-timeout-nan", _suite_edit("max_time_s = 0.01", "max_time_s = 0.01\ntimeout_s = nan"), "timeout_s"),
    ("suite-timeout-inf", _suite_edit("max_time_s = 0.01", "max_time_s = 0.01\ntimeout_s = inf"), "timeout_s"),
    ("suite-rounds-zero", _suite_edit("max_time_s = 0.01", "max_time_s = 0.01\nrounds = 0"), "rounds"),
    ("suite-timing-unknown", _suite_edit("max_time_s = 0.01", "max_time_s = 0.01\nwarp = 9"), "warp"),
    ("suite-is-directory", lambda t: (t / "d.toml").mkdir() or ["run", "--suite", "d.toml"], "d.toml"),
    ("suite-missing-file", _plain("run", "--suite", "TMP/none.toml"), "none.toml"),
    ("suite-unknown-name", _plain("run", "--suite", "nosuch"), "unknown suite 'nosuch'"),
    ("suite-empty-name", _plain("run", "--suite", ""), "suite"),
    # --- option values ---------------------------------------------------------------------
    ("threads-zero", _run("--threads", "0"), "--threads 0: expected a positive integer"),
    ("threads-negative", _run("--threads", "-2"), "--threads -2"),
    ("rounds-zero", _run("--rounds", "0"), "--rounds 0"),
    ("max-time-zero", _run("--max-time", "0"), "--max-time 0"),
    ("max-time-nan", _run("--max-time", "nan"), "--max-time nan"),
    ("timeout-nan", _run("--timeout", "nan"), "--timeout nan: expected a positive, finite number"),
    ("timeout-inf", _run("--timeout", "inf"), "--timeout inf"),
    ("timeout-negative", _run("--timeout", "-5"), "--timeout -5"),
    ("device-unknown", _run("--device", "tpu"), "--device 'tpu'"),
    ("device-empty", _run("--device", ""), "--device ''"),
    ("dtype-unknown", _run("--dtype", "float8"), "float8"),
    ("impl-unknown", _run("--impl", "nosuch"), "unknown implementation 'nosuch'"),
    ("impl-escape", _run("--impl", "x\x1b]8;;http://e\x07y"), "unknown implementation"),
    ("set-no-equals", _run("--set", "N"), "N"),
    ("set-no-key", _run("--set", "=3"), "--set"),
    ("set-no-value", _run("--set", "N="), "N"),
    ("set-unknown-key", _run("--set", "foo=1"), "foo"),
    ("set-bad-int", _run("--set", "N=1,abc"), "N expects integers, got 'abc'"),
    ("set-negative", _run("--set", "N=-1"), "N"),
    ("set-bad-pass", _run("--set", "pass=sideways"), "sideways"),
    ("set-bad-causal", _run("--set", "causal=maybe"), "maybe"),
    # --- run directories to create or resume -------------------------------------------------
    ("out-is-file", _run("--out", "afile-out"), "exists and is not a directory"),
    ("out-under-file", _run("--out", "afile-out/sub"), "cannot be created or written"),
    ("out-in-proc", _run("--out", "/proc/attnbench-x"), "cannot be created or written"),
    ("out-empty", _run("--out", ""), "--out '.': directory is not empty"),  # typer makes '' the path '.'
    ("out-control-chars", _run("--out", "run\x1b[2J"), "no control characters"),
    ("out-not-empty", _run("--out", "."), "directory is not empty"),
    ("resume-missing", _plain("run", "--resume", "TMP/none"), "no plan.json there"),
    ("resume-file", _plain("run", "--resume", "TMP/afile"), "no plan.json there"),
    ("resume-empty-dir", lambda t: (t / "e").mkdir() or ["run", "--resume", str(t / "e")], "no plan.json there"),
    ("resume-plan-garbage", _damaged(_write("plan.json", "{not json"), "run", "--resume", "RUN"), "plan.json: not a plan"),
    ("resume-plan-no-points", _damaged(_write("plan.json", '{"meta": {}}'), "run", "--resume", "RUN"), "plan.json"),
    ("resume-plan-bad-point", _damaged(_write("plan.json", '{"points": [{"impl": 3}], "meta": {"device": "cpu"}}'), "run", "--resume", "RUN"), "plan.json"),
    ("resume-no-metadata", _damaged(_remove("metadata.json"), "run", "--resume", "RUN"), "no metadata.json"),
    ("resume-conflicting-threads", _damaged(_nothing, "run", "--resume", "RUN", "--threads", "7"), "--threads 7: conflicts"),
    ("resume-journal-is-dir", _damaged(_as_dir("journal.jsonl"), "run", "--resume", "RUN"), "journal.jsonl: cannot be read"),
    # --- damaged runs for report, export, compare, baseline ----------------------------------
    ("report-missing-dir", _plain("report", "TMP/none"), "does not exist"),
    ("report-on-file", _plain("report", "TMP/afile"), "afile"),
    ("report-metadata-garbage", _damaged(_write("metadata.json", "{oops"), "report", "RUN"), "metadata.json: not valid JSON"),
    ("report-metadata-list", _damaged(_write("metadata.json", "[1, 2]"), "report", "RUN"), "expected a JSON object"),
    ("report-metadata-only-version", _damaged(_write("metadata.json", '{"schema_version": 2}'), "report", "RUN"), "no 'suite'"),
    ("report-metadata-future", _damaged(_write("metadata.json", '{"schema_version": 99, "suite": {}, "device": "cpu"}'), "report", "RUN"), "schema_version 99"),
    ("report-metadata-binary", _damaged(_write("metadata.json", b"\xff\xfe\x00"), "report", "RUN"), "metadata.json"),
    ("report-results-truncated", _damaged(_truncate("results.parquet"), "report", "RUN"), "results.parquet: not a readable Parquet file"),
    ("report-samples-truncated", _damaged(_truncate("samples.parquet"), "report", "RUN"), "samples.parquet: not a readable Parquet file"),
    ("report-results-empty", _damaged(_write("results.parquet", b""), "report", "RUN"), "results.parquet"),
    ("report-bad-format", _damaged(_nothing, "report", "RUN", "--format", "pdf"), "pdf"),
    ("export-results-truncated", _damaged(_truncate("results.parquet"), "export", "RUN"), "results.parquet: not a readable Parquet file"),
    ("export-csv-truncated", _damaged(_truncate("results.parquet"), "export", "RUN", "--format", "csv"), "results.parquet"),
    ("export-samples-truncated", _damaged(_truncate("samples.parquet"), "export", "RUN"), "samples.parquet"),
    ("export-bad-format", _damaged(_nothing, "export", "RUN", "--format", "xml"), "--format 'xml'"),
    ("export-missing-dir", _damaged(_nothing, "export", "RUN", "-o", "RUN/none/out.json"), "does not exist"),
    ("export-out-is-dir", _damaged(_nothing, "export", "RUN", "-o", "RUN"), "is a directory"),
    ("export-metadata-only-version", _damaged(_write("metadata.json", '{"schema_version": 1}'), "export", "RUN"), "no 'suite'"),
    ("compare-results-truncated", _damaged(_truncate("results.parquet"), "compare", "RUN", "RUN"), "results.parquet"),
    ("compare-samples-truncated", _damaged(_truncate("samples.parquet"), "compare", "RUN", "RUN"), "samples.parquet"),
    ("compare-markdown-is-dir", _damaged(_nothing, "compare", "RUN", "RUN", "--markdown", "RUN"), "RUN"),
    ("compare-missing", _plain("compare", "TMP/none", "TMP/none2"), "none"),
    ("compare-baseline-corrupt", _damaged(_saved_then_truncated, "compare", "RUN", "--baseline", "b1"), "results.parquet"),
    ("baseline-save-bad-name", _damaged(_nothing, "baseline", "save", "../x", "RUN"), "baseline name '../x'"),
    ("baseline-save-metadata-only-version", _damaged(_write("metadata.json", '{"schema_version": 2}'), "baseline", "save", "b2", "RUN"), "no 'suite'"),
    ("compare-baseline-missing", _damaged(_nothing, "compare", "RUN", "--baseline", "nosuch"), "baseline 'nosuch': not found"),
]  # fmt: skip


def test_the_table_has_at_least_60_cases():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ATTNBENCH_BASELINE_DIR", str(tmp_path / "baselines"))
    (tmp_path / "afile-out").write_text("x")
    return tmp_path


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args, catch_exceptions=True)


@pytest.mark.parametrize("case,make,needle", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2(in_tmp, case, make, needle):
    args = make(in_tmp)
    before = sorted(p.name for p in in_tmp.iterdir())
    res = _invoke(args)
    err = res.stderr
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert res.exit_code == 2, (res.exit_code, err, res.stdout[-500:])
    assert "Traceback" not in err + res.stdout
    line = err.strip()
    assert line.startswith("error:") and "\n" not in line, err
    assert needle.replace("RUN", str(in_tmp / "run")).replace("TMP", str(in_tmp)) in line, line
    assert ESC not in line and "\x07" not in line, repr(line)
    if args[0] == "run" and "--resume" not in args:  # refused before anything was created
        assert sorted(p.name for p in in_tmp.iterdir()) == before
        assert not (in_tmp / "runs").exists()


# --- typer's own parse errors: exit 2, no traceback (typer prints its usage box, not one line) ----

PARSE_ERRORS = [
    ["run", "--threads", "abc"],
    ["run", "--max-time", "soon"],
    ["run", "--rounds", "1.5"],
    ["run", "--nosuch-option"],
    ["report"],
    ["compare", "--alpha", "x", "a", "b"],
]


@pytest.mark.parametrize("args", PARSE_ERRORS, ids=[" ".join(a) for a in PARSE_ERRORS])
def test_unparseable_values_exit_2_without_traceback(in_tmp, args):
    res = _invoke(args)
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), (res.exit_code, res.exception)
    assert "Traceback" not in res.stderr + res.stdout
    assert not (in_tmp / "runs").exists()


# --- bad values that reach a worker: a row with a status, never a failed run --------------------

ROW_CASES = [
    ("chunk-size-zero", "[impl_params]\nlinear-chunked = { chunk_size = 0 }\n", "skipped"),
    ("unknown-impl-param", "[impl_params]\nlinear-chunked = { bogus = 1 }\n", "error"),
    ("chunk-size-string", '[impl_params]\nlinear-chunked = { chunk_size = "big" }\n', "skipped"),
]


def test_bad_impl_params_become_rows_with_a_status(in_tmp):
    """One in-process run with three runs' worth of bad impl parameters (each its own run
    directory): each point is a row whose status says what happened, the run exits 0."""
    for case, extra, status in ROW_CASES:
        (in_tmp / f"{case}.toml").write_text(GOOD_SUITE + extra)
        res = _invoke(["run", "--suite", f"{case}.toml", "--out", case, "--no-report", "--json"])
        assert res.exit_code == 0, (case, res.stderr[-2000:], repr(res.exception))
        rows = json.loads(res.stdout)["points"]
        assert len(rows) == 1 and rows[0]["status"] == status and rows[0]["error"], (case, rows)
        assert "\n" not in rows[0]["error"]
