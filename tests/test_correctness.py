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


def test_chunked_reference_plan_matches_quadratic():
    inp = _inputs(n=300, seed=1)
    label, fn = correctness.reference_plan("linear-quadratic", linear_quadratic, 10**6)
    assert "chunked" in label
    a = correctness.reference_outputs(fn, inp, True, with_grads=True)
    b = correctness.reference_outputs(linear_quadratic, inp, True, with_grads=True)
    for name in a:
        assert correctness.rel_error(a[name], b[name]) < 1e-13


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
