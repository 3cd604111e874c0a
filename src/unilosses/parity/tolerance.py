"""Tolerances and the one deviation measure every comparison of the parity report uses.

All comparisons are *normwise*: the largest absolute deviation divided by the largest
magnitude of the expected array (for a scalar loss, plain relative error).  Elementwise
relative error would call a gradient entry of 1e-30 against 0 "infinitely wrong" although it
is far below the rounding error of the entries that matter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

#: tolerances are this many machine epsilons of the computation dtype.  256 eps leaves room
#: for the rounding of a mean over tens of elements and of a few transcendental functions,
#: while a wrong formula, branch or constant is off by far more (1e-3 and up in float32).
EPS_MULTIPLE = 256

#: float64 finite differences (Ridders' extrapolation) are accurate to about 3e-11 relative
#: on the built-in cases, not to 256 float64 eps (5.7e-14): gradients checked against finite
#: differences use at least this tolerance (float32's 3.1e-5 is larger anyway)
FD_RTOL = 1e-9

#: the dtypes the report can run
DTYPES = ("float32", "float64")


def eps(dtype: str) -> float:
    return float(np.finfo(np.dtype(dtype)).eps)


def tolerance(dtype: str) -> float:
    """rtol (and atol, relative to the largest expected magnitude) for ``dtype``."""
    return EPS_MULTIPLE * eps(dtype)


@dataclass(frozen=True)
class Deviation:
    """How far ``actual`` is from ``expected``.

    ``abs``: largest absolute deviation; ``rel``: ``abs`` over the largest expected magnitude
    (``abs`` itself when the expected array is all zeros).  Positions where both hold the same
    non-finite value count as equal; a non-finite value against a finite one is ``inf``.
    """

    abs: float
    rel: float

    @property
    def worst(self) -> float:
        return self.rel

    def within(self, tol: float) -> bool:
        return self.rel <= tol

    def as_dict(self) -> dict[str, float | str]:
        return {"abs": _json_float(self.abs), "rel": _json_float(self.rel)}


ZERO = Deviation(0.0, 0.0)


def deviation(actual: Any, expected: Any) -> Deviation:
    a = np.asarray(actual)
    e = np.asarray(expected)
    if a.shape != e.shape:
        return Deviation(math.inf, math.inf)
    a = a.astype(np.float64)
    e = e.astype(np.float64)
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.where(same, 0.0, np.abs(a - e))
    diff = np.where(np.isnan(diff), math.inf, diff)
    if diff.size == 0:
        return ZERO
    dmax = float(np.max(diff))
    finite_e = np.abs(e[np.isfinite(e)])
    scale = float(np.max(finite_e)) if finite_e.size else 0.0
    rel = dmax / scale if scale > 0 else dmax
    return Deviation(dmax, rel)


def _json_float(x: float) -> float | str:
    # JSON has no inf/nan: they are written as the strings "inf" and "nan"
    return x if math.isfinite(x) else str(x)
