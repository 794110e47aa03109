"""`nox -s slurm`: a smoke sweep through a real (single-node) Slurm, checked against a local run.

1. the sweep locally (``--executor local``), timed;
2. the same sweep through ``--executor slurm`` (2 shards, a job array, submitit), timed: the same
   point ids with the same statuses as the local run, one writer per shard journal;
3. a slower copy submitted with ``--no-wait`` (2 shards): while a shard runs, a second writer
   on its journal is refused; once it journaled a point it is ``scancel``-ed; ``attnbench
   status`` shows it CANCELLED with points missing; ``--resume`` (1 shard) re-submits exactly
   those, and the run ends with every (point, round) once and the local run's statuses.

The jobs Slurm ran are printed after each step (``scontrol show job``). Needs root and Debian's
slurm-wlm and munge (tools/slurm_cluster.py starts and always stops the daemons). CPU points only.

    python tools/slurm_smoke.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

from slurm_cluster import SingleNodeSlurm  # noqa: E402

PARAMS = """
[params]
impl = ["softmax", "linear-chunked", "linear-cumsum", "linear-recurrent"]
N = [64, 128, 192]
B = 1
H = 2
D = 16
M = 16
dtype = "float32"
causal = true
pass = "fwd"
[device.cpu.limits]
linear-recurrent = { max_N = 150 }
"""
# quick points for the timed comparison; slower ones for the cancel test (a shard lasts seconds)
SMOKE = 'name = "slurm-smoke"\n' + PARAMS + "[timing]\nmin_time_s = 0.05\nmax_time_s = 0.1\nthreads = 1\n"
SLOW = 'name = "slurm-smoke"\n' + PARAMS + "[timing]\nmin_time_s = 0.5\nmax_time_s = 0.6\nthreads = 1\n"
SLURM_ARGS = ["--executor", "slurm", "--slurm-cpus-per-task", "1", "--slurm-time", "15"]


def say(msg: str) -> None:
    print(f"[slurm-smoke] {msg}", flush=True)


def attnbench(*args: str, check: bool = True) -> tuple[subprocess.CompletedProcess[str], float]:
    say("$ attnbench " + " ".join(args))
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-m", "attnbench", *args], capture_output=True, text=True, timeout=900)
    took = time.perf_counter() - t0
    for line in (res.stderr + res.stdout).splitlines():  # events (stderr) before the summary
        print("    " + line)
    if check and res.returncode != 0:
        raise AssertionError(f"attnbench {args[0]} exited {res.returncode}")
    return res, took


def jobs_of(run: Path) -> list[str]:
    doc = json.loads((run / "shards.json").read_text())
    return [s["job_id"] for sub in doc["submissions"] for s in sub["shards"]]


def show_jobs(run: Path) -> None:
    """What Slurm says about each job of the run (scontrol keeps ended jobs for MinJobAge)."""
    say(f"jobs Slurm ran for {run.name}:")
    keep = ("JobId", "ArrayJobId", "ArrayTaskId", "JobName", "JobState", "Reason", "ExitCode", "RunTime", "NodeList")
    for jid in jobs_of(run):
        out = subprocess.run(["scontrol", "-o", "show", "job", jid], capture_output=True, text=True).stdout
        fields = dict(tok.split("=", 1) for tok in out.split() if "=" in tok)
        print("    " + " ".join(f"{k}={fields.get(k, '?')}" for k in keep))


def results(run: Path) -> dict[str, str]:
    from attnbench.results import load_run

    df, _samples, _meta = load_run(run)
    return dict(zip(df["point_id"].astype(str), df["status"].astype(str), strict=True))


def check_journals(run: Path) -> None:
    """Every (point, round) once across the main and the shard journals; one writer per shard
    journal (all its records name its shard and one job), and no job wrote two journals."""
    from attnbench.results import shards
    from attnbench.results.layout import RunDir

    files = [RunDir(run).journal, *shards.journal_files(run)]
    counts = Counter((r.point_id, r.round) for p in files for r in shards.read_records(p))
    dup = [k for k, n in counts.items() if n > 1]
    assert not dup, f"journaled more than once: {dup}"
    jobs: list[str] = []
    for path in shards.journal_files(run):
        sid = path.name.removeprefix("shard-").removesuffix(".jsonl")
        rows = [r.row for r in shards.read_records(path)]
        writers = {(r["shard"], r["slurm_job_id"]) for r in rows}
        assert len(writers) == 1 and next(iter(writers))[0] == sid, f"{path.name}: written by {writers}"
        jobs.append(rows[0]["slurm_job_id"])
        status = shards.read_status(run, sid)
        assert status.get("slurm_job_id") == rows[0]["slurm_job_id"], f"{path.name}: status {status}"
    assert len(jobs) == len(set(jobs)), f"one job wrote two shard journals: {jobs}"
    say(f"{run.name}: {len(counts)} (point, round) pairs, each once, in {len(jobs)} shard journal(s), one job each")


def wait_until(what: str, cond, timeout_s: float = 300.0, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


def cancel_and_resume(work: Path, suite: Path, local: dict[str, str]) -> None:
    from attnbench.results import shards

    run = work / "cancel"
    attnbench(
        "run", "--suite", str(suite), "--out", str(run), "--no-report", "--no-wait", "--slurm-shards", "2", *SLURM_ARGS
    )
    entries = {s.id: s for s in shards.read_manifest(run).shards}

    def running_with_a_record():
        for sid in entries:
            if shards.read_status(run, sid).get("state") == shards.RUNNING and shards.read_records(
                shards.journal_path(run, sid)
            ):
                return sid
        return None

    victim = wait_until("a running shard that journaled a point", running_with_a_record)
    job = entries[victim].job_id
    try:  # the shard holds its journal: a second writer is refused while it runs
        shards.ShardJournal(run, victim).close()
        raise AssertionError(f"a second writer opened shard {victim}'s journal while the shard ran")
    except shards.ShardBusy as exc:
        say(f"second writer refused while shard {victim} runs: {exc}")
    subprocess.run(["scancel", str(job)], check=True)
    say(
        f"scancel {job} (shard {victim}, {len(shards.read_records(shards.journal_path(run, victim)))} point(s) journaled)"
    )

    def all_ended():
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i"], capture_output=True, text=True).stdout.split()
        return not set(out) & {str(e.job_id) for e in entries.values()}

    wait_until("every shard of the first submission to leave the queue", all_ended)
    res, _ = attnbench("status", str(run), "--json")
    st = json.loads(res.stdout)
    states = {s["id"]: s["slurm_state"] for s in st["shards"]}
    assert states[victim] == "CANCELLED", f"shard {victim} is {states[victim]}, expected CANCELLED"
    assert st["missing"] >= 1, f"the cancelled shard had finished anyway: {st}"
    missing = {tuple(i) for i in entries[victim].items} - {
        (r.point_id, r.round) for r in shards.read_records(shards.journal_path(run, victim))
    }
    assert st["missing"] == len(missing), (st["missing"], missing)
    attnbench("status", str(run))
    show_jobs(run)

    attnbench("run", "--resume", str(run), "--no-report", "--slurm-shards", "1")
    subs = shards.read_manifest(run).submissions
    resubmitted = {tuple(i) for s in subs[-1].shards for i in s.items}
    assert len(subs) == 2 and len(subs[-1].shards) == 1 and resubmitted == missing, (
        f"resubmitted {sorted(resubmitted)}, missing {sorted(missing)}"
    )
    say(f"--resume re-submitted exactly the {len(missing)} missing pair(s) of shard {victim}")
    show_jobs(run)
    check_journals(run)
    got = results(run)
    assert got == local, (
        f"cancel+resume run differs from the local run: {sorted(set(got.items()) ^ set(local.items()))}"
    )
    say("cancel + resume: the same point ids with the same statuses as the local run")
    attnbench("status", str(run))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--keep", type=Path, help="work in this directory and keep it")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="attnbench-slurm-smoke-"))
    work.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the daemons on the way out
    smoke, slow = work / "smoke.toml", work / "slow.toml"
    smoke.write_text(SMOKE)
    slow.write_text(SLOW)
    with SingleNodeSlurm(work / "cluster") as cluster:
        say(f"single-node Slurm up: host {cluster.host}, {cluster.cpus} CPUs, SLURM_CONF={cluster.conf}")
        _res, t_local = attnbench("run", "--suite", str(smoke), "--out", str(work / "local"), "--no-report")
        local = results(work / "local")
        _res, t_slurm = attnbench(
            "run", "--suite", str(smoke), "--out", str(work / "slurm"), "--no-report", "--slurm-shards", "2",
            "--slurm-array-parallelism", "2", *SLURM_ARGS,
        )  # fmt: skip
        show_jobs(work / "slurm")
        check_journals(work / "slurm")
        got = results(work / "slurm")
        assert got == local, f"Slurm run differs from the local run: {sorted(set(got.items()) ^ set(local.items()))}"
        say(
            f"Slurm run: the same {len(got)} point ids with the same statuses as the local run ({Counter(got.values())})"
        )
        attnbench("status", str(work / "slurm"))
        cancel_and_resume(work, slow, local)
    say(
        f"wall time of the smoke sweep ({len(local)} points), measured on this machine while other work ran "
        f"on it (loaded): local {t_local:.1f} s, Slurm (2 shards, 1 CPU each) {t_slurm:.1f} s"
    )
    say("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
