"""What each chart plots: functions mapping the measured rows of a run (one per point, with
columns N, impl, pass, config) to columns ``y`` and optionally ``lo``, ``hi`` (the band drawn
around the line), on the same index. Pure pandas, so the numbers behind a chart can be tested
without drawing."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from attnbench.report.frame import col, max_error

Series = Callable[[pd.DataFrame], pd.DataFrame]


def time_series(g: pd.DataFrame) -> pd.DataFrame:
    """Median ms per call; the band spans the 25th to 75th percentile."""
    return pd.DataFrame({"y": col(g, "time_ms_median"), "lo": col(g, "time_ms_q1"), "hi": col(g, "time_ms_q3")})


def memory_series(g: pd.DataFrame) -> pd.DataFrame:
    """Peak MiB of one call beyond its inputs."""
    return pd.DataFrame({"y": col(g, "peak_mib")})


def tokens_series(g: pd.DataFrame) -> pd.DataFrame:
    """Tokens (B·N) per second; the band from the quartile times."""
    tokens = col(g, "B").fillna(1) * col(g, "N")
    return pd.DataFrame(
        {
            "y": tokens * 1000 / col(g, "time_ms_median"),
            "lo": tokens * 1000 / col(g, "time_ms_q3"),
            "hi": tokens * 1000 / col(g, "time_ms_q1"),
        }
    )


def tflops_series(g: pd.DataFrame) -> pd.DataFrame:
    """Achieved TFLOP/s (the roofline model's FLOPs over the median time)."""
    return pd.DataFrame({"y": col(g, "tflops")})


def error_series(g: pd.DataFrame) -> pd.DataFrame:
    """The largest relative error of out, dq, dk, dv (floored at 1e-17 so a log axis shows 0)."""
    return pd.DataFrame({"y": max_error(g).clip(lower=1e-17), "tol": col(g, "tolerance")})


def speedup_series(baseline: str) -> Series:
    """``baseline``'s median time / each impl's, at the same config, pass and N (> 1: faster).
    The baseline's own rows are NaN: it is the line at 1."""

    def value(g: pd.DataFrame) -> pd.DataFrame:
        keys = ["config", "pass", "N"]
        base = g[g["impl"] == baseline].groupby(keys)["time_ms_median"].median().rename("_base")
        joined = g[keys].join(base, on=keys)
        y = joined["_base"] / col(g, "time_ms_median")
        return pd.DataFrame({"y": y.where(g["impl"] != baseline)})

    return value
