"""Passes as peers: the kernel pass (fwd, bwd, fwdbwd) and the decode pass implement one
measurement skeleton (:mod:`attnbench.measure.passes.base`); the worker only picks one."""

from __future__ import annotations

from attnbench.measure.passes.base import PassMeasure, Send, run_pass
from attnbench.measure.passes.decode import DecodePass
from attnbench.measure.passes.kernel import KernelPass
from attnbench.point import Pass, Point, Record, RunOptions

_PASSES: dict[Pass, PassMeasure] = {
    Pass.FWD: KernelPass(),
    Pass.BWD: KernelPass(),
    Pass.FWDBWD: KernelPass(),
    Pass.DECODE: DecodePass(),
}


def measure_point(point: Point, options: RunOptions, send: Send | None = None) -> Record:
    """Measure ``point`` with its pass; always returns a record (failures are statuses)."""
    return run_pass(_PASSES[point.pass_], point, options, send)


__all__ = ["DecodePass", "KernelPass", "PassMeasure", "measure_point", "run_pass"]
