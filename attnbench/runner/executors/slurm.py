"""``--executor slurm``: the missing points of a run as a job array of shards, through submitit.

The submitting process (which holds the run directory and its lock) splits the (point, round)
pairs that are neither done nor in a shard still queued or running into shards (every round of
a point in the same shard, points dealt round-robin so that each shard gets a mix of sizes),
records them in ``shards.json``, submits them with ``submitit`` as one array (``%`` array
parallelism), and by default waits: it follows each shard's journal for progress and asks
Slurm for the shards that have not said they finished. Skipped points need no job: their rows
go to the main journal here. ``--no-wait`` returns after the submission; a later
``attnbench run --resume RUN_DIR`` waits for the shards still alive, re-submits only what is
missing, and writes the tables and the report.
"""

from __future__ import annotations

import getpass
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import submitit

from attnbench.errors import UserError
from attnbench.point import Point, Record, Status
from attnbench.results import journal, shards
from attnbench.results.layout import RunDir
from attnbench.results.metadata import write_metadata
from attnbench.runner.executors import ExecutorRequest
from attnbench.runner.executors.gpus import placement
from attnbench.runner.executors.shard import ShardJob, ShardSpec
from attnbench.runner.sweep import base_row
from attnbench.slurm_config import SlurmConfig, resolve_config
from attnbench.suite import parse_suite

SUBMITIT_DIR = "slurm"  # submitit's pickles and the jobs' logs, inside the run directory
FILE_POLL_S = 1.0
# Slurm is asked about unfinished shards at most this often (seconds), backing off to the max.
SLURM_POLL_S = (3.0, 30.0)
# Slurm states after which a job runs no more (REQUEUED, PREEMPTED with requeue: it comes back).
TERMINAL = {
    "COMPLETED",
    "CANCELLED",
    "FAILED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
    "SPECIAL_EXIT",
}
UNKNOWN = "UNKNOWN"  # Slurm could not be asked (a command failed)
GONE = "GONE"  # Slurm answered and does not know the job (ended before MinJobAge, no accounting)


def base_state(state: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``."""
    return (state or UNKNOWN).split()[0].rstrip("+").upper()


class Backend(Protocol):
    """How shards reach a cluster: submit an array, ask for job states."""

    def submit(self, folder: Path, config: SlurmConfig, jobs: list[ShardJob], name: str) -> list[str]: ...

    def states(self, folder: Path, job_ids: list[str]) -> dict[str, str]: ...


class SubmititBackend:
    """Slurm through submitit: ``map_array`` submits, submitit's job state (sacct) answers, and
    where accounting is off (no slurmdbd) squeue and ``scontrol show job`` answer instead."""

    def __init__(self) -> None:
        self._sacct_ok: bool | None = None

    def submit(self, folder: Path, config: SlurmConfig, jobs: list[ShardJob], name: str) -> list[str]:
        try:
            ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        except RuntimeError as exc:
            raise UserError(f"--executor slurm: no Slurm here ({exc})") from None
        params: dict[str, Any] = {
            "name": name,
            "timeout_min": config.time_min,
            "slurm_array_parallelism": config.array_parallelism or len(jobs),
            "gpus_per_node": config.gpus_per_node or None,
            "cpus_per_task": config.cpus_per_task,
            "mem_gb": config.mem_gb,
            "slurm_partition": config.partition,
            "slurm_account": config.account,
            "slurm_qos": config.qos,
            "slurm_constraint": config.constraint,
            "slurm_exclusive": True if config.exclusive else None,
            "slurm_setup": list(config.setup) or None,
        }
        ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
        try:
            submitted = ex.submit_array(jobs)
        except (subprocess.CalledProcessError, submitit.core.utils.FailedSubmissionError) as exc:
            out = getattr(exc, "stderr", None) or getattr(exc, "output", None) or str(exc)
            text = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
            raise UserError(f"sbatch refused the shards: {' '.join(text.split())[:300]}") from None
        return [str(j.job_id) for j in submitted]

    def states(self, folder: Path, job_ids: list[str]) -> dict[str, str]:
        if not job_ids:
            return {}
        out: dict[str, str] = {}
        if self._sacct_ok is not False:
            out = self._submitit_states(folder, job_ids)
        missing = [j for j in job_ids if base_state(out.get(j, UNKNOWN)) == UNKNOWN]
        if missing:
            out.update(_squeue_scontrol_states(missing))
        return out

    def _submitit_states(self, folder: Path, job_ids: list[str]) -> dict[str, str]:
        try:  # does accounting answer at all? (without slurmdbd sacct exits 1)
            subprocess.run(["sacct", "-n", "-j", job_ids[0]], check=True, capture_output=True, timeout=30)
            self._sacct_ok = True
        except (OSError, subprocess.SubprocessError):
            self._sacct_ok = False
            return {}
        jobs: list[Any] = [submitit.SlurmJob(folder=folder, job_id=j) for j in job_ids]
        jobs[0].watcher.update()
        return {j.job_id: j.watcher.get_state(j.job_id, mode="cache") for j in jobs}


def _squeue_scontrol_states(job_ids: list[str]) -> dict[str, str]:
    """Job states from squeue (live jobs) and ``scontrol show job`` (ended ones Slurm still
    remembers, MinJobAge); GONE when both answered and neither knows the job, UNKNOWN when
    Slurm could not be asked."""
    out: dict[str, str] = {}
    squeue_ok = False
    try:
        res = subprocess.run(
            ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        squeue_ok = res.returncode == 0
        for line in res.stdout.splitlines():
            jid, _, state = line.partition("|")
            out[jid.strip()] = state.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    for jid in job_ids:
        if jid in out:
            continue
        try:
            res = subprocess.run(["scontrol", "-o", "show", "job", jid], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        for tok in res.stdout.split():
            if tok.startswith("JobState="):
                out[jid] = tok.split("=", 1)[1]
                break
        else:
            if squeue_ok and "invalid job id" in res.stderr.lower():
                out[jid] = GONE
    return {j: out.get(j, UNKNOWN) for j in job_ids}


def split(items: list[tuple[Point, int]], n_shards: int) -> list[list[tuple[Point, int]]]:
    """Deal the points round-robin over ``n_shards`` shards, every round of a point together;
    within a shard, round by round."""
    order: list[str] = []
    by_point: dict[str, list[tuple[Point, int]]] = {}
    for point, rnd in items:
        if point.point_id not in by_point:
            order.append(point.point_id)
            by_point[point.point_id] = []
        by_point[point.point_id].append((point, rnd))
    n = max(1, min(n_shards, len(order)))
    out: list[list[tuple[Point, int]]] = [[] for _ in range(n)]
    for i, pid in enumerate(order):
        out[i % n].extend(by_point[pid])
    return [sorted(s, key=lambda it: it[1]) for s in out if s]


@dataclass
class ShardView:
    """A shard as the submitter sees it: the manifest entry, its status file, Slurm's state."""

    entry: shards.ShardEntry
    status: dict[str, Any] = field(default_factory=dict)
    slurm_state: str | None = None  # None: not asked
    unknown_polls: int = 0

    @property
    def own_state(self) -> str | None:
        return self.status.get("state")

    @property
    def ended(self) -> bool:
        """Runs no more: it said it finished, Slurm says it ended or no longer knows it, or Slurm
        could not be asked twice in a row and the shard said it stopped or never started."""
        if self.own_state == shards.FINISHED:
            return True
        if self.slurm_state is None:
            return False
        state = base_state(self.slurm_state)
        if state in TERMINAL or state == GONE:
            return True
        return state == UNKNOWN and self.unknown_polls >= 2 and self.own_state != shards.RUNNING


def shard_views(rd: RunDir, backend: Backend, entries: list[shards.ShardEntry], every: bool = False) -> list[ShardView]:
    """The views of ``entries`` with their status files and Slurm's state (of the shards that did
    not say they finished, or of ``every`` one). Slurm is asked once more, a moment later, about
    the shards it could not answer for."""
    views = [ShardView(e, shards.read_status(rd, e.id)) for e in entries]
    refresh_states(rd, backend, views, every)
    again = [v for v in views if v.slurm_state is not None and base_state(v.slurm_state) == UNKNOWN]
    if again:
        time.sleep(1.0)
        refresh_states(rd, backend, again, every)
    return views


def live_shards(rd: RunDir, backend: Backend | None = None) -> list[ShardView]:
    """The run's shards that may still run (queued, running, requeued, or not known to have ended)."""
    manifest = shards.read_manifest(rd)
    if not manifest.shards:
        return []
    return [v for v in shard_views(rd, backend or SubmititBackend(), manifest.shards) if not v.ended]


def refresh_states(rd: RunDir, backend: Backend, views: list[ShardView], every: bool = False) -> None:
    ask = [v for v in views if v.entry.job_id and (every or v.own_state != shards.FINISHED)]
    states = backend.states(rd.path.resolve() / SUBMITIT_DIR, [str(v.entry.job_id) for v in ask])
    for v in ask:
        v.slurm_state = states.get(str(v.entry.job_id), UNKNOWN)
        v.unknown_polls = v.unknown_polls + 1 if base_state(v.slurm_state) == UNKNOWN else 0


class SlurmExecutor:
    """See the module doc. ``backend`` is Slurm through submitit unless a test gives another."""

    remote = True

    def __init__(self, config: SlurmConfig, backend: Backend | None = None, wait: bool = True) -> None:
        self.config = config
        self.backend: Backend = backend or SubmititBackend()
        self.wait = wait
        self.detached = False

    @classmethod
    def from_request(cls, request: ExecutorRequest, session: Any) -> SlurmExecutor:
        suite = session.plan.meta.get("suite") or {}
        table = parse_suite(suite["source"], str(suite.get("path"))).slurm if suite.get("source") else {}
        config = resolve_config(request, table)
        if session.options.device == "cuda" and not config.gpus_per_node:
            raise UserError("--executor slurm on cuda: give --slurm-gpus-per-node N (or gpus_per_node in [slurm])")
        return cls(config, wait=request.wait)

    def run(
        self,
        session: Any,
        todo: list[tuple[Point, int]],
        on_done: Callable[[Record], None] | None,
        on_start: Callable[[Point, int], None] | None,
    ) -> bool:
        rd: RunDir = session.run_dir
        on_event: Callable[[str], None] = session.on_event
        manifest = shards.read_manifest(rd)
        live = live_shards(rd, self.backend)
        in_flight = {item for v in live for item in v.entry.items}
        to_journal = [(p, r) for p, r in todo if p.skip]
        for point, rnd in to_journal:  # no job needed: the row is the suite's reason
            rec = Record({"status": Status.SKIPPED.value, "error": point.skip})
            rec.row = {**base_row(point), "round": rnd, **placement(None), **rec.row}
            journal.append(rd, rec)
            if on_done is not None:
                on_done(rec)
        missing = [(p, r) for p, r in todo if not p.skip and (p.point_id, r) not in in_flight]
        if live:
            ids = ", ".join(f"{v.entry.id} (job {v.entry.job_id})" for v in live)
            on_event(f"waiting for {len(live)} shard(s) still queued or running: {ids}")
        new = self._submit(session, manifest, missing) if missing else []
        session.meta["executor"] = {"kind": "slurm", "slurm": self.config.to_doc(), "folder": SUBMITIT_DIR}
        write_metadata(rd, session.meta)
        if not self.wait:
            self.detached = True
            return True
        views = live + [ShardView(e) for e in new]
        expected = {(p.point_id, r) for p, r in todo if not p.skip}
        try:
            self._follow(rd, views, expected, on_done)
        except KeyboardInterrupt:
            on_event(
                f"the shards keep running in Slurm: `attnbench status {rd}` shows them; "
                f"`attnbench run --resume {rd}` waits for them and re-submits only what is missing"
            )
            raise
        done = {(r.point_id, r.round) for r in journal.load(rd)}
        lost = expected - done
        if lost:
            for v in views:
                short = [it for it in v.entry.items if it not in done]
                if short:
                    state = v.slurm_state or v.own_state or "?"
                    on_event(
                        f"shard {v.entry.id} (job {v.entry.job_id}, {base_state(state)}): "
                        f"{len(short)} of {len(v.entry.items)} (point, round) pairs missing"
                    )
        return bool(lost)

    def _submit(
        self, session: Any, manifest: shards.Manifest, missing: list[tuple[Point, int]]
    ) -> list[shards.ShardEntry]:
        rd: RunDir = session.run_dir
        n = manifest.next_submission()
        parts = split(missing, self.config.n_shards(len({p.point_id for p, _r in missing})))
        run_dir = str(rd.path.resolve())
        options = replace(session.options, ref_cache_dir=str(rd.refcache.resolve()))
        fixed = bool(session.meta.get("request", {}).get("threads")) or bool(session.options.timing.threads)
        fixed = fixed or session.options.timing.clock == "process"
        specs = [
            ShardSpec(
                run_dir=run_dir,
                shard_id=shards.shard_id(n, k),
                items=tuple((p.point_id, r) for p, r in part),
                options=options,
                threads_fixed=fixed,
                gpus_per_node=self.config.gpus_per_node,
            )
            for k, part in enumerate(parts)
        ]
        folder = rd.path.resolve() / SUBMITIT_DIR
        folder.mkdir(parents=True, exist_ok=True)
        shards.shard_dir(rd).mkdir(parents=True, exist_ok=True)
        name = f"attnbench-{rd.name}"[:60]
        job_ids = self.backend.submit(folder, self.config, [ShardJob(s) for s in specs], name)
        entries = [
            shards.ShardEntry(s.shard_id, jid, [(pid, r) for pid, r in s.items])
            for s, jid in zip(specs, job_ids, strict=True)
        ]
        manifest.submissions.append(shards.Submission(n, shards.now(), self.config.to_doc(), entries))
        shards.write_manifest(rd, manifest)
        first = job_ids[0].split("_")[0] if job_ids else "?"
        session.on_event(
            f"submitted {len(entries)} shard(s) of {len(missing)} (point, round) pairs as Slurm job {first} "
            f"(logs: {folder})"
        )
        return entries

    def _follow(
        self,
        rd: RunDir,
        views: list[ShardView],
        expected: set[tuple[str, int]],
        on_done: Callable[[Record], None] | None,
    ) -> None:
        """Until every shard ended: report each new record of ``expected`` once, from the shard
        journals; re-read status files each poll, ask Slurm now and then."""
        seen: set[tuple[str, int]] = {(r.point_id, r.round) for r in journal.load(rd)} & expected
        started = time.monotonic()
        next_ask = 0.0
        while True:
            for v in views:
                for rec in shards.read_records(shards.journal_path(rd, v.entry.id)):
                    key = (rec.point_id, rec.round)
                    if key in expected and key not in seen:
                        seen.add(key)
                        if on_done is not None:
                            on_done(rec)
                v.status = shards.read_status(rd, v.entry.id)
            if all(v.ended for v in views):
                return
            now = time.monotonic()
            if now >= next_ask:
                refresh_states(rd, self.backend, [v for v in views if not v.ended])
                if all(v.ended for v in views):
                    continue  # one more pass over the journals, then return
                lo, hi = SLURM_POLL_S
                next_ask = now + min(hi, max(lo, (now - started) / 10))
            time.sleep(FILE_POLL_S)
