"""The history database: ingest (idempotent, one transaction, kill -9 safe), schema versions,
and one-line errors for corrupt or foreign run directories and databases."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from history_helpers import ENV, REPO, attnbench, rounds_around, stamp, write_run

from attnbench import results
from attnbench.compare.io import Side, mismatch_reason
from attnbench.errors import UserError
from attnbench.history import identity, store
from attnbench.history.ingestion import ingest, load

duckdb = pytest.importorskip("duckdb")

PIDS = ["softmax/fwd/causal/float32/N512", "sdpa/fwd/causal/float32/N512", "linear-chunked/fwd/causal/float32/N512"]


def make_run(path: Path, i: int = 0, factor: float = 1.0, **kw) -> Path:
    rng = np.random.default_rng(i)
    pts = {pid: rounds_around((1 + j) * factor, rng) for j, pid in enumerate(PIDS)}
    return write_run(path, pts, stamp(i), commit=f"c{i}", **kw)


def table_counts(db: Path) -> tuple[int, int, int]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in ("runs", "points", "samples"))  # type: ignore[return-value]
    finally:
        con.close()


def test_ingest_is_idempotent_and_a_copy_is_the_same_run(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    run = make_run(tmp_path / "r0")
    first = ingest(run, db)
    assert first.action == "added" and first.n_points == 3 and first.n_samples == 3 * 3 * 12
    counts = table_counts(db)
    assert counts == (1, 3, 108)
    assert ingest(run, db).action == "unchanged"
    copy = shutil.copytree(run, tmp_path / "copy")
    again = ingest(copy, db)
    assert again.action == "unchanged" and again.run_id == first.run_id
    assert table_counts(db) == counts
    assert "already in the history" in str(again)


def test_a_run_whose_contents_changed_is_replaced(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    run = make_run(tmp_path / "r0")
    rid = ingest(run, db).run_id
    meta = results.read_metadata(run)
    make_run(run, factor=2.0)  # same identity (started, command, env), new results
    results.write_metadata(run, {k: v for k, v in meta.items() if k != "schema_version"})
    again = ingest(run, db)
    assert (again.action, again.run_id) == ("replaced", rid)
    con = duckdb.connect(str(db), read_only=True)
    values = con.execute("SELECT value_ms FROM points ORDER BY point_id").fetchall()
    con.close()
    assert table_counts(db) == (1, 3, 108)
    assert sorted(v for (v,) in values) == pytest.approx([2.0, 4.0, 6.0], rel=0.05)


def test_run_identity_prefers_metadata_run_id(tmp_path: Path) -> None:
    run = make_run(tmp_path / "r0")
    meta = results.read_metadata(run)
    derived = identity.run_id(meta, "x")
    assert derived.startswith("r-") and derived == identity.run_id(dict(meta), "y")
    assert identity.run_id({**meta, "started": "2026-11-01T01:00:00+0000"}, "x") != derived
    assert identity.run_id({**meta, "run_id": "0b5e-uuid"}, "x") == "0b5e-uuid"
    with pytest.raises(UserError, match="neither run_id nor started"):
        identity.run_id({"suite": {"name": "t"}}, "somewhere")


def test_value_is_the_median_of_the_fast_rounds_and_failures_have_none(tmp_path: Path) -> None:
    fast1, fast2, slow = [1.0, 1.02, 0.98, 1.01], [1.03, 1.01, 0.99, 1.0], [2.0, 2.1, 1.9, 2.05]
    pts = {PIDS[0]: [fast1, fast2, slow], PIDS[1]: [[3.0] * 4], PIDS[2]: [[1.0] * 4]}
    run = write_run(tmp_path / "r", pts, stamp(0), status={PIDS[2]: "crashed"})
    loaded = load(run).points.set_index("point_id")
    assert loaded.loc[PIDS[0], "value_ms"] == pytest.approx(float(np.median(fast1 + fast2)))
    assert (loaded.loc[PIDS[0], "rounds_kept"], loaded.loc[PIDS[0], "rounds_all"]) == (2, 3)
    assert loaded.loc[PIDS[0], "time_ms_median"] == pytest.approx(float(np.median(fast1 + fast2 + slow)))
    assert loaded.loc[PIDS[1], "value_ms"] == pytest.approx(3.0)
    assert loaded.loc[PIDS[2], "status"] == "crashed" and np.isnan(loaded.loc[PIDS[2], "value_ms"])
    extra = json.loads(loaded.loc[PIDS[0], "extra"])
    assert extra["round_medians_ms"] == pytest.approx([1.005, 1.005, 2.025])


@pytest.mark.parametrize(
    "change",
    [{}, {"torch": "2.4.0"}, {"cpu_model": "Other CPU"}, {"device": "cuda", "gpu": "H100"}, {"torch_cuda": "12.4"},
     {"threads": 2}, {"python": "3.12.1"}, {"git_commit_cwd": "other"}, {"gpu": "H100"}],
)  # fmt: skip
def test_environment_classes_follow_compares_comparability_rule(change: dict) -> None:
    a_env, b_env = dict(ENV), {**ENV, **change}
    a = Side("a", {}, a_env, {}, a_env["threads"])
    b = Side("b", {}, b_env, {}, b_env["threads"])
    same_class = identity.env_key(a_env, a.threads) == identity.env_key(b_env, b.threads)
    comparable = mismatch_reason(a, b) is None
    assert not same_class or comparable  # one series never mixes runs compare would refuse
    facts_a, facts_b = identity.env_facts(a_env, a.threads), identity.env_facts(b_env, b.threads)
    if any((facts_a.get(k) is None) != (facts_b.get(k) is None) for k in {*facts_a, *facts_b}):
        assert not same_class  # compare skips a key missing on one side; a series keeps them apart (stricter)
    else:
        assert same_class == comparable


def test_schema_version_and_foreign_databases_are_refused(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    ingest(make_run(tmp_path / "r0"), db)
    con = duckdb.connect(str(db))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(UserError, match=r"schema_version '99' is not one this attnbench reads \(expected 1\)"):
        store.connect(db)
    foreign = tmp_path / "other.duckdb"
    con = duckdb.connect(str(foreign))
    con.execute("CREATE TABLE trades (x INTEGER)")
    con.close()
    with pytest.raises(UserError, match="not an attnbench history database"):
        store.connect(foreign, write=True)
    text = tmp_path / "notes.duckdb"
    text.write_text("these are my notes\n" * 100)
    with pytest.raises(UserError, match="cannot open it"):
        store.connect(text)
    with pytest.raises(UserError, match="no history database at"):
        store.connect(tmp_path / "absent.duckdb")


def test_default_location_and_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(store.ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store.default_path() == tmp_path / "xdg" / "attnbench" / "history.duckdb"
    monkeypatch.setenv(store.ENV_VAR, str(tmp_path / "env.duckdb"))
    assert store.resolve(None) == tmp_path / "env.duckdb"
    assert store.resolve(tmp_path / "opt.duckdb") == tmp_path / "opt.duckdb"


def _corrupt_runs(root: Path) -> dict[str, Path]:
    runs = {}
    runs["no metadata"] = root / "empty"
    runs["no metadata"].mkdir(parents=True)
    runs["bad json"] = make_run(root / "badjson")
    (runs["bad json"] / "metadata.json").write_text("{not json")
    runs["foreign metadata"] = make_run(root / "foreign")
    (runs["foreign metadata"] / "metadata.json").write_text(json.dumps({"name": "my-tool", "version": 3}))
    runs["truncated parquet"] = make_run(root / "trunc")
    data = (runs["truncated parquet"] / "results.parquet").read_bytes()
    (runs["truncated parquet"] / "results.parquet").write_bytes(data[: len(data) // 2])
    runs["garbage samples"] = make_run(root / "garbage")
    (runs["garbage samples"] / "samples.parquet").write_bytes(b"PAR1 this is not parquet")
    runs["no point_id"] = make_run(root / "nopid")
    import pandas as pd

    pd.DataFrame({"x": [1, 2]}).to_parquet(runs["no point_id"] / "results.parquet")
    runs["unfinished"] = make_run(root / "unfinished", finished=False)
    runs["missing"] = root / "does-not-exist"
    return runs


def test_corrupt_or_foreign_run_directories_are_one_line_errors(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    ingest(make_run(tmp_path / "good"), db)
    before = table_counts(db)
    for what, run in _corrupt_runs(tmp_path / "bad").items():
        proc = attnbench("history", "add", str(run), "--db", str(db))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (what, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in proc.stderr, (what, lines)
        assert str(run) in lines[0] or run.name in lines[0], (what, lines)
        assert table_counts(db) == before, what


def test_a_bad_directory_among_several_stops_there(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    good, bad, later = make_run(tmp_path / "g", 0), tmp_path / "nothing", make_run(tmp_path / "l", 1)
    proc = attnbench("history", "add", str(good), str(bad), str(later), "--db", str(db))
    assert proc.returncode == 2 and "nothing" in proc.stderr
    assert table_counts(db)[0] == 1


def test_missing_duckdb_names_the_extra(tmp_path: Path) -> None:
    code = "import sys; sys.modules['duckdb'] = None; from attnbench.cli import main; sys.argv = ['attnbench', *sys.argv[1:]]; main()"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code, "history", "add", str(make_run(tmp_path / "r")), "--db", str(tmp_path / "h.duckdb")],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "error: the history database needs duckdb, which is not installed: pip install 'attnbench[history]'"
    )


KILLER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from attnbench.history import ingestion

    original = ingestion.insert_samples

    def stall(con, run, key):
        original(con, run, key)  # the run's rows are written, the transaction is still open
        Path(sys.argv[3]).write_text("inside")
        time.sleep(120)

    ingestion.insert_samples = stall
    ingestion.ingest(sys.argv[1], sys.argv[2])
    """
)


def _kill_mid_ingest(run: Path, db: Path, tmp_path: Path) -> None:
    marker = tmp_path / f"marker-{run.name}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", KILLER, str(run), str(db), str(marker)], env=env)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, "the ingest ended before it was killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()


def test_kill_9_during_an_ingest_leaves_the_previous_state(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    ingest(make_run(tmp_path / "a", 0), db)
    before = table_counts(db)
    _kill_mid_ingest(make_run(tmp_path / "b", 1), db, tmp_path)
    assert table_counts(db) == before
    # the database is whole: the same run ingests cleanly afterwards
    assert ingest(tmp_path / "b", db).action == "added"
    assert table_counts(db) == (2, 6, 216)


def test_kill_9_while_replacing_a_run_keeps_the_old_rows(tmp_path: Path) -> None:
    db = tmp_path / "h.duckdb"
    run = make_run(tmp_path / "a", 0)
    ingest(run, db)
    con = duckdb.connect(str(db), read_only=True)
    old = con.execute("SELECT point_id, value_ms FROM points ORDER BY point_id").fetchall()
    con.close()
    meta = results.read_metadata(run)
    make_run(run, 0, factor=3.0)
    results.write_metadata(run, {k: v for k, v in meta.items() if k != "schema_version"})
    _kill_mid_ingest(run, db, tmp_path)
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT point_id, value_ms FROM points ORDER BY point_id").fetchall() == old
    con.close()


@pytest.mark.parametrize("window", [0.15, 0.0, 0.5])
def test_fast_state_values_match_compares_fast_rounds(window: float) -> None:
    import pandas as pd

    from attnbench.history.ingestion import fast_rounds, fast_state_values

    rng = np.random.default_rng(5)
    rows = []
    for p in range(20):
        n_rounds = int(rng.integers(1, 8))
        for r in range(n_rounds):
            slow = rng.choice([1.0, 1.1, 2.0, 3.0])
            for _ in range(int(rng.integers(1, 15))):
                rows.append(
                    {"point_id": f"p{p}", "sample": len(rows), "time_ms": slow * rng.lognormal(0, 0.05), "round": r}
                )
    samples = pd.DataFrame(rows)
    got = fast_state_values(samples, window)
    for pid, grp in samples.groupby("point_id"):
        kept, k, n = fast_rounds(list(grp["time_ms"]), list(grp["round"]), window)
        assert got[pid] == (pytest.approx(float(np.median(kept))), k, n)
