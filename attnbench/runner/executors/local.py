"""``--executor local`` (the default): this machine runs the points.

- On the CPU, one point at a time (timing needs every core it was given); ``--gpus`` is refused.
- On CUDA without ``--gpus``, one point at a time on the first visible GPU, as before.
- With ``--gpus N|all``, one lane per GPU (:mod:`attnbench.runner.executors.lanes`): each lane
  is a process started with ``CUDA_VISIBLE_DEVICES=GPU-<uuid>``, with its own fork server, running
  one point at a time, so N GPUs finish about N times sooner and no two points ever share a GPU
  while timed. The CPU threads are split between the lanes.

Every record gets the where-it-ran columns (host, device model, device UUID). The main process
stays the journal's only writer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from attnbench.errors import UserError
from attnbench.point import Point, Record
from attnbench.results import journal
from attnbench.results.metadata import write_metadata
from attnbench.runner import signals
from attnbench.runner.executors.gpus import Gpu, cpu_placement, gpu_placement, placement, select, visible_gpus
from attnbench.runner.executors.lanes import run_on_lanes
from attnbench.runner.executors.slurm import live_shards
from attnbench.runner.sweep import base_row, run_points


class LocalExecutor:
    """See the module doc. ``discover`` lists the visible GPUs (tests pass a fake list);
    ``lane_env`` is added to each lane's environment."""

    remote = False

    def __init__(
        self,
        gpus: str | None = None,
        discover: Callable[[], list[Gpu]] = visible_gpus,
        lane_env: Mapping[str, str] | None = None,
    ) -> None:
        self.gpus = gpus
        self.discover = discover
        self.lane_env = dict(lane_env or {})
        self.detached = False

    def lanes_for(self, device: str) -> list[Gpu] | None:
        """The GPUs to run lanes on, or None for the one-at-a-time path."""
        if self.gpus is None:
            return None
        if device != "cuda":
            raise UserError(
                f"--gpus {self.gpus}: this run's device is {device}; CPU points run one at a time "
                "(timing needs the cores)"
            )
        return select(self.discover(), self.gpus)

    @staticmethod
    def refuse_live_shards(run_dir: Any, backend: Any = None) -> None:
        """A run with Slurm shards still queued or running is not resumed here: their points would
        be measured twice. (A run that never used Slurm has no shards.json: nothing is asked.)"""
        live = live_shards(run_dir, backend)
        if live:
            ids = ", ".join(f"{v.entry.id} (job {v.entry.job_id}, {v.slurm_state or v.own_state})" for v in live)
            raise UserError(
                f"--resume {run_dir}: Slurm shards may still run: {ids}; resume with --executor slurm "
                "(it waits for them), or scancel them first"
            )

    def run(
        self,
        session: Any,
        todo: list[tuple[Point, int]],
        on_done: Callable[[Record], None] | None,
        on_start: Callable[[Point, int], None] | None,
    ) -> bool:
        options = session.options
        lanes = self.lanes_for(options.device)
        self.refuse_live_shards(session.run_dir)
        if session.meta.get("executor", {}).get("kind") != "local" or lanes:
            session.meta["executor"] = {"kind": "local", "gpus": [g.visible_id for g in lanes or []]}
            write_metadata(session.run_dir, session.meta)
        if lanes is None:
            if options.device == "cuda":
                found = self.discover()
                where = gpu_placement(found[0]) if found else cpu_placement()
            else:
                where = cpu_placement()
            run_points(session.run_dir, todo, options, on_done, on_start, columns=where)
            return False
        session.on_event(f"running on {len(lanes)} GPU(s), one lane each: " + ", ".join(g.visible_id for g in lanes))
        lane_opts = replace(options, threads=max(1, options.threads // len(lanes)))

        def finish(point: Point, rnd: int, record: Record, gpu: Gpu | None) -> None:
            where = gpu_placement(gpu) if gpu is not None else placement(None)  # a skipped point
            record.row = {**base_row(point), "round": rnd, **where, **record.row}
            with signals.critical():  # a stop signal during the append is raised once the line is whole
                journal.append(session.run_dir, record)
            if on_done is not None:
                on_done(record)

        run_on_lanes(lanes, todo, lane_opts, finish, on_start, self.lane_env)
        return False
