"""The record every doctor check returns, and the report they make together."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
STATUSES = (PASS, WARN, FAIL, SKIP)
BUNDLE_VERSION = 1


@dataclass
class Check:
    """One line of the doctor's output.

    ``status``: pass; warn (true, and it makes numbers move: worth knowing, not a failure); fail
    (attnbench's numbers cannot be trusted here until ``fix`` is done); skip (could not run here,
    ``summary`` says why). ``data``: the measured values, for the JSON bundle.
    """

    group: str
    name: str
    status: str
    summary: str
    fix: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check status {self.status!r}: expected one of {STATUSES}")


@dataclass
class Report:
    """Every check of one doctor run, with the environment fingerprint."""

    device: str
    checks: list[Check]
    env: dict[str, Any]

    def count(self, status: str) -> int:
        return sum(c.status == status for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when no check failed, 1 otherwise (2, usage, is the command's)."""
        return 1 if self.count(FAIL) else 0

    def bundle(self) -> dict[str, Any]:
        """The JSON bundle to attach to a bug report."""
        return {
            "attnbench_doctor": BUNDLE_VERSION,
            "device": self.device,
            "exit_code": self.exit_code,
            "counts": {s: self.count(s) for s in STATUSES},
            "checks": [asdict(c) for c in self.checks],
            "env": self.env,
        }
