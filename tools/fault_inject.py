"""Fault injection for `attnbench run`: kill it, tear it, fill its disk, race it, then resume.

Each trial starts a small run in a fresh directory and injects one fault at a random moment:

  kill-main      SIGKILL the main process (then: no worker, fork server or tracker may survive)
  kill-worker    SIGKILL the worker measuring a point (that point is a planted crash: `crashed`, or
                 `ok` with `correct` null when the kill came during its correctness check)
  kill-server    SIGKILL the fork server (its worker dies with it; the point runs again)
  tear-journal   SIGKILL the main process, then damage the journal: cut a line in the middle,
                 and cut its last line, append garbage or append JSON that is not a record
  full-disk      run under a file size limit (ulimit -f) that the journal outgrows, or on a tiny
                 tmpfs when one can be mounted (root); resume with space again
  two-writers    a second `run --resume` while the first runs: it must be refused
  sigterm        SIGTERM to the run's process group
  double-ctrl-c  two SIGINTs 50 ms apart

then resumes (`attnbench run --resume`, until it exits 0) and prints, per trial: the (point,
round)s finished before the resume and after it, how many of those before were lost, how many
are duplicated, how many verdicts (status, correct) changed from before, and how many differ
from a clean run of the same suite (planted crashes aside). 0 lost, 0 duplicated, 0 changed is
the bar; the exit status is 1 if any trial misses it, leaves a process behind, or ends
incomplete.

    python tools/fault_inject.py --trials 24 --seed 1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = (
    "kill-main",
    "kill-worker",
    "kill-server",
    "tear-journal",
    "full-disk",
    "two-writers",
    "sigterm",
    "double-ctrl-c",
)

SUITE = """
name = "faults"
[params]
impl = ["linear-chunked", "softmax", "linear-cumsum"]
N = [16, 48, 96]
B = 1
H = 2
D = 8
M = 8
pass = ["fwd", "fwdbwd"]
[timing]
warmup_s = 0.001
min_samples = 3
min_time_s = 0.01
max_time_s = 0.06
timeout_s = 120
"""

Verdict = tuple[str, Any]


@dataclass
class Trial:
    kind: str
    before: dict[tuple[str, int], Verdict] = field(default_factory=dict)
    after: dict[tuple[str, int], Verdict] = field(default_factory=dict)
    duplicated: int = 0
    changed: int = 0
    vs_clean: int = 0
    planted: int = 0
    orphans: int = 0
    complete: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return len(set(self.before) - set(self.after))

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.duplicated
            and not self.changed
            and not self.vs_clean
            and not self.orphans
            and self.complete
            and not any(n.startswith("UNEXPECTED") for n in self.notes)
        )


# --- processes (also used by tests/integrity_helpers.py) -----------------------------------


def proc_stat(pid: int) -> tuple[int, str] | None:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            rest = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(rest[1]), rest[0]


def alive(pid: int) -> bool:
    st = proc_stat(pid)
    return st is not None and st[1] not in ("Z", "X")


def children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None and st[1] not in ("Z", "X"):
                out.setdefault(st[0], []).append(int(name))
    return out


def descendants(root: int) -> list[int]:
    kids, out, todo = children(), [], [root]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _server_and_worker(main: int) -> tuple[int | None, int | None]:
    kids = children()
    server = next((p for p in kids.get(main, []) if "forkserver" in cmdline(p)), None)
    worker = None
    if server is not None:
        worker = next(iter(kids.get(server, [])), None)
    return server, worker


def kill(pids: list[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


# --- the run directory ----------------------------------------------------------------------


def _lines(run: Path) -> list[str]:
    path = run / "journal.jsonl"
    try:
        return path.read_text(errors="replace").split("\n")
    except OSError:
        return []


def _records(run: Path) -> tuple[dict[tuple[str, int], Verdict], int]:
    """The valid records by (point_id, round) with their verdict, and how many keys appear on
    more than one line."""
    seen: Counter[tuple[str, int]] = Counter()
    out: dict[tuple[str, int], Verdict] = {}
    for line in _lines(run):
        try:
            row = json.loads(line)["row"]
            key = (str(row["point_id"]), int(row.get("round") or 0))
            verdict = (str(row["status"]), row.get("correct"))
        except (ValueError, KeyError, TypeError):
            continue
        seen[key] += 1
        out[key] = verdict
    return out, sum(1 for n in seen.values() if n > 1)


def _finished(run: Path) -> int:
    return len(_records(run)[0])


class Runner:
    def __init__(self, root: Path, python: str) -> None:
        self.root = root
        self.python = python
        self.suite = root / "faults.toml"
        self.suite.write_text(SUITE)
        self.env = {**os.environ}
        self.env.pop("COLUMNS", None)

    def cmd(self, *args: str, ulimit_f: int | None = None) -> list[str]:
        base = [self.python, "-m", "attnbench", *args]
        if ulimit_f is None:
            return base
        return ["sh", "-c", f'ulimit -f {ulimit_f} && exec "$@"', "sh", *base]

    def start(self, run: Path, ulimit_f: int | None = None, extra: tuple[str, ...] = ()) -> subprocess.Popen:
        args = ["run", "--suite", str(self.suite), "--out", str(run), "--no-report", *extra]
        return subprocess.Popen(
            self.cmd(*args, ulimit_f=ulimit_f),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            start_new_session=True,
        )

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=self.env, timeout=timeout
        )

    def resume(self, run: Path, trial: Trial) -> None:
        for _ in range(3):
            res = self.run("run", "--resume", str(run), "--no-report")
            if res.returncode == 0:
                return
            trial.notes.append(f"UNEXPECTED resume exit {res.returncode}: {_last(res.stderr)}")


def _last(text: str) -> str:
    lines = [x for x in (text or "").strip().splitlines() if x.strip()]
    return lines[-1][:160] if lines else ""


def _wait(pred: Any, timeout: float = 180.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.02)
    return False


def _wait_points(run: Path, proc: subprocess.Popen, n: int) -> bool:
    return _wait(lambda: _finished(run) >= n or proc.poll() is not None)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill([proc.pid, *descendants(proc.pid)])
        _, err = proc.communicate()
        return -1, "hung: killed"
    return proc.returncode, err or ""


# --- the faults -----------------------------------------------------------------------------


def _expect_exit(trial: Trial, code: int, err: str, want: tuple[int, ...]) -> None:
    trial.notes.append(f"exit {code}")
    if code not in want:
        trial.notes.append(f"UNEXPECTED exit {code} (wanted {'/'.join(map(str, want))}): {_last(err)}")
    if "Traceback" in err:
        trial.notes.append(f"UNEXPECTED traceback: {_last(err)}")


def _orphans_after(below: list[int], trial: Trial) -> None:
    if not _wait(lambda: not any(alive(p) for p in below), timeout=15):
        left = [p for p in below if alive(p)]
        trial.orphans = len(left)
        trial.notes.append(f"orphans {[(p, cmdline(p)[:60]) for p in left]}")
        kill(left)


def fault_kill_main(r: Runner, run: Path, rng: random.Random, trial: Trial, total: int) -> None:
    proc = r.start(run)
    if _wait_points(run, proc, rng.randint(0, total - 2)):
        time.sleep(rng.uniform(0, 0.4))
    below = descendants(proc.pid)
    proc.kill()
    proc.wait()
    trial.notes.append(f"killed main after {_finished(run)}")
    _orphans_after(below, trial)


def fault_kill_worker(r: Runner, run: Path, rng: random.Random, trial: Trial, total: int) -> None:
    proc = r.start(run)
    _wait_points(run, proc, rng.randint(0, total - 4))
    while proc.poll() is None:  # the next worker seen, at a random moment of its life
        worker = _server_and_worker(proc.pid)[1]
        if worker is None:
            time.sleep(0.005)
            continue
        time.sleep(rng.uniform(0, 0.05))
        if alive(worker):
            kill([worker])
            trial.notes.append("killed a worker")
            break
    code, err = _finish(proc)
    _expect_exit(trial, code, err, (0,))


def fault_kill_server(r: Runner, run: Path, rng: random.Random, trial: Trial, total: int) -> None:
    proc = r.start(run)
    _wait_points(run, proc, rng.randint(0, total - 2))
    time.sleep(rng.uniform(0, 0.3))
    server, _worker = _server_and_worker(proc.pid)
    if server is not None:
        kill([server])
        trial.notes.append("killed the fork server")
    code, err = _finish(proc)
    _expect_exit(trial, code, err, (0,))


TEAR_TAILS = ("cut-last", "garbage", "not-a-record")


def fault_tear_journal(r: Runner, run: Path, rng: random.Random, trial: Trial, total: int, nth: int) -> None:
    """Kill the run, cut a line in the middle of its journal (that record is lost: resume runs
    it again), then damage the tail: cut the last line (a kill mid-write), append garbage, or
    append JSON lines that are not records (rotating with ``nth``)."""
    fault_kill_main(r, run, rng, trial, total)
    path = run / "journal.jsonl"
    if not path.exists():
        return
    lines = path.read_bytes().split(b"\n")
    done = []
    if len(lines) >= 3:
        i = rng.randrange(len(lines) - 2)
        lines[i] = lines[i][: len(lines[i]) // 2]
        done.append(f"cut line {i + 1}")
    data = b"\n".join(lines)
    how = TEAR_TAILS[nth % len(TEAR_TAILS)]
    if how == "cut-last" and data.strip():
        last = data.rstrip(b"\n").rfind(b"\n") + 1
        data = data[: rng.randint(last, max(last, len(data.rstrip(b"\n")) - 1))]
    elif how == "garbage":
        data += b"\x00\xff{garbage" + bytes(rng.randrange(256) for _ in range(20))
    elif how == "not-a-record":
        data += b'{"row": {"point_id": 7}}\n[1, 2, 3]\n'
    path.write_bytes(data)
    trial.notes.append(f"journal: {', '.join([*done, how])}")


def _mount_tmpfs(where: Path, size_k: int) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_k}k", "tmpfs", str(where)], capture_output=True)
    return res.returncode == 0


def fault_full_disk(r: Runner, run: Path, rng: random.Random, trial: Trial, total: int, tmpfs: bool) -> Path:
    """Returns the run directory (moved onto a tmpfs when one could be mounted)."""
    if tmpfs:
        mnt = run.parent / f"{run.name}-tmpfs"
        size = rng.randint(64, 160)
        if _mount_tmpfs(mnt, size):
            run = mnt / "run"
            trial.notes.append(f"tmpfs {size} KiB")
            proc = r.start(run)
            code, err = _finish(proc)
            _expect_exit(trial, code, err, (0, 2, 74))
            subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
            return run
    limit = rng.randint(12, 40)
    trial.notes.append(f"ulimit -f {limit}")
    proc = r.start(run, ulimit_f=limit)
    code, err = _finish(proc)
    _expect_exit(trial, code, err, (0, 2, 74))
    return run


def fault_two_writers(r: Runner, run: Path, rng: random.Random, trial: Trial, total: int) -> None:
    # slower points (the resume reuses the option), and the second writer starts as soon as the
    # first has written its plan, so that the first still runs when the second asks for the lock
    proc = r.start(run, extra=("--max-time", "0.3"))
    _wait(lambda: (run / "plan.json").exists() or proc.poll() is not None)
    if rng.random() < 0.5:
        _wait_points(run, proc, rng.randint(1, total // 2))
    if proc.poll() is None:
        second = r.run("run", "--resume", str(run), "--no-report")
        refused = second.returncode == 2 and "in use by" in second.stderr
        if proc.poll() is None and not refused:  # the first held the lock all along: the second had to fail
            trial.notes.append(f"UNEXPECTED second writer: exit {second.returncode}: {_last(second.stderr)}")
        elif refused:
            trial.notes.append("second writer refused")
        else:  # the first had finished before the second took the lock: a plain resume
            trial.notes.append(f"second writer came after the first (exit {second.returncode})")
    if rng.random() < 0.5:
        below = descendants(proc.pid)
        proc.kill()
        proc.wait()
        trial.notes.append("then killed the first")
        _orphans_after(below, trial)
    else:
        code, err = _finish(proc)
        _expect_exit(trial, code, err, (0,))


def fault_signals(
    r: Runner, run: Path, rng: random.Random, trial: Trial, total: int, sigs: tuple[int, ...], want: int
) -> None:
    proc = r.start(run)
    # once the command has taken over (its run directory exists; before that Python is still
    # importing, and a signal there ends the interpreter the usual way, before any run exists)
    _wait(lambda: run.exists() or proc.poll() is not None)
    _wait_points(run, proc, rng.randint(0, total - 2))
    time.sleep(rng.uniform(0, 0.3))
    for i, sig in enumerate(sigs):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        if i + 1 < len(sigs):
            time.sleep(0.05)
    code, err = _finish(proc)
    _expect_exit(trial, code, err, (want, 0))  # 0: it had finished before the signal
    if code == want and (run / "plan.json").exists() and not (run / "results.parquet").exists():
        trial.notes.append("UNEXPECTED no results.parquet after the signal")


# --- the trials -----------------------------------------------------------------------------


def run_trial(r: Runner, idx: int, kind: str, rng: random.Random, clean: dict, tmpfs: bool) -> Trial:
    trial = Trial(kind)
    run = r.root / f"trial-{idx:02d}"
    total = len(clean)
    mounted: Path | None = None
    try:
        if kind == "kill-main":
            fault_kill_main(r, run, rng, trial, total)
        elif kind == "kill-worker":
            fault_kill_worker(r, run, rng, trial, total)
        elif kind == "kill-server":
            fault_kill_server(r, run, rng, trial, total)
        elif kind == "tear-journal":
            fault_tear_journal(r, run, rng, trial, total, idx // len(KINDS))
        elif kind == "full-disk":
            new = fault_full_disk(r, run, rng, trial, total, tmpfs)
            if new != run:
                mounted, run = new.parent, new
        elif kind == "two-writers":
            fault_two_writers(r, run, rng, trial, total)
        elif kind == "sigterm":
            fault_signals(r, run, rng, trial, total, (signal.SIGTERM,), 143)
        elif kind == "double-ctrl-c":
            fault_signals(r, run, rng, trial, total, (signal.SIGINT, signal.SIGINT), 130)
        trial.before = _records(run)[0] if run.exists() else {}
        if (run / "plan.json").exists():
            r.resume(run, trial)
        else:  # the fault struck before the run existed: start it again
            res = r.run("run", "--suite", str(r.suite), "--out", str(run), "--no-report")
            if res.returncode != 0:
                trial.notes.append(f"UNEXPECTED rerun exit {res.returncode}: {_last(res.stderr)}")
        trial.after, trial.duplicated = _records(run)
        # the point whose worker was killed: `crashed`, or, killed during its correctness check
        # (the timing was sent first), `ok` with `correct` null (the check did not run); one at most
        hit = [
            k
            for k, v in trial.after.items()
            if kind == "kill-worker" and k in clean and v != clean[k] and (v[0] == "crashed" or v == ("ok", None))
        ]
        trial.planted = min(len(hit), 1)
        trial.changed = sum(1 for k, v in trial.before.items() if k in trial.after and trial.after[k] != v)
        trial.vs_clean = sum(1 for k, v in trial.after.items() if k in clean and v != clean[k]) - trial.planted
        trial.complete = set(trial.after) == set(clean)
        if (run / "results.parquet").exists():
            import pandas as pd  # the table must agree with the journal: one row per point

            df = pd.read_parquet(run / "results.parquet")
            trial.duplicated += int(df["point_id"].duplicated().sum())
            if set(df["point_id"]) != {k[0] for k in trial.after}:
                trial.notes.append("UNEXPECTED results.parquet differs from the journal")
        else:
            trial.notes.append("UNEXPECTED no results.parquet")
    finally:
        if mounted is not None:
            subprocess.run(["umount", "-l", str(mounted)], capture_output=True)
    return trial


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of: " + ", ".join(KINDS))
    ap.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temp dir, removed)")
    ap.add_argument("--no-tmpfs", action="store_true", help="fill the disk with ulimit -f only")
    args = ap.parse_args(argv)
    kinds = [k for k in args.kinds.split(",") if k]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        ap.error(f"--kinds: unknown {unknown}; expected some of {', '.join(KINDS)}")
    rng = random.Random(args.seed)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="attnbench-faults-"))
    root.mkdir(parents=True, exist_ok=True)
    r = Runner(root, sys.executable)
    t0 = time.monotonic()
    clean_run = root / "clean"
    res = r.run("run", "--suite", str(r.suite), "--out", str(clean_run), "--no-report")
    if res.returncode != 0:
        print(f"the clean run failed (exit {res.returncode}): {_last(res.stderr)}", file=sys.stderr)
        return 2
    clean, _ = _records(clean_run)
    print(f"clean run: {len(clean)} (point, round)s in {time.monotonic() - t0:.0f} s; seed {args.seed}")
    header = f"{'trial':>5} {'fault':<14} {'before':>6} {'after':>5} {'lost':>4} {'dup':>3} {'changed':>7} {'vs clean':>8} {'planted':>7}  notes"
    print(header)
    trials = []
    for i in range(args.trials):
        kind = kinds[i % len(kinds)]
        t = run_trial(r, i, kind, rng, clean, tmpfs=not args.no_tmpfs)
        trials.append(t)
        mark = "" if t.ok else "  <-- FAIL"
        print(
            f"{i:>5} {kind:<14} {len(t.before):>6} {len(t.after):>5} {t.lost:>4} {t.duplicated:>3} {t.changed:>7} "
            f"{t.vs_clean:>8} {t.planted:>7}  {'; '.join(t.notes)}{'' if t.complete else '; INCOMPLETE'}{mark}",
            flush=True,
        )
    bad = [t for t in trials if not t.ok]
    print(
        f"{len(trials)} trials in {time.monotonic() - t0:.0f} s: lost {sum(t.lost for t in trials)}, "
        f"duplicated {sum(t.duplicated for t in trials)}, changed {sum(t.changed for t in trials)}, "
        f"vs clean {sum(t.vs_clean for t in trials)}, orphans {sum(t.orphans for t in trials)}, "
        f"planted crashes {sum(t.planted for t in trials)}; {len(bad)} trial(s) missed the bar"
    )
    if args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
