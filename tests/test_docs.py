"""Docs that must stay true to the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_results_doc_lists_every_column():
    sys.path.insert(0, str(ROOT / "tools"))
    from gen_results_doc import render

    assert (ROOT / "docs" / "results.md").read_text() == render(), "run: python tools/gen_results_doc.py"


def test_cli_import_stays_light():
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import attnbench.cli"], capture_output=True, text=True, cwd=ROOT
    ).stderr
    heavy = [
        line for line in out.splitlines() if line.rstrip().split("|")[-1].strip() in ("torch", "pandas", "seaborn")
    ]
    assert not heavy, heavy


def test_readme_shows_the_main_command():
    assert "attnbench run --suite seqlen" in (ROOT / "README.md").read_text()
