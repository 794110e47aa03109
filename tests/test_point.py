"""The shared vocabulary: enums, Point identity, typed timing, records across the journal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnbench.point import (
    DType,
    Pass,
    Point,
    Record,
    Status,
    TimerConfig,
    TimingConfig,
)

V1_PLAN = Path(__file__).resolve().parent / "fixtures" / "v1_run" / "plan.json"


def test_enums_are_their_stored_strings():
    assert Status.OK == "ok" and f"{Status.OOM}" == "oom" and str(Pass.FWDBWD) == "fwdbwd"
    assert Status.OOM.failed and not Status.SKIPPED.failed and not Status.OK.failed
    assert DType("bfloat16").itemsize == 2 and DType.FLOAT64.itemsize == 8 and DType.FLOAT16.short == "f16"
    assert Pass.BWD.needs_backward and not Pass.FWD.needs_backward


def test_point_ids_are_the_ones_earlier_runs_stored():
    """A point_id is what compare and --resume match on: it must not change across versions."""
    stored = json.loads(V1_PLAN.read_text())["points"]
    assert stored
    for p in stored:
        point = Point.from_mapping(p)
        assert point.point_id == p["point_id"]
        assert Point.from_mapping(point.as_mapping()) == point


def test_point_id_shapes():
    p = Point("linear-chunked", "fwd", True, "float32", B=1, H=4, N=1024, D=64, M=64, params={"chunk_size": 32})
    assert p.point_id == "linear-chunked/fwd/causal/float32/B1-H4-N1024-D64-M64-chunk_size32"
    d = Point("softmax", "decode", True, "float16", B=2, H=1, N=12, D=8, M=4, seed=3, P=4, T=8)
    assert d.point_id == "softmax/decode/causal/float16/B2-H1-N12-D8-M4-P4-T8-s3"
    assert Point("x", "fwd", False, "float32", 1, 1, 1, 1, 1).point_id.split("/")[2] == "full"
    with pytest.raises(ValueError):
        Point("x", "sideways", True, "float32", 1, 1, 1, 1, 1)


def test_timing_config_round_trip_and_overrides():
    t = TimingConfig.from_table({"max_time_s": 0.5, "rounds": 3, "clock": "process", "memory": "allocator"})
    assert t.timer == TimerConfig(max_time_s=0.5) and t.rounds == 3 and t.clock == "process"
    assert TimingConfig.from_table(t.to_table()) == t
    u = t.with_overrides(max_time_s=0.1, timeout_s=9.0, rounds=None)
    assert u.timer.max_time_s == 0.1 and u.timeout_s == 9.0 and u.rounds == 3


def test_record_json_round_trip_keeps_non_finite_floats():
    rec = Record({"point_id": "a/fwd", "status": "ok", "err_out": float("inf"), "round": 2}, [1.0, 2.5])
    back = Record.from_json(json.loads(json.dumps(rec.to_json())))
    assert back.row["err_out"] == float("inf") and back.samples == [1.0, 2.5] and back.round == 2


@pytest.mark.parametrize(
    "doc",
    [
        [],
        {"row": []},
        {"row": {"status": "ok"}},
        {"row": {"point_id": "a", "status": "sideways"}},
        {"row": {"point_id": "a", "status": "ok"}, "samples": ["x"]},
        {"row": {"point_id": "a", "status": "ok", "round": -1}},
        {"row": {"point_id": "a", "status": "ok"}, "steps": [1]},
    ],
)
def test_records_of_the_wrong_shape_are_refused(doc):
    with pytest.raises(ValueError):
        Record.from_json(doc)
