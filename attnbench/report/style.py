"""How the charts tell series apart: a colour per impl (stable across a run's charts), a marker
and line style per family (softmax, linear, kernel), hollow markers for noisy points, and
labels at the ends of lines pushed apart so they never overlap.

Imports matplotlib/seaborn (only plots.py and the decode charts import this module).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import seaborn as sns

# Marker and dash pattern per family (seaborn's dashes: "" = solid, (on, off) in line widths).
FAMILY_MARKERS = {"softmax": "o", "linear": "s", "kernel": "^", "other": "D"}
FAMILY_DASHES: dict[str, Any] = {"softmax": "", "linear": (4, 1.5), "kernel": (1, 1), "other": (6, 2, 1, 2)}
FAMILY_LABELS = {
    "softmax": "softmax family (○, solid)",
    "linear": "linear family (□, dashed)",
    "kernel": "compiled kernel (△, dotted)",
    "other": "family unknown (◇)",
}
NOISY_FACE = "white"  # noisy points: the marker's face left white (hollow), edge in the impl's colour
LABEL_FONTSIZE = 7.5


def palette(impls: Iterable[str]) -> dict[str, Any]:
    """A stable colour per impl (by sorted name): tab10 without its grey (grey is kept for
    reference lines), then Dark2 and tab20's dark shades: 21 distinct colours before any repeats."""
    base = sns.color_palette("tab10", 10)
    colours = [c for i, c in enumerate(base) if i != 7] + sns.color_palette("Dark2", 8)
    colours += sns.color_palette("tab20", 20)[0::2][:4]
    names = sorted(set(impls))
    return {name: colours[i % len(colours)] for i, name in enumerate(names)}


def literal(text: Any) -> str:
    """``text`` with ``$`` escaped, so an impl's name is never parsed as mathtext."""
    return str(text).replace("$", r"\$")


def n_label(n: float, _pos: Any = None) -> str:
    """A tick label for a sequence length: ``16k`` for multiples of 1024, else the integer."""
    n = int(round(n))
    return f"{n // 1024}k" if n >= 1024 and n % 1024 == 0 else str(n)


def spread(positions: Sequence[float], gap: float, lo: float = 0.0, hi: float = 1.0) -> list[float]:
    """Move label positions (axes fraction) apart to at least ``gap`` each, as little as
    possible, inside [lo, hi] where room allows; returns them in the input's order."""
    order = sorted(range(len(positions)), key=lambda i: positions[i])
    ys = [positions[i] for i in order]
    for i in range(1, len(ys)):  # push up
        ys[i] = max(ys[i], ys[i - 1] + gap)
    overflow = ys[-1] - hi if ys else 0.0
    if overflow > 0:  # then shift down what overflowed, keeping the gaps
        ys[-1] -= overflow
        for i in range(len(ys) - 2, -1, -1):
            ys[i] = min(ys[i], ys[i + 1] - gap)
    ys = [max(y, lo - 1.0) for y in ys]  # past lo only when there is no room at all
    out = [0.0] * len(ys)
    for i, y in zip(order, ys, strict=True):
        out[i] = y
    return out


def label_line_ends(ax: Any, ends: list[tuple[float, float, str, Any]], gap: float = 0.06) -> None:
    """Write each ``(x, y, text, colour)`` label to the right of the axes at its line's end
    height, spread apart, with a thin leader to the last point. Call after the limits are final."""
    if not ends:
        return
    y0, y1 = ax.get_ylim()
    log = ax.get_yscale() == "log"

    def frac(y: float) -> float:
        if log:
            return (math.log10(y) - math.log10(y0)) / (math.log10(y1) - math.log10(y0))
        return (y - y0) / (y1 - y0)

    placed = spread([frac(y) for _, y, _, _ in ends], gap)
    for (x, y, text, colour), fy in zip(ends, placed, strict=True):
        ax.annotate(
            literal(text),
            xy=(x, y),
            xycoords="data",
            xytext=(1.03, fy),
            textcoords="axes fraction",
            va="center",
            ha="left",
            fontsize=LABEL_FONTSIZE,
            color=colour,
            annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": colour, "lw": 0.5, "alpha": 0.6, "shrinkA": 0, "shrinkB": 2},
        )
