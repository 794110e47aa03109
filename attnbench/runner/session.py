"""One run's lifecycle: plan -> prepare -> calibrate -> sweep -> finalize -> report.

:func:`start` makes a new run directory from a :class:`RunRequest` (the command line's choices)
or reopens one for ``--resume`` (reusing every option it was started with; a conflicting option
is a one-line error). :meth:`Session.run` then measures what is missing and writes the tables.
The command (``attnbench.commands.run``) only turns options into a request and prints.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from attnbench.env import fingerprint, resolve_device
from attnbench.errors import UserError
from attnbench.impls import registry
from attnbench.impls.file_impls import load_file_impls
from attnbench.point import DEVICES, CudaTimerOptions, Pass, Point, Record, RunOptions, TimingConfig
from attnbench.results import journal
from attnbench.results.layout import RunDir, StorageError, remove_stale_temps
from attnbench.results.lock import RunLock, acquire
from attnbench.results.metadata import read_metadata, write_metadata
from attnbench.results.plan import Plan, read_plan, write_plan
from attnbench.results.tables import finalize
from attnbench.runner import signals
from attnbench.runner.calibrate import device_facts_in_worker
from attnbench.runner.executors.local import LocalExecutor
from attnbench.runner.prepare import prepare_impls
from attnbench.runner.request import (
    RunRequest,
    flag,
    new_run_dir,
    now,
    resolve_threads,
    show,
    timing_for,
)
from attnbench.runner.sweep import plan_rounds
from attnbench.suite import expand, load_suite, parse_set


@dataclass
class Session:
    """An open run directory with its plan and options."""

    run_dir: RunDir
    plan: Plan
    options: RunOptions
    meta: dict[str, Any]
    resumed: bool
    on_event: Callable[[str], None] = field(default=lambda _msg: None)
    # where the points run (attnbench.runner.executors): None = local, one point at a time
    executor: Any = None
    lock: RunLock | None = None

    @property
    def points(self) -> list[Point]:
        return self.plan.points

    def todo(self) -> tuple[list[tuple[Point, int]], int]:
        """The (point, round) pairs still to run, and how many the run has in all."""
        done = {(r.point_id, r.round) for r in journal.load(self.run_dir)}
        rounds = self.options.timing.rounds
        return plan_rounds(self.points, rounds, done), len(plan_rounds(self.points, rounds, set()))

    def prepare(self) -> None:
        """Build every impl's compiled parts once, before the sweep (no point's time is spent
        compiling); an impl that cannot be built is reported and its points will say why."""
        if getattr(self.executor, "remote", False):
            return  # each shard builds on its own node
        prepare_impls(self.points, self.options.device, self.on_event)

    def sweep(
        self,
        on_done: Callable[[Record], None] | None = None,
        on_start: Callable[[Point, int], None] | None = None,
    ) -> bool:
        """Run what is missing through the executor; True if interrupted by Ctrl-C or left
        incomplete (shards lost or not waited for); everything finished is kept."""
        todo, _total = self.todo()
        executor = self.executor or LocalExecutor()
        try:
            incomplete = bool(executor.run(self, todo, on_done, on_start))
        except KeyboardInterrupt:
            return True
        if getattr(executor, "detached", False):
            self.close()  # submitted, not waited for: the shards write their own journals; a later --resume locks
        return incomplete

    def finalize(self, interrupted: bool) -> pd.DataFrame:
        """Write the tables and close the metadata; the reference cache goes once the run is whole.
        Stop signals wait until the tables are written; the lock is released at the end. A
        table that cannot be written is a StorageError saying what is kept."""

        def note(signum: int) -> None:
            self.on_event(f"{signals.Stop(signum)}: writing the tables of {self.run_dir} first, then stopping")

        try:
            with signals.deferred(note):
                try:
                    df, _samples = finalize(self.run_dir)
                    meta = read_metadata(self.run_dir)
                    meta["finished"] = None if interrupted else now()
                    meta["interrupted"] = interrupted
                    meta["planned_points"] = len(self.points)
                    write_metadata(self.run_dir, meta)
                except StorageError as exc:
                    raise StorageError(
                        f"{exc}; every finished point is kept in {self.run_dir.journal}: free space, then "
                        f"`attnbench run --resume {self.run_dir}` (or `attnbench report {self.run_dir}`) writes the tables"
                    ) from None
                remove_stale_temps(self.run_dir)
                if not interrupted:
                    shutil.rmtree(self.run_dir.refcache, ignore_errors=True)
        finally:
            self.close()
        return df

    def failed(self, exc: StorageError) -> StorageError:
        """The one-line error for a write that failed mid-sweep: what failed, what is kept, how
        to continue. The tables are written from the journal if the disk still lets them be."""
        done = {r.point_id for r in journal.load(self.run_dir)}
        try:
            with signals.deferred():
                finalize(self.run_dir)
        except (StorageError, UserError):
            pass
        finally:
            self.close()
        return StorageError(
            f"{exc}; {len(done)} of {len(self.points)} points are stored in {self.run_dir}; "
            f"once it can be written, continue with: attnbench run --resume {self.run_dir}"
        )

    def close(self) -> None:
        """Release the run directory's lock (idempotent)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def start(
    request: RunRequest,
    resume: Path | None = None,
    on_event: Callable[[str], None] | None = None,
    *,
    remote: Callable[[Any], str] | None = None,
) -> Session:
    """A new run (plan written, device calibrated, metadata started) or a reopened one, its
    directory locked against a second writer until :meth:`Session.finalize` (or process exit).

    ``remote``: the points run on other machines (Slurm shards): nothing is probed, calibrated
    or thread-counted here, and the device is ``--device`` or ``remote(suite)``."""
    request.validate()
    event = on_event or (lambda _msg: None)
    session = _reopen(request, resume, event, remote) if resume is not None else _create(request, event, remote)
    session.on_event = event
    return session


# What a remote run stores instead of this machine's calibration: each shard calibrates its node.
_REMOTE_FACTS: dict[str, Any] = {
    "peaks": {"error": "calibrated on each shard's node (journal.d/shard-*.json)"},
    "telemetry": {"available": False, "reason": "probed on each shard's node (journal.d/shard-*.json)"},
    "telemetry_config": None,
}


def _create(
    request: RunRequest, on_event: Callable[[str], None], remote: Callable[[Any], str] | None = None
) -> Session:
    suite = load_suite("seqlen" if request.suite is None else request.suite)  # "" is a mistake, not the default
    overrides: dict[str, list[Any]] = {}
    for s in request.sets:
        key, values = parse_set(s)
        overrides[key] = values
    if request.impls:
        overrides["impl"] = list(request.impls)
    if request.dtypes:
        overrides["dtype"] = [parse_set(f"dtype={d}")[1][0] for d in request.dtypes]
    timing = timing_for(suite.timing_config, request)
    if remote is None:
        device = resolve_device("auto" if request.device is None else request.device)
    else:
        device = request.device if request.device not in (None, "auto") else remote(suite)
        if device not in DEVICES:  # not probed: the shards' nodes have the devices, not this one
            raise UserError(f"--device {device!r}: expected auto, {' or '.join(DEVICES)}")
    threads = resolve_threads(timing, request, remote is not None)
    points = expand(suite, device, overrides)
    if not points:
        raise UserError(f"suite {suite.name}: the overrides leave no points to run")
    _check_impls(points)
    run_dir, lock = new_run_dir(request.out, suite.name)
    try:
        return _start_new(run_dir, lock, request, suite, overrides, timing, device, threads, points, remote)
    except BaseException:  # Ctrl-C while calibrating, a full disk: leave the directory empty, reusable
        for path in (run_dir.plan, run_dir.metadata):
            path.unlink(missing_ok=True)
        lock.release()
        raise


def _start_new(
    run_dir: RunDir,
    lock: RunLock,
    request: RunRequest,
    suite: Any,
    overrides: dict[str, list[Any]],
    timing: TimingConfig,
    device: str,
    threads: int,
    points: list[Point],
    remote: Callable[[Any], str] | None,
) -> Session:
    dtypes = sorted({p.dtype.value for p in points if not p.skip})
    facts = device_facts_in_worker(device, dtypes, threads) if remote is None else _REMOTE_FACTS
    options = RunOptions(
        device=device,
        threads=threads,
        timing=timing,
        tolerance=dict(suite.tolerance),
        ref_cache_dir=str(run_dir.refcache),
        cuda=CudaTimerOptions(
            graph=bool(request.cuda_graph), flush_l2=True if request.l2_flush is None else request.l2_flush
        ),
        telemetry=facts["telemetry_config"],
        peaks=facts["peaks"],
        impl_files=request.impl_files,
    )
    plan_meta = {
        "suite": {"name": suite.name, "path": suite.path, "description": suite.description, "source": suite.source},
        "overrides": overrides,
        "device": device,
        "timing": timing.to_table(),
        "tolerance": suite.tolerance,
    }
    plan = Plan(plan_meta, points)
    write_plan(run_dir, plan)
    command = " ".join(shlex.quote(a) for a in sys.argv)
    meta = {
        **plan_meta,
        "run_id": uuid.uuid4().hex,
        "request": request.given(),
        "options": _options_doc(options),
        "env": fingerprint(device, threads),
        "command": command,
        "commands": [command],
        "started": now(),
        "resumed": [],
        "finished": None,
        "threads": threads,
        "peaks": facts["peaks"],
        "telemetry": facts["telemetry"],
        "telemetry_config": facts["telemetry_config"],
        "cuda_timer": asdict(options.cuda),
    }
    write_metadata(run_dir, meta)
    return Session(run_dir, plan, options, meta, resumed=False, lock=lock)


def _check_impls(points: list[Point]) -> None:
    """Every impl of the run exists and neither it nor its reference was claimed by a plugin
    (an unknown or refused name is a one-line error naming what exists, or the plugin)."""
    for name, decode in sorted({(p.impl, p.pass_ is Pass.DECODE) for p in points}):
        if decode:
            registry.check_usable(registry.get_decoder(name).impl)
        else:
            registry.check_usable(name)


def _options_doc(options: RunOptions) -> dict[str, Any]:
    """What metadata stores of the options (enough to rebuild them on --resume)."""
    return {
        "device": options.device,
        "threads": options.threads,
        "timing": options.timing.to_table(),
        "tolerance": dict(options.tolerance),
        "cuda": asdict(options.cuda),
        "impl_files": list(options.impl_files),
    }


def _reopen(
    request: RunRequest, resume: Path, on_event: Callable[[str], None], remote: Callable[[Any], str] | None = None
) -> Session:
    run_dir = RunDir(resume)
    read_plan(run_dir)  # a directory that is not a run is refused before anything is written there
    lock = acquire(run_dir, f"--resume {str(resume)!r}")
    try:
        return _reopen_locked(request, run_dir, lock, on_event, remote)
    except BaseException:
        lock.release()
        raise


def _reopen_locked(
    request: RunRequest,
    run_dir: RunDir,
    lock: RunLock,
    on_event: Callable[[str], None],
    remote: Callable[[Any], str] | None,
) -> Session:
    note = lock.stale_note()
    if note:
        on_event(note)
    plan = read_plan(run_dir)
    meta = read_metadata(run_dir)
    doc = meta.get("options")
    if doc:  # the run's --impl file.py:function impls, registered before the names are checked
        load_file_impls(doc.get("impl_files") or ())
    _check_impls(plan.points)
    warning = journal.read(run_dir).warning(run_dir.journal)
    if warning:
        on_event(f"warning: {warning}; those points run again")
    stored = meta.get("request") or {}
    for name, val in request.given().items():
        if name == "out":
            continue
        if stored.get(name) != val:
            was = stored.get(name)
            had = (
                f"it was started with {flag(name)} {show(was)}"
                if was is not None
                else f"it was started without {flag(name)}"
            )
            raise UserError(
                f"{flag(name)} {show(val)}: conflicts with the run being resumed ({had}); "
                f"--resume reuses the run's options, give none or the same"
            )
    device = resolve_device(plan.meta["device"]) if remote is None else str(plan.meta["device"])
    if doc:  # every option as the run was started (schema 2)
        timing = TimingConfig.from_table(doc["timing"])
        options = RunOptions(
            device=device,
            threads=int(doc["threads"]),
            timing=timing,
            tolerance=dict(doc.get("tolerance") or {}),
            ref_cache_dir=str(run_dir.refcache),
            cuda=CudaTimerOptions(**doc.get("cuda", {})),
            telemetry=meta.get("telemetry_config"),
            peaks=meta.get("peaks"),
            impl_files=tuple(doc.get("impl_files") or ()),
        )
    else:  # a run written before options were stored: the plan's timing, today's defaults otherwise
        timing = TimingConfig.from_table(plan.meta.get("timing") or {})
        options = RunOptions(
            device=device,
            threads=int(meta.get("threads") or os.cpu_count() or 1),
            timing=timing,
            tolerance=dict(plan.meta.get("tolerance") or {}),
            ref_cache_dir=str(run_dir.refcache),
            telemetry=meta.get("telemetry_config"),
            peaks=meta.get("peaks"),
        )
        meta["options"] = _options_doc(options)
    command = " ".join(shlex.quote(a) for a in sys.argv)
    meta["commands"] = [*meta.get("commands", []), command]
    meta["resumed"] = [*meta.get("resumed", []), now()]
    meta["finished"] = None
    write_metadata(run_dir, meta)
    return Session(run_dir, plan, options, meta, resumed=True, lock=lock)
