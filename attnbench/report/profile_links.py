"""The run report's pointers from a point worth a look to the commands that profile and
reproduce it.

A point is worth a look when it

- **failed**: status error, oom, timeout or crashed, or it failed correctness;
- is **noisy**: :func:`attnbench.report.frame.noise_reasons` (the one definition);
- is **slow**: its median is at least :data:`SLOW_RATIO` times what its own impl's power law
  predicts at its N. The law is the report's scaling fit (log time against log N per config,
  impl and pass, over N >= 1024 when there are 3 such points: below that the per-call overhead
  dominates); a point outside the fitted range is not judged, nor a series of fewer than 3
  points. An impl that is slow everywhere is a finding of the charts, not of this list: only a
  point off its own line is, which is what a profile explains (a cache cliff, a bad chunk size,
  a descheduled thread).

Pure pandas; no torch.
"""

from __future__ import annotations

import math
import shlex
from typing import Any

import pandas as pd

from attnbench.point import FAILED_STATUS_NAMES
from attnbench.report.analysis import FIT_MIN_POINTS, fit_loglog, fit_range
from attnbench.report.frame import col, measured, noise_reasons, with_config

SLOW_RATIO = 1.5
COLUMNS = ["point_id", "impl", "pass", "N", "why"]


def slow_reasons(df: pd.DataFrame) -> pd.Series:
    """``1.8× its fitted N^1.03 line`` for each point at least :data:`SLOW_RATIO` times above
    its series' fitted power law, else ''."""
    why = pd.Series("", index=df.index, dtype=object)
    data = with_config(measured(df).reset_index(names="_row"))
    data = data.assign(_t=col(data, "time_ms_median"))
    for _key, grp in data.groupby(["config", "impl", "pass"], sort=False):
        by_n = grp.groupby("N")["_t"].median()
        ns = fit_range(sorted(by_n.index))
        if len(ns) < FIT_MIN_POINTS:
            continue
        slope, c, _r2 = fit_loglog(ns, by_n.loc[ns].to_numpy())
        if math.isnan(slope):
            continue
        for rec in grp[grp["N"].isin(ns)].to_dict("records"):
            ratio = rec["_t"] / math.exp(c + slope * math.log(rec["N"]))
            if ratio >= SLOW_RATIO:
                why.loc[rec["_row"]] = f"{ratio:.1f}× its fitted N^{slope:.2f} line"
    return why


def flagged(df: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """The failed, slow or noisy points (fwd, bwd, fwdbwd), with why, sorted by impl, pass, N."""
    if not len(df):
        return pd.DataFrame(columns=COLUMNS)
    df = df[df["pass"].astype(str) != "decode"]
    status = df["status"].astype(str)
    incorrect = df["correct"].astype(object).eq(False) if "correct" in df.columns else pd.Series(False, index=df.index)
    parts = pd.DataFrame(index=df.index)
    err = df["error"].astype(object) if "error" in df.columns else pd.Series(None, index=df.index, dtype=object)
    parts["failed"] = [
        f"{s}: {_short(e)}" if s in FAILED_STATUS_NAMES else "" for s, e in zip(status, err, strict=True)
    ]
    cerr = df["correctness_error"] if "correctness_error" in df.columns else pd.Series(None, index=df.index)
    parts["incorrect"] = [f"incorrect: {_short(e)}" if bad else "" for bad, e in zip(incorrect, cerr, strict=True)]
    parts["slow"] = "slow: " + slow_reasons(df).reindex(df.index).fillna("")
    parts.loc[parts["slow"] == "slow: ", "slow"] = ""
    noisy = noise_reasons(df, meta).reindex(df.index).fillna("")
    parts["noisy"] = ["noisy: " + n if n else "" for n in noisy]
    why = parts.apply(lambda r: "; ".join(x for x in r if x), axis=1) if len(parts) else pd.Series(dtype=object)
    out = df.assign(why=why)[why.astype(bool)]
    out = with_config(out)
    return out[COLUMNS].reset_index(drop=True)


def kinds(pts: pd.DataFrame) -> dict[str, int]:
    """How many of the :func:`flagged` points are failed (or incorrect), slow and noisy (a point
    can be several)."""
    why = pts["why"].astype(str)
    return {
        "failed": int(why.str.contains(r"(?:^|; )(?:error|oom|timeout|crashed|incorrect):", regex=True).sum()),
        "slow": int(why.str.contains(r"(?:^|; )slow:", regex=True).sum()),
        "noisy": int(why.str.contains(r"(?:^|; )noisy:", regex=True).sum()),
    }


def profile_command(run_dir: str, point_id: str) -> str:
    """``attnbench profile RUN_DIR POINT_ID``, quoted for a POSIX shell."""
    return shlex.join(["attnbench", "profile", run_dir, point_id])


def repro_command(run_dir: str, point_id: str) -> str:
    """``attnbench repro RUN_DIR POINT_ID`` (the bundle goes to RUN_DIR/repro/<point>/)."""
    return shlex.join(["attnbench", "repro", run_dir, point_id])


def _short(text: Any, limit: int = 120) -> str:
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return ""
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"
