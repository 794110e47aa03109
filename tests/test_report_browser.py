"""The HTML report in headless Chromium: charts render, no console errors, the table sorts
and filters, and the hostile plugin name shows as text and runs nothing.

Needs Playwright's Python package and a Chromium binary (Debian's /usr/bin/chromium, or
$ATTNBENCH_CHROMIUM); skips with the reason otherwise. `playwright install` is not needed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from attnbench.report import build

pytestmark = pytest.mark.browser

FIXTURE = Path(__file__).parent / "fixtures" / "report_run"
EVIL = "<img src=x onerror=alert(1)>"
CHROMIUM = os.environ.get("ATTNBENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium, or set ATTNBENCH_CHROMIUM)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("browser") / "run"
    shutil.copytree(FIXTURE, run_dir)
    return build(run_dir, formats=("html",))["html"]


@pytest.fixture
def page(browser: Any, report_html: Path) -> Iterator[tuple[Any, dict[str, list[str]]]]:
    """The loaded report and what it did: console errors, page errors, dialogs, requests."""
    pg = browser.new_page()
    seen: dict[str, list[str]] = {"console": [], "pageerror": [], "dialog": [], "request": []}
    pg.on("console", lambda m: seen["console"].append(m.text) if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: seen["pageerror"].append(str(e)))

    def on_dialog(d: Any) -> None:
        seen["dialog"].append(d.message)
        d.dismiss()

    pg.on("dialog", on_dialog)
    pg.on("request", lambda r: seen["request"].append(r.url) if not r.url.startswith(("data:", "file:")) else None)
    pg.goto(report_html.as_uri())
    pg.wait_for_load_state("load")
    yield pg, seen
    pg.close()


def _column(pg: Any, name: str) -> list[str]:
    idx = pg.eval_on_selector_all("#results thead th", "(ths, n) => ths.findIndex(th => th.textContent === n)", name)
    return pg.eval_on_selector_all(f"#results tbody tr td:nth-child({idx + 1})", "tds => tds.map(td => td.textContent)")


def test_charts_render_without_errors(page: tuple[Any, dict[str, list[str]]]) -> None:
    pg, seen = page
    imgs = pg.eval_on_selector_all("img", "xs => xs.map(i => [i.className, i.complete, i.naturalWidth])")
    assert len(imgs) == 5
    assert all(cls == "chart" and complete and width > 0 for cls, complete, width in imgs), imgs
    assert seen["console"] == [] and seen["pageerror"] == []
    assert seen["request"] == []  # nothing fetched from anywhere


def test_table_sorts_and_filters(page: tuple[Any, dict[str, list[str]]]) -> None:
    pg, _ = page
    assert pg.text_content("#count") == "60 of 60 points"
    pg.click("#results thead th:text-is('median ms')")
    times = [float(t) for t in _column(pg, "median ms") if t]
    assert times == sorted(times) and len(times) == 45
    assert _column(pg, "median ms")[-1] == ""  # missing values sort last
    pg.click("#results thead th:text-is('median ms')")
    times = [float(t) for t in _column(pg, "median ms") if t]
    assert times == sorted(times, reverse=True)
    assert pg.get_attribute("#results thead th:text-is('median ms')", "aria-sort") == "descending"
    pg.click("#results thead th:text-is('N')")
    ns = [int(n) for n in _column(pg, "N")]
    assert ns == sorted(ns)
    pg.fill("#filter", "oom")
    assert pg.text_content("#count") == "2 of 60 points"
    assert set(_column(pg, "status")) == {"oom"}
    pg.fill("#filter", "")
    pg.select_option("#status-filter", "skipped")
    assert set(_column(pg, "status")) == {"skipped"}


def test_hostile_names_are_text_and_run_nothing(page: tuple[Any, dict[str, list[str]]]) -> None:
    pg, seen = page
    pg.fill("#filter", "onerror")
    assert pg.text_content("#count") == "10 of 60 points"
    pg.click("#results thead th:text-is('impl')")
    assert set(_column(pg, "impl")) == {EVIL}
    assert any("<script>" in e for e in _column(pg, "error"))
    assert EVIL in pg.inner_text("body")  # shown literally in the static tables too
    assert pg.eval_on_selector_all("img", "xs => xs.filter(i => !i.src.startsWith('data:image/png')).length") == 0
    assert pg.eval_on_selector_all("b", "xs => xs.length") == 0
    assert pg.eval_on_selector_all("script", "xs => xs.length") == 2
    assert seen["dialog"] == [] and seen["pageerror"] == []


def test_committed_example_report_renders(browser: Any) -> None:
    example = Path(__file__).parents[1] / "reports" / "example-cpu-seqlen" / "report.html"
    if not example.exists():
        pytest.skip(f"{example} is not in this checkout")
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(example.as_uri())
    pg.wait_for_load_state("load")
    widths = pg.eval_on_selector_all("img", "xs => xs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) >= 5 and all(w > 0 for w in widths), widths
    assert errors == []
    pg.click("#results thead th:text-is('N')")
    ns = [int(n) for n in _column(pg, "N")]
    assert ns == sorted(ns) and len(ns) > 0
    pg.close()
