"""The vocabulary every module shares: what a point is, what a run was asked to do, and what a
worker sends back.

- Enums: :class:`DType`, :class:`Pass`, :class:`Status`, :class:`Family`. Their values are the
  strings stored in results, journals and suites; every module compares against these.
- :class:`Point`: one measurement (impl, pass, shape, dtype, causal, seed, params), frozen,
  with its stable ``point_id``.
- :class:`TimerConfig` (the adaptive timer's knobs) and :class:`TimingConfig` (a suite's whole
  ``[timing]`` table: the timer, the clock, the memory method, rounds, timeouts, threads), each
  default written once, here.
- :class:`RunOptions`: everything a worker needs besides its point; crosses the process boundary.
- :class:`Record`: what a worker sends back: one results row, the timing samples, decode steps.

Pure Python (no torch, no pandas): the CLI imports it at start-up.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from enum import Enum
from typing import Any


class _Name(str, Enum):
    """A string enum whose str() and format() are its value (Python 3.11 changed both)."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class DType(_Name):
    FLOAT64 = "float64"
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"

    @property
    def itemsize(self) -> int:
        """Bytes per element."""
        return _ITEMSIZE[self]

    @property
    def short(self) -> str:
        """f64, f32, f16, bf16: for narrow tables."""
        return _SHORT[self]


_ITEMSIZE = {DType.FLOAT64: 8, DType.FLOAT32: 4, DType.FLOAT16: 2, DType.BFLOAT16: 2}
_SHORT = {DType.FLOAT64: "f64", DType.FLOAT32: "f32", DType.FLOAT16: "f16", DType.BFLOAT16: "bf16"}
DTYPE_NAMES: tuple[str, ...] = tuple(d.value for d in DType)


class Pass(_Name):
    """fwd: forward under no_grad; bwd: backward through a retained graph; fwdbwd: both;
    decode: a prompt of P tokens, then T generated one at a time."""

    FWD = "fwd"
    BWD = "bwd"
    FWDBWD = "fwdbwd"
    DECODE = "decode"

    @property
    def needs_backward(self) -> bool:
        return self in (Pass.BWD, Pass.FWDBWD)


PASS_NAMES: tuple[str, ...] = tuple(p.value for p in Pass)


class Status(_Name):
    OK = "ok"
    SKIPPED = "skipped"
    ERROR = "error"
    OOM = "oom"
    TIMEOUT = "timeout"
    CRASHED = "crashed"

    @property
    def failed(self) -> bool:
        """The point did not produce a measurement it should have (every status but ok, skipped)."""
        return self in FAILED_STATUSES


FAILED_STATUSES = frozenset({Status.ERROR, Status.OOM, Status.TIMEOUT, Status.CRASHED})
FAILED_STATUS_NAMES: tuple[str, ...] = tuple(sorted(s.value for s in FAILED_STATUSES))


class Family(_Name):
    SOFTMAX = "softmax"
    LINEAR = "linear"


DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class Point:
    """One measurement of a sweep. ``params`` are the impl's keyword parameters; ``P`` and ``T``
    are set for decode points only (then N = P + T); ``skip`` is the suite-limit reason this
    point will not run, or None."""

    impl: str
    pass_: Pass
    causal: bool
    dtype: DType
    B: int
    H: int
    N: int
    D: int
    M: int
    seed: int = 0
    device: str = "cpu"
    params: Mapping[str, Any] = field(default_factory=dict)
    P: int | None = None
    T: int | None = None
    skip: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "pass_", Pass(self.pass_))
        object.__setattr__(self, "dtype", DType(self.dtype))
        object.__setattr__(self, "params", dict(self.params))

    @property
    def point_id(self) -> str:
        """Stable, readable identity within a run (the device is the run's):
        ``impl/pass/mode/dtype/B1-H4-N1024-D64-M64[-P..-T..][-param..][-sSEED]``."""
        mode = "causal" if self.causal else "full"
        shape = f"B{self.B}-H{self.H}-N{self.N}-D{self.D}-M{self.M}"
        extra = "".join(f"-{k}{v}" for k, v in sorted(self.params.items()))
        if self.pass_ is Pass.DECODE:
            shape += f"-P{self.P}-T{self.T}"
        seed = f"-s{self.seed}" if self.seed else ""
        return f"{self.impl}/{self.pass_}/{mode}/{self.dtype}/{shape}{extra}{seed}"

    def as_mapping(self) -> dict[str, Any]:
        """The point as a plain dict with the stored key names (``pass``, ``point_id``): the form
        in ``plan.json`` and what an impl's ``supports``/``est_bytes`` callbacks receive."""
        d: dict[str, Any] = {
            "impl": self.impl,
            "pass": self.pass_.value,
            "causal": self.causal,
            "dtype": self.dtype.value,
            "B": self.B,
            "H": self.H,
            "D": self.D,
            "M": self.M,
            "seed": self.seed,
            "N": self.N,
            "device": self.device,
            "params": dict(self.params),
            "point_id": self.point_id,
            "skip": self.skip,
        }
        if self.pass_ is Pass.DECODE:
            d["P"], d["T"] = self.P, self.T
        return d

    @classmethod
    def from_mapping(cls, d: Mapping[str, Any]) -> Point:
        """Inverse of :meth:`as_mapping` (``point_id`` is recomputed, not trusted)."""
        return cls(
            impl=str(d["impl"]),
            pass_=Pass(d["pass"]),
            causal=bool(d["causal"]),
            dtype=DType(d["dtype"]),
            B=int(d["B"]),
            H=int(d["H"]),
            N=int(d["N"]),
            D=int(d["D"]),
            M=int(d["M"]),
            seed=int(d.get("seed") or 0),
            device=str(d.get("device", "cpu")),
            params=dict(d.get("params") or {}),
            P=None if d.get("P") is None else int(d["P"]),
            T=None if d.get("T") is None else int(d["T"]),
            skip=d.get("skip"),
        )

    def with_skip(self, reason: str | None) -> Point:
        return replace(self, skip=reason)


CLOCKS = ("wall", "process")
MEMORY_METHODS = ("rss", "allocator")


@dataclass(frozen=True)
class TimerConfig:
    """Knobs of the adaptive timer (seconds unless named otherwise)."""

    warmup_s: float = 0.1  # at least one call, then until this much time went by
    min_samples: int = 5
    min_time_s: float = 0.2
    max_time_s: float = 2.0  # the cap: stop here even if the noise target is not met
    target_rel_noise: float = 0.01
    block_min_s: float = 0.002  # a sample's block of calls lasts at least this long
    # A point whose first call takes at least this long is measured by that one call (CPU): its
    # time is the one sample, its resident high-water mark the peak memory and, for fwdbwd, its
    # output and gradients what the check judges. None: every point gets warm-up and samples.
    single_call_s: float | None = None

    @classmethod
    def from_timing(cls, timing: Mapping[str, Any]) -> TimerConfig:
        """The timer's fields of a suite's [timing] table (other keys belong to the runner)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in timing.items() if k in names})


TIMER_KEYS: tuple[str, ...] = tuple(f.name for f in fields(TimerConfig))


@dataclass(frozen=True)
class TimingConfig:
    """A suite's ``[timing]`` table, typed. Every default of the runner's knobs lives here.

    ``clock``: the CPU timer, ``wall`` (perf_counter) or ``process`` (the worker's CPU time,
    which is the latency only with one thread: such a suite says ``threads = 1``).
    ``memory``: CPU peak memory, ``rss`` (resident high-water mark) or ``allocator`` (torch's
    allocation events). ``rounds``: worker processes per point, interleaved over the sweep.
    ``timeout_s``: a point's worker is killed after this long without a timing result;
    ``check_timeout_s``: the correctness check's own budget after the timing arrived.
    ``threads``: torch threads per worker the suite requires (None: the run's choice).
    ``extra_rounds_max_s``: rounds after the first run only for points whose first round took
    less than this (wall time, seconds): a point whose one call takes seconds is measured in one
    process, the short ones in ``rounds`` (None: every point in every round).
    """

    timer: TimerConfig = field(default_factory=TimerConfig)
    clock: str = "wall"
    memory: str = "rss"
    rounds: int = 1
    timeout_s: float = 300.0
    check_timeout_s: float = 300.0
    threads: int | None = None
    extra_rounds_max_s: float | None = None

    @classmethod
    def from_table(cls, table: Mapping[str, Any]) -> TimingConfig:
        """From a (validated) ``[timing]`` table or :meth:`to_table`'s output."""
        runner = {f.name for f in fields(cls)} - {"timer"}
        return cls(
            timer=TimerConfig.from_timing(table),
            **{k: v for k, v in table.items() if k in runner},
        )

    def to_table(self) -> dict[str, Any]:
        """Flat ``[timing]``-style dict (what metadata.json stores)."""
        out = asdict(self.timer)
        out.update({f.name: getattr(self, f.name) for f in fields(self) if f.name != "timer"})
        return out

    def with_overrides(self, **kw: Any) -> TimingConfig:
        """A copy with the given fields replaced (timer fields by their own names); None = keep."""
        kw = {k: v for k, v in kw.items() if v is not None}
        timer_kw = {k: kw.pop(k) for k in list(kw) if k in TIMER_KEYS}
        return replace(self, timer=replace(self.timer, **timer_kw), **kw)


TIMING_KEYS: tuple[str, ...] = (*TIMER_KEYS, *(f.name for f in fields(TimingConfig) if f.name != "timer"))


@dataclass(frozen=True)
class CudaTimerOptions:
    """CUDA timing choices of a run: CUDA-graph replay, L2 flush before each sample."""

    graph: bool = False
    flush_l2: bool = True


@dataclass(frozen=True)
class RunOptions:
    """What every worker of a run needs besides its point (pickled into the worker).

    ``tolerance``: per-dtype overrides of the correctness tolerance; ``ref_cache_dir``: where
    float64 references and verdicts are shared between the points of this run; ``telemetry``:
    the NVML sampler's config (None: off); ``peaks``: the run's calibrated peak rates;
    ``impl_files``: ``/abs/path/file.py:function`` impls given on the command line, which every
    worker registers before measuring (they are not in the fork server's registry).
    """

    device: str
    threads: int
    timing: TimingConfig = field(default_factory=TimingConfig)
    tolerance: Mapping[str, float] = field(default_factory=dict)
    ref_cache_dir: str | None = None
    cuda: CudaTimerOptions = field(default_factory=CudaTimerOptions)
    telemetry: Mapping[str, Any] | None = None
    peaks: Mapping[str, Any] | None = None
    impl_files: tuple[str, ...] = ()


@dataclass
class Record:
    """One worker's answer for one (point, round): ``row`` holds the results columns
    (documented in ``attnbench.results.schema.COLUMNS``), ``samples`` the per-call times in ms,
    ``steps`` a decode point's sampled steps. ``final`` is False for the timing sent ahead of
    the correctness check (the parent keeps it if the check never finishes)."""

    row: dict[str, Any]
    samples: list[float] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    sample_rounds: list[int] | None = None
    final: bool = True

    @property
    def point_id(self) -> str:
        return str(self.row["point_id"])

    @property
    def round(self) -> int:
        return int(self.row.get("round") or 0)

    @property
    def status(self) -> Status:
        return Status(self.row["status"])

    def to_json(self) -> dict[str, Any]:
        """The journal's form (finite floats only: inf and nan become strings)."""
        d: dict[str, Any] = {"row": self.row, "samples": self.samples}
        if self.steps:
            d["steps"] = self.steps
        return _clean(d)

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Record:
        """Inverse of :meth:`to_json`; raises ValueError on anything not shaped like a record."""
        d = _restore(d)
        if not isinstance(d, dict) or not isinstance(d.get("row"), dict):
            raise ValueError("not a record: no 'row' object")
        row = d["row"]
        if not isinstance(row.get("point_id"), str) or row.get("status") not in {s.value for s in Status}:
            raise ValueError("not a record: row lacks a point_id or a known status")
        samples = d.get("samples") or []
        steps = d.get("steps") or []
        if not isinstance(samples, list) or not all(isinstance(t, (int, float)) for t in samples):
            raise ValueError("not a record: samples is not a list of numbers")
        if not isinstance(steps, list) or not all(isinstance(s, dict) for s in steps):
            raise ValueError("not a record: steps is not a list of objects")
        rnd = row.get("round", 0)
        if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 0:
            raise ValueError("not a record: round is not a non-negative integer")
        return cls(row=row, samples=[float(t) for t in samples], steps=steps)


def _clean(obj: Any) -> Any:
    # JSON has no inf/nan: store them as strings and turn them back on load.
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def _restore(obj: Any) -> Any:
    if isinstance(obj, str) and obj in ("inf", "-inf", "nan"):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _restore(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_restore(v) for v in obj]
    return obj
