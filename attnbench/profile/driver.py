"""The parent's side of ``attnbench profile`` and ``attnbench repro``: start the worker, turn
how it ended into a result or a one-line failure, and write the tables, the Nsight commands,
the repro bundle and the summary into the output directory (never into the run's files).
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attnbench import __version__
from attnbench import profile as names
from attnbench.env import fingerprint
from attnbench.errors import UserError
from attnbench.impls import registry
from attnbench.measure.inputs import make_inputs
from attnbench.point import Status
from attnbench.profile import bundle, nsight, top
from attnbench.profile.repro_script import inputs_sha256
from attnbench.profile.target import Target
from attnbench.profile.worker import impl_import
from attnbench.runner.procs import run_child, signal_name

ERROR_FILE = "error.txt"


class PointFailed(Exception):
    """The point failed in its worker (an exception, out of memory, a crash, a hang): one line."""


@dataclass
class Profiled:
    """A finished profile: the worker's answer, the table, the files written."""

    target: Target
    out: Path
    data: dict[str, Any]
    rows: list[top.TopRow]
    commands: nsight.Commands
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def measured_ms(self) -> float:
        return float(self.data["measured"]["median_ms"])

    @property
    def self_sum_ms(self) -> float:
        """The table's self times summed, per call (host ops on the CPU, kernels on CUDA)."""
        return top.self_sum_ms(self.rows, self.target.point.device)

    @property
    def busy_ms(self) -> float | None:
        """Median over the profiled calls of each call's self times summed."""
        v = self.data["profiled"].get("busy_ms_median")
        return None if v is None else float(v)

    @property
    def beside_ms(self) -> float:
        """Median of the unprofiled calls timed beside the profiled ones (what ``share`` is of)."""
        return float(self.data["profiled"]["unprofiled_ms_median"])


def prepare_out(out: Path) -> Path:
    """Create ``out`` (a directory we may write into) or fail with one line."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {str(out)!r}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".attnbench-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {str(out)!r}: cannot be created or written ({exc.strerror or exc})") from None
    return out


def _answer(res: Any, target: Target, what: str, timeout_s: float, out: Path) -> dict[str, Any]:
    """The worker's dict, or PointFailed / UserError saying in one line why there is none."""
    pid = target.point.point_id
    if not res.messages:
        if res.timed_out:
            raise PointFailed(f"{pid}: no result from the {what} worker within {timeout_s:g} s; killed (see --timeout)")
        code = res.exitcode
        died = f"died from {signal_name(code)}" if code is not None and code < 0 else f"exited with code {code}"
        raise PointFailed(f"{pid}: the {what} worker {died} without a result (the impl crashed it)")
    data: dict[str, Any] = res.messages[-1]
    status = data.get("status")
    if status == Status.SKIPPED.value:
        raise UserError(f"POINT_ID {pid!r}: cannot run here: {data.get('error')}")
    if status != Status.OK.value:
        where = ""
        if data.get("traceback"):
            (out / ERROR_FILE).write_text(str(data["traceback"]), encoding="utf-8")
            where = f" (traceback in {out / ERROR_FILE})"
        raise PointFailed(f"{pid}: {status} in the {what} worker: {data.get('error')}{where}")
    return data


def profile(target: Target, out: Path, calls: int | None, stack: bool, timeout_s: float) -> Profiled:
    """Profile ``target`` in a fresh worker and write everything into ``out``."""
    prepare_out(out)
    settings = {"calls": calls, "stack": stack}
    args = (target.point, target.options, settings, str(out))
    res = run_child("attnbench.profile.worker:profile_main", args, timeout_s)
    data = _answer(res, target, "profile", timeout_s, out)
    rows = [top.TopRow(**r) for r in data["rows"]]
    point = target.point
    repro = out / names.REPRO_DIR / bundle.SCRIPT
    # the top kernels by device time (copies and memsets are not what ncu is for)
    kernels = [r for r in rows if r.kind == "kernel" and not r.name.startswith(("Memcpy", "Memset"))]
    kernels = kernels[: nsight.MAX_KERNELS]
    launches = round(sum(r.calls for r in kernels)) or None
    cmds = nsight.commands(repro, out / "nsight", point.device, _python(), [r.name for r in kernels], launches)
    result = Profiled(target, out, data, rows, cmds)
    header = {
        "point_id": point.point_id,
        "device": point.device,
        "calls": data["profiled"]["calls"],
        "point_ms": result.beside_ms,
        "measured_ms": result.measured_ms,
        "self_sum_ms": result.self_sum_ms,
        "busy_ms_median": result.busy_ms,
    }
    paths = top.write(rows, out, header, names.TOP_CSV, names.TOP_JSON, names.TOP_MD)
    result.files.update(dict(zip(("top.csv", "top.json", "top.md"), paths, strict=True)))
    result.files["trace"] = out / names.TRACE
    result.files["memory chart"] = out / names.MEMORY_PNG
    result.files["memory timeline"] = out / names.MEMORY_CSV
    if point.device == "cuda":
        result.files["memory snapshot"] = out / names.MEMORY_SNAPSHOT
    (out / names.NSIGHT).write_text(cmds.script(f"profile {point.point_id}"), encoding="utf-8")
    result.files["nsight"] = out / names.NSIGHT
    measured = data["measured"]
    stored = _run_numbers(target)
    run = (
        stored
        if stored.get("status") == Status.OK.value
        else {
            "source": "attnbench profile (no run)",
            "time_ms_median": measured["median_ms"],
            "time_ms_q1": measured["q1_ms"],
            "time_ms_q3": measured["q3_ms"],
            "n_samples": measured["samples"],
            "timer": measured["timer"],
        }
    )
    written = bundle.write(out / names.REPRO_DIR, bundle_config(target, data, run), _envs(target, data), cmds)
    result.files["repro"] = written["repro.py"]
    summary = {
        "point": point.as_mapping(),
        "source": target.source,
        "measured": measured,
        "run": target.row,
        "profiled": data["profiled"],
        "self_sum_ms": result.self_sum_ms,
        "memory": data["memory"],
        "nsys": cmds.nsys,
        "ncu": cmds.ncu,
        "files": {k: str(v) for k, v in result.files.items()},
    }
    (out / names.SUMMARY).write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    result.files["summary"] = out / names.SUMMARY
    return result


def repro(target: Target, out: Path, timeout_s: float) -> tuple[dict[str, Path], str | None]:
    """Write the repro bundle of ``target`` into ``out`` (checksums made in a fresh worker);
    returns the files and, when the point fails here, why (the bundle then reproduces that)."""
    prepare_out(out)
    res = run_child("attnbench.profile.worker:checksum_main", (target.point, target.options), timeout_s)
    failure = None
    try:
        data = _answer(res, target, "checksum", timeout_s, out)
    except PointFailed as exc:
        failure = str(exc)
        data = facts_here(target)
    config = bundle_config(target, data, _run_numbers(target))
    if failure:
        config["failure"] = failure
    cmds = nsight.commands(out / bundle.SCRIPT, out / "nsight", target.point.device, "python")
    return bundle.write(out, config, _envs(target, data), cmds), failure


def facts_here(target: Target) -> dict[str, Any]:
    """What a bundle needs when the point cannot make outputs (it fails): made in this process,
    without running the impl; no output checksums."""
    point = target.point
    spec = registry.get(point.impl)
    inp = make_inputs(point, device="cpu")
    return {
        "impl": impl_import(spec),
        "params": {**spec.params, **point.params},
        "reference": spec.reference_name,
        "inputs_sha256": inputs_sha256((inp.q, inp.k, inp.v, inp.g)),
        "outputs": {},
        "threads": target.options.threads,
        "torch": torch.__version__,
        "env": fingerprint("cpu", target.options.threads),
    }


def _run_numbers(target: Target) -> dict[str, Any]:
    """The run's stored row of the point, labelled (empty without a run or a row)."""
    if target.run_dir is None:
        return {}
    if not target.row:
        return {"source": f"the run ({target.run_dir}), which has not measured it", "dir": str(target.run_dir)}
    return {"source": f"the run ({target.run_dir})", "dir": str(target.run_dir), **target.row}


def bundle_config(target: Target, data: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The ``CONFIG`` of repro.py (also point.json)."""
    point = target.point
    return {
        "format": 1,
        "point": point.as_mapping(),
        "params": data["params"],
        "impl": data["impl"],
        "reference": data["reference"],
        "tolerance": target.options.tolerance.get(point.dtype.value),
        "threads": data["threads"],
        "inputs_sha256": data["inputs_sha256"],
        "outputs": data["outputs"],
        "run": run,
        "made_by": {
            "attnbench": __version__,
            "torch": data["torch"],
            "machine": data["env"].get("gpu") or data["env"].get("cpu_model"),
            "made": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(shlex.quote(a) for a in sys.argv),
        },
    }


def _envs(target: Target, data: dict[str, Any]) -> dict[str, Any]:
    """The run's environment fingerprint and the one of the worker that made the checksums."""
    return {"run": target.env or None, "bundled_on": data["env"]}


def _python() -> str:
    return sys.executable or "python"
