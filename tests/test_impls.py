"""Every built-in against the float64 reference of its family: output and every gradient."""

from __future__ import annotations

import pytest
import torch

from attnbench.impls import registry
from attnbench.impls.chunked import linear_chunked
from attnbench.impls.linear import linear_quadratic
from attnbench.impls.softmax import softmax_attention
from tests.helpers import max_rel_error, rand_qkvg

LINEAR = ["linear-cumsum", "linear-chunked", "linear-recurrent"]
SHAPES = [
    (1, 1, 2, 4, 4),
    (2, 3, 77, 16, 8),
    (1, 2, 130, 8, 24),
]  # N not a multiple of 64; D != M. (N=1 has dq = dk = 0 exactly: relative error is undefined there.)


def _ref(name: str):
    return softmax_attention if registry.get(name).family == "softmax" else linear_quadratic


@pytest.mark.parametrize("name", ["softmax", "sdpa", "linear-quadratic", *LINEAR])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-H{}-N{}-D{}-M{}".format(*s))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_float32_matches_float64_reference(name, causal, shape, seed):
    spec = registry.get(name)
    if causal not in spec.causal:
        pytest.skip(f"{name} has no {'causal' if causal else 'non-causal'} mode")
    q, k, v, g = rand_qkvg(*shape, seed=seed)
    errs = max_rel_error(spec.fn, _ref(name), q, k, v, g, causal=causal)
    assert max(errs) < 1e-5, dict(zip(["out", "dq", "dk", "dv"], errs, strict=False))


@pytest.mark.parametrize("chunk", [1, 7, 64, 200])
def test_chunked_any_chunk_size_is_exact_in_float64(chunk):
    q, k, v, g = (t.double() for t in rand_qkvg(2, 2, 150, 8, 5, seed=3))
    errs = max_rel_error(
        lambda *a, **kw: linear_chunked(*a, chunk_size=chunk, **kw), linear_quadratic, q, k, v, g, causal=True
    )
    assert max(errs) < 1e-12


@pytest.mark.parametrize("name", ["linear-cumsum", "linear-chunked"])
@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 3e-2), (torch.float16, 1e-2)])
def test_low_precision_within_dtype_tolerance(name, dtype, tol):
    q, k, v, g = rand_qkvg(1, 2, 96, 16, 16, seed=4, dtype=dtype)
    errs = max_rel_error(registry.get(name).fn, linear_quadratic, q, k, v, g, causal=True)
    assert max(errs) < tol


def test_causal_output_ignores_the_future():
    q, k, v, _ = rand_qkvg(1, 1, 40, 8, 8, seed=5)
    for name in ["softmax", "sdpa", "linear-quadratic", *LINEAR]:
        fn = registry.get(name).fn
        out = fn(q, k, v, causal=True)
        k2, v2 = k.clone(), v.clone()
        k2[:, :, 20:] += 5.0
        v2[:, :, 20:] -= 3.0
        out2 = fn(q, k2, v2, causal=True)
        assert torch.equal(out[:, :, :20], out2[:, :, :20]) or torch.allclose(
            out[:, :, :20], out2[:, :, :20], atol=1e-6
        ), name
        assert not torch.allclose(out[:, :, 20:], out2[:, :, 20:]), name


def test_shape_mismatch_is_a_clear_error():
    q, k, v, _ = rand_qkvg(1, 1, 8, 4, 4, seed=0)
    with pytest.raises(ValueError, match="v must be"):
        registry.get("linear-chunked").fn(q, k, v[:, :, :5], causal=True)


def test_unknown_impl_lists_what_exists():
    from attnbench.errors import UserError

    with pytest.raises(UserError, match="available: .*linear-chunked"):
        registry.get("no-such-impl")
