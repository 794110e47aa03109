"""The compiled causal-product kernels against the float64 quadratic reference.

CPU tests build the C++ extension once (about a minute on 2 cores, cached on disk afterwards);
GPU tests (``-m gpu``) run the same checks on ``linear-causal-cuda``.
"""

from __future__ import annotations

import pytest
import torch

from attnbench.impls import causal_product as cp
from attnbench.impls.linear import linear_quadratic
from attnbench.impls.registry import get

# Relative-error tolerances per dtype (output and every gradient), a few times the error plain
# PyTorch's linear_quadratic makes at that dtype on the same inputs (checked in test_low_precision).
TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 3e-2}


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x.double() - ref).norm() / ref.norm()).item()


def inputs(b: int, h: int, n: int, d: int, m: int, dtype: torch.dtype, device: str, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [
        torch.randn(b, h, n, x, generator=gen, dtype=torch.float64).to(device=device, dtype=dtype) for x in (d, d, m)
    ]


def run_fwd_bwd(fn, q, k, v, grad):
    q, k, v = (t.detach().requires_grad_() for t in (q, k, v))
    out = fn(q, k, v, causal=True)
    out.backward(grad)
    return out.detach(), q.grad, k.grad, v.grad


def reference(q, k, v, grad):
    return run_fwd_bwd(linear_quadratic, *(t.double() for t in (q, k, v)), grad.double())


def check_against_reference(fn, q, k, v, tol: float, grad: torch.Tensor | None = None) -> list[float]:
    if grad is None:
        grad = torch.randn(*q.shape[:3], v.shape[-1], dtype=q.dtype, device=q.device)
    got = run_fwd_bwd(fn, q, k, v, grad)
    ref = reference(q, k, v, grad)
    errs = [rel_err(a, b) for a, b in zip(got, ref, strict=True)]
    for name, e in zip(("out", "dq", "dk", "dv"), errs, strict=True):
        assert e < tol, f"{name}: relative error {e:.2e} >= {tol:.0e}"
    return errs


@pytest.fixture(scope="module")
def cpu_kernel():
    reason = cp.available("cpu")
    if reason is not None:
        pytest.skip(f"linear-causal-cpu unavailable: {reason}")
    cp.load_extension("cpu")
    return get("linear-causal-cpu").fn


SHAPES = [  # (B, H, N, D, M): N not a multiple of any chunk, D != M, B*H = 1 and larger
    (1, 1, 2, 8, 8),  # N=1 would leave dq ~ EPS, all cancellation: fp32 relative error is meaningless
    (1, 1, 77, 16, 24),
    (2, 3, 130, 32, 20),
    (1, 2, 300, 64, 64),
    (1, 1, 45, 100, 3),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}-H{}-N{}-D{}-M{}".format(*s))
@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_float64_and_float32(cpu_kernel, shape, seed):
    for dtype in (torch.float64, torch.float32):
        check_against_reference(cpu_kernel, *inputs(*shape, dtype, "cpu", seed), TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_cpu_low_precision(cpu_kernel, dtype, seed):
    q, k, v = inputs(2, 2, 200, 32, 48, dtype, "cpu", seed)
    grad = torch.randn(2, 2, 200, 48, dtype=dtype)
    errs = check_against_reference(cpu_kernel, q, k, v, TOL[dtype], grad)
    # Never much worse than plain PyTorch computing the same thing at this dtype.
    torch_errs = [
        rel_err(a, b)
        for a, b in zip(run_fwd_bwd(linear_quadratic, q, k, v, grad), reference(q, k, v, grad), strict=True)
    ]
    for e, te in zip(errs, torch_errs, strict=True):
        assert e < 3 * te + 1e-3


def test_cpu_long_sequence_float32(cpu_kernel):
    check_against_reference(cpu_kernel, *inputs(1, 1, 2049, 64, 64, torch.float32, "cpu", 3), TOL[torch.float32])


def test_cpu_gradcheck(cpu_kernel):
    q, k, v = (t.requires_grad_() for t in inputs(1, 2, 37, 3, 5, torch.float64, "cpu", 4))
    assert torch.autograd.gradcheck(lambda a, b, c: cpu_kernel(a, b, c, causal=True), (q, k, v))


def test_cpu_non_contiguous_and_stride0_grad(cpu_kernel):
    # q, k, v as transposed / sliced views: the kernel reads through strides, no silent garbage.
    base = torch.randn(2, 70, 3, 40, dtype=torch.float64)
    q = base[..., :16].transpose(1, 2)  # [2, 3, 70, 16], non-contiguous
    k = torch.randn(2, 3, 16, 70, dtype=torch.float64).transpose(-1, -2)  # last dim strided
    v = torch.randn(2, 3, 70, 48, dtype=torch.float64)[..., ::2]  # [2, 3, 70, 24], stride 2
    assert not (q.is_contiguous() or k.is_contiguous() or v.is_contiguous())
    check_against_reference(cpu_kernel, q, k, v, TOL[torch.float64])
    # out.sum().backward() hands the kernel a stride-0 (expanded) gradient.
    qs, ks, vs = (t.detach().clone().requires_grad_() for t in (q, k, v))
    cpu_kernel(qs, ks, vs, causal=True).sum().backward()
    ones = torch.ones(2, 3, 70, 24, dtype=torch.float64)
    ref = reference(q, k, v, ones)
    for got, want in zip((qs.grad, ks.grad, vs.grad), ref[1:], strict=True):
        assert rel_err(got, want) < TOL[torch.float64]


def test_cpu_rejects_non_causal_and_mixed_dtypes(cpu_kernel):
    q, k, v = inputs(1, 1, 8, 4, 4, torch.float32, "cpu", 0)
    with pytest.raises(ValueError, match="causal only"):
        cpu_kernel(q, k, v, causal=False)
    with pytest.raises(RuntimeError, match="one dtype"):
        cpu_kernel(q, k, v.double(), causal=True)


def test_registry_metadata_and_cuda_limit():
    cpu, cuda = get("linear-causal-cpu"), get("linear-causal-cuda")
    assert cpu.devices == ("cpu",) and cuda.devices == ("cuda",)
    assert cpu.causal == (True,) and "float64" in cpu.dtypes
    point = {"B": 1, "H": 1, "N": 128, "D": 256, "M": 64, "dtype": "float32", "causal": True, "pass": "fwdbwd"}
    reason = cuda.skip_reason(point)
    assert reason is not None and "128" in reason
    assert cuda.skip_reason({**point, "D": 64}) is None
    assert cpu.skip_reason({**point, "causal": False}) is not None


def test_cuda_head_dim_limit_error_names_the_limit():
    q = torch.randn(1, 1, 4, 256)
    with pytest.raises(ValueError, match=r"D, M <= 128"):
        cp.linear_causal_cuda(q, q, q[..., :8], causal=True)


def test_unavailable_reason_instead_of_import_error(monkeypatch):
    monkeypatch.setattr(cp, "source_dir", lambda: None)
    reason = cp.available("cpu")
    assert reason is not None and "sources not found" in reason


def test_sources_found():
    src = cp.source_dir()
    assert src is not None and (src / "causal_product_math.h").is_file()


# ---------------------------------------------------------------------------------------- GPU


@pytest.fixture(scope="module")
def cuda_kernel():
    reason = cp.available("cuda")
    if reason is not None:
        pytest.skip(f"linear-causal-cuda unavailable: {reason}")
    cp.load_extension("cuda")
    return get("linear-causal-cuda").fn


@pytest.mark.gpu
@pytest.mark.parametrize("shape", SHAPES + [(2, 4, 1000, 128, 128)], ids=lambda s: "B{}-H{}-N{}-D{}-M{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_cuda_against_reference(cuda_kernel, shape, dtype):
    check_against_reference(cuda_kernel, *inputs(*shape, dtype, "cuda", 0), TOL[dtype])


@pytest.mark.gpu
def test_cuda_non_contiguous_and_stride0_grad(cuda_kernel):
    q = torch.randn(2, 70, 3, 16, device="cuda").transpose(1, 2)
    k = torch.randn(2, 3, 16, 70, device="cuda").transpose(-1, -2)
    v = torch.randn(2, 3, 70, 48, device="cuda")[..., ::2]
    check_against_reference(cuda_kernel, q, k, v, TOL[torch.float32])
    qs, ks, vs = (t.detach().clone().requires_grad_() for t in (q, k, v))
    cuda_kernel(qs, ks, vs, causal=True).sum().backward()
    ref = reference(q, k, v, torch.ones(2, 3, 70, 24, device="cuda"))
    for got, want in zip((qs.grad, ks.grad, vs.grad), ref[1:], strict=True):
        assert rel_err(got, want) < TOL[torch.float32]


@pytest.mark.gpu
def test_cuda_matches_cpu_kernel(cuda_kernel, cpu_kernel):
    q, k, v = inputs(1, 2, 513, 64, 32, torch.float32, "cpu", 5)
    a = cpu_kernel(q, k, v, causal=True)
    b = cuda_kernel(q.cuda(), k.cuda(), v.cuda(), causal=True).cpu()
    assert rel_err(b, a.double()) < 1e-5
