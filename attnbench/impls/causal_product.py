"""Compiled causal linear attention (C++/OpenMP on CPU, CUDA on GPU), built on first use.

The kernels (``kernels/causal_product/``) compute the full normalised causal linear attention
from the features phi(q), phi(k) (phi = elu + 1 is applied here, by PyTorch, so autograd carries
the gradient on to raw q and k), with a linear-memory backward (Eq. 13-15): prefix sum for
d phi(q), suffix sum for d phi(k) and dv, only a D x M state in flight. Sources are compiled with
``torch.utils.cpp_extension.load`` (ninja) into ``$ATTNBENCH_KERNEL_CACHE`` (default
``~/.cache/attnbench/kernels``)/<hash of sources, torch version, CPU flags>.

Importing this module builds nothing; :func:`available` reports why a kernel cannot be built.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from attnbench.impls.common import check_shapes, feature_map
from attnbench.impls.registry import register

SOURCE_DIR_NAME = "causal_product"
CPU_SOURCES = ("causal_product_cpu.cpp", "causal_product_bindings.cpp")
CUDA_SOURCES = (*CPU_SOURCES, "causal_product_cuda.cu")
HEADERS = ("causal_product_math.h", "causal_product_cuda.h")
# The CUDA kernel holds one state column per thread in registers: D and M are bounded.
CUDA_MAX_HEAD_DIM = 128
CPU_DTYPES = ("float64", "float32", "float16", "bfloat16")
CUDA_DTYPES = ("float32", "float16", "bfloat16")

_lock = threading.Lock()
_modules: dict[str, ModuleType] = {}
_build_errors: dict[str, str] = {}


def source_dir() -> Path | None:
    """Where the kernel sources are: the repo's ``kernels/`` or an installed wheel's ``kernels_src``."""
    pkg = Path(__file__).resolve().parent.parent  # attnbench/
    for root in (pkg.parent / "kernels", pkg / "kernels_src"):
        d = root / SOURCE_DIR_NAME
        if all((d / f).is_file() for f in (*CUDA_SOURCES, *HEADERS)):
            return d
    return None


def _cpu_fingerprint() -> str:
    """-march=native code must not be reused on another CPU model: key the cache on its flags."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_dir(kind: str, src: Path) -> Path:
    """Build directory for ``kind`` ("cpu" or "cuda"), keyed on sources, torch and the CPU."""
    h = hashlib.sha256()
    for name in sorted((*CUDA_SOURCES, *HEADERS)):
        h.update(name.encode())
        h.update((src / name).read_bytes())
    h.update(torch.__version__.encode())
    h.update(str(torch.version.cuda).encode())
    h.update(sys.version.encode())
    h.update(_cpu_fingerprint().encode())
    h.update(" ".join(_cflags()).encode())
    root = os.environ.get("ATTNBENCH_KERNEL_CACHE") or str(Path.home() / ".cache" / "attnbench" / "kernels")
    return Path(root) / f"{kind}-{h.hexdigest()[:16]}"


def _cflags() -> list[str]:
    # -march=native: the extension is built on the machine that runs it (the cache is keyed on the
    # CPU flags). OpenMP: at::parallel_for's pragma is compiled into this extension.
    return ["-O3", "-march=native", "-ffp-contract=fast", "-fopenmp"]


def _why_not_buildable(device: str) -> str | None:
    if source_dir() is None:
        return "kernel sources not found (neither kernels/causal_product in the repo nor attnbench/kernels_src)"
    try:
        from torch.utils.cpp_extension import verify_ninja_availability

        verify_ninja_availability()
    except Exception:
        return "ninja is not installed (pip install ninja) to build the C++ kernel"
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler ({cxx!r} not on PATH)"
    if device == "cuda":
        if torch.version.cuda is None:
            return "this torch build has no CUDA"
        if not torch.cuda.is_available():
            return "no CUDA device"
        from torch.utils.cpp_extension import CUDA_HOME

        if CUDA_HOME is None:
            return "no CUDA toolkit (nvcc) found: set CUDA_HOME"
    return None


def available(device: str) -> str | None:
    """None if the kernel for ``device`` is built or can be built, else the reason."""
    kind = "cuda" if device == "cuda" else "cpu"
    if kind in _build_errors:
        return _build_errors[kind]
    return _why_not_buildable(kind)


def load_extension(device: str = "cpu", *, verbose: bool = False) -> ModuleType:
    """Build (once per process, cached on disk) and import the extension for ``device``."""
    kind = "cuda" if device == "cuda" else "cpu"
    with _lock:
        if kind in _modules:
            return _modules[kind]
        if kind in _build_errors:
            raise RuntimeError(_build_errors[kind])
        reason = _why_not_buildable(kind)
        if reason is not None:
            raise RuntimeError(f"linear-causal-{kind} is unavailable: {reason}")
        from torch.utils.cpp_extension import load

        src = source_dir()
        assert src is not None
        build = cache_dir(kind, src)
        build.mkdir(parents=True, exist_ok=True)
        sources = [str(src / f) for f in (CUDA_SOURCES if kind == "cuda" else CPU_SOURCES)]
        try:
            mod = load(
                name=f"attnbench_causal_product_{kind}",
                sources=sources,
                extra_include_paths=[str(src)],
                extra_cflags=_cflags() + (["-DATTNBENCH_WITH_CUDA"] if kind == "cuda" else []),
                extra_cuda_cflags=["-O3", "-std=c++17", "--use_fast_math"] if kind == "cuda" else None,
                extra_ldflags=["-fopenmp"],
                build_directory=str(build),
                with_cuda=kind == "cuda",
                verbose=verbose,
            )
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            _build_errors[kind] = f"building the {kind} kernel failed: {msg[-1] if msg else type(exc).__name__}"
            raise RuntimeError(_build_errors[kind]) from exc
        _modules[kind] = mod
        return mod


class CausalProduct(torch.autograd.Function):
    """Normalised causal linear attention from features.

    qf, kf: [B, H, N, D] (phi already applied), v: [B, H, N, M] -> [B, H, N, M]. Saves the
    inputs, the output and the [B, H, N] normaliser: O(N (D + M)) memory, never O(N D M).
    """

    @staticmethod
    def forward(ctx: Any, qf: torch.Tensor, kf: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ext = load_extension(qf.device.type)
        out, den = ext.forward(qf, kf, v)
        ctx.save_for_backward(qf, kf, v, out, den)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        qf, kf, v, out, den = ctx.saved_tensors
        ext = load_extension(qf.device.type)
        dqf, dkf, dv = ext.backward(qf, kf, v, out, den, grad_out)
        return dqf, dkf, dv


class CausalProductPhi(torch.autograd.Function):
    """Normalised causal linear attention from raw q, k (CPU): the kernel applies phi = elu + 1
    on load and returns gradients w.r.t. raw q, k, so no phi tensors are made or saved."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        ext = load_extension("cpu")
        out, den = ext.forward_phi(q, k, v)
        ctx.save_for_backward(q, k, v, out, den)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v, out, den = ctx.saved_tensors
        dq, dk, dv = load_extension("cpu").backward_phi(q, k, v, out, den, grad_out)
        return dq, dk, dv


def causal_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """phi = elu + 1 on q and k, then the compiled kernel: inside it on CPU; on CUDA by PyTorch
    (differentiable) before the kernel."""
    if q.device.type == "cpu":
        return CausalProductPhi.apply(q, k, v)
    return CausalProduct.apply(feature_map(q), feature_map(k), v)


def _cuda_limits(point: dict) -> str | None:
    if point["D"] > CUDA_MAX_HEAD_DIM or point["M"] > CUDA_MAX_HEAD_DIM:
        return (
            f"linear-causal-cuda supports head dims D, M <= {CUDA_MAX_HEAD_DIM} "
            f"(per-thread register state); got D={point['D']}, M={point['M']}"
        )
    return None


def _causal_only(causal: bool) -> None:
    if not causal:
        raise ValueError("the causal-product kernels are causal only (causal=True)")


def _est_bytes(point: dict) -> int:
    elem = {"float16": 2, "bfloat16": 2, "float64": 8}.get(point["dtype"], 4)
    b, h, n, d, m = point["B"], point["H"], point["N"], point["D"], point["M"]
    io = b * h * n * (d + m) * elem  # one copy of q/k-sized and v-sized tensors
    return 3 * io + b * h * n * 8


@register(
    "linear-causal-cpu",
    family="linear",
    causal=(True,),
    devices=("cpu",),
    dtypes=CPU_DTYPES,
    available=available,
    est_bytes=_est_bytes,
    description="compiled C++ chunked causal linear attention (OpenMP), linear-memory backward",
)
def linear_causal_cpu(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """Causal linear attention by the C++ kernel. q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M]."""
    _causal_only(causal)
    check_shapes(q, k, v)
    if q.device.type != "cpu":
        raise ValueError(f"linear-causal-cpu needs CPU tensors, got {q.device}")
    return causal_product(q, k, v)


@register(
    "linear-causal-cuda",
    family="linear",
    causal=(True,),
    devices=("cuda",),
    dtypes=CUDA_DTYPES,
    available=available,
    supports=_cuda_limits,
    est_bytes=_est_bytes,
    description="compiled CUDA causal linear attention (state in registers), linear-memory backward",
)
def linear_causal_cuda(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = True) -> torch.Tensor:
    """Causal linear attention by the CUDA kernel. q, k: [B, H, N, D]; v: [B, H, N, M] -> [B, H, N, M].

    D and M must each be at most ``CUDA_MAX_HEAD_DIM`` (128).
    """
    _causal_only(causal)
    _, _, _, d, m = check_shapes(q, k, v)
    reason = _cuda_limits({"D": d, "M": m})
    if reason is not None:
        raise ValueError(reason)
    if q.device.type != "cuda":
        raise ValueError(f"linear-causal-cuda needs CUDA tensors, got {q.device}")
    return causal_product(q, k, v)
