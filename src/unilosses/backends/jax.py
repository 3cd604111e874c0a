"""JAX adapter: jax.numpy is array-API compliant; jax.nn supplies the stable extras."""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from ._base import Adapter, Array


def _closed_form_sum(elementwise: Any, value_and_grad: Any, scale: float,
                     *arrays: Array) -> Array:
    """scale * sum(v) with a custom JVP: the tangent is sum(dv/dx . dx) from the closed form.

    XLA fuses value and derivative into one pass instead of differentiating the composition.
    Tangents of the other arrays (soft targets being differentiated, say) take the
    composition's own JVP, so every derivative stays the composition's.
    """

    @jax.custom_jvp
    def total(*a: Array) -> Array:
        return jnp.sum(value_and_grad(*a, grad=False)[0]) * scale

    def jvp(primals: Any, tangents: Any) -> Any:
        others = [i for i, t in enumerate(tangents) if i and type(t) is not SymbolicZero]
        if others:
            live = [0, *others] if type(tangents[0]) is not SymbolicZero else others

            def composed(*sub: Array) -> Array:
                a = list(primals)
                for i, v in zip(live, sub):
                    a[i] = v
                return jnp.sum(elementwise(*a)) * scale

            return jax.jvp(composed, [primals[i] for i in live], [tangents[i] for i in live])
        v, g = value_and_grad(*primals)
        out = jnp.sum(v) * scale
        if type(tangents[0]) is SymbolicZero:
            return out, jnp.zeros_like(out)
        return out, jnp.sum(g * tangents[0]) * scale

    total.defjvp(jvp, symbolic_zeros=True)
    return total(*arrays)


def _closed_form_elementwise(elementwise: Any, value_and_grad: Any, *arrays: Array) -> Array:
    """``elementwise(*arrays)`` with a custom JVP: the first array's tangent times the closed
    form's derivative, the others' tangents (soft targets being differentiated, say) through
    the composition's own JVP, added."""

    @jax.custom_jvp
    def loss(*a: Array) -> Array:
        return value_and_grad(*a, grad=False)[0]

    def jvp(primals: Any, tangents: Any) -> Any:
        others = [i for i, t in enumerate(tangents) if i and type(t) is not SymbolicZero]
        if others:
            def composed(*sub: Array) -> Array:
                a = list(primals)
                for i, v in zip(others, sub):
                    a[i] = v
                return elementwise(*a)

            out, dout = jax.jvp(composed, [primals[i] for i in others],
                                [tangents[i] for i in others])
        else:
            # (the value through ``loss`` itself: differentiated again, it takes this rule)
            out, dout = loss(*primals), None
        if type(tangents[0]) is not SymbolicZero:
            dx = value_and_grad(*primals, value=False)[1] * tangents[0]
            dout = dx if dout is None else dout + dx
        return out, jnp.zeros_like(out) if dout is None else dout

    loss.defjvp(jvp, symbolic_zeros=True)
    return loss(*arrays)


@jax.custom_jvp
def _safe_abs(x: Array) -> Array:
    return jnp.abs(x)


@_safe_abs.defjvp
def _safe_abs_jvp(primals: Any, tangents: Any) -> Any:
    # jnp.abs differentiates to 1 at 0; unilosses's rule is sign(x), 0 there.  The forward
    # stays one abs (x * sign(x) costs a second pass under XLA on CPU)
    (x,), (dx,) = primals, tangents
    # (the value through _safe_abs itself: a second derivative then differentiates it by
    # this rule, not by jnp.abs's, which disagrees at 0)
    return _safe_abs(x), jnp.sign(x) * dx


# A one-sided clip as XLA's own minimum or maximum, which its CPU fusion (XNNPACK's "ynn"
# fusions, jaxlib 0.10) takes inside a reduction's pass, where a select is written to memory
# in a pass of its own (sparse CE's exp(min(x - m, 0)) at 160000 x 100 under jit, forward:
# 22 ms against 27, in one process; optax 30).  jnp.minimum and maximum split the derivative
# at a tie; these give it to x, the clip's rule (1 on the closed interval, 0 outside).
def _one_sided(op: Any, keeps_x: Any) -> Any:
    """``op(x, bound)`` (jnp.minimum or maximum) whose derivative goes to x where
    ``keeps_x(x, bound)``, ties included, and to the bound elsewhere."""

    @jax.custom_jvp
    def clipped(x: Array, bound: Array) -> Array:
        return op(x, bound)

    @clipped.defjvp
    def jvp(primals: Any, tangents: Any) -> Any:
        (x, bound), (dx, dbound) = primals, tangents
        # the value through ``clipped`` itself: differentiated again (a Hessian), it takes
        # this rule, where op's own would split a tie (sparse CE's curvature at each row's
        # largest logit came out halved)
        return clipped(x, bound), jnp.where(keeps_x(x, bound), dx, dbound)

    return clipped


_at_most = _one_sided(jnp.minimum, lambda x, hi: x <= hi)
_at_least = _one_sided(jnp.maximum, lambda x, lo: x >= lo)


@partial(jax.custom_jvp, nondiff_argnums=(1, 2))
def _clamped_log_softmax(x: Array, axis: int, bound: float) -> Array:
    """``log_softmax(clip(x, -bound, bound))`` in one fused pass over ``x``.

    With ``m`` the clamped row maximum, taken as ``max(min(x, bound))`` raised to ``-bound``
    (the clamp is monotonic), each ``clip(x) - m`` is ``min(x, bound) - m`` raised to the
    row's ``-bound - m``: the same number (``m`` lies at or above every ``min(x, bound)``,
    and rounding is monotonic, so the lower bound selects the same side), a row all at or
    below ``-bound`` included (``m = -bound``, every element 0, as clamped).  Every bound is
    one-sided or a row's, so XLA's CPU fusion takes the whole of it into one pass, where the
    two-bound clip (a select or a clamp, written out) and the log-softmax took three: at
    160000 x 100 under jit, forward, 19.8-21.4 ms against 24.8-27.5 (optax 17.5-20.4;
    benchmarks/results/jax-ce.md).  Its own
    derivative costs more (XLA writes out the one-sided bounds' masks), so the JVP is the
    clipped log-softmax's, whose values are the same.
    """
    top = jnp.max(jnp.minimum(x, bound), axis=axis, keepdims=True)
    m = jax.lax.stop_gradient(jnp.maximum(top, -bound))
    z = jnp.maximum(jnp.minimum(x, bound) - m, -bound - m)
    return z - jnp.log(jnp.sum(jnp.exp(z), axis=axis, keepdims=True))


@_clamped_log_softmax.defjvp
def _clamped_log_softmax_jvp(axis: int, bound: float, primals: Any, tangents: Any) -> Any:
    def composed(a: Array) -> Array:
        # the generic clip's selects: derivative 1 on the closed interval, 0 outside
        a = jnp.where(a > bound, bound, jnp.where(a < -bound, -bound, a))
        return jax.nn.log_softmax(a, axis=axis)

    return jax.jvp(composed, primals, tangents)


def _sharded_along(x: Array, axis: int) -> bool:
    """Whether ``axis`` of ``x`` is sharded in its type (an Explicit mesh); True if unknown."""
    try:
        spec = jax.typeof(x).sharding.spec
    except Exception:  # an older jax, or no sharding in the type: keep what always works
        return True
    axis = axis % x.ndim
    return axis < len(spec) and spec[axis] is not None


class JaxAdapter(Adapter):
    name = "jax"
    compile_whole = staticmethod(jax.jit)

    def __init__(self) -> None:
        super().__init__(jnp)

    def device(self, x: Array) -> Any:
        # a tracer has no committed device and a sharded array has several: jax places
        # constants and checks placement itself there
        if isinstance(x, jax.core.Tracer):
            return None
        devices = x.devices()
        return next(iter(devices)) if len(devices) == 1 else None

    def is_floating(self, x: Array) -> bool:
        return jnp.issubdtype(x.dtype, jnp.floating)

    def is_integral(self, x: Array) -> bool:
        return jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_

    def is_half(self, dtype: Any) -> bool:
        return dtype in (jnp.float16, jnp.bfloat16)

    def is_tracing(self, x: Array) -> bool:
        return isinstance(x, jax.core.Tracer)

    def no_gradient(self, *xs: Array) -> bool:
        # (differentiated, an array is a tracer: jax.grad traces)
        return not any(isinstance(x, jax.core.Tracer) for x in xs)

    def chunked_sum(self, elementwise: Any, *arrays: Array, value_and_grad: Any = None,
                    scale: float = 1.0, columns: int = 1, blocks_only: bool = False,
                    bounds: bool = False, light: bool = False) -> Array | None:
        # no blocks (XLA fuses the whole composition), but the closed-form derivative, unless
        # the composition's own is light (BCE with logits under jit, fwd+bwd: best of 300
        # 2.22-2.36 ms closed, 1.86-2.19 composed)
        if value_and_grad is None or blocks_only or light:
            return None
        return _closed_form_sum(elementwise, value_and_grad, scale, *arrays)

    def elementwise_closed_form(self, elementwise: Any, value_and_grad: Any,
                                *arrays: Array) -> Array | None:
        return _closed_form_elementwise(elementwise, value_and_grad, *arrays)

    # measured under jit on the CPU: log_cosh's tanh(d) in the gradient's own pass beats
    # sharing the value's expm1 (0.79 against 1.04 of optax's time, forward+backward,
    # min of 60 interleaved calls)
    recompute_derivative = True

    def asarray(self, value: Any, *, dtype: Any = None, like: Array | None = None) -> Array:
        return jnp.asarray(value, dtype=dtype)

    def astype(self, x: Array, dtype: Any) -> Array:
        return x if x.dtype == dtype else x.astype(dtype)

    def index_dtype(self) -> Any:
        # int32 unless x64 is on; take_along_axis accepts either
        return jnp.int32

    differentiable = True

    def from_numpy(self, a: Any) -> Array:
        return jnp.asarray(a)

    def value_and_grad(self, fn: Any, x: Array, *rest: Array) -> tuple[Array, Array]:
        return jax.value_and_grad(fn)(x, *rest)

    def where(self, cond: Array, x: Any, y: Any) -> Array:
        return jnp.where(cond, x, y)

    def clip(self, x: Array, lo: float | None, hi: float | None) -> Array:
        if lo is not None and hi is not None:
            # two bounds: XLA would rewrite min(max()) into a clamp, which its CPU fusion
            # writes out in a pass of its own too; the selects stay (a min/max clip measured
            # slower for huber and sparse CE, 4b7bc50)
            return super().clip(x, lo, hi)
        return _at_least(x, lo) if hi is None else _at_most(x, hi)

    def clamped_log_softmax(self, x: Array, axis: int, bound: float) -> Array:
        return _clamped_log_softmax(x, axis, bound)

    def take_along_axis(self, x: Array, indices: Array, axis: int) -> Array:
        if indices.shape[axis] != 1 or not _sharded_along(x, axis):
            return jnp.take_along_axis(x, indices, axis=axis, mode="clip")
        # Picking one entry along an axis that is sharded in the array's type (a label's
        # score, the class axis split over an Explicit mesh): a gather is refused there, a
        # one-hot select and a sum shards.  Elsewhere the gather is cheaper (its gradient
        # touches one entry per row, the select's every entry).
        iota = jax.lax.broadcasted_iota(indices.dtype, x.shape, axis % x.ndim)
        return jnp.sum(jnp.where(iota == indices, x, 0), axis=axis, keepdims=True)

    def stop_gradient(self, x: Array) -> Array:
        return jax.lax.stop_gradient(x)

    def relu(self, x: Array) -> Array:
        return jax.nn.relu(x)

    def safe_abs(self, x: Array) -> Array:
        return _safe_abs(x)

    def sigmoid(self, x: Array) -> Array:
        return jax.nn.sigmoid(x)

    def log_sigmoid(self, x: Array) -> Array:
        return jax.nn.log_sigmoid(x)

    def softplus(self, x: Array) -> Array:
        return jax.nn.softplus(x)

    def logsumexp(self, x: Array, axis: int, keepdims: bool = False) -> Array:
        return jax.nn.logsumexp(x, axis=axis, keepdims=keepdims)

    def log_softmax(self, x: Array, axis: int) -> Array:
        return jax.nn.log_softmax(x, axis=axis)


def load() -> Adapter:
    return JaxAdapter()
