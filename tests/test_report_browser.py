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


def _column(pg: Any, name: str, what: str = "td.textContent") -> list[str]:
    idx = pg.eval_on_selector_all("#results thead th", "(ths, n) => ths.findIndex(th => th.textContent === n)", name)
    return pg.eval_on_selector_all(f"#results tbody tr td:nth-child({idx + 1})", f"tds => tds.map(td => {what})")


def _values(pg: Any, name: str) -> list[float | None]:
    """A numeric column's raw values (the text is formatted: "12.3 ms")."""
    raw = _column(pg, name, "td.dataset.value === undefined ? null : td.dataset.value")
    return [None if v is None else float(v) for v in raw]


def test_charts_render_without_errors(page: tuple[Any, dict[str, list[str]]]) -> None:
    pg, seen = page
    imgs = pg.eval_on_selector_all("img", "xs => xs.map(i => [i.className, i.complete, i.naturalWidth])")
    assert len(imgs) == 5
    assert all(cls == "chart" and complete and width > 0 for cls, complete, width in imgs), imgs
    # what the charts leave out is listed beside them, the first list open
    assert pg.eval_on_selector_all("aside details.skips", "ds => ds.map(d => d.open)") == [True] + [False] * 4
    assert "softmax: oom at N=4096" in pg.inner_text("aside")
    assert seen["console"] == [] and seen["pageerror"] == []
    assert seen["request"] == []  # nothing fetched from anywhere


def test_table_sorts_and_filters(page: tuple[Any, dict[str, list[str]]]) -> None:
    pg, _ = page
    assert pg.text_content("#count") == "60 of 60 points"
    pg.click("#results thead th:text-is('median')")
    times = [t for t in _values(pg, "median") if t is not None]
    assert times == sorted(times) and len(times) == 45
    assert _values(pg, "median")[-1] is None and _column(pg, "median")[-1] == ""  # missing values sort last
    assert _column(pg, "median")[0] == "328 µs"  # sdpa at N=256: 5e-6 * 256^2 ms, in the one number format
    pg.click("#results thead th:text-is('median')")
    times = [t for t in _values(pg, "median") if t is not None]
    assert times == sorted(times, reverse=True)
    assert _values(pg, "median")[-1] is None  # still last when descending
    assert pg.get_attribute("#results thead th:text-is('median')", "aria-sort") == "descending"
    pg.click("#results thead th:text-is('N')")
    ns = [v for v in _values(pg, "N") if v is not None]
    assert ns == sorted(ns) and len(ns) == 60
    pg.fill("#filter", "oom")
    assert pg.text_content("#count") == "2 of 60 points"
    assert set(_column(pg, "status")) == {"oom"}
    pg.fill("#filter", "")
    pg.select_option("#status-filter", "skipped")
    assert set(_column(pg, "status")) == {"skipped"}


def test_noise_is_marked_everywhere(page: tuple[Any, dict[str, list[str]]]) -> None:
    pg, _ = page
    warn = pg.inner_text("li.fact.warn[data-fact=noise]")
    assert "3 of 45 measured points are noisy" in warn and "machine busy?" in warn
    # the pivot tables: noisy numbers greyed with a mark and the reason as a tooltip
    pg.click("#numbers summary:has-text('Median time per call')")
    noisy = pg.eval_on_selector_all("#pivot-time td.noisy", "tds => tds.map(td => [td.textContent, td.title])")
    assert ("41.9 ms ≈", "did not converge; 2 of 5 samples") in [tuple(c) for c in noisy]
    assert ("5.24 ms ≈", "other processes used 35% CPU") in [tuple(c) for c in noisy]
    assert len(noisy) == 3
    # the points table: a noisy column, greyed rows, a filter
    pg.check("#noisy-only")
    assert pg.text_content("#count") == "3 of 60 points"
    assert pg.eval_on_selector_all("#results tbody tr", "trs => trs.every(tr => tr.classList.contains('noisy'))")
    assert sorted(_column(pg, "median")) == ["123 ms ≈", "41.9 ms ≈", "5.24 ms ≈"]
    pg.uncheck("#noisy-only")
    pg.fill("#filter", "did not converge")
    assert pg.text_content("#count") == "2 of 60 points"


def test_toc_and_collapsible_sections(page: tuple[Any, dict[str, list[str]]]) -> None:
    pg, seen = page
    links = pg.eval_on_selector_all("nav#toc a", "as => as.map(a => a.getAttribute('href'))")
    assert links[0] == "#latency" and links[-1] == "#points"
    for href in links:  # every entry leads somewhere
        assert pg.eval_on_selector(href, "el => el.tagName") == "SECTION"
    assert pg.is_visible("#chart-latency img")
    pg.click("#latency > details > summary")  # fold the lead section
    assert not pg.is_visible("#chart-latency img")
    pg.click("#latency > details > summary")
    assert pg.is_visible("#chart-latency img")
    assert not pg.is_visible("#scaling table")  # detail tables start folded
    pg.click("nav#toc a[href='#analysis']")
    pg.click("#scaling > summary")
    assert pg.is_visible("#scaling table")
    assert seen["request"] == [] and seen["pageerror"] == []


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
    ns = [v for v in _values(pg, "N") if v is not None]
    assert ns == sorted(ns) and len(ns) > 0
    pg.close()
