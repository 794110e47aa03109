"""The decode section of a report: per-step latency and state memory against the step
(log-log), the speedup of linear attention as an RNN at each other decoder's last step, and
the tables, as a report-model Section. Reads only the results and steps DataFrames of a run
(``results.load_steps(run_dir)``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from attnbench.fmt import fmt_err, fmt_mib, fmt_ms, fmt_si, fmt_speedup
from attnbench.report.model import Cell, Chart, Note, Section, Table
from attnbench.report.tables import text

SHAPE_KEYS = ["P", "B", "H", "D", "M", "dtype"]
TARGET = "linear-recurrent"


def _ok_decode(results_df: Any) -> Any:
    df = results_df[(results_df["pass"] == "decode") & (results_df["status"] == "ok")]
    return df.astype({"P": int, "T": int})


def _interp_loglog(steps: Any, at: float) -> float | None:
    """The step time at step ``at`` from one point's steps (log-log interpolation); None outside."""
    xs, ys = steps["step"].to_numpy(float), steps["time_ms"].to_numpy(float)
    if len(xs) == 0 or at < xs.min() or at > xs.max():
        return None
    return float(np.exp(np.interp(math.log(at), np.log(xs), np.log(ys))))


def speedups(results_df: Any, steps_df: Any, target: str = TARGET) -> Any:
    """Speedup of ``target`` over every other decode point of the same shape and prompt:

    - ``speedup_step``: per-step latency at the other point's last step T: the target's point
      with the same T, else its longest run interpolated log-log at step T;
    - ``speedup_tokens``: tokens/s ratio against the target point with the same T, if any.
    """
    df = _ok_decode(results_df)
    out = []
    targets = df[df["impl"] == target]
    for r in df[df["impl"] != target].to_dict("records"):
        same = targets
        for key in SHAPE_KEYS:
            same = same[same[key] == r[key]]
        if same.empty:
            continue
        same_t = same[same["T"] == r["T"]]
        if len(same_t):  # the target's own last step, measured the same way
            t_ms: float | None = float(same_t["step_ms_last"].iloc[0])
        else:
            longest = same.sort_values("T").iloc[-1]
            t_ms = _interp_loglog(steps_df[steps_df["point_id"] == longest["point_id"]], r["T"])
        tps = float(same_t["tokens_per_s"].iloc[0]) / r["tokens_per_s"] if len(same_t) else None
        out.append(
            {
                "impl": r["impl"],
                "decoder": r["decoder"],
                "P": r["P"],
                "step": r["T"],
                "context": r["P"] + r["T"],
                "other_ms": r["step_ms_last"],
                "target_ms": t_ms,
                "speedup_step": r["step_ms_last"] / t_ms if t_ms else None,
                "speedup_tokens": tps,
            }
        )
    return pd.DataFrame(out)


def growth(results_df: Any, steps_df: Any, at: int = 1024) -> Any:
    """Per point: step time at step ``at`` and at its last step, and their ratio (flat = ~1)."""
    rows = []
    for r in _ok_decode(results_df).to_dict("records"):
        st = steps_df[steps_df["point_id"] == r["point_id"]]
        base = st[st["step"] == at]
        if base.empty or r["T"] <= at:
            continue
        b = float(base["time_ms"].iloc[0])
        rows.append(
            {
                "impl": r["impl"],
                "P": r["P"],
                "T": r["T"],
                f"ms@{at}": b,
                "ms@T": r["step_ms_last"],
                "ratio": r["step_ms_last"] / b,
            }
        )
    return pd.DataFrame(rows)


def _longest(df: Any) -> Any:
    """The longest-T point of each (impl, shape): the curves to draw."""
    return df.sort_values("T").groupby(["impl", *SHAPE_KEYS], dropna=False).tail(1)


def _plot_steps(steps: Any, y: str, ylabel: str, title: str, path: Path) -> None:
    import matplotlib  # optional dependencies: matplotlib, seaborn (only to draw)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional, as above; after use("Agg")
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=steps, x="step", y=y, hue="curve", style="curve", markers=True, dashes=False, ax=ax)
    ax.set(xscale="log", yscale="log", xlabel="generated token (step)", ylabel=ylabel, title=title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_speedup(sp: Any, path: Path) -> None:
    import matplotlib  # optional dependencies: matplotlib, seaborn (only to draw)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # optional, as above; after use("Agg")
    import seaborn as sns

    data = sp.dropna(subset=["speedup_step"]).assign(over=lambda d: d["impl"] + " @" + d["step"].astype(str))
    fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(data))))
    sns.barplot(data=data, y="over", x="speedup_step", hue="decoder", dodge=False, ax=ax)
    ax.set(xscale="log", xlabel=f"{TARGET} speedup in per-step latency at that step (x)", ylabel="")
    for bar in cast(list[Any], ax.patches):  # a bar's width is its value: no reliance on seaborn's patch order
        if bar.get_width() > 0:
            ax.text(
                bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {bar.get_width():.3g}x", va="center", fontsize=8
            )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


INTRO = (
    "After a prompt of P tokens, T tokens are generated one at a time. kv-cache: softmax attention over a "
    "growing cache of keys and values; recompute: no cache, the whole prefix is recomputed every step "
    "(the paper's baseline; only the sampled steps are run, tokens/s integrated from them, marked ~); "
    "recurrent-state: linear attention as an RNN (Eq. 16-20), a D x M state and a D normaliser."
)


def _points_table(df: Any) -> Table:
    rows: list[list[str | Cell]] = []
    for r in df.sort_values(["P", "T", "impl"]).to_dict("records"):
        tps = fmt_si(r["tokens_per_s"]) + ("~" if r["tokens_per_s_method"] == "interpolated" else "")
        rows.append(
            [
                text(r["impl"]),
                text(r["decoder"]),
                str(r["P"]),
                str(r["T"]),
                tps,
                fmt_ms(r["prefill_ms"]),
                fmt_ms(r["step_ms_first"]),
                fmt_ms(r["step_ms_last"]),
                fmt_mib(r["state_mib_last"]),
                fmt_mib(r["peak_mib"]),
                fmt_err(r["err_out"]),
                "yes" if r["correct"] else Cell("no", "incorrect"),
            ]
        )
    headers = [
        "impl",
        "decoder",
        "P",
        "T",
        "tokens/s",
        "prefill",
        "step 1",
        "step T",
        "state at T",
        "peak memory",
        "err out",
        "correct",
    ]
    return Table("decode-points", "Decode points", headers, rows, numeric=(2, 3, 4, 5, 6, 7, 8, 9, 10))


def _speedup_table(sp: Any) -> Table:
    rows: list[list[str | Cell]] = [
        [
            text(r["impl"]),
            text(r["decoder"]),
            str(r["P"]),
            str(r["step"]),
            fmt_ms(r["other_ms"]),
            fmt_ms(r["target_ms"]),
            fmt_speedup(r["speedup_step"]),
            fmt_speedup(r["speedup_tokens"], missing=""),
        ]
        for r in sp.to_dict("records")
    ]
    headers = [
        "over",
        "decoder",
        "P",
        "at step",
        "its step",
        f"{TARGET} step",
        "speedup (step)",
        "speedup (tokens/s, same T)",
    ]
    return Table("decode-speedup", f"Speedup of {TARGET}", headers, rows, numeric=(2, 3, 4, 5, 6, 7))


def _growth_table(gr: Any) -> Table:
    rows: list[list[str | Cell]] = [
        [text(r["impl"]), str(r["P"]), str(r["T"]), fmt_ms(r["ms@1024"]), fmt_ms(r["ms@T"]), fmt_speedup(r["ratio"])]
        for r in gr.to_dict("records")
    ]
    return Table(
        "decode-growth",
        "Growth of the per-step latency (step T vs step 1024)",
        ["impl", "P", "T", "step 1024", "step T", "ratio"],
        rows,
        "flat = about 1×: the step time does not grow with the context",
        collapsed=True,
        numeric=(1, 2, 3, 4, 5),
    )


def decode_section(results_df: Any, steps_df: Any, out_dir: Path | str) -> Section | None:
    """Save the decode charts (PNG) in ``out_dir`` and return the report section (None when the
    run has no finished decode point)."""
    out = Path(out_dir)
    if steps_df is None or steps_df.empty or results_df is None or "P" not in results_df:
        return None
    df = _ok_decode(results_df)
    if df.empty:
        return None
    out.mkdir(parents=True, exist_ok=True)
    shown = _longest(df)
    label = {r["point_id"]: f"{r['impl']} P={r['P']}" for r in shown.to_dict("records")}
    steps = steps_df[steps_df["point_id"].isin(label)].assign(curve=lambda d: d["point_id"].map(label))
    lat, mem = out / "decode_latency.png", out / "decode_memory.png"
    _plot_steps(steps, "time_ms", "ms per step (median of repeats)", "Per-step latency as the context grows", lat)
    _plot_steps(steps, "state_mib", "MiB held (cache / state)", "Decoder state as the context grows", mem)
    blocks: list[Any] = [
        Note(INTRO),
        Chart("decode_latency", "Per-step latency", "per-step latency against the generated token, log-log", lat),
        Chart("decode_memory", "State memory", "bytes of the KV cache or RNN state held after each step", mem),
        _points_table(df),
    ]
    sp = speedups(results_df, steps_df)
    if not sp.empty:
        path = out / "decode_speedup.png"
        _plot_speedup(sp, path)
        blocks += [
            Chart("decode_speedup", f"Speedup of {TARGET}", "per-step latency ratio at each point's last step", path)
        ]
        blocks.append(_speedup_table(sp))
    gr = growth(results_df, steps_df)
    if not gr.empty:
        blocks.append(_growth_table(gr))
    return Section("decode", "Autoregressive decoding", blocks)
