#!/usr/bin/env bash
# The figures issue 16 asks for, on an idle 2-core machine. Usage:
#   bash tools/issue16_figures.sh REPO_URL_OR_PATH [BRANCH]
# 1. the seqlen suite's wall time from a fresh clone and a fresh venv (first kernel build included),
#    its terminal summary at 80 columns, and how many points it flags as noisy (idle);
# 2. two seqlen sweeps at once (a loaded machine): the same counts, which should be high.
set -euo pipefail
SRC=${1:?repo url or path}
BRANCH=${2:-main}
WORK=$(mktemp -d /tmp/attnbench-issue16.XXXX)
git clone -q --branch "$BRANCH" "$SRC" "$WORK/repo"
cd "$WORK/repo"
python3 -m venv .venv
. .venv/bin/activate
pip install -q torch==2.13.0
pip install -q -e .
export ATTNBENCH_KERNEL_CACHE="$WORK/kernel-cache"   # empty: the first build is counted

echo "== idle: attnbench run --suite seqlen (fresh clone, fresh venv, first kernel build)"
start=$(date +%s.%N)
COLUMNS=80 attnbench run --suite seqlen --out runs/idle > "$WORK/idle-terminal-80.txt"
end=$(date +%s.%N)
echo "wall time: $(python3 -c "print(f'{$end - $start:.1f} s')")"
grep -E "measured points (are|is) noisy|timed by one call|^[0-9]+ points" "$WORK/idle-terminal-80.txt" || true
grep -m1 -i "noisy" runs/idle/report/report.md || true

echo "== loaded: two seqlen sweeps at once"
COLUMNS=80 attnbench run --suite seqlen --out runs/loaded-a > "$WORK/loaded-a-80.txt" &
COLUMNS=80 attnbench run --suite seqlen --out runs/loaded-b > "$WORK/loaded-b-80.txt"
wait
for r in a b; do
    grep -E "measured points (are|is) noisy" "$WORK/loaded-$r-80.txt" || true
    grep -m1 -i "noisy" "runs/loaded-$r/report/report.md" || true
done
echo "terminal summaries: $WORK/*-80.txt; runs: $WORK/repo/runs/"
echo "commit the idle one: cp $WORK/idle-terminal-80.txt reports/example-cpu-seqlen/terminal-80.txt"
