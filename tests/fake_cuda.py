"""A recording fake of the torch.cuda API the CUDA timer uses (Event: record, synchronize,
elapsed_time; synchronize; empty_cache) and of its L2 flusher, for tests on a machine without a
GPU. The work itself runs on the CPU; the events report the device times the test chooses."""

from __future__ import annotations

import itertools
from typing import Any

import torch

from attnbench.measure import cuda_timer


class FakeCuda:
    """Fake torch.cuda events and waits. Every call is logged in order; event ``i`` is logged as
    ``ev{i}``, and elapsed times come from ``device_ms`` in turn."""

    def __init__(self, device_ms):
        self.log: list[str] = []
        self.events: list[object] = []
        self.times = itertools.cycle(device_ms)
        fake = self

        class Event:
            def __init__(self, enable_timing=False):
                assert enable_timing
                self.i = len(fake.events)
                fake.events.append(self)

            def record(self, stream=None):
                fake.log.append(f"record-ev{self.i}")

            def synchronize(self):
                fake.log.append(f"wait-ev{self.i}")

            def elapsed_time(self, end):
                return next(fake.times)

        class Flusher:
            def __init__(self, nbytes, device=None):
                self.nbytes = nbytes
                fake.flush_nbytes = nbytes

            def __call__(self):
                fake.log.append("flush")

        self.Event, self.Flusher = Event, Flusher
        self.flush_nbytes = None

    def timed_part(self):
        """The log from the first recorded event on, events named start/end (the timer creates a
        batch of start events, then as many end events)."""
        half = len(self.events) // 2
        first = next(i for i, e in enumerate(self.log) if e.startswith("record-"))
        # the entry before the first record is the flush / head start that belongs to sample 1
        out = []
        for e in self.log[first - 1 :]:
            if e.startswith(("record-ev", "wait-ev")):
                kind, idx = e.split("-ev")
                e = f"{kind}-{'start' if int(idx) < half else 'end'}"
            out.append(e)
        return out


def install_fake_cuda(monkeypatch: Any, device_ms: list[float], l2: int = 50 * 2**20) -> FakeCuda:
    """Patch torch.cuda and the timer's flusher with a :class:`FakeCuda`; return it."""
    fc = FakeCuda(device_ms)
    monkeypatch.setattr(torch.cuda, "Event", fc.Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: fc.log.append("sync"))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: fc.log.append("empty-cache"))
    monkeypatch.setattr(cuda_timer, "L2Flusher", fc.Flusher)
    monkeypatch.setattr(cuda_timer, "l2_bytes", lambda device=None: l2)
    return fc
