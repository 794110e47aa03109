"""The compiled causal-product kernels against the float64 quadratic reference.

The CPU kernel runs the same chunk steps as the CUDA kernel (causal_product_math.h), so these CPU
tests exercise the CUDA kernel's decomposition: tile edges, N not a multiple of any chunk (16 on the
CPU, 32 and 64 on CUDA), D != M, head dims up to 128 and the error beyond, and the inter-chunk combine
(``segments`` splits each sequence the way the CUDA grid does). CPU tests build the C++ extension once
(about a minute of CPU time, cached on disk); GPU tests (``-m gpu``) run the checks on
``linear-causal-cuda``.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from attnbench.impls import causal_product as cp
from attnbench.impls import kernel_build
from attnbench.impls.common import feature_map
from attnbench.impls.linear import linear_quadratic
from attnbench.impls.registry import get

# Relative-error bounds per dtype (output and every gradient), a few times the error plain PyTorch's
# linear_quadratic makes at that dtype on the same inputs (checked in test_cpu_low_precision).
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
        gen = torch.Generator().manual_seed(99)
        grad = torch.randn(*q.shape[:3], v.shape[-1], generator=gen, dtype=torch.float64).to(q.device, q.dtype)
    got = run_fwd_bwd(fn, q, k, v, grad)
    ref = reference(q, k, v, grad)
    errs = [rel_err(a, b) for a, b in zip(got, ref, strict=True)]
    for name, e in zip(("out", "dq", "dk", "dv"), errs, strict=True):
        assert e < tol, f"{name}: relative error {e:.2e} >= {tol:.0e}"
    return errs


@pytest.fixture(scope="module")
def ext():
    reason = cp.available("cpu")
    if reason is not None:
        pytest.skip(f"linear-causal-cpu unavailable: {reason}")
    return cp.load_extension("cpu")


@pytest.fixture(scope="module")
def cpu_kernel(ext):
    return get("linear-causal-cpu").fn


def segmented(ext, segments: int, phi: bool = True):
    """The CPU kernel with each sequence split into `segments` pieces (the inter-chunk combine)."""

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):
            out, den = ext.forward(q, k, v, phi, segments)
            ctx.save_for_backward(q, k, v, out, den)
            return out

        @staticmethod
        def backward(ctx, g):
            q, k, v, out, den = ctx.saved_tensors
            return tuple(ext.backward(q, k, v, out, den, g, phi, segments))

    return lambda q, k, v, causal: Fn.apply(q, k, v)


SHAPES = [  # (B, H, N, D, M): N not a multiple of 16, 32 or 64; D != M; B*H = 1 and larger
    (1, 1, 2, 8, 8),  # N=1 would leave dq ~ EPS, all cancellation: fp32 relative error is meaningless
    (1, 1, 77, 16, 24),
    (2, 3, 130, 32, 20),
    (1, 2, 300, 64, 64),
    (1, 1, 45, 100, 3),
    (1, 1, 97, 128, 128),  # the CUDA kernel's widest tiles
    (1, 1, 40, 128, 17),
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


@pytest.mark.parametrize("segments", [2, 3, 7])
@pytest.mark.parametrize(
    "shape", [(1, 1, 301, 64, 48), (2, 1, 77, 20, 36)], ids=lambda s: "B{}-H{}-N{}-D{}-M{}".format(*s)
)
def test_cpu_inter_chunk_combine(ext, shape, segments):
    """Sequences split into segments: segment-local states, the exclusive scan (scan_step) over them
    forward and backward, then each segment's chunks from its incoming state."""
    for dtype, seed in ((torch.float64, 0), (torch.float32, 1)):
        check_against_reference(segmented(ext, segments), *inputs(*shape, dtype, "cpu", seed), TOL[dtype])


def test_cpu_features_path(ext):
    """phi=False: the kernel takes phi(q), phi(k) and returns gradients w.r.t. them."""
    q, k, v = inputs(1, 2, 70, 24, 40, torch.float64, "cpu", 7)
    qf, kf = feature_map(q), feature_map(k)
    grad = torch.randn(1, 2, 70, 40, dtype=torch.float64)
    got = run_fwd_bwd(segmented(ext, 0, phi=False), qf, kf, v, grad)

    def quad_on_features(a, b, c, causal):
        s = (a @ b.transpose(-1, -2)).tril()
        return (s @ c) / (s.sum(-1, keepdim=True) + 1e-6)

    want = run_fwd_bwd(quad_on_features, qf, kf, v, grad)
    for x, y in zip(got, want, strict=True):
        assert rel_err(x, y.double()) < 1e-10


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


def test_cpu_empty_sequence(cpu_kernel):
    q, k, v = (t.requires_grad_() for t in inputs(1, 2, 0, 8, 4, torch.float32, "cpu", 0))
    out = cpu_kernel(q, k, v, causal=True)
    assert out.shape == (1, 2, 0, 4)
    out.sum().backward()
    assert q.grad.shape == q.shape and v.grad.shape == v.shape


def test_cpu_rejects_non_causal_and_mixed_dtypes(cpu_kernel):
    q, k, v = inputs(1, 1, 8, 4, 4, torch.float32, "cpu", 0)
    with pytest.raises(ValueError, match="causal only"):
        cpu_kernel(q, k, v, causal=False)
    with pytest.raises(RuntimeError, match="one dtype"):
        cpu_kernel(q, k, v.double(), causal=True)


@pytest.mark.parametrize("which", ["D", "M"])
def test_zero_head_dim_rejected_before_launch(ext, cpu_kernel, which):
    d, m = (0, 4) if which == "D" else (4, 0)
    q, k = torch.randn(1, 1, 8, d), torch.randn(1, 1, 8, d)
    v = torch.randn(1, 1, 8, m)
    with pytest.raises(ValueError, match=rf"head dims must be >= 1; got {which}=0"):
        cpu_kernel(q, k, v, causal=True)
    with pytest.raises(ValueError, match=rf"got {which}=0"):
        cp.linear_causal_cuda(q, k, v, causal=True)
    # The kernel's own check, should anything reach it.
    with pytest.raises(RuntimeError, match=rf"head dims must be >= 1; got {which}=0"):
        ext.forward(q, k, v)
    point = {"B": 1, "H": 1, "N": 8, "D": d, "M": m, "dtype": "float32", "causal": True, "pass": "fwd"}
    for name in ("linear-causal-cpu", "linear-causal-cuda"):
        reason = get(name).skip_reason(point)
        assert reason is not None and f"{which}=0" in reason


def test_kernel_and_python_shape_rules_agree(ext):
    for b, h, n, d, m in [(1, 1, 8, 0, 4), (1, 1, 8, 4, 0), (1, 1, 8, 129, 4), (1, 1, 8, 128, 128), (2, 3, 5, 1, 1)]:
        for device, limit in (("cpu", 0), ("cuda", 128)):
            assert ext.shape_error(b, h, n, d, m, limit) == cp.shape_error(b, h, n, d, m, device)


def test_registry_metadata_and_cuda_limit():
    cpu, cuda = get("linear-causal-cpu"), get("linear-causal-cuda")
    assert cpu.devices == ("cpu",) and cuda.devices == ("cuda",)
    assert cpu.causal == (True,) and "float64" in cpu.dtypes
    assert cpu.prepare is not None and cuda.prepare is not None
    point = {"B": 1, "H": 1, "N": 128, "D": 256, "M": 64, "dtype": "float32", "causal": True, "pass": "fwdbwd"}
    reason = cuda.skip_reason(point)
    assert reason is not None and "128" in reason
    assert cuda.skip_reason({**point, "D": 128, "M": 128}) is None
    assert cpu.skip_reason(point) is None  # the CPU kernel has no head-dim limit
    assert cpu.skip_reason({**point, "causal": False}) is not None


def test_cuda_head_dim_limit_error_names_the_limit():
    q = torch.randn(1, 1, 4, 129)
    with pytest.raises(ValueError, match=r"D, M <= 128 .*got D=129, M=8"):
        cp.linear_causal_cuda(q, q, q[..., :8], causal=True)


# ------------------------------------------------------------------------------ build and cache


def test_unavailable_reason_instead_of_import_error(monkeypatch):
    monkeypatch.setattr(kernel_build, "source_dir", lambda: None)
    reason = cp.available("cpu")
    assert reason is not None and "sources not found" in reason
    assert cp.prepare("cpu") == reason  # prepare answers without building


def test_sources_found():
    src = cp.source_dir()
    assert src is not None and (src / "causal_product_math.h").is_file()


def test_build_cache_keyed_on_architecture_and_versions(monkeypatch, tmp_path):
    monkeypatch.setenv("ATTNBENCH_KERNEL_CACHE", str(tmp_path))
    src = kernel_build.source_dir()
    assert src is not None
    a80 = kernel_build.build_dir("cuda", src, "8.0", "nvcc 12.4")
    a90 = kernel_build.build_dir("cuda", src, "9.0", "nvcc 12.4")
    assert a80 != a90 and a80.name.startswith("cuda-sm80-") and a90.name.startswith("cuda-sm90-")
    assert kernel_build.build_dir("cuda", src, "8.0", "nvcc 12.4") == a80  # stable: no rebuild on return
    assert kernel_build.build_dir("cuda", src, "8.0", "nvcc 12.8") != a80
    cpu = kernel_build.build_dir("cpu", src)
    assert cpu.parent == tmp_path and cpu.name.startswith("cpu-")
    monkeypatch.setattr(torch, "__version__", "0.0.0-other")
    assert kernel_build.build_dir("cpu", src) != cpu
    assert kernel_build.build_dir("cuda", src, "8.0", "nvcc 12.4") != a80


def test_stale_build_lock_is_removed_with_a_message(tmp_path):
    build = tmp_path / "cpu-0123"
    build.mkdir()
    (build / "lock").write_text("")  # what a build killed mid-way leaves behind
    said: list[str] = []
    with kernel_build.build_lock(build, said.append):
        assert not (build / "lock").exists()
    assert len(said) == 1 and "stale build lock" in said[0] and str(build / "lock") in said[0]


def test_concurrent_build_waits_for_the_lock(tmp_path):
    import fcntl

    build = tmp_path / "cpu-4567"
    holder = open(tmp_path / "cpu-4567.flock", "w")  # noqa: SIM115 - released by the thread below
    fcntl.flock(holder, fcntl.LOCK_EX)

    def release() -> None:
        time.sleep(0.3)
        fcntl.flock(holder, fcntl.LOCK_UN)
        holder.close()

    threading.Thread(target=release).start()
    said: list[str] = []
    t0 = time.perf_counter()
    with kernel_build.build_lock(build, said.append):
        waited = time.perf_counter() - t0
    assert waited >= 0.25 and any("waiting for another process" in s for s in said)


def test_prepare_builds_in_a_child_process(ext, monkeypatch):
    """prepare() returns None once the kernel is built, and the reason when a build fails."""
    assert cp.prepare("cpu") is None
    monkeypatch.setattr(kernel_build, "why_not_buildable", lambda kind: None)
    real_run = kernel_build.subprocess.run

    def failing_build(cmd, **kw):
        return real_run([cmd[0], "-c", "print('building the cpu kernel failed: boom'); raise SystemExit(1)"], **kw)

    monkeypatch.setattr(kernel_build.subprocess, "run", failing_build)
    assert cp.prepare("cpu") == "building the cpu kernel failed: boom"


# ---------------------------------------------------------------------------------------- GPU


@pytest.fixture(scope="module")
def cuda_kernel():
    reason = cp.available("cuda")
    if reason is not None:
        pytest.skip(f"linear-causal-cuda unavailable: {reason}")
    cp.load_extension("cuda")
    return get("linear-causal-cuda").fn


GPU_SHAPES = SHAPES + [(2, 4, 1000, 128, 128), (1, 4, 4100, 64, 64)]


@pytest.mark.gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "B{}-H{}-N{}-D{}-M{}".format(*s))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize("seed", [0, 1])
def test_cuda_against_reference(cuda_kernel, shape, dtype, seed):
    check_against_reference(cuda_kernel, *inputs(*shape, dtype, "cuda", seed), TOL[dtype])


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


@pytest.mark.gpu
def test_cuda_long_sequence_fp16_state_range(cuda_kernel):
    """A long fp16 sequence with non-zero-mean v: the running state exceeds fp16's range (65504), which
    the kernel's fp32 state and TF32 state products must survive."""
    q, k = (torch.randn(1, 1, 40000, 64, device="cuda") for _ in range(2))
    v = torch.randn(1, 1, 40000, 64, device="cuda") + 3.0
    out = cuda_kernel(q.half(), k.half(), v.half(), causal=True)
    assert torch.isfinite(out).all()
    ref = cuda_kernel(q, k, v, causal=True)
    assert rel_err(out, ref.double()) < 1e-2
