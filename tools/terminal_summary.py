"""Print the end-of-run terminal summary of a stored run (as `attnbench run` prints it), e.g. to
capture it at 80 columns: ``COLUMNS=80 python tools/terminal_summary.py RUN_DIR > terminal-80.txt``."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from attnbench.commands.summary import print_summary
    from attnbench.results import load_run

    if len(sys.argv) != 2:
        sys.exit("usage: python tools/terminal_summary.py RUN_DIR")
    run_dir = Path(sys.argv[1])
    df, _samples, meta = load_run(run_dir)
    print_summary(df, run_dir, meta)


if __name__ == "__main__":
    main()
