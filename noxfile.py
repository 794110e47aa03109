"""Developer sessions. `nox -s tests` is the test command CI runs (see README.md).

torch is installed explicitly first, pinned to the CPU build (`TORCH_SPEC`, overridable):
an unpinned torch would pull a multi-GB CUDA build. On a GPU machine set
ATTNBENCH_TORCH_SPEC to the CUDA build you want before `nox -s gpu`.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "typecheck", "tests", "kernels"]
nox.options.reuse_existing_virtualenvs = True

TORCH_SPEC = os.environ.get("ATTNBENCH_TORCH_SPEC", "torch==2.13.0")
# Triton for the interpreter tests and the ahead-of-time compile check on a CPU machine. A CUDA
# build of torch brings the Triton it was built with, so the gpu session does not install this.
TRITON_SPEC = "triton==3.9.0"
# nvcc and the CUDA headers from pip wheels, one release for all five (13.5's nvcc has no
# matching cccl wheel): the CUDA compile check runs on a fresh machine without a CUDA install.
NVCC_WHEELS = [
    "nvidia-cuda-nvcc==13.2.86",
    "nvidia-cuda-runtime==13.2.86",
    "nvidia-cuda-crt==13.2.86",
    "nvidia-nvvm==13.2.86",
    "nvidia-cuda-cccl==13.2.86",
]
PY = "3.11"


def _install(session: nox.Session, extras: str = "dev") -> None:
    session.install(TORCH_SPEC)
    session.install("-e", f".[{extras}]")


@nox.session(python=PY)
def tests(session: nox.Session) -> None:
    """The CPU test suite (GPU tests skip themselves without CUDA)."""
    _install(session)
    session.install(TRITON_SPEC)
    session.run("pytest", "-q", *session.posargs)


@nox.session(python=PY)
def lint(session: nox.Session) -> None:
    """ruff lint and format check."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", "attnbench", "tests", "tools", "noxfile.py")
    session.run("ruff", "format", "--check", "attnbench", "tests", "tools", "noxfile.py")


@nox.session(python=PY)
def typecheck(session: nox.Session) -> None:
    """mypy on the package."""
    _install(session)
    session.run("mypy", "attnbench")


@nox.session(python=PY)
def kernels(session: nox.Session) -> None:
    """Compile checks without a GPU: the CUDA kernel with nvcc from pip wheels for sm_80 and
    sm_90 (registers and spills printed), the Triton kernels ahead of time for both, and the
    kernel tests (the CPU twin against the float64 reference, the Triton interpreter)."""
    _install(session)
    session.install(TRITON_SPEC, *NVCC_WHEELS)
    nvcc = session.run(
        "python",
        "-c",
        "import sys; sys.path.insert(0, 'tools'); import check_cuda_compile as t; "
        "print(next(str(d / 'bin' / 'nvcc') for d in t._wheel_dirs() if (d / 'bin' / 'nvcc').is_file()))",
        silent=True,
    ).strip()
    session.run("python", "tools/check_cuda_compile.py", "--nvcc", nvcc)
    session.run("python", "tools/check_triton_compile.py")
    session.run(
        "pytest",
        "-q",
        "tests/test_cuda_compile.py",
        "tests/test_causal_product.py",
        "tests/test_chunked_triton.py",
        env={"NVCC": nvcc},
    )


@nox.session(python=PY)
def faults(session: nox.Session) -> None:
    """Fault injection (tools/fault_inject.py): kill the run, a worker or the fork server at
    random moments, tear the journal, fill the disk, race two writers, then resume; each trial
    must lose, duplicate and change nothing. Not a default session: 24 trials take several
    minutes on 2 cores (CI runs it: .ci/run)."""
    _install(session)
    session.run("python", "tools/fault_inject.py", "--trials", "24", *session.posargs)


@nox.session(python=PY)
def gpu(session: nox.Session) -> None:
    """Only the GPU tests (`-m gpu`): run on a machine with CUDA and a CUDA build of torch."""
    _install(session)
    session.run("pytest", "-q", "-m", "gpu", *session.posargs)
