"""One run, several machines: the report and compare never pool points of different device
models unless asked (--device-model, --allow-mixed-devices)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from compare_helpers import point, samples, side, write_run

from attnbench.compare.io import device_mismatch_reason
from attnbench.errors import UserError
from attnbench.report.devices import device_models, select_device

REPO = Path(__file__).resolve().parents[1]
H100, A100 = "NVIDIA H100 80GB HBM3", "NVIDIA A100-SXM4-80GB"


def attnbench(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_select_device_keeps_one_model_and_the_rows_without_one():
    df = pd.DataFrame({"point_id": list("abcd"), "device_model": [H100, A100, H100, None]})
    assert device_models(df) == {H100: 2, A100: 1}
    assert list(select_device(df, H100, False, "run x")["point_id"]) == ["a", "c", "d"]
    assert len(select_device(df, None, True, "run x")) == 4
    with pytest.raises(UserError, match=r"run x holds points measured on 2 device models .* --device-model MODEL"):
        select_device(df, None, False, "run x")
    with pytest.raises(UserError, match="no point of run x ran on it"):
        select_device(df, "TPU", False, "run x")
    one = df[df["device_model"] != A100]
    assert len(select_device(one, None, False, "run x")) == 3
    assert len(select_device(pd.DataFrame({"point_id": ["a"]}), None, False, "old run")) == 1  # no column


def _with_models(s, models: dict[str, str]):
    s.device_models = dict(models)
    return s


def test_compare_refuses_mixed_or_moved_device_models():
    pts = [point(f"p{i}", samples(1.0 + i)) for i in range(3)]
    same = {"p0": H100, "p1": H100, "p2": H100}
    assert device_mismatch_reason(_with_models(side(pts), same), _with_models(side(pts), same)) is None
    assert device_mismatch_reason(side(pts), side(pts)) is None  # nothing recorded: nothing judged
    mixed = {"p0": H100, "p1": A100, "p2": H100}
    why = device_mismatch_reason(_with_models(side(pts), same), _with_models(side(pts, label="cur"), mixed))
    assert why is not None and "current cur mixes" in why and "--allow-mixed-devices" in why
    moved = {"p0": A100, "p1": A100, "p2": A100}
    why = device_mismatch_reason(_with_models(side(pts), same), _with_models(side(pts), moved))
    assert why is not None and f"3 point(s) ran on {H100!r} in the baseline and {A100!r} now" in why


def _add_models(run: Path, models: list[str]) -> None:
    df = pd.read_parquet(run / "results.parquet")
    df["device_model"] = [models[i % len(models)] for i in range(len(df))]
    df.to_parquet(run / "results.parquet", index=False)


def test_compare_cli_exit_2_unless_allowed(tmp_path):
    rows = [{"point_id": f"impl/fwd/causal/float32/N{i}", "samples": samples(1.0 + i, 20, 0.02, i)} for i in range(4)]
    base, cur = write_run(tmp_path / "base", rows), write_run(tmp_path / "cur", rows)
    _add_models(base, [H100])
    _add_models(cur, [H100, A100])
    res = attnbench("compare", str(base), str(cur))
    assert res.returncode == 2 and res.stderr.count("\n") == 1
    assert "points from different device models" in res.stderr and "mixes" in res.stderr
    res = attnbench("compare", str(base), str(cur), "--allow-mixed-devices", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["exit_code"] == 0


def test_report_cli_refuses_a_mixed_run_and_reports_one_model(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(REPO / "tests" / "fixtures" / "report_run", run)
    lines = (run / "journal.jsonl").read_text().splitlines()
    with open(run / "journal.jsonl", "w") as f:
        for i, line in enumerate(lines):
            rec = json.loads(line)
            rec["row"]["device_model"] = (H100, A100)[i % 2]
            f.write(json.dumps(rec) + "\n")
    res = attnbench("report", str(run), "--format", "md")
    assert res.returncode == 2 and "holds points measured on 2 device models" in res.stderr
    assert res.stderr.count("\n") == 1 and not (run / "report" / "report.md").exists()
    res = attnbench("report", str(run), "--format", "md", "--device-model", H100)
    assert res.returncode == 0, res.stderr
    assert (run / "report" / "report.md").exists()
