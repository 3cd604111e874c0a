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
option sets of one loss) runs op by op as before, and so do the losses a loss calls in its
own body (inline, in its trace: their checks are its own).

Each public loss asks first thing in its body (:func:`runs_whole`, then :func:`run_whole`
with its ``locals()``): a decorator's wrapper would cost every call on the other backends
a frame more.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from ..backends import _BY_TYPE, Adapter
from .checks import checks_enabled, deferring

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
#: set while a loss runs its own body (:func:`_op_by_op`)
_inside: ContextVar[bool] = ContextVar("unilosses_inside_whole", default=False)
_forms: dict[Callable[..., Any], int] = {}


def runs_whole(x: Any) -> bool:
    """Whether a loss whose first array is ``x`` runs compiled whole (:func:`run_whole`):
    ``x``'s backend compiles whole, and the loss is not already running inside such a run.

    A loss asks first thing in its body (``if runs_whole(x): return run_whole(loss,
    locals())``), where a decorator's wrapper cost every call on the other backends a frame
    more (0.3-0.5 us of torch's 8-13 on 16 elements; this test costs about 0.1)."""
    ad = _BY_TYPE.get(type(x))
    return ad is not None and ad.compile_whole is not None and not _inside.get()


def run_whole(fn: Callable[..., Any], params: dict[str, Any]) -> Any:
    """Run loss ``fn`` compiled whole; ``params``: its arguments by name, ``locals()`` at the
    top of its body (its positional-only parameters first, then its keyword-only ones)."""
    code = fn.__code__
    n = code.co_argcount
    args = tuple(params[k] for k in code.co_varnames[:n])
    # (by name: locals() holds the free variables of a function in a function too; a
    # keyword left at its default is left out, as its own object: fewer parts to the form)
    defaults = fn.__kwdefaults__ or {}
    kwargs = {}
    for k in code.co_varnames[n:n + code.co_kwonlyargcount]:
        v = params[k]
        if v is not defaults.get(k, _NO):
            kwargs[k] = v
    ad = _BY_TYPE[type(args[0])]
    assert ad is not None  # (runs_whole said so)
    return _run(ad, fn, args, kwargs)


def _op_by_op(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``fn``'s own body, run as it is (eagerly, or traced inside the compiled call): the
    losses it calls run inline too, so their checks join its own."""
    token = _inside.set(True)
    try:
        return fn(*args, **kwargs)
    finally:
        _inside.reset(token)


def _form(ad: Adapter, v: Any, arrays: list[Any]) -> Any:
    """``v``'s part of a call's form (its type with it: 1, 1.0 and True are equal keys), or
    :data:`_NO`; an array of ``ad``'s backend is appended to ``arrays``."""
    t = type(v)
    if t in _OPTION_TYPES:
        return (t, v)
    if _BY_TYPE.get(t) is ad:  # (a tracer too: see _run)
        arrays.append(v)
        return _ARRAY
    if t is tuple:
        parts = tuple(_form(ad, e, arrays) for e in v)
        return _NO if any(p is _NO for p in parts) else (tuple, parts)
    np = sys.modules.get("numpy")
    if np is not None and isinstance(v, np.generic):
        # (the number it holds, as prepare() takes a NumPy scalar among the arrays; an
        # option's own check takes it as that number too)
        v = v.item()
        return (type(v), v)
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
    forms: list[Any] = []
    for v in (*args, *kwargs.values()):
        f = _form(ad, v, arrays)
        if f is _NO:
            return _op_by_op(fn, args, kwargs)
        forms.append(f)
    if not arrays:
        return _op_by_op(fn, args, kwargs)
    # a tracer's values are not read (its checks are skipped, as on the op-by-op path): the
    # call is compiled without them
    traced = any(ad.is_tracing(a) for a in arrays)
    if traced and not all(type(d) is int for a in arrays for d in a.shape):
        # symbolic dimensions (jax.export): a dimension's value, computed in the inner
        # trace, belongs to the outer one, and the inner jit's cached trace would hand it
        # to the next export as a constant
        return _op_by_op(fn, args, kwargs)
    key = (fn, tuple(forms), tuple(kwargs), None if traced else checks_enabled())
    try:
        compiled = _compiled.get(key)
    except TypeError:  # (an unhashable option: NaN is hashable, an array in a tuple is not)
        return _op_by_op(fn, args, kwargs)
    if compiled is _EAGER:
        return _op_by_op(fn, args, kwargs)
    if compiled is None:
        compiled = _compile(ad, fn, key, len(args), defer=not traced)
        if compiled is None:
            return _op_by_op(fn, args, kwargs)
    try:
        out, ok = compiled(*arrays)
    except Exception:
        # an error while tracing, e.g. mismatched shapes: raised again eagerly, with the
        # eager path's traceback; where the eager run passes, the form cannot be traced
        out = _op_by_op(fn, args, kwargs)
        _compiled[key] = _EAGER
        return out
    if ok is not None and not bool(ok):
        return _op_by_op(fn, args, kwargs)  # a check failed: it raises its error eagerly
    return out


def _compile(ad: Adapter, fn: Callable[..., Any], key: tuple[Any, ...], npos: int, *,
             defer: bool) -> Callable[..., Any] | None:
    """The compiled call of form ``key`` (:func:`_run`): ``npos`` positional arguments,
    then the keywords it names."""
    count = _forms.get(fn, 0)
    if count >= _MAX_FORMS or ad.compile_whole is None:
        return None
    _forms[fn] = count + 1
    xp = ad.xp
    forms, names = key[1], key[2]

    def whole(*arrays: Any) -> tuple[Any, Any]:
        it = iter(arrays)
        values = [_value(f, it) for f in forms]
        args = tuple(values[:npos])
        kwargs = dict(zip(names, values[npos:], strict=True))
        with deferring(defer) as found:
            out = _op_by_op(fn, args, kwargs)
        return out, (xp.all(xp.stack(found)) if found else None)

    compiled = _compiled[key] = ad.compile_whole(whole)
    return compiled
