"""Backend adapters, found from an array's type without importing any framework.

An adapter module is imported the first time an array of its framework is seen; the answer is
cached per Python type, so after the first call dispatch is a dictionary lookup.  A framework
that was never imported by the user cannot have produced the array, so looking only at
``sys.modules`` is both safe and free (the approach of einops and array-api-compat).
"""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Callable
from typing import Any

from ._base import Adapter

__all__ = ["Adapter", "adapter_for", "adapter_named", "KNOWN_BACKENDS"]

# (backend name, module that must already be imported, how to get its array classes,
#  adapter module).  Order matters only for speed: the common frameworks are tried first.
_Detector = tuple[str, str, Callable[[Any], tuple[type, ...]], str]
_DETECTORS: list[_Detector] = [
    ("torch", "torch", lambda m: (m.Tensor,), "unilosses.backends.torch"),
    ("jax", "jax", lambda m: (m.Array,), "unilosses.backends.jax"),
    ("numpy", "numpy", lambda m: (m.ndarray,), "unilosses.backends.numpy"),
    (
        "tensorflow",
        "tensorflow",
        lambda m: (m.Tensor, m.Variable),
        "unilosses.backends.tensorflow",
    ),
    ("array_api_strict", "array_api_strict._array_object", lambda m: (m.Array,),
     "unilosses.backends.strict"),
]

#: backend names in the order reports list them
KNOWN_BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "tensorflow")

#: adapters by an argument's exact type (None: not an array).  torch.compile guards a traced
#: loss on this dict's size, so every entry that can be known early is made early (the
#: Python types that stand for numbers and lists, a framework's array classes when its
#: adapter loads): an entry added later would recompile every compiled loss
_BY_TYPE: dict[type, Adapter | None] = dict.fromkeys(
    (list, tuple, int, float, bool, complex, str, type(None)))
_BY_NAME: dict[str, Adapter] = {}
#: held while an adapter loads: threads whose first calls come together wait for the one
#: load.  Unheld, each found the adapter module in ``sys.modules`` while another was still
#: importing it (no ``load`` yet), or made an adapter of its own, and a call mixing two of a
#: framework's array classes (a tensor and a Parameter) was refused as from two frameworks.
#: (Reentrant: importing a framework may load an adapter.)
_LOADING = threading.RLock()


def adapter_named(name: str) -> Adapter:
    """The adapter of backend ``name`` (imports that framework)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        pass
    for bname, _, _, modname in _DETECTORS:
        if bname == name:
            if modname not in sys.modules:  # (before the lock, which dynamo cannot trace)
                _refuse_import_while_compiling(name)
            with _LOADING:
                loaded = _BY_NAME.get(name)
                if loaded is not None:  # by another thread meanwhile
                    return loaded
                module = sys.modules.get(modname)
                if module is None:
                    module = importlib.import_module(modname)
                adapter = module.load()
                _BY_NAME[name] = adapter
                _register_classes(name, adapter)
            return adapter
    raise ValueError(f"unknown backend {name!r}; known backends: {', '.join(KNOWN_BACKENDS)}")


def _register_classes(name: str, adapter: Adapter) -> None:
    """The framework's own array classes in ``_BY_TYPE``, as soon as its adapter loads
    (subclasses and other concrete types are added when first seen)."""
    for bname, modname, classes, _ in _DETECTORS:
        mod = sys.modules.get(modname)
        if bname == name and mod is not None:
            try:
                found = classes(mod)
            except AttributeError:  # (a partial install: the types are found when seen)
                return
            for cls in found:
                _BY_TYPE.setdefault(cls, adapter)


def _refuse_import_while_compiling(name: str) -> None:
    torch = sys.modules.get("torch")
    if name == "torch" and torch is not None and torch.compiler.is_compiling():
        raise RuntimeError(
            "unilosses' torch adapter is not loaded yet, and torch.compile cannot trace the "
            "import: call unilosses.backends.preload() once after `import torch` (importing "
            "unilosses after torch, or any eager unilosses call on a tensor, does it too)."
        )


def preload() -> None:
    """Load the adapters of frameworks that are already imported (nothing new is imported).

    A first call traced by ``torch.compile(fullgraph=True)`` cannot import an adapter module
    (dynamo does not trace imports); loading it at ``import unilosses`` time, when the
    framework is already there, avoids that.
    """
    for bname, modname, _, _ in _DETECTORS:
        if modname in sys.modules and bname not in _BY_NAME:
            try:
                adapter_named(bname)
            except Exception:  # a broken framework install must not break `import unilosses`
                pass


def _detect(x: Any) -> Adapter | None:
    for bname, modname, classes, _ in _DETECTORS:
        mod = sys.modules.get(modname)
        if mod is not None and isinstance(x, classes(mod)):
            return adapter_named(bname)
    ns = getattr(x, "__array_namespace__", None)
    if ns is not None:
        # Any other array-API array (CuPy, Dask, ...): the generic adapter over its namespace.
        # Keyed by the namespace module so each namespace gets one adapter.
        xp = ns()
        key = f"generic:{getattr(xp, '__name__', id(xp))}"
        adapter = _BY_NAME.get(key)
        if adapter is None:  # (setdefault: one adapter, whichever thread made it first)
            adapter = _BY_NAME.setdefault(key, Adapter(xp))
        return adapter
    return None


def adapter_for(x: Any) -> Adapter | None:
    """The adapter for array ``x``, or None if ``x`` is not an array (a Python scalar, a list)."""
    t = type(x)
    try:
        return _BY_TYPE[t]
    except KeyError:
        pass
    adapter = _detect(x)
    # jax tracers are virtual subclasses of jax.Array: isinstance on the instance is the test,
    # and the answer holds for every instance of the same type, so caching by type is exact.
    _BY_TYPE[t] = adapter
    return adapter
