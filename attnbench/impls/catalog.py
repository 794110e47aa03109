"""The built-in implementations' metadata as a static table, so that ``attnbench list`` answers
without importing torch (importing the impl modules costs about 2 s of CPU; the list should
take well under one). tests/test_terminal_list.py checks every entry against the registry
(name, family, modes, devices, dtypes, backward, reference, description, module), so a change
to an impl's ``register(...)`` that is not copied here fails the tests.

Availability without torch: the device list, and for the compiled kernels the toolchain their
own ``available`` checks (kernel sources, ninja, a C++ compiler; Triton installed). Anything
that needs torch (a CUDA device, a failed build in this process) is left to the registry:
``attnbench list --probe`` imports the impls and asks them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class BuiltinImpl:
    """What ``attnbench.impls.registry.ImplSpec`` says of a built-in, without its function.
    ``needs``: toolchain requirements checked without torch (``kernel-sources``, ``ninja``,
    ``c++``, ``triton``)."""

    name: str
    module: str
    family: str
    description: str
    causal: tuple[bool, ...] = (True, False)
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[str, ...] = ALL_DTYPES
    backward: bool = True
    reference: str | None = None
    needs: tuple[str, ...] = ()

    @property
    def reference_name(self) -> str:
        """The float64 reference of this impl's family (as ``ImplSpec.reference_name``)."""
        if self.reference:
            return self.reference
        return "softmax" if self.family == "softmax" else "linear-quadratic"


BUILTINS: tuple[BuiltinImpl, ...] = (
    BuiltinImpl(
        "softmax",
        "attnbench.impls.softmax",
        "softmax",
        "naive softmax attention, the N x N matrix materialised (the softmax reference)",
        reference="softmax",
    ),
    BuiltinImpl(
        "sdpa",
        "attnbench.impls.softmax",
        "softmax",
        "torch.nn.functional.scaled_dot_product_attention (PyTorch picks the backend)",
    ),
    BuiltinImpl(
        "linear-quadratic",
        "attnbench.impls.linear",
        "linear",
        "linear attention the O(N^2) way: masked phi(Q) phi(K)^T V, normalised (the linear reference)",
        reference="linear-quadratic",
    ),
    BuiltinImpl(
        "linear-cumsum",
        "attnbench.impls.linear",
        "linear",
        "causal: every prefix state S_i materialised by cumsum, O(N D M) memory; non-causal: associative form",
    ),
    BuiltinImpl(
        "linear-chunked",
        "attnbench.impls.chunked",
        "linear",
        "chunkwise-parallel linear attention (chunk size a parameter, default 64)",
    ),
    BuiltinImpl(
        "linear-recurrent",
        "attnbench.impls.recurrent",
        "linear",
        "token-by-token RNN form (causal only): a D x M state carried through a Python loop",
        causal=(True,),
    ),
    BuiltinImpl(
        "linear-causal-cpu",
        "attnbench.impls.causal_product",
        "linear",
        "compiled C++ chunked causal linear attention (OpenMP, SIMD), linear-memory backward",
        causal=(True,),
        devices=("cpu",),
        needs=("kernel-sources", "ninja", "c++"),
    ),
    BuiltinImpl(
        "linear-causal-cuda",
        "attnbench.impls.causal_product",
        "linear",
        "compiled CUDA causal linear attention, sequence-parallel chunks on tensor cores",
        causal=(True,),
        devices=("cuda",),
        dtypes=("float32", "float16", "bfloat16"),
        needs=("kernel-sources", "ninja", "c++"),
    ),
    BuiltinImpl(
        "linear-chunked-triton",
        "attnbench.impls.chunked_triton",
        "linear",
        "chunked causal linear attention in Triton, sequence-parallel chunks, fwd and bwd kernels",
        causal=(True,),
        devices=("cuda",),
        dtypes=("float32", "float16", "bfloat16"),
        needs=("triton",),
    ),
)

KERNEL_SOURCES = ("causal_product_cpu.cpp", "causal_product_bindings.cpp", "causal_product_cuda.cu")


def _kernel_sources_found() -> bool:
    pkg = Path(__file__).resolve().parent.parent  # attnbench/
    return any(
        all((root / "causal_product" / f).is_file() for f in KERNEL_SOURCES)
        for root in (pkg.parent / "kernels", pkg / "kernels_src")
    )


def _missing(need: str) -> str | None:
    """Why the requirement ``need`` is not met here (the impls' own wording), or None."""
    if need == "kernel-sources" and not _kernel_sources_found():
        return "kernel sources not found (neither kernels/causal_product in the repo nor attnbench/kernels_src)"
    if need == "ninja" and shutil.which("ninja") is None:
        return "ninja is not installed (pip install ninja) to build the C++ kernel"
    if need == "c++":
        cxx = os.environ.get("CXX", "c++")
        if shutil.which(cxx) is None:
            return f"no C++ compiler ({cxx!r} not on PATH)"
    if need == "triton":
        try:
            found = importlib.util.find_spec("triton") is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return "triton is not installed (pip install triton)"
    return None


def static_reason(impl: BuiltinImpl, device: str) -> str | None:
    """Why ``impl`` cannot run on ``device``, as far as can be told without torch, or None."""
    if device not in impl.devices:
        return f"{impl.name} does not run on {device} (devices: {', '.join(impl.devices)})"
    for need in impl.needs:
        why = _missing(need)
        if why is not None:
            return why
    return None


def builtin(name: str) -> BuiltinImpl | None:
    return next((b for b in BUILTINS if b.name == name), None)
