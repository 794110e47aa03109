"""The oracle: it passes correct outputs and fails NaN, constant, zero and wrong ones."""

from __future__ import annotations

import math

import pytest
import torch

from attnbench.impls.linear import linear_quadratic
from attnbench.impls.softmax import softmax_attention
from attnbench.measure import correctness
from attnbench.measure.inputs import Inputs
from tests.helpers import rand_qkvg


def _inputs(n=50, seed=0):
    q, k, v, g = rand_qkvg(2, 2, n, 8, 6, seed=seed)
    return Inputs(q, k, v, g)


@pytest.mark.parametrize("ref_fn", [softmax_attention, linear_quadratic])
@pytest.mark.parametrize("causal", [True, False])
def test_blockwise_reference_equals_one_block(ref_fn, causal, monkeypatch):
    inp = _inputs(n=70)
    whole = correctness.reference_outputs(ref_fn, inp, causal, with_grads=True)
    monkeypatch.setattr(correctness, "_BLOCK_ELEMS", 16 * 70 * 4)  # 16-row blocks
    blocks = correctness.reference_outputs(ref_fn, inp, causal, with_grads=True)
    for name in ("out", "dq", "dk", "dv"):
        assert correctness.rel_error(blocks[name], whole[name]) < 1e-13, name


def test_caller_supplied_long_form_is_used_past_the_quadratic_limit():
    """The linear family's chunked form comes from the caller (the registry), not an import."""
    import functools

    from attnbench.impls.chunked import linear_chunked

    inp = _inputs(n=300, seed=1)
    long_form = ("linear-chunked float64 C=256", functools.partial(linear_chunked, chunk_size=256))
    label, fn = correctness.reference_plan("linear-quadratic", linear_quadratic, 10**6, long_form)
    assert label == "linear-chunked float64 C=256"
    a = correctness.reference_outputs(fn, inp, True, with_grads=True)
    b = correctness.reference_outputs(linear_quadratic, inp, True, with_grads=True)
    for name in a:
        assert correctness.rel_error(a[name], b[name]) < 1e-13
    assert (
        correctness.reference_plan("linear-quadratic", linear_quadratic, 4096, long_form)[0]
        == "linear-quadratic float64"
    )
    # without a long form the quadratic form serves every N
    assert correctness.reference_plan("linear-quadratic", linear_quadratic, 10**6)[1] is linear_quadratic


def test_correctness_imports_no_impl():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(correctness.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("attnbench.impls")]


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize(("n", "block"), [(97, 16), (64, 64), (50, 7), (33, 200)])
def test_online_softmax_reference_equals_the_plain_float64_reference(causal, n, block):
    """Blockwise online softmax with its own backward: out and every gradient as the plain form."""
    for seed in (0, 1):
        inp = _inputs(n=n, seed=seed)
        plain = correctness.reference_outputs(softmax_attention, inp, causal, with_grads=True)
        q, k, v, g = (t.double() for t in (inp.q, inp.k, inp.v, inp.g))
        online = correctness.softmax_online_reference(q, k, v, g, causal=causal, with_grads=True, block=block)
        for name in ("out", "dq", "dk", "dv"):
            assert correctness.rel_error(online[name], plain[name]) < 1e-13, (name, seed)


def test_online_softmax_reference_is_planned_for_long_n_and_bounds_its_tiles(monkeypatch):
    label, fn = correctness.reference_plan("softmax", softmax_attention, correctness.SOFTMAX_ONLINE_MIN_N + 1)
    assert label == "softmax-online float64" and getattr(fn, "own_grads", False)
    assert correctness.reference_plan("softmax", softmax_attention, correctness.SOFTMAX_ONLINE_MIN_N)[1] is (
        softmax_attention
    )
    # through reference_outputs (as the worker calls it), with the tile forced small: every
    # score tile is at most block x block, never a block of rows against all keys
    biggest = []
    real = correctness._scores

    def spy(*a, **k):
        out = real(*a, **k)
        biggest.append(out.shape[-2] * out.shape[-1])
        return out

    monkeypatch.setattr(correctness, "_scores", spy)
    monkeypatch.setattr(correctness, "_ONLINE_BLOCK_ELEMS", 2 * 2 * 16 * 16)  # B*H*16^2: 16-row tiles
    inp = _inputs(n=90, seed=3)
    got = correctness.reference_outputs(fn, inp, True, with_grads=True)
    want = correctness.reference_outputs(softmax_attention, inp, True, with_grads=True)
    assert max(biggest) == 16 * 16
    for name in ("out", "dq", "dk", "dv"):
        assert correctness.rel_error(got[name], want[name]) < 1e-13
    assert correctness.reference_outputs(fn, inp, True, with_grads=False).keys() == {"out"}


def _ref():
    return correctness.reference_outputs(linear_quadratic, _inputs(), True, with_grads=True)


def test_judge_passes_the_reference_itself():
    ref = _ref()
    got = {k: v.float() for k, v in ref.items()}
    row = correctness.judge(got, ref, "float32")
    assert row["correct"] and row["correctness_error"] is None
    assert row["err_out"] < 1e-6


def test_judge_fails_nan():
    ref = _ref()
    got = {k: v.float().clone() for k, v in ref.items()}
    got["dk"][0, 0, 3, 1] = float("nan")
    row = correctness.judge(got, ref, "float32")
    assert not row["correct"] and "dk has NaN or Inf" in row["correctness_error"]
    assert math.isinf(row["err_dk"])


@pytest.mark.parametrize("fill", [0.0, 0.37])
def test_judge_fails_constant_or_zero_output(fill):
    ref = _ref()
    got = {k: v.float().clone() for k, v in ref.items()}
    got["out"] = torch.full_like(got["out"], fill)
    row = correctness.judge(got, ref, "float32")
    assert not row["correct"] and "out is constant" in row["correctness_error"]


def test_judge_fails_small_but_real_error():
    ref = _ref()
    got = {k: v.float().clone() for k, v in ref.items()}
    got["dv"] = got["dv"] * 1.01
    row = correctness.judge(got, ref, "float32")
    assert not row["correct"] and "dv relative error" in row["correctness_error"]
    assert row["err_dv"] == pytest.approx(0.01, rel=1e-3)


def test_rel_error():
    a = torch.tensor([3.0, 4.0])
    assert correctness.rel_error(a, a) == 0.0
    assert correctness.rel_error(torch.zeros(2), a) == 1.0
    assert correctness.rel_error(a, torch.zeros(2)) == math.inf


def test_reference_cache_round_trip(tmp_path):
    inp = _inputs()
    point = {"B": 2, "H": 2, "N": 50, "D": 8, "M": 6, "dtype": "float32", "causal": True, "seed": 0}
    a = correctness.cached_reference("linear-quadratic", linear_quadratic, inp, point, True, tmp_path)
    assert len(list(tmp_path.glob("ref-*.pt"))) == 1
    b = correctness.cached_reference("linear-quadratic", linear_quadratic, inp, point, True, tmp_path)
    assert all(torch.equal(a[k], b[k]) for k in a)
