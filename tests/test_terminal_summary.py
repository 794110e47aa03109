"""The end-of-run summary at 80 columns: impl names whole, one number format, noisy numbers
marked and counted, failures capped at 20 with "N more", strings from results printed as text."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from rich.console import Console

from attnbench.commands.summary import MAX_FAILURES, failure_lines, print_summary
from attnbench.report.frame import NOISY_MARK

NS = [256, 512, 1024, 2048, 4096, 8192, 16384]
IMPLS = ["softmax", "sdpa", "linear-cumsum", "linear-chunked", "linear-causal-cpu", "linear-chunked-triton"]
META = {"timing": {"min_samples": 5}}


def _row(impl: str, pass_: str, n: int, **kw) -> dict:
    row = {
        "point_id": f"{impl}/{pass_}/causal/float32/B1-H4-N{n}-D64-M64",
        "impl": impl,
        "pass": pass_,
        "N": n,
        "causal": True,
        "dtype": "float32",
        "B": 1,
        "H": 4,
        "D": 64,
        "M": 64,
        "impl_params": "{}",
        "family": "softmax" if impl in ("softmax", "sdpa") else "linear",
        "status": "ok",
        "error": None,
        "time_ms_median": 0.0123 * n,
        "peak_mib": 0.004 * n * (n if impl == "softmax" else 1),
        "n_samples": 12,
        "converged": True,
        "correct": True,
        "correctness_error": None,
        "cpu_other_busy_pct": 1.0,
    }
    row.update(kw)
    return row


def seqlen_like() -> pd.DataFrame:
    rows = []
    for impl in IMPLS:
        for pass_ in ("fwdbwd", "fwd"):
            for n in NS:
                if impl == "linear-chunked-triton":
                    rows.append(_row(impl, pass_, n, status="skipped", error="does not run on cpu (devices: cuda)"))
                elif impl == "softmax" and n > 4096:
                    rows.append(_row(impl, pass_, n, status="skipped", error="N exceeds max_N"))
                else:
                    rows.append(_row(impl, pass_, n))
    df = pd.DataFrame(rows)
    busy = (df["impl"] == "sdpa") & (df["N"] == 2048)
    df.loc[busy, "cpu_other_busy_pct"] = 55.0  # another process was busy while these were timed
    df.loc[(df["impl"] == "linear-cumsum") & (df["N"] == 16384), ["converged", "n_samples"]] = [False, 1]
    df.loc[(df["impl"] == "softmax") & (df["N"] == 4096) & (df["pass"] == "fwd"), "status"] = "oom"
    df.loc[(df["impl"] == "linear-chunked") & (df["N"] == 256) & (df["pass"] == "fwd"), "correct"] = False
    return df


def render(df: pd.DataFrame, width: int = 80, meta: dict | None = None) -> str:
    buf = io.StringIO()
    print_summary(df, "runs/x", META if meta is None else meta, Console(file=buf, width=width, highlight=False))
    return buf.getvalue()


def test_summary_fits_80_columns_with_whole_names_and_marks():
    out = render(seqlen_like())
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in out
    for impl in IMPLS[:-1]:
        assert f" {impl} " in out  # whole, never cut
    assert "linear-chunked-triton: does not run on cpu" in out  # ran nowhere: a line, not a row of dashes
    # the N axis split over tables that fit, every N shown
    for n in NS:
        assert f"N={n}" in out
    assert "N=256 to " in out
    # one format: 3 significant digits and a unit, no e-notation
    assert "3.15 ms" in out and "202 ms" in out and "e+" not in out and "e-" not in out
    # noisy numbers marked: sdpa at N=2048 (busy CPU) and linear-cumsum at 16384 (one sample)
    assert f"25.2 ms{NOISY_MARK}" in out and f"202 ms{NOISY_MARK}" in out
    assert "3.15 ms✗" in out and "OOM" in out
    text = " ".join(out.split())  # the count line wraps at 80 columns
    assert "4 of 65 measured points are noisy" in text and "machine busy?" in text
    assert "2 did not reach the noise target" in text and "2 ran while other processes used > 10.0% CPU" in text
    # rows in the suite's order (softmax first), not alphabetical
    assert out.index(" softmax ") < out.index(" sdpa ") < out.index(" linear-cumsum ")


def test_summary_at_200_columns_is_one_table_per_quantity():
    out = render(seqlen_like(), width=200)
    assert "N=256 to" not in out
    assert out.count("median time per call") == 1 and out.count("peak memory") == 1


def test_a_quiet_run_says_none_is_noisy():
    df = seqlen_like()
    df["cpu_other_busy_pct"] = 0.5
    df["converged"], df["n_samples"] = True, 20
    out = render(df)
    assert NOISY_MARK + " " not in out.split("≈ noisy")[0]  # no marked number in the tables
    assert "none of the 65 measured points is noisy" in " ".join(out.split())


def test_failures_stop_at_20_and_say_how_many_more():
    df = pd.DataFrame([_row("softmax", "fwd", n, status="error", error=f"boom {n}") for n in range(1, 31)])
    lines = failure_lines(df)
    assert len(lines) == MAX_FAILURES + 1
    assert lines[-1].strip().startswith("... 10 more")
    out = render(df)
    assert "failed: 30 points" in out and "boom 20" in out and "boom 21" not in out and "10 more" in out


@pytest.mark.parametrize(
    "name",
    ["evil[bold]impl[/bold]", "ansi\x1b[31mred\x1b[0m", "link\x1b]8;;http://x\x07text\x1b]8;;\x07", "two\nlines"],
)
def test_strings_from_results_print_as_text(name):
    df = pd.DataFrame([_row(name, "fwd", 256), _row(name, "fwd", 512, status="error", error=f"{name} failed [red]x")])
    out = render(df, width=120)
    assert "\x1b" not in out and "\x07" not in out
    if "[bold]" in name:
        assert "evil[bold]impl[/bold]" in out and "[red]x" in out  # markup shown, not applied
    if "\n" in name:
        assert "two lines" in out


def test_decode_rows_get_their_own_table():
    df = pd.DataFrame(
        [
            _row(
                "recurrent",
                "decode",
                1280,
                P=256,
                T=1024,
                tokens_per_s=12345.0,
                step_ms_first=0.05,
                step_ms_last=0.06,
                state_mib_last=0.0625,
                decoder="recurrent-state",
            ),
        ]
    )
    out = render(df)
    assert "decode: per generated token" in out and "12.3k" in out and "64.0 KiB" in out


def test_single_call_points_are_not_noisy_unless_the_cpu_was_busy():
    from attnbench.report.frame import noise_reasons

    df = seqlen_like()
    long = (df["impl"] == "linear-cumsum") & (df["N"] == 16384)
    df["single_call"] = long
    why = noise_reasons(df, META)
    assert (why[long] == "").all()  # one sample by design: not noisy on a quiet machine
    df.loc[long, "cpu_other_busy_pct"] = 40.0
    assert noise_reasons(df, META)[long].str.contains("other processes used 40% CPU").all()
    out = render(df.assign(cpu_other_busy_pct=df["cpu_other_busy_pct"].where(~long, 1.0)))
    assert "202 ms¹" in out and "2 points were timed by one call" in " ".join(out.split())


def test_report_without_svg(tmp_path):
    from pathlib import Path

    from typer.testing import CliRunner

    from attnbench.cli import app

    run = Path(__file__).resolve().parent / "fixtures" / "report_run"
    res = CliRunner().invoke(app, ["report", str(run), "--format", "md", "--no-svg", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    charts = tmp_path / "charts"
    assert list(charts.glob("*.png")) and not list(charts.glob("*.svg"))
