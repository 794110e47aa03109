"""Developer sessions. `nox -s tests` is the test command CI runs (see README.md).

torch is installed explicitly first, pinned to the CPU build (`TORCH_SPEC`, overridable):
an unpinned torch would pull a multi-GB CUDA build. On a GPU machine set
ATTNBENCH_TORCH_SPEC to the CUDA build you want before `nox -s gpu`.
"""

from __future__ import annotations

import os
import shutil

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
    """Compile checks without a GPU: the CUDA kernels with nvcc from pip wheels for sm_80 and
    sm_90, the Triton kernels ahead of time for both (each with its resource budget), and the
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
    # The two checks print the resource table (registers, shared memory, spills, occupancy per kernel
    # and architecture) and fail on a spill or on occupancy below the floor (docs/kernels.md).
    session.run("python", "tools/check_cuda_compile.py", "--nvcc", nvcc)
    session.run("python", "tools/check_triton_compile.py")
    # The kernel tests; `not slow` skips the test that reruns the nvcc check above.
    session.run(
        "pytest",
        "-q",
        "-m",
        "not slow",
        "tests/test_cuda_compile.py",
        "tests/test_causal_product.py",
        "tests/test_chunked_triton.py",
        env={"NVCC": nvcc},
    )


# Prints the CUDA_HOME made of the nvcc wheels (site-packages/nvidia/cu13: bin/nvcc, include,
# lib) after checking that torch's CUDA major matches them, and adds the unversioned libcudart.so
# that `-lcudart` (torch.utils.cpp_extension) links against: the runtime wheel ships only .so.13.
_CUDA_HOME_FROM_WHEELS = """
import sys, sysconfig, torch
from pathlib import Path
home = next((d for k in ('purelib', 'platlib') for d in (Path(sysconfig.get_paths()[k]) / 'nvidia' / 'cu13',)
             if (d / 'bin' / 'nvcc').is_file()), None)
if home is None:
    sys.exit('no nvcc in site-packages/nvidia/cu13: the nvcc wheels did not install')
if not str(torch.version.cuda or '').startswith('13.'):
    sys.exit(f'torch is built with CUDA {torch.version.cuda}; the nvcc wheels are CUDA 13: set ATTNBENCH_TORCH_SPEC '
             'to a CUDA 13 build of torch, or CUDA_HOME to a matching toolkit and run pytest -m gpu yourself')
so = home / 'lib' / 'libcudart.so'
if not so.exists():
    so.symlink_to(sorted((home / 'lib').glob('libcudart.so.*'))[-1].name)
print(home)
"""


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
    """Only the GPU tests (`-m gpu`): run on a machine with CUDA and a CUDA build of torch
    (ATTNBENCH_TORCH_SPEC). nvcc and the CUDA headers come from the same pinned pip wheels as the
    `kernels` session, as CUDA_HOME, so the CUDA kernel builds instead of its tests skipping."""
    _install(session)
    session.install(*NVCC_WHEELS)
    cuda_home = session.run("python", "-c", _CUDA_HOME_FROM_WHEELS, silent=True).strip().splitlines()[-1]
    env = {
        "CUDA_HOME": cuda_home,
        "NVCC": f"{cuda_home}/bin/nvcc",
        "PATH": f"{cuda_home}/bin{os.pathsep}{os.environ.get('PATH', '')}",
    }
    session.run("pytest", "-q", "-m", "gpu", *session.posargs, env=env)


@nox.session(python=PY)
def slurm(session: nox.Session) -> None:
    """A smoke sweep through a real single-node Slurm (tools/slurm_smoke.py): installs Debian's
    slurm-wlm and munge if missing (needs root: CI is), starts munged, slurmctld and slurmd in a
    temporary directory, checks the Slurm run against a local one, scancel + --resume, one writer
    per shard journal, and always stops the daemons. CPU points only; a few minutes."""
    if not all(shutil.which(t) or os.path.exists(f"/usr/sbin/{t}") for t in ("slurmctld", "slurmd", "munged")):
        if os.geteuid() != 0:
            session.error("slurm-wlm and munge are not installed and this is not root: apt-get install slurm-wlm munge")
        env = {"DEBIAN_FRONTEND": "noninteractive"}
        session.run("apt-get", "update", "-qq", external=True, env=env)
        session.run(
            "apt-get", "install", "-y", "-qq", "--no-install-recommends", "slurm-wlm", "munge", external=True, env=env
        )
    session.install(TORCH_SPEC)
    session.install("-e", ".")
    session.run("python", "tools/slurm_smoke.py", *session.posargs)
