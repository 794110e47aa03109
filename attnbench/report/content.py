"""Assembles the report model (model.py) of one run: the header facts, then the sections in the
order that leads with the finding -- latency (with the findings table), memory, speedup, the
numbers per point, decode -- and the detail the HTML shows in full."""

from __future__ import annotations

from typing import Any

import pandas as pd

from attnbench.fmt import fmt_count, fmt_pct
from attnbench.report import profile_links as links
from attnbench.report.analysis import Analysis
from attnbench.report.findings import findings_table
from attnbench.report.frame import NOISY_CPU_BUSY_PCT, min_samples, noise_reasons
from attnbench.report.model import Chart, Fact, Report, Section, SkipList, Table
from attnbench.report.tables import (
    correctness_table,
    crossover_table,
    environment_table,
    failures_table,
    frontier_table,
    memory_pivot,
    noisy_table,
    scaling_table,
    text,
    time_pivot,
)


def status_counts(df: pd.DataFrame) -> str:
    """e.g. ``126 points: 80 measured, 46 skipped``."""
    counts = df["status"].astype(str).value_counts()
    parts = [f"{fmt_count(counts.get('ok', 0))} measured"]
    parts += [f"{fmt_count(n)} {s}" for s, n in sorted(counts.items()) if s != "ok"]
    return f"{fmt_count(len(df))} points: " + ", ".join(parts)


def noise_fact(df: pd.DataFrame, meta: dict[str, Any]) -> Fact:
    """``12 of 80 measured points are noisy (...): machine busy?`` (a warning when any is)."""
    why = noise_reasons(df, meta)
    measured = int((df["status"].astype(str) == "ok").sum())
    n = int((why != "").sum())
    if not n:
        return Fact("noise", f"none of the {fmt_count(measured)} measured points is noisy")
    parts = []
    for key, what in (
        ("did not converge", "did not reach the noise target"),
        ("samples", f"{{has}} fewer than {min_samples(meta)} samples"),
        ("CPU", f"ran while other processes used > {fmt_pct(NOISY_CPU_BUSY_PCT)} CPU"),
    ):
        k = int(why.str.contains(key, regex=False).sum())
        if k:
            parts.append(f"{fmt_count(k)} {what.replace('{has}', 'has' if k == 1 else 'have')}")
    value = f"{fmt_count(n)} of {fmt_count(measured)} measured points are noisy ({'; '.join(parts)}): machine busy?"
    return Fact("noise", value, warn=True)


def interrupted_fact(df: pd.DataFrame, meta: dict[str, Any]) -> list[Fact]:
    """``interrupted: 3 of 56 planned points stored, 53 missing`` for a run stopped before the
    end (a warning), else nothing."""
    if not meta.get("interrupted"):
        return []
    planned = meta.get("planned_points")
    if isinstance(planned, int) and planned >= len(df):
        value = f"{fmt_count(len(df))} of {fmt_count(planned)} planned points stored, {fmt_count(planned - len(df))} missing"
    else:
        value = f"{fmt_count(len(df))} points stored; the rest of the plan is missing"
    return [Fact("interrupted", value + " (attnbench run --resume finishes it)", warn=True)]


def correctness_fact(df: pd.DataFrame) -> Fact:
    checked = df["correct"].notna().sum() if "correct" in df else 0
    bad = int(df["correct"].astype(object).eq(False).sum()) if "correct" in df else 0
    if not checked:
        return Fact("correctness", "not checked")
    if bad:
        return Fact("correctness", f"{fmt_count(bad)} of {fmt_count(checked)} checked points failed", warn=True)
    return Fact("correctness", f"all {fmt_count(checked)} checked points within tolerance")


def header(df: pd.DataFrame, meta: dict[str, Any]) -> list[Fact]:
    """The facts at the top: points, noise, correctness, machine, run (the baseline is named
    wherever it is used)."""
    env: dict[str, Any] = meta["env"] if isinstance(meta.get("env"), dict) else {}
    machine = [meta.get("device"), env.get("gpu") or env.get("cpu_model")]
    threads = meta.get("threads") or env.get("threads")
    machine.append(f"{threads} thread{'s' if threads != 1 else ''}" if threads else None)
    machine.append(f"torch {env['torch']}" if env.get("torch") else None)
    facts = [
        Fact("points", status_counts(df)),
        *interrupted_fact(df, meta),
        noise_fact(df, meta),
        correctness_fact(df),
        Fact("machine", " · ".join(text(m) for m in machine if m)),
    ]
    if meta.get("started") or meta.get("command"):
        when = f"{text(meta.get('started'))} → {text(meta.get('finished') or 'unfinished')}"
        facts.append(Fact("run", when + (f": {text(meta.get('command'))}" if meta.get("command") else "")))
    return facts


def profile_links(df: pd.DataFrame, meta: dict[str, Any], run_dir: str | None) -> tuple[Fact | None, Section | None]:
    """A header fact and a section (in report.html; report.md stays a short summary) that give
    each failed, slow or noisy point the commands that profile and reproduce it; (None, None)
    when there is none."""

    pts = links.flagged(df, meta)
    if not len(pts):
        return None, None
    where = run_dir or "RUN_DIR"
    rows = [
        [p, why, links.profile_command(where, p), links.repro_command(where, p)]
        for p, why in zip(pts["point_id"].astype(str), pts["why"].astype(str), strict=True)
    ]
    kinds = ", ".join(f"{fmt_count(n)} {k}" for k, n in links.kinds(pts).items() if n)
    fact = Fact(
        "profile",
        f"{fmt_count(len(pts))} failed, slow or noisy points ({kinds}): attnbench profile {where} POINT_ID and "
        f"attnbench repro {where} POINT_ID; each point's two commands in report.html (Profile and reproduce)",
    )
    note = (
        f"slow: {links.SLOW_RATIO:g}× or more above its impl's fitted power law at its N; "
        + ("RUN_DIR: this run's directory; " if run_dir is None else "")
        + "profile writes a trace, the top ops and a memory timeline; repro writes a standalone repro.py"
    )
    title = "Failed, slow or noisy points and the commands that profile and reproduce each"
    table = Table("profile-commands", title, ["point", "why", "profile", "reproduce"], rows, note=note, collapsed=True)
    return fact, Section("profile", "Profile and reproduce", [table], summary=False)


def _chart(charts: dict[str, Chart], key: str) -> list[Chart]:
    return [charts[key]] if key in charts else []


def build_report(
    df: pd.DataFrame,
    meta: dict[str, Any],
    a: Analysis,
    charts: list[Chart],
    baseline: str | None,
    decode: Section | None = None,
    points: dict[str, Any] | None = None,
    run_dir: str | None = None,
) -> Report:
    """The report model of a run: its decode rows are told in ``decode`` (their section), every
    other section is about the rest. ``run_dir``: the run's directory as the profile and repro
    commands should name it (default the placeholder ``RUN_DIR``)."""
    facts = header(df, meta)
    df = df[df["pass"].astype(str) != "decode"]
    profile_fact, profile = profile_links(df, meta, run_dir)
    if profile_fact is not None:
        facts.insert(3, profile_fact)
    suite = meta.get("suite") or {}
    name = suite.get("name", "?") if isinstance(suite, dict) else suite
    desc = suite.get("description", "") if isinstance(suite, dict) else ""
    by_key = {c.key: c for c in charts}
    sections = []
    if len(df):
        sections += [
            Section("latency", "Latency", [*_chart(by_key, "latency"), findings_table(df, meta, a, baseline)]),
            Section(
                "memory",
                "Memory" + (f" and speedup over {baseline}" if "speedup" in by_key else ""),
                _chart(by_key, "memory") + _chart(by_key, "speedup"),
            ),
        ]
        sections.append(Section("numbers", "Numbers per point", [time_pivot(df, meta), memory_pivot(df, meta)]))
        more = [by_key[k] for k in ("throughput", "tflops", "correctness") if k in by_key]
        if more:
            sections.append(Section("more-charts", "More charts", list(more), summary=False))
    if decode is not None:
        sections.append(decode)
    if len(df):
        detail: list[Table | SkipList] = [scaling_table(a), crossover_table(a), frontier_table(a), correctness_table(a)]
        detail += [t for t in (noisy_table(df, meta), failures_table(a)) if t is not None]
        sections.append(Section("analysis", "Analysis tables", list(detail), summary=False))
    if profile is not None:
        sections.append(profile)
    sections.append(Section("environment", "Environment", [environment_table(a)], summary=False))
    return Report(
        title=f"attnbench report: {text(name)} on {text(meta.get('device', '?'))}",
        subtitle=text(desc),
        facts=facts,
        sections=sections,
        points=points or {},
    )
