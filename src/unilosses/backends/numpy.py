"""NumPy adapter (through array-api-compat's NumPy namespace)."""

from __future__ import annotations

from typing import Any

import array_api_compat.numpy as xp_numpy
import numpy as np

from ._base import Adapter, Array

#: NumPy 2's promotion (NEP 50): a Python scalar takes the array's dtype even where every
#: operand is 0-d.  NumPy 1.x promotes by value only next to arrays of rank > 0, so
#: ``np.where(c, float32 0-d, 1.0)`` (the reductions' final select) gave float64 there.
_NEP50 = np.where(np.True_, np.float32(0), 0.0).dtype == np.float32


def _ml_float(dtype: Any) -> bool:
    """ml_dtypes' floats (bfloat16, float8_*: JAX's types on NumPy arrays), which NumPy's
    ``isdtype`` refuses as not its own: 16 bits or fewer, computed in float32 as float16."""
    return dtype.kind == "V" and (dtype.name == "bfloat16" or dtype.name.startswith("float8"))


class NumpyAdapter(Adapter):
    name = "numpy"

    promotes_scalars = not _NEP50

    def __init__(self) -> None:
        super().__init__(xp_numpy)

    def is_floating(self, x: Array) -> bool:
        return x.dtype.kind == "f" or _ml_float(x.dtype)

    def is_integral(self, x: Array) -> bool:
        return x.dtype.kind in "iub"

    def is_half(self, dtype: Any) -> bool:
        return dtype == np.float16 or _ml_float(dtype)

    def device(self, x: Array) -> Any:
        return "cpu"

    def asarray(self, value: Any, *, dtype: Any = None, like: Array | None = None) -> Array:
        return np.asarray(value, dtype=dtype)

    def extrema(self, x: Array) -> tuple[Any, Any] | None:
        if x.size == 0 or x.dtype == np.bool_ or np.iscomplexobj(x):
            return None
        return x.min().item(), x.max().item()

    def where(self, cond: Array, x: Any, y: Any) -> Array:
        # np.where keeps the array operand's dtype when the other is a Python scalar (NEP 50;
        # before NumPy 2 only when that operand has rank > 0: the scalar is cast here)
        if not _NEP50:
            if isinstance(y, (int, float)) and isinstance(x, (np.ndarray, np.generic)):
                y = np.asarray(y, dtype=x.dtype)
            elif isinstance(x, (int, float)) and isinstance(y, (np.ndarray, np.generic)):
                x = np.asarray(x, dtype=y.dtype)
        out = np.where(cond, x, y)
        # 0-d: a NumPy scalar, as NumPy's arithmetic and reductions give ("weighted_mean"
        # and rmse, which end in a where, returned 0-d arrays where the rest gave scalars)
        return out[()] if out.ndim == 0 else out

    def softplus(self, x: Array) -> Array:
        return np.logaddexp(x, np.zeros((), dtype=x.dtype))

    def logsumexp(self, x: Array, axis: int, keepdims: bool = False) -> Array:
        m = np.max(x, axis=axis, keepdims=True)
        m = np.where(np.isfinite(m), m, np.zeros((), dtype=x.dtype))
        out = np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True)) + m
        return out if keepdims else np.squeeze(out, axis=axis)

    def take_along_axis(self, x: Array, indices: Array, axis: int) -> Array:
        return np.take_along_axis(x, indices, axis=axis)


def load() -> Adapter:
    return NumpyAdapter()
