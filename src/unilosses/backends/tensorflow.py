"""TensorFlow adapter: a small array-API namespace over ``tf`` plus TensorFlow's fused ops.

TensorFlow has no array-API namespace of its own: ``tf.experimental.numpy`` defaults to float64,
lacks ``astype``/``clip`` keywords and needs NumPy behaviour switched on for the whole process,
which would change the user's program.  So :class:`TensorflowNamespace` implements just the
functions the losses and ``_core`` call, directly on ``tf`` ops.  TensorFlow never promotes
dtypes; ``_core.prepare`` casts targets and weights to the computation dtype, and everything
here that accepts a Python scalar builds it in the other operand's dtype.

This module is imported only once a TensorFlow tensor has been seen (or the backend is asked
for by name), so ``import unilosses`` never imports TensorFlow.
"""

from __future__ import annotations

import builtins
import math
from typing import Any

import ml_dtypes
import numpy as np
import tensorflow as tf

from . import _tf_kernels
from ._base import Adapter, Array
from ._tf_kernels import _record  # which tensors a GradientTape watches (None: unknown)
from ._tf_kernels import in_xla as _in_xla

# A full float32 reduction of an input under XLA (tf.function(jit_compile=True), CPU) is
# accumulated almost serially: the sum of 1.6e7 uniform numbers is off by ~40 eps (5e-6
# relative).  XLA merges a reduce of a reduce into one, so "sum rows, then sum the row sums"
# changes nothing; instead the flattened array is folded in half _FOLDS times (split and add:
# elementwise, kept in that order) and the 2**-_FOLDS as long remainder is reduced, ~1 eps.
# Eager and plain-graph kernels (Eigen, CUB) already reduce pairwise, so the fold is used only
# while tracing for XLA, and only for large or unknown sizes (in a plain tf.function each fold
# is an op that writes its half out: mse at 1e6 took 1.4-1.5x as long folded).
_FOLDS = 8
_FOLD_ABOVE = 1 << 15
#: from this many elements an eager clip of logits to +-max/4 is replaced by a bound's read
#: where it shows the clip changes nothing (below, the clip is one small op)
_BOUND_CHECK_MIN = 1 << 16


def _known(shape: tuple[Any, ...]) -> bool:
    return all(d is not None for d in shape)


class _Shape(tuple):  # type: ignore[type-arg]
    """A static shape with unknown (None) dimensions, carrying the runtime shape alongside.

    ``_core`` reads shapes as tuples (None = unknown, as the validators expect) and hands them
    back to ``broadcast_to``; under a ``tf.function`` input signature with None dimensions the
    tuple alone cannot say how far to broadcast, so slices and concatenations keep the dynamic
    shape in step.  Two shapes with unknown dimensions are never known to be equal, so a mask
    whose unknown dimension turns out to be 1 at run time is still broadcast.
    """

    dynamic: Any

    def __new__(cls, dims: Any, dynamic: Any) -> Any:
        dims = tuple(dims)
        if _known(dims):
            return dims
        self = super().__new__(cls, dims)
        self.dynamic = dynamic
        return self

    def __getitem__(self, i: Any) -> Any:
        out = tuple.__getitem__(self, i)
        return _Shape(out, self.dynamic[i]) if isinstance(i, slice) else out

    def __add__(self, other: Any) -> Any:
        return _Shape(tuple(self) + tuple(other), tf.concat([self.dynamic, _dyn(other)], 0))

    def __radd__(self, other: Any) -> Any:
        return _Shape(tuple(other) + tuple(self), tf.concat([_dyn(other), self.dynamic], 0))

    def __eq__(self, other: Any) -> bool:
        return False

    def __ne__(self, other: Any) -> bool:
        return True

    __hash__ = tuple.__hash__


def _dyn(shape: Any) -> Any:
    if isinstance(shape, _Shape):
        return shape.dynamic
    return tf.constant(tuple(shape), dtype=tf.int32, shape=(len(shape),))


def _static_shape(x: Array) -> tuple[Any, ...]:
    dims = tuple(x.shape)
    return dims if _known(dims) else _Shape(dims, tf.shape(x))


try:  # the eager tensors' type, without making one (that would start TensorFlow's runtime at
    # import, after which a program can no longer configure its devices)
    from tensorflow.python.framework.ops import EagerTensor as _EagerTensor
except ImportError:  # pragma: no cover - another TensorFlow: no eager fast paths
    class _EagerTensor:  # type: ignore[no-redef]
        pass


def _unrecorded(x: Array) -> bool:
    """Eagerly, whether ``x`` is an eager tensor that no tape records (a variable may be
    watched by any tape that reads it, and cannot be asked: False)."""
    return (_record is not None and type(x) is _EagerTensor and tf.executing_eagerly()
            and not _record.should_record_backprop([x]))


def _watched(x: Array) -> bool:
    """Eagerly, whether ``x`` is an eager tensor that a tape records."""
    return (_record is not None and type(x) is _EagerTensor and tf.executing_eagerly()
            and _record.should_record_backprop([x]))


#: eager constants by (value, sign, dtype): eagerly a ``tf.constant`` of a Python number is a
#: conversion of its own, which on tiny inputs costs as much as the op it feeds
_CONSTANTS: dict[tuple[Any, float, Any], Array] = {}


def _constant(value: Any, dtype: Any) -> Array:
    """``tf.constant(value, dtype)``, made once per value and dtype eagerly (a graph makes its
    own: an eager tensor there would be captured as an input)."""
    if ((type(value) is not float and type(value) is not int) or value != value
            or not tf.executing_eagerly()):
        return tf.constant(value, dtype=dtype)
    key = (value, math.copysign(1.0, value), dtype)  # (0.0 and -0.0 apart)
    c = _CONSTANTS.get(key)
    if c is None:
        c = tf.constant(value, dtype=dtype)
        if len(_CONSTANTS) < 1024:
            _CONSTANTS[key] = c
    return c


_CLIP = tf.raw_ops.ClipByValue


def _clipped(x: Array, lo: Array, hi: Array) -> Array:
    """``x`` clipped to [lo, hi] (tensors of its dtype): ``minimum`` and ``maximum``, whose
    gradients go to ``x`` on a tie, so the clip passes it on the closed interval and gives 0
    outside (the generic double select's rule; at NaN too); eagerly, where no tape records
    ``x``, the one ``ClipByValue`` op (whose gradient would pass a NaN's on)."""
    if _unrecorded(x):
        return _CLIP(t=x, clip_value_min=lo, clip_value_max=hi)
    return tf.maximum(tf.minimum(x, hi), lo)


def _axes_key(axis: Any, rank: int) -> tuple[int, ...] | None:
    """The axes of a reduction as non-negative ints, or None (another kind of axis)."""
    if axis is None:
        return tuple(range(rank))
    if isinstance(axis, (int, np.integer)):
        return (int(axis) % rank,) if rank else (int(axis),)
    if isinstance(axis, (tuple, list)) and all(isinstance(a, (int, np.integer)) for a in axis):
        return tuple(int(a) % rank for a in axis)
    return None


#: eager int32 constants of reduction axes, by the axes
_AXES: dict[tuple[int, ...], Array] = {}


def _eager_reduce(op: Any, x: Array, axis: Any, keepdims: bool) -> Array | None:
    """``op`` (``tf.raw_ops.Sum`` or ``Mean``) of an eager tensor over ``axis``, its axes a
    constant made once; None in a graph.  Eagerly tf.reduce_sum's and tf.reduce_mean's
    wrappers build the axes (a constant from a NumPy range) and dispatch, at 2-3x the op's
    own time on small inputs."""
    if not tf.executing_eagerly():
        return None
    key = _axes_key(axis, len(x.shape))
    if key is None:
        return None
    axes = _AXES.get(key)
    if axes is None:
        axes = tf.constant(key, dtype=tf.int32, shape=(len(key),))
        if len(_AXES) < 256:
            _AXES[key] = axes
    return op(input=x, axis=axes, keep_dims=keepdims)


_EUCLIDEAN_NORM = tf.raw_ops.EuclideanNorm


def _read_bounded(x: Array) -> bool:
    """Whether every |x_i| <= max/4 and none is NaN (then clipping x to +-max/4 is the
    identity), by one eager read: the Euclidean norm is finite only if every
    |x_i| < sqrt(max) < max/4 and none is NaN."""
    norm = _eager_reduce(_EUCLIDEAN_NORM, x, None, False)
    return norm is not None and math.isfinite(norm.numpy())


def _scalar_like(value: Any, other: Any) -> Any:
    return value if hasattr(value, "shape") else _constant(value, other.dtype)


_SELECT = tf.raw_ops.Select

#: eager constants of a Python number in a small shape, by (value, sign, dtype, shape): at
#: most 128 of at most 4096 elements (4 MB in float64), whatever shapes a program passes
_FILLED: dict[tuple[Any, float, Any, tuple[int, ...]], Array] = {}


def _filled(value: Any, dtype: Any, shape: tuple[int, ...]) -> Array | None:
    if (type(value) is not float and type(value) is not int) or value != value:
        return None
    if not shape:
        return _constant(value, dtype)
    key = (value, math.copysign(1.0, value), dtype, shape)
    c = _FILLED.get(key)
    if c is None:
        c = tf.fill(shape, _constant(value, dtype))
        # kept eagerly only: a traced function that captured eager arguments (targets, a
        # mask closed over) takes the eager select too, and its fill belongs to that graph
        if tf.executing_eagerly() and len(_FILLED) < 128 and math.prod(shape) <= 4096:
            _FILLED[key] = c
    return c


def _eager_select(cond: Array, x1: Any, x2: Any) -> Array | None:
    """``where`` as the op ``Select``, eagerly on small inputs whose arguments all have the
    condition's shape (a Python number: a constant of that shape, made once), or None.
    ``tf.where`` is ``SelectV2``, whose gradient reduces each branch's gradient back to its
    broadcast shape, Python-level work that on small inputs costs more than the op
    (``rmse``'s safe square root, two selects, with backward: 4.1 against 2.4 ms for the
    same with ``Select``); ``Select``'s gradient is its two selects, the same numbers."""
    shape = cond.shape
    if cond.dtype != tf.bool or shape.num_elements() >= _BOUND_CHECK_MIN:
        return None
    one, two = type(x1) is _EagerTensor, type(x2) is _EagerTensor
    if one:
        if x1.shape != shape or (two and (x2.dtype != x1.dtype or x2.shape != shape)):
            return None
        if not two:
            x2 = _filled(x2, x1.dtype, tuple(shape))
    elif two:
        if x2.shape != shape:
            return None
        x1 = _filled(x1, x2.dtype, tuple(shape))
    else:
        return None
    if x1 is None or x2 is None:
        return None
    return _SELECT(condition=cond, x=x1, y=x2)


def _folds(rows: int, row: int) -> int:
    """How many times ``rows`` rows of ``row`` elements fold in half without a remainder,
    at most _FOLDS, or 0 where the rows left would be long (over 2**14 elements)."""
    folds = 0
    while folds < _FOLDS and rows % 2 == 0:
        rows //= 2
        folds += 1
    return folds if folds == _FOLDS or rows * row <= 1 << 14 else 0


def _folded_sum(x: Array) -> Array:
    n = x.shape.num_elements()
    row = x.shape[-1] if (x.shape.rank or 0) >= 2 else 1
    k = 1 << _FOLDS
    folds, rest = _FOLDS, None
    whole = 0 if n is None or n % k == 0 else _folds(n // row, row)
    if n is None:  # unknown size: pad to a multiple of k (a copy)
        flat = tf.reshape(x, [-1])
        t = tf.reshape(tf.pad(flat, [[0, (-tf.size(flat)) % k]]), [k, -1])
    elif n % k and not whole and n // row >= k and 1 < row <= 1 << 14:
        # rows that do not halve (1000 x 1000, 52631 x 19): each row summed first, which
        # reads the summed expression once, then the row sums folded (a remainder's second
        # reader is then of that small array).  In one process, forward: anchor focal on
        # logits at (1, 52631, 19) 0.53, BCE at 1000 x 1000 0.74-0.77 of the remainder's time
        return _folded_sum(tf.reduce_sum(tf.reshape(x, [-1, row]), axis=-1))
    elif not whole:
        # fold the largest multiple of k, sum the rest apart (slices fuse, a pad is a copy)
        flat = tf.reshape(x, [-1])
        m = n - n % k
        t, rest = tf.reshape(flat[:m], [k, -1]), (flat[m:] if m < n else None)
    else:
        # whole rows of the last axis, folded as often as their count halves, with no
        # remainder, whose second reader makes XLA write the summed expression out (in-process
        # at 1e6 elements, forward: mse 0.73, BCE 0.77, focal on logits 0.91 of the
        # remainder's time).  Rows are kept whole: a fold across them cuts across operands
        # broadcast along them (the anchor focal loss at 50000 x 20 took twice as long); and
        # rows left long are slow to reduce (focal on logits at 1000 x 1000, folded 3 times
        # into rows of 125,000: 7x; at 62,500: 1.07-1.13; at 15,625: 0.73-0.82)
        folds = whole
        t = tf.reshape(x, [1 << folds, -1])
    for _ in range(folds):
        top, bottom = tf.split(t, 2)
        t = top + bottom
    s = tf.reduce_sum(t)
    return s if rest is None else s + tf.reduce_sum(rest)


@tf.custom_gradient
def _compensated_log1p(x: Array) -> tuple[Array, Any]:
    u = 1.0 + x
    # c = (u - 1) - x is the rounding error of u, exact where it matters (|x| < 1, Sterbenz;
    # beyond, c / u is below an ulp of log u), and log(1 + x) = log(u - c) = log(u) - c / u
    # + O(c^2).  The derivative is log1p's own, 1 / (1 + x), not the compensation's: backward
    # stays one division
    def grad(dy: Array) -> Array:
        return dy / u
    return tf.math.log(u) - ((u - 1.0) - x) / u, grad


def _needs_fold(x: Array) -> bool:
    if not _in_xla() or x.dtype not in (tf.float32, tf.float16, tf.bfloat16):
        return False
    n = x.shape.num_elements()
    return n is None or n > _FOLD_ABOVE


def _closed_form_sum(xp: Any, elementwise: Any, value_and_grad: Any, scale: float,
                     *arrays: Array) -> Array:
    """scale * sum(v) with a ``tf.custom_gradient``: the closed form's value forward, its
    derivative in the first array recomputed backward (XLA fuses each into one pass, where
    the composition's gradient walks every intermediate).

    Traced only: the other arrays' gradients (soft targets being differentiated, say) come
    from the composition's own, which a graph prunes when nothing uses them; eagerly TF would
    compute them all.
    """

    @tf.custom_gradient
    def total(*a: Array) -> Any:
        out = xp.sum(value_and_grad(*a, grad=False)[0]) * scale

        def grad(upstream: Array) -> Any:
            gx = upstream * scale * value_and_grad(*a, value=False)[1]
            rest = [x for x in a[1:] if x.dtype.is_floating]
            if not rest:
                return (gx,) + (None,) * (len(a) - 1)
            with tf.GradientTape() as tape:
                tape.watch(rest)
                composed = xp.sum(elementwise(*a)) * scale
            grads = iter(tape.gradient(composed, rest, output_gradients=upstream))
            return (gx,) + tuple(next(grads) if x.dtype.is_floating else None for x in a[1:])

        return out, grad

    return total(*arrays)


def _eager_closed_form_sum(xp: Any, value_and_grad: Any, scale: float,
                           *arrays: Array) -> Array | None:
    """:func:`_closed_form_sum` eagerly, where no tape watches the other arrays (None where
    one does, or where that cannot be read): the closed form's value forward and, under a
    tape, its derivative recomputed backward, in place of the composition's recorded ops."""
    # variables read as tensors (a tape that watches a variable records the read), which the
    # tape can be asked about
    arrays = tuple(a if type(a) is _EagerTensor else tf.convert_to_tensor(a) for a in arrays)
    x, rest = arrays[0], arrays[1:]
    others = [a for a in rest if a.dtype.is_floating]
    if _record is None or (others and _record.should_record_backprop(others)):
        return None
    if not _record.should_record_backprop([x]):
        return xp.sum(value_and_grad(*arrays, grad=False)[0]) * scale

    @tf.custom_gradient
    def total(a: Array) -> Any:
        out = xp.sum(value_and_grad(a, *rest, grad=False)[0]) * scale

        def grad(upstream: Array) -> Array:
            # recomputed from the inputs (not kept from forward): a tape around this one
            # differentiates it again
            return upstream * scale * value_and_grad(a, *rest, value=False)[1]

        return out, grad

    return total(x)


def _closed_form_elementwise(elementwise: Any, value_and_grad: Any,
                             *arrays: Array) -> Array | None:
    """``elementwise(*arrays)`` with a ``tf.custom_gradient``: the first array's derivative
    from the closed form, recomputed from the inputs backward (a tape around that one, or a
    graph's second gradient, differentiates it again), the others' (soft targets being
    differentiated, say) from the composition's own.  Eagerly None where no tape records the
    first array (the composition records nothing more then)."""
    if tf.executing_eagerly():
        arrays = tuple(a if type(a) is _EagerTensor else tf.convert_to_tensor(a)
                       for a in arrays)
        if _record is None or not _record.should_record_backprop(arrays[:1]):
            return None
        # eagerly, the others' gradients only where a tape records them
        others = [a.dtype.is_floating and _record.should_record_backprop([a])
                  for a in arrays[1:]]
    else:  # (a graph prunes those nothing uses)
        others = [a.dtype.is_floating for a in arrays[1:]]

    @tf.custom_gradient
    def loss(*a: Array) -> Any:
        def grad(upstream: Array) -> Any:
            gx = upstream * value_and_grad(*a, value=False)[1]
            rest = [x for x, wanted in zip(a[1:], others) if wanted]
            if not rest:
                return (gx,) + (None,) * (len(a) - 1)
            with tf.GradientTape() as tape:
                tape.watch(rest)
                composed = elementwise(*a)
            grads = iter(tape.gradient(composed, rest, output_gradients=upstream))
            return (gx,) + tuple(next(grads) if wanted else None for wanted in others)

        return value_and_grad(*a, grad=False)[0], grad

    return loss(*arrays)


@tf.custom_gradient
def _watched_gather(x: Array, indices: Array) -> Any:
    """``tf.gather`` along the last axis (the others batch axes), differentiated eagerly by a
    select: TensorFlow's own gradient of a batched gather is some 60 small eager ops (sparse
    CE on probabilities, 16 elements, with backward: 3x Keras's time, nearly all of it
    there); here a mask of the picked entries and one ``where``, which leaves the others 0
    whatever the cotangent holds (inf included), as a scatter does."""
    out = tf.gather(x, indices, axis=-1, batch_dims=indices.shape.rank - 1)

    def grad(upstream: Array) -> Any:
        classes = tf.range(tf.shape(x, out_type=indices.dtype)[-1], dtype=indices.dtype)
        zero = tf.zeros([], upstream.dtype)
        if indices.shape[-1] == 1:  # (a pick, as the losses take it)
            return tf.where(tf.equal(classes, indices), upstream, zero), None
        picked = tf.where(tf.equal(classes, indices[..., None]), upstream[..., None], zero)
        return tf.reduce_sum(picked, axis=-2), None

    return out, grad


#: eager rows of class indices, 0 .. C - 1, by (C, dtype)
_CLASSES: dict[tuple[int, Any], Array] = {}


def _watched_pick(x: Array, indices: Array) -> Array:
    """``take_along_axis`` of one index per row (``indices`` (..., 1)) of a small ``x`` that a
    tape records: the row's entries selected under the mask ``classes == index`` and summed
    along it.  The gradients, a select and a broadcast, give the picked entry the cotangent
    and the others 0 whatever it holds, as :func:`_watched_gather`, whose custom gradient
    costs more Python on small inputs (sparse CE on probabilities, 16 elements, with
    backward: the pick 3.4 ms against 2.2 here, in one interleaved timing).  An index out of
    range picks 0 (the losses pass clamped labels)."""
    key = (x.shape[-1], indices.dtype)
    classes = _CLASSES.get(key)
    if classes is None:
        classes = tf.range(key[0], dtype=indices.dtype)
        if len(_CLASSES) < 64:
            _CLASSES[key] = classes
    zeros = _filled(0, x.dtype, tuple(x.shape))
    picked = _SELECT(condition=tf.raw_ops.Equal(x=classes, y=indices), x=x, y=zeros)
    return _eager_reduce(tf.raw_ops.Sum, picked, -1, True)


class TensorflowNamespace:
    """The array-API functions unilosses uses, over ``tf`` (not a general namespace)."""

    __name__ = "unilosses.backends.tensorflow"

    float16 = tf.float16
    bfloat16 = tf.bfloat16
    float32 = tf.float32
    float64 = tf.float64
    int32 = tf.int32
    int64 = tf.int64
    bool = tf.bool

    # -- creation and dtypes -------------------------------------------------------------------
    @staticmethod
    def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: Any = None) -> Array:
        return tf.convert_to_tensor(obj, dtype=dtype)

    @staticmethod
    def astype(x: Array, dtype: Any, /, *, copy: builtins.bool = True, device: Any = None) -> Array:
        # tensors are immutable: no copy is ever needed
        return x if x.dtype == dtype else tf.cast(x, dtype)

    @staticmethod
    def zeros_like(x: Array, /, *, dtype: Any = None, device: Any = None) -> Array:
        return tf.zeros_like(x, dtype=dtype)

    @staticmethod
    def ones_like(x: Array, /, *, dtype: Any = None, device: Any = None) -> Array:
        return tf.ones_like(x, dtype=dtype)

    @staticmethod
    def finfo(dtype: Any) -> Any:
        # ml_dtypes (a TensorFlow dependency) also knows bfloat16
        return ml_dtypes.finfo(tf.as_dtype(dtype).as_numpy_dtype)

    @staticmethod
    def isdtype(dtype: Any, kind: Any) -> builtins.bool:
        if isinstance(kind, tuple):
            return any(TensorflowNamespace.isdtype(dtype, k) for k in kind)
        dtype = tf.as_dtype(dtype)
        if not isinstance(kind, str):
            return dtype == tf.as_dtype(kind)
        if kind == "bool":
            return dtype == tf.bool
        if kind == "signed integer":
            return dtype.is_integer and not dtype.is_unsigned
        if kind == "unsigned integer":
            return dtype.is_integer and dtype.is_unsigned
        if kind == "integral":
            return dtype.is_integer
        if kind == "real floating":
            return dtype.is_floating
        if kind == "complex floating":
            return dtype.is_complex
        if kind == "numeric":
            return dtype.is_integer or dtype.is_floating or dtype.is_complex
        raise ValueError(f"unknown dtype kind {kind!r}")

    # -- elementwise ---------------------------------------------------------------------------
    abs = staticmethod(tf.math.abs)
    sign = staticmethod(tf.math.sign)
    exp = staticmethod(tf.math.exp)
    expm1 = staticmethod(tf.math.expm1)
    log = staticmethod(tf.math.log)
    log1p = staticmethod(tf.math.log1p)
    sqrt = staticmethod(tf.math.sqrt)
    sinh = staticmethod(tf.math.sinh)
    tanh = staticmethod(tf.math.tanh)
    atan = staticmethod(tf.math.atan)
    isfinite = staticmethod(tf.math.is_finite)

    @staticmethod
    def copysign(x1: Array, x2: Array, /) -> Array:
        # the sign bit of x2: x2 < 0, or -0.0 (1 / -0.0 = -inf); NaN counts as positive
        a = tf.math.abs(x1)
        return tf.where((x2 < 0) | (tf.math.reciprocal(x2) < 0), -a, a)

    @staticmethod
    def maximum(x1: Any, x2: Any, /) -> Array:
        if not hasattr(x1, "shape"):
            x1, x2 = x2, x1  # maximum is symmetric; put the array first
        return tf.math.maximum(x1, _scalar_like(x2, x1))

    @staticmethod
    def minimum(x1: Any, x2: Any, /) -> Array:
        if not hasattr(x1, "shape"):
            x1, x2 = x2, x1
        return tf.math.minimum(x1, _scalar_like(x2, x1))

    @staticmethod
    def where(cond: Array, x1: Any, x2: Any, /) -> Array:
        if type(cond) is _EagerTensor:
            out = _eager_select(cond, x1, x2)
            if out is not None:
                return out
        if not hasattr(x1, "shape"):
            x1 = _scalar_like(x1, x2)
        return tf.where(cond, x1, _scalar_like(x2, x1))

    # -- shapes --------------------------------------------------------------------------------
    @staticmethod
    def expand_dims(x: Array, /, *, axis: int = 0) -> Array:
        return tf.expand_dims(x, axis)

    @staticmethod
    def squeeze(x: Array, /, axis: Any) -> Array:
        return tf.squeeze(x, axis)

    @staticmethod
    def broadcast_to(x: Array, /, shape: Any) -> Array:
        return tf.broadcast_to(x, _dyn(shape))

    # -- reductions ----------------------------------------------------------------------------
    @staticmethod
    def sum(x: Array, /, *, axis: Any = None, dtype: Any = None,
            keepdims: builtins.bool = False) -> Array:
        if dtype is not None:
            x = tf.cast(x, dtype)
        if axis is None and _needs_fold(x):
            s = _folded_sum(x)
            return tf.reshape(s, [1] * x.shape.rank) if keepdims else s
        out = _eager_reduce(tf.raw_ops.Sum, x, axis, keepdims)
        return tf.reduce_sum(x, axis=axis, keepdims=keepdims) if out is None else out

    @staticmethod
    def mean(x: Array, /, *, axis: Any = None, keepdims: builtins.bool = False) -> Array:
        if axis is None and _needs_fold(x):
            n = tf.cast(tf.size(x, out_type=tf.int64), x.dtype)
            return TensorflowNamespace.sum(x, keepdims=keepdims) / n
        out = _eager_reduce(tf.raw_ops.Mean, x, axis, keepdims)
        return tf.reduce_mean(x, axis=axis, keepdims=keepdims) if out is None else out

    @staticmethod
    def max(x: Array, /, *, axis: Any = None, keepdims: builtins.bool = False) -> Array:
        return tf.reduce_max(x, axis=axis, keepdims=keepdims)

    @staticmethod
    def all(x: Array, /, *, axis: Any = None, keepdims: builtins.bool = False) -> Array:
        return tf.reduce_all(x, axis=axis, keepdims=keepdims)


_PLAIN_REDUCE = {"mean": tf.raw_ops.Mean, "weighted_mean": tf.raw_ops.Mean,
                 "sum": tf.raw_ops.Sum, "none": None}
_LOGIT_BOUNDS = {dt: float(np.finfo(dt.as_numpy_dtype).max) / 4
                 for dt in (tf.float32, tf.float64)}


def _plain_cross_entropy(x: Array, targets: Array, axis: Any, label_smoothing: Any,
                         reduction: Any, sparse: bool, ignore_index: Any = None,
                         class_weights: Any = None, check: Any = None, *,
                         weights: Any = None, where: Any = None) -> Array | None:
    """Cross-entropy with logits on a plain eager call: 2-D logits on the CPU, classes last,
    below _BOUND_CHECK_MIN elements, int32/int64 labels (one per row, where ``sparse``: the
    sparse loss) or targets of the logits' shape and dtype (the categorical one); the clip to
    +-max/4 and the fused op itself.  Tried before any of the generic path's checks
    (``Adapter.plain``), which on small inputs cost more than the op; anything else declines
    (None) to the generic path, which converts, checks or refuses it, as it does a label out
    of range, which the sparse op refuses itself; and so are ``ignore_index``,
    ``class_weights``, ``weights`` and ``where``, which the op has not."""
    ls = label_smoothing
    if (ignore_index is not None or class_weights is not None or weights is not None
            or where is not None
            or type(reduction) is not str or reduction not in _PLAIN_REDUCE
            or (type(ls) is not float and type(ls) is not int) or not 0 <= ls <= 1
            or type(axis) is not int or (axis != -1 and axis != 1)
            or type(x) is not _EagerTensor or type(targets) is not _EagerTensor
            or x.dtype not in _LOGIT_BOUNDS or x.shape.rank != 2
            or not 0 < x.shape.num_elements() < _BOUND_CHECK_MIN or "CPU" not in x.device):
        return None
    if sparse:  # (the sparse loss: integer labels; the categorical one: targets like x)
        if (ls or (targets.dtype != tf.int32 and targets.dtype != tf.int64)
                or targets.shape.rank != 1 or targets.shape[0] != x.shape[0]):
            return None
    elif targets.dtype != x.dtype or targets.shape != x.shape:
        return None
    if _watched(x) and _read_bounded(x):
        xc = x  # (recorded, the clip's gradient costs more than the read: see bounded)
    else:
        bound = _LOGIT_BOUNDS[x.dtype]
        xc = _clipped(x, _constant(-bound, x.dtype), _constant(bound, x.dtype))
    if sparse:
        try:
            loss = _tf_kernels._SPARSE(features=xc, labels=targets)[0]
        except tf.errors.InvalidArgumentError:
            return None
    else:
        t = targets
        if ls:
            t = t * (1.0 - ls) + ls / x.shape[1]
        loss = _tf_kernels.dense_cross_entropy(xc, t)
    op = _PLAIN_REDUCE[reduction]
    return loss if op is None else _eager_reduce(op, loss, None, False)


_RELU, _SIGN, _EXP, _LOG1P = tf.raw_ops.Relu, tf.raw_ops.Sign, tf.raw_ops.Exp, tf.raw_ops.Log1p
_ADD, _SUB, _MUL = tf.raw_ops.AddV2, tf.raw_ops.Sub, tf.raw_ops.Mul


def _plain_bce_with_logits(x: Array, t: Array, label_smoothing: Any, reduction: Any, *,
                           weights: Any = None, where: Any = None) -> Array | None:
    """BCE with logits on a plain eager call that no tape records (targets of the logits'
    shape and dtype, on the CPU, below _BOUND_CHECK_MIN elements, no smoothing): the generic
    path's formula, ``(H(x) - t) x + log1p(exp(x - 2 relu(x)))`` with ``H = sign(relu(x))``,
    on the clipped logits, as the ops themselves (``tf.raw_ops``): its wrappers and the
    generic path's checks cost more than the ops on small inputs.  Under a tape the generic
    path's closed-form gradient is the faster, and it is left to that."""
    ls = label_smoothing
    if (weights is not None or where is not None
            or type(reduction) is not str or reduction not in _PLAIN_REDUCE
            or (type(ls) is not float and type(ls) is not int) or ls != 0
            or type(x) is not _EagerTensor or type(t) is not _EagerTensor
            or x.dtype not in _LOGIT_BOUNDS or t.dtype != x.dtype or t.shape != x.shape
            or not 0 < x.shape.num_elements() < _BOUND_CHECK_MIN or "CPU" not in x.device
            or not _unrecorded(x) or not _unrecorded(t)):
        return None
    bound = _LOGIT_BOUNDS[x.dtype]
    xc = _clipped(x, _constant(-bound, x.dtype), _constant(bound, x.dtype))
    r = _RELU(features=xc)
    sp = _LOG1P(x=_EXP(x=_SUB(x=xc, y=_ADD(x=r, y=r))))  # (r + r: 2 r exactly)
    loss = _ADD(x=_MUL(x=_SUB(x=_SIGN(x=r), y=t), y=xc), y=sp)
    op = _PLAIN_REDUCE[reduction]
    return loss if op is None else _eager_reduce(op, loss, None, False)


_IN_TOP_K = tf.raw_ops.InTopKV2


def _plain_in_top_k(x: Array, labels: Array, k: Any) -> Array | None:
    """``in_top_k`` on a plain eager call: the op itself on float32 scores (N, classes) on the
    CPU and int32/int64 labels (N,), whose ``tf.math`` wrapper and the generic path's checks
    cost more than the op on small inputs.  The op's rules are in_top_k's (ties in the
    label's favour; a non-finite score in the row, or a label out of range, False), as the
    generic path, which calls the op too, relies on."""
    if (type(k) is not int or not 1 <= k <= 1 << 24
            or type(x) is not _EagerTensor or type(labels) is not _EagerTensor
            or x.dtype != tf.float32 or x.shape.rank != 2 or x.shape.num_elements() == 0
            or (labels.dtype != tf.int32 and labels.dtype != tf.int64)
            or labels.shape.rank != 1 or labels.shape[0] != x.shape[0]
            or "CPU" not in x.device or "CPU" not in labels.device):
        return None
    return _IN_TOP_K(predictions=x, targets=labels, k=_constant(k, labels.dtype))


#: whole-loss kernels for plain eager calls (see ``Adapter.plain``)
PLAIN: dict[str, Any] = {"cross_entropy_with_logits": _plain_cross_entropy,
                         "binary_cross_entropy_with_logits": _plain_bce_with_logits,
                         "in_top_k": _plain_in_top_k}


class TensorflowAdapter(Adapter):
    name = "tensorflow"
    kernels = _tf_kernels.KERNELS
    plain = PLAIN

    def __init__(self) -> None:
        super().__init__(TensorflowNamespace())

    def device(self, x: Array) -> Any:
        # None: TensorFlow copies an op's inputs to the device it runs on, and host-side labels
        # (tf.data, int32 tensors, which TF keeps in host memory) next to GPU outputs are
        # ordinary TF programs, not a mistake to report
        return None

    def is_floating(self, x: Array) -> bool:
        return x.dtype.is_floating

    def is_integral(self, x: Array) -> bool:
        return x.dtype.is_integer or x.dtype == tf.bool

    def is_half(self, dtype: Any) -> bool:
        return dtype in (tf.float16, tf.bfloat16)

    def is_tracing(self, x: Array) -> bool:
        return not tf.executing_eagerly() or tf.is_symbolic_tensor(x)

    def no_gradient(self, *xs: Array) -> bool:
        return all(_unrecorded(x) for x in xs)

    def has_values(self, x: Array) -> bool:
        # (an eager tensor closed over by a tf.function holds its values)
        return not tf.is_symbolic_tensor(x)

    def bounded(self, x: Array) -> bool:
        # an eager clip is a full-size op, and its gradient five (two comparisons, an or, a
        # zeros and a select: sparse CE fwd+bwd took 2.3x tf.nn's); the norm is one read.
        # On small inputs the clip is one op, cheaper than the read, but not where a tape
        # records it: there minimum's and maximum's gradients are several eager ops each
        # (sparse CE on 16 elements, forward+backward: 1.56x the op's time clipped, 1.11
        # read)
        if self.is_tracing(x) or "CPU" not in x.device:
            return False
        n = x.shape.num_elements() or 0
        if n < _BOUND_CHECK_MIN and not (n and _watched(x)):
            return False
        return _read_bounded(x)

    def log1p(self, x: Array) -> Array:
        # under XLA (CPU, TensorFlow 2.21) log1p costs a third more than log: more than the
        # two subtractions and the division of the compensated form, which keeps log1p's
        # precision on the callers' range (1.5 eps from -1 + eps to 1e30, measured)
        return _compensated_log1p(x) if _in_xla() else tf.math.log1p(x)

    def chunked_sum(self, elementwise: Any, *arrays: Array, value_and_grad: Any = None,
                    scale: float = 1.0, columns: int = 1, blocks_only: bool = False,
                    bounds: bool = False, light: bool = False) -> Array | None:
        # traced (tf.function, jit_compile): the closed form, as JAX's custom_jvp, unless the
        # composition's derivative is light (the custom gradient is a pass of its own: BCE
        # with logits fwd+bwd measured 1.21-1.24 of tf.nn's against 1.07-1.11 composed);
        # eagerly too unless a tape watches the targets (see _eager_closed_form_sum)
        if value_and_grad is None or blocks_only:
            return None
        if tf.executing_eagerly():
            return _eager_closed_form_sum(self.xp, value_and_grad, scale, *arrays)
        if light:
            return None
        return _closed_form_sum(self.xp, elementwise, value_and_grad, scale, *arrays)

    def elementwise_closed_form(self, elementwise: Any, value_and_grad: Any,
                                *arrays: Array) -> Array | None:
        return _closed_form_elementwise(elementwise, value_and_grad, *arrays)

    # the closed forms' derivative is computed in backward, apart from the value
    recompute_derivative = True

    def shape(self, x: Array) -> tuple[Any, ...]:
        return _static_shape(x)

    unknown_dims = True

    def run_time_shape(self, x: Array, shape: tuple[Any, ...], message: str,
                       broadcast: bool = False) -> Array:
        want = tf.cast(_dyn(shape), tf.int32)
        have = tf.shape(x)
        # an unknown dimension that is 1 at run time would otherwise broadcast silently
        # ((N, 1) against (N, C) gave an (N, C) loss).  Under XLA (jit_compile) Assert
        # compiles to nothing: there the broadcast refuses a size other than 1, and the
        # reshape a 1 against another size (XLA compiles per concrete shape, so both fail
        # when compiling, naming the shapes)
        tail = want[len(shape) - len(x.shape):]
        ok = tf.equal(have, tail)
        if broadcast:
            ok = ok | tf.equal(have, 1)
        assertion = tf.debugging.Assert(tf.reduce_all(ok),
                                        [message, "got", have, "expected", want])
        with tf.control_dependencies([assertion]):
            x = tf.identity(x)
        if broadcast:
            # (under XLA the broadcast is fused into its use; elsewhere the Assert suffices,
            # where a broadcast would be a full-size copy)
            return tf.broadcast_to(x, want) if _in_xla() else x
        return tf.reshape(x, tf.shape(tf.broadcast_to(x, want)))

    def dim(self, x: Array, axis: int) -> Any:
        return tf.shape(x, out_type=tf.int64)[axis]

    def asarray(self, value: Any, *, dtype: Any = None, like: Array | None = None) -> Array:
        if like is not None and dtype is None and not hasattr(value, "shape"):
            # through NumPy, so Python floats stay float64 until prepare casts them to the
            # computation dtype (tf would round them to float32 first)
            value = np.asarray(value)
        return tf.convert_to_tensor(value, dtype=dtype)

    def astype(self, x: Array, dtype: Any) -> Array:
        return x if x.dtype == dtype else tf.cast(x, dtype)

    def index_dtype(self) -> Any:
        # int32 tensors live in host memory on TF's GPU devices; int64 stays on the device
        return tf.int64

    differentiable = True

    def from_numpy(self, a: Any) -> Array:
        return tf.constant(a)

    def to_numpy(self, x: Array) -> Any:
        return x.numpy()

    def value_and_grad(self, fn: Any, x: Array, *rest: Array) -> tuple[Array, Array]:
        with tf.GradientTape() as tape:
            tape.watch(x)  # a plain tf.Tensor is not watched by default
            out = fn(x, *rest)
        g = tape.gradient(out, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        # a gather's gradient arrives as IndexedSlices
        return out, tf.convert_to_tensor(g)

    def where(self, cond: Array, x: Any, y: Any) -> Array:
        return self.xp.where(cond, x, y)

    def safe_abs(self, x: Array) -> Array:
        # tf.abs's gradient is sign(x): 0 at 0 already, in one op instead of two
        return tf.abs(x)

    def relu(self, x: Array) -> Array:
        return tf.nn.relu(x)

    def clip(self, x: Array, lo: float | None, hi: float | None) -> Array:
        # (what tf.clip_by_value computes, called directly: eagerly its Python wrapper,
        # conversions, a name scope and a shape check, took 80 us against 17 us per op)
        if lo is None:
            return tf.minimum(x, _constant(hi, x.dtype))
        if hi is None:
            return tf.maximum(x, _constant(lo, x.dtype))
        return _clipped(x, _constant(lo, x.dtype), _constant(hi, x.dtype))

    def take_along_axis(self, x: Array, indices: Array, axis: int) -> Array:
        # tf.gather with batch_dims: a plain gather along the last axis whose gradient is a
        # scatter, compiled by XLA (tf.experimental.numpy's version builds index grids).
        rank = x.shape.rank
        axis = axis % rank
        if axis != rank - 1:
            perm = [d for d in range(rank) if d != axis] + [axis]
            back = list(range(axis)) + [rank - 1] + list(range(axis, rank - 1))
            out = self.take_along_axis(tf.transpose(x, perm), tf.transpose(indices, perm), -1)
            return tf.transpose(out, back)
        if x.dtype.is_floating and _watched(x):
            if indices.shape[-1] == 1 and x.shape.num_elements() < _BOUND_CHECK_MIN:
                return _watched_pick(x, indices)
            return _watched_gather(x, indices)
        return tf.gather(x, indices, axis=rank - 1, batch_dims=rank - 1)

    def stop_gradient(self, x: Array) -> Array:
        return tf.stop_gradient(x)

    def sigmoid(self, x: Array) -> Array:
        return tf.math.sigmoid(x)

    def softplus(self, x: Array) -> Array:
        # within 4 ulp of the exact value in float32 and float64, eager and under XLA, with the
        # gradient sigmoid(x) (measured on [-100, 100] and +-1e4); tf.math.log_sigmoid is
        # -softplus(-x) internally, so -log_sigmoid(-x) would be the same kernel
        return tf.math.softplus(x)

    def log_sigmoid(self, x: Array) -> Array:
        return tf.math.log_sigmoid(x)

    def logsumexp(self, x: Array, axis: int, keepdims: bool = False) -> Array:
        return tf.reduce_logsumexp(x, axis=axis, keepdims=keepdims)

    def log_softmax(self, x: Array, axis: int) -> Array:
        return tf.nn.log_softmax(x, axis=axis)


def load() -> Adapter:
    return TensorflowAdapter()
