"""What ``attnbench status RUN_DIR`` shows: the run's (point, round) pairs done and missing, by
status, and for a sharded run each shard with its Slurm state, its own state, where it ran and
how many of its pairs are journaled. Reads the run directory only (no lock, nothing written)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from attnbench.errors import UserError
from attnbench.results import journal, shards
from attnbench.results.layout import RunDir
from attnbench.results.metadata import read_metadata
from attnbench.results.plan import read_plan
from attnbench.runner.executors.slurm import Backend, SubmititBackend, base_state, shard_views
from attnbench.runner.sweep import plan_rounds


@dataclass
class ShardRow:
    id: str
    job_id: str | None
    slurm_state: str | None  # what Slurm says (None: not asked, the shard said it finished)
    state: str | None  # what the shard's status file says (None: it never started)
    host: str | None
    done: int
    items: int
    points: int


@dataclass
class RunStatus:
    run_dir: str
    executor: str
    total: int
    done: int
    by_status: dict[str, int]
    missing: int
    in_live_shards: int
    finished: str | None
    shards: list[ShardRow] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def collect(run_dir: Path, backend: Backend | None = None) -> RunStatus:
    rd = RunDir(run_dir)
    if not rd.plan.exists():
        raise UserError(
            f"run directory {str(run_dir)!r}: no {rd.plan.name}; expected a directory made by `attnbench run`"
        )
    plan = read_plan(rd)
    meta = read_metadata(rd)
    rounds = int(((meta.get("options") or {}).get("timing") or plan.meta.get("timing") or {}).get("rounds") or 1)
    pairs = {(p.point_id, r) for p, r in plan_rounds(plan.points, rounds, set())}
    records = [r for r in journal.load(rd) if (r.point_id, r.round) in pairs]
    done = {(r.point_id, r.round) for r in records}
    manifest = shards.read_manifest(rd)
    views = shard_views(rd, backend or SubmititBackend(), manifest.shards, every=True) if manifest.shards else []
    live = {item for v in views if not v.ended for item in v.entry.items}
    rows = []
    for v in views:
        mine = {(r.point_id, r.round) for r in shards.read_records(shards.journal_path(rd, v.entry.id))}
        writer = str(v.status.get("writer") or "")
        rows.append(
            ShardRow(
                id=v.entry.id,
                job_id=v.entry.job_id,
                slurm_state=base_state(v.slurm_state) if v.slurm_state else None,
                state=v.own_state,
                host=writer.rsplit(":", 1)[0] or None,
                done=len(mine & set(v.entry.items)),
                items=len(v.entry.items),
                points=len(v.entry.point_ids),
            )
        )
    return RunStatus(
        run_dir=str(run_dir),
        executor=str((meta.get("executor") or {}).get("kind") or "local"),
        total=len(pairs),
        done=len(done),
        by_status=dict(Counter(r.status.value for r in records)),
        missing=len(pairs - done - live),
        in_live_shards=len(live - done),
        finished=meta.get("finished"),
        shards=rows,
    )
