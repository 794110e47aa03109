"""``plan.json``: the points of a run and what it was asked to do (suite, overrides, device,
options), written once when the run starts, so ``--resume`` runs exactly the rest."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnbench.errors import UserError
from attnbench.point import Point
from attnbench.results.layout import RunDir, write_atomic


@dataclass
class Plan:
    """``meta``: suite (name, path, description, source), overrides, device, timing, tolerance,
    gate; ``points``: every point of the run in sweep order."""

    meta: dict[str, Any]
    points: list[Point]


def write_plan(run_dir: RunDir, plan: Plan) -> None:
    doc = {"points": [p.as_mapping() for p in plan.points], "meta": plan.meta}
    write_atomic(run_dir.plan, json.dumps(doc, indent=1, default=str))


def read_plan(run_dir: RunDir | Path) -> Plan:
    """The plan of an existing run directory; a one-line UserError if it is missing or damaged."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    if not rd.plan.exists():
        raise UserError(f"--resume {str(rd)!r}: no {rd.plan.name} there; expected a directory made by `attnbench run`")
    try:
        doc = json.loads(rd.plan.read_text(encoding="utf-8"))
        points = [Point.from_mapping(p) for p in doc["points"]]
        meta = doc["meta"]
        if not isinstance(meta, dict) or "device" not in meta:
            raise ValueError("meta has no device")
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{rd.plan}: not a plan written by `attnbench run` ({type(exc).__name__}: {exc})") from None
    return Plan(meta, points)
