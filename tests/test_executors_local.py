"""The local executor's GPU lanes, on the CPU: the torch.cuda boundary is faked (device count,
names, UUIDs), the lanes are real processes started with CUDA_VISIBLE_DEVICES, and a test impl
(tests/fixtures/cluster_site) logs the environment every worker actually saw and when it ran."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from attnbench.errors import UserError
from attnbench.point import Point, RunOptions, TimingConfig
from attnbench.results import journal
from attnbench.results.layout import RunDir
from attnbench.results.plan import Plan
from attnbench.runner.executors import ExecutorRequest, choose
from attnbench.runner.executors import gpus as gpus_mod
from attnbench.runner.executors.gpus import Gpu, gpus_from_torch, pin_env, select
from attnbench.runner.executors.lanes import lane_options
from attnbench.runner.executors.local import LocalExecutor
from attnbench.runner.session import Session

REPO = Path(__file__).resolve().parents[1]
SITE = Path(__file__).resolve().parent / "fixtures" / "cluster_site"
H100 = "NVIDIA H100 80GB HBM3"


def fake_cuda(monkeypatch, names: list[str], uuids: list[str] | None = None) -> None:
    """torch.cuda as a machine with these devices would show them (no CUDA is touched)."""
    uuids = uuids or [f"{i:08x}-1111-2222-3333-{i:012x}" for i in range(len(names))]
    props = [SimpleNamespace(name=n, uuid=u) for n, u in zip(names, uuids, strict=True)]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(props))
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props[i])
    monkeypatch.setattr("attnbench.measure.nvml.open_nvml", lambda: (None, "no NVML in this test"))


def test_the_device_list_comes_from_torch_cuda_and_pins_by_uuid(monkeypatch):
    fake_cuda(monkeypatch, [H100, H100, H100])
    found = gpus_from_torch()
    assert [g.index for g in found] == [0, 1, 2]
    assert all(g.name == H100 for g in found)
    assert [g.visible_id for g in found] == [f"GPU-{g.uuid}" for g in found]
    assert pin_env(found[1]) == {"CUDA_VISIBLE_DEVICES": f"GPU-{found[1].uuid}"}
    assert select(found, "2") == found[:2]
    assert select(found, "all") == found


@pytest.mark.parametrize(
    ("names", "spec", "needle"),
    [
        ([H100, H100], "3", "only 2 CUDA device(s) are visible"),
        ([], "all", "no CUDA device is visible"),
        ([H100, "NVIDIA A100-SXM4-80GB"], "all", "different models"),
        ([H100], "0", "expected a positive number of GPUs or 'all'"),
        ([H100], "two", "expected a positive number of GPUs or 'all'"),
    ],
)
def test_bad_gpu_selections_are_one_line_errors(monkeypatch, names, spec, needle):
    fake_cuda(monkeypatch, names)
    with pytest.raises(UserError, match=re.escape(needle)):
        select(gpus_from_torch(), spec)


def test_two_devices_with_one_uuid_cannot_be_pinned_apart(monkeypatch):
    fake_cuda(monkeypatch, [H100, H100], ["same-uuid", "same-uuid"])
    with pytest.raises(UserError, match="same UUID"):
        select(gpus_from_torch(), "all")


def test_a_mig_instance_is_pinned_by_its_mig_uuid(monkeypatch):
    fake_cuda(monkeypatch, ["NVIDIA A100 MIG 1g.10gb"], ["87654321-4321-4321-4321-cba987654321"])

    class Nv:
        def handle_for_cuda(self, index, uuid):
            return object(), f"uuid MIG-{uuid}"

        def close(self):
            pass

    monkeypatch.setattr("attnbench.measure.nvml.open_nvml", lambda: (Nv(), None))
    (gpu,) = gpus_from_torch()
    assert gpu.visible_id == "MIG-87654321-4321-4321-4321-cba987654321"


def test_gpus_on_a_cpu_run_are_refused():
    with pytest.raises(UserError, match="CPU points run one at a time"):
        LocalExecutor("2").lanes_for("cpu")
    with pytest.raises(UserError, match="--gpus: with --executor slurm"):
        choose(ExecutorRequest(kind="slurm", gpus="2"), None)
    with pytest.raises(UserError, match="only with --executor slurm"):
        choose(ExecutorRequest(slurm={"partition": "gpu"}), None)


def test_each_lane_sees_only_its_own_telemetry_device():
    gpu = Gpu(3, "abcd", H100, "GPU-abcd")
    opts = RunOptions(device="cuda", threads=1, telemetry={"index": 0, "uuid": "first-gpu", "interval_s": 0.01})
    assert lane_options(opts, gpu).telemetry == {"index": 0, "uuid": "abcd", "interval_s": 0.01}
    assert lane_options(RunOptions(device="cuda", threads=1), gpu).telemetry is None


def _points(ns: list[int]) -> list[Point]:
    return [Point("envprobe", "fwd", False, "float32", 1, 2, n, 8, 8) for n in ns]


def test_lanes_pin_every_worker_to_one_gpu_and_never_share_one(monkeypatch, tmp_path):
    """Two fake GPUs, six points and a skipped one: every worker sees exactly its lane's device,
    every record names the device its worker saw, and on each device the workers' busy windows
    never overlap (one point at a time per GPU), while both devices get work."""
    fake_cuda(monkeypatch, [H100, H100])
    found = gpus_from_torch()
    log = tmp_path / "envlog"
    log.mkdir()
    ns = [16, 24, 32, 40, 48, 56]
    points = [*_points(ns), _points([64])[0].with_skip("too long for this test")]
    timing = TimingConfig.from_table({"warmup_s": 0.001, "min_samples": 3, "min_time_s": 0.02, "max_time_s": 0.05})
    rd = RunDir(tmp_path / "run")
    rd.path.mkdir()
    opts = RunOptions(device="cuda", threads=2, timing=timing, ref_cache_dir=str(rd.refcache))
    session = Session(rd, Plan({}, points), opts, {}, resumed=False)
    env = {
        "PYTHONPATH": os.pathsep.join([str(SITE), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "ATTNBENCH_TEST_ENVLOG": str(log),
        "ATTNBENCH_TEST_CALL_S": "0.01",
    }
    session.executor = LocalExecutor("all", discover=lambda: found, lane_env=env)
    events: list[str] = []
    session.on_event = events.append
    done = []
    assert session.sweep(on_done=done.append) is False
    assert any("one lane each" in e for e in events)

    records = {r.point_id: r for r in journal.load(rd)}
    assert len(records) == 7 and len(done) == 7
    by_n = {}
    for path in log.iterdir():
        calls = [json.loads(line) for line in path.read_text().splitlines()]
        assert len({c["cvd"] for c in calls}) == 1  # a worker saw one device all along
        assert len({c["N"] for c in calls}) == 1  # and measured one point
        n = calls[0]["N"]
        by_n.setdefault(n, []).append((calls[0]["cvd"], min(c["t0"] for c in calls), max(c["t1"] for c in calls)))
    assert sorted(by_n) == ns  # the skipped point never reached a worker
    visible = {g.visible_id for g in found}
    for point in points[:6]:
        rec = records[point.point_id]
        assert rec.row["status"] == "ok", rec.row.get("error")
        (cvd,) = {w[0] for w in by_n[point.N]}
        assert cvd in visible
        assert rec.row["device_uuid"] == cvd and rec.row["device_model"] == H100
        assert rec.row["host"] and rec.row["threads"] == 1  # the cores are split between the lanes
    skipped = records[points[6].point_id].row
    assert skipped["status"] == "skipped" and skipped["device_uuid"] is None
    windows: dict[str, list[tuple[float, float]]] = {}
    for spans in by_n.values():
        for cvd, t0, t1 in spans:
            windows.setdefault(cvd, []).append((t0, t1))
    assert set(windows) == visible  # both lanes measured points
    for spans in windows.values():
        spans.sort()
        for (_a0, a1), (b0, _b1) in zip(spans, spans[1:], strict=False):
            assert a1 <= b0, "two points were timed on one GPU at the same time"


def test_the_main_process_never_initialises_cuda_to_list_gpus(monkeypatch):
    """visible_gpus asks a worker; here the worker's list is faked at the procs boundary."""
    sent = [{"index": 0, "uuid": "u0", "name": H100, "visible_id": "GPU-u0"}]

    def run_child(target, args, deadline_s):
        assert target == "attnbench.runner.executors.gpus:probe_main"
        return SimpleNamespace(messages=[sent], exitcode=0)

    monkeypatch.setattr("attnbench.runner.procs.run_child", run_child)
    assert gpus_mod.visible_gpus() == [Gpu(0, "u0", H100, "GPU-u0")]
    monkeypatch.setattr(
        "attnbench.runner.procs.run_child", lambda *a, **k: SimpleNamespace(messages=[{"error": "boom"}], exitcode=0)
    )
    with pytest.raises(UserError, match="cannot list the CUDA devices: boom"):
        gpus_mod.visible_gpus()
