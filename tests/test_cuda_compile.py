"""The CUDA kernels without a GPU: they compile (sm_80, sm_90) with nvcc within their resource budget
(no spills, at least the occupancy floor: tools/check_cuda_compile.py), and their code, built for the
CPU against an emulation of the CUDA features it uses (kernels/causal_product/cuda_emu.h), matches the
float64 reference."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_cuda_compile.py"


def _tool():
    spec = importlib.util.spec_from_file_location("check_cuda_compile", TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_cuda_compile", mod)  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_cuda_kernel_compiles_within_budget(capsys):
    tool = _tool()
    nvcc = tool.find_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc (PATH, $CUDA_HOME or the nvidia-cuda-nvcc pip wheels; see docs/kernels.md)")
    rc = tool.main(["--arch", "sm_80", "--arch", "sm_90"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[sm_80] OK" in out and "[sm_90] OK" in out
    assert "passed: no spills" in out
    # the resource table: registers, shared memory, spills and occupancy per kernel
    for kernel in ("state_fwd", "state_bwd", "out", "dq", "dkdv", "scan_kernel"):
        assert kernel in out
    assert "blocks/SM" in out and "1024 blocks" in out  # the grid at B*H=4, N=16384 (fp16, D=M=64)


def test_ptxas_log_parsing():
    log = (
        "ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_80'\n"
        "ptxas info    : Function properties for _Z3fooPf\n"
        "    0 bytes stack frame, 8 bytes spill stores, 4 bytes spill loads\n"
        "ptxas info    : Used 42 registers, used 1 barriers, 4160 bytes smem\n"
    )
    rows = _tool().parse_ptxas(log)
    assert len(rows) == 1
    _, arch, regs, st, ld = rows[0]
    assert (arch, regs, st, ld) == ("sm_80", 42, 8, 4)


def test_kernel_names_map_to_the_table():
    tool = _tool()
    assert tool.kernel_key("void chunk_kernel<__half, 64, (causal_product::Kern)2>(causal_product::CudaArgs)") == (
        "out",
        "fp16",
        64,
    )
    assert tool.kernel_key("void chunk_kernel<float, 128, (causal_product::Kern)4>(causal_product::CudaArgs)") == (
        "dkdv",
        "fp32",
        128,
    )
    assert tool.kernel_key("scan_kernel(float*, int, long long, long long, int)") is None


def test_occupancy_limits():
    tool = _tool()
    a100, h100 = tool.ARCHS["sm_80"], tool.ARCHS["sm_90"]
    # 64 registers x 128 threads: 8192 per block -> 8 blocks; 48 KiB + 1 KiB reserved: 3 blocks (164 KiB)
    assert tool.occupancy(a100, 64, 48 * 1024) == (3, "smem")
    assert tool.occupancy(h100, 64, 48 * 1024) == (4, "smem")
    # 255 registers (rounded up per warp): 2 blocks of 4 warps
    assert tool.occupancy(a100, 255, 0) == (2, "regs")
    # more shared memory than one block may have: zero
    assert tool.occupancy(a100, 32, 200 * 1024)[0] == 0
    assert tool.occupancy(h100, 32, 200 * 1024)[0] == 1
    assert tool.occupancy(h100, 32, 0, warps=8) == (8, "warps")


@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="no C++ compiler")
def test_shared_memory_plan_fits_two_blocks_on_an_a100():
    """The kernels' own plan (compiled from causal_product_cuda.h): every kernel at its widest head
    dims leaves room for two resident blocks on an A100, and chunks are 64 or 32 tokens."""
    tool = _tool()
    table = tool.smem_table(shutil.which("c++") or shutil.which("g++"))
    assert len(table) == 5 * 3 * 2  # kernels x dtypes x widths
    for (_, dtype, width), (chunk, nbytes) in table.items():
        assert chunk == (64 if dtype != "fp32" and width == 64 else 32)
        assert 2 * (nbytes + 1024) <= 164 * 1024, (dtype, width, nbytes)


# ---------------------------------------------------------------- the CUDA kernel, emulated on CPU

SRC = TOOL.parent.parent / "kernels" / "causal_product"
DTYPE_CODES = {torch_name: code for code, torch_name in enumerate(("float32", "float16", "bfloat16"))}


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """causal_product_cuda.cu built for the CPU with cuda_emu.h: the kernel's own code (grid and tile
    index arithmetic, fragment loads, masks, barriers, the scan) run by emulated warps."""
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx is None:
        pytest.skip("no C++ compiler")
    exe = tmp_path_factory.mktemp("emu") / "cuda_emu"
    cmd = [cxx, "-std=c++20", "-O1", "-pthread", "-DCP_CUDA_EMULATE", f"-I{SRC}", "-x", "c++"]
    cmd += [str(SRC / "causal_product_cuda.cu"), "-x", "none", str(SRC / "cuda_emu_main.cpp"), "-o", str(exe)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0 and "barrier" in res.stderr and "No such file" in res.stderr:
        pytest.skip("the C++ compiler has no C++20 <barrier>")
    assert res.returncode == 0, res.stderr[-4000:]
    return exe


def run_emulated(exe: Path, shape: tuple[int, int, int, int, int], dtype: str, seed: int, tmp_path: Path):
    import numpy as np
    import torch

    b, h, n, d, m = shape
    gen = torch.Generator().manual_seed(seed)
    dt = getattr(torch, dtype)
    # inputs exactly representable in the kernel's dtype, so the reference sees what the kernel sees
    q, k = (torch.randn(b, h, n, d, generator=gen).to(dt).float() for _ in range(2))
    v, g = (torch.randn(b, h, n, m, generator=gen).to(dt).float() for _ in range(2))
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    with open(src, "wb") as f:
        f.write(np.array([b, h, n, d, m, DTYPE_CODES[dtype], 1], dtype=np.int32).tobytes())
        for t in (q, k, v, g):
            f.write(t.numpy().astype(np.float32).tobytes())
    res = subprocess.run([str(exe), str(src), str(dst)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    raw = torch.from_numpy(np.fromfile(dst, dtype=np.float32))
    sizes = [b * h * n * m, b * h * n, b * h * n * d, b * h * n * d, b * h * n * m]
    out, _den, dq, dk, dv = torch.split(raw, sizes)
    return (q, k, v, g), (out, dq, dk, dv)


# (B, H, N, D, M): several chunks of 64 (fp16/bf16) or 32 (fp32) tokens with a partial last one,
# D != M, head dims not a multiple of 16, the width-128 tiles.
EMU_CASES = [
    ((1, 2, 150, 32, 20), "float32"),
    ((1, 1, 150, 64, 64), "float16"),
    ((2, 1, 70, 16, 24), "bfloat16"),
    ((1, 1, 45, 100, 3), "float16"),
    ((1, 1, 70, 128, 128), "float32"),
]
EMU_TOL = {"float32": 1e-5, "float16": 1e-2, "bfloat16": 3e-2}


@pytest.mark.parametrize(("shape", "dtype"), EMU_CASES, ids=lambda x: str(x))
def test_cuda_kernel_emulated_against_reference(emulator, shape, dtype, tmp_path):
    """The CUDA kernel's code, run on emulated warps, against the float64 quadratic reference: out,
    dq, dk, dv. fp32 goes through 3xTF32 (close to fp32), fp16/bf16 through 16-bit mma and TF32."""
    import torch

    from attnbench.impls.linear import linear_quadratic

    (q, k, v, g), got = run_emulated(emulator, shape, dtype, 0, tmp_path)
    ref_in = [t.double().requires_grad_() for t in (q, k, v)]
    ref = linear_quadratic(*ref_in, causal=True)
    ref.backward(g.double())
    wants = [ref.detach(), *(t.grad for t in ref_in)]
    for name, x, want in zip(("out", "dq", "dk", "dv"), got, wants, strict=True):
        err = ((x.double().reshape(want.shape) - want).norm() / want.norm()).item()
        assert err < EMU_TOL[dtype], f"{name}: relative error {err:.2e} >= {EMU_TOL[dtype]:.0e}"
    assert all(torch.isfinite(x).all() for x in got)
