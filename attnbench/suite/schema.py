"""The suite file's schema (pydantic), and its errors as one line each.

A suite file::

    name = "seqlen"
    description = "..."
    [params]                      # a scalar is fixed, a list is an axis
    impl = ["softmax", "linear-chunked"]
    N = [256, 1024]
    [device.cpu.params]           # per-device values replace [params] on that device
    N = [256, 512]
    [device.cpu.limits]           # per-impl limits on that device ("*" = every impl)
    softmax = { max_N = 8192 }
    [impl_params]                 # keyword parameters passed to one impl
    linear-chunked = { chunk_size = 64 }
    [timing]                      # attnbench.point.TimingConfig fields
    max_time_s = 1.0
    [tolerance]                   # per-dtype relative-error tolerance overrides
    float32 = 1e-3
    [gate]                        # defaults for `attnbench compare` (attnbench.gate)
    [slurm]                       # `--executor slurm` settings (attnbench.slurm_config)

``attnbench suite schema`` prints :func:`json_schema` for editor completion.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from attnbench.errors import UserError
from attnbench.gate import GateTable, validate_gate_table
from attnbench.point import CLOCKS, DEVICES, DTYPE_NAMES, MEMORY_METHODS, PASS_NAMES, TIMING_KEYS
from attnbench.slurm_config import SlurmTable, validate_slurm_table

INT_KEYS = ("B", "H", "N", "D", "M", "seed", "P", "T")
PARAM_KEYS = ("impl", "pass", "causal", "dtype", *INT_KEYS)
LIMIT_KEYS = ("max_N", "max_tokens")


def _as_list(v: Any) -> Any:
    return v if isinstance(v, list) else [v]


def _listed(item: Any) -> BeforeValidator:
    """A scalar becomes a one-element list; the JSON Schema accepts either."""
    return BeforeValidator(_as_list, json_schema_input_type=item | list[item])


PosInt = Annotated[int, Field(ge=1)]
NonNegInt = Annotated[int, Field(ge=0)]
ImplName = Annotated[str, Field(min_length=1)]
DTypeName = Literal["float64", "float32", "float16", "bfloat16"]
PassName = Literal["fwd", "bwd", "fwdbwd", "decode"]
PosFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
_NONEMPTY = Field(min_length=1)
ImplAxis = Annotated[list[ImplName], _listed(str), _NONEMPTY]
PassAxis = Annotated[list[PassName], _listed(PassName), _NONEMPTY]
BoolAxis = Annotated[list[bool], _listed(bool), _NONEMPTY]
DTypeAxis = Annotated[list[DTypeName], _listed(DTypeName), _NONEMPTY]
PosIntAxis = Annotated[list[PosInt], _listed(int), _NONEMPTY]
NonNegIntAxis = Annotated[list[NonNegInt], _listed(int), _NONEMPTY]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Params(_Strict):
    """Parameter axes. P and T are for pass decode only (a prompt of P tokens, then T generated)."""

    impl: ImplAxis | None = None
    pass_: PassAxis | None = Field(default=None, alias="pass")
    causal: BoolAxis | None = None
    dtype: DTypeAxis | None = None
    B: PosIntAxis | None = None
    H: PosIntAxis | None = None
    N: PosIntAxis | None = None
    D: PosIntAxis | None = None
    M: PosIntAxis | None = None
    seed: NonNegIntAxis | None = None
    P: NonNegIntAxis | None = None
    T: PosIntAxis | None = None


class Limits(_Strict):
    max_N: PosInt | None = Field(default=None, description="points with a longer N are skipped")
    max_tokens: PosInt | None = Field(default=None, description="points with B*N above this are skipped")


class DeviceTable(_Strict):
    params: Params = Field(default_factory=Params)
    limits: dict[str, Limits] = Field(default_factory=dict, description='per impl, or "*" for every impl')


class Timing(_Strict):
    """attnbench.point.TimingConfig: the adaptive timer's knobs and the runner's."""

    warmup_s: PosFloat | None = None
    min_samples: PosInt | None = None
    min_time_s: PosFloat | None = None
    max_time_s: PosFloat | None = None
    target_rel_noise: PosFloat | None = None
    block_min_s: PosFloat | None = None
    single_call_s: PosFloat | None = Field(
        default=None, description="a point whose first call takes this long is measured by that one call"
    )
    clock: Literal["wall", "process"] | None = Field(default=None, description="process needs threads = 1")
    memory: Literal["rss", "allocator"] | None = None
    rounds: PosInt | None = Field(default=None, description="worker processes per point")
    timeout_s: PosFloat | None = None
    check_timeout_s: PosFloat | None = None
    threads: PosInt | None = Field(default=None, description="torch threads per worker this suite requires")
    extra_rounds_max_s: PosFloat | None = Field(
        default=None, description="rounds after the first only for points whose first round took less (seconds)"
    )


class SuiteFile(_Strict):
    name: str | None = None
    description: str = ""
    params: Params = Field(default_factory=Params)
    device: dict[Literal["cpu", "cuda"], DeviceTable] = Field(default_factory=dict)
    impl_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    timing: Timing = Field(default_factory=Timing)
    tolerance: dict[DTypeName, PosFloat] = Field(default_factory=dict)
    gate: GateTable = Field(default_factory=GateTable)
    slurm: SlurmTable = Field(default_factory=SlurmTable)


assert set(Timing.model_fields) == set(TIMING_KEYS), "the suite schema and TimingConfig disagree"

_EXPECTED: dict[str, str] = {
    **{k: "an integer >= 1" for k in ("B", "H", "N", "D", "M", "T", "min_samples", "rounds", "threads")},
    "seed": "an integer >= 0",
    "P": "an integer >= 0",
    "impl": "an implementation name (string)",
    "dtype": f"one of {', '.join(DTYPE_NAMES)}",
    "pass": f"one of {', '.join(PASS_NAMES)}",
    "causal": "true or false",
    "clock": f"one of {', '.join(CLOCKS)}",
    "memory": f"one of {', '.join(MEMORY_METHODS)}",
    "max_N": "a positive integer",
    "max_tokens": "a positive integer",
    "name": "a string",
    "description": "a string",
}


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a suite file (for editors: taplo, VS Code Even Better TOML)."""
    schema = SuiteFile.model_json_schema(by_alias=True)
    schema["title"] = "attnbench suite"
    return schema


def _get(doc: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


def _section(loc: tuple[Any, ...]) -> tuple[str, tuple[Any, ...]]:
    """('params', 'N', 0) -> ('[params]', ('N', 0)); ('device', 'cpu', 'limits', ...) ->
    ('[device.cpu.limits]', ...)."""
    if not loc:
        return "", ()
    if loc[0] == "device" and len(loc) >= 3:
        return f"[device.{loc[1]}.{loc[2]}]", loc[3:]
    if loc[0] in ("params", "timing", "tolerance", "impl_params", "gate", "device"):
        return f"[{loc[0]}]", loc[1:]
    return "", loc


def validate(doc: dict[str, Any], where: str) -> SuiteFile:
    """A parsed TOML document as a SuiteFile; the first problem as a one-line UserError."""
    if isinstance(doc.get("gate"), dict) or "gate" in doc:
        validate_gate_table(where, doc.get("gate"))  # the gate's own messages
    if "slurm" in doc:
        validate_slurm_table(where, doc.get("slurm"))  # the executor's own messages
    try:
        return SuiteFile.model_validate(doc)
    except ValidationError as exc:
        raise UserError(error_message(exc.errors()[0], doc, where)) from None


def error_message(err: Any, doc: dict[str, Any], where: str) -> str:
    loc = tuple(err["loc"])
    section, rest = _section(loc)
    here = f"{where} {section}".rstrip()
    names = [p for p in rest if isinstance(p, str) and p != "[key]"]
    key = names[-1] if names else (loc[0] if loc else "?")
    if err["type"] == "extra_forbidden":
        if section == "[params]" or section.endswith(".params]"):
            return f"{here}: unknown parameter {key!r}; expected one of {', '.join(PARAM_KEYS)}"
        if section.endswith(".limits]"):
            return f"{here}: {rest[0]}: unknown limit {key!r}; expected one of {', '.join(LIMIT_KEYS)}"
        if section == "[timing]":
            return f"{here}: unknown key {key!r}; expected one of {', '.join(TIMING_KEYS)}"
        if section.startswith("[device."):
            return f"{here}: unknown key {key!r}; expected params or limits"
        return f"{here}: unknown key {key!r}; expected one of {', '.join(SuiteFile.model_fields)}"
    if "[key]" in loc:  # a table key outside its Literal: a device or a dtype name
        bad = loc[loc.index("[key]") - 1]
        if loc[0] == "device":
            return f"{where}: unknown device {bad!r} under [device]; expected one of {', '.join(DEVICES)}"
        return f"{here}: unknown dtype {bad!r}; expected one of {', '.join(DTYPE_NAMES)}"
    value = err.get("input")
    if err["type"] in ("model_type", "dict_type"):
        return f"{where}: {'.'.join(str(p) for p in loc)} = {_get(doc, loc)!r}: expected a table"
    if section == "[tolerance]":
        return f"{here}: {key} = {value!r}: expected a positive number"
    if section == "[impl_params]":
        return f"{where}: impl_params = {doc.get('impl_params')!r}: expected tables of keyword parameters per impl"
    if section == "[timing]" and key not in _EXPECTED:
        return f"{here}: {key} = {value!r}: expected a positive number"
    if err["type"] == "too_short":
        return f"{here}: {key} = {value!r}: expected a value or a non-empty list"
    return f"{here}: {key} = {value!r}: expected {_EXPECTED.get(key, 'a valid value')}"
