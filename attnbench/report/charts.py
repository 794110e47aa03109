"""Which charts a run gets, in the order that leads with the finding: latency against N (the
crossover marked, each line labelled with its fitted exponent), then peak memory, then the
speedup over the baseline, throughput, TFLOP/s (when measured) and correctness error."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.lines import Line2D

from attnbench.fmt import fmt_int
from attnbench.report import series
from attnbench.report.analysis import Analysis
from attnbench.report.frame import col, families, max_error, measured, noisy, with_config
from attnbench.report.model import Chart, SkipList
from attnbench.report.plots import ChartSpec, render_charts
from attnbench.report.style import palette


def exponent_label(fits: pd.DataFrame) -> Any:
    """``(config, pass, impl) -> " N^1.84"`` from a scaling table (empty where there is no fit)."""
    table = {
        (str(r["config"]), str(r["pass"]), str(r["impl"])): r["exponent"]
        for r in fits.to_dict("records")
        if r["exponent"] == r["exponent"]  # not NaN
    }

    def label(config: str, pass_: str, impl: str) -> str:
        e = table.get((config, pass_, impl))
        return f"  N^{e:.2f}" if e is not None else ""

    return label


def first_crossover(a: Analysis, baseline: str | None, config: str, pass_: str) -> tuple[float, str] | None:
    """The smallest N above which some linear impl beats ``baseline`` for good in this panel."""
    if baseline is None or not len(a.crossovers):
        return None
    c = a.crossovers
    here = c[(c["config"] == config) & (c["pass"] == pass_) & (c["versus"] == baseline)].dropna(subset=["crossover_n"])
    if not len(here):
        return None
    best = here.sort_values("crossover_n").iloc[0]
    return float(best["crossover_n"]), str(best["impl"])


def crossover_marker(a: Analysis, baseline: str | None) -> Any:
    def decorate(ax: Any, config: str, pass_: str) -> list[Any]:
        found = first_crossover(a, baseline, config, pass_)
        if found is None:
            return []
        n, impl = found
        ax.axvline(n, color="0.35", ls=":", lw=1.2, zorder=1)
        ax.annotate(
            f"{impl} beats {baseline}\nfrom N ≈ {fmt_int(n)}",
            xy=(n, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            va="top",
            fontsize=7,
            color="0.25",
        )
        return [Line2D([], [], color="0.35", ls=":", label=f"crossover: first linear impl faster than {baseline}")]

    return decorate


def _hline(y: float, label: str) -> Any:
    def decorate(ax: Any, config: str, pass_: str) -> list[Any]:
        ax.axhline(y, color="0.4", ls="--", lw=1)
        return [Line2D([], [], color="0.4", ls="--", label=label)]

    return decorate


def _tolerance(data: pd.DataFrame) -> Any:
    tol = col(data, "tolerance").max()
    return _hline(float(tol), "tolerance") if math.isfinite(tol) else None


def chart_specs(data: pd.DataFrame, a: Analysis, baseline: str | None) -> list[ChartSpec]:
    """The charts the measured rows ``data`` allow, lead chart first."""
    specs = [
        ChartSpec(
            "latency",
            "Latency vs sequence length",
            "median time per call (band: 25th–75th percentile); each label gives the fitted exponent of N",
            "ms per call",
            series.time_series,
            decorate=crossover_marker(a, baseline),
            end_label=exponent_label(a.time_fits),
        ),
        ChartSpec(
            "memory",
            "Peak memory vs sequence length",
            "peak memory of one call beyond its inputs; each label gives the fitted exponent of N",
            "peak MiB",
            series.memory_series,
            end_label=exponent_label(a.memory_fits),
        ),
    ]
    if baseline is not None and baseline in set(data["impl"]):
        specs.append(
            ChartSpec(
                "speedup",
                f"Speedup over {baseline}",
                f"{baseline} time / impl time at the same N (> 1: faster than {baseline})",
                f"× faster than {baseline}",
                series.speedup_series(baseline),
                decorate=_hline(1.0, f"as fast as {baseline}"),
            )
        )
    specs.append(
        ChartSpec(
            "throughput",
            "Throughput vs sequence length",
            "tokens (B·N) processed per second",
            "tokens / s",
            series.tokens_series,
        )
    )
    if col(data, "tflops").notna().any():
        specs.append(
            ChartSpec("tflops", "TFLOP/s vs sequence length", "achieved TFLOP/s", "TFLOP/s", series.tflops_series)
        )
    if max_error(data).notna().any():
        specs.append(
            ChartSpec(
                "correctness",
                "Correctness error vs sequence length",
                "max relative error of out, dq, dk, dv against the float64 reference",
                "relative error",
                series.error_series,
                decorate=_tolerance(data),
            )
        )
    return specs


def make_charts(
    df: pd.DataFrame,
    meta: dict[str, Any],
    a: Analysis,
    out_dir: Path,
    baseline: str | None,
    skipped: SkipList | None,
    svg: bool = True,
) -> list[Chart]:
    """Draw every chart the run allows into ``out_dir`` (PNG, and SVG with ``svg``); return them in order."""
    data = with_config(df).assign(family=lambda d: families(d).to_numpy(), noisy=lambda d: noisy(d, meta).to_numpy())
    data = measured(data[data["pass"].astype(str) != "decode"])
    if not len(data):
        return []
    colours = palette(df["impl"].astype(str))
    return render_charts(data, chart_specs(data, a, baseline), out_dir, colours, skipped, svg)
