"""The ``xp`` fixture: every test that takes it runs once per installed backend.

A backend that is not installed is skipped with the reason shown (``-ra``); CI installs all
of them, and the nox matrix installs one per session, so a skip there is the point.

``UNILOSSES_TEST_DEVICE=cuda`` puts the torch and jax arrays that tests make through
``Backend.asarray`` on the GPU (the others stay on the CPU), and ``assert_close`` then checks
that results are on it (``UNILOSSES_TEST_DEVICE=cuda python -m pytest tests/...``).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys

import numpy as np
import pytest

# float64 on JAX needs x64, enabled before jax creates any array.  Tests that need the default
# (x64 off) behaviour run in a subprocess.
os.environ.setdefault("JAX_ENABLE_X64", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "tensorflow")
_MODULE = {"numpy": "numpy", "array_api_strict": "array_api_strict", "torch": "torch",
           "jax": "jax", "tensorflow": "tensorflow"}
DIFFERENTIABLE = ("torch", "jax", "tensorflow")
#: where torch's and jax's test arrays live (see the module docstring)
DEVICE = os.environ.get("UNILOSSES_TEST_DEVICE", "cpu")
ON_DEVICE = ("torch", "jax")


def installed(name: str) -> bool:
    return importlib.util.find_spec(_MODULE[name]) is not None


def _torch_before(major: int, minor: int) -> bool:
    """Whether the torch imported in this process is older than ``major.minor``."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    version = tuple(int(v) for v in re.findall(r"\d+", torch.__version__)[:2])
    return version < (major, minor)


def dynamo_message(text: str, pattern: str) -> bool:
    """Whether unilosses's message (``pattern``, a regex), raised inside ``torch.compile``,
    reached the user: torch 2.5 and 2.6's dynamo replace a traced ``raise``'s message with
    "Observed exception" (the call still fails)."""
    return (re.search(pattern, text) is not None
            or (_torch_before(2, 7) and "Observed exception" in text))


@pytest.fixture(autouse=True)
def _subnormals_kept():  # type: ignore[no-untyped-def]
    """torch 2.5's inductor links its CPU kernels with -ffast-math, whose loader sets
    flush-to-zero for the whole process (pytorch/pytorch#126848, fixed in 2.6): the tests
    after a compiled one then see no subnormals (Hypothesis refuses to run).  Each test starts
    with them, as a process that compiled nothing."""
    if _torch_before(2, 6):
        sys.modules["torch"].set_flush_denormal(False)
    yield


def _backend_param(name: str):  # type: ignore[no-untyped-def]
    marks = [] if installed(name) else [pytest.mark.skip(reason=f"{name} is not installed")]
    return pytest.param(name, id=name, marks=marks)


class Backend:
    """A backend under test: its adapter plus conversions used by the tests."""

    def __init__(self, name: str) -> None:
        from unilosses.backends import adapter_named

        self.name = name
        self.ad = adapter_named(name)
        self.xp = self.ad.xp
        #: whether a test made its inputs through asarray (then results must be on DEVICE)
        self.placed = False

    def __repr__(self) -> str:
        return f"Backend({self.name})"

    @property
    def differentiable(self) -> bool:
        return self.ad.differentiable

    def asarray(self, a, dtype=None):  # type: ignore[no-untyped-def]
        a = np.asarray(a)
        if dtype is not None:
            a = a.astype(dtype)
        x = self.ad.from_numpy(a)
        self.placed = True
        if DEVICE != "cpu" and self.name in ON_DEVICE:
            x = _to_device(self.name, x)
        return x

    def to_numpy(self, x):  # type: ignore[no-untyped-def]
        return self.ad.to_numpy(x)

    def value_and_grad(self, fn, x, *rest):  # type: ignore[no-untyped-def]
        v, g = self.ad.value_and_grad(fn, x, *rest)
        return self.to_numpy(v), self.to_numpy(g)

    def is_native(self, x) -> bool:  # type: ignore[no-untyped-def]
        from unilosses.backends import adapter_for

        if self.name == "numpy" and isinstance(x, np.generic):
            return True  # NumPy's reductions give NumPy scalars, as np.sum does
        return adapter_for(x) is self.ad


def _to_device(name: str, x):  # type: ignore[no-untyped-def]
    if name == "torch":
        return x.to(DEVICE)
    import jax

    return jax.device_put(x, jax.devices("gpu" if DEVICE == "cuda" else DEVICE)[0])


def device_of(name: str, x) -> str | None:  # type: ignore[no-untyped-def]
    """The device type of a torch or jax array ("cpu", "cuda"; jax's "gpu" named as torch
    names it)."""
    if name == "torch":
        return str(x.device.type)
    if name == "jax":
        (platform,) = {d.platform for d in x.devices()}
        return "cuda" if platform == "gpu" else str(platform)
    return None


@pytest.fixture(params=[_backend_param(b) for b in BACKENDS])
def xp(request) -> Backend:  # type: ignore[no-untyped-def]
    return Backend(request.param)


@pytest.fixture(params=[_backend_param(b) for b in DIFFERENTIABLE])
def ad_backend(request) -> Backend:  # type: ignore[no-untyped-def]
    """Only the backends with automatic differentiation."""
    return Backend(request.param)


def tolerance(dtype) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """rtol/atol from the dtype's machine epsilon (float16/bfloat16 compute in float32)."""
    name = str(np.dtype(dtype)) if not isinstance(dtype, str) else dtype
    eps = {"float64": np.finfo(np.float64).eps}.get(name, np.finfo(np.float32).eps)
    return {"rtol": 256 * eps, "atol": 256 * eps}


def assert_close(backend: Backend, actual, expected, dtype, *, scale: float = 1.0) -> None:  # type: ignore[no-untyped-def]
    """``actual`` is ``backend``'s array of ``dtype`` and shape of ``expected``, and close to it.

    ``scale``: multiplies the tolerance for results that are sums of many rounded terms or
    pass through a conditioning factor (each use says why).
    """
    assert backend.is_native(actual), f"result is {type(actual)}, not a {backend.name} array"
    if backend.placed and backend.name in ON_DEVICE and hasattr(
            actual, "devices" if backend.name == "jax" else "device"):
        where = device_of(backend.name, actual)
        assert where == DEVICE, f"result on {where}, inputs on {DEVICE}"
    got = backend.to_numpy(actual)
    expected = np.asarray(expected)
    assert got.shape == expected.shape, (got.shape, expected.shape)
    assert str(got.dtype) == str(np.dtype(dtype)), (got.dtype, dtype)
    tol = tolerance(dtype)
    np.testing.assert_allclose(got, expected, rtol=tol["rtol"] * scale, atol=tol["atol"] * scale)
