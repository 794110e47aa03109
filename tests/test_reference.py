"""The gate's machine reference and page-fault count, measured in every CPU worker."""

from __future__ import annotations

import ctypes
import mmap
import time

import pytest

from attnbench.measure.passes import measure_point
from attnbench.measure.reference import Reference, WorkerProbe, fault_cost_us
from attnbench.point import Point, Record, RunOptions, TimingConfig
from attnbench.results.rounds import pool

PAGE = mmap.PAGESIZE


def _fresh_pages(n: int):
    """A call that faults in ``n`` fresh pages (mapped and unmapped by itself, as glibc does for
    a large temporary it hands back to the kernel)."""

    def call() -> None:
        buf = mmap.mmap(-1, n * PAGE)
        buf[::PAGE] = b"\1" * n
        buf.close()

    return call


def test_the_probe_counts_the_faults_of_the_timed_calls_only():
    probe = WorkerProbe(time.process_time_ns)
    probe.before()
    _fresh_pages(64)()  # a warm-up call before the window: not counted
    probe.window_start()
    for _ in range(10):
        _fresh_pages(64)()
    probe.window_end()
    _fresh_pages(64)()  # after the window: not counted
    cols = probe.after(10)
    assert 60 <= cols["faults_per_call"] <= 70
    assert cols["ref_ms"] == cols["ref_mm_ms"] > 0 and cols["ref_copy_ms"] > 0 and cols["ref_fault_us"] > 0
    quiet = WorkerProbe(time.process_time_ns)
    x = bytearray(64 * PAGE)
    quiet.before()
    quiet.window_start()
    for _ in range(10):
        x[::PAGE] = b"\2" * 64  # memory the process keeps: no fault
    quiet.window_end()
    assert quiet.after(10)["faults_per_call"] < 1


def test_fault_cost_is_a_few_microseconds():
    assert 0.05 < fault_cost_us(time.perf_counter_ns) < 200


def test_the_reference_keeps_out_of_glibcs_heap():
    """Its buffers are mapped for it alone: it must not move glibc's thresholds, which decide the
    point's own fault state."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        pytest.skip("not glibc")

    class MallInfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]  # fmt: skip

    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc without mallinfo2")
    libc.mallinfo2.restype = MallInfo2
    before = libc.mallinfo2()
    ref = Reference(time.process_time_ns)
    ref.sample(2)
    after = libc.mallinfo2()
    assert after.hblkhd - before.hblkhd < 2**20 and after.uordblks - before.uordblks < 2**20
    assert ref.columns()["ref_mm_ms"] > 0


def test_every_cpu_kernel_point_carries_the_columns():
    point = Point.from_mapping(
        {"impl": "softmax", "pass": "fwd", "causal": True, "dtype": "float32", "B": 1, "H": 1, "N": 32, "D": 8,
         "M": 8, "seed": 0, "device": "cpu", "params": {}}
    )  # fmt: skip
    row = measure_point(point, RunOptions("cpu", 1, TimingConfig.from_table({"min_samples": 3}))).row
    assert row["status"] == "ok", row.get("error")
    for col in ("ref_ms", "ref_mm_ms", "ref_copy_ms", "ref_fault_us", "faults_per_call"):
        assert row[col] is not None and row[col] >= 0, col


def test_rounds_keep_their_reference_and_faults_in_round_order():
    rows = [{"point_id": "p", "status": "ok", "round": r, "ref_ms": 0.2 + r, "faults_per_call": 10.0 * r,
             "ref_fault_us": 2.0} for r in (2, 0, 1)]  # fmt: skip
    (rec,) = pool([Record(row, [1.0, 1.1]) for row in rows])
    assert rec.row["round_ref_ms"] == [0.2, 1.2, 2.2] and rec.row["round_faults_per_call"] == [0.0, 10.0, 20.0]
    assert rec.row["ref_ms"] == 1.2 and rec.row["faults_per_call"] == 10.0
    (single,) = pool([Record({**rows[0], "round": 0}, [1.0])])
    assert single.row["ref_ms"] == 2.2 and "round_ref_ms" not in single.row
