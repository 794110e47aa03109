"""Issue 13's mechanisms one at a time, in-process or in tiny subprocesses: stop signals that wait
for a journal line or the tables, children that die with their parent, the journal's reading of
lines that are not records, atomic writes that fail, and one-line errors that carry no terminal
escapes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import typer
from integrity_helpers import alive, kill_all, wait_for

from attnbench.commands._common import user_errors
from attnbench.errors import UserError
from attnbench.point import Record
from attnbench.results import journal
from attnbench.results.layout import StorageError, write_atomic
from attnbench.runner import signals

# --- signals ------------------------------------------------------------------------------------


def test_a_signal_inside_a_critical_section_is_raised_when_it_ends():
    with signals.stoppable():
        done = []
        with pytest.raises(signals.Stop) as info, signals.critical():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler has run by now, and raised nothing
            done.append("line written")
        assert done == ["line written"] and info.value.signum == signal.SIGTERM
        assert signals.exit_code() == 143


def test_signals_while_the_tables_are_written_are_noted_not_raised():
    told = []
    with signals.stoppable():
        with signals.deferred(told.append):
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        assert told == [signal.SIGINT]  # told once
        with pytest.raises(signals.Stop):
            signals.check()
    signals.check()  # outside a run: nothing to stop
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_once_a_stop_is_under_way_a_late_signal_is_noted_until_the_run_ends():
    """The stop-22 CI race: the first Ctrl-C stopped the report, the second came 50 ms later,
    after the tables' deferred block had ended. It must be noted, not raised."""
    with signals.stoppable():
        with pytest.raises(signals.Stop):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
        with signals.deferred():
            pass
        os.kill(os.getpid(), signal.SIGINT)  # between the deferred block and the end of the run
        time.sleep(0.05)
        assert signals.requested() == signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # in-process: handlers back


EXITING = """
import os, signal, sys, time
from attnbench.runner import signals
signals.own_process()
try:
    with signals.stoppable():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)
except KeyboardInterrupt:
    pass
os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C while the process exits
time.sleep(0.1)
sys.exit(signals.exit_code())
"""


def test_the_console_process_exits_128_plus_signal_however_late_the_second_ctrl_c():
    done = subprocess.run([sys.executable, "-c", EXITING], capture_output=True, text=True, timeout=60)
    assert done.returncode == 130, done.stderr  # not -2 (killed by the second SIGINT)
    assert "Traceback" not in done.stderr


# --- children die with their parent ---------------------------------------------------------

PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
print(child.pid, flush=True)
time.sleep(600)
"""
CHILD_PDEATHSIG = """
import time
from attnbench.runner.lifeline import die_with_parent
assert die_with_parent()
time.sleep(600)
"""


def _parent_and_child(child_code: str) -> tuple[subprocess.Popen, int]:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, child_code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_die_with_parent_kills_the_child_when_the_parent_is_killed():
    parent, child = _parent_and_child(CHILD_PDEATHSIG)
    try:
        time.sleep(1.0)  # the child has set its death signal
        assert alive(child)
        parent.kill()
        parent.wait()
        assert wait_for(lambda: not alive(child), timeout=10)
    finally:
        kill_all([parent.pid, child])


def test_a_worker_whose_result_pipe_has_no_reader_kills_itself():
    """The watchdog: once nobody can read the worker's result pipe (the main process is gone,
    whoever its parent is), the worker is killed, even in the middle of a long sleep."""
    code = (
        "import os, sys, time\n"
        "from multiprocessing.connection import Connection\n"
        "from attnbench.runner.lifeline import watch_result_pipe\n"
        "conn = Connection(int(sys.argv[1]), readable=False)\n"
        "watch_result_pipe(conn)\n"
        "print('watching', flush=True)\n"
        "time.sleep(600)\n"
    )
    r, w = os.pipe()
    child = subprocess.Popen([sys.executable, "-c", code, str(w)], pass_fds=(w,), stdout=subprocess.PIPE, text=True)
    os.close(w)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "watching"
        assert child.poll() is None
        os.close(r)  # the reader goes away
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


# --- the journal and atomic writes -------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        '{"row": {"x": 1}}',  # valid JSON, no point_id or status
        '{"row": {"point_id": "p", "status": "exploded"}}',  # unknown status
        '{"row": {"point_id": "p", "status": "ok", "round": -1}}',  # bad round
        '{"row": {"point_id": "p", "status": "ok"}, "samples": ["a"]}',  # samples not numbers
        "[1, 2, 3]",  # JSON, not an object
        '"just a string"',
        "null",
        "\x00\x01garbage{",  # not JSON
        "[" * 100000,  # nesting deeper than the parser goes
    ],
    ids=["no-id", "bad-status", "bad-round", "bad-samples", "list", "string", "null", "garbage", "deep"],
)
def test_journal_lines_that_are_not_records_are_skipped_and_named(tmp_path, line):
    journal.append(tmp_path, Record({"point_id": "a", "status": "ok", "round": 0}, samples=[1.0]))
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write(line + "\n")
    journal.append(tmp_path, Record({"point_id": "b", "status": "ok", "round": 0}, samples=[2.0]))
    got = journal.read(tmp_path)
    assert [r.point_id for r in got.records] == ["a", "b"] and got.bad_lines == [2]
    assert got.warning(tmp_path / "journal.jsonl").endswith("skipped 1 line(s) that are not records (line 2)")


def test_a_torn_last_line_is_closed_by_the_next_append(tmp_path):
    journal.append(tmp_path, Record({"point_id": "a", "status": "ok"}))
    with open(tmp_path / "journal.jsonl", "a") as f:
        f.write('{"row": {"point_id": "b", "sta')  # a kill mid-write
    assert "torn last line" in (journal.read(tmp_path).warning(tmp_path / "journal.jsonl") or "")
    journal.append(tmp_path, Record({"point_id": "c", "status": "ok"}))
    got = journal.read(tmp_path)
    assert [r.point_id for r in got.records] == ["a", "c"] and got.bad_lines == [2]


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "metadata.json"
    target.write_text('{"old": true}')
    code = (
        "import resource, sys\n"
        "from attnbench.results.layout import StorageError, write_atomic\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
        "try:\n"
        "    write_atomic(sys.argv[1], 'x' * 5000)\n"
        "except StorageError as exc:\n"
        "    print(exc)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "metadata.json: cannot be written (File too large)" in res.stdout
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["metadata.json"]
    with pytest.raises(StorageError, match="cannot be written"):
        write_atomic(tmp_path / "missing-dir" / "x.json", "{}")
    assert StorageError("x").exit_code == 74


# --- one-line errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc,code",
    [
        (UserError("impl 'a\x1b[2Jb': unknown \x1b]8;;http://e\x07link\x1b]8;;\x07"), 2),
        (StorageError("/x/journal.jsonl: cannot be written (No space left on device)"), 74),
        (OSError(28, "No space left on device", "/x/results.parquet"), 74),
        (OSError(21, "Is a directory", "/x/out.md"), 2),
    ],
    ids=["user-error-with-escapes", "storage", "enospc", "eisdir"],
)
def test_errors_are_one_clean_line_with_their_exit_code(capsys, exc, code):
    @user_errors
    def command() -> None:
        raise exc

    with pytest.raises(typer.Exit) as info:
        command()
    err = capsys.readouterr().err
    assert info.value.exit_code == code
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "\x1b" not in err and "\x07" not in err


def test_an_oserror_that_is_a_bug_keeps_its_traceback():
    @user_errors
    def command() -> None:
        raise OSError(9, "Bad file descriptor")

    with pytest.raises(OSError, match="Bad file descriptor"):
        command()
