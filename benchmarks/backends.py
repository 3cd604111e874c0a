"""Per framework: inputs, one call of a pass (eager or compiled), synchronisation, read-back.

A *step* is a zero-argument callable that runs one pass and returns its outputs (the value,
and the gradient for "fwd+bwd"), already synchronised, so that timing it times the work.
Frameworks are imported only when a backend is used.

Compiled means ``jax.jit``, ``torch.compile(backend="inductor", fullgraph=True,
dynamic=False)`` and ``tf.function(jit_compile=True)``; the arrays are always arguments of the
compiled function, never captured constants.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

BACKENDS = ("numpy", "torch", "jax", "tensorflow")
DEFAULT_BACKENDS = ("torch", "jax", "tensorflow")
MODULES = {"numpy": "numpy", "torch": "torch", "jax": "jax", "tensorflow": "tensorflow"}

COMPILERS = {
    "jax": "jax.jit",
    "torch": "torch.compile(backend='inductor', fullgraph=True, dynamic=False)",
    "tensorflow": "tf.function(jit_compile=True)",
}

Step = Callable[[], tuple[Any, Any]]


def installed(backend: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(MODULES[backend]) is not None
    except (ImportError, ValueError):
        return False


# -- arrays --------------------------------------------------------------------------------------
def to_backend(backend: str, a: np.ndarray) -> Any:
    """``a`` as the backend's array: floats stay float32; integers become the index dtype the
    framework's own losses take (int64 for torch and NumPy, int32 for jax and TensorFlow)."""
    integral = np.issubdtype(a.dtype, np.integer)
    if backend == "numpy":
        return a.astype(np.int64) if integral else a
    if backend == "torch":
        import torch

        return torch.from_numpy(np.ascontiguousarray(a.astype(np.int64) if integral else a))
    if backend == "jax":
        import jax.numpy as jnp

        return jnp.asarray(a.astype(np.int32) if integral else a)
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.constant(a.astype(np.int32) if integral else a)
    raise ValueError(f"unknown backend {backend!r}")


def nbytes(backend: str, x: Any) -> int:
    if backend == "torch":
        return int(x.numel() * x.element_size())
    if backend == "tensorflow":
        return int(np.prod(x.shape.as_list(), dtype=np.int64) * x.dtype.size)
    return int(x.nbytes)


def to_numpy(x: Any) -> np.ndarray | None:
    if x is None:
        return None
    if hasattr(x, "detach"):  # torch
        return x.detach().cpu().numpy()
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):  # tf
        return np.asarray(x.numpy())
    return np.asarray(x)


def sync(backend: str, out: Any) -> None:
    """Wait until ``out`` is computed (jax dispatches asynchronously; torch on CUDA too)."""
    if backend == "jax":
        import jax

        jax.block_until_ready(out)
    elif backend == "torch":
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()


# -- steps ---------------------------------------------------------------------------------------
def make_step(backend: str, mode: str, pass_: str, fn: Callable[..., Any],
              arrays: tuple[Any, ...]) -> Step:
    """One call of ``fn(*arrays)`` (``pass_`` "fwd") or of its value and gradient with respect
    to ``arrays[0]`` ("fwd+bwd"), eager or compiled."""
    grad = pass_ == "fwd+bwd"
    if backend == "numpy":
        if mode != "eager" or grad:
            raise NotImplementedError("numpy runs the forward pass eagerly only")
        return lambda: (fn(*arrays), None)
    if backend == "torch":
        return _torch_step(mode, grad, fn, arrays)
    if backend == "jax":
        return _jax_step(mode, grad, fn, arrays)
    if backend == "tensorflow":
        return _tf_step(mode, grad, fn, arrays)
    raise ValueError(f"unknown backend {backend!r}")


def _torch_step(mode: str, grad: bool, fn: Callable[..., Any], arrays: tuple[Any, ...]) -> Step:
    import torch

    f = fn
    if mode == "compiled":
        # a fresh dynamo cache per function: closures of one code object would otherwise
        # share the recompile limit and fall back to eager silently
        torch._dynamo.reset()
        f = torch.compile(fn, backend="inductor", fullgraph=True, dynamic=False)
    x, rest = arrays[0], arrays[1:]
    if not grad:
        def fwd() -> tuple[Any, Any]:
            with torch.no_grad():
                out = f(x, *rest)
            sync("torch", out)
            return out, None

        return fwd
    xg = x.detach().requires_grad_(True)  # a leaf sharing x's storage

    def fwd_bwd() -> tuple[Any, Any]:
        out = f(xg, *rest)
        (g,) = torch.autograd.grad(out, xg)
        sync("torch", g)
        return out.detach(), g

    return fwd_bwd


def _jax_step(mode: str, grad: bool, fn: Callable[..., Any], arrays: tuple[Any, ...]) -> Step:
    import jax

    f = jax.value_and_grad(fn) if grad else fn
    if mode == "compiled":
        f = jax.jit(f)

    def step() -> tuple[Any, Any]:
        out = f(*arrays)
        jax.block_until_ready(out)
        return out if grad else (out, None)

    return step


def _tf_step(mode: str, grad: bool, fn: Callable[..., Any], arrays: tuple[Any, ...]) -> Step:
    import tensorflow as tf

    if grad:
        def inner(x: Any, *rest: Any) -> tuple[Any, Any]:
            with tf.GradientTape() as tape:
                tape.watch(x)
                out = fn(x, *rest)
            return out, tape.gradient(out, x)
    else:
        def inner(x: Any, *rest: Any) -> tuple[Any, Any]:
            return fn(x, *rest), None

    f = tf.function(inner, jit_compile=True) if mode == "compiled" else inner
    return lambda: f(*arrays)


# -- settings ------------------------------------------------------------------------------------
def configure_threads(backend: str, threads: int) -> dict[str, Any]:
    """Set the framework's thread counts where it allows it now; return what is in force."""
    import os

    info: dict[str, Any] = {}
    if backend == "torch":
        import torch

        torch.set_num_threads(threads)
        info["torch.get_num_threads"] = torch.get_num_threads()
        info["torch.get_num_interop_threads"] = torch.get_num_interop_threads()
    elif backend == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow was initialised already (e.g. under pytest)
            pass
        info["tf.intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
        info["tf.inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    elif backend == "jax":
        import jax

        info["jax.devices"] = [str(d) for d in jax.devices()]
        info["jax_enable_x64"] = bool(jax.config.read("jax_enable_x64"))
        info["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "")
    return info


def versions() -> dict[str, str]:
    """Installed versions (read from the metadata: nothing is imported)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("unilosses", "numpy", "torch", "jax", "jaxlib", "optax", "tensorflow",
                 "tensorflow-cpu", "keras", "array-api-compat"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            pass
    return out


__all__ = ["BACKENDS", "COMPILERS", "DEFAULT_BACKENDS", "configure_threads", "installed",
           "make_step", "nbytes", "sync", "to_backend", "to_numpy", "versions"]
