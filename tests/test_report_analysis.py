"""attnbench.report.analysis on synthetic results with known answers."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from attnbench.report import analysis as an
from attnbench.report.frame import config_keys, default_baseline

NS = [256, 512, 1024, 2048, 4096, 8192]


def frame(laws: dict[str, tuple[str, object]], ns: list[int] = NS, pass_: str = "fwd", **extra: object) -> pd.DataFrame:
    """One ok row per (impl, N) with time_ms_median = law(N); laws: impl -> (family, law)."""
    rows = []
    for impl, (family, law) in laws.items():
        for n in ns:
            t = law(n)  # type: ignore[operator]
            rows.append(
                {
                    "impl": impl,
                    "family": family,
                    "pass": pass_,
                    "N": n,
                    "B": 1,
                    "status": "ok",
                    "time_ms_median": t,
                    "peak_mib": t / 10,
                    "causal": True,
                    "dtype": "float32",
                    "impl_params": "{}",
                    **extra,
                }
            )
    return pd.DataFrame(rows)


def test_fit_loglog_exact_power_law() -> None:
    slope, c, r2 = an.fit_loglog(NS, [3.0 * n**2 for n in NS])
    assert slope == pytest.approx(2.0, abs=1e-12)
    assert math.exp(c) == pytest.approx(3.0, rel=1e-9)
    assert r2 == pytest.approx(1.0, abs=1e-12)


def test_fit_loglog_degenerate() -> None:
    assert math.isnan(an.fit_loglog([1024], [1.0])[0])
    assert math.isnan(an.fit_loglog([256, 512], [5.0, 5.0])[2])  # constant y: nothing to explain


def test_fit_range_prefers_upper_part() -> None:
    assert an.fit_range([256, 512, 1024, 2048, 4096]) == [1024, 2048, 4096]
    assert an.fit_range([256, 512, 1024, 2048]) == [256, 512, 1024, 2048]  # only 2 at >= 1024


def test_scaling_exponents_and_range() -> None:
    df = frame(
        {
            "softmax": ("softmax", lambda n: 1e-6 * n**2 + 50.0 * (n == 256)),  # overhead at small N
            "linear-chunked": ("linear", lambda n: 0.01 * n),
        }
    )
    fits = an.scaling(df).set_index("impl")
    assert f"{fits.loc['softmax', 'exponent']:.3f}" == "2.000"
    assert f"{fits.loc['linear-chunked', 'exponent']:.3f}" == "1.000"
    assert fits.loc["softmax", "n_lo"] == 1024 and fits.loc["softmax", "n_hi"] == 8192
    assert fits.loc["softmax", "points"] == 4
    assert "N < 1024 left out" in fits.loc["softmax", "note"]
    mem = an.scaling(df, "peak_mib").set_index("impl")
    assert mem.loc["linear-chunked", "exponent"] == pytest.approx(1.0)


def test_scaling_flags_a_poor_fit() -> None:
    df = frame({"x": ("linear", lambda n: {1024: 1.0, 2048: 10.0, 4096: 2.0, 8192: 20.0}.get(n, 1.0))})
    fit = an.scaling(df).iloc[0]
    assert fit["r2"] < an.POOR_R2
    assert "poor fit" in fit["note"]


def test_crossover_interpolated_in_log_space() -> None:
    # ratio chunked/softmax = 1000/N: crosses 1 at N=1000, between measured 512 and 1024
    df = frame(
        {
            "softmax": ("softmax", lambda n: 1e-5 * n**2),
            "sdpa": ("softmax", lambda n: 5e-6 * n**2),
            "linear-chunked": ("linear", lambda n: 1e-2 * n),
        }
    )
    x = an.crossovers(df).set_index("versus")
    assert x.loc["softmax", "crossover_n"] == pytest.approx(1000.0, rel=1e-9)
    assert x.loc["sdpa", "crossover_n"] == pytest.approx(2000.0, rel=1e-9)
    assert "between measured 512 and 1024" in x.loc["softmax", "verdict"]
    assert set(x["impl"]) == {"linear-chunked"}  # softmax-family impls are not compared


def test_crossover_verdicts() -> None:
    assert an.crossover_n([256, 512], [0.5, 0.4])[1] == "faster at every measured N (256–512)"
    assert an.crossover_n([256, 512], [1.5, 1.4])[1] == "never within the measured range (256–512)"
    n, verdict = an.crossover_n([256, 512, 1024], [0.9, 1.1, 1.2])
    assert math.isnan(n) and "not at the largest common N (1024)" in verdict
    n, _ = an.crossover_n([256, 1024], [4.0, 0.25])
    assert n == pytest.approx(512.0)  # geometric midpoint


def test_crossover_only_on_common_n() -> None:
    df = pd.concat(
        [
            frame({"softmax": ("softmax", lambda n: 1e-5 * n**2)}, ns=[256, 512, 1024]),
            frame({"linear-cumsum": ("linear", lambda n: 1e-2 * n)}),
        ]
    )
    x = an.crossovers(df).iloc[0]
    assert x["verdict"].startswith("faster from N ≈ 1000") and "512 and 1024" in x["verdict"]


def test_frontier_reports_first_failure_above_last_ok() -> None:
    df = frame({"softmax": ("softmax", lambda n: 1.0), "sdpa": ("softmax", lambda n: 1.0)})
    df.loc[(df["impl"] == "softmax") & (df["N"] >= 4096), ["status", "error"]] = ["oom", "out of memory"]
    df.loc[(df["impl"] == "softmax") & (df["N"] == 8192), "status"] = "skipped"
    f = an.frontier(df).set_index("impl")
    assert f.loc["softmax", "largest_ok_n"] == 2048
    assert f.loc["softmax", "stopped_at_n"] == 4096
    assert (f.loc["softmax", "status"], f.loc["softmax", "reason"]) == ("oom", "out of memory")
    assert f.loc["sdpa", "status"] == "ran every N" and math.isnan(f.loc["sdpa", "stopped_at_n"])


def test_correctness_summary() -> None:
    df = frame({"a": ("linear", lambda n: 1.0)}, ns=[256, 512], pass_="fwdbwd")
    df["err_out"] = [1e-7, 0.5]
    df["err_dq"] = [2e-7, 3e-7]
    df["err_dk"] = [1e-6, None]
    df["tolerance"] = 1e-3
    df["correct"] = [True, False]
    df["correctness_error"] = [None, "out: 0.5 > 1e-3"]
    c = an.correctness(df).iloc[0]
    assert (c["checked"], c["failed"]) == (2, 1)
    assert c["max_err_out"] == 0.5 and c["max_err_grad"] == 1e-6
    assert c["first_failure"] == "N=512: out: 0.5 > 1e-3"
    f = an.failures(df)
    assert list(f["status"]) == ["incorrect"]


def test_missing_optional_columns_are_fine() -> None:
    df = frame({"softmax": ("softmax", lambda n: n**2)}).drop(columns=["peak_mib", "family"])
    a = an.analyse(df, {})
    assert len(a.time_fits) == 1 and len(a.memory_fits) == 0
    assert a.correctness.iloc[0]["checked"] == 0


def test_config_keys_ignore_per_impl_params() -> None:
    df = frame({"a": ("linear", lambda n: 1.0), "b": ("linear", lambda n: 1.0)})
    df.loc[df["impl"] == "b", "impl_params"] = '{"chunk_size": 64}'
    assert config_keys(df) == []
    df.loc[df.index[:2], "causal"] = False
    assert config_keys(df) == ["causal"]


def test_default_baseline_and_environment() -> None:
    assert default_baseline(frame({"sdpa": ("softmax", lambda n: 1.0)})) == "sdpa"
    assert default_baseline(frame({"x": ("linear", lambda n: 1.0)})) is None
    env = dict(an.environment({"suite": {"name": "seqlen"}, "device": "cpu", "env": {"torch": "2.13", "gpu": None}}))
    assert env == {"suite": "seqlen", "device": "cpu", "torch": "2.13"}


def test_noisy_points_and_their_reasons() -> None:
    from attnbench.report.frame import NOISY_CPU_BUSY_PCT, noise_reasons, noisy

    df = frame({"a": ("linear", lambda n: 1.0)}).head(5).reset_index(drop=True)
    df["converged"] = [True, False, True, None, True]
    df["n_samples"] = [5, 5, 2, 5, 5]
    df["cpu_other_busy_pct"] = [0.0, 0.0, 0.0, NOISY_CPU_BUSY_PCT + 1, NOISY_CPU_BUSY_PCT]
    df.loc[4, "status"] = "error"  # no number: never noisy
    meta = {"timing": {"min_samples": 5}}
    assert list(noisy(df, meta)) == [False, True, True, True, False]
    assert list(noise_reasons(df, meta)) == [
        "",
        "did not converge",
        "2 of 5 samples",
        "other processes used 11% CPU",
        "",
    ]
    # without the suite's min_samples, the sample count is not judged; older runs without the columns: none noisy
    assert list(noisy(df, {})) == [False, True, False, True, False]
    assert not noisy(df.drop(columns=["converged", "n_samples", "cpu_other_busy_pct"]), meta).any()
    decode = df.assign(**{"pass": "decode"})  # n_samples counts sampled steps there
    assert list(noise_reasons(decode, meta))[2] == ""


def test_families_never_guess_from_the_name() -> None:
    from attnbench.report.frame import families

    df = pd.DataFrame(
        {
            "impl": ["softmax", "linear-chunked", "linear-causal-cpu", "linear-odd", "plugin-x", "mine"],
            "family": ["softmax", "linear", "linear", None, "linear", "linear"],
            "compiled": [False, False, False, False, False, True],
        }
    )
    assert list(families(df)) == ["softmax", "linear", "kernel", "other", "linear", "kernel"]
    assert list(families(df.drop(columns=["family", "compiled"]))) == [
        "other",
        "other",
        "kernel",
        "other",
        "other",
        "other",
    ]


def test_default_baseline_prefers_sdpa() -> None:
    both = pd.concat([frame({"softmax": ("softmax", lambda n: 1.0)}), frame({"sdpa": ("softmax", lambda n: 1.0)})])
    assert default_baseline(both) == "sdpa"
    assert default_baseline(frame({"softmax": ("softmax", lambda n: 1.0)})) == "softmax"
