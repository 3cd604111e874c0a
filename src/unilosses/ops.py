"""Stable building blocks for writing your own loss once, for every backend.

Each function dispatches on its array argument exactly as the built-in losses do (the same
adapters, cached per array type), returns an array of the same framework, and is traceable
under ``jax.jit``, ``torch.compile(fullgraph=True)`` and ``tf.function(jit_compile=True)``.

Guarantees, on every backend:

* ``sigmoid``, ``log_sigmoid``, ``softplus``: no overflow for any finite input (+-1e4
  included); the gradient is the exact one (``sigmoid(x)``, ``sigmoid(-x)``) everywhere,
  including at 0, where ``abs``/``max``-based formulas give framework-dependent subgradients.
* ``logsumexp``, ``log_softmax``: shifted by the maximum along ``axis``; rows of all ``-inf``
  give ``-inf`` (logsumexp), not NaN.
* ``take_along_axis``: a gather with integer indices (``torch.gather``, ``tf.gather`` with
  ``batch_dims``, ...), differentiable with respect to ``x``.
* ``where``: either branch may be a Python scalar, built in the other's dtype and device.
* ``clip``: gradient exactly 1 on the closed interval ``[lo, hi]`` and 0 outside, identical on
  every backend (``clamp``/``maximum`` split ties differently).
* ``safe_abs``: ``|x|`` with gradient 0 at 0 (JAX's ``abs`` takes 1 there, torch's 0).
* ``safe_sqrt``: ``sqrt(x)`` for ``x >= 0`` with gradient 0 at 0 instead of ``inf`` (NaN
  stays NaN, as it does in ``safe_pow``).
* ``safe_pow``: ``a ** p`` for ``a >= 0`` with gradient 0 at 0 for every ``p > 0`` and
  ``0 ** 0 == 1``.

Examples
--------
>>> import numpy as np
>>> from unilosses import ops
>>> float(ops.softplus(np.array(1000.0)))
1000.0
>>> ops.namespace(np.ones(2)).__name__
'array_api_compat.numpy'
"""

from __future__ import annotations

from typing import Any

from .backends import Adapter, adapter_for, adapter_named

Array = Any

__all__ = [
    "adapter",
    "clip",
    "log_sigmoid",
    "log_softmax",
    "logsumexp",
    "namespace",
    "safe_abs",
    "safe_pow",
    "safe_sqrt",
    "sigmoid",
    "softplus",
    "take_along_axis",
    "where",
]


def adapter(*arrays: Any) -> Adapter:
    """The backend adapter serving ``arrays`` (NumPy's if none is an array)."""
    from ._core.dispatch import resolve

    return resolve(tuple(f"arrays[{i}]" for i in range(len(arrays))), arrays)


def namespace(*arrays: Any) -> Any:
    """The array-API namespace ``xp`` of ``arrays`` (TensorFlow's is unilosses' own)."""
    return adapter(*arrays).xp


def _ad(x: Any) -> Adapter:
    return adapter_for(x) or adapter_named("numpy")


def sigmoid(x: Array) -> Array:
    return _ad(x).sigmoid(x)


def log_sigmoid(x: Array) -> Array:
    return _ad(x).log_sigmoid(x)


def softplus(x: Array) -> Array:
    return _ad(x).softplus(x)


def logsumexp(x: Array, /, *, axis: int = -1, keepdims: bool = False) -> Array:
    return _ad(x).logsumexp(x, axis, keepdims)


def log_softmax(x: Array, /, *, axis: int = -1) -> Array:
    return _ad(x).log_softmax(x, axis)


def take_along_axis(x: Array, indices: Array, /, *, axis: int = -1) -> Array:
    return _ad(x).take_along_axis(x, indices, axis)


def where(cond: Array, x: Array | float, y: Array | float, /) -> Array:
    ad = adapter(cond, x, y)
    return ad.where(cond, x, y)


def clip(x: Array, lo: float, hi: float, /) -> Array:
    return _ad(x).clip(x, lo, hi)


def safe_abs(x: Array) -> Array:
    return _ad(x).safe_abs(x)


def safe_sqrt(x: Array) -> Array:
    return _ad(x).safe_sqrt(x)


def safe_pow(a: Array, p: float, /) -> Array:
    return _ad(a).safe_pow(a, p)
