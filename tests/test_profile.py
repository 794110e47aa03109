"""`attnbench profile`: a point of a run or one given directly, profiled in its own worker: the
trace loads as JSON with the impl's ops, the top table's self times add up to the call, the
memory timeline and its chart, the Nsight lines, the repro bundle; failures are one line; the
run's own files are never touched."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_profile_fixtures import CHUNKED, RAISER, cli, digest, one_line_error, tiny_run

__all__ = ["tiny_run"]  # the fixture, imported for pytest

PNG = b"\x89PNG\r\n\x1a\n"


def trace_names(path: Path) -> set[str]:
    doc = json.loads(path.read_text())
    return {e.get("name", "") for e in doc["traceEvents"]}


def test_profile_a_point_of_a_run(tiny_run: Path, tmp_path: Path) -> None:
    before = digest(tiny_run)
    out = tmp_path / "prof"
    res = cli("profile", str(tiny_run), CHUNKED, "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["point"]["point_id"] == CHUNKED and summary["source"] == f"run {tiny_run}"
    assert summary["run"]["status"] == "ok"  # the run's stored numbers come along
    # the trace: Chrome trace JSON with linear-chunked's own ops and our call labels
    names = trace_names(out / "trace.json")
    assert {"aten::bmm", "aten::cumsum", "aten::elu", "aten::elu_backward"} <= names
    calls = summary["profiled"]["trace_calls"]
    assert calls == 2 and {"attnbench: call 1 of 2", "attnbench: call 2 of 2"} <= names
    # the top table: every op once, by self time; its self times are each call's time in ops
    with open(out / "top.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and len({r["name"] for r in rows}) == len(rows)
    selfs = [float(r["self_ms"]) for r in rows]
    assert selfs == sorted(selfs, reverse=True)
    assert not any(r["name"].startswith("attnbench: call") for r in rows)
    bmm = next(r for r in rows if r["name"] == "aten::bmm")
    assert float(bmm["flops"]) > 0 and float(bmm["calls"]) == int(float(bmm["calls"]))
    prof = summary["profiled"]
    # each call's ops add up to most of it; the rest is Python and autograd between ops, large at N=128
    assert 0.5 < prof["busy_ms_median"] / prof["call_ms_median"] < 1.15
    assert summary["self_sum_ms"] == pytest.approx(sum(selfs))  # the table (medians) sums to the summary's number
    assert summary["measured"]["median_ms"] > 0 and summary["measured"]["samples"] >= 3
    assert json.loads((out / "top.json").read_text())["rows"][0]["name"] == rows[0]["name"]
    assert "| kind | name |" in (out / "top.md").read_text()
    # memory: the allocation events over one call, as a timeline and a chart
    mem = summary["memory"]
    assert mem["source"] == "torch allocator events" and mem["peak_mib"] > 0 and mem["backward_ms"] > 0
    assert (out / "memory.png").read_bytes()[:8] == PNG
    with open(out / "memory.csv") as f:
        live = [float(r["live_mib"]) for r in csv.DictReader(f)]
    assert max(live) == pytest.approx(mem["peak_mib"])
    # Nsight lines through the bundle's repro.py; the CPU gets no ncu line
    assert summary["ncu"] is None and str(out / "repro" / "repro.py") in summary["nsys"]
    assert "nsys profile" in (out / "nsight.sh").read_text()
    assert {p.name for p in (out / "repro").iterdir()} == {"repro.py", "point.json", "env.json", "README.md"}
    assert digest(tiny_run) == before  # the run's journal, tables, plan and metadata are as they were


def test_profile_default_out_is_inside_the_run_not_its_tables(tiny_run: Path) -> None:
    before = digest(tiny_run)
    res = cli("profile", str(tiny_run), CHUNKED.replace("/fwdbwd/", "/fwd/"), "--calls", "3")
    assert res.returncode == 0, res.stderr
    out = tiny_run / "profile" / "linear-chunked_fwd_causal_float32_B1-H2-N128-D16-M16-chunk_size32"
    assert (out / "trace.json").is_file() and (out / "summary.json").is_file()
    assert json.loads((out / "summary.json").read_text())["profiled"]["calls"] == 3
    assert digest(tiny_run) == before


def test_profile_directly_prints_an_80_column_table(tmp_path: Path) -> None:
    out = tmp_path / "direct"
    args = ["--impl", "linear-chunked", "--set", "N=1024", "--param", "chunk_size=64", "--threads", "1"]
    res = cli("profile", *args, "--calls", "3", "--out", str(out))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "profile  linear-chunked/fwdbwd/causal/float32/B1-H4-N1024-D64-M64-chunk_size64"
    head = next(i for i, x in enumerate(lines) if x.startswith("op "))
    table = lines[head : lines.index("", head)]
    assert len(table) >= 6 and all(len(x) <= 80 for x in table), table
    assert table[0].split() == ["op", "calls", "self", "total", "share", "FLOP/s"]
    assert any(x.startswith("aten::bmm") and "FLOP/s" in x for x in table)  # FLOPs where torch counts them
    assert any(x.startswith("table    self times sum to") and x.endswith("of the unprofiled calls") for x in lines)
    assert any(x.startswith("memory   peak") for x in lines)
    assert json.loads((out / "repro" / "point.json").read_text())["run"]["source"] == "attnbench profile (no run)"
    # the table's rows sum to the profiled calls' busy time (how close that comes to the unprofiled
    # time is a measurement, made on an idle machine by tools/profile_check.py, not a unit test)
    s = json.loads((out / "summary.json").read_text())
    prof = s["profiled"]
    assert prof["calls"] == 3 and len(prof["busy_ms"]) == 3 and len(prof["unprofiled_ms"]) == 3
    assert all(0 < b <= c for b, c in zip(prof["busy_ms"], prof["call_ms"], strict=True)), prof


@pytest.mark.parametrize(
    "args,code,needle",
    [
        (["RUN", "linear-chunked/fwdbwd/causal/float32/B1-H2-N128-D16-M16-chunk_size31"], 2, "did you mean"),
        (["RUN", "softmax/fwd/causal/float32/B1-H2-N128-D16-M16"], 2, "not a point of run"),
        (["/nonexistent/run", CHUNKED], 2, "no such directory"),
        (["RUN"], 2, "POINT_ID: missing"),
        ([], 2, "expected RUN_DIR POINT_ID, or --impl"),
        (["RUN", CHUNKED, "--set", "N=64"], 2, "--set: only with --impl"),
        (["RUN", "--impl", "linear-chunked"], 2, "not both"),
        (["--impl", "linear-chunked", "--set", "N=64,128"], 2, "give one value for N"),
        (["--impl", "linear-chunked"], 2, "profile needs a sequence length"),
        (["--impl", "nosuch", "--set", "N=64"], 2, "unknown implementation 'nosuch'"),
        (["--impl", "linear-chunked", "--set", "N=64", "--pass", "decode"], 2, "--pass decode"),
        (["--impl", "linear-chunked", "--set", "N=64", "--calls", "0"], 2, "--calls 0"),
        (["--impl", "linear-causal-cuda", "--set", "N=64", "--device", "cpu"], 2, "cannot run here"),
        (["--impl", "raiser", "--set", "N=16"], 1, "boom from the raiser plugin"),
        (["--impl", "crasher", "--set", "N=16"], 1, "died from SIGSEGV"),
        (["--impl", "sleeper", "--set", "N=16", "--timeout", "3"], 1, "no result from the profile worker within 3 s"),
    ],
)
def test_mistakes_and_failures_are_one_line(
    tiny_run: Path, tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    args = [str(tiny_run) if a == "RUN" else a for a in args]
    res = cli("profile", *args, *(["--out", str(tmp_path / "o")] if args else []))
    line = one_line_error(res, code)
    assert needle in line, line
    assert line.startswith("error:" if code == 2 else "failed:")


def test_a_failed_point_of_a_run_fails_again_under_the_profiler(tiny_run: Path, tmp_path: Path) -> None:
    before = digest(tiny_run)
    res = cli("profile", str(tiny_run), RAISER, "--out", str(tmp_path / "o"))
    line = one_line_error(res, 1)
    assert "error in the profile worker: RuntimeError: boom from the raiser plugin" in line
    assert "Traceback" in (tmp_path / "o" / "error.txt").read_text()  # the worker's traceback, kept aside
    assert digest(tiny_run) == before


@pytest.mark.slow
@pytest.mark.parametrize(
    "impl,ops",
    [
        ("linear-chunked", {"aten::bmm", "aten::cumsum", "aten::elu_backward"}),
        ("linear-causal-cpu", {"CausalProduct", "CausalProductBackward"}),  # builds the C++ kernel once
    ],
)
def test_realistic_point_trace_names_its_ops(tmp_path: Path, impl: str, ops: set[str]) -> None:
    """A fwd+bwd point's trace holds the impl's own ops (the C++ kernel's autograd nodes for
    linear-causal-cpu), and the top table's self times sum to the profiled calls' median busy time.
    The issue's 15 % check (self times against the unprofiled calls at N=4096) is timing, so it is
    measured on an idle machine by tools/profile_check.py, never asserted here."""
    out = tmp_path / impl
    args = ["--impl", impl, "--set", "N=1024", "--threads", "1", "--calls", "3", "--out", str(out), "--json"]
    res = cli("profile", *args, timeout=900)
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert ops <= trace_names(out / "trace.json"), sorted(n for n in trace_names(out / "trace.json") if "aten" not in n)
    assert s["self_sum_ms"] == pytest.approx(s["profiled"]["busy_ms_median"])
    assert (out / "memory.png").read_bytes()[:8] == PNG and s["memory"]["peak_mib"] > 0


@pytest.mark.gpu
def test_cuda_point_gets_kernels_an_allocator_snapshot_and_an_ncu_line(tmp_path: Path) -> None:
    import pickle

    out = tmp_path / "cuda"
    res = cli("profile", "--impl", "linear-chunked", "--set", "N=4096", "--device", "cuda", "--out", str(out), "--json")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    rows = json.loads((out / "top.json").read_text())["rows"]
    assert any(r["kind"] == "kernel" for r in rows) and any(r["kind"] == "op" for r in rows)
    # the kernels' device time cannot exceed the CUDA-event time of the call by much (gaps make it less)
    assert 0 < s["self_sum_ms"] <= 1.15 * s["profiled"]["unprofiled_ms_median"]
    snapshot = pickle.loads((out / "memory_snapshot.pickle").read_bytes())
    assert "device_traces" in snapshot and s["memory"]["peak_mib"] > 0
    assert s["memory"]["source"].startswith("CUDA allocator history")
    assert (
        "--kernel-name regex:" in s["ncu"]
        and "--set full" in s["ncu"]
        and "--capture-range=cudaProfilerApi" in s["nsys"]
    )
    replay = subprocess.run(
        [sys.executable, str(out / "repro" / "repro.py"), "--no-time"], capture_output=True, text=True
    )
    assert replay.returncode == 0 and replay.stdout.count(": identical") == 4, replay.stdout + replay.stderr
