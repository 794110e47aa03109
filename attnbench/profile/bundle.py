"""The repro bundle: what a user attaches to a kernel bug report.

::

    repro.py     standalone: the point in CONFIG, inputs from the seed, the pass, the checks, the timer
    point.json   the same configuration (the point, the impl's import, checksums, the run's numbers)
    env.json     environment fingerprints: the run's and the machine that made the checksums
    README.md    what it is, how to run it, what the run measured, the Nsight command lines

repro.py is :mod:`attnbench.profile.repro_script` with its ``CONFIG`` line replaced by the
point's configuration, so the checks it runs are the code attnbench's tests cover.
"""

from __future__ import annotations

import json
import math
import stat
from pathlib import Path
from typing import Any

from attnbench.fmt import fmt_err, fmt_mib, fmt_ms
from attnbench.profile import repro_script
from attnbench.profile.nsight import Commands
from attnbench.text import md_escape

SCRIPT = "repro.py"
CONFIG_JSON = repro_script.CONFIG_FILE
ENV_JSON = "env.json"
README = "README.md"
CONFIG_LINE = "CONFIG: dict[str, Any] = {}  # @config: replaced by the point's configuration when a bundle is written"


def render_script(config: dict[str, Any]) -> str:
    """repro_script.py's source with ``config`` in place of its empty ``CONFIG``."""
    src = Path(repro_script.__file__).read_text(encoding="utf-8")
    if src.count(CONFIG_LINE) != 1:
        raise RuntimeError("attnbench/profile/repro_script.py lost its CONFIG line")
    text = json.dumps(config, indent=1, sort_keys=True, ensure_ascii=True, default=str)
    # JSON escapes every quote inside a string, so it never holds three in a row; a raw string
    # keeps its backslashes for json.loads.
    assert '"""' not in text and not text.endswith("\\")
    return src.replace(CONFIG_LINE, f'CONFIG: dict[str, Any] = json.loads(r"""\n{text}\n""")', 1)


def write(out: Path, config: dict[str, Any], envs: dict[str, Any], commands: Commands | None) -> dict[str, Path]:
    """Write the bundle into ``out``; returns the files by name."""
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / name for name in (SCRIPT, CONFIG_JSON, ENV_JSON, README)}
    files[SCRIPT].write_text(render_script(config), encoding="utf-8")
    files[SCRIPT].chmod(files[SCRIPT].stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    files[CONFIG_JSON].write_text(json.dumps(config, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    files[ENV_JSON].write_text(json.dumps(envs, indent=1, sort_keys=True, default=str) + "\n", encoding="utf-8")
    files[README].write_text(readme(config, envs, commands), encoding="utf-8")
    return files


def _code(text: str) -> str:
    """Inline code that survives any backticks in ``text``."""
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}"


def readme(config: dict[str, Any], envs: dict[str, Any], commands: Commands | None) -> str:
    """The bundle's README.md."""
    p = config["point"]
    run = config.get("run") or {}
    made = config.get("made_by") or {}
    imp = config["impl"]
    bundled = envs.get("bundled_on") or {}
    torch_version = str(made.get("torch", "VERSION")).split("+")[0]  # the build (+cpu, +cu124) is the user's pick
    install = [f"python3 -m venv venv && venv/bin/pip install torch=={torch_version}"]
    commit = bundled.get("git_commit_attnbench")
    install.append(
        f"venv/bin/pip install attnbench=={made.get('attnbench')}"
        + (f"    # or a checkout of commit {commit.removesuffix('-dirty')}" if commit else "")
    )
    if imp.get("distribution"):
        install.append(f"venv/bin/pip install {imp['distribution']}    # the plugin that provides {imp['name']}")
    shape = ", ".join(f"{k}={p[k]}" for k in ("B", "H", "N", "D", "M"))
    how = f"entry point {_code(imp['entry_point'])}" if imp.get("entry_point") else "its attnbench registry name"
    lines = [
        f"# Reproduce {md_escape(p['point_id'])}",
        "",
        md_escape(
            f"One point of an attnbench run, to run outside the harness: {imp['name']} ({p['pass']} pass, "
            f"{'causal' if p['causal'] else 'non-causal'}, {p['dtype']}, {shape}, seed {p['seed']}) on {p['device']}, "
            f"{config.get('threads')} threads."
        )
        + f" The impl is imported by {how}.",
        "",
        "## Run it",
        "",
        "```sh",
        *install,
        f"venv/bin/python {SCRIPT}              # check the output, then time the pass",
        f"venv/bin/python {SCRIPT} --json       # the same, with a JSON summary on stdout",
        "```",
        "",
        f"{_code(SCRIPT)} makes the inputs from the seed exactly as attnbench does (standard normal, float32 on the "
        "CPU in the order q, k, v, g, then cast), checks that they are the bundle's (SHA-256), runs the pass, "
        "compares each output tensor with the stored checksum and with the float64 reference "
        f"({md_escape(config['reference'])}), and times the pass with `torch.utils.benchmark` "
        "(`blocked_autorange`), printing the median and IQR next to the run's median. "
        "Exit status 0: reproduced; 1: the output differs or fails the oracle; 2: a set-up problem.",
        "",
        "## What the run measured",
        "",
        "| | |",
        "|---|---|",
    ]
    facts = [
        ("from", md_escape(run.get("source", "?"))),
        ("median per call", fmt_ms(run.get("time_ms_median"))),
        ("IQR", f"{fmt_ms(run.get('time_ms_q1'))} to {fmt_ms(run.get('time_ms_q3'))}"),
        ("samples", md_escape(run.get("n_samples", "–"))),
        ("timer", md_escape(run.get("timer") or "–")),
        ("peak memory", f"{fmt_mib(run.get('peak_mib'))} ({md_escape(run.get('mem_method') or '–')})"),
        ("correct", _correct(run)),
        ("threads", md_escape(run.get("threads") or config.get("threads"))),
    ]
    lines += [f"| {k} | {v} |" for k, v in facts]
    lines += ["", "## Output checksums", "", _checksum_text(config["point"]["dtype"]), ""]
    lines += ["| tensor | shape | sha256 (first 16) | norm |", "|---|---|---|---:|"]
    for name, c in config["outputs"].items():
        norm = math.sqrt(c["sumsq"]) if c.get("sumsq") is not None and c["sumsq"] >= 0 else float("nan")
        lines.append(f"| {name} | {'×'.join(map(str, c['shape']))} | `{c['sha256'][:16]}` | {norm:.6g} |")
    if commands is not None:
        lines += ["", "## Nsight", "", "Both profile only the point's own calls (see `--calls` in repro.py).", ""]
        lines += ["```sh", commands.nsys]
        lines += [commands.ncu] if commands.ncu else [f"# ncu: {commands.why_no_ncu}"]
        lines += ["```"]
    lines += ["", "## Environment", "", f"Full fingerprints in {_code(ENV_JSON)}.", "", "| | run | bundle made on |"]
    lines += ["|---|---|---|"]
    run_env = envs.get("run") or {}
    for key in (
        "cpu_model",
        "gpu",
        "threads",
        "torch",
        "torch_cuda",
        "python",
        "platform",
        "attnbench",
        "git_commit_attnbench",
    ):
        a, b = run_env.get(key), bundled.get(key)
        if a is None and b is None:
            continue
        lines.append(f"| {key} | {md_escape(a if a is not None else '–')} | {md_escape(b if b is not None else '–')} |")
    lines += ["", f"Made by attnbench {md_escape(made.get('attnbench'))} on {md_escape(made.get('made'))}."]
    return "\n".join(lines) + "\n"


def _correct(run: dict[str, Any]) -> str:
    if run.get("correct") is None:
        return "not checked"
    errs = ", ".join(
        f"{k[4:]} {fmt_err(run[k])}" for k in ("err_out", "err_dq", "err_dk", "err_dv") if run.get(k) is not None
    )
    verdict = "yes" if run["correct"] else f"NO: {md_escape(run.get('correctness_error') or '')}"
    return f"{verdict} ({errs})" if errs else verdict


def _checksum_text(dtype: str) -> str:
    tol = repro_script.REPLAY_TOLERANCES[dtype]
    return md_escape(
        "Per tensor: the SHA-256 of its bytes (equal on a bit-identical replay: same machine, build and threads) and, "
        "in float64, its sum, sum of squares and inner products with 8 fixed ±1 vectors. Elsewhere the order of "
        "floating-point sums changes the last bits; the inner products then estimate the norm of the difference, and "
        f"the replay matches when it is within {tol:g} of the stored norm ({dtype}). "
        "NaN/Inf outputs reproduce when their count is the same."
    )
