"""`attnbench list` without torch: the static table of built-ins agrees with the registry, the
command loads no torch on a machine without a GPU driver, fits 80 columns with whole names, and
lists suites with points, rounds and an estimated time; the estimate learns from earlier runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from attnbench.impls.catalog import BUILTINS, static_reason

REPO = Path(__file__).resolve().parents[1]
NO_GPU = not any(os.path.exists(f) for f in ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/dxg", "/dev/kfd"))


def run_cli(
    *args: str, env_extra: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env, timeout=300, cwd=cwd
    )


def test_catalog_matches_the_registry():
    from attnbench.impls import registry

    specs = {n: s for n, s in registry.all_specs().items() if s.origin.startswith("attnbench.")}
    assert {b.name for b in BUILTINS} == set(specs), "attnbench/impls/catalog.py must list every built-in"
    for b in BUILTINS:
        s = specs[b.name]
        assert (b.family, b.causal, b.devices, b.dtypes, b.backward) == (
            s.family,
            s.causal,
            s.devices,
            s.dtypes,
            s.backward,
        ), b.name
        assert b.reference_name == s.reference_name and b.description == s.description and b.module == s.origin


def test_static_availability_agrees_with_the_impls_own_checks_on_cpu():
    from attnbench.impls import registry

    for b in BUILTINS:
        ours, theirs = static_reason(b, "cpu"), registry.get(b.name).unavailable_reason("cpu")
        assert (ours is None) == (theirs is None), (b.name, ours, theirs)


def test_static_availability_names_what_is_missing(monkeypatch):
    causal_cpu = next(b for b in BUILTINS if b.name == "linear-causal-cpu")
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert static_reason(causal_cpu, "cpu") == "no C++ compiler ('no-such-compiler-here' not on PATH)"
    assert "does not run on cuda" in (static_reason(causal_cpu, "cuda") or "")


@pytest.mark.skipif(not NO_GPU, reason="a GPU driver is present: list resolves auto with torch")
def test_list_loads_no_torch():
    code = (
        "import sys\nfrom attnbench.cli import app\n"
        "try:\n    app(['list', '--json'])\nexcept SystemExit:\n    pass\n"
        "print('TORCH', 'torch' in sys.modules, 'pandas' in sys.modules, file=sys.stderr)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert res.returncode == 0, res.stderr
    assert "TORCH False False" in res.stderr
    doc = json.loads(res.stdout)
    assert doc["device"] == "cpu"
    impls = {i["name"]: i for i in doc["impls"]}
    assert impls["linear-chunked"]["available"] is True and impls["linear-causal-cuda"]["available"] is False
    suites = {s["name"]: s for s in doc["suites"]}
    seqlen = suites["seqlen"]
    assert seqlen["points"] > 0 and seqlen["skipped"] > 0 and seqlen["rounds"] >= 1 and seqlen["estimate_s"] > 0
    assert seqlen["description"].startswith("Latency and peak memory")


def test_list_at_80_columns_keeps_names_whole():
    res = run_cli("list", env_extra={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in res.stdout
    for b in BUILTINS:
        assert f" {b.name} " in res.stdout
    for suite in ("seqlen", "smoke", "ci"):
        assert f" {suite} " in res.stdout
    assert "suites (time on cpu: estimated)" in res.stdout


def test_list_probe_and_a_cuda_device_use_the_registry():
    res = run_cli("list", "--probe", "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert {i["name"] for i in json.loads(res.stdout)["impls"]} >= {b.name for b in BUILTINS}
    cuda = run_cli("list", "--json", "--device", "cuda")  # what would run there, GPU or not
    assert cuda.returncode == 0, cuda.stderr
    doc = json.loads(cuda.stdout)
    assert doc["device"] == "cuda"
    assert {i["name"]: i["available"] for i in doc["impls"]}["linear-causal-cpu"] is False
    bad = run_cli("list", "--device", "tpu")
    assert bad.returncode == 2 and "tpu" in bad.stderr


def test_estimate_uses_earlier_runs(tmp_path):
    from attnbench.point import TimingConfig
    from attnbench.suite import expand, load_suite
    from attnbench.suite.duration import WORKER_S, estimate, history

    suite = load_suite("smoke")
    points = expand(suite, "cpu")
    timing = suite.timing_config
    cold = estimate(points, timing)
    per_point = WORKER_S + timing.timer.warmup_s + timing.timer.max_time_s
    assert cold.from_history == 0 and cold.sweep_s == pytest.approx(per_point * len(points) * timing.rounds)
    run = tmp_path / "runs" / "smoke-1"
    run.mkdir(parents=True)
    (run / "metadata.json").write_text(json.dumps({"device": "cpu"}))
    rows = [{"row": {"point_id": points[0].point_id, "status": "ok", "wall_s": 7.5, "round": 0}}]
    (run / "journal.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{torn")
    seen = history(tmp_path / "runs", "cpu")
    assert seen == {points[0].point_id: [7.5]}
    assert history(tmp_path / "runs", "cuda") == {}
    warm = estimate(points, timing, seen)
    assert warm.from_history == timing.rounds
    assert warm.sweep_s == pytest.approx(cold.sweep_s + (7.5 - per_point) * timing.rounds)
    # a point whose first round took longer than extra_rounds_max_s gets one round
    long_once = estimate(points, TimingConfig(rounds=3, extra_rounds_max_s=5.0), seen)
    assert sum(1 for p, _r, _s in long_once.pairs if p.point_id == points[0].point_id) == 1


def test_eta_scales_by_how_the_done_points_compared():
    from attnbench.point import Point, TimingConfig
    from attnbench.suite.duration import Eta, estimate_pairs

    pts = [Point(impl="sdpa", pass_="fwd", causal=True, dtype="float32", B=1, H=1, N=n, D=8, M=8) for n in (1, 2, 3)]
    est = estimate_pairs([(p, 0) for p in pts], TimingConfig(), {p.point_id: [2.0] for p in pts})
    eta = Eta(est)
    assert eta.seconds() == pytest.approx(6.0)
    eta.done(pts[0].point_id, 0, 4.0)  # twice as slow as estimated today
    assert eta.seconds() == pytest.approx(8.0)
    order = [(p.point_id, 0) for p in pts]
    eta.skip_to(pts[2].point_id, 0, order)  # the second was left out
    assert eta.seconds() == pytest.approx(4.0)
