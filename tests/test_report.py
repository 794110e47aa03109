"""Report generation from the stored fixture run, its escaping, and `attnbench report` exit codes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.report import build
from attnbench.report.html import script_json
from attnbench.report.markdown import escape

FIXTURE = Path(__file__).parent / "fixtures" / "report_run"
EVIL = "<img src=x onerror=alert(1)>"
runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the fixture run with its report written (RUN_DIR/report/)."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    shutil.copytree(FIXTURE, run_dir)
    build(run_dir)
    return run_dir / "report"


def test_build_writes_markdown_html_and_charts(built: Path) -> None:
    assert (built / "report.md").stat().st_size > 0
    assert (built / "report.html").stat().st_size > 0
    for key in ("latency", "memory", "throughput", "speedup", "correctness"):
        for ext in ("png", "svg"):
            assert (built / "charts" / f"{key}.{ext}").stat().st_size > 1000, (key, ext)
    assert not (built / "charts" / "tflops.png").exists()  # no tflops column in this run


def test_markdown_states_the_numbers_and_links_charts(built: Path) -> None:
    md = (built / "report.md").read_text()
    assert "softmax fwd: time ∝ N^2.00" in md
    assert "linear-chunked fwd: time ∝ N^1.00" in md
    assert "faster from N ≈ 1000 (between measured 512 and 1024)" in md
    assert "](charts/latency.png)" in md and "](charts/latency.svg)" in md
    assert "| oom | out of memory: tried to allocate 4.0 GiB (CPU) |" in md
    assert "timeout" in md and "crashed" in md and "skipped" in md


def test_markdown_has_no_raw_html(built: Path) -> None:
    md = (built / "report.md").read_text()
    assert re.search(r"(?<!\\)<", md) is None, "an unescaped '<' would be raw HTML"
    assert escape(EVIL) in md


def test_html_is_self_contained_and_escaped(built: Path) -> None:
    page = (built / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert EVIL not in page and "<script>alert" not in page and "<b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Evil &lt;script&gt;alert(2)&lt;/script&gt; CPU" in page
    # the points table: the JSON block parses and carries the raw strings back
    blob = re.search(r'<script type="application/json" id="results-data">(.*?)</script>', page, re.S)
    assert blob is not None
    data = json.loads(blob.group(1))
    assert len(data["rows"]) == 60
    assert EVIL in {r[0] for r in data["rows"]}
    assert page.count("<script") == 2  # the JSON block and the table script, nothing injected


def test_script_json_cannot_break_out() -> None:
    text = script_json({"x": "</script><script>alert(1)</script> & <!--"})
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"x": "</script><script>alert(1)</script> & <!--"}


def test_cli_report_formats_and_out(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    res = runner.invoke(app, ["report", str(run_dir), "--format", "md", "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "report.md").exists() and not (tmp_path / "rep" / "report.html").exists()
    res = runner.invoke(app, ["report", str(run_dir), "--format", "html", "--baseline", "sdpa"])
    assert res.exit_code == 0, res.output
    assert (run_dir / "report" / "report.html").exists()
    assert "Speedup over sdpa" in (run_dir / "report" / "report.html").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/run"], "does not exist"),
        ([str(FIXTURE / "journal.jsonl")], "does not exist"),
        ([str(FIXTURE), "--format", "pdf"], "--format 'pdf': expected md, html or both"),
        ([str(FIXTURE), "--baseline", "nope"], "--baseline 'nope': not an impl of this run"),
    ],
)
def test_cli_report_user_errors(args: list[str], message: str, tmp_path: Path) -> None:
    res = runner.invoke(app, ["report", *args, "--out", str(tmp_path / "out")])
    assert res.exit_code == 2
    assert message in res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_cli_report_dir_without_metadata(tmp_path: Path) -> None:
    res = runner.invoke(app, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "no metadata.json" in res.output


def test_cli_import_stays_light() -> None:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import attnbench.cli"], capture_output=True, text=True, check=True
    ).stderr
    heavy = [m for m in ("torch", "pandas", "seaborn", "matplotlib") if re.search(rf"\|\s+{m}(\.|$)", out, re.M)]
    assert heavy == []


@pytest.mark.slow
def test_run_writes_the_report_by_default(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "run",
            "--suite",
            "smoke",
            "--impl",
            "sdpa,linear-cumsum",
            "--set",
            "N=64",
            "--set",
            "pass=fwd",
            "--set",
            "causal=true",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (out / "report" / "report.md").exists() and (out / "report" / "report.html").exists()


def test_dollar_signs_in_names_are_not_mathtext(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    journal = run_dir / "journal.jsonl"
    journal.write_text(journal.read_text().replace('"linear-recurrent"', '"cost $x^2$ $bad{"'))
    written = build(run_dir, formats=("md",), baseline="cost $x^2$ $bad{")
    assert (written["charts"] / "speedup.png").exists()
