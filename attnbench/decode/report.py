"""The decode section of a report: per-step latency and state memory against the step
(log-log), the speedup of linear attention as an RNN at each other decoder's last step, and a
Markdown section with the tables. Reads only the results and steps DataFrames of a run.

Wire into the report with ``decode_section(df, results.load_steps(run_dir), out_dir)``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, cast

SHAPE_KEYS = ["P", "B", "H", "D", "M", "dtype"]
TARGET = "linear-recurrent"


def _ok_decode(results_df: Any) -> Any:
    df = results_df[(results_df["pass"] == "decode") & (results_df["status"] == "ok")]
    return df.astype({"P": int, "T": int})


def _interp_loglog(steps: Any, at: float) -> float | None:
    """The step time at step ``at`` from one point's steps (log-log interpolation); None outside."""
    import numpy as np

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
    import pandas as pd

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
    import pandas as pd

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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


def _fmt(x: Any, spec: str = ".3g") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, spec)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def decode_section(results_df: Any, steps_df: Any, out_dir: Path | str) -> str:
    """Save the decode charts (PNG) in ``out_dir`` and return the section's Markdown ("" when
    the run has no finished decode point)."""
    out = Path(out_dir)
    df = _ok_decode(results_df)
    if df.empty or steps_df is None or steps_df.empty:
        return ""
    out.mkdir(parents=True, exist_ok=True)
    shown = _longest(df)
    label = {r["point_id"]: f"{r['impl']} P={r['P']}" for r in shown.to_dict("records")}
    steps = steps_df[steps_df["point_id"].isin(label)].assign(curve=lambda d: d["point_id"].map(label))
    _plot_steps(
        steps,
        "time_ms",
        "ms per step (median of repeats)",
        "Per-step latency as the context grows",
        out / "decode_latency.png",
    )
    _plot_steps(
        steps, "state_mib", "MiB held (cache / state)", "Decoder state as the context grows", out / "decode_memory.png"
    )
    sp = speedups(results_df, steps_df)
    md = ["## Autoregressive decoding", ""]
    md.append(
        "After a prompt of P tokens, T tokens are generated one at a time. `kv-cache`: softmax attention over a "
        "growing cache of keys and values; `recompute`: no cache, the whole prefix is recomputed every step "
        "(the paper's baseline; only the sampled steps are run, tokens/s integrated from them, marked ~); "
        "`recurrent-state`: linear attention as an RNN (Eq. 16-20), a D x M state and a D normaliser."
    )
    md += ["", "![per-step latency](decode_latency.png)", "", "![state memory](decode_memory.png)", ""]
    rows = []
    for r in df.sort_values(["P", "T", "impl"]).to_dict("records"):
        tps = _fmt(r["tokens_per_s"], ".4g") + ("~" if r["tokens_per_s_method"] == "interpolated" else "")
        rows.append(
            [
                r["impl"],
                r["decoder"],
                str(r["P"]),
                str(r["T"]),
                tps,
                _fmt(r["prefill_ms"]),
                _fmt(r["step_ms_first"]),
                _fmt(r["step_ms_last"]),
                _fmt(r["state_mib_last"]),
                _fmt(r["peak_mib"]),
                _fmt(r["err_out"], ".2e"),
                "yes" if r["correct"] else "**no**",
            ]
        )
    md.append(
        _table(
            [
                "impl",
                "decoder",
                "P",
                "T",
                "tokens/s",
                "prefill ms",
                "step 1 ms",
                "step T ms",
                "state MiB at T",
                "peak MiB",
                "err_out",
                "correct",
            ],
            rows,
        )
    )
    if not sp.empty:
        _plot_speedup(sp, out / "decode_speedup.png")
        md += ["", f"### Speedup of {TARGET}", "", "![speedup](decode_speedup.png)", ""]
        md.append(
            _table(
                [
                    "over",
                    "decoder",
                    "P",
                    "at step",
                    "its ms",
                    f"{TARGET} ms",
                    "speedup (step)",
                    "speedup (tokens/s, same T)",
                ],
                [
                    [
                        r["impl"],
                        r["decoder"],
                        str(r["P"]),
                        str(r["step"]),
                        _fmt(r["other_ms"]),
                        _fmt(r["target_ms"]),
                        _fmt(r["speedup_step"], ".3g") + "x",
                        _fmt(r["speedup_tokens"], ".3g") + ("x" if r["speedup_tokens"] else ""),
                    ]
                    for r in sp.to_dict("records")
                ],
            )
        )
    gr = growth(results_df, steps_df)
    if not gr.empty:
        md += ["", "### Growth of the per-step latency (step T vs step 1024)", ""]
        md.append(
            _table(
                ["impl", "P", "T", "ms at step 1024", "ms at step T", "ratio"],
                [
                    [r["impl"], str(r["P"]), str(r["T"]), _fmt(r["ms@1024"]), _fmt(r["ms@T"]), _fmt(r["ratio"], ".2f")]
                    for r in gr.to_dict("records")
                ],
            )
        )
    return "\n".join(md) + "\n"
