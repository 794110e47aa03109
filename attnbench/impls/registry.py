"""Registry of attention implementations and the third-party plugin contract.

Every implementation is a callable ``fn(q, k, v, *, causal: bool, **params) -> out`` with
q, k ``[B, H, N, D]``, v ``[B, H, N, M]`` and out ``[B, H, N, M]`` (the SDPA layout).
Metadata lives in an :class:`ImplSpec`. Built-ins register with :func:`register`; third
parties expose an entry point in the group ``attnbench.impls`` naming either a callable
already decorated with :func:`register` or a plain callable (metadata then defaults to
family ``linear``, both causal modes, CPU and CUDA, float32).

This module imports no torch: listing implementations stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from attnbench.errors import UserError

ENTRY_POINT_GROUP = "attnbench.impls"
FAMILIES = ("softmax", "linear")
ALL_DTYPES = ("float64", "float32", "float16", "bfloat16")

# Modules holding the built-in implementations; imported on first registry use.
BUILTIN_MODULES = (
    "attnbench.impls.softmax",
    "attnbench.impls.linear",
    "attnbench.impls.chunked",
    "attnbench.impls.recurrent",
    "attnbench.impls.chunked_triton",
    "attnbench.impls.causal_product",
)


@dataclass
class ImplSpec:
    """What attnbench knows about one implementation.

    ``available`` returns ``None`` when the impl can run on ``device`` or a one-line reason
    why not (missing compiler, no Triton, ...); it is called lazily, in the worker, so that
    an expensive check (building a kernel) never runs at import or listing time unless asked.
    ``supports`` returns ``None`` or the reason a given point (a mapping with B, H, N, D, M,
    dtype, causal, pass) is out of the impl's limits. ``est_bytes`` estimates the working
    memory of a point, so the runner can skip what cannot fit instead of waking the OOM killer.
    ``prepare`` builds whatever the impl compiles (a C++/CUDA extension) for a device, once,
    before a sweep and outside any point's timeout; it returns ``None`` or a one-line reason the
    impl cannot be built.
    """

    name: str
    fn: Callable[..., Any]
    family: str = "linear"
    causal: tuple[bool, ...] = (True, False)
    devices: tuple[str, ...] = ("cpu", "cuda")
    dtypes: tuple[str, ...] = ("float32",)
    backward: bool = True
    reference: str | None = None
    description: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    available: Callable[[str], str | None] | None = None
    supports: Callable[[dict[str, Any]], str | None] | None = None
    est_bytes: Callable[[dict[str, Any]], int] | None = None
    prepare: Callable[[str], str | None] | None = None
    origin: str = "builtin"

    def unavailable_reason(self, device: str) -> str | None:
        """Why this impl cannot run on ``device`` at all, or None."""
        if device not in self.devices:
            return f"{self.name} does not run on {device} (devices: {', '.join(self.devices)})"
        if self.available is not None:
            try:
                return self.available(device)
            except Exception as exc:  # an availability probe must never break a sweep
                return f"availability check failed: {type(exc).__name__}: {exc}"
        return None

    def skip_reason(self, point: dict[str, Any]) -> str | None:
        """Why this impl cannot run ``point`` (static metadata and its own limits), or None."""
        if point["causal"] not in self.causal:
            mode = "causal" if point["causal"] else "non-causal"
            return f"{self.name} has no {mode} mode"
        if point["dtype"] not in self.dtypes:
            return f"{self.name} does not support dtype {point['dtype']} (supports: {', '.join(self.dtypes)})"
        if point.get("pass") in ("bwd", "fwdbwd") and not self.backward:
            return f"{self.name} has no backward"
        if self.supports is not None:
            return self.supports(point)
        return None

    @property
    def reference_name(self) -> str:
        """The registered float64 reference of this impl's family."""
        if self.reference:
            return self.reference
        return "softmax" if self.family == "softmax" else "linear-quadratic"


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


_REGISTRY: dict[str, ImplSpec] = {}
_BROKEN_PLUGINS: dict[str, str] = {}
_loaded = False


def register(
    name: str,
    *,
    family: str = "linear",
    causal: Iterable[bool] = (True, False),
    devices: Iterable[str] = ("cpu", "cuda"),
    dtypes: Iterable[str] = ("float32",),
    backward: bool = True,
    reference: str | None = None,
    description: str = "",
    params: dict[str, Any] | None = None,
    available: Callable[[str], str | None] | None = None,
    supports: Callable[[dict[str, Any]], str | None] | None = None,
    est_bytes: Callable[[dict[str, Any]], int] | None = None,
    prepare: Callable[[str], str | None] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` under ``name`` with its metadata and return ``fn`` unchanged.

    The spec is also attached as ``fn.attnbench_spec`` so an entry point can name the function.
    """
    if family not in FAMILIES:
        raise ValueError(f"family {family!r} is not one of {FAMILIES}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        spec = ImplSpec(
            name=name,
            fn=fn,
            family=family,
            causal=tuple(causal),
            devices=tuple(devices),
            dtypes=tuple(dtypes),
            backward=backward,
            reference=reference,
            description=description or _first_line(fn.__doc__),
            params=dict(params or {}),
            available=available,
            supports=supports,
            est_bytes=est_bytes,
            prepare=prepare,
            origin=getattr(fn, "__module__", "builtin") or "builtin",
        )
        _REGISTRY[name] = spec
        fn.attnbench_spec = spec  # type: ignore[attr-defined]
        return fn

    return deco


def _spec_from_plugin(ep_name: str, obj: Any, dist: str) -> ImplSpec:
    spec = getattr(obj, "attnbench_spec", None)
    if isinstance(spec, ImplSpec):
        spec.origin = f"plugin {dist}"
        return spec
    if isinstance(obj, ImplSpec):
        obj.origin = f"plugin {dist}"
        return obj
    if not callable(obj):
        raise TypeError(f"entry point {ep_name!r} names a {type(obj).__name__}, not a callable")
    return ImplSpec(
        name=ep_name,
        fn=obj,
        family=getattr(obj, "attnbench_family", "linear"),
        description=_first_line(obj.__doc__),
        origin=f"plugin {dist}",
    )


def load_plugins() -> None:
    """Import every entry point in ``attnbench.impls``; a broken one is recorded, not raised."""
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        try:
            obj = ep.load()
            spec = _spec_from_plugin(ep.name, obj, dist)
        except Exception as exc:
            _BROKEN_PLUGINS[ep.name] = f"plugin {dist} failed to import: {type(exc).__name__}: {exc}"
            continue
        _REGISTRY[spec.name] = spec


def ensure_loaded() -> None:
    """Import the built-ins and the plugins once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    load_plugins()


def get(name: str) -> ImplSpec:
    """The spec registered as ``name``; an unknown name is a UserError listing what exists."""
    ensure_loaded()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BROKEN_PLUGINS:
        raise UserError(f"impl {name!r} is unavailable: {_BROKEN_PLUGINS[name]}")
    raise UserError(f"impl: unknown implementation {name!r}; available: {', '.join(sorted(_REGISTRY))}")


def all_specs() -> dict[str, ImplSpec]:
    ensure_loaded()
    return dict(_REGISTRY)


def broken_plugins() -> dict[str, str]:
    ensure_loaded()
    return dict(_BROKEN_PLUGINS)
