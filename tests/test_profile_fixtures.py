"""Set-up shared by the profile and repro tests (no tests here): the CLI in a subprocess with the
test plugins on the path, and one tiny stored run made once per session."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SITE = Path(__file__).resolve().parent / "fixtures" / "plugin_site"
SUITE = """
name = "tiny"
[params]
impl = ["linear-chunked", "offbyone", "raiser"]
N = [128]
B = 1
H = 2
D = 16
M = 16
pass = ["fwdbwd", "fwd"]
[impl_params]
linear-chunked = { chunk_size = 32 }
[timing]
warmup_s = 0.01
min_samples = 5
min_time_s = 0.05
max_time_s = 0.3
timeout_s = 120
"""
CHUNKED = "linear-chunked/fwdbwd/causal/float32/B1-H2-N128-D16-M16-chunk_size32"
CHUNKED_FWD = CHUNKED.replace("/fwdbwd/", "/fwd/")
OFFBYONE = "offbyone/fwdbwd/causal/float32/B1-H2-N128-D16-M16"
RAISER = "raiser/fwd/causal/float32/B1-H2-N128-D16-M16"
_RUNS: dict[str, Path] = {}


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(PLUGIN_SITE), str(REPO), e.get("PYTHONPATH", "")])
    return e


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """``attnbench ARGS`` in a fresh interpreter (the test plugins importable)."""
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env(), timeout=timeout
    )


def one_line_error(res: subprocess.CompletedProcess, code: int) -> str:
    """stderr of a command that must fail with ``code`` and one line, no traceback."""
    assert res.returncode == code, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr
    lines = [x for x in res.stderr.splitlines() if x.strip() and not x.startswith(("profiling ", "making "))]
    assert len(lines) == 1, res.stderr
    return lines[0]


def digest(run_dir: Path) -> dict[str, str]:
    """SHA-256 of every file of a run directory outside profile/ and repro/ (what a profile must
    leave alone)."""
    out = {}
    for p in sorted(run_dir.rglob("*")):
        rel = p.relative_to(run_dir)
        if p.is_file() and rel.parts[0] not in ("profile", "repro"):
            out[str(rel)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stored run: linear-chunked (chunk 32), offbyone (fails the oracle), raiser (errors);
    fwd and fwdbwd at N=128, one thread."""
    if "tiny" not in _RUNS:
        root = tmp_path_factory.mktemp("tiny-run")
        suite = root / "tiny.toml"
        suite.write_text(SUITE)
        out = root / "run"
        res = cli("run", "--suite", str(suite), "--out", str(out), "--threads", "1", "--no-report", "--json")
        assert res.returncode == 0, res.stderr
        rows = {r["point_id"]: r for r in json.loads(res.stdout)["points"]}
        assert rows[CHUNKED]["status"] == "ok" and rows[OFFBYONE]["correct"] is False
        assert rows[RAISER]["status"] == "error"
        _RUNS["tiny"] = out
    return _RUNS["tiny"]
