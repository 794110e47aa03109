"""Charts of one run (seaborn styling on matplotlib's Agg backend), written as PNG and SVG.

Each chart has one panel per pass (and one row per configuration when several ran), impls
told apart by colour. Points that did not run (error, crashed, oom, timeout, skipped) are
drawn as markers along the bottom edge at the N where they happened, never dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, whatever the user's default is

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import ticker, transforms  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from attnbench.report import series  # noqa: E402
from attnbench.report.frame import col, max_error, measured, passes, with_config  # noqa: E402

STATUS_MARKERS = {"error": "x", "crashed": "X", "oom": "v", "timeout": "s", "skipped": "o"}
STATUS_LABELS = {
    "error": "error",
    "crashed": "crashed",
    "oom": "out of memory",
    "timeout": "timeout",
    "skipped": "skipped",
}


@dataclass
class Chart:
    """One written chart: its key (file stem), title, a one-line caption and its files."""

    key: str
    title: str
    caption: str
    png: Path
    svg: Path


def literal(text: str) -> str:
    """``text`` with ``$`` escaped, so an impl's name is never parsed as mathtext."""
    return str(text).replace("$", r"\$")


def _n_label(n: float, _pos: Any = None) -> str:
    n = int(round(n))
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def palette(impls: list[str]) -> dict[str, Any]:
    """A stable colour per impl (sorted names, seaborn's colour-blind palette, then tab20)."""
    names = sorted(set(impls))
    colours = sns.color_palette("colorblind", 10) + sns.color_palette("tab20", 20)
    return {name: colours[i % len(colours)] for i, name in enumerate(names)}


def _grid(data: pd.DataFrame, title: str) -> tuple[Figure, dict[tuple[str, str], Any]]:
    cols, rows = passes(data), list(dict.fromkeys(data["config"]))
    fig = Figure(figsize=(4.2 * len(cols) + 1.8, 3.3 * len(rows) + 0.5), layout="constrained")
    axes = fig.subplots(len(rows), len(cols), squeeze=False, sharex=True)
    grid = {}
    for i, config in enumerate(rows):
        for j, pass_ in enumerate(cols):
            ax = axes[i][j]
            ax.set_title(literal(pass_ + (f"  ({config})" if config else "")), fontsize=10)
            ax.set_xscale("log", base=2)
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(_n_label))
            ax.xaxis.set_minor_locator(ticker.NullLocator())
            if i == len(rows) - 1:
                ax.set_xlabel("sequence length N")
            grid[(config, pass_)] = ax
    ns = data["N"].dropna()
    if len(ns):  # every N of the run, so failure markers past the last measured point stay inside
        axes[0][0].set_xlim(ns.min() / 1.25, ns.max() * 1.25)
        if ns.nunique() <= 9:  # tick exactly the measured N (they need not be powers of 2)
            axes[0][0].xaxis.set_major_locator(ticker.FixedLocator(sorted(ns.unique())))
    fig.suptitle(literal(title), fontsize=12)
    return fig, grid


def _mark_failures(ax: Any, fails: pd.DataFrame, colours: dict[str, Any], impls: list[str]) -> None:
    """Markers at y = a few % above the bottom edge, one lane per impl, at the failing N."""
    blend = transforms.blended_transform_factory(ax.transData, ax.transAxes)
    for r in fails.to_dict("records"):
        lane = impls.index(r["impl"]) if r["impl"] in impls else 0
        c = colours[r["impl"]]
        paint = {"facecolors": "none", "edgecolors": c} if r["status"] == "skipped" else {"color": c}
        ax.scatter(
            [r["N"]],
            [0.04 + 0.035 * lane],
            transform=blend,
            marker=STATUS_MARKERS.get(r["status"], "x"),
            s=30,
            linewidths=1.5,
            zorder=5,
            clip_on=False,
            **paint,
        )


def _make_room(ax: Any, lanes: int) -> None:
    """Lower the y-axis so the failure lanes (bottom of the panel) sit below the data."""
    frac = min(0.06 + 0.035 * lanes, 0.4)
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log":
        span = np.log10(hi) - np.log10(lo)
        ax.set_ylim(10 ** (np.log10(lo) - frac / (1 - frac) * span), hi)
    else:
        ax.set_ylim(lo - frac / (1 - frac) * (hi - lo), hi)


def _legend(fig: Figure, colours: dict[str, Any], impls: list[str], statuses: list[str], extra: list[Any]) -> None:
    handles = [Line2D([], [], color=colours[i], marker="o", ms=4, label=literal(i)) for i in impls]
    handles += [
        Line2D(
            [],
            [],
            color="0.25",
            marker=STATUS_MARKERS[s],
            ls="",
            ms=6,
            mew=1.5,
            mfc="none" if s == "skipped" else "0.25",
            label=f"{STATUS_LABELS[s]} (marked at its N)",
        )
        for s in STATUS_MARKERS
        if s in statuses
    ]
    fig.legend(handles=handles + extra, loc="outside right center", fontsize=8, frameon=False)


def _facet_chart(
    df: pd.DataFrame,
    colours: dict[str, Any],
    title: str,
    ylabel: str,
    value: Callable[[pd.DataFrame], pd.DataFrame],
    logy: bool = True,
    decorate: Callable[[Any, pd.DataFrame], list[Any]] | None = None,
) -> Figure:
    """One panel per (config, pass). ``value`` maps a panel's ok rows to columns N, impl, y
    and optionally lo, hi (error bar ends); ``decorate`` adds reference lines to each panel."""
    data = with_config(df)
    fig, grid = _grid(data, title)
    impls = sorted(set(data["impl"].astype(str)))
    ok = measured(data)
    fails = data[data["status"] != "ok"]
    extra: list[Any] = []
    for (config, pass_), ax in grid.items():
        panel = value(ok[(ok["config"] == config) & (ok["pass"] == pass_)])
        panel = panel[np.isfinite(panel["y"]) & ((panel["y"] > 0) if logy else True)]
        for impl, grp in panel.groupby("impl", sort=True):
            grp = grp.sort_values("N")
            yerr = None
            if "lo" in grp and grp["lo"].notna().all():
                yerr = np.vstack([(grp["y"] - grp["lo"]).clip(lower=0), (grp["hi"] - grp["y"]).clip(lower=0)])
            ax.errorbar(
                grp["N"],
                grp["y"],
                yerr=yerr,
                color=colours[impl],
                marker="o",
                ms=3.5,
                lw=1.4,
                capsize=2.5,
                elinewidth=1,
            )
        if logy and len(panel):
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        if decorate is not None:
            extra = decorate(ax, panel) or extra
        here = fails[(fails["config"] == config) & (fails["pass"] == pass_)]
        if len(here) and len(panel):
            _make_room(ax, max(impls.index(i) for i in set(here["impl"])) + 1)
        _mark_failures(ax, here, colours, impls)
    _legend(fig, colours, impls, sorted(set(fails["status"])), extra)
    return fig


def _tolerance_line(ax: Any, panel: pd.DataFrame) -> list[Any]:
    tol = panel["tol"].max() if "tol" in panel and len(panel) else float("nan")
    if not np.isfinite(tol):
        return []
    ax.axhline(tol, color="0.4", ls="--", lw=1)
    return [Line2D([], [], color="0.4", ls="--", label="tolerance")]


def _parity_line(ax: Any, panel: pd.DataFrame) -> list[Any]:
    ax.axhline(1.0, color="0.4", ls="--", lw=1)
    return [Line2D([], [], color="0.4", ls="--", label="as fast as baseline")]


def make_charts(df: pd.DataFrame, out_dir: Path, baseline: str | None = None, dpi: int = 90) -> list[Chart]:
    """Draw every chart the data allows into ``out_dir`` (PNG and SVG); return them in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    colours = palette(list(df["impl"].astype(str)))
    ok = measured(df)
    specs: list[tuple[str, str, str, Callable[[], Figure]]] = [
        (
            "latency",
            "Latency vs sequence length",
            "median time per call; bars span the 25th–75th percentile",
            lambda: _facet_chart(df, colours, "Latency vs N (median, IQR bars)", "ms per call", series.time_series),
        ),
        (
            "memory",
            "Peak memory vs sequence length",
            "peak memory of one call beyond its inputs",
            lambda: _facet_chart(df, colours, "Peak memory vs N", "peak MiB", series.memory_series),
        ),
        (
            "throughput",
            "Throughput vs sequence length",
            "tokens (B·N) processed per second",
            lambda: _facet_chart(df, colours, "Throughput vs N", "tokens / s", series.tokens_series),
        ),
    ]
    if col(ok, "tflops").notna().any():
        specs.append(
            (
                "tflops",
                "TFLOP/s vs sequence length",
                "achieved TFLOP/s",
                lambda: _facet_chart(df, colours, "TFLOP/s vs N", "TFLOP/s", series.tflops_series),
            )
        )
    if baseline is not None and baseline in set(ok["impl"]):
        specs.append(
            (
                "speedup",
                f"Speedup over {baseline}",
                f"{baseline} time / impl time (> 1: faster)",
                lambda: _facet_chart(
                    df,
                    colours,
                    f"Speedup over {baseline}",
                    "× faster",
                    series.speedup_series(df, baseline),
                    decorate=_parity_line,
                ),
            )
        )
    if max_error(ok).notna().any():
        specs.append(
            (
                "correctness",
                "Correctness error vs sequence length",
                "max relative error of out, dq, dk, dv against the float64 reference",
                lambda: _facet_chart(
                    df,
                    colours,
                    "Max relative error vs N",
                    "relative error",
                    series.error_series,
                    decorate=_tolerance_line,
                ),
            )
        )
    charts = []
    style = {
        **sns.axes_style("whitegrid"),
        **sns.plotting_context("notebook", font_scale=0.85),
        "svg.fonttype": "none",
        "svg.hashsalt": "attnbench",
    }
    with matplotlib.rc_context(style):
        for key, title, caption, draw in specs:
            fig = draw()
            png, svg = out_dir / f"{key}.png", out_dir / f"{key}.svg"
            fig.savefig(png, dpi=dpi)
            fig.savefig(svg, metadata={"Date": None})
            charts.append(Chart(key, title, caption, png, svg))
    return charts
