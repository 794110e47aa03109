"""A shard: what one Slurm job (one array task) runs, on its node.

:class:`ShardJob` is the callable submitit pickles. On the node it opens its own journal
(``journal.d/shard-<id>.jsonl``, exclusive flock: the only writer), writes its status file, and
runs its (point, round) items with the run's options: threads and peaks are the node's own
(calibrated here, in a worker), kernels are built here, and with several GPUs it runs one lane
per GPU. It never takes the run directory's lock and never writes the main journal, the plan, the
metadata or the tables: the submitting process owns those.

Stopping: Slurm sends SIGTERM on ``scancel`` (and at the time limit, after submitit's USR2). The
shard then kills the worker in flight and journals nothing for it, so ``--resume`` runs that
point again: a cancelled shard loses no point and adds no false ``crashed`` row. On a time limit
or preemption submitit requeues the same shard (it is :class:`~submitit.helpers.Checkpointable`),
which skips the items its journal already holds.
"""

from __future__ import annotations

import os
import signal
import time
import traceback
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

from submitit.helpers import Checkpointable

from attnbench.point import Point, Record, RunOptions, Status
from attnbench.results import shards
from attnbench.results.layout import RunDir
from attnbench.results.plan import read_plan
from attnbench.runner.calibrate import device_facts_in_worker
from attnbench.runner.executors.gpus import cpu_placement, gpu_placement, placement, visible_gpus
from attnbench.runner.executors.lanes import run_on_lanes
from attnbench.runner.prepare import prepare_impls
from attnbench.runner.sweep import base_row, run_points

# A crashed worker may be the first sign of a SIGTERM meant for the whole job: wait this long for
# the shard's own SIGTERM before journaling a crash, so a cancelled job leaves no false row.
CRASH_SETTLE_S = 0.5


class ShardStopped(BaseException):
    """The shard was told to stop (SIGTERM); what is in flight is not journaled."""


@dataclass(frozen=True)
class ShardSpec:
    """What a shard needs: the run directory (absolute, on the shared filesystem), its id, its
    (point_id, round) items in order, the run's options, whether the run fixed its thread count
    (else the node's CPUs decide) and the GPUs per node it was given."""

    run_dir: str
    shard_id: str
    items: tuple[tuple[str, int], ...]
    options: RunOptions
    threads_fixed: bool
    gpus_per_node: int = 0


class _Stopper:
    """SIGTERM -> ShardStopped, except inside a journal append (then right after it)."""

    def __init__(self) -> None:
        self.requested = False
        self._critical = 0

    def install(self) -> None:
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, _signum: int, _frame: FrameType | None) -> None:
        self.requested = True
        if not self._critical:
            raise ShardStopped

    def append(self, out: shards.ShardJournal, record: Record) -> None:
        if record.status is Status.CRASHED:
            if "SIGTERM" in str(record.row.get("error") or ""):
                self.requested = True  # the job is being stopped: the point did not crash
            else:
                time.sleep(CRASH_SETTLE_S)  # a pending SIGTERM lands here (and raises)
        if self.requested:
            raise ShardStopped
        self._critical += 1
        try:
            out.append(record)
        finally:
            self._critical -= 1
        if self.requested:
            raise ShardStopped


def _node_threads(spec: ShardSpec) -> int:
    if spec.threads_fixed and spec.options.threads:
        return spec.options.threads
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        return int(slurm)
    return len(os.sched_getaffinity(0)) or 1


def _job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def run_shard(spec: ShardSpec, on_event: Any = print) -> dict[str, Any]:
    """Run the shard's missing items; return a summary (also written to its status file)."""
    rd = RunDir(Path(spec.run_dir))
    stopper = _Stopper()
    with shards.ShardJournal(rd, spec.shard_id) as out:
        status: dict[str, Any] = {
            "shard": spec.shard_id,
            "state": shards.RUNNING,
            "slurm_job_id": _job_id(),
            "writer": out.writer,
            "journal_locked": out.locked,
            "pid": os.getpid(),
            "started": shards.now(),
            "items": len(spec.items),
        }
        shards.write_status(rd, spec.shard_id, status)
        stopper.install()
        try:
            by_id = {p.point_id: p for p in read_plan(rd).points}
            done = out.done()
            todo = [(by_id[pid], rnd) for pid, rnd in spec.items if (pid, rnd) not in done]
            todo.sort(key=lambda item: item[1])  # round by round, as plan_rounds orders them
            status.update(already_done=len(spec.items) - len(todo))
            shards.write_status(rd, spec.shard_id, status)
            _run(spec, rd, todo, status, stopper, out, on_event)
            status.update(state=shards.FINISHED)
        except (ShardStopped, SystemExit, KeyboardInterrupt) as exc:
            status.update(state=shards.STOPPED, reason=type(exc).__name__)
            raise_after: BaseException | None = exc if not isinstance(exc, ShardStopped) else None
        except BaseException as exc:
            status.update(state=shards.FAILED, error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            raise_after = exc
        else:
            raise_after = None
        finally:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            status.update(ended=shards.now(), journaled=len(out.done()))
            shards.write_status(rd, spec.shard_id, status)
    if raise_after is not None:
        raise raise_after
    return status


def _run(
    spec: ShardSpec,
    rd: RunDir,
    todo: list[tuple[Point, int]],
    status: dict[str, Any],
    stopper: _Stopper,
    out: shards.ShardJournal,
    on_event: Any,
) -> None:
    options = replace(spec.options, threads=_node_threads(spec))
    runnable = [p for p, _r in todo if not p.skip]
    cols = {"shard": spec.shard_id, "slurm_job_id": _job_id()}
    gpus = visible_gpus() if options.device == "cuda" else []
    if options.device == "cuda" and not gpus:
        raise RuntimeError("the run's device is cuda but this shard sees no CUDA device (--slurm-gpus-per-node?)")
    if runnable:
        dtypes = sorted({p.dtype.value for p in runnable})
        facts = device_facts_in_worker(options.device, dtypes, options.threads)
        options = replace(options, peaks=facts["peaks"], telemetry=facts["telemetry_config"])
        status.update(peaks=facts["peaks"], telemetry=facts["telemetry"])
        _prepare(rd, runnable, options, on_event)
    status.update(threads=options.threads, gpus=[g.visible_id for g in gpus], device=options.device)
    shards.write_status(rd, spec.shard_id, status)

    def write(record: Record) -> None:
        stopper.append(out, record)

    if len(gpus) > 1:
        lane_opts = replace(options, threads=max(1, options.threads // len(gpus)))

        def finish(point: Point, rnd: int, record: Record, gpu: Any) -> None:
            where = gpu_placement(gpu, **cols) if gpu is not None else placement(None, **cols)
            record.row = {**base_row(point), "round": rnd, **where, **record.row}
            write(record)

        run_on_lanes(gpus, todo, lane_opts, finish)
    else:
        where = gpu_placement(gpus[0], **cols) if gpus else cpu_placement(**cols)
        run_points(rd, todo, options, columns=where, write=write)


def _prepare(rd: RunDir, points: list[Point], options: RunOptions, on_event: Any) -> None:
    """Build the impls' compiled parts on this node, as the session does locally."""
    prepare_impls(points, options.device, on_event)


class ShardJob(Checkpointable):
    """The callable submitit pickles for each array task: ``run_shard(spec)``. Checkpointable: on
    a time limit or preemption submitit requeues it unchanged, and it resumes from its journal."""

    def __init__(self, spec: ShardSpec) -> None:
        self.spec = spec

    def __call__(self) -> dict[str, Any]:
        return run_shard(self.spec)
