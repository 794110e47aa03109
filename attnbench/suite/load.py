"""Reading a suite: a shipped one by name or a TOML file by path, validated into a :class:`Suite`."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnbench.errors import UserError
from attnbench.point import Pass, TimingConfig
from attnbench.suite import schema

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def suites_dir() -> Path:
    """Where the shipped suites live: inside the installed package, else the source tree."""
    here = Path(__file__).resolve().parent.parent  # attnbench/
    for cand in (here / "suites", here.parent / "suites"):
        if cand.is_dir():
            return cand
    return here / "suites"


def available_suites() -> dict[str, Path]:
    d = suites_dir()
    return {p.stem: p for p in sorted(d.glob("*.toml"))} if d.is_dir() else {}


@dataclass
class Suite:
    """A validated suite. ``params`` values are lists (axes); scalars were wrapped.

    ``timing`` is the suite's ``[timing]`` table as written (the keys it sets);
    :attr:`timing_config` is the typed whole, defaults filled in.
    """

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
    slurm: dict[str, Any] = field(default_factory=dict)  # the [slurm] table as written

    @property
    def timing_config(self) -> TimingConfig:
        return TimingConfig.from_table(self.timing)


def _axes(params: schema.Params) -> dict[str, list[Any]]:
    return {k: list(v) for k, v in params.model_dump(by_alias=True, exclude_none=True).items()}


def parse_suite(text: str, path: str) -> Suite:
    """Validate a suite's TOML text. ``path`` names it in error messages."""
    where = f"suite {path}"
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{where}: not valid TOML: {' '.join(str(exc).split())}") from None
    sf = schema.validate(doc, where)
    params = _axes(sf.params)
    passes = params.get("pass", [p.value for p in (Pass.FWDBWD, Pass.FWD)])
    required = ["impl"] + (["N"] if any(p != "decode" for p in passes) else []) + (["T"] if "decode" in passes else [])
    for key in required:
        if key not in params:
            raise UserError(f"{where} [params]: {key} is missing; expected a value or a list")
    timing = sf.timing.model_dump(exclude_none=True)
    if timing.get("clock") == "process" and timing.get("threads", 1) != 1:
        raise UserError(f"{where} [timing]: threads = {timing['threads']!r}: clock = 'process' needs threads = 1")
    return Suite(
        name=sf.name if sf.name is not None else Path(path).stem,
        path=path,
        description=sf.description,
        params=params,
        device_params={dev: _axes(t.params) for dev, t in sf.device.items()},
        limits={
            dev: {impl: lim.model_dump(exclude_none=True) for impl, lim in t.limits.items()}
            for dev, t in sf.device.items()
        },
        impl_params={k: dict(v) for k, v in sf.impl_params.items()},
        timing=timing,
        tolerance={k: float(v) for k, v in sf.tolerance.items()},
        source=text,
        gate=sf.gate.model_dump(exclude_none=True),
        slurm=sf.slurm.model_dump(exclude_none=True),
    )


def load_suite(name_or_path: str) -> Suite:
    """A shipped suite by name (``seqlen``) or a TOML file by path."""
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.is_file():
            raise UserError(f"suite: no such file {name_or_path!r}")
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"suite {name_or_path}: cannot be read ({type(exc).__name__}: {exc})") from None
        return parse_suite(text, str(p))
    known = available_suites()
    if name_or_path not in known:
        raise UserError(f"suite: unknown suite {name_or_path!r}; available: {', '.join(known) or 'none'}")
    return parse_suite(known[name_or_path].read_text(encoding="utf-8"), f"{name_or_path}.toml")
