"""nox sessions: the test suite once per backend (each in its own environment with only that
framework), the runtime-only install, the parity report with every framework, lint and types.
See the comments below for the environment variables CI sets."""

from __future__ import annotations

import os

import nox

# Examples: `nox -l`; `nox` (the default sessions); `nox -s "tests(torch)"`; `nox -s parity`;
# `nox -s bench -- --sizes 1e6` (the benchmark, see benchmarks/__init__.py);
# `nox -R -s lint` (reuse the environment, skip the installs).
#
# UNILOSSES_TORCH_REQUIREMENT: pip requirement for torch, default "torch".  Installed *first*,
# alone, in every session that needs it, so that nothing else resolves a default (multi-GB,
# CUDA) torch build; CI sets e.g. "torch==2.13.0" for the CPU wheel it has on disk.
# UNILOSSES_TF_REQUIREMENT: pip requirement for TensorFlow, default "tensorflow"; CI sets
# "tensorflow-cpu".
# UNILOSSES_TORCH_LOWEST_REQUIREMENT, UNILOSSES_TF_LOWEST_REQUIREMENT: the same for the
# `lowest` sessions, default "torch==2.5.1" (from PyPI a CUDA build, some GB) and
# "tensorflow==2.16.1"; e.g. "tensorflow-cpu==2.16.1".
TORCH = os.environ.get("UNILOSSES_TORCH_REQUIREMENT", "torch")
TENSORFLOW = os.environ.get("UNILOSSES_TF_REQUIREMENT", "tensorflow")
TORCH_LOWEST = os.environ.get("UNILOSSES_TORCH_LOWEST_REQUIREMENT", "torch==2.5.1")
TF_LOWEST = os.environ.get("UNILOSSES_TF_LOWEST_REQUIREMENT", "tensorflow==2.16.1")
JAX = "jax[cpu]>=0.4.31"
STRICT = "array-api-strict>=2.3"
TEST = ("pytest>=8", "pytest-xdist>=3.5", "hypothesis>=6.100")

#: what each ``tests`` session installs besides the package and TEST (numpy is a runtime
#: dependency, so the "numpy" session is the package alone)
FRAMEWORKS: dict[str, tuple[str, ...]] = {
    "numpy": (),
    "array_api_strict": (STRICT,),
    "torch": (TORCH,),
    "jax": (JAX,),
    "tensorflow": (TENSORFLOW,),
}
BACKENDS = list(FRAMEWORKS)

#: the lowest versions pyproject.toml allows, pinned, with the runtime dependencies' lowest in
#: every ``lowest`` session (NumPy 1.24 has wheels up to Python 3.11, TensorFlow 2.16 wants
#: NumPy < 2); each framework brings the peers that run on it (Keras 3.8 on TensorFlow, torch
#: and JAX; optax on JAX).  Keras 3.8: set_keras_mask (3.6), the "mean" reductions (3.7),
#: Tversky's axis (3.8); Keras 3.3's SGD in a MirroredStrategy custom loop did not sum the
#: replicas' gradients.  torch 2.5: torch.compile(fullgraph=True) of the modules fails on
#: 2.3.0 and 2.4.1 (dynamo: hasattr on a tensor's dtype/shape, the adapter's dict .get).
#: Each passes in full (2026-12-01, Python 3.11, in virtualenvs with these pins; torch 2.5.1
#: there a CUDA build run on the CPU, tensorflow-cpu 2.16.1): numpy 292 passed; jax 1754;
#: tensorflow 1804; torch 3261.  On torch 2.5 and 2.6, dynamo reports a message raised inside
#: torch.compile as "Observed exception" (the tests accept it there), and torch 2.5's inductor
#: sets flush-to-zero process-wide (tests/conftest.py turns subnormals back on per test)
MINIMUM = ("numpy==1.24.4", "array-api-compat==1.11.0")  # (pyproject: numpy>=1.24.4)
KERAS_LOWEST = "keras==3.8.0"
LOWEST: dict[str, tuple[str, ...]] = {
    "numpy": ("array-api-strict==2.3.0",),
    "torch": (TORCH_LOWEST, KERAS_LOWEST),
    "jax": ("jax[cpu]==0.4.31", "jaxlib==0.4.31", "optax==0.2.3", KERAS_LOWEST),
    "tensorflow": (TF_LOWEST, KERAS_LOWEST),
}

nox.options.sessions = ["lint", "typecheck", "minimal", "tests"]

#: quiet TensorFlow's C++ start-up logging in every session
ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}

SMOKE = """
import sys
import numpy as np
import unilosses

heavy = [m for m in ("torch", "jax", "tensorflow") if m in sys.modules]
assert not heavy, f"import unilosses imported {heavy}"
p, t = np.array([0.0, 2.0]), np.array([1.0, 2.0])
assert float(unilosses.mse(p, t)) == 0.5
assert float(unilosses.mae(p, t)) == 0.5
x, y = np.array([2.0, -1.0]), np.array([1.0, 0.0])
assert round(float(unilosses.binary_cross_entropy_with_logits(x, y)), 6) == 0.220095
print("unilosses", unilosses.__version__, "runs on NumPy alone")
"""


def _install(session: nox.Session, *requirements: str) -> None:
    """Install ``requirements``, torch's alone and first (see UNILOSSES_TORCH_REQUIREMENT)."""
    for torch in (TORCH, TORCH_LOWEST):
        if torch in requirements:
            session.install(torch)
            requirements = tuple(r for r in requirements if r != torch)
    if requirements:
        session.install(*requirements)


@nox.session
@nox.parametrize("backend", BACKENDS, ids=BACKENDS)
def tests(session: nox.Session, backend: str) -> None:
    """The test suite with one framework installed (the others' tests skip)."""
    _install(session, *FRAMEWORKS[backend], *TEST, "-e", ".")
    session.run("pytest", *session.posargs, env=ENV)


@nox.session(python="3.11")
@nox.parametrize("backend", list(LOWEST), ids=list(LOWEST))
def lowest(session: nox.Session, backend: str) -> None:
    """The test suite on the lowest versions pyproject allows, one framework a session.

    LOWEST, MINIMUM.  Not a default session: it installs old releases (torch's a CUDA build)."""
    _install(session, *LOWEST[backend], *MINIMUM, *TEST, "-e", ".")
    session.run("pytest", *session.posargs, env=ENV)


@nox.session
def minimal(session: nox.Session) -> None:
    """Runtime dependencies only: a real (non-editable) install, imports and NumPy losses."""
    # pip rather than session.install: it runs under `nox -R` too, so the installed package
    # is always the working tree's (pip rebuilds a local directory every time)
    session.run("python", "-m", "pip", "install", "--quiet", ".")
    session.run("python", "-c", SMOKE)
    session.run("unilosses", "parity", "--backends", "numpy", env=ENV)
    # no --backends: runs what is there and lists each missing backend with its pip command
    session.run("unilosses", "parity", "--losses", "mse", "--dtype", "float32", env=ENV)


@nox.session
def parity(session: nox.Session) -> None:
    """Every framework and peer library: the parity report with compilation, and its tests."""
    _install(session, TORCH, TENSORFLOW, JAX, STRICT, "optax>=0.2.3", "keras>=3.8",
             "matplotlib>=3.7", *TEST, "-e", ".")
    # the table goes to the log; the heatmap is a file CI can keep (ignored by git)
    session.run("unilosses", "parity", "--compile", "--plot", "parity-report.png",
                *session.posargs, env=ENV)
    session.run("pytest", "tests", "-k", "parity or peers or compile", env=ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """The side-by-side benchmark (``python -m benchmarks``); arguments after ``--`` go to it,
    e.g. ``nox -s bench -- --backends torch --sizes 1e6 --modes eager``.  Not a default
    session: it measures, it does not test."""
    _install(session, TORCH, TENSORFLOW, JAX, "optax>=0.2.3", "keras>=3.8", "-e", ".")
    session.run("python", "-m", "benchmarks", *session.posargs, env=ENV)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff over the sources, the tests, the benchmarks and this file."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy over the package and the benchmarks (frameworks not installed: their imports are
    untyped)."""
    session.install("mypy", "-e", ".")
    session.run("mypy", "src", "benchmarks")
