"""`attnbench repro` and the standalone repro.py: the same inputs and pass as the harness, a
checksum that is exact on a replay here and tolerant across machines but catches a changed
element, the float64 oracle, a plugin imported by its entry point, a failing point's bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnbench.impls import registry
from attnbench.measure import correctness
from attnbench.measure import inputs as harness
from attnbench.point import Point
from attnbench.profile import repro_script as rs
from tests.test_profile_fixtures import CHUNKED, OFFBYONE, RAISER, cli, digest, env, one_line_error, tiny_run

__all__ = ["tiny_run"]  # the fixture, imported for pytest


def point(pass_: str = "fwdbwd", dtype: str = "float32", seed: int = 0, n: int = 48) -> Point:
    return Point(impl="linear-chunked", pass_=pass_, causal=True, dtype=dtype, B=2, H=2, N=n, D=8, M=4, seed=seed)


@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
@pytest.mark.parametrize("seed", [0, 7])
def test_inputs_are_the_harness_inputs_bit_for_bit(dtype: str, seed: int) -> None:
    p = point(dtype=dtype, seed=seed)
    ours = rs.make_inputs(p.as_mapping(), "cpu")
    theirs = harness.make_inputs(p)
    for a, b in zip(ours, (theirs.q, theirs.k, theirs.v, theirs.g), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("pass_", ["fwd", "bwd", "fwdbwd"])
def test_pass_and_outputs_are_the_harness_ones(pass_: str) -> None:
    p = point(pass_)
    spec = registry.get("linear-chunked")
    params = {"chunk_size": 16}
    inp = harness.make_inputs(p)
    tensors = (inp.q, inp.k, inp.v, inp.g)
    ours, theirs = (
        rs.make_pass(spec.fn, tensors, p.as_mapping(), params)(),
        harness.make_pass(spec.fn, inp, p, params)(),
    )
    ours_t = ours if isinstance(ours, tuple) else (ours,)
    theirs_t = theirs if isinstance(theirs, tuple) else (theirs,)
    assert all(torch.equal(a, b) for a, b in zip(ours_t, theirs_t, strict=True))
    got = rs.outputs(spec.fn, tensors, p.as_mapping(), params)
    grads = p.pass_.needs_backward
    want = correctness.run_impl_for_check(spec.fn, correctness.check_leaves(inp, grads), inp.g, True, params, grads)
    assert got.keys() == want.keys() == ({"out", "dq", "dk", "dv"} if grads else {"out"})
    assert all(torch.equal(got[k], want[k]) for k in got)


def test_sign_vectors_are_fixed_balanced_and_unrelated() -> None:
    # replays on other machines compare against stored projections: these values must never change
    assert rs.sign_vector(12, 0).tolist() == [-1.0, -1.0, 1.0, -1.0, 1.0, -1.0, -1.0, -1.0, 1.0, 1.0, 1.0, -1.0]
    assert rs.sign_vector(12, 3).tolist() == [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0, 1.0, 1.0, -1.0, 1.0, 1.0, -1.0]
    n = 1 << 16
    vs = [rs.sign_vector(n, j) for j in range(rs.N_PROJECTIONS)]
    assert all(set(v.unique().tolist()) == {-1.0, 1.0} and abs(float(v.mean())) < 0.02 for v in vs)
    assert max(abs(float(vs[i] @ vs[j])) / n for i in range(8) for j in range(i)) < 0.02


def _sums(x: torch.Tensor) -> dict:
    return rs.checksums({"out": x})


def test_checksum_is_exact_here_tolerant_of_rounding_and_catches_one_changed_element() -> None:
    x = torch.randn(2, 4, 256, 32, generator=torch.Generator().manual_seed(1))
    stored = _sums(x)
    assert rs.compare(_sums(x.clone()), stored, "float32")[0]["verdict"] == "identical"
    # another summation order: relative noise of ~1e-7 per element
    noisy = x * (1 + 1e-7 * torch.randn(x.shape, generator=torch.Generator().manual_seed(2)))
    row = rs.compare(_sums(noisy), stored, "float32")[0]
    assert row["verdict"] == "match" and row["rel_diff"] < 1e-6
    # one element of 65536 off by a little more than the tolerance allows of the whole norm
    bad = x.clone()
    bad[1, 2, 3, 4] += 3e-4 * float(x.norm())
    row = rs.compare(_sums(bad), stored, "float32")[0]
    assert row["verdict"] == "MISMATCH" and row["rel_diff"] == pytest.approx(3e-4, rel=0.01)
    # the same change is within bfloat16's replay tolerance
    assert rs.compare(_sums(bad), stored, "bfloat16")[0]["verdict"] == "match"
    assert rs.compare(_sums(x[:, :2]), stored, "float32")[0]["why"].startswith("float32[2, 2, 256, 32] where")
    assert rs.compare({}, stored, "float32")[0]["verdict"] == "MISMATCH"


def test_nonfinite_outputs_reproduce_by_their_count() -> None:
    x = torch.randn(64)
    x[3] = float("nan")
    y = x.clone()
    y[5] = 1.0  # other bytes, the same NaN count
    assert rs.compare(_sums(y), _sums(x), "float32")[0]["verdict"] == "nonfinite"
    y[7] = float("inf")
    assert rs.compare(_sums(y), _sums(x), "float32")[0]["verdict"] == "MISMATCH"


def run_script(script: Path, *args: str, plugins: bool = False) -> subprocess.CompletedProcess:
    """repro.py in a fresh interpreter (the test plugins on the path only when asked)."""
    e = env() if plugins else {k: v for k, v in env().items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=e, timeout=600)


def test_repro_bundle_replays_the_point(tiny_run: Path, tmp_path: Path) -> None:
    before = digest(tiny_run)
    out = tmp_path / "bundle"
    res = cli("repro", str(tiny_run), CHUNKED, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert {p.name for p in out.iterdir()} == {"repro.py", "point.json", "env.json", "README.md"}
    cfg = json.loads((out / "point.json").read_text())
    assert cfg["impl"] == {
        "name": "linear-chunked",
        "origin": "attnbench.impls.chunked",
        "entry_point": None,
        "distribution": None,
    }
    assert (
        cfg["params"] == {"chunk_size": 32} and cfg["threads"] == 1 and set(cfg["outputs"]) == {"out", "dq", "dk", "dv"}
    )
    assert cfg["run"]["time_ms_median"] > 0 and cfg["run"]["status"] == "ok"
    envs = json.loads((out / "env.json").read_text())
    assert envs["run"]["torch"] == torch.__version__ and envs["bundled_on"]["threads"] == 1
    readme = (out / "README.md").read_text()
    assert "# Reproduce linear-chunked/fwdbwd" in readme and "python repro.py" in readme
    # the script alone: a copy elsewhere, without the repository or the plugins on the path
    alone = tmp_path / "elsewhere" / "repro.py"
    alone.parent.mkdir()
    shutil.copy(out / "repro.py", alone)
    res = run_script(alone, "--json", "--min-run-time", "0.2")
    assert res.returncode == 0, res.stderr
    s = json.loads(res.stdout)
    assert s["inputs_identical"] and [r["verdict"] for r in s["checksums"]] == ["identical"] * 4
    assert [r["tensor"] for r in s["checksums"]] == ["out", "dq", "dk", "dv"]
    assert s["oracle"]["correct"] and s["oracle"]["err_out"] < 1e-5
    t = s["timing"]
    assert t["median_ms"] > 0 and t["iqr_ms"] >= 0 and t["stored_median_ms"] == cfg["run"]["time_ms_median"]
    assert "time    median" in res.stderr and "the run (" in res.stderr
    # nsys/ncu mode: the calls only
    res = run_script(alone, "--calls", "2")
    assert res.returncode == 0 and res.stdout == "", res.stderr
    assert digest(tiny_run) == before


def test_a_changed_output_is_a_mismatch(tiny_run: Path, tmp_path: Path) -> None:
    """The shipped template reads point.json beside it; a stored checksum that does not match
    the output fails the replay (exit 1)."""
    out = tmp_path / "bundle"
    assert cli("repro", str(tiny_run), CHUNKED.replace("/fwdbwd/", "/fwd/"), "--out", str(out)).returncode == 0
    cfg = json.loads((out / "point.json").read_text())
    norm = cfg["outputs"]["out"]["sumsq"] ** 0.5
    cfg["outputs"]["out"]["projections"][0] += 0.01 * norm
    cfg["outputs"]["out"]["sha256"] = "0" * 64
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(rs.__file__, bare / "repro.py")
    (bare / "point.json").write_text(json.dumps(cfg))
    res = run_script(bare / "repro.py", "--no-time")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "output  out: MISMATCH" in res.stdout and "oracle  linear-quadratic float64" in res.stdout


def test_plugin_is_imported_by_its_entry_point_and_its_oracle_failure_reproduces(
    tiny_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "bundle"
    res = cli("repro", str(tiny_run), OFFBYONE, "--out", str(out))
    assert res.returncode == 0, res.stderr
    cfg = json.loads((out / "point.json").read_text())
    assert cfg["impl"]["entry_point"] == "attnbench_testplugins:off_by_one"
    assert cfg["impl"]["distribution"] == "attnbench-testplugins" and cfg["run"]["correct"] is False
    assert "pip install attnbench-testplugins" in (out / "README.md").read_text()
    res = run_script(out / "repro.py", "--no-time", plugins=True)
    assert res.returncode == 1  # the output matches the bundle's, and the oracle fails it as the run did
    assert res.stdout.count(": identical") == 4 and "FAILS tolerance" in res.stdout
    assert run_script(out / "repro.py", "--no-time").returncode == 2  # the plugin is not installed


def test_a_failing_point_still_gets_a_bundle_that_reproduces_the_failure(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    res = cli("repro", str(tiny_run), RAISER, "--out", str(out))
    line = one_line_error(res, 1)
    assert "boom from the raiser plugin" in line and "the bundle reproduces the failure" in line
    cfg = json.loads((out / "point.json").read_text())
    assert cfg["outputs"] == {} and cfg["run"]["status"] == "error"
    res = run_script(out / "repro.py", "--no-time", plugins=True)
    assert res.returncode == 1 and "RuntimeError: boom from the raiser plugin" in res.stdout
    assert "run     recorded error" in res.stdout


@pytest.mark.parametrize(
    "args,needle",
    [
        (["RUN", "linear-chunked/fwd/causal/float32/B1-H2-N128-D16-M16"], "did you mean"),
        (["/nonexistent", CHUNKED], "no such directory"),
        (["RUN", CHUNKED, "--timeout", "0"], "--timeout 0"),
    ],
)
def test_repro_mistakes_are_one_line(tiny_run: Path, args: list[str], needle: str) -> None:
    res = cli("repro", *[str(tiny_run) if a == "RUN" else a for a in args])
    assert needle in one_line_error(res, 2)
