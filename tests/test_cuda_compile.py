"""The CUDA kernel compiles (sm_80, sm_90) with nvcc on a machine without a GPU."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "check_cuda_compile.py"


def _tool():
    spec = importlib.util.spec_from_file_location("check_cuda_compile", TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_cuda_kernel_compiles(capsys):
    tool = _tool()
    nvcc = tool.find_nvcc()
    if nvcc is None:
        pytest.skip("no nvcc (PATH, $CUDA_HOME or the nvidia-cuda-nvcc pip wheels; see docs/kernels.md)")
    rc = tool.main(["--arch", "sm_80", "--arch", "sm_90"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "[sm_80] OK" in out and "[sm_90] OK" in out
    assert "spill" in out  # the per-kernel register/spill table was printed


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
