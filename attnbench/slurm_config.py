"""The Slurm executor's settings: the ``[slurm]`` table (in a suite or in a ``--slurm-config``
file), the ``--slurm-*`` options, and how they combine. Pure (pydantic only): the suite schema
imports it.

::

    [slurm]
    partition = "gpu"            # sbatch --partition
    gpus_per_node = 4            # GPUs per shard (one lane per GPU inside the shard)
    time = "02:00:00"            # per shard: minutes, or [D-]HH:MM[:SS]
    array_parallelism = 8        # shards running at once (the array's %N)
    shards = 16                  # how many shards the missing points are split into
    cpus_per_task = 16
    mem_gb = 64
    account = "..."
    qos = "..."
    constraint = "h100"          # pin one GPU model: a run does not pool models
    exclusive = true             # whole nodes: nothing else shares the CPUs or memory bandwidth
    setup = ["module load cuda", "source /shared/venv/bin/activate"]

Precedence, lowest first: defaults, the suite's table, what the run stored (on ``--resume``),
the ``--slurm-config`` file, the ``--slurm-*`` options.
"""

from __future__ import annotations

import re
import sys
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attnbench.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_TIME_MIN = 60
DEFAULT_MAX_SHARDS = 4

PosInt = Annotated[int, Field(ge=1)]


class SlurmTable(BaseModel):
    """A ``[slurm]`` table: how ``attnbench run --executor slurm`` submits its shards."""

    model_config = ConfigDict(extra="forbid", strict=True)

    partition: str | None = Field(default=None, description="sbatch --partition")
    gpus_per_node: int | None = Field(default=None, ge=0, description="GPUs per shard (0: CPU points)")
    time: str | int | None = Field(default=None, description="per shard: minutes, or [D-]HH:MM[:SS]")
    array_parallelism: PosInt | None = Field(default=None, description="shards running at once")
    shards: PosInt | None = Field(default=None, description="shards the missing points are split into")
    cpus_per_task: PosInt | None = None
    mem_gb: float | None = Field(default=None, gt=0)
    account: str | None = None
    qos: str | None = None
    constraint: str | None = Field(default=None, description="sbatch --constraint: pin one device model")
    exclusive: bool | None = Field(default=None, description="whole nodes for each shard")
    setup: list[str] | None = Field(default=None, description="shell lines run before the shard starts")


SLURM_KEYS: tuple[str, ...] = tuple(SlurmTable.model_fields)
_EXPECTED = {
    "partition": "a partition name (string)",
    "gpus_per_node": "an integer >= 0",
    "time": "minutes (an integer >= 1) or [D-]HH:MM[:SS]",
    "array_parallelism": "an integer >= 1",
    "shards": "an integer >= 1",
    "cpus_per_task": "an integer >= 1",
    "mem_gb": "a positive number",
    "account": "a string",
    "qos": "a string",
    "constraint": "a string",
    "exclusive": "true or false",
    "setup": "a list of shell lines (strings)",
}


def parse_time(value: str | int, where: str = "--slurm-time") -> int:
    """Minutes from ``90``, ``"90"``, ``"1:30:00"``, ``"01:30"`` (HH:MM) or ``"1-00:00:00"``."""
    text = str(value).strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text)
    if m is None or isinstance(value, bool):
        raise UserError(f"{where} {value!r}: expected {_EXPECTED['time']}")
    days, a, b, c = m.groups()
    if b is None and days is None:
        minutes = int(a)
    else:
        hours, mins, secs = int(a), int(b or 0), int(c or 0)
        minutes = int(days or 0) * 1440 + hours * 60 + mins + (1 if secs else 0)
    if minutes < 1:
        raise UserError(f"{where} {value!r}: expected {_EXPECTED['time']}")
    return minutes


def validate_slurm_table(where: str, table: Any) -> dict[str, Any]:
    """A ``[slurm]`` table checked (one-line errors naming the key); the keys it sets."""
    if not isinstance(table, dict):
        raise UserError(f"{where}: slurm = {table!r}: expected a table")
    try:
        SlurmTable.model_validate(table)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        if err["type"] == "extra_forbidden":
            raise UserError(f"{where} [slurm]: unknown key {key!r}; expected one of {', '.join(SLURM_KEYS)}") from None
        raise UserError(f"{where} [slurm]: {key} = {table.get(key)!r}: expected {_EXPECTED[key]}") from None
    if table.get("time") is not None:
        parse_time(table["time"], f"{where} [slurm]: time =")
    return dict(table)


@dataclass(frozen=True)
class SlurmConfig:
    """The combined settings (see the module doc for the keys)."""

    partition: str | None = None
    gpus_per_node: int = 0
    time_min: int = DEFAULT_TIME_MIN
    array_parallelism: int | None = None
    shards: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    exclusive: bool = False
    setup: tuple[str, ...] = ()

    def to_doc(self) -> dict[str, Any]:
        """What metadata stores (``--resume`` starts from it)."""
        d = asdict(self)
        d["setup"] = list(self.setup)
        return d

    def n_shards(self, n_points: int) -> int:
        """Shards for ``n_points`` points: ``shards``, else as many as may run at once (at most
        DEFAULT_MAX_SHARDS without array_parallelism), never more than points."""
        want = self.shards or self.array_parallelism or DEFAULT_MAX_SHARDS
        return max(1, min(want, n_points))


def _table_to_config_keys(table: dict[str, Any], where: str) -> dict[str, Any]:
    out = {k: v for k, v in table.items() if v is not None and k != "time"}
    if table.get("time") is not None:
        out["time_min"] = parse_time(table["time"], f"{where} [slurm]: time =")
    if "setup" in out:
        out["setup"] = tuple(out["setup"])
    return out


def read_config_file(path: Path) -> dict[str, Any]:
    """The ``[slurm]`` table of a TOML file (or its top level, when it has no such table)."""
    where = f"--slurm-config {path}"
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{where}: not valid TOML: {' '.join(str(exc).split())}") from None
    return validate_slurm_table(where, doc.get("slurm", doc))


class SlurmRequest(Protocol):
    """What :func:`resolve_config` reads of the command line's request
    (attnbench.runner.executors.ExecutorRequest)."""

    @property
    def stored(self) -> dict[str, Any]: ...

    @property
    def slurm_config(self) -> Path | None: ...

    @property
    def slurm(self) -> dict[str, Any]: ...


def resolve_config(request: SlurmRequest, suite_table: dict[str, Any]) -> SlurmConfig:
    """Defaults < suite [slurm] < the run's stored settings < --slurm-config < --slurm-* options."""
    merged: dict[str, Any] = {}
    merged.update(_table_to_config_keys(suite_table or {}, "suite"))
    stored = dict(request.stored.get("slurm") or {})
    known = {f.name for f in fields(SlurmConfig)}
    merged.update({k: (tuple(v) if k == "setup" else v) for k, v in stored.items() if k in known and v is not None})
    if request.slurm_config is not None:
        merged.update(_table_to_config_keys(read_config_file(request.slurm_config), "--slurm-config"))
    cli = {k: v for k, v in request.slurm.items() if v is not None}
    if "time" in cli:
        merged["time_min"] = parse_time(cli.pop("time"))
    for key, val in cli.items():
        if key in ("gpus_per_node",) and val < 0 or key != "gpus_per_node" and isinstance(val, int) and val < 1:
            raise UserError(f"--slurm-{key.replace('_', '-')} {val}: expected {_EXPECTED.get(key, 'a valid value')}")
        merged[key] = val
    return SlurmConfig(**merged)
