"""The doctor's output: one line per check, grouped, a fix under anything that is not a pass,
a last line with the counts; or the JSON bundle."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

from attnbench.doctor.result import FAIL, PASS, SKIP, WARN, Report

GROUP_TITLES = {
    "timer": "timer agreement",
    "launch": "launch overhead",
    "gpu": "GPU state (what makes numbers move)",
    "nvml": "NVML energy",
    "kernels": "kernels against the float64 oracle",
}
MARK = {PASS: "PASS", WARN: "WARN", FAIL: "FAIL", SKIP: "skip"}


def text(report: Report) -> str:
    lines = [f"attnbench doctor --device {report.device}"]
    group = None
    for c in report.checks:
        if c.group != group:
            group = c.group
            lines += ["", GROUP_TITLES.get(group, group)]
        lines.append(f"  {MARK[c.status]}  {c.summary}")
        if c.fix and c.status in (FAIL, WARN):
            lines.append(f"        fix: {c.fix}")
    counts = ", ".join(
        f"{report.count(s)} {w}" for s, w in ((PASS, "passed"), (FAIL, "failed"), (WARN, "warnings"), (SKIP, "skipped"))
    )
    verdict = "some checks FAILED" if report.exit_code else "all checks passed"
    lines += ["", f"doctor: {verdict} ({counts})"]
    return "\n".join(lines)


def write(report: Report, out: TextIO, as_json: bool) -> None:
    if as_json:
        out.write(json.dumps(report.bundle(), indent=1, default=str) + "\n")
    else:
        out.write(text(report) + "\n")


def write_bundle(report: Report, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report.bundle(), indent=1, default=str))
    tmp.replace(path)
