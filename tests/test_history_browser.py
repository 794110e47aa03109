"""The history trend page in headless Chromium: every chart draws, change points carry their
commit ranges, the filter works, nothing is fetched, and hostile names stay text.

Needs Playwright's Python package and a Chromium binary (Debian's /usr/bin/chromium, or
$ATTNBENCH_CHROMIUM); skips with the reason otherwise.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from history_helpers import ENV, rounds_around, stamp, write_run

pytestmark = pytest.mark.browser
pytest.importorskip("duckdb")

EVIL = "<img src=x onerror=alert(1)>"
CHROMIUM = os.environ.get("ATTNBENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
POINTS = ["softmax/fwd/causal/float32/N512", "sdpa/fwd/causal/float32/N512", f"{EVIL}/fwd/causal/float32/N512"]
EXAMPLE = Path(__file__).parents[1] / "reports" / "history-example" / "history.html"


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
def page_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from attnbench.gate import make_config
    from attnbench.history import trendpage
    from attnbench.history.changes import analyse, gate_finding
    from attnbench.history.ingestion import ingest_many
    from attnbench.history.series import Filters, counts, load_series
    from attnbench.history.store import connect

    root = tmp_path_factory.mktemp("trend")
    env = {**ENV, "cpu_model": "Evil <script>alert(2)</script> CPU"}
    runs = []
    for i in range(24):
        rng = np.random.default_rng(i)
        levels = {
            POINTS[0]: 2.0 * (1.25 if i >= 14 else 1.0),
            POINTS[1]: 1.0,
            POINTS[2]: 3.0 * (0.8 if i >= 10 else 1.0),
        }
        pts = {pid: rounds_around(v * float(np.exp(rng.normal(0, 0.01))), rng) for pid, v in levels.items()}
        commit = f"{i:04x}" + "ab" * 18 if i != 13 else "<b>c13</b>"
        runs.append(write_run(root / f"r{i}", pts, stamp(i), commit=commit, env=env, branch="main & <i>dev</i>"))
    db = root / "h.duckdb"
    ingest_many(runs, db)
    con = connect(db)
    series, n = load_series(con, Filters(), 100), counts(con)
    con.close()
    analyses = [analyse(s) for s in series]
    findings = [f for a in analyses if (f := gate_finding(a, make_config(a.series.gate))) is not None]
    return trendpage.write(root / "out" / "history.html", trendpage.render(analyses, findings, str(db), n, 100))


@pytest.fixture
def page(browser: Any, page_path: Path) -> Iterator[tuple[Any, dict[str, list[str]]]]:
    pg = browser.new_page(viewport={"width": 1100, "height": 900})
    seen: dict[str, list[str]] = {"console": [], "pageerror": [], "dialog": [], "request": []}
    pg.on("console", lambda m: seen["console"].append(m.text) if m.type in ("error", "warning") else None)
    pg.on("pageerror", lambda e: seen["pageerror"].append(str(e)))

    def on_dialog(d: Any) -> None:
        seen["dialog"].append(d.message)
        d.dismiss()

    pg.on("dialog", on_dialog)
    pg.on("request", lambda r: seen["request"].append(r.url) if not r.url.startswith(("data:", "file:")) else None)
    pg.goto(page_path.as_uri())
    pg.wait_for_load_state("load")
    yield pg, seen
    pg.close()


def test_every_series_is_drawn_with_its_change_points(page: tuple[Any, dict[str, list[str]]]) -> None:
    pg, seen = page
    charts = pg.eval_on_selector_all(
        "svg.trend", "xs => xs.map(s => [s.getBoundingClientRect().width, s.querySelectorAll('circle.run').length])"
    )
    assert len(charts) == 3 and all(w > 300 and n == 24 for w, n in charts), charts
    labels = pg.eval_on_selector_all("svg.trend text.cp", "xs => xs.map(t => t.textContent)")
    # softmax +25 % between run 13 (commit "<b>c13</b>", shown as text) and run 14 (000e...)
    assert any(t.startswith(("+24", "+25", "+26")) and t.endswith("<b>c13</b>..000eababab") for t in labels), labels
    assert any(t.startswith(("-19", "-20", "-21")) and t.endswith("0009ababab..000aababab") for t in labels), labels
    assert pg.text_content("#count") == "3 of 3 series"
    assert seen == {"console": [], "pageerror": [], "dialog": [], "request": []}


def test_regressions_table_and_filter(page: tuple[Any, dict[str, list[str]]]) -> None:
    pg, _ = page
    rows = pg.eval_on_selector_all("#regressions tbody tr", "rs => rs.map(r => r.textContent)")
    assert len(rows) == 1 and "softmax/fwd" in rows[0] and "fails" in rows[0]
    pg.fill("#filter", "sdpa")
    assert pg.text_content("#count") == "1 of 3 series"
    assert pg.eval_on_selector_all("#regressions tbody tr", "rs => rs.filter(r => !r.hidden).length") == 0
    pg.fill("#filter", "")
    assert pg.text_content("#count") == "3 of 3 series"


def test_hostile_names_are_text_and_run_nothing(page: tuple[Any, dict[str, list[str]]]) -> None:
    pg, seen = page
    body = pg.inner_text("body")
    assert EVIL in body and "Evil <script>alert(2)</script> CPU" in body
    tips = pg.eval_on_selector_all("svg.trend circle title", "ts => ts.map(t => t.textContent)")
    assert any("<b>c13</b>" in t and "main & <i>dev</i>" in t for t in tips)
    assert pg.eval_on_selector_all("img, b, i", "xs => xs.length") == 0
    assert pg.eval_on_selector_all("script", "xs => xs.length") == 1
    assert seen["dialog"] == [] and seen["pageerror"] == []


def test_committed_example_renders(browser: Any) -> None:
    if not EXAMPLE.exists():
        pytest.skip(f"{EXAMPLE} is not in this checkout")
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(EXAMPLE.as_uri())
    pg.wait_for_load_state("load")
    assert pg.eval_on_selector_all("svg.trend", "xs => xs.length") >= 1
    assert errors == []
    pg.close()
