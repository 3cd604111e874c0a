"""Per framework: inputs, one call of a pass (eager or compiled), synchronisation, read-back.

A *step* is a zero-argument callable that runs one pass and returns its outputs (the value,
and the gradient for "fwd+bwd"), already synchronised, so that timing it times the work.
Frameworks are imported only when a backend is used.

On ``device="cuda"`` the arrays live on the GPU (torch and jax), and a step also carries
``run`` (the pass, not waited for) and ``wait(out)``: timing then runs a sample's calls back to
back and waits once at its end, so that what is timed is the device's work, not one host-device
round trip per call (at 1.6e7 float32 elements an H200 needs some 30 us, a synchronisation
about 10).

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
DEVICES = ("cpu", "cuda")
#: the backends that run on each device
ON_DEVICE = {"cpu": BACKENDS, "cuda": ("torch", "jax")}


def to_backend(backend: str, a: np.ndarray, device: str = "cpu") -> Any:
    """``a`` as the backend's array on ``device``: floats stay float32; integers become the
    index dtype the framework's own losses take (int64 for torch and NumPy, int32 for jax and
    TensorFlow)."""
    integral = np.issubdtype(a.dtype, np.integer)
    if device not in ON_DEVICE or backend not in ON_DEVICE[device]:
        raise ValueError(f"backend {backend!r} does not run on device {device!r}")
    if backend == "numpy":
        return a.astype(np.int64) if integral else a
    if backend == "torch":
        import torch

        t = torch.from_numpy(np.ascontiguousarray(a.astype(np.int64) if integral else a))
        return t if device == "cpu" else t.to(device)
    if backend == "jax":
        import jax

        # explicit: on a machine with a GPU, jax's default device is the GPU
        platform = "gpu" if device == "cuda" else "cpu"
        return jax.device_put(a.astype(np.int32) if integral else a, jax.devices(platform)[0])
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
              arrays: tuple[Any, ...], device: str = "cpu") -> Step:
    """One call of ``fn(*arrays)`` (``pass_`` "fwd") or of its value and gradient with respect
    to ``arrays[0]`` ("fwd+bwd"), eager or compiled.  Off the CPU the step also has ``run``
    and ``wait`` (see the module docstring)."""
    grad = pass_ == "fwd+bwd"
    if backend == "numpy":
        if mode != "eager" or grad:
            raise NotImplementedError("numpy runs the forward pass eagerly only")
        return lambda: (fn(*arrays), None)
    if backend == "torch":
        run = _torch_run(mode, grad, fn, arrays)
        return _stepped(run, lambda out: sync("torch", out), device)
    if backend == "jax":
        return _stepped(_jax_run(mode, grad, fn, arrays), lambda out: sync("jax", out), device)
    if backend == "tensorflow":
        return _tf_step(mode, grad, fn, arrays)
    raise ValueError(f"unknown backend {backend!r}")


def _stepped(run: Step, wait: Callable[[Any], None], device: str) -> Step:
    def step() -> tuple[Any, Any]:
        out = run()
        wait(out)
        return out

    if device != "cpu":
        step.run = run  # type: ignore[attr-defined]
        step.wait = wait  # type: ignore[attr-defined]
    return step


def _torch_run(mode: str, grad: bool, fn: Callable[..., Any], arrays: tuple[Any, ...]) -> Step:
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
            return out, None

        return fwd
    xg = x.detach().requires_grad_(True)  # a leaf sharing x's storage

    def fwd_bwd() -> tuple[Any, Any]:
        out = f(xg, *rest)
        (g,) = torch.autograd.grad(out, xg)
        return out.detach(), g

    return fwd_bwd


def _jax_run(mode: str, grad: bool, fn: Callable[..., Any], arrays: tuple[Any, ...]) -> Step:
    import jax

    f = jax.value_and_grad(fn) if grad else fn
    if mode == "compiled":
        f = jax.jit(f)

    def run() -> tuple[Any, Any]:
        out = f(*arrays)
        return out if grad else (out, None)

    return run


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
