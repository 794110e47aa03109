"""``metadata.json``: the versioned sidecar of a run. Readers refuse versions they do not know
and migrate the older ones they do (:func:`migrate`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from attnbench.errors import UserError
from attnbench.results.layout import RunDir, write_atomic
from attnbench.results.schema import SCHEMA_VERSION


def write_metadata(run_dir: Path | RunDir, meta: dict[str, Any]) -> None:
    """Write ``meta`` (schema_version added) atomically."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    doc = {"schema_version": SCHEMA_VERSION, **{k: v for k, v in meta.items() if k != "schema_version"}}
    write_atomic(rd.metadata, json.dumps(doc, indent=2, default=str))


def read_metadata(run_dir: Path | RunDir) -> dict[str, Any]:
    """The run's metadata at the current schema version (older versions migrated in memory)."""
    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(Path(run_dir))
    path = rd.metadata
    if not path.exists():
        raise UserError(f"run directory {rd}: no {path.name}; expected a directory written by `attnbench run`")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(meta, dict):
        raise UserError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    return migrate(meta, path)


def run_id_of(meta: dict[str, Any]) -> str:
    """A stable identity for a run written before runs carried a ``run_id``."""
    ident = json.dumps(
        {k: meta.get(k) for k in ("started", "command", "suite", "env", "device")}, sort_keys=True, default=str
    )
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def migrate(meta: dict[str, Any], where: Path | str = "metadata.json") -> dict[str, Any]:
    """``meta`` at :data:`SCHEMA_VERSION`; an unknown or future version is a UserError."""
    version = meta.get("schema_version")
    if version == 1:
        meta = dict(meta)
        meta["run_id"] = meta.get("run_id") or run_id_of(meta)
        meta.setdefault("commands", [meta["command"]] if meta.get("command") else [])
        meta.setdefault("options", None)  # v1 runs did not store them: resume uses today's defaults
        meta["schema_version"] = version = 2
    if version != SCHEMA_VERSION:
        raise UserError(
            f"{where}: schema_version {version!r} is not one this attnbench reads (expected 1 to {SCHEMA_VERSION})"
        )
    for key in ("suite", "device"):
        if key not in meta:
            raise UserError(f"{where}: no {key!r}; expected metadata written by `attnbench run`")
    return meta
