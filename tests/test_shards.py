"""Sharded runs without a cluster: shard journals merge into the run's one journal, a shard's
journal has one writer, a cancelled shard loses nothing and duplicates nothing after --resume.

The Slurm executor runs here with a fake backend that starts each shard as a local process
(``scancel`` is SIGTERM to it, as Slurm sends); the real Slurm path is `nox -s slurm`."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from attnbench.errors import UserError
from attnbench.point import Point, Record
from attnbench.results import journal, shards
from attnbench.results.layout import RunDir
from attnbench.runner.executors import ExecutorRequest
from attnbench.runner.executors.slurm import ShardView, SlurmExecutor, split
from attnbench.runner.executors.status import collect
from attnbench.runner.session import RunRequest, start
from attnbench.slurm_config import SlurmConfig, parse_time, resolve_config
from attnbench.suite import parse_suite

REPO = Path(__file__).resolve().parents[1]
SITE = Path(__file__).resolve().parent / "fixtures" / "cluster_site"


def rec(pid: str, rnd: int = 0, status: str = "ok", **row) -> Record:
    return Record({"point_id": pid, "round": rnd, "status": status, **row}, [1.0])


# --- the journal: one logical journal from many files ---------------------------------------


def test_shard_journals_merge_after_the_main_journal_in_submission_order(tmp_path):
    rd = RunDir(tmp_path)
    journal.append(rd, rec("a", note="main"))
    journal.append(rd, rec("b", note="main"))
    with shards.ShardJournal(rd, "2-0") as j:
        j.append(rec("a", note="second submission"))
    with shards.ShardJournal(rd, "1-0") as j:
        j.append(rec("a", note="first submission"))
        j.append(rec("c", note="first submission"))
    with shards.ShardJournal(rd, "10-0") as j:  # 10 sorts after 2 (numbers, not text)
        j.append(rec("c", note="tenth submission"))
    got = {r.point_id: r.row["note"] for r in journal.load(rd)}
    assert got == {"a": "second submission", "b": "main", "c": "tenth submission"}
    assert [p.name for p in shards.journal_files(rd)] == ["shard-1-0.jsonl", "shard-2-0.jsonl", "shard-10-0.jsonl"]


def test_a_torn_shard_line_is_skipped_and_reported_then_closed_by_the_next_append(tmp_path):
    rd = RunDir(tmp_path)
    with shards.ShardJournal(rd, "1-0") as j:
        j.append(rec("a"))
    with open(shards.journal_path(rd, "1-0"), "a") as f:
        f.write('{"row": {"point_id": "b", "sta')  # killed mid-write
    read = journal.read(rd)
    assert [r.point_id for r in read.records] == ["a"]
    assert read.shard_bad_lines == {"shard-1-0.jsonl": [2]}
    with shards.ShardJournal(rd, "1-0") as j:  # the requeued shard appends after it
        assert j.done() == {("a", 0)}
        j.append(rec("b"))
    assert sorted(r.point_id for r in journal.load(rd)) == ["a", "b"]


def test_a_shard_journal_has_one_writer(tmp_path):
    rd = RunDir(tmp_path)
    first = shards.ShardJournal(rd, "1-0")
    with pytest.raises(shards.ShardBusy, match="another process is writing"):
        shards.ShardJournal(rd, "1-0")
    # another process is refused too (flock is per open file, across processes)
    code = (
        "import sys; from attnbench.results import shards; from attnbench.results.layout import RunDir\n"
        "try:\n    shards.ShardJournal(RunDir(sys.argv[1]), '1-0')\nexcept shards.ShardBusy:\n    sys.exit(3)\n"
    )
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=_env(), timeout=60)
    assert res.returncode == 3
    first.close()
    shards.ShardJournal(rd, "1-0").close()  # free again once the writer closed it


# --- splitting and settings ------------------------------------------------------------------


def _pts(n: int) -> list[Point]:
    return [Point("envprobe", "fwd", False, "float32", 1, 2, 16 + 8 * i, 8, 8) for i in range(n)]


def test_points_are_dealt_round_robin_with_every_round_of_a_point_in_one_shard():
    pts = _pts(5)
    items = [(p, r) for r in range(2) for p in pts]
    parts = split(items, 2)
    assert [[(p.N, r) for p, r in part] for part in parts] == [
        [(16, 0), (32, 0), (48, 0), (16, 1), (32, 1), (48, 1)],
        [(24, 0), (40, 0), (24, 1), (40, 1)],
    ]
    assert len(split(items, 10)) == 5  # never more shards than points


def test_slurm_settings_combine_suite_stored_file_and_options(tmp_path):
    cfg_file = tmp_path / "cluster.toml"
    cfg_file.write_text('[slurm]\npartition = "file"\ntime = "1-02:00:00"\nsetup = ["module load cuda"]\n')
    req = ExecutorRequest(
        kind="slurm",
        slurm={"gpus_per_node": 4, "array_parallelism": None},
        slurm_config=cfg_file,
        stored={"kind": "slurm", "slurm": {"partition": "stored", "shards": 3, "qos": "high"}},
    )
    cfg = resolve_config(req, {"partition": "suite", "constraint": "h100", "qos": "low"})
    assert cfg.partition == "file" and cfg.time_min == 26 * 60 and cfg.setup == ("module load cuda",)
    assert cfg.gpus_per_node == 4 and cfg.shards == 3 and cfg.constraint == "h100" and cfg.qos == "high"
    assert SlurmConfig(array_parallelism=6).n_shards(4) == 4 and SlurmConfig().n_shards(100) == 4
    assert [parse_time(t) for t in (90, "90", "1:30:00", "01:30", "0:00:30")] == [90, 90, 90, 90, 1]


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ("partiton = 'gpu'", "[slurm]: unknown key 'partiton'; expected one of partition, gpus_per_node"),
        ("gpus_per_node = -1", "[slurm]: gpus_per_node = -1: expected an integer >= 0"),
        ("time = 'soon'", "time = 'soon': expected minutes"),
        ("setup = 'module load cuda'", "setup = 'module load cuda': expected a list of shell lines"),
    ],
)
def test_a_bad_slurm_table_in_a_suite_is_one_line(table, needle):
    text = f"name = 't'\n[params]\nimpl = 'softmax'\nN = 16\n[slurm]\n{table}\n"
    with pytest.raises(UserError) as exc:
        parse_suite(text, "t.toml")
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_a_suite_slurm_table_is_kept():
    suite = parse_suite("name='t'\n[params]\nimpl='softmax'\nN=16\n[slurm]\npartition='gpu'\ngpus_per_node=2\n", "t")
    assert suite.slurm == {"partition": "gpu", "gpus_per_node": 2}


@pytest.mark.parametrize(
    ("own", "slurm", "polls", "ended"),
    [
        ("finished", None, 0, True),  # it said so: Slurm is not even asked
        ("running", None, 0, False),
        ("running", "RUNNING", 0, False),
        ("stopped", "PENDING", 0, False),  # requeued after a time limit: it comes back
        (None, "CANCELLED by 0", 0, True),  # cancelled before it started
        ("running", "NODE_FAIL", 0, True),
        ("stopped", "UNKNOWN", 1, False),  # one unanswered poll is not enough
        ("stopped", "UNKNOWN", 2, True),
        ("running", "UNKNOWN", 5, False),  # it says it runs and Slurm cannot be asked: wait
        ("running", "GONE", 1, True),  # Slurm answered and no longer knows it (a node crash)
    ],
)
def test_when_a_shard_counts_as_ended(own, slurm, polls, ended):
    view = ShardView(shards.ShardEntry("1-0", "7_0", []), {"state": own} if own else {}, slurm, polls)
    assert view.ended is ended


# --- the whole flow through the Slurm executor, with shards as local processes ----------------


def _env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(SITE), str(REPO), e.get("PYTHONPATH", "")])
    return e


class LocalProcessBackend:
    """Each shard a local process; job ids like Slurm's array tasks; scancel = SIGTERM."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.procs: dict[str, subprocess.Popen] = {}
        self.submissions: list[list[str]] = []
        self.cancelled: set[str] = set()

    def submit(self, folder, config, jobs, name):
        array = 100 + len(self.submissions)
        ids = []
        for k, job in enumerate(jobs):
            jid = f"{array}_{k}"
            path = self.tmp / f"{jid}.pkl"
            path.write_bytes(pickle.dumps(job))
            env = {**self.env, "SLURM_ARRAY_JOB_ID": str(array), "SLURM_ARRAY_TASK_ID": str(k)}
            code = f"import pickle; pickle.load(open({str(path)!r}, 'rb'))()"
            log = open(self.tmp / f"{jid}.log", "w")  # noqa: SIM115
            self.procs[jid] = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=log)
            ids.append(jid)
        self.submissions.append(ids)
        return ids

    def states(self, folder, job_ids):
        out = {}
        for jid in job_ids:
            code = self.procs[jid].poll()
            if code is None:
                out[jid] = "RUNNING"
            elif jid in self.cancelled:  # as Slurm reports a scancelled job, however it exited
                out[jid] = "CANCELLED by 0"
            else:
                out[jid] = "COMPLETED" if code == 0 else "FAILED"
        return out

    def scancel(self, jid: str) -> None:
        self.cancelled.add(jid)
        self.procs[jid].send_signal(signal.SIGTERM)


SUITE = """
name = "shards"
[params]
impl = ["softmax", "linear-chunked"]
N = [16, 32, 48]
B = 1
H = 2
D = 8
M = 8
pass = "fwd"
causal = false
[device.cpu.limits]
linear-chunked = { max_N = 40 }
[timing]
warmup_s = 0.001
min_samples = 3
min_time_s = 0.3
max_time_s = 0.4
threads = 1
"""


def test_cancelled_shard_then_resume_loses_nothing_and_duplicates_nothing(tmp_path):
    """Two shards of five runnable points (one more is skipped by a suite limit); shard 1 is
    cancelled (SIGTERM) once it journaled a point; the executor reports what is missing; a
    resume re-submits exactly those, and the run ends with every point once."""
    suite = tmp_path / "shards.toml"
    suite.write_text(SUITE)
    out = tmp_path / "run"
    backend = LocalProcessBackend(tmp_path, _env())
    events: list[str] = []
    session = start(RunRequest(suite=str(suite), out=str(out)), on_event=events.append, remote=lambda s: "cpu")
    assert session.options.threads == 1
    session.executor = SlurmExecutor(SlurmConfig(shards=2), backend=backend, wait=False)
    assert session.sweep() is True and session.executor.detached  # submitted, not waited for
    (first, second) = backend.submissions[0]
    manifest = shards.read_manifest(out)
    assert [s.id for s in manifest.shards] == ["1-0", "1-1"]
    assert sorted(pid for s in manifest.shards for pid in s.point_ids) == sorted(
        p.point_id for p in session.points if not p.skip
    )
    # the skipped point needed no job: its row is in the main journal already
    assert [r.status.value for r in shards.read_records(RunDir(out).journal)] == ["skipped"]

    deadline = time.monotonic() + 240
    while not shards.read_records(shards.journal_path(out, "1-1")):
        assert time.monotonic() < deadline, "shard 1-1 journaled nothing in time"
        assert backend.procs[second].poll() is None, (tmp_path / f"{second}.log").read_text()[-2000:]
        time.sleep(0.2)
    backend.scancel(second)
    backend.procs[second].wait(timeout=60)
    backend.procs[first].wait(timeout=240)
    assert shards.read_status(out, "1-1")["state"] == shards.STOPPED
    assert shards.read_status(out, "1-0")["state"] == shards.FINISHED, (tmp_path / f"{first}.log").read_text()

    st = collect(out, backend)
    cut = len(manifest.shards[1].items) - next(s.done for s in st.shards if s.id == "1-1")
    assert cut >= 1, "the cancelled shard had finished anyway: nothing to resume"
    assert st.missing == cut and st.in_live_shards == 0 and st.executor == "slurm"
    assert {s.id: s.slurm_state for s in st.shards} == {"1-0": "COMPLETED", "1-1": "CANCELLED"}
    assert all(r.status.value != "crashed" for r in journal.load(out))  # SIGTERM left no false row

    # --resume: only the missing points are submitted, in a new submission, and waited for
    events.clear()
    resumed = start(RunRequest(), resume=out, on_event=events.append, remote=lambda s: "cpu")
    resumed.executor = SlurmExecutor(SlurmConfig(shards=2), backend=backend, wait=True)
    done: list[Record] = []
    assert resumed.sweep(on_done=done.append) is False
    assert len(backend.submissions) == 2
    resubmitted = {pid for s in shards.read_manifest(out).submissions[1].shards for pid, _r in s.items}
    assert len(resubmitted) == cut and len(done) == cut
    assert not resubmitted & {r.point_id for r in shards.read_records(shards.journal_path(out, "1-1"))}

    # every (point, round) exactly once across all journals, each with the columns of where it ran
    lines = [r for p in [RunDir(out).journal, *shards.journal_files(out)] for r in shards.read_records(p)]
    counts = Counter((r.point_id, r.round) for r in lines)
    assert set(counts) == {(p.point_id, 0) for p in session.points} and set(counts.values()) == {1}
    for path in shards.journal_files(out):  # one writer per file, and the file is its own shard's
        sid = path.name.removeprefix("shard-").removesuffix(".jsonl")
        rows = [r.row for r in shards.read_records(path)]
        assert {(r["shard"], r["slurm_job_id"]) for r in rows} == {(sid, rows[0]["slurm_job_id"])}
    ids = [r.row["slurm_job_id"] for p in shards.journal_files(out) for r in shards.read_records(p)[:1]]
    assert len(ids) == len(set(ids))
    ran = [r for r in journal.load(out) if r.status.value == "ok"]
    assert len(ran) == 5 and all(r.row["host"] and r.row["device_model"] for r in ran)
    df = resumed.finalize(False)
    assert sorted(df["status"]) == ["ok"] * 5 + ["skipped"]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["executor"]["kind"] == "slurm" and meta["finished"]
    assert collect(out, backend).missing == 0


def test_slurm_states_without_accounting_come_from_squeue_and_scontrol(monkeypatch):
    from types import SimpleNamespace

    from attnbench.runner.executors import slurm

    scontrol = {
        "7_1": ("JobId=9 ArrayJobId=7 ArrayTaskId=1 JobState=CANCELLED Reason=None", "", 0),
        "7_2": ("", "slurm_load_jobs error: Invalid job id specified", 1),
    }
    squeue_works = {"ok": True}

    def run(cmd, **kw):
        if cmd[0] == "squeue":
            if not squeue_works["ok"]:
                raise OSError("squeue: not found")
            return SimpleNamespace(returncode=0, stdout="7_0|RUNNING\n8_0|PENDING\n", stderr="")
        out, err, code = scontrol[cmd[-1]]
        return SimpleNamespace(returncode=code, stdout=out, stderr=err)

    monkeypatch.setattr(slurm.subprocess, "run", run)
    got = slurm._squeue_scontrol_states(["7_0", "7_1", "7_2"])
    assert got == {"7_0": "RUNNING", "7_1": "CANCELLED", "7_2": slurm.GONE}
    squeue_works["ok"] = False  # Slurm could not be asked: not "gone", only unknown
    assert slurm._squeue_scontrol_states(["7_2"]) == {"7_2": slurm.UNKNOWN}


def test_a_local_resume_is_refused_while_shards_may_still_run(tmp_path):
    from attnbench.runner.executors.local import LocalExecutor

    rd = RunDir(tmp_path)
    entry = shards.ShardEntry("1-0", "7_0", [("p", 0)])
    shards.write_manifest(rd, shards.Manifest([shards.Submission(1, "now", {}, [entry])]))
    shards.write_status(rd, "1-0", {"state": shards.RUNNING})

    class Backend:
        state = "RUNNING"

        def states(self, folder, job_ids):
            return {j: self.state for j in job_ids}

    backend = Backend()
    with pytest.raises(UserError, match=r"Slurm shards may still run: 1-0 \(job 7_0, RUNNING\).*--executor slurm"):
        LocalExecutor.refuse_live_shards(rd, backend)
    backend.state = "CANCELLED"
    LocalExecutor.refuse_live_shards(rd, backend)  # ended: nothing left to measure twice
