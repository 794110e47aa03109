"""Shared views of a results DataFrame for the report: which rows are measurements, which are
failures, and which columns tell one series (impl, pass, config) apart.

Pure pandas; every function tolerates columns that an older or newer run lacks.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

PASS_ORDER = ("fwd", "bwd", "fwdbwd")
# Columns that, when they vary within a run, split one impl's points into separate series.
CONFIG_KEYS = ("causal", "dtype", "B", "H", "D", "M", "impl_params")
NOT_OK = ("error", "crashed", "oom", "timeout", "skipped")
ERR_COLS = ("err_out", "err_dq", "err_dk", "err_dv")


def col(df: pd.DataFrame, name: str) -> pd.Series:
    """Column ``name`` as floats (NaN where missing or not a number); all-NaN if absent."""
    if name not in df.columns:
        return pd.Series(float("nan"), index=df.index, dtype=float)
    return pd.to_numeric(df[name], errors="coerce").astype(float)


def config_keys(df: pd.DataFrame) -> list[str]:
    """The config columns that take more than one value for at least one impl (a value that
    differs only between impls, like linear-chunked's chunk_size, is part of the impl)."""
    keys = [k for k in CONFIG_KEYS if k in df.columns]
    if not keys or not len(df):
        return []
    varying = df[["impl", *keys]].astype(str).groupby("impl").nunique().max()
    return [k for k in keys if varying[k] > 1]


def with_config(df: pd.DataFrame) -> pd.DataFrame:
    """A copy with a ``config`` column: e.g. ``causal=True dtype=float32``, or ``""`` when
    every point shares one configuration. Rows are sorted by impl, pass and N."""
    out = df.copy()
    keys = config_keys(out)
    if keys:
        out["config"] = out[keys].astype(str).apply(lambda r: " ".join(f"{k}={r[k]}" for k in keys), axis=1)
    else:
        out["config"] = ""
    out["N"] = pd.to_numeric(out["N"], errors="coerce")
    out["_pass_rank"] = out["pass"].map({p: i for i, p in enumerate(PASS_ORDER)}).fillna(len(PASS_ORDER))
    out = out.sort_values(["config", "impl", "_pass_rank", "N"], kind="stable").drop(columns="_pass_rank")
    return out.reset_index(drop=True)


def passes(df: pd.DataFrame) -> list[str]:
    """Passes present, in the order fwd, bwd, fwdbwd, then any others."""
    present = list(dict.fromkeys(df["pass"].astype(str)))
    return [p for p in PASS_ORDER if p in present] + [p for p in present if p not in PASS_ORDER]


def measured(df: pd.DataFrame) -> pd.DataFrame:
    """Rows with status ok and a positive, finite median time."""
    t = col(df, "time_ms_median")
    return df[(df["status"] == "ok") & (t > 0) & t.notna()]


def max_error(df: pd.DataFrame) -> pd.Series:
    """The largest of err_out, err_dq, err_dk, err_dv per row (NaN where none was checked)."""
    return pd.concat([col(df, c) for c in ERR_COLS], axis=1).max(axis=1, skipna=True)


def series_label(impl: Any, pass_: Any, config: Any = "") -> str:
    """``impl fwd`` or ``impl fwd (causal=True)``."""
    return f"{impl} {pass_}" + (f" ({config})" if config else "")


def default_baseline(df: pd.DataFrame) -> str | None:
    """softmax if it ran, else sdpa, else None."""
    impls = set(df["impl"].astype(str))
    for name in ("softmax", "sdpa"):
        if name in impls:
            return name
    return None
