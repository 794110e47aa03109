"""What each chart plots: functions mapping a panel's ok rows to columns N, impl, y (and lo,
hi for error bars). Pure pandas, so the numbers behind a chart can be tested without drawing."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from attnbench.report.frame import col, max_error


def time_series(g: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "N": g["N"],
            "impl": g["impl"],
            "y": col(g, "time_ms_median"),
            "lo": col(g, "time_ms_q1"),
            "hi": col(g, "time_ms_q3"),
        }
    )


def memory_series(g: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"N": g["N"], "impl": g["impl"], "y": col(g, "peak_mib")})


def tokens_series(g: pd.DataFrame) -> pd.DataFrame:
    tokens = col(g, "B").fillna(1) * g["N"]
    return pd.DataFrame(
        {
            "N": g["N"],
            "impl": g["impl"],
            "y": tokens * 1000 / col(g, "time_ms_median"),
            "lo": tokens * 1000 / col(g, "time_ms_q3"),
            "hi": tokens * 1000 / col(g, "time_ms_q1"),
        }
    )


def tflops_series(g: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"N": g["N"], "impl": g["impl"], "y": col(g, "tflops")})


def error_series(g: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {"N": g["N"], "impl": g["impl"], "y": max_error(g).clip(lower=1e-17), "tol": col(g, "tolerance")}
    )


def speedup_series(df: pd.DataFrame, baseline: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def value(g: pd.DataFrame) -> pd.DataFrame:
        base = g[g["impl"] == baseline].groupby("N")["time_ms_median"].median()
        g = g[g["impl"] != baseline]  # the baseline is the dashed line at 1
        return pd.DataFrame({"N": g["N"], "impl": g["impl"], "y": g["N"].map(base) / col(g, "time_ms_median")})

    return value
