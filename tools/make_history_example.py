"""A real history, end to end: the `ci` suite run at several commits, one of which makes an
implementation 25 % slower; every run ingested; `history check` run; the trend page written
and screenshotted in headless Chromium.

    PYTHONPATH=$PWD python tools/make_history_example.py --commits 16 --slow-from 8 \\
        --out reports/history-example

The commits are real commits of a scratch git repository that the runs are made in (so each
run records its own commit as `attnbench run` always does: the repository of its working
directory). Each commit writes the file `slowdown`; from commit --slow-from on it says 0.25,
and the run gets ATTNBENCH_TEST_SLOWDOWN=0.25, which makes the test plugin `slowdown`
(linear-chunked plus 25 % busy work, tests/fixtures/plugin_site) 25 % slower. Everything else
is the ci suite as shipped (--impl, --set and --rounds narrow it for a quick try).

Writes into --out: history.html (the trend page), history.png (its screenshot), check.txt
(the output of `attnbench history check`), README.md (what was run, how long it took).
The database and the run directories stay in --work (default: a temporary directory); called
again with the same --work and a larger --commits, it goes on where it stopped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN_SITE = REPO / "tests" / "fixtures" / "plugin_site"
IMPLS = "softmax,sdpa,linear-chunked,slowdown"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def sh(args: list[str], cwd: Path, env: dict[str, str] | None = None, ok: tuple[int, ...] = (0,)) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode not in ok:
        sys.exit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def attnbench_env(slowdown: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PLUGIN_SITE), str(REPO), env.get("PYTHONPATH", "")])
    env["ATTNBENCH_TEST_SLOWDOWN"] = slowdown
    env.pop("ATTNBENCH_TEST_EXTRA_MEMORY", None)
    return env


def screenshot(page: Path, png: Path, chromium: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        pg = browser.new_page(viewport={"width": 1100, "height": 900})
        errors: list[str] = []
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(page.resolve().as_uri())
        pg.wait_for_load_state("load")
        pg.screenshot(path=str(png), full_page=True)
        browser.close()
    if errors:
        sys.exit(f"the trend page raised errors in Chromium: {errors}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--commits", type=int, default=16, help="commits (one ci run each)")
    ap.add_argument("--slow-from", type=int, default=8, help="first commit with the 25 %% slowdown (0-based)")
    ap.add_argument("--runs-per-commit", type=int, default=1)
    ap.add_argument("--impl", default=IMPLS, help=f"impls of the ci suite to run (default {IMPLS})")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="passed to attnbench run --set")
    ap.add_argument("--rounds", type=int, help="passed to attnbench run --rounds (default: the suite's 7)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, help="where the scratch repository, runs and database go")
    ap.add_argument("--chromium", default=os.environ.get("ATTNBENCH_CHROMIUM") or shutil.which("chromium") or "")
    args = ap.parse_args()
    if not 0 < args.slow_from < args.commits:
        sys.exit("--slow-from must be between 1 and --commits - 1")

    args.out = args.out.resolve()  # the commands below run in the scratch repository
    work = (args.work or Path(tempfile.mkdtemp(prefix="history-example-"))).resolve()
    repo, runs_dir, db = work / "repo", work / "runs", work / "history.duckdb"
    repo.mkdir(parents=True, exist_ok=True)
    runs_dir.mkdir(exist_ok=True)
    git = ["git", "-c", "user.name=attnbench example", "-c", "user.email=example@invalid"]
    first = 0
    if (repo / ".git").exists():  # an earlier call: go on from its last commit
        first = int(sh(["git", "rev-list", "--count", "HEAD"], repo).strip())
        print(f"{work}: continuing after {first} commits", flush=True)
    else:
        sh(["git", "init", "-q", "-b", "main"], repo)
    log_file = work / "log.txt"
    log = log_file.read_text().splitlines() if log_file.exists() else []
    for c in range(first, args.commits):
        slow = "0.25" if c >= args.slow_from else "0"
        (repo / "slowdown").write_text(f"{slow}\n")
        sh([*git, "add", "slowdown"], repo)
        sh([*git, "commit", "-q", "--allow-empty", "-m", f"commit {c}: slowdown impl {slow}"], repo)
        for k in range(args.runs_per_commit):
            out = runs_dir / f"c{c:02d}-{k}"
            cmd = [sys.executable, "-m", "attnbench", "run", "--suite", "ci", "--impl", args.impl, "--threads",
                   str(args.threads), "--out", str(out), "--no-report"]  # fmt: skip
            for s in args.sets:
                cmd += ["--set", s]
            if args.rounds:
                cmd += ["--rounds", str(args.rounds)]
            t0 = time.time()
            sh(cmd, repo, attnbench_env(slow))
            sh(
                [sys.executable, "-m", "attnbench", "history", "add", str(out), "--db", str(db)],
                repo,
                attnbench_env(slow),
            )
            line = f"commit {c} (slowdown {slow}) run {k}: {time.time() - t0:.0f} s"
            log.append(line)
            log_file.write_text("\n".join(log) + "\n")
            print(line, flush=True)
    base = [sys.executable, "-m", "attnbench", "history"]
    check = sh([*base, "check", "--db", str(db)], repo, attnbench_env("0"), ok=(0, 1))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "check.txt").write_text(check)
    print(check)
    sh([*base, "report", "--db", str(db), "--out", str(args.out)], repo, attnbench_env("0"))
    if args.chromium:
        screenshot(args.out / "history.html", args.out / "history.png", args.chromium)
    command = " ".join(["python tools/make_history_example.py", *sys.argv[1:]])
    (args.out / "README.md").write_text(
        "# A real history: the ci suite across commits, one of them 25 % slower\n\n"
        f"Made by `PYTHONPATH=$PWD {command}` on {time.strftime('%Y-%m-%d')} "
        "(the run times are below).\n\n"
        f"{args.commits} commits of a scratch repository, {args.runs_per_commit} run(s) of the `ci` suite "
        f"(`--impl {args.impl}`{''.join(f' --set {s}' for s in args.sets)}"
        f"{f' --rounds {args.rounds}' if args.rounds else ''}, `--threads {args.threads}`) at each; from commit "
        f"{args.slow_from} on the `slowdown` impl (linear-chunked plus busy work, tests/fixtures/plugin_site) "
        "is made 25 % slower. Every run ingested with `attnbench history add`; then `attnbench history check` "
        "(check.txt) and `attnbench history report` (history.html; screenshot history.png).\n\n"
        "```\n" + "\n".join(log) + "\n```\n"
    )
    print(f"wrote {args.out}; work files in {work}")


if __name__ == "__main__":
    main()
