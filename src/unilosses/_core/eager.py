"""Eager calls compiled whole, on a backend that dispatches each operation on its own (JAX).

Eagerly, JAX runs every operation as a compiled computation of its own, at 5-20 us each on
the CPU whatever the size: binary cross-entropy with logits took 376 us on 16 elements where
the same loss under ``jax.jit`` took 6, and optax's eager formula 86.  So a call whose arrays
are all arrays of such a backend runs through one compiled function of them
(``Adapter.compile_whole``), traced once per loss, options and value-check setting; shapes
and dtypes are the compiler's own cache.

Value checks are skipped while tracing; here each check's predicate is returned by the
compiled function instead (:func:`~unilosses._core.checks.deferring`), and where one fails
the call runs again eagerly, which raises the check's own error.

Tracers (the call is under ``grad``, ``vmap`` or an enclosing ``jit``) take the compiled
path too, with the checks off as traced code has them: eagerly, ``jax.grad`` traces its
function at every call, and through one ``jit`` it differentiates the cached trace instead
(value and gradient of BCE with logits on 16 elements: 0.8 ms, from 4.6; optax's 2.7).
Under an enclosing ``jit`` the inner one is inlined.  What the compiled path does not take
(an argument that is not an array of the backend, a number, a string, None, or a tuple of
those; a tracer of symbolic shape; an error while tracing; more than :data:`_MAX_FORMS`
option sets of one loss) runs op by op as before.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from ..backends import _BY_TYPE, Adapter
from .checks import checks_enabled, deferring

_F = TypeVar("_F", bound=Callable[..., Any])

#: an array's place in a call's form
_ARRAY = ("array",)
#: what a call's arguments cannot be part of a form: the call runs eagerly
_NO = object()
#: the Python types an option may have (as part of the form, compiled as constants)
_OPTION_TYPES = (int, float, bool, str, type(None))
#: in the cache, a form whose trace failed where its eager run did not (a function that reads
#: its values, say): it stays eager rather than tracing again at every call
_EAGER = object()
#: compiled forms per loss at most: an option that changes at every call (a schedule of
#: ``gamma``, say) would otherwise compile at every call
_MAX_FORMS = 64

_compiled: dict[tuple[Any, ...], Any] = {}
_forms: dict[Callable[..., Any], int] = {}


def compiled_eagerly(fn: _F) -> _F:
    """``fn``, whose eager calls on a backend with ``compile_whole`` run compiled whole."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        ad = _BY_TYPE.get(type(args[0])) if args else None
        if ad is None or ad.compile_whole is None:
            return fn(*args, **kwargs)
        return _run(ad, fn, args, kwargs)

    return call  # type: ignore[return-value]


def _form(ad: Adapter, v: Any, arrays: list[Any]) -> Any:
    """``v``'s part of a call's form (its type with it: 1, 1.0 and True are equal keys), or
    :data:`_NO`; a concrete array of ``ad``'s backend is appended to ``arrays``."""
    t = type(v)
    if t in _OPTION_TYPES:
        return (t, v)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(v, np.generic):
        # (the number it holds, as prepare() takes a NumPy scalar among the arrays; an
        # option's own check takes it as that number too)
        v = v.item()
        return (type(v), v)
    if t is tuple:
        parts = tuple(_form(ad, e, arrays) for e in v)
        return _NO if any(p is _NO for p in parts) else (tuple, parts)
    if _BY_TYPE.get(t) is ad:  # (a tracer too: see _run)
        arrays.append(v)
        return _ARRAY
    return _NO


def _value(form: Any, arrays: Any) -> Any:
    if form is _ARRAY:
        return next(arrays)
    if form[0] is tuple:
        return tuple(_value(f, arrays) for f in form[1])
    return form[1]


def _run(ad: Adapter, fn: Callable[..., Any], args: tuple[Any, ...],
         kwargs: dict[str, Any]) -> Any:
    arrays: list[Any] = []
    forms = tuple(_form(ad, a, arrays) for a in args)
    named = tuple((k, _form(ad, kwargs[k], arrays)) for k in sorted(kwargs))
    if not arrays or any(f is _NO for f in forms) or any(f is _NO for _, f in named):
        return fn(*args, **kwargs)
    # a tracer's values are not read (its checks are skipped, as on the op-by-op path): the
    # call is compiled without them
    traced = any(ad.is_tracing(a) for a in arrays)
    if traced and not all(type(d) is int for a in arrays for d in a.shape):
        # symbolic dimensions (jax.export): a dimension's value, computed in the inner
        # trace, belongs to the outer one, and the inner jit's cached trace would hand it
        # to the next export as a constant
        return fn(*args, **kwargs)
    key = (fn, forms, named, None if traced else checks_enabled())
    try:
        compiled = _compiled.get(key)
    except TypeError:  # (an unhashable option: NaN is hashable, an array in a tuple is not)
        return fn(*args, **kwargs)
    if compiled is _EAGER:
        return fn(*args, **kwargs)
    if compiled is None:
        compiled = _compile(ad, fn, key, forms, named, defer=not traced)
        if compiled is None:
            return fn(*args, **kwargs)
    try:
        out, ok = compiled(*arrays)
    except Exception:
        # an error while tracing, e.g. mismatched shapes: raised again eagerly, with the
        # eager path's traceback; where the eager run passes, the form cannot be traced
        out = fn(*args, **kwargs)
        _compiled[key] = _EAGER
        return out
    if ok is not None and not bool(ok):
        return fn(*args, **kwargs)  # a check failed: it raises its error eagerly
    return out


def _compile(ad: Adapter, fn: Callable[..., Any], key: tuple[Any, ...],
             forms: tuple[Any, ...], named: tuple[tuple[str, Any], ...], *,
             defer: bool) -> Callable[..., Any] | None:
    count = _forms.get(fn, 0)
    if count >= _MAX_FORMS or ad.compile_whole is None:
        return None
    _forms[fn] = count + 1
    xp = ad.xp

    def whole(*arrays: Any) -> tuple[Any, Any]:
        it = iter(arrays)
        args = [_value(f, it) for f in forms]
        kwargs = {k: _value(f, it) for k, f in named}
        with deferring(defer) as found:
            out = fn(*args, **kwargs)
        return out, (xp.all(xp.stack(found)) if found else None)

    compiled = _compiled[key] = ad.compile_whole(whole)
    return compiled
