"""linear-chunked-triton: the Triton chunk kernels against the float64 reference.

CPU: the kernels run under Triton's interpreter, in a subprocess, because TRITON_INTERPRET must
be set before triton is imported and another test may already have imported it in this process.
GPU (``-m gpu``): compiled kernels, fp32/fp16/bf16. The AOT compile check (sm_80, sm_90) runs the
bundled ptxas, no GPU needed. Everything skips with a reason where triton is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnbench.impls import registry

ROOT = Path(__file__).resolve().parent.parent


def _has_triton() -> bool:
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # ValueError: sys.modules["triton"] is None
        return False


HAS_TRITON = _has_triton()
needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed (pip install triton)")

# Relative-error bounds ||x - ref|| / ||ref|| against float64 (observed: fp32 ~3e-7, fp16 ~1e-3).
# On the CPU a case also passes within 3x PyTorch's own error in that dtype (flash-attention's rule).
TOL = {"float32": 1e-5, "float16": 5e-3, "bfloat16": 3e-2}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # silences triton 3.9's notice; today's default
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def interp_run() -> dict:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "_triton_interp_cases.py")],
        env=_env(TRITON_INTERPRET="1"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"interpreter run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def interp_results(interp_run: dict) -> dict[str, dict]:
    return interp_run["cases"]


@needs_triton
def test_interpreter_matches_reference(interp_results: dict[str, dict]) -> None:
    bad = []
    for cid, errs in interp_results.items():
        tol = max(TOL[cid.split("-")[0]], 3 * errs["torch"])
        if not errs["finite"]:
            bad.append(f"{cid}: non-finite values")
        bad += [
            f"{cid}: {name} rel err {errs[name]:.2e} > {tol:.0e}"
            for name in ("out", "dq", "dk", "dv")
            if not errs[name] <= tol
        ]
    assert not bad, "\n".join(bad)
    assert len(interp_results) >= 22  # every case ran


@needs_triton
def test_interpreter_rejects_zero_head_dims_before_launch(interp_run: dict) -> None:
    for which in ("D", "M"):
        assert f"head dims must be >= 1; got {which}=0" in interp_run["zero_dim"][which]


def test_registered_with_metadata() -> None:
    spec = registry.get("linear-chunked-triton")
    assert spec.family == "linear" and spec.causal == (True,) and spec.devices == ("cuda",)
    assert set(spec.dtypes) == {"float32", "float16", "bfloat16"} and spec.backward
    assert spec.prepare is not None
    assert "cuda" in (spec.unavailable_reason("cpu") or "")
    if not torch.cuda.is_available():
        assert spec.unavailable_reason("cuda")  # no triton or no CUDA: a reason, never an exception
        assert spec.prepare("cuda")  # likewise: prepare answers without launching anything
    point = {"B": 1, "H": 1, "N": 64, "causal": True, "dtype": "float32", "D": 64, "M": 64}
    assert spec.skip_reason({**point, "causal": False}) is not None
    assert spec.skip_reason({**point, "D": 512}) is not None
    assert spec.skip_reason({**point, "dtype": "bfloat16"}) is None
    for which in ("D", "M"):
        reason = spec.skip_reason({**point, which: 0})
        assert reason is not None and f"{which}=0" in reason


class _Recorder:
    """Stands in for a triton kernel: records the grid and the keyword arguments of each launch."""

    def __init__(self, name: str, calls: list) -> None:
        self.name, self.calls = name, calls

    def __getitem__(self, grid):  # noqa: ANN001, ANN204
        return lambda *args, **kw: self.calls.append((self.name, tuple(grid), kw))


def test_grid_puts_batch_heads_on_axis0(monkeypatch) -> None:
    """B*H = 70,000 (> 65,535, the limit of grid axes 1 and 2) goes on axis 0; chunks on axis 1."""
    import types

    from attnbench.impls import chunked_triton as ct

    calls: list = []
    fake = types.ModuleType("attnbench.impls._triton_kernels")
    for name in ("tuned_gd", "tuned_state", "tuned_fwd", "tuned_dq", "tuned_dk", "tuned_dv", "chunk_scan_kernel"):
        setattr(fake, name, _Recorder(name, calls))
    monkeypatch.setitem(sys.modules, "attnbench.impls._triton_kernels", fake)
    monkeypatch.setattr(ct, "interpreter_enabled", lambda: True)
    import attnbench.impls as impls_pkg

    monkeypatch.setattr(impls_pkg, "_triton_kernels", fake, raising=False)
    bh, n, d, m = 70_000, 40, 1, 1
    q, k = torch.zeros(bh, n, d, requires_grad=True), torch.zeros(bh, n, d, requires_grad=True)
    v = torch.zeros(bh, n, m, requires_grad=True)
    out = ct.ChunkedTritonFn.apply(q, k, v, 16)
    out.backward(torch.ones_like(out))
    names = [c[0] for c in calls]
    assert names == [
        "tuned_state", "chunk_scan_kernel", "tuned_fwd",
        "tuned_gd", "tuned_state", "chunk_scan_kernel", "tuned_dq", "tuned_dk", "tuned_dv",
    ]  # fmt: skip
    for name, grid, _ in calls:
        assert grid[0] == bh, f"{name}: B*H must be grid axis 0, got {grid}"
        assert all(x <= ct.MAX_GRID_CHUNKS for x in grid[1:]), f"{name}: {grid}"
        if name != "chunk_scan_kernel":
            assert grid[1] == 3  # ceil(40 / 16) chunks on axis 1
    state_bwd = [kw for name, _, kw in calls if name == "tuned_state"][1]
    assert state_bwd["BWD"] is True


def test_too_many_chunks_rejected_before_launch() -> None:
    from attnbench.impls.chunked_triton import shape_error

    reason = shape_error(1, 1, 16 * 70_000, 64, 64, 16)
    assert reason is not None and "70000 chunks" in reason and "65535" in reason
    assert shape_error(1, 1, 16 * 65_535, 64, 64, 16) is None


def test_launches_under_the_inputs_device() -> None:
    from attnbench.impls.chunked_triton import _on

    ctx = _on(torch.device("cuda", 1))  # constructing it does not touch CUDA
    assert isinstance(ctx, torch.cuda.device) and ctx.idx == 1
    assert not isinstance(_on(torch.device("cpu")), torch.cuda.device)


def test_tf32_flag_read_through_the_new_api(monkeypatch) -> None:
    """Reading the old allow_tf32 flag raises once the fp32_precision API has been used (torch 2.13)."""
    from attnbench.impls.chunked_triton import dot_precision, tf32_allowed

    matmul = torch.backends.cuda.matmul
    before = matmul.fp32_precision
    try:
        matmul.fp32_precision = "tf32"
        assert tf32_allowed() and dot_precision(torch.float32, torch.device("cuda")) == "tf32"
        matmul.fp32_precision = "ieee"
        assert not tf32_allowed() and dot_precision(torch.float32, torch.device("cuda")) == "ieee"
    finally:
        matmul.fp32_precision = before
    assert dot_precision(torch.float16, torch.device("cuda")) == "tf32"
    assert dot_precision(torch.float32, torch.device("cpu")) == "ieee"


def test_import_without_triton() -> None:
    """With triton unimportable, the registry still loads and the impl says why it is unavailable."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "from attnbench.impls import registry\n"
        "spec = registry.get('linear-chunked-triton')\n"
        "print(spec.unavailable_reason('cuda'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "triton is not installed" in proc.stdout


@needs_triton
def test_aot_compile_sm80_sm90() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "check_triton_compile.py"), "--quick", "--arch", "80", "90"],
        env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert "passed: 0 failure(s)" in proc.stdout


GPU_SHAPES = [
    (2, 3, 1000, 64, 64, None),
    (1, 2, 257, 32, 96, 16),
    (1, 1, 77, 128, 128, None),
    (1, 4, 4100, 64, 64, None),  # 65 chunks: the inter-chunk scan over a long sequence
]


@needs_triton
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: "B{}-H{}-N{}-D{}-M{}-C{}".format(*s))
def test_cuda_matches_reference(dtype: str, shape: tuple) -> None:
    from attnbench.impls.chunked_triton import chunked_triton_attention
    from attnbench.impls.linear import linear_quadratic

    b, h, n, d, m, chunk = shape
    dt = getattr(torch, dtype)
    for seed in (0, 1):
        gen = torch.Generator(device="cuda").manual_seed(seed)
        q, k = (torch.randn(b, h, n, d, device="cuda", generator=gen) for _ in range(2))
        v, g = (torch.randn(b, h, n, m, device="cuda", generator=gen) for _ in range(2))
        ref_in = [x.double().requires_grad_() for x in (q, k, v)]
        linear_quadratic(*ref_in, causal=True).backward(g.double())
        ref = linear_quadratic(*[x.detach() for x in ref_in], causal=True)
        xs = [x.to(dt).requires_grad_() for x in (q, k, v)]
        out = chunked_triton_attention(*xs, chunk_size=chunk)
        out.backward(g.to(dt))
        for name, x, r in [("out", out, ref)] + [
            (f"d{c}", x.grad, ri.grad) for c, x, ri in zip("qkv", xs, ref_in, strict=True)
        ]:
            err = ((x.double() - r).norm() / r.norm()).item()
            assert err <= TOL[dtype], f"seed {seed} {name}: rel err {err:.2e} > {TOL[dtype]:.0e}"


@needs_triton
@pytest.mark.gpu
def test_cuda_batch_heads_beyond_grid_axis_limit() -> None:
    """B*H = 70,000 runs (grid axis 0) and agrees with the quadratic form on a few slices."""
    from attnbench.impls.chunked_triton import chunked_triton_attention
    from attnbench.impls.linear import linear_quadratic

    q, k, v = (torch.randn(70_000, 1, 20, 16, device="cuda", dtype=torch.float16) for _ in range(3))
    out = chunked_triton_attention(q, k, v)
    idx = torch.tensor([0, 65_535, 69_999], device="cuda")
    ref = linear_quadratic(q[idx].double(), k[idx].double(), v[idx].double(), causal=True)
    assert ((out[idx].double() - ref).norm() / ref.norm()).item() < TOL["float16"]


@needs_triton
@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_cuda_runs_on_the_inputs_device() -> None:
    from attnbench.impls.chunked_triton import chunked_triton_attention

    torch.cuda.set_device(0)
    xs = [torch.randn(1, 2, 100, 32, device="cuda:1", requires_grad=True) for _ in range(3)]
    out = chunked_triton_attention(*xs)
    out.sum().backward()
    assert out.device == torch.device("cuda:1") and all(x.grad.device == out.device for x in xs)
