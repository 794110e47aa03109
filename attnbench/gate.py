"""The gate's configuration: regression thresholds (``latency:10%``, ``memory:1MiB``), the
statistical knobs, and the ``[gate]`` table of a suite. Used by the suite schema (validation)
and by ``attnbench compare`` (verdicts).

``FIELD:VALUE`` where FIELD is ``latency`` (median time per call) or ``memory`` (peak MiB),
and VALUE is a relative change (``5%``) or an absolute one (``0.05ms``, ``20us``, ``1MiB``).
Several checks on one field must *all* be exceeded for a regression (``memory:2%`` with
``memory:1MiB`` ignores a 50 % growth from 0.1 to 0.15 MiB). Like pytest-benchmark's
``--benchmark-compare-fail``, each check is a small object; unlike it, latency checks
are applied only after a significance test (see :mod:`attnbench.compare.verdicts`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from attnbench.errors import UserError

FIELDS = ("latency", "memory")
ABS_UNITS = {"latency": {"ms": 1.0, "us": 1e-3, "s": 1e3}, "memory": {"mib": 1.0, "gib": 1024.0, "kib": 1 / 1024}}
DEFAULT_THRESHOLDS = ("latency:10%", "memory:5%", "memory:1MiB")
# A relative threshold of 1000 % or more can never be told from noise, and a ratio of 1e999 is
# inf: refuse both rather than accept a gate that cannot fail.
MAX_RELATIVE = 10.0
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
    if not math.isfinite(num) or num <= 0:
        raise UserError(f"threshold {text!r}: expected a finite value above 0")
    if unit == "%":
        if num / 100.0 >= MAX_RELATIVE:
            raise UserError(f"threshold {text!r}: expected a relative change below {MAX_RELATIVE * 100:g}%")
        return Check(name, num / 100.0, True, text.strip())
    units = ABS_UNITS[name]
    if unit.lower() not in units:
        allowed = ", ".join(["%", *units])
        raise UserError(f"threshold {text!r}: unit {unit or '(none)'!r} is not one of {allowed} for {name}")
    return Check(name, num * units[unit.lower()], False, text.strip())


def _threshold(text: str) -> str:
    try:
        parse_check(text)
    except UserError as exc:
        raise ValueError(str(exc)) from None
    return text


Threshold = Annotated[str, AfterValidator(_threshold)]
Fraction = Annotated[float, Field(gt=0, lt=1)]


class GateTable(BaseModel):
    """A suite's ``[gate]`` table: defaults for ``attnbench compare`` (docs/ci.md)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    thresholds: list[Threshold] | None = Field(default=None, min_length=1, description='e.g. ["latency:10%"]')
    alpha: Fraction | None = Field(default=None, description="false discovery rate across points")
    confidence: Fraction | None = Field(default=None, description="level of the interval on the ratio")
    min_samples: int | None = Field(default=None, ge=1, description="fewer samples on a side: inconclusive")
    normalize: bool | None = Field(default=None, description="divide out the machine reference's shift")
    # accepted so that the suites stored in older runs still parse; ignored (docs/ci.md: it chose the
    # fastest rounds of each side, and with them false verdicts)
    round_window: float | None = Field(default=None, ge=0, lt=1, description="ignored (no longer used)")
    min_rounds: int | None = Field(default=None, ge=2, description="fewer rounds in the compared state: inconclusive")
    max_missing: float | None = Field(
        default=None, ge=0, le=1, description="share of the baseline's points the current run may lack"
    )


IGNORED_GATE_KEYS = ("round_window",)

GATE_EXPECTED = {
    "thresholds": 'a list of strings like "latency:10%" (at least one)',
    "alpha": "a number between 0 and 1",
    "confidence": "a number between 0 and 1",
    "min_samples": "a positive integer",
    "normalize": "true or false",
    "round_window": "a number from 0 (keep every round) to below 1",
    "min_rounds": "an integer of at least 2",
    "max_missing": "a share from 0 to 1 (0.05 = 5 %)",
}


@dataclass
class GateConfig:
    """Everything that decides verdicts. Defaults, then a suite's ``[gate]`` table, then options."""

    checks: list[Check] = field(default_factory=lambda: [parse_check(t) for t in DEFAULT_THRESHOLDS])
    alpha: float = 0.01  # false discovery rate across the points (Benjamini-Hochberg)
    confidence: float = 0.99  # level of the interval on the ratio (rounds: t; single rounds: bootstrap)
    min_samples: int = 10  # single-round sides: fewer timing samples on either side: inconclusive
    normalize: bool = True  # divide out the machine's shift, measured by the reference workload
    min_rounds: int = 3  # rounds (worker processes) per side in the compared state; fewer: inconclusive
    max_missing: float = 0.05  # share of the baseline's points the current run may lack before the gate fails

    def for_field(self, name: str) -> list[Check]:
        return [c for c in self.checks if c.field == name]


def validate_gate_table(where: str, table: Any) -> dict[str, Any]:
    """Check a suite's ``[gate]`` table; return it with the keys it sets. Errors are one line."""
    if not isinstance(table, dict):
        raise UserError(f"{where}: gate = {table!r}: expected a table")
    try:
        GateTable.model_validate(table)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            raise UserError(
                f"{where} [gate]: unknown key {key!r}; expected one of {', '.join(GateTable.model_fields)}"
            ) from None
        if key == "thresholds" and err["type"] == "value_error":
            raise UserError(f"{where} [gate]: {err['ctx']['error']}") from None
        raise UserError(f"{where} [gate]: {key} = {table.get(key)!r}: expected {GATE_EXPECTED[key]}") from None
    return dict(table)


_RANGES: dict[str, tuple[str, Any]] = {
    "alpha": ("a number between 0 and 1", lambda v: 0 < v < 1),
    "confidence": ("a number between 0 and 1", lambda v: 0 < v < 1),
    "min_samples": ("a positive integer", lambda v: v >= 1),
    "min_rounds": ("an integer of at least 2", lambda v: v >= 2),
    "max_missing": ("a share from 0 to 1 (0.05 = 5 %)", lambda v: 0 <= v <= 1),
}


def make_config(
    gate: dict[str, Any] | None = None, thresholds: list[str] | None = None, **overrides: Any
) -> GateConfig:
    """A GateConfig from a suite's ``[gate]`` table and command-line values (None = not given).

    Command-line thresholds replace the suite's for the fields they name; other fields keep theirs.
    """
    cfg = GateConfig()
    gate = {k: v for k, v in (gate or {}).items() if v is not None and k not in IGNORED_GATE_KEYS}
    if "thresholds" in gate:
        cfg.checks = _merge(cfg.checks, [parse_check(t) for t in gate.pop("thresholds")])
    for key, val in gate.items():
        setattr(cfg, key, val)
    if thresholds:
        cfg.checks = _merge(cfg.checks, [parse_check(t) for t in thresholds])
    for key, val in overrides.items():
        if val is None:
            continue
        expected, ok = _RANGES.get(key, ("", lambda v: True))
        if isinstance(val, float) and not math.isfinite(val) or not ok(val):
            raise UserError(f"--{key.replace('_', '-')} {val}: expected {expected}")
        setattr(cfg, key, val)
    return cfg


def _merge(old: list[Check], new: list[Check]) -> list[Check]:
    named = {c.field for c in new}
    return [c for c in old if c.field not in named] + new
