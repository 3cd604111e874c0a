"""Running a loss under each framework's compiler: jax.jit, torch.compile, tf.function(XLA).

Each function returns a callable with the eager signature ``(x, *rest) -> (value, grad)``
(``grad`` None for a metric) whose first call traces and compiles.  A loss that cannot be
traced raises there; the runner reports the exception as "did not trace".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..backends import Adapter

#: what "compiled" means on each backend, as the report prints it
COMPILERS = {
    "jax": "jax.jit",
    "torch": "torch.compile(fullgraph=True, backend={torch_backend!r})",
    "tensorflow": "tf.function(jit_compile=True)",
}

#: torch.compile's backend by default: "aot_eager" traces the whole graph (forward and
#: backward, through AOTAutograd) without generating C++, so it is fast and needs no compiler;
#: "inductor" also checks code generation, at a few seconds per loss
DEFAULT_TORCH_BACKEND = "aot_eager"

Pair = tuple[Any, Any]


def describe(backend: str, torch_backend: str = DEFAULT_TORCH_BACKEND) -> str | None:
    template = COMPILERS.get(backend)
    return None if template is None else template.format(torch_backend=torch_backend)


def compile_loss(backend: str, ad: Adapter, f: Callable[..., Any], differentiable: bool,
                 torch_backend: str = DEFAULT_TORCH_BACKEND) -> Callable[..., Pair]:
    """``f`` (a loss of ``(x, *rest)``) compiled for ``backend``, returning value and grad."""
    if backend == "jax":
        return _jax(ad, f, differentiable)
    if backend == "torch":
        return _torch(ad, f, differentiable, torch_backend)
    if backend == "tensorflow":
        return _tf(ad, f, differentiable)
    raise ValueError(f"backend {backend!r} has no compiler")


def _jax(ad: Adapter, f: Callable[..., Any], differentiable: bool) -> Callable[..., Pair]:
    import jax

    if differentiable:
        return jax.jit(lambda x, *rest: ad.value_and_grad(f, x, *rest))
    g = jax.jit(f)
    return lambda x, *rest: (g(x, *rest), None)


def _torch(ad: Adapter, f: Callable[..., Any], differentiable: bool,
           torch_backend: str) -> Callable[..., Pair]:
    import torch

    # Each loss is a new closure over the same code object; a fresh dynamo cache keeps the
    # recompile limit from silently sending later losses to eager mode.
    torch._dynamo.reset()
    cf = torch.compile(f, fullgraph=True, backend=torch_backend)
    if differentiable:
        return lambda x, *rest: ad.value_and_grad(cf, x, *rest)
    return lambda x, *rest: (cf(x, *rest), None)


def _tf(ad: Adapter, f: Callable[..., Any], differentiable: bool) -> Callable[..., Pair]:
    import tensorflow as tf

    if differentiable:
        g = tf.function(lambda x, *rest: ad.value_and_grad(f, x, *rest), jit_compile=True)
    else:
        g = tf.function(lambda x, *rest: (f(x, *rest), None), jit_compile=True)

    def call(x: Any, *rest: Any) -> Pair:
        # One tf.function per loss and case is the point here, so TensorFlow's warning about
        # "excessive retracing" is noise; it is silenced for this call only.
        logger = tf.get_logger()
        level = logger.level
        logger.setLevel("ERROR")
        try:
            return g(x, *rest)
        finally:
            logger.setLevel(level)

    return call
