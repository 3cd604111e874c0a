"""Checks on arguments that do not depend on array values (safe under jit and compile)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backends import adapter_for

REDUCTIONS = ("mean", "sum", "none", "weighted_mean")


def check_reduction(reduction: Any, also: tuple[str, ...] = ()) -> None:
    """``also``: names a front end accepts besides the library's (torch's ``"batchmean"``)."""
    if reduction not in REDUCTIONS + also:
        raise ValueError(
            f"reduction={reduction!r} is not supported; use one of "
            f"{', '.join(repr(r) for r in REDUCTIONS + also)}."
        )


def refuse_boolean(name: str, value: Any, kind: str) -> None:
    """Refuse a Python, NumPy or framework boolean (scalar or array) for a numeric option:
    ``float``/``int`` would take it as 0 or 1, and ``alpha=True`` is a slip, not a number."""
    if isinstance(value, bool) or "bool" in str(getattr(value, "dtype", "")):
        raise TypeError(f"`{name}` must be {kind}, got the boolean {value!r}.")


def check_flag(name: str, value: Any) -> bool:
    """A Python or NumPy bool: a string such as ``"no"`` would be truthy, an array's truth
    ambiguous."""
    if value is True or value is False:
        return value
    if type(value).__name__ in ("bool", "bool_") and getattr(value, "shape", ()) == ():
        return bool(value)  # (NumPy's np.True_ / np.False_)
    raise TypeError(f"`{name}` must be True or False, got {value!r}.")


def _check_array_option(name: str, value: Any, hint: str) -> None:
    """A 0-d array given for a number is read as the number it holds, but not one without
    values (torch.compile's fake tensor: float() made it an unbacked symbol, which failed
    inside torch with "sympy expression is NaN"), nor one that requires grad (float()
    detached it: no gradient reached it, silently)."""
    ad = adapter_for(value)
    if ad is None:
        return
    if not ad.has_values(value):
        raise TypeError(f"`{name}` must be a Python number, got a traced "
                        f"{type(value).__name__}.{hint}")
    if getattr(value, "requires_grad", False):
        raise TypeError(
            f"`{name}` is a tensor that requires grad, but options are constants: no gradient "
            f"would reach it. Pass a Python number (`{name}.item()`) or a detached tensor."
        )


def _number(name: str, value: Any) -> float:
    kind = type(value)
    # exact types first: on a 16-element loss the isinstance tests cost a tenth of the call
    if kind is not float and kind is not int and (
            isinstance(value, bool) or not isinstance(value, (int, float))):
        refuse_boolean(name, value, "a Python number")
        hint = (" Options are fixed when a loss is traced: pass a Python number, closed "
                "over or static (jax.jit(f, static_argnames=...)), not a traced array.")
        if isinstance(value, (str, bytes)):  # (float() would parse "0.1": a typo unseen)
            raise TypeError(f"`{name}` must be a Python number, got str {value!r}.")
        if hasattr(value, "shape"):
            _check_array_option(name, value, hint)
        try:
            # numpy scalars and 0-d host arrays.  (The method, not float(): inside a user's
            # tf.function AutoGraph turns float(x) of a tensor into a cast, a tensor again,
            # which the finiteness test below then refused as "must be finite, got
            # <tf.Tensor ... numpy=2.0>")
            value = value.__float__()
        except (TypeError, ValueError, AttributeError):
            # (a traced value: jax.jit's tracer, a symbolic tf.Tensor)
            raise TypeError(
                f"`{name}` must be a Python number, got {type(value).__name__}."
                f"{hint if hasattr(value, 'shape') else ''}"
            ) from None
    # comparisons, not math.isfinite: torch.compile traces a float option that changed
    # between calls as a symbolic float, which comparisons take and math.isfinite does not
    if not -math.inf < value < math.inf:
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    return float(value)


def check_positive(name: str, value: Any) -> float:
    v = _number(name, value)
    if v <= 0:
        raise ValueError(f"`{name}` must be > 0, got {value!r}.")
    return v


def check_nonnegative(name: str, value: Any) -> float:
    v = _number(name, value)
    if v < 0:
        raise ValueError(f"`{name}` must be >= 0, got {value!r}.")
    return v


def check_unit_interval(name: str, value: Any) -> float:
    v = _number(name, value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"`{name}` must lie in [0, 1], got {value!r}.")
    return v


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        refuse_boolean(name, value, "an integer")
        try:
            iv = int(value)
        except OverflowError:  # (inf)
            raise TypeError(f"`{name}` must be an integer, got {value!r}.") from None
        except (TypeError, ValueError):
            raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}.") from None
        if iv != value:
            raise TypeError(f"`{name}` must be an integer, got {value!r}.")
        value = iv
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1, got {value!r}.")
    return value


def fmt_shape(shape: tuple[Any, ...]) -> str:
    inner = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _dims_equal(a: Any, b: Any) -> bool:
    # an unknown (None) dimension of a traced TensorFlow tensor matches anything
    return a is None or b is None or a == b


def check_same_shape(
    name_a: str, shape_a: tuple[Any, ...], name_b: str, shape_b: tuple[Any, ...]
) -> None:
    if shape_a == shape_b:  # the common case, without a generator
        return
    if len(shape_a) != len(shape_b) or not all(map(_dims_equal, shape_a, shape_b)):
        raise ValueError(
            f"`{name_a}` has shape {fmt_shape(shape_a)} but `{name_b}` has shape "
            f"{fmt_shape(shape_b)}; they must match exactly (unilosses never broadcasts one "
            f"against the other: an (N, 1) against an (N,) would silently give an (N, N) loss). "
            f"Reshape one of them, e.g. with a squeeze or reshape."
        )


def check_broadcastable(
    name: str, shape: tuple[Any, ...], target: tuple[Any, ...], what: str
) -> None:
    """``shape`` must broadcast to ``target`` without changing it."""
    ok = len(shape) <= len(target) and all(
        d == 1 or _dims_equal(d, t) for d, t in zip(reversed(shape), reversed(target))
    )
    if not ok:
        raise ValueError(
            f"`{name}` has shape {fmt_shape(shape)}, which does not broadcast to {what} "
            f"{fmt_shape(target)}; give it that shape or one that broadcasts to it "
            f"(size-1 or missing leading dimensions)."
        )


def as_index(value: Any) -> Any:
    """A NumPy integer (from an array's ``argmax``, a config read with NumPy) as the Python int
    it holds, as NumPy and the frameworks take it for an axis; anything else unchanged, for
    the caller's own check."""
    return int(value) if isinstance(value, np.integer) else value


def axes_option(name: str, value: Any) -> int | tuple[int, ...] | None:
    """An option naming the axes of one value (Dice, Tversky, RMSE), checked where a front end
    is built: None, an int or a tuple (or list) of ints, NumPy integers as the ints they hold
    (which a saved config's JSON takes)."""
    if value is None:
        return None
    axes = tuple(map(as_index, value)) if isinstance(value, (list, tuple)) else as_index(value)
    for a in axes if isinstance(axes, tuple) else (axes,):
        if isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(f"`{name}` must be None, an int or a tuple of ints, got {value!r}.")
    return axes  # type: ignore[no-any-return]


def normalize_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    axis = as_index(axis)
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"`{name}` must be an int, got {type(axis).__name__}.")
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"`{name}`={axis} is out of range for predictions with {ndim} dimension(s); "
            f"use a value in [{-ndim}, {ndim - 1}]."
        )
    return axis % ndim


def host_shape(x: Any) -> tuple[Any, ...]:
    """The shape of an array argument, or of the array a Python list (or number) stands for,
    before any conversion; () for what has none (a ragged list: the conversion refuses it)."""
    shape = getattr(x, "shape", None)
    if shape is not None:
        return tuple(shape)
    if isinstance(x, (list, tuple)):
        try:
            return tuple(np.shape(x))
        except ValueError:
            return ()
    return ()


def reduced_axis(axis: Any, x: Any, name: str) -> int:
    """``axis`` of the argument ``x`` (named ``name``) over which a loss reduces (its classes,
    its vector), non-negative; a 0-d ``x``, which has none, is refused (NumPy and torch would
    reduce a 0-d array over "axis 0", JAX and TensorFlow raise their own errors)."""
    ndim = len(host_shape(x))
    if ndim == 0:
        raise ValueError(
            f"`{name}` is 0-d, but this loss reduces over its `axis`={axis!r} (the classes, "
            f"or the vector); give it at least one axis, e.g. x.reshape(1, -1) for one sample."
        )
    ax = normalize_axis(axis, ndim)
    # torch.compile(loss, dynamic=True) traces an int argument of the loss, the axis among
    # them, as a symbolic integer, which array_api_compat's squeeze sorts (a graph break);
    # compared with each axis it becomes that axis (one graph per axis, as the shapes differ)
    # (from the last axis down: the default -1 is met first)
    for a in range(ndim - 1, 0, -1):
        if ax == a:
            return a
    return 0


def normalize_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    """``axis`` (None: all axes, an int or a tuple of ints) as sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)
    out = []
    for a in map(as_index, axes):
        if isinstance(a, bool) or not isinstance(a, int):
            raise TypeError(f"`axis` must be None, an int or a tuple of ints, got {axis!r}.")
        if not -ndim <= a < ndim:
            raise ValueError(f"`axis`={axis!r} is out of range for predictions with {ndim} "
                             f"dimension(s).")
        out.append(a % ndim)
    # compared pair by pair, not through set() and sorted(): torch.compile traces an axis
    # given as an argument as a symbolic integer, which it compares (guarding on the
    # answer) but refuses to hash or sort by
    ordered: list[Any] = []
    for a in out:
        k = len(ordered)
        while k and ordered[k - 1] > a:
            k -= 1
        if k and ordered[k - 1] == a:
            raise ValueError(f"`axis`={axis!r} repeats an axis.")
        ordered.insert(k, a)
    return tuple(ordered)


def size_of(shape: tuple[Any, ...]) -> int | None:
    """The number of elements of ``shape``; None if a dimension is unknown (traced TF)."""
    return None if any(d is None for d in shape) else math.prod(shape)
