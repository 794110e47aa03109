"""A suite and the command line's overrides -> the points of a run."""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import ValidationError

from attnbench.errors import UserError
from attnbench.point import Pass, Point
from attnbench.suite.load import Suite
from attnbench.suite.schema import PARAM_KEYS, Params, error_message

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
_INT_KEYS = ("B", "H", "N", "D", "M", "seed", "P", "T")


def parse_set(option: str) -> tuple[str, list[Any]]:
    """``--set N=1024,2048`` -> ("N", [1024, 2048]), typed and validated like the suite's [params]."""
    if "=" not in option:
        raise UserError(f"--set {option!r}: expected KEY=VALUE[,VALUE...], e.g. N=1024,2048")
    key, _, raw = option.partition("=")
    key = key.strip()
    if key not in PARAM_KEYS:
        raise UserError(f"--set {option!r}: unknown parameter {key!r}; expected one of {', '.join(PARAM_KEYS)}")
    values: list[Any] = []
    for item in (s.strip() for s in raw.split(",")):
        if key in _INT_KEYS:
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
        values.append(val)
    try:
        Params.model_validate({key: values})
    except ValidationError as exc:
        raise UserError(error_message(exc.errors()[0], {"params": {key: values}}, f"--set {option!r}")) from None
    return key, values


def expand(suite: Suite, device: str, overrides: dict[str, list[Any]] | None = None) -> list[Point]:
    """Points of ``suite`` on ``device`` with ``overrides`` (``--set``, ``--impl``, ``--dtype``) applied.

    Each point carries ``skip`` (None or the reason it cannot run, from the suite's limits);
    the impl's own availability is decided later, in the worker. Decode points carry P and T
    and have N = P + T (the N axis is ignored for them); other points have neither.
    """
    values: dict[str, list[Any]] = {**DEFAULTS, **suite.params, **suite.device_params.get(device, {})}
    values.update(overrides or {})
    limits = suite.limits.get(device, {})
    keys = ("impl", "pass", "causal", "dtype", "B", "H", "D", "M", "seed", "N", "P", "T")
    for key, default in (("N", None), ("P", 0), ("T", None)):
        values.setdefault(key, [default])
    points: list[Point] = []
    seen: set[str] = set()
    for combo in itertools.product(*(values[k] for k in keys)):
        c: dict[str, Any] = dict(zip(keys, combo, strict=True))
        pass_ = Pass(c["pass"])
        if pass_ is Pass.DECODE:
            if c["T"] is None:
                raise UserError(f"suite {suite.path}: pass decode needs T (tokens to generate), e.g. --set T=1024")
            n, p, t = c["P"] + c["T"], c["P"], c["T"]
        else:
            if c["N"] is None:
                raise UserError(f"suite {suite.path}: pass {pass_} needs N, e.g. --set N=1024")
            n, p, t = c["N"], None, None
        point = Point(
            impl=c["impl"],
            pass_=pass_,
            causal=c["causal"],
            dtype=c["dtype"],
            B=c["B"],
            H=c["H"],
            N=n,
            D=c["D"],
            M=c["M"],
            seed=c["seed"],
            device=device,
            params=dict(suite.impl_params.get(c["impl"], {})),
            P=p,
            T=t,
        )
        if point.point_id in seen:
            continue
        seen.add(point.point_id)
        points.append(point.with_skip(_limit_reason(point, limits)))
    return points


def _limit_reason(p: Point, limits: dict[str, dict[str, int]]) -> str | None:
    for scope in (p.impl, "*"):
        lim = limits.get(scope, {})
        if "max_N" in lim and lim["max_N"] < p.N:
            return f"N={p.N} exceeds this suite's limit max_N={lim['max_N']} for {scope} on {p.device}"
        tokens = p.B * p.N
        if "max_tokens" in lim and tokens > lim["max_tokens"]:
            return f"B*N={tokens} exceeds this suite's limit max_tokens={lim['max_tokens']} for {scope}"
    return None
