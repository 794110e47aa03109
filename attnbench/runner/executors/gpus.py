"""Which GPUs a run may use, and how a process is pinned to one.

The list comes from torch.cuda in a worker forked from the fork server (the main process never
initialises CUDA): device count, each device's name (its model) and UUID, as CUDA numbers them
under the ``CUDA_VISIBLE_DEVICES`` this process was given (by Slurm, say). A process is pinned to
one GPU by starting it with ``CUDA_VISIBLE_DEVICES=GPU-<uuid>`` (``MIG-<uuid>`` for a MIG
instance): by UUID, so a renumbering can never put two lanes on one device.

Tests fake the boundary: :func:`gpus_from_torch` reads ``torch.cuda.device_count`` and
``torch.cuda.get_device_properties``, which a test monkeypatches in its own process.
"""

from __future__ import annotations

import socket
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from attnbench.errors import UserError
from attnbench.measure import nvml
from attnbench.runner import procs


@dataclass(frozen=True)
class Gpu:
    """One CUDA device as the parent sees it: its CUDA ``index``, ``uuid`` (as torch gives it,
    without a prefix), ``name`` (the model, e.g. "NVIDIA H100 80GB HBM3") and ``visible_id`` (what
    ``CUDA_VISIBLE_DEVICES`` takes to show this device alone)."""

    index: int
    uuid: str
    name: str
    visible_id: str


def _prefixed(uuid: str, mig: bool) -> str:
    if uuid.startswith(("GPU-", "MIG-")):
        return uuid
    return ("MIG-" if mig else "GPU-") + uuid


def gpus_from_torch() -> list[Gpu]:
    """The visible CUDA devices, read in this process (initialises CUDA: call it in a worker).
    NVML, when present, tells a MIG instance from a whole GPU (their UUID prefixes differ)."""
    import torch  # deferred: torch, kept out of lane processes and `attnbench status`

    n = torch.cuda.device_count()
    nv, _why = nvml.open_nvml() if n else (None, None)
    out = []
    try:
        for i in range(n):
            props = torch.cuda.get_device_properties(i)
            uuid = str(getattr(props, "uuid", "") or "")
            if not uuid:
                raise UserError(f"CUDA device {i} ({props.name}) reports no UUID; it cannot be pinned by UUID")
            mig = False
            if nv is not None:
                try:
                    _handle, how = nv.handle_for_cuda(i, uuid)
                    mig = "MIG-" in how
                except Exception:  # NVML cannot place it: a plain GPU UUID is the safe guess
                    mig = False
            out.append(Gpu(i, uuid, str(props.name), _prefixed(uuid, mig)))
    finally:
        if nv is not None:
            nv.close()
    return out


def probe_main(conn: Any) -> None:
    """Child entry (through :func:`attnbench.runner.procs.run_child`): send the device list."""
    try:
        conn.send([asdict(g) for g in gpus_from_torch()])
    except BaseException as exc:
        conn.send({"error": f"{type(exc).__name__}: {exc}"})
    conn.close()


def visible_gpus(timeout_s: float = 120.0) -> list[Gpu]:
    """The CUDA devices this process may use, probed in a fresh worker."""
    res = procs.run_child("attnbench.runner.executors.gpus:probe_main", (), timeout_s)
    msg = res.messages[-1] if res.messages else {"error": f"the GPU probe worker died (exit code {res.exitcode})"}
    if isinstance(msg, dict):
        raise UserError(f"cannot list the CUDA devices: {msg['error']}")
    return [Gpu(**d) for d in msg]


def parse_gpus(text: str) -> int | None:
    """``--gpus`` as a count: a positive integer, or None for ``all``."""
    if text.strip().lower() == "all":
        return None
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"--gpus {text!r}: expected a positive number of GPUs or 'all'")
    return n


def select(gpus: list[Gpu], text: str) -> list[Gpu]:
    """The first N visible GPUs (``--gpus N``) or all of them, all of one model: a run does not
    pool points across device models, so a node with mixed GPUs is refused (pick one model's
    devices with CUDA_VISIBLE_DEVICES)."""
    want = parse_gpus(text)
    if not gpus:
        raise UserError(f"--gpus {text}: no CUDA device is visible")
    if want is not None and want > len(gpus):
        raise UserError(f"--gpus {text}: only {len(gpus)} CUDA device(s) are visible")
    chosen = gpus if want is None else gpus[:want]
    models = Counter(g.name for g in chosen)
    if len(models) > 1:
        listed = ", ".join(f"{m} x{c}" for m, c in models.items())
        raise UserError(
            f"--gpus {text}: the devices are of different models ({listed}); a run measures one model: "
            "choose one model's devices with CUDA_VISIBLE_DEVICES"
        )
    uuids = [g.uuid for g in chosen]
    if len(set(uuids)) != len(uuids):
        raise UserError(f"--gpus {text}: two visible devices report the same UUID; cannot pin them apart")
    return list(chosen)


def pin_env(gpu: Gpu) -> dict[str, str]:
    """The environment that shows a process ``gpu`` alone (set before CUDA initialises there)."""
    return {"CUDA_VISIBLE_DEVICES": gpu.visible_id}


def placement(device_model: str | None, device_uuid: str | None = None, **extra: Any) -> dict[str, Any]:
    """The where-it-ran columns of a record (attnbench.results.schema: host, device_model, ...)."""
    return {
        "host": socket.gethostname(),
        "device_model": device_model,
        "device_uuid": device_uuid,
        "shard": None,
        "slurm_job_id": None,
        **extra,
    }


def cpu_placement(**extra: Any) -> dict[str, Any]:
    from attnbench.env import cpu_model  # deferred: torch

    return placement(cpu_model(), None, **extra)


def gpu_placement(gpu: Gpu, **extra: Any) -> dict[str, Any]:
    return placement(gpu.name, gpu.visible_id, **extra)
