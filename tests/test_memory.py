"""CPU peak memory: what one call allocates, not what existed before it."""

from __future__ import annotations

import torch

from attnbench.measure.memory import cpu_peak_mib


def test_peak_counts_a_temporary_allocation():
    def work():
        x = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched, then freed
        return float(x[0])

    peak, method, result = cpu_peak_mib(work)
    assert method == "rss-hwm" and result == 1.0
    assert 60 <= peak <= 80


def test_peak_excludes_existing_memory_and_repeats():
    keep = torch.ones(128 * 2**20 // 4)  # exists before: not counted

    def work():
        return torch.ones(16 * 2**20 // 4).sum()

    first, _, _ = cpu_peak_mib(work)
    second, _, _ = cpu_peak_mib(work)  # freed memory returned to the OS: the peak shows again
    assert 14 <= first <= 30 and 14 <= second <= 30
    del keep


def test_allocator_peak_is_exact_and_repeatable():
    from attnbench.measure.memory import allocator_peak_mib

    def work():
        a = torch.ones(4 * 2**20 // 4)  # 4 MiB
        b = a * 2  # 4 MiB more, both live
        del a
        return b.sum()

    first = allocator_peak_mib(work)
    second = allocator_peak_mib(work)
    assert first[1] == "torch-allocator"
    assert first[0] == second[0]
    assert 8.0 <= first[0] < 8.1


_KEEP_SCRIPT = r"""
import json, resource, sys, torch
from attnbench.measure.memory import cpu_peak_mib, keep_freed_memory

torch.set_num_threads(1)
kept = keep_freed_memory()

def work():  # three 8 MiB buffers live at once, written, then freed, as a pass's temporaries are
    a = torch.ones(8 * 2**20 // 4)
    b = a + 1
    c = b * 2
    return float(c[0])

# Warm: torch asks for 64-byte-aligned blocks, a little more than a freed one holds, so the heap
# can grow a few times before freed neighbours merge into blocks that fit.
for _ in range(16):
    work()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    work()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
peak, method, _ = cpu_peak_mib(work)  # the memory call still sees the 24 MiB
print(json.dumps({"kept": kept, "faults": faults, "peak": peak, "method": method}))
"""


def test_kept_memory_is_reused_without_page_faults_and_still_counted_as_a_peak():
    # With glibc's defaults the same script faulted 10,176 to 61,120 pages in the 10 calls: 24 MiB
    # freed at once exceeds the trim threshold (twice the largest mmap'd block freed), so the heap
    # is given back and faulted in again.
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _KEEP_SCRIPT], capture_output=True, text=True, check=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["kept"] is True
    pages = 10 * 24 * 2**20 // 4096  # what faulting every call's buffer in again would cost
    assert got["faults"] < pages // 20, got
    assert got["method"] == "rss-hwm" and 20 <= got["peak"] <= 40, got
