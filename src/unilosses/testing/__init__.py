"""Testing helpers for your own losses: backend parity in one assertion, and an ``xp`` fixture.

:func:`assert_backend_parity` runs a loss on every installed backend from the same NumPy
inputs and compares values and gradients with a float64 reference, with tolerances from the
dtype; the failure message says which backend, which element and by how much.
Installing unilosses also registers a pytest plugin (:mod:`unilosses.testing.plugin`) whose
``xp`` fixture runs a test once per installed backend.

Nothing here imports a framework until a backend is used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..backends import KNOWN_BACKENDS, Adapter
from ..parity.backends import MODULES, is_installed, probe
from ..parity.tolerance import deviation, tolerance

__all__ = ["Backend", "assert_backend_parity", "installed_backends"]


def installed_backends() -> list[str]:
    """The backends whose framework is installed (looked up, not imported)."""
    return [b for b in KNOWN_BACKENDS if is_installed(MODULES[b])]


class Backend:
    """A backend as a test sees it: its adapter, namespace and NumPy conversions."""

    def __init__(self, name: str) -> None:
        st = probe(name)
        if st.adapter is None:
            raise RuntimeError(f"backend {name!r} is not available: {st.reason}")
        self.name = name
        self.ad: Adapter = st.adapter
        self.xp = self.ad.xp

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    @property
    def differentiable(self) -> bool:
        return self.ad.differentiable

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        """A backend array from NumPy data (``dtype``: a NumPy dtype name or object)."""
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(dtype)
        return self.ad.from_numpy(a)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(self.ad.to_numpy(x))

    def value_and_grad(self, fn: Callable[..., Any], x: Any, *rest: Any) -> tuple[Any, Any]:
        """``fn(x, *rest)`` and its gradient with respect to ``x``, as NumPy arrays."""
        v, g = self.ad.value_and_grad(fn, x, *rest)
        return self.to_numpy(v), self.to_numpy(g)


#: central differences with a small step are accurate to about 1e-8 relative for losses smooth
#: on the scale of 1e-7 * max(1, |x|) (a Charbonnier with eps=1e-3 is); gradients checked
#: against them use at least this tolerance
FD_RTOL = 1e-6


def _central_difference(f: Callable[..., Any], x: np.ndarray, *rest: Any,
                        **kwargs: Any) -> np.ndarray:
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        xi = flat[i]
        h = 1e-7 * max(1.0, abs(xi))
        flat[i] = xi + h
        up = float(f(x, *rest, **kwargs))
        flat[i] = xi - h
        down = float(f(x, *rest, **kwargs))
        flat[i] = xi
        gflat[i] = (up - down) / (2 * h)
    return g


def _location(actual: np.ndarray, expected: np.ndarray) -> str:
    if actual.shape != expected.shape:
        return f"shape {actual.shape} instead of {expected.shape}"
    if actual.ndim == 0:
        return f"got {actual.item()!r}, expected {expected.item()!r}"
    with np.errstate(invalid="ignore"):
        diff = np.abs(actual.astype(np.float64) - expected)
    diff = np.where(np.isnan(diff), np.inf, diff)
    i = np.unravel_index(int(np.argmax(diff)), diff.shape)
    return f"worst at index {tuple(int(k) for k in i)}: got {actual[i]!r}, expected {expected[i]!r}"


def assert_backend_parity(
    fn: Callable[..., Any],
    *arrays: Any,
    backends: Sequence[str] | None = None,
    grad: bool = True,
    rtol: float | None = None,
    reference: Callable[..., Any] | None = None,
    reference_grad: Callable[..., Any] | None = None,
    kwargs: Mapping[str, Any] | None = None,
) -> None:
    """Assert that ``fn`` gives the reference value and gradient on every installed backend.

    Parameters
    ----------
    fn : callable
        The loss, ``fn(*arrays, **kwargs)`` returning a scalar (or an array for values only).
    *arrays : NumPy arrays
        Inputs, predictions first; floating arrays keep their dtype (float32 or float64), which
        sets the tolerance.  The gradient is taken with respect to the first.
    backends : names, optional
        Default: every installed backend ("numpy", "array_api_strict", "torch", "jax",
        "tensorflow").  A named backend that is not installed is an error.
    grad : bool
        Also compare gradients on the backends with autograd.
    rtol : float, optional
        Default: 256 machine epsilons of the first array's dtype (normwise: the largest
        absolute deviation over the largest expected magnitude).
    reference, reference_grad : callables, optional
        Float64 NumPy reference ``reference(*arrays64, **kwargs)`` and its gradient with
        respect to the first array.  Default: ``fn`` itself on float64 NumPy inputs, and
        central differences of the reference for the gradient, which need ``fn`` to be
        smooth near the inputs and limit the gradient tolerance to 1e-6 (float32's 3e-5 is
        larger anyway).

    Raises
    ------
    AssertionError
        Listing every backend that deviates, what (value, its dtype, or gradient), by how much
        and where.  The value must have the first array's dtype when that is floating.
    """
    kwargs = dict(kwargs or {})
    arrays64 = [np.asarray(a, np.float64) if np.issubdtype(np.asarray(a).dtype, np.floating)
                else np.asarray(a) for a in arrays]
    dtype = str(np.asarray(arrays[0]).dtype)
    floating = np.issubdtype(np.asarray(arrays[0]).dtype, np.floating)
    tol = tolerance(dtype) if rtol is None else rtol
    ref = reference if reference is not None else (
        lambda *a, **k: np.asarray(fn(*a, **k), np.float64))
    expected = np.asarray(ref(*arrays64, **kwargs), np.float64)
    expected_grad = None
    if grad and expected.ndim == 0:
        if reference_grad is not None:
            expected_grad = np.asarray(reference_grad(*arrays64, **kwargs), np.float64)
            gtol = tol
        else:
            expected_grad = _central_difference(ref, *arrays64, **kwargs)
            gtol = max(tol, FD_RTOL)
    if backends is None:
        names = installed_backends()
    else:
        names = list(backends)
        missing = [b for b in names if b not in KNOWN_BACKENDS or not is_installed(MODULES[b])]
        if missing:
            raise ValueError(f"backends not installed or unknown: {', '.join(missing)}")
    failures = []
    for name in names:
        b = Backend(name)
        xs = [b.asarray(a) for a in arrays]
        try:
            if expected_grad is not None and b.differentiable:
                value, g = b.value_and_grad(lambda *a: fn(*a, **kwargs), *xs)
            else:
                value, g = b.to_numpy(fn(*xs, **kwargs)), None
        except Exception as exc:  # a backend that raises is a failure, reported as such
            failures.append(f"{name}: raised {type(exc).__name__}: {exc}")
            continue
        if floating and np.asarray(value).dtype != dtype:
            # values alone would pass a loss that returns float64 from float32 on one backend
            failures.append(f"{name}: value of dtype {np.asarray(value).dtype}, expected "
                            f"{dtype} (the dtype of the first array)")
        d = deviation(value, expected)
        if not d.within(tol):
            failures.append(f"{name}: value off by rel {d.rel:.3g} (abs {d.abs:.3g}) > "
                            f"{tol:.3g}; {_location(np.asarray(value), expected)}")
        if g is not None and expected_grad is not None:
            dg = deviation(g, expected_grad)
            if not dg.within(gtol):
                failures.append(f"{name}: gradient off by rel {dg.rel:.3g} (abs {dg.abs:.3g}) "
                                f"> {gtol:.3g}; {_location(np.asarray(g), expected_grad)}")
    if failures:
        raise AssertionError(
            f"{getattr(fn, '__name__', fn)} differs across backends ({dtype}):\n  "
            + "\n  ".join(failures))
