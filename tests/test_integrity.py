"""Issue 13: nothing lost, nothing wrong, nothing injected. One scenario per numbered item of the
issue, each through the real CLI in a subprocess (so ``PYTHONPATH=OLD_CHECKOUT pytest
tests/test_integrity.py`` shows each failing on the code before the fix). The run directory's
lock is tested in test_integrity_lock.py, the bad-input table in test_bad_input.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from integrity_helpers import (
    CLASH_SITE,
    HOSTILE_SITE,
    alive,
    cli,
    cmdline,
    descendants,
    journal_lines,
    kill_all,
    records,
    start,
    wait_for,
    write_suite,
)

ESC = "\x1b"


def one_line_error(res: subprocess.CompletedProcess, code: int = 2, after_progress: bool = False) -> str:
    """The error line (the whole of stderr, or its last line after a sweep's progress bar)."""
    assert res.returncode == code, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr
    err = res.stderr.strip().splitlines()[-1] if after_progress else res.stderr.strip()
    assert err.startswith("error:") and "\n" not in err, err
    assert sum(line.startswith("error:") for line in res.stderr.splitlines()) == 1, res.stderr
    return err


# 1 -- a reference cache that cannot be written is no failed check ------------------------------


def test_full_disk_for_the_reference_cache_leaves_verdicts_true(tmp_path):
    """ulimit -f 256 (KiB): the float64 reference of N=2048 (512 KiB per tensor) cannot be cached;
    the check computes it without the cache and the correct impls stay correct."""
    suite = write_suite(tmp_path / "t.toml", ["linear-chunked", "softmax"], ns=[2048], passes=["fwd", "fwdbwd"])
    suite.write_text(suite.read_text().replace("H = 1", "H = 2").replace("D = 8", "D = 16").replace("M = 8", "M = 16"))
    out = tmp_path / "run"
    res = cli("run", "--suite", str(suite), "--out", str(out), "--no-report", "--json", ulimit_f=256)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = json.loads(res.stdout)["points"]
    assert len(rows) == 4 and all(r["status"] == "ok" for r in rows), rows
    assert all(r["correct"] is True for r in rows), [(r["point_id"], r["correctness_error"]) for r in rows]
    assert all(r["err_out"] is not None and r["err_out"] < 1e-3 for r in rows)  # the check did run


# 2 -- --resume reuses every option -------------------------------------------------------------


def test_resume_after_ctrl_c_keeps_threads_max_time_and_timeout(tmp_path):
    """The issue's scenario: --threads 1 --max-time 0.3 --timeout 30, interrupted, resumed with
    no options: the resumed points run with the same options, metadata keeps the first command
    and lists the resume, and options given with --resume that conflict are refused."""
    suite = write_suite(tmp_path / "t.toml", ["linear-chunked", "softmax"], ns=[16, 32, 48])
    out = tmp_path / "run"
    first = ["--suite", str(suite), "--out", str(out), "--no-report"]
    proc = start("run", *first, "--threads", "1", "--max-time", "0.3", "--timeout", "30")
    try:
        assert wait_for(lambda: len(journal_lines(out)) >= 2), proc.stderr.read() if proc.poll() is not None else ""
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        kill_all([proc.pid])
    assert proc.returncode == 130, err
    done = len(records(out))
    assert 2 <= done < 6
    for conflict in (["--threads", "2"], ["--timeout", "5"], ["--max-time", "1"], ["--impl", "softmax"],
                     ["--set", "N=16"], ["--suite", "smoke"]):  # fmt: skip
        err = one_line_error(cli("run", "--resume", str(out), *conflict))
        assert "conflicts with the run being resumed" in err, err
    assert len(records(out)) == done  # a refused resume ran nothing
    res = cli("run", "--resume", str(out), "--no-report")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = records(out)
    assert len(rows) == 6 and len({r["point_id"] for r in rows}) == 6
    assert all(r["threads"] == 1 for r in rows), [r["threads"] for r in rows]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["options"]["threads"] == 1
    assert meta["options"]["timing"]["max_time_s"] == 0.3 and meta["options"]["timing"]["timeout_s"] == 30
    assert "--max-time 0.3" in meta["command"] and meta["commands"][0] == meta["command"]
    assert len(meta["commands"]) == 2 and "--resume" in meta["commands"][1] and len(meta["resumed"]) == 1


# 3 -- a plugin cannot take a built-in name -----------------------------------------------------


def test_plugin_cannot_replace_the_references(tmp_path):
    res = cli("list", "--json", site=CLASH_SITE)
    assert res.returncode == 0, res.stderr
    impls = json.loads(res.stdout)["impls"]
    by_origin = {(i["name"], str(i.get("origin", "")).startswith("plugin")): i for i in impls}
    builtin = by_origin[("linear-quadratic", False)]
    assert builtin["available"] and builtin["origin"] == "attnbench.impls.linear"  # the built-in stays
    for name in ("linear-quadratic", "softmax"):
        clash = by_origin[(name, True)]
        assert clash["available"] is False
        assert "name clash" in clash["reason"] and "attnbench-clash" in clash["reason"], clash
    suite = write_suite(tmp_path / "t.toml", ["linear-chunked"])
    for impl, needle in (
        ("linear-chunked", "its float64 reference 'linear-quadratic' is refused"),
        ("linear-quadratic", "impl 'linear-quadratic': refused"),
        ("softmax", "impl 'softmax': refused"),
    ):
        out = tmp_path / f"run-{impl}"
        err = one_line_error(cli("run", "--suite", str(suite), "--impl", impl, "--out", str(out), site=CLASH_SITE))
        assert needle in err and "attnbench-clash" in err, err
        assert not out.exists()  # refused before anything was created


# 4 -- a worker killed by a signal is a crash, with the usual cause named -----------------------


def test_sigkilled_worker_is_crashed_with_the_oom_hint(tmp_path):
    suite = write_suite(tmp_path / "t.toml", ["selfkill", "linear-chunked"])
    out = tmp_path / "run"
    res = cli("run", "--suite", str(suite), "--out", str(out), "--no-report", "--json", site=HOSTILE_SITE)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r["impl"]: r for r in json.loads(res.stdout)["points"]}
    assert rows["selfkill"]["status"] == "crashed", rows["selfkill"]
    assert "killed by SIGKILL (the kernel's OOM killer is the usual cause; check dmesg)" in rows["selfkill"]["error"]
    assert rows["linear-chunked"]["status"] == "ok"  # the sweep went on


# 6 -- no orphans after kill -9 of the main process ---------------------------------------------


def test_kill_9_of_the_main_process_leaves_no_worker_server_or_tracker(tmp_path):
    suite = write_suite(tmp_path / "t.toml", ["sleepy"], timeout=600)
    out = tmp_path / "run"
    proc = start("run", "--suite", str(suite), "--out", str(out), "--no-report", site=HOSTILE_SITE)
    below: list[int] = []
    try:
        # the worker of the sleeping point (main -> fork server -> worker, and the resource
        # tracker): after the calibration worker (metadata is written once it is done), a
        # grandchild that is still there a second later
        def grandchildren() -> set[int]:
            return {g for p in descendants(proc.pid) for g in descendants(p)}

        def worker_running() -> bool:
            if not (out / "metadata.json").exists() or not grandchildren():
                return False
            first = grandchildren()
            time.sleep(1.0)
            return bool(first & grandchildren())

        assert wait_for(worker_running, timeout=180), proc.poll()
        below = descendants(proc.pid)
        assert len(below) >= 3, [cmdline(p) for p in below]
        proc.kill()
        proc.wait(timeout=30)
        gone = wait_for(lambda: not any(alive(p) for p in below), timeout=15)
        left = [p for p in below if alive(p)]
        assert gone, f"still running after the main process was killed: {left}"
    finally:
        kill_all([proc.pid, *below])


# 7 -- writes that fail mid-run, SIGTERM, a double Ctrl-C ---------------------------------------


def test_full_disk_mid_run_is_one_line_exit_74_and_resume_completes(tmp_path):
    """ulimit -f 16 KiB: the journal outgrows it after a few points. The run stops with one line
    and exit code 74, every line already written stays whole, and --resume (with space again)
    runs exactly the rest."""
    suite = write_suite(tmp_path / "t.toml", ["linear-chunked", "softmax", "linear-cumsum"], ns=[16, 32, 48, 64])
    out = tmp_path / "run"
    res = cli("run", "--suite", str(suite), "--out", str(out), "--no-report", ulimit_f=16)
    err = one_line_error(res, code=74, after_progress=True)
    assert "journal.jsonl: cannot be written (File too large)" in err and f"--resume {out}" in err, err
    lines = journal_lines(out)
    assert 0 < len(lines) < 12
    assert all(json.loads(line)["row"]["status"] == "ok" for line in lines)  # no torn or partial line
    before = {r["point_id"]: r["correct"] for r in records(out)}
    res = cli("run", "--resume", str(out), "--no-report")
    assert res.returncode == 0, res.stderr[-3000:]
    assert journal_lines(out)[: len(lines)] == lines
    rows = records(out)
    assert len(rows) == 12 and len({r["point_id"] for r in rows}) == 12
    assert all(r["status"] == "ok" and r["correct"] for r in rows)
    assert {r["point_id"]: r["correct"] for r in rows if r["point_id"] in before} == before


def test_a_run_that_cannot_write_its_metadata_leaves_its_directory_reusable(tmp_path):
    """ulimit -f 3 (KiB): plan.json fits, metadata.json does not. One line, exit 74, and the
    directory is left empty (not half a run that neither --resume nor --out accepts)."""
    suite = write_suite(tmp_path / "t.toml", ["linear-chunked"])
    out = tmp_path / "run"
    err = one_line_error(cli("run", "--suite", str(suite), "--out", str(out), "--no-report", ulimit_f=3), code=74)
    assert "metadata.json: cannot be written (File too large)" in err, err
    assert list(out.iterdir()) == []
    res = cli("run", "--suite", str(suite), "--out", str(out), "--no-report")
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(records(out)) == 1


def test_journal_append_that_fails_keeps_every_earlier_line(tmp_path):
    """In a process whose file size limit is hit mid-line, append raises one StorageError and
    cuts the file back: the lines before stay whole and the next append starts a fresh line."""
    code = """
import resource, sys
from attnbench.point import Record
from attnbench.results import journal
from attnbench.results.layout import StorageError
run = sys.argv[1]
big = Record({"point_id": "p/big", "status": "ok", "round": 0}, samples=[0.5] * 4000)
for i in range(3):
    journal.append(run, Record({"point_id": f"p/{i}", "status": "ok", "round": 0}, samples=[1.0, 2.0]))
size = __import__("os").path.getsize(run + "/journal.jsonl")
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, size + 100))
try:
    journal.append(run, big)
except StorageError as exc:
    print("refused:", exc)
print(__import__("os").path.getsize(run + "/journal.jsonl") == size)
"""
    res = subprocess.run(
        [__import__("sys").executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "refused:" in res.stdout and "File too large" in res.stdout and res.stdout.strip().endswith("True")
    from attnbench.point import Record
    from attnbench.results import journal

    journal.append(tmp_path, Record({"point_id": "p/3", "status": "ok", "round": 0}))
    got = journal.read(tmp_path)
    assert [r.point_id for r in got.records] == ["p/0", "p/1", "p/2", "p/3"] and not got.bad_lines


def _wait_points(out: Path, n: int, proc: subprocess.Popen) -> None:
    ok = wait_for(lambda: len(journal_lines(out)) >= n or proc.poll() is not None)
    assert ok and proc.poll() is None, proc.stderr.read() if proc.poll() is not None else "no points in time"


@pytest.mark.parametrize("signals_,code", [((signal.SIGTERM,), 143), ((signal.SIGINT, signal.SIGINT), 130)])
def test_sigterm_and_double_ctrl_c_stop_cleanly(tmp_path, signals_, code):
    """SIGTERM (to the whole process group, as `kill -TERM -PGID` or a CI timeout sends it) and a
    double Ctrl-C: one message, exit 128 + signal, Parquet written, nothing finished lost, no
    worker killed by the signal journaled as a crash; --resume completes the run."""
    suite = write_suite(tmp_path / "t.toml", ["linear-chunked", "sleepy"], ns=[16, 32], timeout=600)
    out = tmp_path / "run"
    proc = start("run", "--suite", str(suite), "--out", str(out), "--no-report", site=HOSTILE_SITE)
    try:
        _wait_points(out, 1, proc)
        time.sleep(1.0)  # the sleepy point's worker is running now
        for i, sig in enumerate(signals_):
            os.killpg(proc.pid, sig)
            if i + 1 < len(signals_):
                time.sleep(0.05)
        _, err = proc.communicate(timeout=120)
    finally:
        kill_all([proc.pid])
    assert proc.returncode == code, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert f"attnbench run --resume {out}" in err
    rows = records(out)
    assert rows and all(r["status"] == "ok" for r in rows), rows  # the killed sleepy worker is not a crash row
    df = pd.read_parquet(out / "results.parquet")
    assert set(df["point_id"]) == {r["point_id"] for r in rows}
    assert not (out / ".lock").exists()


# 8 -- journal lines of the wrong shape ---------------------------------------------------------


def test_resume_and_report_name_the_journal_lines_they_skip(tmp_path):
    suite = write_suite(tmp_path / "t.toml", ["linear-chunked", "softmax"], ns=[16, 32])
    out = tmp_path / "run"
    assert cli("run", "--suite", str(suite), "--out", str(out), "--no-report").returncode == 0
    lines = journal_lines(out)
    assert len(lines) == 4
    # line 2: valid JSON, not a record; line 4: garbage; the record that was on line 4 is gone
    (out / "journal.jsonl").write_text(
        "\n".join([lines[0], '{"row": {"x": 1}}', lines[1], "\x00garbage{", lines[2]]) + "\n"
    )
    (out / "results.parquet").unlink()
    rep = cli("report", str(out), "--format", "md")
    assert rep.returncode == 0, rep.stderr[-3000:]
    warn = [x for x in rep.stderr.splitlines() if "skipped" in x]
    assert len(warn) == 1 and "2 line(s) that are not records (line 2, 4)" in warn[0], rep.stderr
    res = cli("run", "--resume", str(out), "--no-report")
    assert res.returncode == 0, res.stderr[-3000:]
    warn = [x for x in res.stderr.splitlines() if "skipped" in x]
    assert len(warn) == 1 and "(line 2, 4)" in warn[0] and "Traceback" not in res.stderr, res.stderr
    df = pd.read_parquet(out / "results.parquet")
    assert len(df) == 4 and df["point_id"].is_unique and (df["status"] == "ok").all()


# 9 -- nothing a plugin says reaches the terminal as a command ----------------------------------


def test_plugin_text_never_reaches_the_terminal_raw(tmp_path):
    suite = write_suite(tmp_path / "t.toml", ["escerror", "linear-chunked"])
    err = one_line_error(cli("run", "--suite", str(suite), "--impl", "importbomb", site=HOSTILE_SITE))
    assert "failed to import" in err and "cannot load" in err
    assert ESC not in err and "\x07" not in err and "\u202e" not in err, repr(err)
    res = cli("list", "--json", site=HOSTILE_SITE)
    assert res.returncode == 0
    names = {i["name"]: i for i in json.loads(res.stdout)["impls"]}
    assert not any(ESC in n or "/" in n and names[n]["available"] for n in names), list(names)
    assert names["slash/name"]["available"] is False and "refused" in names["slash/name"]["reason"]
    assert names["evilname"]["available"] is False  # shown without its escape sequence
    out = tmp_path / "run"
    res = cli("run", "--suite", str(suite), "--out", str(out), "--no-report", site=HOSTILE_SITE)
    assert res.returncode == 0, res.stderr[-3000:]
    assert ESC not in res.stderr and "\x07" not in res.stderr, repr(res.stderr[-2000:])
    row = next(r for r in records(out) if r["impl"] == "escerror")
    assert row["status"] == "error" and "boom" in row["error"]  # the row keeps the text; printing cleans it


# 13 -- a timeout costs the timeout; one point gives no N^nan -----------------------------------


def test_a_timeout_costs_the_timeout_not_ten_seconds_more(tmp_path):
    suite = write_suite(tmp_path / "t.toml", ["sleepy"], timeout=600)
    out = tmp_path / "run"
    res = cli("run", "--suite", str(suite), "--out", str(out), "--timeout", "1", "--no-report", site=HOSTILE_SITE)
    assert res.returncode == 0, res.stderr[-3000:]
    (row,) = records(out)
    assert row["status"] == "timeout"
    # the worker is killed at its deadline; the bound leaves room for a loaded machine's fork
    assert row["wall_s"] < 1 + 5, row["wall_s"]


def test_findings_of_a_single_point_print_no_nan(tmp_path):
    suite = write_suite(tmp_path / "t.toml", ["linear-chunked", "softmax"], ns=[64])
    out = tmp_path / "run"
    res = cli("run", "--suite", str(suite), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    md = (out / "report" / "report.md").read_text()
    assert "linear-chunked" in md
    assert "nan" not in md.lower().replace("nanoseconds", ""), [x for x in md.splitlines() if "nan" in x.lower()]
