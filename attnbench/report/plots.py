"""Charts of one run, drawn with ``seaborn.relplot`` on matplotlib's Agg backend (PNG and SVG).

One panel per pass (a row per configuration when several ran). Colour tells impls apart,
marker and line style tell families apart (style.py), a band spans the 25th-75th percentile
where the chart has one, noisy points (frame.noisy) are hollow, and each line is labelled at
its end. Only measured points are drawn: impls with no number are left out, and what did not
run is listed beside the chart (skips.py), never drawn on a data axis.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: never open a window, whatever the user's default is

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib import ticker  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from attnbench.report.frame import FAMILY_ORDER, passes  # noqa: E402
from attnbench.report.model import Chart, SkipList  # noqa: E402
from attnbench.report.series import Series  # noqa: E402
from attnbench.report.style import (  # noqa: E402
    FAMILY_DASHES,
    FAMILY_LABELS,
    FAMILY_MARKERS,
    NOISY_FACE,
    label_line_ends,
    literal,
    n_label,
)

# (config, pass) -> panel decorations; returns legend handles for what it drew
Decorate = Callable[[Any, str, str], list[Any]]
STYLE = {"svg.fonttype": "none", "svg.hashsalt": "attnbench", "axes.titlesize": 10}


@dataclass
class ChartSpec:
    """What to draw: ``series`` maps measured rows to y (and lo, hi); ``end_label`` gives the
    text after an impl's name at its line's end (e.g. its fitted exponent)."""

    key: str
    title: str
    caption: str
    ylabel: str
    series: Series
    logy: bool = True
    decorate: Decorate | None = None
    end_label: Callable[[str, str, str], str] | None = None  # (config, pass, impl) -> suffix


def chart_frame(data: pd.DataFrame, spec: ChartSpec) -> pd.DataFrame:
    """The points a chart draws: one per (config, pass, impl, family, N), the median over seeds
    (a point is noisy if any seed was), finite and (on a log axis) positive."""
    values = spec.series(data)
    frame = data[["config", "pass", "impl", "family", "N", "noisy"]].join(values)
    frame = frame[np.isfinite(frame["y"]) & ((frame["y"] > 0) if spec.logy else True)]
    agg: dict[str, Any] = {"y": "median", "noisy": "any"}
    agg.update({c: "median" for c in ("lo", "hi") if c in frame})
    keys = ["config", "pass", "impl", "family", "N"]
    return frame.groupby(keys, sort=True).agg(agg).reset_index() if len(frame) else frame


def _panels(g: Any, multi: bool) -> dict[tuple[str, str], Any]:
    return {(k if multi else ("", k)): ax for k, ax in g.axes_dict.items()}


def _band_and_hollow(ax: Any, panel: pd.DataFrame, colours: dict[str, Any]) -> None:
    for impl, grp in panel.groupby("impl"):
        grp = grp.sort_values("N")
        if "lo" in grp and grp["lo"].notna().all() and len(grp) > 1:
            ax.fill_between(grp["N"], grp["lo"], grp["hi"], color=colours[impl], alpha=0.15, lw=0)
        for fam, pts in grp[grp["noisy"]].groupby("family"):
            ax.scatter(
                pts["N"],
                pts["y"],
                marker=FAMILY_MARKERS[str(fam)],
                s=34,
                facecolors=NOISY_FACE,
                edgecolors=[colours[impl]],
                linewidths=1.2,
                zorder=6,
            )


def _legend(fig: Any, fams: list[str], any_noisy: bool, any_band: bool, extra: list[Any]) -> None:
    handles: list[Any] = [
        Line2D(
            [],
            [],
            color="0.3",
            marker=FAMILY_MARKERS[f],
            dashes=FAMILY_DASHES[f] or (None, None),
            label=FAMILY_LABELS[f],
        )
        for f in fams
    ]
    if any_noisy:
        handles.append(
            Line2D(
                [],
                [],
                color="0.3",
                marker="o",
                mfc=NOISY_FACE,
                ls="",
                label="hollow: noisy (not converged / few samples / busy CPU)",
            )
        )
    if any_band:
        handles.append(Patch(color="0.3", alpha=0.15, label="band: 25th–75th percentile"))
    fig.legend(
        handles=handles + extra,
        loc="outside lower center",
        ncols=min(3, len(handles + extra)),
        fontsize=8,
        frameon=False,
    )


def _where_short(ns: list[int], shown: bool) -> str:
    if not shown:
        return "(every N: no data)"
    if len(ns) == 1:
        return f"at N={n_label(ns[0])}"
    return f"at N={n_label(ns[0])}–{n_label(ns[-1])}"


def _skip_box(fig: Any, skipped: SkipList | None, shown: set[str]) -> None:
    """The chart's own list of what it does not show, beside the panels (so a PNG alone does not mislead)."""
    if skipped is None or not skipped.items:
        return
    lines = [f"{literal(i.impl)}: {i.status} {_where_short(i.ns, i.impl in shown)}" for i in skipped.items]
    handles = [Line2D([], [], ls="", label=line) for line in lines[:12]]
    if len(lines) > 12:
        handles.append(Line2D([], [], ls="", label=f"… {len(lines) - 12} more (see the report)"))
    fig.legend(
        handles=handles,
        loc="outside right upper",
        title="not measured",
        title_fontsize=8,
        fontsize=7,
        handlelength=0,
        handletextpad=0,
        frameon=False,
        alignment="left",
    )


def draw(data: pd.DataFrame, spec: ChartSpec, colours: dict[str, Any], skipped: SkipList | None = None) -> Any | None:
    """The figure of ``spec`` over the measured rows ``data`` (columns config, pass, impl,
    family, N, noisy and what ``spec.series`` reads), or None when nothing is left to draw."""
    d = chart_frame(data, spec)
    if d.empty:
        return None
    impls = sorted(d["impl"].unique())
    fams = [f for f in FAMILY_ORDER if f in set(d["family"])]
    configs = list(dict.fromkeys(d["config"]))
    multi = len(configs) > 1
    g = sns.relplot(
        data=d,
        x="N",
        y="y",
        hue="impl",
        hue_order=impls,
        palette={i: colours[i] for i in impls},
        style="family",
        style_order=fams,
        markers={f: FAMILY_MARKERS[f] for f in fams},
        dashes={f: FAMILY_DASHES[f] for f in fams},
        col="pass",
        col_order=passes(d),
        row="config" if multi else None,
        row_order=configs if multi else None,
        kind="line",
        estimator=None,
        legend=False,
        height=3.1,
        aspect=1.3,
        linewidth=1.4,
        markersize=5,
        facet_kws={"sharey": False, "sharex": True, "despine": False},
    )
    fig = g.figure
    ncols, nrows = len(passes(d)), len(configs)
    # a panel, room for the end labels to its right, and the list of what is not shown
    fig.set_size_inches(ncols * 5.4 + (2.6 if skipped is not None and skipped.items else 0.4), nrows * 3.4 + 1.3)
    fig.set_layout_engine("constrained")
    g.set_titles(col_template="{col_name}", row_template="{row_name}")
    if multi:
        g.set_titles(template="{col_name}  ({row_name})")
    extra: list[Any] = []
    for (config, pass_), ax in _panels(g, multi).items():
        panel = d[(d["config"] == config) & (d["pass"] == pass_)]
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(n_label))
        ax.xaxis.set_minor_locator(ticker.NullLocator())
        if d["N"].nunique() <= 9:  # tick exactly the measured N (they need not be powers of 2)
            ax.xaxis.set_major_locator(ticker.FixedLocator(sorted(d["N"].unique())))
        if spec.logy:
            ax.set_yscale("log")
        ax.set_xlabel("sequence length N")
        ax.set_ylabel(spec.ylabel)
        ax.grid(True, which="major", alpha=0.35)
        _band_and_hollow(ax, panel, colours)
        if spec.decorate is not None:
            extra = spec.decorate(ax, str(config), str(pass_)) or extra
        ax.autoscale_view()
        ends = []
        for impl, grp in panel.groupby("impl"):
            last = grp.sort_values("N").iloc[-1]
            suffix = spec.end_label(str(config), str(pass_), str(impl)) if spec.end_label else ""
            ends.append((float(last["N"]), float(last["y"]), f"{impl}{suffix}", colours[impl]))
        label_line_ends(ax, ends)
    fig.suptitle(literal(spec.title), fontsize=12)
    _legend(fig, fams, bool(d["noisy"].any()), "lo" in d and d["lo"].notna().any(), extra)
    _skip_box(fig, skipped, set(data["impl"].astype(str)))  # the baseline of a speedup chart has data
    return fig


def save(fig: Any, out_dir: Path, spec: ChartSpec, skipped: SkipList | None, dpi: int = 90, svg: bool = True) -> Chart:
    """Write ``fig`` as PNG (and SVG) under ``out_dir``, close it, and describe it. Each format
    draws the figure again: the SVG is a third of the report's time on a 2-core CPU."""
    png, svg_path = out_dir / f"{spec.key}.png", out_dir / f"{spec.key}.svg"
    fig.savefig(png, dpi=dpi)
    if svg:
        fig.savefig(svg_path, metadata={"Date": None})
    plt.close(fig)
    return Chart(spec.key, spec.title, spec.caption, png, svg_path if svg else None, skipped)


def render_charts(
    data: pd.DataFrame,
    specs: list[ChartSpec],
    out_dir: Path,
    colours: dict[str, Any],
    skipped: SkipList | None,
    svg: bool = True,
) -> list[Chart]:
    """Draw and write every spec that has something to draw, in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = []
    style = {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook", font_scale=0.85), **STYLE}
    with matplotlib.rc_context(style):
        for spec in specs:
            fig = draw(data, spec, colours, skipped)
            if fig is not None:
                charts.append(save(fig, out_dir, spec, skipped, svg=svg))
    return charts
