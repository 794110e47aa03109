"""Shared views of a results DataFrame for the report: which rows are measurements, which are
failures, which are noisy, which family draws each impl, and which columns tell one series
(impl, pass, config) apart.

Pure pandas; every function tolerates columns that an older or newer run lacks.

:func:`noisy` is THE definition of a noisy point (the report, the terminal summary and
``compare`` should all call it rather than restate it); :data:`NOISY_MARK` is how a noisy
number is marked in text.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

PASS_ORDER = ("fwd", "bwd", "fwdbwd")
# Columns that, when they vary within a run, split one impl's points into separate series.
CONFIG_KEYS = ("causal", "dtype", "B", "H", "D", "M", "impl_params")
NOT_OK = ("error", "crashed", "oom", "timeout", "skipped")
ERR_COLS = ("err_out", "err_dq", "err_dk", "err_dv")

# A point is noisy when another process took more than this share of the machine's CPU time
# while the point was timed (column ``cpu_other_busy_pct``: 100 = every core busy with other
# work). 10 % is about one core in ten: a shell, an editor or the desktop stay well under it
# (1-3 % on the 2-core development machine), another benchmark or a build goes far over it.
NOISY_CPU_BUSY_PCT = 10.0
NOISY_MARK = "≈"  # after a noisy number in text tables; hollow markers in charts

# The impls drawn as family "kernel" (compiled: C++/CUDA/Triton) rather than their registry
# family. An explicit list, never guessed from a name; a run can also say so itself with a
# boolean ``compiled`` column (proposed: ``ImplSpec.compiled``, written by the worker).
KERNEL_IMPLS = frozenset({"linear-causal-cpu", "linear-causal-cuda", "linear-chunked-triton"})
FAMILY_ORDER = ("softmax", "linear", "kernel", "other")


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
    """sdpa if it ran ok somewhere, else softmax, else None."""
    impls = set(measured(df)["impl"].astype(str))
    for name in ("sdpa", "softmax"):
        if name in impls:
            return name
    return None


def families(df: pd.DataFrame) -> pd.Series:
    """The family each row is drawn as: ``kernel`` for compiled impls (:data:`KERNEL_IMPLS`, or
    a true ``compiled`` column), else the registry's ``family`` column (softmax or linear),
    else ``other`` (a run without the column; the family is never guessed from the name)."""
    fam = df["family"].astype(object) if "family" in df.columns else pd.Series(None, index=df.index, dtype=object)
    fam = fam.where(fam.isin(("softmax", "linear")), "other")
    kernel = df["impl"].astype(str).isin(KERNEL_IMPLS)
    if "compiled" in df.columns:
        kernel |= df["compiled"].astype(object).eq(True)
    return fam.where(~kernel, "kernel")


def min_samples(meta: dict[str, Any]) -> int | None:
    """The suite's ``[timing] min_samples`` (None when the metadata does not say)."""
    timing = meta.get("timing") if isinstance(meta, dict) else None
    value = timing.get("min_samples") if isinstance(timing, dict) else None
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def noise_reasons(df: pd.DataFrame, meta: dict[str, Any]) -> pd.Series:
    """Why each row's number is noisy ('' when it is not), for rows with status ok:

    - ``did not converge``: ``converged`` is False (the timer hit its time cap before the
      median's relative noise met the suite's target);
    - ``3 of 5 samples``: ``n_samples`` < the suite's ``min_samples`` (not for decode points,
      whose n_samples counts sampled steps);
    - ``other processes used 35% CPU``: ``cpu_other_busy_pct`` > :data:`NOISY_CPU_BUSY_PCT`.

    A single-call point (``single_call``: the suite measures a call of ``single_call_s`` or longer
    by that one call) has one sample and no noise estimate by design: only a busy CPU makes it
    noisy. Missing columns or values (older runs) never make a point noisy.
    """
    if not len(df):
        return pd.Series("", index=df.index, dtype=object)
    ok = df["status"].astype(str).eq("ok") if "status" in df.columns else pd.Series(True, index=df.index)
    parts: list[pd.Series] = []
    single = (
        df["single_call"].astype(object).eq(True) if "single_call" in df.columns else pd.Series(False, index=df.index)
    )
    if "converged" in df.columns:
        unconverged = df["converged"].astype(object).eq(False) & ~single
        parts.append(pd.Series("", index=df.index).where(~unconverged, "did not converge"))
    need = min_samples(meta)
    if need is not None and "n_samples" in df.columns:
        n = col(df, "n_samples")
        few = (n < need) & ~df["pass"].astype(str).eq("decode") & ~single
        parts.append(pd.Series("", index=df.index).where(~few, n.map(lambda v: f"{v:.0f} of {need} samples")))
    if "cpu_other_busy_pct" in df.columns:
        busy = col(df, "cpu_other_busy_pct")
        parts.append(
            pd.Series("", index=df.index).where(
                ~(busy > NOISY_CPU_BUSY_PCT), busy.map(lambda v: f"other processes used {v:.0f}% CPU")
            )
        )
    if not parts:
        return pd.Series("", index=df.index, dtype=object)
    joined = pd.concat(parts, axis=1).apply(lambda r: "; ".join(x for x in r if x), axis=1)
    return joined.where(ok, "").astype(object)


def noisy(df: pd.DataFrame, meta: dict[str, Any]) -> pd.Series:
    """True for each ok row whose number is noisy (see :func:`noise_reasons`), else False."""
    return noise_reasons(df, meta).astype(str).ne("")
