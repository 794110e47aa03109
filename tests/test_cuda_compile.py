"""The CUDA kernels compile (sm_80, sm_90) with nvcc on a machine without a GPU, within their
resource budget: no spills, at least the occupancy floor (tools/check_cuda_compile.py)."""

from __future__ import annotations

import importlib.util
import shutil
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
