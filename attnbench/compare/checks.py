"""Regression thresholds, parsed from strings like ``latency:10%`` or ``memory:1MiB``.

``FIELD:VALUE`` where FIELD is ``latency`` (median time per call) or ``memory`` (peak MiB),
and VALUE is a relative change (``5%``) or an absolute one (``0.05ms``, ``20us``, ``1MiB``).
Several checks on one field must *all* be exceeded for a regression (``memory:2%`` with
``memory:1MiB`` ignores a 50 % growth from 0.1 to 0.15 MiB). Like pytest-benchmark's
``--benchmark-compare-fail``, each check is a small object; unlike it, latency checks
are applied only after a significance test (see :mod:`attnbench.compare.verdicts`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from attnbench.errors import UserError

FIELDS = ("latency", "memory")
ABS_UNITS = {"latency": {"ms": 1.0, "us": 1e-3, "s": 1e3}, "memory": {"mib": 1.0, "gib": 1024.0, "kib": 1 / 1024}}
DEFAULT_THRESHOLDS = ("latency:10%", "memory:5%", "memory:1MiB")
_RE = re.compile(r"^\s*([a-z]+)\s*:\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([a-zA-Z%]*)\s*$")


@dataclass(frozen=True)
class Check:
    """One threshold on one field: relative (a fraction, 0.05 = 5 %) or absolute (ms or MiB)."""

    field: str
    value: float
    relative: bool
    text: str

    def exceeds(self, base: float, cur: float) -> bool:
        """True if ``cur`` is worse (larger) than ``base`` by more than this threshold."""
        if self.relative:
            return cur > base * (1.0 + self.value)
        return cur - base > self.value

    def improves(self, base: float, cur: float) -> bool:
        """True if ``cur`` is better (smaller) than ``base`` by more than this threshold."""
        if self.relative:
            return cur * (1.0 + self.value) < base
        return base - cur > self.value


def parse_check(text: str) -> Check:
    """``latency:5%`` -> Check("latency", 0.05, relative=True). Errors are one line."""
    m = _RE.match(text)
    if not m:
        raise UserError(f"threshold {text!r}: expected FIELD:VALUE such as latency:10%, memory:2% or memory:1MiB")
    name, num, unit = m.group(1), float(m.group(2)), m.group(3)
    if name not in FIELDS:
        raise UserError(f"threshold {text!r}: unknown field {name!r}; expected one of {', '.join(FIELDS)}")
    if unit == "%":
        return Check(name, num / 100.0, True, text.strip())
    units = ABS_UNITS[name]
    if unit.lower() not in units:
        allowed = ", ".join(["%", *units])
        raise UserError(f"threshold {text!r}: unit {unit or '(none)'!r} is not one of {allowed} for {name}")
    return Check(name, num * units[unit.lower()], False, text.strip())


@dataclass
class GateConfig:
    """Everything that decides verdicts. Defaults, then a suite's ``[gate]`` table, then options."""

    checks: list[Check] = field(default_factory=lambda: [parse_check(t) for t in DEFAULT_THRESHOLDS])
    alpha: float = 0.01  # false discovery rate across the points (Benjamini-Hochberg)
    confidence: float = 0.99  # level of the bootstrap interval on the ratio of medians
    min_samples: int = 10  # fewer timing samples on either side: inconclusive
    normalize: bool = True  # divide out the run-wide shift (median ratio over all points)
    round_window: float = 0.15  # rounds slower than the fastest round by more than this are set aside (0: keep all)

    def for_field(self, name: str) -> list[Check]:
        return [c for c in self.checks if c.field == name]


GATE_KEYS = {
    "thresholds": list,
    "alpha": float,
    "confidence": float,
    "min_samples": int,
    "normalize": bool,
    "round_window": float,
}


def validate_gate_table(where: str, table: Any) -> dict[str, Any]:
    """Check a suite's ``[gate]`` table; return it (thresholds already parsed to be sure)."""
    if not isinstance(table, dict):
        raise UserError(f"{where}: gate = {table!r}: expected a table")
    for key, val in table.items():
        if key not in GATE_KEYS:
            raise UserError(f"{where} [gate]: unknown key {key!r}; expected one of {', '.join(GATE_KEYS)}")
        kind = GATE_KEYS[key]
        if kind is list:
            if not isinstance(val, list) or not val or not all(isinstance(v, str) for v in val):
                raise UserError(f'{where} [gate]: thresholds = {val!r}: expected a list of strings like "latency:10%"')
            for v in val:
                parse_check(v)
        elif kind is bool:
            if not isinstance(val, bool):
                raise UserError(f"{where} [gate]: {key} = {val!r}: expected true or false")
        elif kind is int:
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise UserError(f"{where} [gate]: {key} = {val!r}: expected a positive integer")
        elif key == "round_window":
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 <= val < 1:
                raise UserError(
                    f"{where} [gate]: {key} = {val!r}: expected a number from 0 (keep every round) to below 1"
                )
        elif isinstance(val, bool) or not isinstance(val, (int, float)) or not 0 < val < 1:
            raise UserError(f"{where} [gate]: {key} = {val!r}: expected a number between 0 and 1")
    return dict(table)


def make_config(
    gate: dict[str, Any] | None = None, thresholds: list[str] | None = None, **overrides: Any
) -> GateConfig:
    """A GateConfig from a suite's ``[gate]`` table and command-line values (None = not given).

    Command-line thresholds replace the suite's for the fields they name; other fields keep theirs.
    """
    cfg = GateConfig()
    gate = dict(gate or {})
    if "thresholds" in gate:
        cfg.checks = _merge(cfg.checks, [parse_check(t) for t in gate.pop("thresholds")])
    for key, val in gate.items():
        setattr(cfg, key, val)
    if thresholds:
        cfg.checks = _merge(cfg.checks, [parse_check(t) for t in thresholds])
    for key, val in overrides.items():
        if val is not None:
            setattr(cfg, key, val)
    if not 0 < cfg.alpha < 1:
        raise UserError(f"--alpha {cfg.alpha}: expected a number between 0 and 1")
    if cfg.min_samples < 1:
        raise UserError(f"--min-samples {cfg.min_samples}: expected a positive integer")
    if not 0 <= cfg.round_window < 1:
        raise UserError(f"--round-window {cfg.round_window}: expected a number from 0 (keep every round) to below 1")
    return cfg


def _merge(old: list[Check], new: list[Check]) -> list[Check]:
    named = {c.field for c in new}
    return [c for c in old if c.field not in named] + new
