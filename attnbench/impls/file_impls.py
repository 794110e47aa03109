"""Ad-hoc impls from a file: ``attnbench run --impl path/to/file.py:function``, no packaging.

The main process registers them for the plan; every worker registers them again before it
measures (they are not in the fork server)."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Iterable
from pathlib import Path

from attnbench.errors import UserError
from attnbench.impls.registry import ImplSpec, add_file_function, ensure_loaded

FILE_IMPL_PREFIX = "attnbench_file_impl_"


def is_file_impl(value: str) -> bool:
    """Whether an ``--impl`` value names a function in a Python file: ``path/to/file.py:function``."""
    path, sep, func = value.rpartition(":")
    return bool(sep) and path.endswith(".py") and func.isidentifier()


def load_file_impl(value: str) -> ImplSpec:
    """Import ``path/to/file.py`` as a module and register ``function`` from it: a function
    decorated with :func:`~attnbench.impls.registry.register` keeps its metadata, a plain one
    gets a plugin's defaults (family linear, both causal modes, CPU and CUDA, float32) under its
    own name. The origin is ``file path/to/file.py``. Loading the same file twice registers it
    once; every problem is a one-line UserError naming the option."""
    path_text, _, func = value.rpartition(":")
    path = Path(path_text).expanduser().resolve()
    if not path.is_file():
        raise UserError(f"--impl {value!r}: no such file {path_text!r}; expected path/to/file.py:function")
    ensure_loaded()
    mod_name = FILE_IMPL_PREFIX + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    module = sys.modules.get(mod_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(mod_name, path)
        if spec is None or spec.loader is None:
            raise UserError(f"--impl {value!r}: {path_text!r} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[mod_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[mod_name]
            raise UserError(f"--impl {value!r}: importing {path_text!r} failed: {type(exc).__name__}: {exc}") from None
    obj = getattr(module, func, None)
    if obj is None:
        raise UserError(f"--impl {value!r}: {path_text!r} has no function {func!r}")
    spec_obj = getattr(obj, "attnbench_spec", None)
    name = spec_obj.name if isinstance(spec_obj, ImplSpec) else func
    return add_file_function(name, obj, f"file {path_text}", value)


def load_file_impls(values: Iterable[str]) -> None:
    """Register every ``path.py:function`` of ``values`` (a worker does this before measuring)."""
    for value in values:
        load_file_impl(value)
