"""The decode pass: decoders against the full causal forward, state memory, suite keys, CLI."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import torch

from attnbench.errors import UserError
from attnbench.impls import registry
from attnbench.impls.registry import get_decoder
from attnbench.measure.correctness import rel_error
from attnbench.measure.passes import measure_point
from attnbench.measure.passes.decode import sampled_steps
from attnbench.point import Point, RunOptions, TimingConfig
from attnbench.results import STEP_COLUMNS
from attnbench.suite import expand, load_suite, parse_set, parse_suite
from tests.helpers import rand_qkvg

REPO = Path(__file__).resolve().parents[1]
DECODERS = ["softmax", "sdpa", "linear-recurrent", "linear-chunked", "softmax-recompute", "linear-chunked-recompute"]


def decode_all(name: str, q, k, v, p: int) -> torch.Tensor:
    """Prefill p tokens, then step through the rest; the outputs of every position, [B, H, N, M]."""
    b, h, n, d = q.shape
    dec = get_decoder(name).factory(b, h, d, v.shape[-1], q.dtype, "cpu", {})
    outs = [dec.prefill(q[:, :, :p], k[:, :, :p], v[:, :, :p])]
    outs += [dec.step(q[:, :, i], k[:, :, i], v[:, :, i]).unsqueeze(2) for i in range(p, n)]
    return torch.cat(outs, dim=2)


@pytest.mark.parametrize("name", DECODERS)
@pytest.mark.parametrize("p", [0, 7])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_steps_equal_the_full_causal_forward_in_float64(name, p, seed):
    q, k, v, _ = rand_qkvg(2, 3, 23, 8, 5, seed, torch.float64)
    ref = registry.get(registry.get(get_decoder(name).impl).reference_name).fn(q, k, v, causal=True)
    got = decode_all(name, q, k, v, p)
    assert got.shape == ref.shape
    assert rel_error(got, ref) < 1e-12


@pytest.mark.parametrize("name", ["softmax", "linear-recurrent", "sdpa-recompute"])
def test_snapshot_restore_repeats_a_step_exactly(name):
    q, k, v, _ = rand_qkvg(1, 2, 300, 8, 4, 3)  # past the cache's first capacity (256)
    dec = get_decoder(name).factory(1, 2, 8, 4, torch.float32, "cpu", {})
    dec.prefill(q[:, :, :255], k[:, :, :255], v[:, :, :255])
    snap = dec.snapshot()
    first = dec.step(q[:, :, 255], k[:, :, 255], v[:, :, 255])
    after = dec.state_bytes()
    dec.restore(snap)
    again = dec.step(q[:, :, 255], k[:, :, 255], v[:, :, 255])
    assert torch.equal(first, again) and dec.state_bytes() == after
    nxt = dec.step(q[:, :, 256], k[:, :, 256], v[:, :, 256])
    assert torch.allclose(nxt, decode_all(name, q[:, :, :257], k[:, :, :257], v[:, :, :257], 0)[:, :, -1], atol=1e-5)


def test_recurrent_state_is_constant_and_kv_cache_grows():
    q, k, v, _ = rand_qkvg(1, 2, 600, 16, 8, 0)
    sizes: dict[str, list[int]] = {}
    for name in ("linear-recurrent", "softmax"):
        dec = get_decoder(name).factory(1, 2, 16, 8, torch.float32, "cpu", {})
        dec.prefill(q[:, :, :10], k[:, :, :10], v[:, :, :10])
        sizes[name] = []
        for i in range(10, 600):
            dec.step(q[:, :, i], k[:, :, i], v[:, :, i])
            sizes[name].append(dec.state_bytes()[0])
    assert len(set(sizes["linear-recurrent"])) == 1
    assert sizes["linear-recurrent"][0] == 2 * (16 * 8 + 16) * 4  # B H (D M + D) fp32
    kv = sizes["softmax"]
    assert kv == [(11 + i) * 2 * (16 + 8) * 4 for i in range(590)]  # one K and V row per token


def test_sampled_steps_are_logarithmic_and_end_at_t():
    assert sampled_steps(1) == [1]
    assert sampled_steps(16) == [1, 2, 3, 4, 6, 8, 12, 16]
    assert sampled_steps(20)[-2:] == [16, 20]
    assert len(sampled_steps(16384)) == 28


def test_measure_decode_row_and_steps():
    point = Point("linear-recurrent", "decode", True, "float32", B=1, H=2, N=12, D=8, M=4, P=3, T=9)
    options = RunOptions("cpu", 1, TimingConfig.from_table({"min_samples": 2}))
    rec = measure_point(point, options)
    row = rec.row
    assert row["status"] == "ok" and row["correct"], row
    assert [s["step"] for s in rec.steps] == sampled_steps(9)
    assert all(s["err_out"] < 1e-5 for s in rec.steps)
    assert row["tokens_per_s_method"] == "measured" and len(rec.samples) == 9
    skipped = measure_point(replace(point, causal=False), RunOptions("cpu", 1)).row
    assert skipped["status"] == "skipped" and "causal only" in skipped["error"]


DECODE_SUITE = """
name = "d"
[params]
impl = ["linear-recurrent", "softmax", "sdpa-recompute"]
pass = "decode"
P = {P}
T = {T}
B = 1
H = 2
D = 8
M = 4
[timing]
min_samples = 2
timeout_s = 60
"""


def test_suite_p_t_validation_and_expansion():
    pts = expand(parse_suite(DECODE_SUITE.format(P="[0, 4]", T=12), "d.toml"), "cpu")
    assert {(p.P, p.N) for p in pts} == {(0, 12), (4, 16)}
    assert pts[0].point_id == "linear-recurrent/decode/causal/float32/B1-H2-N12-D8-M4-P0-T12"
    for bad, msg in (
        ("P = -1", "P = -1: expected an integer >= 0"),
        ("T = 0", "T = 0: expected an integer >= 1"),
        ('T = "x"', "T = 'x': expected an integer >= 1"),
    ):
        text = DECODE_SUITE.format(P=0, T=8).replace("P = 0" if bad.startswith("P") else "T = 8", bad)
        with pytest.raises(UserError, match=msg):
            parse_suite(text, "d.toml")
    with pytest.raises(UserError, match="T is missing"):
        parse_suite(DECODE_SUITE.format(P=0, T=8).replace("T = 8", ""), "d.toml")
    with pytest.raises(UserError, match="T expects integers"):
        parse_set("T=abc")
    # other passes ignore P and T: ids unchanged
    fwd = expand(parse_suite(DECODE_SUITE.format(P=0, T=8).replace('"decode"', '"fwd"\nN = 16'), "d.toml"), "cpu")
    assert fwd[0].point_id == "linear-recurrent/fwd/causal/float32/B1-H2-N16-D8-M4" and fwd[0].P is None


def test_shipped_decode_suite_runs_linear_to_16384_and_caps_softmax():
    pts = {p.point_id.split("/")[0] + f"@{p.T}": p for p in expand(load_suite("decode"), "cpu")}
    assert not pts["linear-recurrent@16384"].skip
    assert pts["softmax-recompute@16384"].skip and not pts["softmax-recompute@2048"].skip


def test_unknown_decoder_is_a_user_error():
    with pytest.raises(UserError, match="no decoder for pass decode"):
        get_decoder("linear-cumsum")
    assert get_decoder("linear-cumsum-recompute").kind == "recompute"


def attnbench(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_decode_pass_through_the_cli(tmp_path):
    suite = tmp_path / "d.toml"
    suite.write_text(DECODE_SUITE.format(P="[0, 5]", T=20))
    res = attnbench("run", "--suite", str(suite), "--out", str(tmp_path / "run"), "--no-report", "--threads", "1")
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(tmp_path / "run" / "results.parquet")
    steps = pd.read_parquet(tmp_path / "run" / "steps.parquet")
    assert (df["status"] == "ok").all() and df["correct"].all()
    assert list(steps.columns) == list(STEP_COLUMNS)
    assert set(steps["point_id"]) == set(df["point_id"])
    for col in ("tokens_per_s", "step_ms_first", "step_ms_last", "state_mib_last", "P", "T", "decoder"):
        assert df[col].notna().all(), col
    assert "tok/s" in res.stdout

    from attnbench.report.decode import decode_section, speedups

    section = decode_section(df, steps, tmp_path / "report")
    assert section is not None and section.title == "Autoregressive decoding"
    assert "Speedup of linear-recurrent" in [getattr(b, "title", "") for b in section.blocks]
    assert {"decode_latency.png", "decode_memory.png", "decode_speedup.png"} <= {
        p.name for p in (tmp_path / "report").iterdir()
    }
    sp = speedups(df, steps)
    assert set(sp["impl"]) == {"softmax", "sdpa-recompute"} and sp["speedup_step"].notna().all()

    rep = attnbench("report", str(tmp_path / "run"))
    assert rep.returncode == 0, rep.stderr
    md_text = (tmp_path / "run" / "report" / "report.md").read_text()
    html_text = (tmp_path / "run" / "report" / "report.html").read_text()
    assert "### Autoregressive decoding" in md_text and r"charts/decode\_latency.png" in md_text
    assert "<h2>Autoregressive decoding</h2>" in html_text and html_text.count("data:image/png;base64") >= 3


@pytest.mark.parametrize(
    ("args", "msg"),
    [
        (["--set", "T=0"], "T = 0: expected an integer >= 1"),
        (["--set", "P=-3"], "P = -3: expected an integer >= 0"),
        (["--set", "T=many"], "T expects integers"),
        (["--impl", "linear-cumsum"], "no decoder for pass decode"),
    ],
)
def test_bad_decode_values_are_one_line_errors(tmp_path, args, msg):
    suite = tmp_path / "d.toml"
    suite.write_text(DECODE_SUITE.format(P=0, T=8))
    res = attnbench("run", "--suite", str(suite), "--out", str(tmp_path / "run"), "--no-report", *args)
    assert res.returncode == 2
    assert msg in res.stderr and len(res.stderr.strip().splitlines()) == 1
