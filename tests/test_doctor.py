"""`attnbench doctor` on the CPU: the command's exit codes and output, the JSON bundle, the
timer-agreement logic, the busy-host detection, and (one test) the real CPU half end to end."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import time

import pytest
from typer.testing import CliRunner

from attnbench.cli import app
from attnbench.doctor import machine, run, timers
from attnbench.doctor.result import FAIL, PASS, SKIP, WARN, Check, Report

runner = CliRunner()


def _fake_report(statuses):
    checks = [
        Check("timer", f"c{i}", s, f"check {i} is {s}", "do this" if s != PASS else None)
        for i, s in enumerate(statuses)
    ]
    return Report(device="cpu", checks=checks, env={"torch": "x", "device": "cpu"})


@pytest.fixture
def fake_run(monkeypatch):
    def use(statuses):
        calls = []

        def fake(device, suite="seqlen", progress=None):
            calls.append((device, suite))
            if progress:
                progress("fake group")
            return _fake_report(statuses)

        monkeypatch.setattr(run, "run_doctor", fake)
        return calls

    return use


def test_exit_0_when_every_check_passes_and_text_lists_them(fake_run):
    calls = fake_run([PASS, PASS, SKIP])
    res = runner.invoke(app, ["doctor", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert calls == [("cpu", "seqlen")]
    assert "PASS  check 0 is pass" in res.stdout and "skip  check 2 is skip" in res.stdout
    assert "doctor: all checks passed (2 passed, 0 failed, 0 warnings, 1 skipped)" in res.stdout


def test_exit_1_when_a_check_fails_with_its_fix(fake_run):
    fake_run([PASS, FAIL, WARN])
    res = runner.invoke(app, ["doctor", "--device", "cpu"])
    assert res.exit_code == 1
    assert "FAIL  check 1 is fail" in res.stdout and "fix: do this" in res.stdout
    assert "WARN  check 2 is warn" in res.stdout
    assert "some checks FAILED (1 passed, 1 failed, 1 warnings, 0 skipped)" in res.stdout


def test_a_warning_alone_does_not_fail(fake_run):
    fake_run([PASS, WARN])
    assert runner.invoke(app, ["doctor", "--device", "cpu"]).exit_code == 0


def test_json_and_bundle(fake_run, tmp_path):
    fake_run([PASS, FAIL])
    out = tmp_path / "doctor.json"
    res = runner.invoke(app, ["doctor", "--device", "cpu", "--json", "--out", str(out), "--suite", "smoke"])
    assert res.exit_code == 1
    printed = json.loads(res.stdout)
    assert printed == json.loads(out.read_text())
    assert printed["attnbench_doctor"] == 1 and printed["exit_code"] == 1 and printed["device"] == "cpu"
    assert printed["counts"] == {"pass": 1, "warn": 0, "fail": 1, "skip": 0}
    assert [c["status"] for c in printed["checks"]] == ["pass", "fail"]
    assert printed["checks"][1]["fix"] == "do this" and printed["env"]["device"] == "cpu"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "tpu"], "error: --device 'tpu': expected auto, cpu or cuda"),
        (["--device", "cuda"], "error: --device cuda: no CUDA device is visible"),
        (
            ["--out", "/nonexistent-dir/x.json"],
            "error: --out '/nonexistent-dir/x.json': directory '/nonexistent-dir' does not exist",
        ),
        (["--suite", "nosuch"], "error: suite"),
    ],
)
def test_usage_errors_exit_2_with_one_line(fake_run, args, message):
    calls = fake_run([PASS])
    res = runner.invoke(app, ["doctor", *args])
    assert res.exit_code == 2, res.output
    assert res.stderr.startswith(message) and len(res.stderr.strip().splitlines()) == 1
    assert calls == []  # nothing measured


def test_out_must_not_be_a_directory(fake_run, tmp_path):
    fake_run([PASS])
    res = runner.invoke(app, ["doctor", "--device", "cpu", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "is a directory" in res.stderr


# ---- timer agreement logic ------------------------------------------------------------------


def test_agreement_uses_each_timers_fastest_round_and_alternates_the_order():
    order = []
    ours = iter([1.30, 1.00, 1.02])  # one round slowed down by something else
    theirs = iter([1.01, 1.50, 0.99])

    def a():
        order.append("a")
        return next(ours)

    def b():
        order.append("b")
        return next(theirs)

    c = timers.agreement("w", a, b, "ref", rounds=3, tol=0.10)
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert c.status == PASS and c.data["ratio"] == pytest.approx(1.00 / 0.99)
    assert "ratio 1.010 (within 10 %)" in c.summary
    bad = timers.agreement("w", lambda: 1.2, lambda: 1.0, "ref", rounds=2, tol=0.10)
    assert bad.status == FAIL and "ratio 1.200 (outside 10 %)" in bad.summary and bad.fix


def test_busy_reason_from_other_processes_or_a_starved_process():
    quiet = machine.Load(others_cores=0.1, own_share=0.99, loadavg=1.0, cpus=2, wall_s=5.0)
    assert quiet.busy_reason() is None
    others = machine.Load(others_cores=1.4, own_share=0.99, loadavg=3.9, cpus=2, wall_s=5.0)
    assert others.busy_reason() == (
        "the machine looks busy: other processes used 1.4 of 2 cores while timing (load average 3.9)"
    )
    starved = machine.Load(others_cores=None, own_share=0.5, loadavg=None, cpus=2, wall_s=5.0)
    assert starved.busy_reason() == "the machine looks busy: this process got 50 % of its core"
    assert starved.busy_reason(threads=0) is None  # a CUDA wait may sleep: own share not judged


def test_load_meter_sees_other_processes():
    burn = "import time\nt = time.time()\nwhile time.time() - t < 3: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    try:
        time.sleep(0.3)
        with machine.LoadMeter() as meter:
            t = time.monotonic()
            while time.monotonic() - t < 1.0:
                pass
    finally:
        for p in procs:
            p.kill()
            p.wait()
    load = meter.load
    assert load is not None and load.others_cores is not None
    assert load.others_cores >= 0.5 * min(2, load.cpus)  # two burners on this machine's cores
    on_two_cores = dataclasses.replace(load, cpus=2)  # what the same load means on a 2-core machine
    assert on_two_cores.busy_reason(threads=0).startswith("the machine looks busy: other processes used")


def test_busy_host_fails_the_timer_group_and_says_so(monkeypatch):
    busy = machine.Load(others_cores=1.6, own_share=0.6, loadavg=4.2, cpus=2, wall_s=1.0)

    class BusyMeter(machine.LoadMeter):
        def __exit__(self, *exc):
            self.load = busy

    monkeypatch.setattr(timers, "LoadMeter", BusyMeter)
    fast = timers.Workload("tiny add", lambda device: lambda: 1 + 1)
    monkeypatch.setattr(timers, "cpu_timer_ms", lambda fn: 1.5)
    monkeypatch.setattr(timers, "torch_benchmark_ms", lambda fn: 1.0)
    checks = timers.check_cpu_timers((fast,), rounds=2)
    assert [c.status for c in checks] == [FAIL, FAIL]
    assert checks[0].summary.endswith("(the machine looks busy: see 'quiet host')")
    assert checks[1].name == "quiet host" and checks[1].summary.startswith("the machine looks busy: other processes")


def test_cpu_timer_group_runs_both_real_timers(monkeypatch):
    """The real attnbench and torch.utils.benchmark timers on one short workload (agreement itself
    is judged on an idle machine: see docs/measurement.md)."""
    import torch

    monkeypatch.setattr(
        timers, "CPU_CFG", timers.TimerConfig(warmup_s=0.0, min_samples=3, min_time_s=0.02, max_time_s=0.05)
    )
    monkeypatch.setattr(timers, "REF_MIN_RUN_S", 0.02)
    threads = torch.get_num_threads()
    a = torch.randn(64, 64)
    checks = timers.check_cpu_timers((timers.Workload("mm64", lambda device: lambda: a @ a),), rounds=2)
    assert torch.get_num_threads() == threads  # restored
    assert checks[0].name == "mm64 vs torch.utils.benchmark" and checks[0].status in (PASS, FAIL)
    assert len(checks[0].data["attnbench_ms"]) == 2 and all(t > 0 for t in checks[0].data["reference_ms"])
    assert checks[-1].name == "quiet host"


# ---- the real CPU half, end to end ---------------------------------------------------------


@pytest.mark.slow
def test_doctor_cpu_for_real(tmp_path):
    """On a quiet machine this exits 0; on a busy one it must fail and say the machine looks busy."""
    out = tmp_path / "bundle.json"
    res = subprocess.run(
        [sys.executable, "-m", "attnbench", "doctor", "--device", "cpu", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode in (0, 1), res.stderr
    text = res.stdout
    for title in ("timer agreement", "launch overhead", "kernels against the float64 oracle"):
        assert title in text
    bundle = json.loads(out.read_text())
    assert bundle["exit_code"] == res.returncode and bundle["env"]["device"] == "cpu"
    names = [c["name"] for c in bundle["checks"]]
    assert sum(n.endswith("vs torch.utils.benchmark") for n in names) == 4 and "quiet host" in names
    assert {"softmax", "sdpa", "linear-chunked"} <= set(names)
    quiet = next(c for c in bundle["checks"] if c["name"] == "quiet host")
    failed = [c for c in bundle["checks"] if c["status"] == "fail"]
    if quiet["status"] == "pass":
        assert not [c for c in failed if c["group"] == "timer"], text  # an idle machine: timers agree
    else:
        assert "the machine looks busy" in text
    assert (res.returncode == 1) == bool(failed)
