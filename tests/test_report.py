"""Report generation from the stored fixture run: the Markdown rendered by GitHub's own GFM
renderer (cmarkgfm) and checked, the HTML's escaping and structure, and `attnbench report`
exit codes."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.report import build

FIXTURE = Path(__file__).parent / "fixtures" / "report_run"
EXAMPLE = Path(__file__).parents[1] / "reports" / "example-cpu-seqlen" / "run"
EVIL = "<img src=x onerror=alert(1)>"
runner = CliRunner()
# Tags report.md may produce once rendered: GFM's own, plus the <details>/<summary> it writes.
MD_TAGS = {
    "h2",
    "h3",
    "h4",
    "p",
    "em",
    "strong",
    "ul",
    "li",
    "table",
    "thead",
    "tbody",
    "tr",
    "th",
    "td",
    "details",
    "summary",
}


class Tags(HTMLParser):
    """Every start tag of a document with its attributes, and its text."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def gfm(md: str) -> str:
    """report.md as GitHub renders it (raw HTML let through: we check it ourselves)."""
    cmarkgfm = pytest.importorskip("cmarkgfm", reason="cmarkgfm is in the test extra")
    from cmarkgfm.cmark import Options

    return cmarkgfm.github_flavored_markdown_to_html(md, options=Options.CMARK_OPT_UNSAFE)


def parse(page: str) -> Tags:
    p = Tags()
    p.feed(page)
    return p


def gfm_tables(rendered: str) -> dict[str, list[list[str]]]:
    """Each rendered table as rows of cell text, keyed by its first header cell + the row count."""
    out = {}
    for i, t in enumerate(re.findall(r"<table>(.*?)</table>", rendered, re.S)):
        rows = [
            [
                html.unescape(re.sub(r"<[^>]+>", "", c)).strip()
                for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", tr, re.S)
            ]
            for tr in re.findall(r"<tr>(.*?)</tr>", t, re.S)
        ]
        out[f"{i}"] = rows
    return out


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


def test_markdown_renders_as_a_job_summary(built: Path) -> None:
    md = (built / "report.md").read_text()
    rendered = gfm(md)
    tags = parse(rendered)
    assert {t for t, _ in tags.tags} <= MD_TAGS, {t for t, _ in tags.tags} - MD_TAGS
    assert not any(t == "img" or "href" in a or "src" in a for t, a in tags.tags)  # no links without --assets-url
    assert "](charts/" not in md
    text = "".join(tags.text)
    assert EVIL in text and "<script>" not in rendered  # hostile strings are text
    assert rendered.count("<details>") >= 2 and rendered.count("<details>") == rendered.count("</details>")
    assert "3 of 45 measured points are noisy" in text and "machine busy?" in text
    assert len(md.splitlines()) < 100


def test_markdown_findings_table_states_the_numbers(built: Path) -> None:
    rendered = gfm((built / "report.md").read_text())
    findings = next(t for t in gfm_tables(rendered).values() if t[0][:2] == ["impl", "pass"] and "family" in t[0])
    head = findings[0]
    rows = {(r[0], r[1]): dict(zip(head, r, strict=True)) for r in findings[1:]}
    assert rows[("softmax", "fwd")]["time ∝ N^"] == "2.00"
    assert rows[("linear-chunked", "fwd")]["time ∝ N^"] == "1.00"
    # default baseline sdpa (5e-6 N^2 ms) against linear-chunked (1e-2 N ms): crossing at N = 2000
    assert rows[("linear-chunked", "fwd")]["faster than sdpa"] == "from N ≈ 2000"
    assert rows[("linear-chunked", "fwd")]["× sdpa (largest common N)"] == "2.05× at 4096"
    assert rows[("sdpa", "fwd")]["faster than sdpa"] == "baseline"
    assert rows[("softmax", "fwd")]["largest N"] == "2048"  # oom at 4096
    assert rows[("softmax", "fwd")]["time there"] == "41.9 ms"  # 1e-5 * 2048^2
    assert rows[("softmax", "fwd")]["noisy"] == "1 of 4 ≈"
    assert rows[("linear-chunked", "fwd")]["noisy"] == "0"  # 5 % other CPU is under the threshold
    assert rows[("linear-recurrent", "fwd")]["family"] == "linear"


def test_markdown_lists_what_the_charts_leave_out(built: Path) -> None:
    text = "".join(parse(gfm((built / "report.md").read_text())).text)
    assert "softmax: oom at N=4096, fwd, fwdbwd: out of memory: tried to allocate 4.0 GiB (CPU)" in text
    assert "linear-recurrent: skipped at N 1024–4096 (3 sizes), fwd, fwdbwd" in text
    assert "linear-cumsum: timeout at N=4096, fwdbwd" in text


def test_markdown_numbers_carry_marks(built: Path) -> None:
    rendered = gfm((built / "report.md").read_text())
    pivot = next(t for t in gfm_tables(rendered).values() if "N=2048" in t[0] and len(t[0]) == 7)
    cells = {(r[0], r[1]): r[2:] for r in pivot[1:]}
    assert cells[("softmax", "fwd")][3] == "41.9 ms ≈" and cells[("softmax", "fwd")][4] == "OOM"
    assert cells[("sdpa", "fwd")][2] == "5.24 ms ≈"  # busy CPU
    assert cells[(EVIL, "fwd")][1] == "15.4 ms ✗"  # failed correctness
    assert cells[("linear-chunked", "fwd")][0] == "2.56 ms"


def test_markdown_with_assets_url_links_the_charts(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    written = build(run_dir, formats=("md",), assets_url="https://example.org/artifacts/42/charts/")
    tags = parse(gfm(written["md"].read_text()))
    srcs = [a["src"] for t, a in tags.tags if t == "img"]
    assert srcs[:3] == [f"https://example.org/artifacts/42/charts/{k}.png" for k in ("latency", "memory", "speedup")]
    assert [a["alt"] for t, a in tags.tags if t == "img"][:1] == ["Latency vs sequence length"]


def test_html_is_self_contained_and_escaped(built: Path) -> None:
    page = (built / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)
    assert EVIL not in page and "<script>alert" not in page and "<b>" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "Evil &lt;script&gt;alert(2)&lt;/script&gt; CPU" in page
    blob = re.search(r'<script type="application/json" id="results-data">(.*?)</script>', page, re.S)
    assert blob is not None
    data = json.loads(blob.group(1))
    assert len(data["rows"]) == 60 and len(data["text"]) == 60
    assert EVIL in {r[0] for r in data["rows"]}
    assert page.count("<script") == 2  # the JSON block and the table script, nothing injected


def test_html_has_a_toc_collapsible_sections_and_marks(built: Path) -> None:
    page = (built / "report.html").read_text()
    tags = parse(page).tags
    toc = [a["href"] for t, a in tags if t == "a"]
    ids = {a["id"] for _, a in tags if a.get("id")}
    assert toc[:3] == ["#latency", "#memory", "#numbers"] and all(h[1:] in ids for h in toc)
    sections = [a for t, a in tags if t == "details" and a.get("class") == "section"]
    assert len(sections) == len(toc)
    assert sum(1 for t, a in tags if t == "td" and "noisy" in (a.get("class") or "")) >= 3
    warned = [a["data-fact"] for t, a in tags if t == "li" and "warn" in (a.get("class") or "")]
    assert warned == ["noise", "correctness"]
    assert "3 of 45 measured points are noisy" in page
    assert [a.get("class") for t, a in tags if t == "aside"] == [None] * 5  # a skip list beside each chart


def test_tojson_cannot_break_out(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    journal = run_dir / "journal.jsonl"
    journal.write_text(journal.read_text().replace("no kernel", "</script><script>alert(9)</script> & <!--"))
    page = build(run_dir, formats=("html",))["html"].read_text()
    blob = page.split('id="results-data">')[1].split("</script>")[0]
    assert "<" not in blob and ">" not in blob and "&" not in blob.replace("\\u0026", "")
    assert "</script><script>alert(9)</script> & <!--" in json.dumps(json.loads(blob), ensure_ascii=False)


def test_cli_report_formats_and_out(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURE, run_dir)
    res = runner.invoke(app, ["report", str(run_dir), "--format", "md", "--out", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "rep" / "report.md").exists() and not (tmp_path / "rep" / "report.html").exists()
    res = runner.invoke(app, ["report", str(run_dir), "--format", "html", "--baseline", "softmax"])
    assert res.exit_code == 0, res.output
    assert (run_dir / "report" / "report.html").exists()
    assert "Speedup over softmax" in (run_dir / "report" / "report.html").read_text()
    res = runner.invoke(app, ["report", str(run_dir), "--format", "md", "--assets-url", "https://x.test/c"])
    assert res.exit_code == 0, res.output
    assert "](https://x.test/c/latency.png)" in (run_dir / "report" / "report.md").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["/nonexistent/run"], "does not exist"),
        ([str(FIXTURE / "journal.jsonl")], "does not exist"),
        ([str(FIXTURE), "--format", "pdf"], "--format 'pdf': expected md, html or both"),
        ([str(FIXTURE), "--baseline", "nope"], "--baseline 'nope': not an impl of this run"),
        ([str(FIXTURE), "--assets-url", " "], "--assets-url"),
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
    heavy = [
        m for m in ("torch", "pandas", "seaborn", "matplotlib", "jinja2") if re.search(rf"\|\s+{m}(\.|$)", out, re.M)
    ]
    assert heavy == []


@pytest.mark.slow
def test_seqlen_example_markdown_is_a_short_summary(tmp_path: Path) -> None:
    """The stored seqlen run (126 points, 9 impls) gives a job summary under 100 lines."""
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE} is not in this checkout")
    for url in (None, "https://example.org/charts"):
        md = build(EXAMPLE, formats=("md",), out=tmp_path / "rep", assets_url=url)["md"].read_text()
        assert len(md.splitlines()) < 100, len(md.splitlines())
        text = "".join(parse(gfm(md)).text)
        assert "of 76 measured points are noisy" in text
        assert "e+" not in text and not re.search(r"\d\.\d+e-\d", text.split("Marks:")[0].replace("max err", ""))


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
