"""Build what a run's impls compile (``ImplSpec.prepare``), once, before its sweep: no point's
time or timeout is spent compiling. Used by the session on this machine and by a Slurm shard on
its node."""

from __future__ import annotations

import time
from collections.abc import Callable

from attnbench.impls import registry
from attnbench.point import Pass, Point


def prepare_impls(points: list[Point], device: str, on_event: Callable[[str], None]) -> dict[str, str | None]:
    """Prepare every impl of ``points`` (decode and skipped points aside) on ``device``; returns
    ``{impl: None or why it could not be built}`` for those that have something to build. A failed
    build is reported, never raised: that impl's points will say why they cannot run."""
    out: dict[str, str | None] = {}
    for name in sorted({p.impl for p in points if not p.skip and p.pass_ is not Pass.DECODE}):
        spec = registry.get(name)
        if spec.prepare is None or spec.unavailable_reason(device) is not None:
            continue
        on_event(f"preparing {name} on {device} ...")
        t0 = time.perf_counter()
        try:
            why = spec.prepare(device)
        except Exception as exc:  # a failed build is the impl's problem, not the run's
            why = f"{type(exc).__name__}: {exc}"
        took = time.perf_counter() - t0
        on_event(f"prepared {name} in {took:.1f} s" if why is None else f"{name} not built: {why}")
        out[name] = why
    return out
