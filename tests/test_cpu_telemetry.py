"""CPU telemetry from fake /proc and /sys files: other processes' share, the worker's own share,
steal, load average and clock; missing files leave columns None; the kernel pass joins the
columns to a real point."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnbench.measure.cpu_telemetry import (
    CPU_TELEMETRY_COLUMNS,
    CpuWindow,
    Sources,
    parse_cpuinfo_mhz,
    parse_loadavg,
    parse_stat,
)

STAT = "cpu  {user} 0 {system} {idle} {iowait} 0 0 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\nintr 1 2 3\n"


class FakeMachine:
    """A root directory with proc/stat, proc/loadavg, proc/cpuinfo (and optionally cpufreq), a
    fake own-CPU clock and a fake monotonic clock that tests advance by hand."""

    def __init__(self, root: Path, cpufreq_khz: list[int] | None = None) -> None:
        self.root = root
        (root / "proc").mkdir(parents=True)
        self.own_ns = 0
        self.now = 100.0
        self.set_stat(user=1000, system=500, idle=8000, iowait=0, steal=0)
        (root / "proc" / "loadavg").write_text("3.25 2.00 1.00 4/300 12345\n")
        (root / "proc" / "cpuinfo").write_text(
            "processor\t: 0\ncpu MHz\t\t: 2500.000\n\nprocessor\t: 1\ncpu MHz\t\t: 2400.000\n"
        )
        for i, khz in enumerate(cpufreq_khz or []):
            d = root / "sys" / "devices" / "system" / "cpu" / f"cpu{i}" / "cpufreq"
            d.mkdir(parents=True)
            (d / "scaling_cur_freq").write_text(f"{khz}\n")

    def set_stat(self, **ticks: int) -> None:
        (self.root / "proc" / "stat").write_text(STAT.format(**ticks))

    def sources(self) -> Sources:
        return Sources(root=self.root, clk_tck=100, own_cpu_ns=lambda: self.own_ns, monotonic=lambda: self.now)


def test_parsers():
    st = parse_stat(STAT.format(user=10, system=5, idle=80, iowait=3, steal=2))
    assert st is not None and (st.busy, st.idle, st.steal, st.total) == (15, 83, 2, 100)
    assert parse_stat("intr 1 2\n") is None and parse_stat("cpu a b c\n") is None
    assert parse_stat("cpu  1 2 3 4\n") == parse_stat("cpu  1 2 3 4 0 0 0 0\n")  # old kernels: fewer fields
    assert parse_loadavg("0.52 0.58 0.59 1/467 8\n") == 0.52 and parse_loadavg("") is None
    assert parse_cpuinfo_mhz("cpu MHz\t: 1200.5\ncpu MHz : x\nmodel name : cpu MHz box\n") == [1200.5]


def test_other_processes_share_is_machine_busy_minus_own(tmp_path):
    m = FakeMachine(tmp_path)
    with CpuWindow(m.sources()) as cpu:
        # 2 CPUs for 1 s = 200 ticks: the machine was busy 150 of them, the worker used 0.9 s (90)
        m.set_stat(user=1000 + 120, system=500 + 30, idle=8000 + 40, iowait=0 + 6, steal=4)
        m.own_ns = 900_000_000
        m.now += 1.0
    cols = cpu.columns()
    assert set(cols) == set(CPU_TELEMETRY_COLUMNS)
    assert cols["cpu_other_busy_pct"] == pytest.approx(100 * (150 - 90) / 200)
    assert cols["cpu_self_busy_pct"] == pytest.approx(45.0)
    assert cols["cpu_steal_pct"] == pytest.approx(2.0)
    assert cols["load_avg_1m"] == 3.25
    assert cols["cpu_mhz_mean"] == pytest.approx(2450.0) and cols["cpu_mhz_min"] == 2400.0  # from cpuinfo
    assert cols["cpu_window_s"] == pytest.approx(1.0)


def test_an_idle_machine_reads_zero_and_tick_rounding_never_goes_negative(tmp_path):
    m = FakeMachine(tmp_path)
    with CpuWindow(m.sources()) as cpu:
        # the kernel put 49 ticks on the machine, the worker's exact clock says 0.5 s (50 ticks)
        m.set_stat(user=1000 + 49, system=500, idle=8000 + 151, iowait=0, steal=0)
        m.own_ns = 500_000_000
        m.now += 1.0
    assert cpu.columns()["cpu_other_busy_pct"] == 0.0


def test_cpufreq_is_preferred_over_cpuinfo(tmp_path):
    m = FakeMachine(tmp_path, cpufreq_khz=[3_000_000, 1_800_000])
    with CpuWindow(m.sources()) as cpu:
        m.set_stat(user=1010, system=500, idle=8010, iowait=0, steal=0)
    cols = cpu.columns()
    assert cols["cpu_mhz_mean"] == pytest.approx(2400.0) and cols["cpu_mhz_min"] == 1800.0


def test_missing_files_leave_columns_none(tmp_path):
    src = Sources(root=tmp_path / "nowhere", clk_tck=100)
    with CpuWindow(src) as cpu:
        pass
    cols = cpu.columns()
    assert cols["cpu_other_busy_pct"] is None and cols["load_avg_1m"] is None and cols["cpu_mhz_mean"] is None
    assert cols["cpu_window_s"] is not None and cols["cpu_window_s"] >= 0


def test_a_window_with_no_ticks_has_no_percentages(tmp_path):
    m = FakeMachine(tmp_path)
    with CpuWindow(m.sources()) as cpu:
        pass  # /proc/stat unchanged: too short to say anything
    assert cpu.columns()["cpu_other_busy_pct"] is None


def test_a_reading_that_raises_never_costs_the_point(tmp_path):
    def boom() -> int:
        raise RuntimeError("no clock")

    with CpuWindow(Sources(root=tmp_path, own_cpu_ns=boom)) as cpu:
        pass
    assert cpu.columns() == dict.fromkeys(CPU_TELEMETRY_COLUMNS)


def test_columns_are_documented():
    from attnbench.results.schema import COLUMNS

    assert set(CPU_TELEMETRY_COLUMNS) <= set(COLUMNS)


def test_real_proc_on_linux_gives_sane_values():
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat")
    with CpuWindow() as cpu:
        x = 0
        for i in range(3_000_000):  # about 0.2 s of this process's own work
            x += i
    cols = cpu.columns()
    assert cols["load_avg_1m"] is not None and cols["load_avg_1m"] >= 0
    if cols["cpu_other_busy_pct"] is not None:
        assert 0 <= cols["cpu_other_busy_pct"] <= 100 and 0 < cols["cpu_self_busy_pct"] <= 100


def test_kernel_pass_joins_cpu_columns_to_the_point():
    from attnbench.measure.passes import measure_point
    from attnbench.point import Point, RunOptions, TimerConfig, TimingConfig

    timer = TimerConfig(warmup_s=0.001, min_samples=3, min_time_s=0.001, max_time_s=0.02)
    opts = RunOptions(device="cpu", threads=1, timing=TimingConfig(timer=timer))
    p = Point(impl="linear-chunked", pass_="fwd", causal=True, dtype="float32", B=1, H=1, N=32, D=8, M=8)
    row = measure_point(p, opts).row
    assert row["status"] == "ok", row.get("error")
    for c in CPU_TELEMETRY_COLUMNS:
        assert c in row
    if Path("/proc/stat").exists():
        assert row["cpu_window_s"] > 0 and row["load_avg_1m"] is not None
