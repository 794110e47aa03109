"""Screenshots of an HTML report in headless Chromium, at the widths a reader uses.

    python tools/screenshot_report.py reports/example-cpu-seqlen/report.html \\
        --out reports/example-cpu-seqlen --widths 1400 800 --height 2400

writes ``screenshot-1400.png`` and ``screenshot-800.png`` (the top ``--height`` pixels of the
page: the header, the contents and the lead chart with its findings). Needs Playwright
(the browser extra) and a Chromium binary: Debian's /usr/bin/chromium, or $ATTNBENCH_CHROMIUM.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def chromium() -> str:
    """The Chromium binary to drive."""
    return os.environ.get("ATTNBENCH_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def screenshot(page_file: Path, out_dir: Path, widths: list[int], height: int) -> list[Path]:
    """One PNG per width of the top ``height`` CSS pixels of ``page_file``; returns the paths."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=FLAGS)
        for width in widths:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(page_file.resolve().as_uri())
            page.wait_for_load_state("load")
            path = out_dir / f"screenshot-{width}.png"
            page.screenshot(path=str(path), full_page=False)
            written.append(path)
            page.close()
        browser.close()
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="report.html to photograph")
    parser.add_argument("--out", type=Path, default=None, help="folder for the PNGs (default: beside the report)")
    parser.add_argument("--widths", type=int, nargs="+", default=[1400, 800])
    parser.add_argument("--height", type=int, default=2400, help="CSS pixels from the top of the page")
    args = parser.parse_args(argv)
    if not args.report.is_file():
        print(f"error: {args.report}: no such file", file=sys.stderr)
        return 2
    for path in screenshot(args.report, args.out or args.report.parent, args.widths, args.height):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
