"""Helpers of the integrity tests (tests/test_integrity*.py, tests/test_bad_input.py) and of
tools/fault_inject.py: the CLI in a subprocess with a plugin site, tiny suites, process trees
from /proc, journal lines.

The subprocess inherits PYTHONPATH after the plugin site, so ``PYTHONPATH=/path/to/old/checkout
pytest tests/test_integrity.py`` runs these scenarios against another version of attnbench.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from fault_inject import alive, cmdline, descendants, kill  # noqa: E402  (the /proc helpers, one home)

__all__ = ["alive", "cmdline", "descendants", "kill_all"]  # with the helpers below, what the tests import

FIXTURES = Path(__file__).resolve().parent / "fixtures"
HOSTILE_SITE = FIXTURES / "hostile_site"
CLASH_SITE = FIXTURES / "clash_site"
PLUGIN_SITE = FIXTURES / "plugin_site"

TINY = """
name = "tiny"
[params]
impl = {impls}
N = {ns}
B = 1
H = 1
D = 8
M = 8
pass = {passes}
[timing]
warmup_s = 0.001
min_samples = 3
min_time_s = 0.001
max_time_s = {max_time}
timeout_s = {timeout}
"""


def write_suite(
    path: Path,
    impls: Sequence[str],
    ns: Sequence[int] = (16,),
    passes: Sequence[str] = ("fwd",),
    timeout: float = 60,
    max_time: float = 0.01,
) -> Path:
    path.write_text(
        TINY.format(
            impls=json.dumps(list(impls)),
            ns=json.dumps(list(ns)),
            passes=json.dumps(list(passes)),
            timeout=timeout,
            max_time=max_time,
        )
    )
    return path


def env(site: Path | None = None) -> dict[str, str]:
    e = dict(os.environ)
    parts = [str(site)] if site is not None else []
    if e.get("PYTHONPATH"):
        parts.append(e["PYTHONPATH"])
    e["PYTHONPATH"] = os.pathsep.join(parts)
    e.pop("COLUMNS", None)
    return e


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "attnbench", *args]


def cli(
    *args: str, site: Path | None = None, cwd: Path | None = None, ulimit_f: int | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``attnbench ARGS`` in a subprocess; ``ulimit_f`` limits the size of any file it writes
    (KiB, as the shell's ``ulimit -f``), standing in for a full disk."""
    cmd = command(*args)
    if ulimit_f is not None:
        cmd = ["sh", "-c", f'ulimit -f {int(ulimit_f)} && exec "$@"', "sh", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(site), cwd=cwd, timeout=timeout)


def start(*args: str, site: Path | None = None, cwd: Path | None = None) -> subprocess.Popen:
    """``attnbench ARGS`` started in the background (its own session, so a signal to the test's
    process group does not reach it)."""
    return subprocess.Popen(
        command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(site),
        cwd=cwd,
        start_new_session=True,
    )


def journal_lines(run_dir: Path) -> list[str]:
    path = run_dir / "journal.jsonl"
    return path.read_text(errors="replace").splitlines() if path.exists() else []


def records(run_dir: Path) -> list[dict]:
    """The journal's parseable records (rows)."""
    out = []
    for line in journal_lines(run_dir):
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("row"), dict):
            out.append(doc["row"])
    return out


def wait_for(predicate, timeout: float = 120.0, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def kill_all(pids: list[int]) -> None:
    """Clean up after a failed test: SIGKILL whatever is left."""
    kill(pids)
