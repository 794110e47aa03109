"""Suites: TOML files describing a sweep, validated and expanded into points.

A suite file::

    name = "seqlen"
    description = "..."
    [params]                      # a scalar is fixed, a list is an axis
    impl = ["softmax", "linear-chunked"]
    N = [256, 1024]
    B = 1
    ...
    [device.cpu.params]           # per-device values replace [params] on that device
    N = [256, 512]
    [device.cpu.limits]           # per-impl limits on that device ("*" = every impl)
    softmax = { max_N = 8192 }
    [impl_params]                 # keyword parameters passed to one impl
    linear-chunked = { chunk_size = 64 }
    [timing]                      # TimerConfig fields, plus timeout_s per point
    max_time_s = 1.0
    [tolerance]                   # per-dtype relative-error tolerance overrides
    float32 = 1e-3
    [gate]                        # defaults for `attnbench compare` (docs/ci.md)
    thresholds = ["latency:10%", "memory:5%"]

Every mistake is a UserError naming the file, the key, the value and what was expected.
No torch here: expansion is cheap and runs in the CLI process.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DTYPE_NAMES = ("float64", "float32", "float16", "bfloat16")
PASS_NAMES = ["fwd", "bwd", "fwdbwd", "decode"]
DEVICES = ("cpu", "cuda")
INT_KEYS = ("B", "H", "N", "D", "M", "seed", "P", "T")
# Used by pass decode only: a prompt of P tokens, then T generated one at a time (N = P + T).
DECODE_KEYS = ("P", "T")
PARAM_KEYS = ("impl", "pass", "causal", "dtype", *INT_KEYS)
TOP_KEYS = ("name", "description", "params", "device", "impl_params", "timing", "tolerance", "gate")
TIMING_KEYS = {
    "warmup_s": float,
    "min_samples": int,
    "min_time_s": float,
    "max_time_s": float,
    "target_rel_noise": float,
    "block_min_s": float,
    "timeout_s": float,
    "rounds": int,
    "memory": str,  # CPU peak memory: "rss" (resident high-water mark, default) or "allocator" (torch's)  # worker processes per point, interleaved across the sweep (samples pooled)
    "clock": str,  # CPU timer: "wall" (perf_counter, default) or "process" (CPU time of the worker)
}
CLOCKS = ("wall", "process")
MEMORY_METHODS = ("rss", "allocator")
LIMIT_KEYS = ("max_N", "max_tokens")
DEFAULT_TIMEOUT_S = 300.0


def suites_dir() -> Path:
    """Where the shipped suites live: inside the installed package, else the source tree."""
    here = Path(__file__).resolve().parent
    for cand in (here / "suites", here.parent / "suites"):
        if cand.is_dir():
            return cand
    return here / "suites"


def available_suites() -> dict[str, Path]:
    d = suites_dir()
    return {p.stem: p for p in sorted(d.glob("*.toml"))} if d.is_dir() else {}


@dataclass
class Suite:
    """A validated suite. ``params`` values are lists (axes); scalars were wrapped."""

    name: str
    path: str
    description: str
    params: dict[str, list[Any]]
    device_params: dict[str, dict[str, list[Any]]]
    limits: dict[str, dict[str, dict[str, int]]]
    impl_params: dict[str, dict[str, Any]]
    timing: dict[str, Any]
    tolerance: dict[str, float]
    source: str = field(repr=False, default="")
    gate: dict[str, Any] = field(default_factory=dict)


def _fail(where: str, key: str, value: Any, expected: str) -> UserError:
    return UserError(f"{where}: {key} = {value!r}: expected {expected}")


def _check_value(where: str, key: str, value: Any) -> Any:
    if key in INT_KEYS:
        lo = 0 if key in ("seed", "P") else 1
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise _fail(where, key, value, f"an integer >= {lo}")
    elif key == "impl":
        if not isinstance(value, str) or not value:
            raise _fail(where, key, value, "an implementation name (string)")
    elif key == "dtype":
        if value not in DTYPE_NAMES:
            raise _fail(where, key, value, f"one of {', '.join(DTYPE_NAMES)}")
    elif key == "pass":
        if value not in PASS_NAMES:
            raise _fail(where, key, value, f"one of {', '.join(PASS_NAMES)}")
    elif key == "causal" and not isinstance(value, bool):
        raise _fail(where, key, value, "true or false")
    return value


def _params_table(where: str, table: Any) -> dict[str, list[Any]]:
    if not isinstance(table, dict):
        raise _fail(where, "params", table, "a table")
    out: dict[str, list[Any]] = {}
    for key, raw in table.items():
        if key not in PARAM_KEYS:
            raise UserError(f"{where}: unknown parameter {key!r}; expected one of {', '.join(PARAM_KEYS)}")
        values = raw if isinstance(raw, list) else [raw]
        if not values:
            raise _fail(where, key, raw, "a value or a non-empty list")
        out[key] = [_check_value(where, key, v) for v in values]
    return out


def parse_suite(text: str, path: str) -> Suite:
    """Validate a suite's TOML text. ``path`` names it in error messages."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"suite {path}: not valid TOML: {exc}") from None
    where = f"suite {path}"
    for key in doc:
        if key not in TOP_KEYS:
            raise UserError(f"{where}: unknown key {key!r}; expected one of {', '.join(TOP_KEYS)}")
    params = _params_table(f"{where} [params]", doc.get("params", {}))
    passes = params.get("pass", DEFAULTS["pass"])
    required = ["impl"] + (["N"] if any(p != "decode" for p in passes) else []) + (["T"] if "decode" in passes else [])
    for key in required:
        if key not in params:
            raise UserError(f"{where} [params]: {key} is missing; expected a value or a list")
    device_params: dict[str, dict[str, list[Any]]] = {}
    limits: dict[str, dict[str, dict[str, int]]] = {}
    devices = doc.get("device", {})
    if not isinstance(devices, dict):
        raise _fail(where, "device", devices, "a table of [device.cpu] / [device.cuda]")
    for dev, table in devices.items():
        dwhere = f"{where} [device.{dev}]"
        if dev not in DEVICES:
            raise UserError(f"{where}: unknown device {dev!r} under [device]; expected one of {', '.join(DEVICES)}")
        if not isinstance(table, dict):
            raise _fail(where, f"device.{dev}", table, "a table")
        for key in table:
            if key not in ("params", "limits"):
                raise UserError(f"{dwhere}: unknown key {key!r}; expected params or limits")
        device_params[dev] = _params_table(f"{dwhere}.params", table.get("params", {}))
        limits[dev] = {}
        for impl, lim in table.get("limits", {}).items():
            if not isinstance(lim, dict):
                raise _fail(f"{dwhere}.limits", impl, lim, "a table like { max_N = 8192 }")
            for lk, lv in lim.items():
                if lk not in LIMIT_KEYS:
                    raise UserError(
                        f"{dwhere}.limits: {impl}: unknown limit {lk!r}; expected one of {', '.join(LIMIT_KEYS)}"
                    )
                if isinstance(lv, bool) or not isinstance(lv, int) or lv < 1:
                    raise _fail(f"{dwhere}.limits", f"{impl}.{lk}", lv, "a positive integer")
            limits[dev][impl] = dict(lim)
    impl_params = doc.get("impl_params", {})
    if not isinstance(impl_params, dict) or not all(isinstance(v, dict) for v in impl_params.values()):
        raise _fail(where, "impl_params", impl_params, "tables of keyword parameters per impl")
    timing = doc.get("timing", {})
    if not isinstance(timing, dict):
        raise _fail(where, "timing", timing, "a table")
    for key, val in timing.items():
        if key not in TIMING_KEYS:
            raise UserError(f"{where} [timing]: unknown key {key!r}; expected one of {', '.join(TIMING_KEYS)}")
        if key == "clock":
            if val not in CLOCKS:
                raise _fail(f"{where} [timing]", key, val, f"one of {', '.join(CLOCKS)}")
            continue
        if key == "memory":
            if val not in MEMORY_METHODS:
                raise _fail(f"{where} [timing]", key, val, f"one of {', '.join(MEMORY_METHODS)}")
            continue
        if key in ("rounds", "min_samples") and (isinstance(val, bool) or not isinstance(val, int) or val < 1):
            raise _fail(f"{where} [timing]", key, val, "a positive integer")
        if isinstance(val, bool) or not isinstance(val, (int, float)) or val <= 0:
            raise _fail(f"{where} [timing]", key, val, "a positive number")
    tolerance = doc.get("tolerance", {})
    for key, val in tolerance.items():
        if key not in DTYPE_NAMES:
            raise UserError(f"{where} [tolerance]: unknown dtype {key!r}; expected one of {', '.join(DTYPE_NAMES)}")
        if isinstance(val, bool) or not isinstance(val, (int, float)) or val <= 0:
            raise _fail(f"{where} [tolerance]", key, val, "a positive number")
    from attnbench.compare.checks import validate_gate_table  # no torch, no pandas

    gate = validate_gate_table(where, doc.get("gate", {}))
    name = doc.get("name", Path(path).stem)
    if not isinstance(name, str):
        raise _fail(where, "name", name, "a string")
    return Suite(
        name=name,
        path=path,
        description=str(doc.get("description", "")),
        params=params,
        device_params=device_params,
        limits=limits,
        impl_params={k: dict(v) for k, v in impl_params.items()},
        timing=dict(timing),
        tolerance={k: float(v) for k, v in tolerance.items()},
        source=text,
        gate=gate,
    )


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name (``seqlen``) or a TOML file by path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise UserError(f"suite: no such file {name_or_path!r}")
        return parse_suite(p.read_text(), str(p))
    known = available_suites()
    if name_or_path not in known:
        raise UserError(f"suite: unknown suite {name_or_path!r}; available: {', '.join(known) or 'none'}")
    return parse_suite(known[name_or_path].read_text(), f"{name_or_path}.toml")


def parse_set(option: str) -> tuple[str, list[Any]]:
    """``--set N=1024,2048`` -> ("N", [1024, 2048]), typed and validated."""
    if "=" not in option:
        raise UserError(f"--set {option!r}: expected KEY=VALUE[,VALUE...], e.g. N=1024,2048")
    key, _, raw = option.partition("=")
    key = key.strip()
    if key not in PARAM_KEYS:
        raise UserError(f"--set {option!r}: unknown parameter {key!r}; expected one of {', '.join(PARAM_KEYS)}")
    values: list[Any] = []
    for item in (s.strip() for s in raw.split(",")):
        if key in INT_KEYS:
            try:
                val: Any = int(item)
            except ValueError:
                raise UserError(f"--set {option!r}: {key} expects integers, got {item!r}") from None
        elif key == "causal":
            if item.lower() not in ("true", "false", "1", "0"):
                raise UserError(f"--set {option!r}: causal expects true or false, got {item!r}")
            val = item.lower() in ("true", "1")
        else:
            val = item
        values.append(_check_value(f"--set {option!r}", key, val))
    return key, values


def point_id(p: dict[str, Any]) -> str:
    """Stable, readable identity of a point within a run (the device is the run's)."""
    mode = "causal" if p["causal"] else "full"
    shape = f"B{p['B']}-H{p['H']}-N{p['N']}-D{p['D']}-M{p['M']}"
    extra = "".join(f"-{k}{v}" for k, v in sorted(p.get("params", {}).items()))
    if p["pass"] == "decode":
        shape += f"-P{p['P']}-T{p['T']}"
    seed = f"-s{p['seed']}" if p.get("seed", 0) else ""
    return f"{p['impl']}/{p['pass']}/{mode}/{p['dtype']}/{shape}{extra}{seed}"


DEFAULTS: dict[str, list[Any]] = {
    "B": [1],
    "H": [4],
    "D": [64],
    "M": [64],
    "dtype": ["float32"],
    "causal": [True],
    "pass": ["fwdbwd", "fwd"],
    "seed": [0],
}


def expand(suite: Suite, device: str, overrides: dict[str, list[Any]] | None = None) -> list[dict[str, Any]]:
    """Points of ``suite`` on ``device`` with ``overrides`` (``--set``, ``--impl``, ``--dtype``) applied.

    Each point carries ``skip`` (None or the reason it cannot run, from the suite's limits);
    the impl's own availability is decided later, in the worker. Decode points carry P and T
    and have N = P + T (the N axis is ignored for them); other points have neither.
    """
    values: dict[str, list[Any]] = {**DEFAULTS, **suite.params, **suite.device_params.get(device, {})}
    values.update(overrides or {})
    limits = suite.limits.get(device, {})
    points: list[dict[str, Any]] = []
    keys = ("impl", "pass", "causal", "dtype", "B", "H", "D", "M", "seed", "N", "P", "T")
    for key, default in (("N", None), ("P", 0), ("T", None)):
        values.setdefault(key, [default])
    seen: set[str] = set()
    for combo in itertools.product(*(values[k] for k in keys)):
        p: dict[str, Any] = dict(zip(keys, combo, strict=False))
        if p["pass"] == "decode":
            if p["T"] is None:
                raise UserError(f"suite {suite.path}: pass decode needs T (tokens to generate), e.g. --set T=1024")
            p["N"] = p["P"] + p["T"]
        else:
            del p["P"], p["T"]
            if p["N"] is None:
                raise UserError(f"suite {suite.path}: pass {p['pass']} needs N, e.g. --set N=1024")
        p["device"] = device
        p["params"] = dict(suite.impl_params.get(p["impl"], {}))
        p["point_id"] = point_id(p)
        if p["point_id"] in seen:
            continue
        seen.add(p["point_id"])
        p["skip"] = _limit_reason(p, limits)
        points.append(p)
    return points


def _limit_reason(p: dict[str, Any], limits: dict[str, dict[str, int]]) -> str | None:
    for scope in (p["impl"], "*"):
        lim = limits.get(scope, {})
        if "max_N" in lim and p["N"] > lim["max_N"]:
            return f"N={p['N']} exceeds this suite's limit max_N={lim['max_N']} for {scope} on {p['device']}"
        if "max_tokens" in lim and p["B"] * p["N"] > lim["max_tokens"]:
            return f"B*N={p['B'] * p['N']} exceeds this suite's limit max_tokens={lim['max_tokens']} for {scope}"
    return None
