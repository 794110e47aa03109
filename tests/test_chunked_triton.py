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
def interp_results() -> dict[str, dict]:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "_triton_interp_cases.py")],
        env=_env(TRITON_INTERPRET="1"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, f"interpreter run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


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
    assert len(interp_results) >= 18  # every case ran


def test_registered_with_metadata() -> None:
    spec = registry.get("linear-chunked-triton")
    assert spec.family == "linear" and spec.causal == (True,) and spec.devices == ("cuda",)
    assert set(spec.dtypes) == {"float32", "float16", "bfloat16"} and spec.backward
    assert "cuda" in (spec.unavailable_reason("cpu") or "")
    if not torch.cuda.is_available():
        assert spec.unavailable_reason("cuda")  # no triton or no CUDA: a reason, never an exception
    assert spec.skip_reason({"causal": False, "dtype": "float32", "D": 64, "M": 64}) is not None
    assert spec.skip_reason({"causal": True, "dtype": "float32", "D": 512, "M": 64}) is not None
    assert spec.skip_reason({"causal": True, "dtype": "bfloat16", "D": 64, "M": 64}) is None


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


GPU_SHAPES = [(2, 3, 1000, 64, 64, None), (1, 2, 257, 32, 96, 16), (1, 1, 77, 128, 128, None)]


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
