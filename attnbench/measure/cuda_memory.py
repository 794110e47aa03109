"""Peak CUDA memory of one call, in MiB (2^20 bytes), three ways side by side.

- ``peak_mib``: torch's caching allocator, ``max_memory_allocated()`` after
  ``reset_peak_memory_stats()``, minus ``memory_allocated()`` before the call: what the call
  itself needed beyond its inputs (and, for ``bwd``, beyond the retained forward graph).
- ``peak_reserved_mib``: ``max_memory_reserved()`` over the call: the allocator's whole pool at
  its largest (cached blocks from earlier calls included), what the process holds from the device.
- ``nvml_process_mib``: device memory NVML attributes to this process after the call (pool plus
  CUDA context); None without NVML or when the process is not visible (PID namespaces).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import torch

from attnbench.measure.nvml import open_nvml
from attnbench.measure.telemetry import cuda_identity

T = TypeVar("T")
MIB = float(2**20)


def nvml_process_mib(index: int | None = None) -> float | None:
    """This process's device memory as NVML sees it, MiB, or None."""
    nvml, _reason = open_nvml()
    if nvml is None:
        return None
    try:
        idx, uuid = cuda_identity(index)
        handle, _how = nvml.handle_for_cuda(idx, uuid)
        return nvml.process_mib(handle)
    except Exception:
        return None
    finally:
        nvml.close()


def cuda_peak_columns(fn: Callable[[], T]) -> tuple[dict[str, Any], T]:
    """(memory columns, fn's result) for one call of ``fn`` on the current CUDA device."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    cols = {
        "peak_mib": max(0, torch.cuda.max_memory_allocated() - base) / MIB,
        "peak_reserved_mib": torch.cuda.max_memory_reserved() / MIB,
        "nvml_process_mib": nvml_process_mib(),
        "mem_method": "cuda-allocator",
    }
    return cols, result
