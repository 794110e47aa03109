"""Where a sweep's points run: ``local`` (this machine: one point at a time, or one lane per GPU
with ``--gpus``) or ``slurm`` (a job array of shards through submitit). Either way the run has
one directory and one logical journal; see docs/cluster.md.

:func:`choose` turns the command line into an :class:`ExecutorRequest` (on ``--resume``, the
executor the run was started with unless another is asked for); :meth:`ExecutorRequest.build`
makes the executor that :meth:`attnbench.runner.session.Session.sweep` hands the work to.
Light at import time: no torch, no submitit.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from attnbench.errors import UserError
from attnbench.point import Point, Record
from attnbench.runner.executors.gpus import parse_gpus
from attnbench.slurm_config import resolve_config

EXECUTORS = ("local", "slurm")


class Executor(Protocol):
    """Runs the (point, round) pairs of a session. ``remote``: the points run elsewhere (the
    submitting process neither builds kernels nor calibrates); ``detached``: the last
    :meth:`run` returned without waiting for them."""

    remote: bool
    detached: bool

    def run(
        self,
        session: Any,
        todo: list[tuple[Point, int]],
        on_done: Callable[[Record], None] | None,
        on_start: Callable[[Point, int], None] | None,
    ) -> bool:
        """Run ``todo``; True when the run is not complete afterwards (interrupted, shards lost,
        or not waited for)."""
        ...


@dataclass(frozen=True)
class ExecutorRequest:
    """The executor options of ``attnbench run``. ``slurm``: the ``--slurm-*`` values given
    (None = not given); ``slurm_config``: a TOML file with a ``[slurm]`` table."""

    kind: str | None = None
    gpus: str | None = None
    slurm: dict[str, Any] = field(default_factory=dict)
    slurm_config: Path | None = None
    wait: bool = True
    stored: dict[str, Any] = field(default_factory=dict)  # metadata "executor" of a resumed run

    def validate(self) -> None:
        if self.kind is not None and self.kind not in EXECUTORS:
            raise UserError(f"--executor {self.kind!r}: expected one of {', '.join(EXECUTORS)}")
        if self.gpus is not None:
            parse_gpus(self.gpus)
        given = sorted(k for k, v in self.slurm.items() if v is not None)
        if self.resolved_kind != "slurm" and (given or self.slurm_config is not None):
            flag = "--slurm-config" if not given else "--slurm-" + given[0].replace("_", "-")
            raise UserError(f"{flag}: only with --executor slurm (this run uses the {self.resolved_kind} executor)")
        if self.resolved_kind == "slurm" and self.gpus is not None:
            raise UserError("--gpus: with --executor slurm, give --slurm-gpus-per-node (each shard uses its GPUs)")
        if not self.wait and self.resolved_kind != "slurm":
            raise UserError("--no-wait: only with --executor slurm (a local run is the waiting process)")
        if self.resolved_kind == "slurm":
            resolve_config(self, suite_table={})  # the options and the config file, checked now

    @property
    def resolved_kind(self) -> str:
        return self.kind or str(self.stored.get("kind") or "local")

    @property
    def remote(self) -> bool:
        return self.resolved_kind == "slurm"

    def remote_device(self, suite: Any) -> str:
        """The device of a new remote run without ``--device``: cuda when the shards get GPUs
        (``--slurm-gpus-per-node`` or the suite's ``[slurm]``), else cpu. Nothing is probed here."""
        cfg = resolve_config(self, getattr(suite, "slurm", None) or {})
        return "cuda" if cfg.gpus_per_node else "cpu"

    def build(self, session: Any) -> Executor:
        if self.resolved_kind == "slurm":
            from attnbench.runner.executors.slurm import SlurmExecutor  # cycle: slurm imports this package

            return SlurmExecutor.from_request(self, session)
        from attnbench.runner.executors.local import LocalExecutor  # cycle: local imports slurm, which imports this

        return LocalExecutor(self.gpus)


def choose(request: ExecutorRequest, resume: Path | None, device: str | None = None) -> ExecutorRequest:
    """``request`` with the resumed run's stored executor attached (its kind applies unless
    ``--executor`` is given); validated, before anything is created: ``--gpus`` with
    ``--device cpu``, or Slurm where there is no ``sbatch``, are refused here."""
    if resume is not None:
        from attnbench.results.metadata import read_metadata  # deferred: pandas via results/

        try:
            stored = dict(read_metadata(resume).get("executor") or {})
        except UserError:
            stored = {}  # the session reports the unreadable run itself
        request = ExecutorRequest(request.kind, request.gpus, request.slurm, request.slurm_config, request.wait, stored)
    request.validate()
    if request.gpus is not None and device == "cpu":
        raise UserError(f"--gpus {request.gpus}: with --device cpu points run one at a time (timing needs the cores)")
    if request.remote and shutil.which("sbatch") is None:
        raise UserError("--executor slurm: Slurm's sbatch is not on PATH; run this on a Slurm login node")
    return request
