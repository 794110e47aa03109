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
