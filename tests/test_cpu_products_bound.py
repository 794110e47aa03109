"""tools/cpu_products_bound.py: the products-only lower bound of the CPU kernel's time (docs/kernels.md).
Its arithmetic on given numbers, its program built and run, its chunk tied to the kernel's, and its
one-line errors. No timing is asserted: the machine is shared."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.impls import causal_product as cp

TOOL = Path(__file__).resolve().parent.parent / "tools" / "cpu_products_bound.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("cpu_products_bound", TOOL)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def exe(tool, tmp_path_factory):
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler")
    return tool.build(tmp_path_factory.mktemp("bound"))


def test_figures_by_hand(tool):
    # 1000 ns of products per chunk; B=1, H=4, N=1600, C=16: 100 chunks a sequence, two sequences a
    # thread on 2 threads, so 200 chunks = 0.2 ms. The seqlen model's fwd+bwd FLOPs at D=M=64:
    # 3 * (4*4*1600*4096 + 4*4*1600*64 + 4*1600*(3*64 + 64)) = 324,403,200.
    prod = {"ns_forward": 300.0, "ns_prefix": 300.0, "ns_suffix": 400.0}
    prod |= {"macs_forward": 1000.0, "macs_prefix": 1000.0, "macs_suffix": 2000.0}
    f = tool.figures(prod, 1, 4, 1600, 64, 64, 16, 2, 4e12, 50.0)
    assert f["bound_ms"] == 0.2
    assert f["ceiling_pct"] == pytest.approx(100 * 324_403_200 / 0.2e-3 / 4e12, abs=0.05)  # 40.6 %
    assert f["budget_ms"] == pytest.approx(324_403_200 / 2e12 * 1e3, abs=0.005)  # 0.16 ms at 50 %
    assert f["products_share_pct"] == pytest.approx(123.3, abs=0.1)
    assert f["products_gflops_per_thread"] == 8.0  # 2 * 4000 MACs per 1000 ns


def test_one_sequence_is_split_over_threads_by_chunks(tool):
    prod = {"ns_forward": 1000.0, "ns_prefix": 0.0, "ns_suffix": 0.0}
    prod |= {"macs_forward": 1.0, "macs_prefix": 1.0, "macs_suffix": 1.0}
    # B*H = 1 < 2 threads: 101 chunks (N = 1601) in ceil(101 / 2) = 51 per thread
    assert tool.figures(prod, 1, 1, 1601, 64, 64, 16, 2, 1e12, 50.0)["bound_ms"] == 0.05  # 0.051 rounded
    # B*H = 3 >= 2 threads: whole sequences, two on the busier thread
    assert tool.figures(prod, 1, 3, 1600, 64, 64, 16, 2, 1e12, 50.0)["bound_ms"] == 0.2


def test_products_program_counts_the_decompositions_work(tool, exe):
    got = tool.products_ns(exe, 64, 64, 16, 1, 1)
    assert all(got[k] > 0 for k in ("ns_forward", "ns_prefix", "ns_suffix"))
    # per chunk of 16 at D = M = 64: two D x M state products and the 16 x 16 blocks (triangles at half)
    # forward 16*2*4096 + 256*64 + 256*32; prefix the same; suffix three state products and four blocks
    assert (got["macs_forward"], got["macs_prefix"], got["macs_suffix"]) == (155648, 155648, 245760)
    f = tool.figures(got, 1, 4, 16384, 64, 64, 16, 1, 1e11, 50.0)
    assert f["real_flops_over_model"] == pytest.approx(1.374, abs=0.001)  # the kernel's extra work


def test_products_program_rejects_bad_arguments(exe):
    done = subprocess.run([str(exe), "64", "64", "24", "1", "1"], capture_output=True, text=True)
    assert done.returncode == 2 and "multiple of 16" in done.stderr


def test_chunk_is_the_kernels(tool):
    reason = cp.available("cpu")
    if reason is not None:
        pytest.skip(f"linear-causal-cpu unavailable: {reason}")
    assert tool.kernel_chunk() == cp.load_extension("cpu").cpu_chunk


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--N", "0"], "--N: got 0, expected an integer >= 1"),
        (["--threads", "-1"], "--threads: got -1, expected an integer >= 1"),
        (["--chunk", "24"], "--chunk: got 24, expected a multiple of 16"),
        (["--target", "150"], "--target: got 150, expected a percentage in (0, 100]"),
    ],
)
def test_bad_arguments_are_one_line_errors(args, message):
    done = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == f"cpu_products_bound: {message}"
    assert done.stdout == ""
