"""What identifies a run, a series and an environment in the history.

* **Run**: ``metadata.json``'s ``run_id`` when the run has one; otherwise a hash of what a
  run directory cannot share with another run: when it started, the suite, the command line
  (which names the output directory), the overrides, the device and the whole environment
  fingerprint. A copy of a run directory (a saved baseline, an artifact download) hashes the
  same, so ingesting it again is a no-op; a resumed run keeps its ``started`` and its id.
* **Environment class** (``env_key``): the fingerprint keys that ``attnbench compare`` refuses
  to mix (:data:`attnbench.compare.io.GUARD_KEYS`: device, GPU model, CPU model, torch, CUDA)
  and, on a CPU, the thread count, as :func:`attnbench.compare.io.mismatch_reason` does. Two
  runs with the same env_key are ones compare would compare without ``--allow-mismatch``
  (a test holds the two rules together). Stricter in one way: compare lets a key that is
  missing on either side pass, which no single key can express, so a series keeps a run
  without the key apart from one with it.
* **Series**: one point_id of one suite on one environment class. The suite is part of it
  because suites time the same point differently (the ``ci`` suite times CPU time over seven
  processes, ``seqlen`` the wall clock in one).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from attnbench.compare.io import GUARD_KEYS
from attnbench.errors import UserError

ID_KEYS = ("started", "command", "overrides", "device")


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def run_id(meta: dict[str, Any], where: str) -> str:
    """The stable identity of the run whose metadata is ``meta``."""
    explicit = meta.get("run_id")
    if explicit:
        return str(explicit)
    if not meta.get("started"):
        raise UserError(f"{where}: metadata.json has neither run_id nor started; cannot tell this run from another")
    ident = {k: meta.get(k) for k in ID_KEYS}
    ident["suite"] = (meta.get("suite") or {}).get("name")
    ident["env"] = meta.get("env") or {}
    return "r-" + hashlib.sha256(_canonical(ident).encode()).hexdigest()[:24]


def env_facts(env: dict[str, Any], threads: int | None) -> dict[str, Any]:
    """The facts that decide comparability: GUARD_KEYS, and threads on a CPU."""
    facts = {k: env.get(k) for k in GUARD_KEYS}
    if env.get("device") == "cpu":
        facts["threads"] = threads
    return facts


def env_key(env: dict[str, Any], threads: int | None) -> str:
    """A short stable key of :func:`env_facts` (equal keys: comparable environments)."""
    return "e-" + hashlib.sha256(_canonical(env_facts(env, threads)).encode()).hexdigest()[:12]


def env_label(env: dict[str, Any], threads: int | None) -> str:
    """One line for people: ``cpu AMD EPYC, 1 thread, torch 2.13.0+cpu``."""
    dev = env.get("device") or "?"
    what = env.get("gpu") if dev == "cuda" else env.get("cpu_model")
    parts = [f"{dev} {what}" if what else dev]
    if dev == "cpu" and threads:
        parts.append(f"{threads} thread{'s' if threads != 1 else ''}")
    if env.get("torch"):
        parts.append(f"torch {env['torch']}")
    if env.get("torch_cuda"):
        parts.append(f"CUDA {env['torch_cuda']}")
    return ", ".join(parts)


def commit_of(meta: dict[str, Any]) -> str | None:
    """The commit a run measured: ``git_commit`` in the metadata if the runner recorded one,
    else the repository of the working directory, else attnbench's own."""
    env = meta.get("env") or {}
    for value in (meta.get("git_commit"), env.get("git_commit_cwd"), env.get("git_commit_attnbench")):
        if value:
            return str(value)
    return None


def branch_of(meta: dict[str, Any]) -> str | None:
    env = meta.get("env") or {}
    value = meta.get("git_branch") or env.get("git_branch")
    return str(value) if value else None


def short_commit(commit: str | None) -> str:
    """``0123456789ab`` of a full hash (``-dirty`` kept), ``?`` for none."""
    if not commit:
        return "?"
    sha, dirty = (commit[:-6], "-dirty") if commit.endswith("-dirty") else (commit, "")
    return sha[:10] + dirty
