"""Saved baselines: a named copy of a run, in a versioned format.

Where: ``$ATTNBENCH_BASELINE_DIR/NAME/`` if that variable is set, else
``.attnbench/baselines/NAME/`` under the current directory. Each baseline holds::

    baseline.json      {"format": "attnbench-baseline", "format_version": 1, "name", "saved",
                        "source", "suite", "env"}
    results.parquet    copied from the run
    samples.parquet    copied from the run (absent if the run had none)
    metadata.json      copied from the run

A ``baseline.json`` with another format or a format_version this attnbench does not know is
refused (one line, exit code 2), never guessed at.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from attnbench import results
from attnbench.errors import UserError

FORMAT = "attnbench-baseline"
FORMAT_VERSION = 1
MANIFEST = "baseline.json"
ENV_VAR = "ATTNBENCH_BASELINE_DIR"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def baselines_dir() -> Path:
    """The directory holding all baselines (not created here)."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path.cwd() / ".attnbench" / "baselines"


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UserError(
            f"baseline name {name!r}: expected letters, digits, '.', '_' or '-' (not starting with a symbol)"
        )
    return name


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the baseline in ``path``, refusing unknown formats."""
    mf = path / MANIFEST
    if not mf.is_file():
        raise UserError(f"baseline {path.name!r}: no {MANIFEST} in {path}")
    try:
        doc = json.loads(mf.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"{mf}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{mf}: format {doc.get('format') if isinstance(doc, dict) else None!r} is not {FORMAT!r}")
    if doc.get("format_version") != FORMAT_VERSION:
        raise UserError(
            f"{mf}: format_version {doc.get('format_version')!r} is not one this attnbench reads (expected {FORMAT_VERSION})"
        )
    return doc


def baseline_run_dir(name: str) -> Path:
    """The directory of baseline ``name``, validated, to be read like a run directory."""
    path = baselines_dir() / _check_name(name)
    if not path.is_dir():
        known = (
            ", ".join(sorted(p.name for p in baselines_dir().glob("*") if p.is_dir()))
            if baselines_dir().is_dir()
            else ""
        )
        raise UserError(f"baseline {name!r}: not found in {baselines_dir()}; saved: {known or 'none'}")
    read_manifest(path)
    return path


def save(name: str, run_dir: Path, force: bool = False) -> Path:
    """Copy run ``run_dir`` as baseline ``name``; return where it went."""
    _check_name(name)
    run_dir = Path(run_dir)
    meta = results.read_metadata(run_dir) if run_dir.is_dir() else None
    if meta is None:
        raise UserError(f"run directory {str(run_dir)!r} does not exist")
    if not (run_dir / results.RESULTS).exists():
        results.finalize(run_dir)  # a run killed before it wrote its tables: rebuild them from the journal
    dest = baselines_dir() / name
    if dest.exists():
        if not force:
            raise UserError(f"baseline {name!r} already exists in {dest.parent}; pass --force to replace it")
        shutil.rmtree(dest)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for fname in (results.RESULTS, results.SAMPLES, results.METADATA):
        if (run_dir / fname).exists():
            shutil.copy2(run_dir / fname, tmp / fname)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name,
        "saved": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": str(run_dir.resolve()),
        "suite": (meta.get("suite") or {}).get("name"),
        "env": meta.get("env") or {},
    }
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
    tmp.replace(dest)
    return dest


def list_baselines() -> list[dict[str, Any]]:
    """Manifests of every saved baseline (an unreadable one is listed with its error)."""
    root = baselines_dir()
    out: list[dict[str, Any]] = []
    if not root.is_dir():
        return out
    for path in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.endswith(".tmp")):
        try:
            out.append({**read_manifest(path), "path": str(path)})
        except UserError as exc:
            out.append({"name": path.name, "path": str(path), "error": str(exc)})
    return out
