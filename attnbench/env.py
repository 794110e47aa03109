"""The machine and software fingerprint stored with every run (and used to refuse comparing
runs from different set-ups), and the device a run uses. Imports torch: commands import this
module inside their bodies."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from attnbench import __version__
from attnbench.errors import UserError
from attnbench.point import DEVICES


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(path: Path) -> str | None:
    """HEAD of the git repository containing ``path`` (with '-dirty' if modified), or None."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "") if sha else None


def git_branch(path: Path) -> str | None:
    """The branch checked out in the git repository containing ``path``, or None (detached, no git)."""
    try:
        name = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--abbrev-ref", "HEAD"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return name if name and name != "HEAD" else None


def fingerprint(device: str, threads: int | None = None) -> dict[str, Any]:
    """CPU, threads, Python, torch, CUDA and GPU facts; git commits of the cwd and of attnbench."""
    info: dict[str, Any] = {
        "attnbench": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "device": device,
        "gpu": None,
        "git_commit_cwd": git_commit(Path.cwd()),
        "git_branch": git_branch(Path.cwd()),
        "git_commit_attnbench": git_commit(Path(__file__).resolve().parent),
    }
    if device == "cuda" and torch.cuda.is_available():
        idx = torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        info["gpu"] = props.name
        info["gpu_capability"] = f"{props.major}.{props.minor}"
        info["gpu_memory_mib"] = props.total_memory / 2**20
        info["gpu_uuid"] = str(getattr(props, "uuid", "")) or None
    return info


def resolve_device(device: str) -> str:
    """``auto`` -> cuda when a CUDA device is visible, else cpu; ``cuda`` without one is a
    UserError. (torch.cuda.is_available() does not create a CUDA context.)"""
    if device not in ("auto", *DEVICES):
        raise UserError(f"--device {device!r}: expected auto, {' or '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible (torch.cuda.is_available() is False)")
    return device
