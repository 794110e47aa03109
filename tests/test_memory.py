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
