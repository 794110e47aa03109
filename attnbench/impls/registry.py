"""Registry of attention implementations and the third-party plugin contract.

Every implementation is a callable ``fn(q, k, v, *, causal: bool, **params) -> out`` with
q, k ``[B, H, N, D]``, v ``[B, H, N, M]`` and out ``[B, H, N, M]`` (the SDPA layout).
Metadata lives in an :class:`ImplSpec`. Built-ins register with :func:`register`; third
parties expose an entry point in the group ``attnbench.impls`` naming either a callable
already decorated with :func:`register` or a plain callable (metadata then defaults to
family ``linear``, both causal modes, CPU and CUDA, float32).

Decoders (the token-by-token form of an implementation, for pass ``decode``) are held here
too: :func:`register_decoder`, :func:`get_decoder`; see :mod:`attnbench.impls.decoding`.

A plugin cannot replace a built-in: a plugin registering a built-in name (above all a float64
reference, ``softmax`` or ``linear-quadratic``) is refused, the built-in stays, the clash is
listed by :func:`broken_plugins` (so ``attnbench list`` names the plugin) and :func:`get` of
that name is a one-line error, so a run that uses it, or whose reference it is, is refused. Two
plugins registering one name are both refused. A plugin name must be a plain identifier
(:data:`NAME_PATTERN`): it ends up in point ids, file names, terminals and Markdown.

This module imports no torch: listing implementations stays cheap.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from attnbench.errors import UserError
from attnbench.point import DTYPE_NAMES, Family
from attnbench.text import terminal_safe

ENTRY_POINT_GROUP = "attnbench.impls"
FAMILIES = tuple(f.value for f in Family)
ALL_DTYPES = DTYPE_NAMES
RECOMPUTE_SUFFIX = "-recompute"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")

# Modules holding the built-in implementations; imported on first registry use.
BUILTIN_MODULES = (
    "attnbench.impls.decoding",
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
    ``prepare`` builds what the impl needs on ``device`` (a compiled kernel) once per run, before
    the sweep, and returns None or the one-line reason it cannot be built: no point's time or
    timeout is spent compiling. ``reference_long`` is (label, fn): a reference's own form for long
    sequences (exact in exact arithmetic, bounded time and memory), used past the quadratic
    form's limit (attnbench.measure.correctness.reference_plan).
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
    reference_long: tuple[str, Callable[..., Any]] | None = None
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
        return "softmax" if self.family == Family.SOFTMAX else "linear-quadratic"


def _first_line(doc: str | None) -> str:
    lines = (doc or "").strip().splitlines()
    return lines[0] if lines else ""


_REGISTRY: dict[str, ImplSpec] = {}
_BROKEN_PLUGINS: dict[str, str] = {}
_CLASHES: dict[str, str] = {}  # name -> why the plugin(s) registering it were refused
_loaded = False
_loading_plugin: str | None = None  # the distribution whose entry point is being imported


def _is_builtin(spec: ImplSpec) -> bool:
    return not spec.origin.startswith("plugin ")


def _reference_names() -> set[str]:
    return {spec.reference_name for spec in _REGISTRY.values() if _is_builtin(spec)}


def _refuse_name(name: str, dist: str) -> bool:
    """Record why a plugin's ``name`` cannot be registered; False if it can."""
    if NAME_PATTERN.match(name):
        return False
    shown = terminal_safe(name)[:64] or "?"
    _BROKEN_PLUGINS[shown] = (
        f"plugin {dist}: name {shown!r} refused; expected letters, digits, '.', '_', '+' or '-' "
        "(at most 64, starting with a letter or digit)"
    )
    return True


def _add(spec: ImplSpec, dist: str | None) -> None:
    """Register ``spec``: a built-in (``dist`` None) as is, a plugin's unless its name clashes."""
    if dist is None:
        if not NAME_PATTERN.match(spec.name):
            raise ValueError(f"impl name {spec.name!r} does not match {NAME_PATTERN.pattern}")
        _REGISTRY[spec.name] = spec
        return
    spec.origin = f"plugin {dist}"
    name = spec.name
    if _refuse_name(name, dist):
        return
    existing = _REGISTRY.get(name)
    if existing is None or existing is spec:
        if name not in _CLASHES:
            _REGISTRY[name] = spec
        return
    if _is_builtin(existing):
        what = (
            f"the float64 reference of the {existing.family} family"
            if name in _reference_names()
            else "a built-in implementation"
        )
        _CLASHES[name] = f"plugin {dist} registers {name!r}, the name of {what}; the plugin is refused"
        return
    other = existing.origin.removeprefix("plugin ")
    _CLASHES[name] = f"plugins {other} and {dist} both register {name!r}; both are refused"
    del _REGISTRY[name]


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
        _add(spec, _loading_plugin)
        fn.attnbench_spec = spec  # type: ignore[attr-defined]
        return fn

    return deco


def _spec_from_plugin(ep_name: str, obj: Any, dist: str) -> ImplSpec:
    spec = getattr(obj, "attnbench_spec", None)
    if isinstance(spec, ImplSpec):
        return spec
    if isinstance(obj, ImplSpec):
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
    """Import every entry point in ``attnbench.impls``; a broken one is recorded, not raised;
    one whose name clashes is refused (see the module docstring)."""
    global _loading_plugin
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        dist = terminal_safe(ep.dist.name if ep.dist is not None else "?")
        if _refuse_name(ep.name, dist):
            continue
        _loading_plugin = dist  # a register() call while importing it is the plugin's
        try:
            obj = ep.load()
            spec = _spec_from_plugin(ep.name, obj, dist)
        except Exception as exc:
            _BROKEN_PLUGINS[ep.name] = f"plugin {dist} failed to import: {type(exc).__name__}: {exc}"
            continue
        finally:
            _loading_plugin = None
        _add(spec, dist)


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
    """The spec registered as ``name``; an unknown name, or one a plugin clashed with, is a
    UserError (listing what exists, or naming the plugin)."""
    ensure_loaded()
    if name in _CLASHES:
        raise UserError(
            f"impl {name!r}: refused while {_CLASHES[name]} (see `attnbench list`); uninstall or rename that plugin"
        )
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _BROKEN_PLUGINS:
        raise UserError(f"impl {name!r} is unavailable: {_BROKEN_PLUGINS[name]}")
    raise UserError(f"impl: unknown implementation {name!r}; available: {', '.join(sorted(_REGISTRY))}")


def all_specs() -> dict[str, ImplSpec]:
    ensure_loaded()
    return dict(_REGISTRY)


def broken_plugins() -> dict[str, str]:
    """Plugins that cannot be used, by name, with why: failed imports, refused names and clashes
    with built-in (or each other's) names."""
    ensure_loaded()
    return {**_BROKEN_PLUGINS, **{name: f"name clash: {why}" for name, why in _CLASHES.items()}}


def clashes() -> dict[str, str]:
    """Names a plugin tried to take from a built-in (or two plugins both registered), with why."""
    ensure_loaded()
    return dict(_CLASHES)


def check_usable(name: str) -> ImplSpec:
    """:func:`get` of ``name`` and of its family's float64 reference: a run is refused if a
    plugin clashed with either."""
    spec = get(name)
    ref = spec.reference_name
    if ref in _CLASHES:
        raise UserError(
            f"impl {name!r}: its float64 reference {ref!r} is refused while {_CLASHES[ref]} "
            "(see `attnbench list`); uninstall or rename that plugin"
        )
    get(ref)
    return spec


def set_long_reference(name: str, label: str, fn: Callable[..., Any]) -> None:
    """Give the registered reference ``name`` its long-sequence form (called by the module that
    defines that form, which may import the reference's module but not the other way round)."""
    _REGISTRY[name].reference_long = (label, fn)


# factory(b, h, d, m, dtype, device, params) -> Decoder; params are the impl's keyword parameters.
DecoderFactory = Callable[[int, int, int, int, Any, Any, dict[str, Any]], Any]


@dataclass
class DecoderSpec:
    """A named decoder: ``impl`` is the registered implementation whose family, reference,
    dtypes and devices it shares; ``kind`` is kv-cache, recurrent-state or recompute."""

    name: str
    impl: str
    kind: str
    factory: DecoderFactory
    description: str = ""


_DECODERS: dict[str, DecoderSpec] = {}
_recompute: Callable[[str], DecoderFactory] | None = None


def register_decoder(
    name: str, *, impl: str, kind: str, description: str = ""
) -> Callable[[DecoderFactory], DecoderFactory]:
    """Decorator: register ``factory`` as the decoder ``name`` built on implementation ``impl``."""

    def deco(factory: DecoderFactory) -> DecoderFactory:
        if _loading_plugin is not None and name in _DECODERS:  # a plugin cannot replace a decoder
            _CLASHES[name] = (
                f"plugin {_loading_plugin} registers decoder {name!r}, a built-in name; the plugin is refused"
            )
            return factory
        _DECODERS[name] = DecoderSpec(name, impl, kind, factory, description)
        return factory

    return deco


def set_recompute_factory(make: Callable[[str], DecoderFactory]) -> None:
    """Called once by attnbench.impls.decoding: how to build ``IMPL-recompute`` for any impl."""
    global _recompute
    _recompute = make


def get_decoder(name: str) -> DecoderSpec:
    """The decoder ``name``: a registered one, or ``IMPL-recompute`` for any registered impl."""
    ensure_loaded()
    if name in _CLASHES:
        raise UserError(f"impl {name!r}: refused while {_CLASHES[name]} (see `attnbench list`)")
    if name in _DECODERS:
        return _DECODERS[name]
    if name.endswith(RECOMPUTE_SUFFIX) and _recompute is not None:
        base = name[: -len(RECOMPUTE_SUFFIX)]
        if base in _REGISTRY:
            return DecoderSpec(
                name, base, "recompute", _recompute(base), f"no cache: {base} over the whole prefix every step"
            )
    raise UserError(
        f"impl: {name!r} has no decoder for pass decode; available: {', '.join(sorted(_DECODERS))}, "
        f"or IMPL{RECOMPUTE_SUFFIX} for any implementation"
    )


def all_decoders() -> dict[str, DecoderSpec]:
    ensure_loaded()
    return dict(_DECODERS)


def add_file_function(name: str, obj: Any, origin: str, option: str) -> ImplSpec:
    """Register ``obj``, a function loaded from a file (:mod:`attnbench.impls.file_impls`), as
    ``name`` with ``origin``; ``option`` names the user's value in errors. A name already held by
    something not loaded from a file is a one-line UserError."""
    existing = _REGISTRY.get(name)
    if existing is not None and existing.fn is not obj and not existing.origin.startswith("file "):
        raise UserError(
            f"--impl {option!r}: {name!r} is already an implementation ({existing.origin}); rename the function"
        )
    try:
        impl = _spec_from_plugin(name, obj, "")
    except TypeError as exc:
        raise UserError(f"--impl {option!r}: {exc}") from None
    impl.origin = origin
    _REGISTRY[impl.name] = impl
    return impl
