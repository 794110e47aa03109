"""The profile package's pieces on fixed data: the top table's text, Nsight command lines and
kernel names, memory timelines from allocation events and from a CUDA snapshot, the report's
list of failed, slow or noisy points and the commands beside each."""

from __future__ import annotations

import shlex
from pathlib import Path

import pandas as pd
import pytest

from attnbench.profile import memory, nsight, top, trace
from attnbench.profile.memory import Event
from attnbench.profile.target import slug
from attnbench.report import profile_links as links
from attnbench.report.analysis import analyse
from attnbench.report.content import build_report
from attnbench.report.markdown import render

EXAMPLE = Path(__file__).parents[1] / "reports" / "example-cpu-seqlen" / "run"


def row(name: str, self_ms: float, kind: str = "op", flops: float | None = None) -> top.TopRow:
    rate = flops / (self_ms / 1e3) if flops else None
    return top.TopRow(kind, name, 2.0, self_ms, self_ms * 1.5, self_ms / 10.0, flops, rate)


def test_top_table_fits_80_columns_and_keeps_both_ends_of_long_names() -> None:
    rows = [
        row("autograd::engine::evaluate_function: CausalProductPhiBackward", 98.9),
        row("aten::bmm", 12.5, flops=2.5e9),
        *[row(f"aten::op{i}", 0.1) for i in range(20)],
    ]
    text = top.render(rows, "cpu", limit=5)
    lines = text.splitlines()
    assert all(len(x) <= 80 for x in lines)
    assert lines[0].split() == ["op", "calls", "self", "total", "share", "FLOP/s"]
    assert lines[1].startswith("autog") and "...CausalProductPhiBackward " in lines[1]
    assert "98.9 ms" in lines[1] and "989%" in lines[1]  # share: self time over the point's median
    assert "200 GFLOP/s" in lines[2]
    assert lines[-1] == "(17 more, 1.70 ms self time in all)"
    cuda = top.render([row("void at::native::vectorized_elementwise_kernel<4, F>(int, F)", 1.0, "kernel")], "cuda")
    assert all(len(x) <= 80 for x in cuda.splitlines()) and cuda.splitlines()[1].startswith("kernel ")
    assert top.self_sum_ms(rows, "cpu") == pytest.approx(98.9 + 12.5 + 2.0)
    assert top.self_sum_ms([*rows, row("k", 5.0, "kernel")], "cuda") == 5.0


def test_top_markdown_escapes_names() -> None:
    md = top.markdown([row("evil|name `x`", 1.0)], {"point_id": "p", "calls": 3, "device": "cpu"})
    assert "evil\\|name \\`x\\`" in md and md.count("\n| ") == 2


def test_calls_to_profile_are_about_a_second_of_work() -> None:
    assert trace.choose_calls(400.0) == 5 and trace.choose_calls(100.0) == 10 and trace.choose_calls(0.1) == 20
    assert trace.choose_calls(float("nan")) == 5


@pytest.mark.parametrize(
    "demangled,name",
    [
        ("void at::native::vectorized_elementwise_kernel<4, at::native::AddFunctor<float>, "
         "std::array<char*, 3ul> >(int, at::native::AddFunctor<float>, std::array<char*, 3ul>)",
         "vectorized_elementwise_kernel"),
        ("ampere_sgemm_128x64_tn", "ampere_sgemm_128x64_tn"),
        ("void (anonymous namespace)::causal_product_fwd<float, 64>(float const*, float*)", "causal_product_fwd"),
        ("_attn_fwd", "_attn_fwd"),
    ],
)  # fmt: skip
def test_kernel_base_names(demangled: str, name: str) -> None:
    assert nsight.base_name(demangled) == name


def test_nsight_commands_profile_exactly_the_repro_calls(tmp_path: Path) -> None:
    repro = tmp_path / "my dir" / "repro.py"
    kernels = ["void foo_kernel<float>(float*)", "ampere_sgemm_128x64_tn", "void foo_kernel<half>(half*)"]
    c = nsight.commands(repro, tmp_path / "n", "cuda", "python3", kernels, 7)
    ncu = shlex.split(c.ncu or "")
    assert ncu[:5] == ["ncu", "--target-processes", "all", "--profile-from-start", "off"]
    assert ncu[ncu.index("--kernel-name") + 1] == "regex:foo_kernel|ampere_sgemm_128x64_tn"
    assert ncu[ncu.index("--set") + 1] == "full" and ncu[ncu.index("--launch-count") + 1] == "7"
    assert ncu[-4:] == ["python3", str(repro), "--calls", "1"]
    nsys = shlex.split(c.nsys)
    assert "--capture-range=cudaProfilerApi" in nsys and nsys[-4:] == ["python3", str(repro), "--calls", "5"]
    cpu = nsight.commands(repro, tmp_path, "cpu")
    assert cpu.ncu is None and "CUDA" in cpu.why_no_ncu and "--capture-range" not in cpu.nsys
    assert "# Nsight Compute: not for this point" in cpu.script("t")


def test_memory_timeline_from_allocation_events() -> None:
    ms = 1_000_000
    events = [
        Event("attnbench: memory call", 0, 10 * ms),
        Event("aten::matmul", 1 * ms, 3 * ms),
        Event("aten::bmm", 2 * ms, 1 * ms),
        Event("[memory]", 1 * ms + 1, 0, 4 << 20),
        Event("[memory]", 2 * ms + 5, 0, 8 << 20),  # the peak: 12 MiB inside aten::matmul > aten::bmm
        Event("[memory]", 4 * ms, 0, -(8 << 20)),
        Event("autograd::engine::evaluate_function: MmBackward0", 6 * ms, 3 * ms),
        Event("[memory]", 6 * ms + 1, 0, 2 << 20),
        Event("[memory]", 9 * ms, 0, -(10 << 20)),  # an input's buffer freed: below the start
    ]
    tl = memory.timeline_from_events(events)
    assert tl.peak_mib == 12.0 and tl.peak_t_ms == pytest.approx(2.000005)
    assert tl.during == ["aten::matmul", "aten::bmm"]
    assert tl.backward_ms == 6.0 and tl.call_ms == 10.0 and tl.live_mib[-1] == -4.0


def test_memory_timeline_from_a_cuda_snapshot_and_its_chart(tmp_path: Path) -> None:
    frame = {"name": "linear_chunked", "filename": "/x/chunked.py", "line": 42}
    trace_ = [
        {"action": "segment_alloc", "size": 1 << 24, "time_us": 100},
        {"action": "alloc", "size": 1 << 20, "time_us": 100, "frames": []},
        {"action": "alloc", "size": 3 << 20, "time_us": 150, "frames": [frame]},
        {"action": "free_requested", "size": 3 << 20, "time_us": 170},
        {"action": "free_completed", "size": 3 << 20, "time_us": 180},
    ]
    tl = memory.timeline_from_snapshot({"device_traces": [trace_], "segments": []}, 0, call_ms=0.5)
    assert tl.peak_mib == 4.0 and tl.peak_t_ms == pytest.approx(0.05) and tl.live_mib[-1] == 1.0
    assert tl.during == ["linear_chunked (chunked.py:42)"] and tl.call_ms == 0.5
    png = memory.plot(tl, tmp_path / "m.png", "a $title$")
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert memory.timeline_from_snapshot({"device_traces": []}).peak_mib == 0.0


def test_slug_is_one_safe_directory_name() -> None:
    assert (
        slug("linear-chunked/fwd/causal/float32/B1-H4-N64-D8-M8") == "linear-chunked_fwd_causal_float32_B1-H4-N64-D8-M8"
    )
    assert "/" not in slug("../../etc/passwd") and not slug("../x").startswith(".")
    long_a, long_b = "x/" * 100 + "a", "x/" * 100 + "b"
    assert len(slug(long_a)) <= 120 and slug(long_a) != slug(long_b)


def frame(rows: list[dict]) -> pd.DataFrame:
    base = {"pass": "fwd", "causal": True, "dtype": "float32", "B": 1, "H": 4, "D": 64, "M": 64, "impl_params": "{}"}
    base |= {
        "status": "ok",
        "error": None,
        "converged": True,
        "n_samples": 9,
        "correct": True,
        "correctness_error": None,
    }
    df = pd.DataFrame([{**base, **r} for r in rows])
    df["point_id"] = df["impl"] + "/fwd/N" + df["N"].astype(str)
    return df


def test_flagged_points_are_failed_slow_or_noisy() -> None:
    ns = [1024, 2048, 4096, 8192, 16384]
    rows = [{"impl": "a", "N": n, "time_ms_median": n / 1000 * (3.0 if n == 4096 else 1.0)} for n in ns]
    rows += [{"impl": "b", "N": n, "time_ms_median": (n / 1000) ** 2} for n in ns]  # quadratic: no point off its line
    rows += [{"impl": "c", "N": 1024, "status": "crashed", "error": "worker died from SIGSEGV", "time_ms_median": None}]
    rows += [
        {"impl": "d", "N": 1024, "time_ms_median": 1.0, "correct": False, "correctness_error": "out relative error 1"}
    ]
    rows += [{"impl": "e", "N": 1024, "time_ms_median": 1.0, "converged": False}]
    rows += [{"impl": "f", "N": 1024, "status": "skipped", "error": "too large", "time_ms_median": None}]
    df = frame(rows)
    got = links.flagged(df, {"timing": {"min_samples": 5}})
    why = dict(zip(got["point_id"], got["why"], strict=True))
    assert set(why) == {"a/fwd/N4096", "c/fwd/N1024", "d/fwd/N1024", "e/fwd/N1024"}
    assert why["a/fwd/N4096"].startswith("slow: 2.") and "fitted N^1." in why["a/fwd/N4096"]
    assert why["c/fwd/N1024"] == "crashed: worker died from SIGSEGV"
    assert why["d/fwd/N1024"] == "incorrect: out relative error 1"
    assert why["e/fwd/N1024"] == "noisy: did not converge"
    assert links.kinds(got) == {"failed": 2, "slow": 1, "noisy": 1}
    assert links.flagged(frame(rows[5:10]), {}).empty  # a clean power law: nothing to look at


def test_commands_are_quoted_for_a_shell() -> None:
    cmd = links.profile_command("runs/my run", "a/fwd/N1")
    assert shlex.split(cmd) == ["attnbench", "profile", "runs/my run", "a/fwd/N1"]
    assert shlex.split(links.repro_command("r", "x'y")) == ["attnbench", "repro", "r", "x'y"]


@pytest.mark.skipif(not EXAMPLE.exists(), reason="the stored example run is not in this checkout")
def test_report_gives_every_flagged_point_its_commands_and_stays_short(tmp_path: Path) -> None:
    from attnbench.report.frame import noisy
    from attnbench.results import load_run

    df, _samples, meta = load_run(EXAMPLE)
    n = int(noisy(df, meta).sum())  # the stored example: noisy points, none failed or slow
    assert n > 0
    report = build_report(df, meta, analyse(df, meta), [], None, run_dir="runs/seqlen-1")
    fact = next(f for f in report.facts if f.label == "profile")
    assert fact.value.startswith(f"{n} failed, slow or noisy points ({n} noisy)") and "runs/seqlen-1" in fact.value
    section = next(s for s in report.sections if s.key == "profile")
    table = section.blocks[0]
    assert not section.summary and table.collapsed and len(table.rows) == n
    first = table.rows[0]
    assert first[2] == f"attnbench profile runs/seqlen-1 {first[0]}" and first[3].startswith("attnbench repro ")
    md = render(report)
    assert f"**profile**: {n} failed" in md and "Profile and reproduce" in md.splitlines()[-1]
    placeholder = build_report(df, meta, analyse(df, meta), [], None)
    assert "RUN_DIR POINT_ID" in next(f for f in placeholder.facts if f.label == "profile").value
