"""Build cache of the compiled causal-product kernels, and the one-time build step before a sweep.

The sources (``kernels/causal_product/``, or ``attnbench/kernels_src/`` in a wheel) are compiled by
``torch.utils.cpp_extension.load`` (ninja) into ``$ATTNBENCH_KERNEL_CACHE`` (default
``~/.cache/attnbench/kernels``)``/<kind>[-sm<cc>]-<hash>``. The hash covers the sources, the torch,
CUDA and Python versions, the compiler flags and, for the CPU build (``-march=native``), the CPU's
feature flags; the CUDA build is also keyed on the GPU's compute capability and the nvcc version. A home
directory shared by A100 and H100 nodes thus keeps one build per architecture: neither rebuilt on every
switch nor loaded on the wrong GPU.

:func:`prepare` is the registry's ``prepare`` hook: it builds (or finds) the kernel in a child process
with no timeout before a sweep, so no sweep point spends its time compiling, and the parent never
initialises CUDA (a forked worker could not use it). A build killed mid-way leaves torch's ``lock`` file
in the build directory, on which every later build would wait forever; builds here hold an OS file lock
(released by the kernel when the process dies) around torch's, so a ``lock`` file found while holding
it is stale and is removed, with a message.

    python -m attnbench.impls.kernel_build cpu|cuda     # build now, print where and how long
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import torch

SOURCE_DIR_NAME = "causal_product"
CPU_SOURCES = ("causal_product_cpu.cpp", "causal_product_bindings.cpp")
CUDA_SOURCES = (*CPU_SOURCES, "causal_product_cuda.cu")
HEADERS = ("causal_product_math.h", "causal_product_cuda.h", "causal_product_cpu_simd.h")
CPU_FLAGS = ("-O3", "-march=native", "-ffp-contract=fast", "-fopenmp")
CUDA_FLAGS = ("-O3", "-std=c++17", "--use_fast_math")

_lock = threading.Lock()
_modules: dict[str, ModuleType] = {}
_build_errors: dict[str, str] = {}


def build_error(kind: str) -> str | None:
    """Why building ``kind`` failed earlier in this process, or None."""
    return _build_errors.get(kind)


def kind_of(device: str) -> str:
    return "cuda" if device.startswith("cuda") else "cpu"


def source_dir() -> Path | None:
    """Where the kernel sources are: the repo's ``kernels/`` or an installed wheel's ``kernels_src``."""
    pkg = Path(__file__).resolve().parent.parent  # attnbench/
    for root in (pkg.parent / "kernels", pkg / "kernels_src"):
        d = root / SOURCE_DIR_NAME
        if all((d / f).is_file() for f in (*CUDA_SOURCES, *HEADERS)):
            return d
    return None


def cache_root() -> Path:
    return Path(os.environ.get("ATTNBENCH_KERNEL_CACHE") or Path.home() / ".cache" / "attnbench" / "kernels")


def cpu_fingerprint() -> str:
    """-march=native code must not be reused on another CPU model: the cache is keyed on its flags."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cuda_arch() -> str:
    """Compute capability of the current CUDA device, e.g. "9.0" (initialises CUDA in this process)."""
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def nvcc_version() -> str:
    """The nvcc torch will use (its last --version line), or '' when there is none."""
    from torch.utils.cpp_extension import CUDA_HOME  # deferred: imports setuptools (slow, may be absent)

    if CUDA_HOME is None:
        return ""
    try:
        out = subprocess.run([str(Path(CUDA_HOME) / "bin" / "nvcc"), "--version"], capture_output=True, text=True)
    except OSError:
        return ""
    lines = out.stdout.strip().splitlines()
    return lines[-1] if lines else ""


def build_dir(kind: str, src: Path, arch: str | None = None, nvcc: str = "") -> Path:
    """The cache directory of one build: ``cpu-<hash>`` or ``cuda-sm<cc>-<hash>``."""
    h = hashlib.sha256()
    for name in sorted((*CUDA_SOURCES, *HEADERS)):
        h.update(name.encode())
        h.update((src / name).read_bytes())
    for part in (torch.__version__, str(torch.version.cuda), sys.version, " ".join(CPU_FLAGS)):
        h.update(part.encode())
    if kind == "cpu":
        h.update(cpu_fingerprint().encode())
    else:
        h.update(f"{arch}|{nvcc}|{' '.join(CUDA_FLAGS)}".encode())
    tag = f"cuda-sm{(arch or '').replace('.', '')}" if kind == "cuda" else "cpu"
    return cache_root() / f"{tag}-{h.hexdigest()[:16]}"


def why_not_buildable(kind: str) -> str | None:
    """Why the ``kind`` kernel cannot be built here (cheap checks, builds nothing), or None."""
    if source_dir() is None:
        return "kernel sources not found (neither kernels/causal_product in the repo nor attnbench/kernels_src)"
    try:
        from torch.utils.cpp_extension import verify_ninja_availability  # deferred: may fail (setuptools), caught

        verify_ninja_availability()
    except Exception:
        return "ninja is not installed (pip install ninja) to build the C++ kernel"
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler ({cxx!r} not on PATH)"
    if kind == "cuda":
        if torch.version.cuda is None:
            return "this torch build has no CUDA"
        if not torch.cuda.is_available():
            return "no CUDA device"
        from torch.utils.cpp_extension import CUDA_HOME  # deferred: imports setuptools (slow, may be absent)

        if CUDA_HOME is None:
            return "no CUDA toolkit (nvcc) found: set CUDA_HOME"
    return None


@contextmanager
def build_lock(build: Path, say: Callable[[str], None]) -> Iterator[None]:
    """Hold an exclusive OS lock on ``<build>.flock`` (freed by the OS if this process dies); inside
    it, a torch ``lock`` file left in ``build`` can only be stale: remove it."""
    build.parent.mkdir(parents=True, exist_ok=True)
    with open(build.parent / f"{build.name}.flock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process building {build.name}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            stale = build / "lock"
            if stale.exists():
                stale.unlink(missing_ok=True)
                say(f"removed a stale build lock left by an interrupted build: {stale}")
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _say(msg: str) -> None:
    print(f"attnbench kernels: {msg}", file=sys.stderr, flush=True)


def load(device: str = "cpu", *, verbose: bool = False, say: Callable[[str], None] = _say) -> ModuleType:
    """Build (once, cached on disk) and import the extension for ``device`` in this process."""
    kind = kind_of(device)
    with _lock:
        if kind in _modules:
            return _modules[kind]
        if kind in _build_errors:
            raise RuntimeError(_build_errors[kind])
        reason = why_not_buildable(kind)
        if reason is not None:
            raise RuntimeError(f"linear-causal-{kind} is unavailable: {reason}")
        from torch.utils.cpp_extension import load as torch_load  # deferred: imports setuptools (slow, may be absent)

        src = source_dir()
        assert src is not None
        arch = cuda_arch() if kind == "cuda" else None
        build = build_dir(kind, src, arch, nvcc_version() if kind == "cuda" else "")
        build.mkdir(parents=True, exist_ok=True)
        sources = [str(src / f) for f in (CUDA_SOURCES if kind == "cuda" else CPU_SOURCES)]
        saved_arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
        if arch is not None:  # exactly this GPU's architecture, as in the cache key
            os.environ["TORCH_CUDA_ARCH_LIST"] = arch
        try:
            with build_lock(build, say):
                mod = torch_load(
                    name=f"attnbench_causal_product_{kind}",
                    sources=sources,
                    extra_include_paths=[str(src)],
                    extra_cflags=[*CPU_FLAGS, *(["-DATTNBENCH_WITH_CUDA"] if kind == "cuda" else [])],
                    extra_cuda_cflags=list(CUDA_FLAGS) if kind == "cuda" else None,
                    extra_ldflags=["-fopenmp"],
                    build_directory=str(build),
                    with_cuda=kind == "cuda",
                    verbose=verbose,
                )
        except Exception as exc:
            msg = str(exc).strip().splitlines()
            _build_errors[kind] = f"building the {kind} kernel failed: {msg[-1] if msg else type(exc).__name__}"
            raise RuntimeError(_build_errors[kind]) from exc
        finally:
            if arch is not None:
                if saved_arch is None:
                    os.environ.pop("TORCH_CUDA_ARCH_LIST", None)
                else:
                    os.environ["TORCH_CUDA_ARCH_LIST"] = saved_arch
        _modules[kind] = mod
        return mod


def prepare(device: str) -> str | None:
    """The registry's ``prepare`` hook: build the kernel for ``device`` once, before a sweep.

    Runs ``python -m attnbench.impls.kernel_build <kind>`` with no timeout (its progress lines go to
    stderr) and returns None when the kernel is built, or a one-line reason it cannot be.
    """
    kind = kind_of(device)
    reason = why_not_buildable(kind)
    if reason is not None:
        return reason
    proc = subprocess.run(
        [sys.executable, "-m", "attnbench.impls.kernel_build", kind], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode == 0:
        return None
    lines = proc.stdout.strip().splitlines()
    return lines[-1] if lines else f"building the {kind} kernel failed (exit {proc.returncode})"


def main(argv: list[str] | None = None) -> int:
    """Build the kernel named on the command line; stderr gets progress, stdout the failure reason."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in ("cpu", "cuda"):
        print("usage: python -m attnbench.impls.kernel_build cpu|cuda")
        return 2
    kind = args[0]
    reason = why_not_buildable(kind)
    if reason is not None:
        print(reason)
        return 1
    t0 = time.perf_counter()
    try:
        mod = load(kind)
    except RuntimeError as exc:
        print(str(exc).splitlines()[-1])
        return 1
    _say(f"linear-causal-{kind} ready in {time.perf_counter() - t0:.1f} s ({Path(mod.__file__ or '').parent})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
