"""The generic adapter: the extras a loss needs, written over any array-API namespace.

Framework adapters subclass it and replace individual methods with their own fused, stable
primitives.  Everything here is also the fallback for namespaces unilosses has no adapter for
(CuPy, Dask, ndonnx, ...), which is why it uses only functions of the standard.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Array = Any


class Adapter:
    """What a loss may ask of a backend, beyond the array API namespace ``xp``."""

    #: short backend name, used in error messages and reports
    name = "generic"

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def __repr__(self) -> str:
        return f"<unilosses adapter {self.name!r} over {getattr(self.xp, '__name__', self.xp)!r}>"

    #: float dtypes that losses compute in as they are (no cast), and integer dtypes taken as
    #: labels as they are: with these, :func:`~unilosses._core.call.prepare` may take its
    #: short path (a backend that leaves them empty always takes the long one)
    plain_dtypes: tuple[Any, ...] = ()
    label_dtypes: tuple[Any, ...] = ()
    #: ``compile(fn)``, a function of arrays compiled whole and cached by their shapes and
    #: dtypes (``jax.jit``), for a backend whose eager calls dispatch op by op at a cost far
    #: above the ops' own (:mod:`unilosses._core.eager`); None: eager calls run as they are
    compile_whole: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None

    # -- array facts -------------------------------------------------------------------------
    def device(self, x: Array) -> Any:
        return x.device

    def is_floating(self, x: Array) -> bool:
        return self.xp.isdtype(x.dtype, "real floating")

    def is_integral(self, x: Array) -> bool:
        return self.xp.isdtype(x.dtype, ("integral", "bool"))

    def is_half(self, dtype: Any) -> bool:
        """Whether ``dtype`` is a 16-bit float that losses compute in float32."""
        return dtype == getattr(self.xp, "float16", None)

    def is_tracing(self, x: Array) -> bool:
        """Whether ``x`` has no concrete values (traced under jit/compile, fake or meta):
        value checks are skipped then."""
        return False

    def no_gradient(self, *xs: Array) -> bool:
        """Whether no reverse-mode gradient can reach any of ``xs`` from this call (eager, and
        nothing recorded for a backward pass): a masked loss need not replace masked inputs
        only to keep NaN out of the gradient then (a final select drops their values).  False
        where unknown."""
        return False

    def has_values(self, x: Array) -> bool:
        """Whether ``x``'s values can be read now (``float`` of a 0-d one is a number): not
        where :meth:`is_tracing`, but for an eager array used inside a trace (TensorFlow)."""
        return not self.is_tracing(x)

    def shape(self, x: Array) -> tuple[Any, ...]:
        return tuple(x.shape)

    #: whether a traced shape may leave a dimension unknown (None: TensorFlow); elsewhere the
    #: run-time shape checks are skipped without looking at the shapes (microseconds a call)
    unknown_dims = False

    #: whether a Python number next to a 0-d array or scalar may promote it (NumPy 1.x's
    #: value-based promotion: float32 scalar * 2.0 is float64 there); then the 0-d values a
    #: loss computes after a reduction are cast back to its dtype (``Call.in_dtype``)
    promotes_scalars = False

    def run_time_shape(self, x: Array, shape: tuple[Any, ...], message: str,
                       broadcast: bool = False) -> Array:
        """``x``, required to have ``shape`` exactly (``broadcast``: to broadcast to it, as
        it is or as broadcast) when the program runs, where the static shapes leave a
        dimension unknown (None: TensorFlow traced with it unknown), else an error with
        ``message``.  Elsewhere shapes are known, and checked, when traced."""
        return x

    def dim(self, x: Array, axis: int) -> Any:
        """The size of ``x`` along ``axis`` at run time, for where ``shape`` says None
        (TensorFlow traced with that dimension unknown): a 0-d int64 array there."""
        return self.shape(x)[axis]

    def extrema(self, x: Array) -> tuple[Any, Any] | None:
        """(min, max) of a non-empty real ``x`` as Python numbers (NaN if any is NaN), read in
        one pass where that is cheap; None otherwise (then checks compare elementwise).  Not
        called while tracing."""
        return None

    def bounded(self, x: Array) -> bool:
        """True only if every ``|x_i|`` is known to be at most a quarter of its floating dtype's
        maximum (then clamping logits there, as the losses do, changes nothing), where one
        read shows it more cheaply than the clamp costs: eagerly, on large host arrays.  False
        when unknown; never read while tracing."""
        return False

    def known_binary(self, y: Array) -> bool:
        """True only if every value of ``y`` is known to be 0 or 1 (a value within 1e-19 of 0
        may count as 0), where reading that is cheap; False when unknown.  A loss may then take
        a shorter form that is exact for such labels."""
        return False

    def dense(self, x: Array) -> Array:
        """``x``, or a dense copy of it where the backend sums a strided view (a broadcast's
        zero stride) less accurately than a dense array: for a sum of weights broadcast to
        the loss."""
        return x

    # -- conversions -------------------------------------------------------------------------
    def asarray(self, value: Any, *, dtype: Any = None, like: Array | None = None) -> Array:
        device = None if like is None else self.device(like)
        return self.xp.asarray(value, dtype=dtype, device=device)

    def astype(self, x: Array, dtype: Any) -> Array:
        if x.dtype == dtype:
            return x
        return self.xp.astype(x, dtype)

    def index_dtype(self) -> Any:
        return self.xp.int64

    # -- host interchange (tests, the parity report) -------------------------------------
    #: whether :meth:`value_and_grad` works (the framework has autograd)
    differentiable = False

    def from_numpy(self, a: Any) -> Array:
        """A backend array holding a copy of the NumPy array ``a`` (dtype kept)."""
        return self.xp.asarray(a)

    def to_numpy(self, x: Array) -> Any:
        import numpy as np

        return np.asarray(x)

    def value_and_grad(self, fn: Any, x: Array, *rest: Array) -> tuple[Array, Array]:
        """``fn(x, *rest)`` and its gradient with respect to ``x`` (``fn`` returns a scalar)."""
        raise NotImplementedError(f"backend {self.name!r} has no automatic differentiation")

    # -- whole-loss kernels --------------------------------------------------------------------
    #: the framework's own kernels for whole losses, by loss name (see ``Call.native``): each
    #: takes the Call and the prepared arrays and returns the loss reduced by the Call's
    #: reduction (for a weighted or masked call "none": ``Call.native`` weighs, masks and
    #: reduces it after), or None where it does not apply (the loss then computes its generic
    #: composition)
    kernels: dict[str, Any] = {}
    #: kernels for whole losses tried first, on the loss's own arguments, before any of the
    #: generic checks (see ``unilosses._core.call.plain``): each returns None unless the call
    #: is plain (arrays of this backend of the expected dtypes, shapes and device; options
    #: valid; no weights or masks), which the loss then checks on the generic path
    plain: dict[str, Any] = {}

    def chunked_sum(self, elementwise: Any, *arrays: Array, value_and_grad: Any = None,
                    scale: float = 1.0, columns: int = 1, blocks_only: bool = False,
                    bounds: bool = False, light: bool = False) -> Array | None:
        """``scale * sum(elementwise(*arrays))`` over blocks of rows, or None (then the caller
        composes it whole).

        The arrays share their leading axis; ``elementwise`` maps blocks of them to a block of
        the elementwise loss, ``value_and_grad`` (optional) to that block and its derivative in
        the first array (called with ``grad=False`` for the value alone, and with
        ``value=False`` where only the derivative is used: it may then give None for the
        value).  Only frameworks that evaluate eagerly gain from it.  ``blocks_only``: only
        where the blocks are evaluated one by one (a compiler fusing the composition gains
        nothing from that closed form).  ``bounds``: ``value_and_grad`` uses ``bounded=``
        (every |x| <= max/4 of the first array), which a backend may then read once.
        ``light``: the composition's own derivative is a few operations, which a compiler
        fuses with the value's pass; the closed form then pays only where it replaces
        recorded eager operations (TensorFlow eagerly), not where a compiler would run it
        (JAX's custom_jvp, TensorFlow's custom gradient under tf.function, torch.compile).
        """
        return None

    def weighted_block_sum(self, elementwise: Any, *arrays: Array, value_and_grad: Any,
                           weights: Array | None, mask: Array | None, reduction: str,
                           columns: int = 1, blocks_only: bool = False,
                           bounds: bool = False) -> Array | None:
        """:meth:`chunked_sum` of a weighted or masked call of an elementwise loss (the
        arrays, the loss's shape; ``columns`` > 1: a row-wise loss of the arrays' last axis,
        as there): the sum of ``where(mask, weights * elementwise(...), 0)``
        divided as ``Call.reduce`` divides it for ``reduction`` ("sum", "mean" over the
        unmasked, "weighted_mean" over their weights' sum), differentiated in the first array
        by the closed form; a NaN in a masked element reaches neither value nor derivative.
        None where the backend gains nothing (the caller composes it)."""
        return None

    def elementwise_closed_form(self, elementwise: Any, value_and_grad: Any,
                                *arrays: Array) -> Array | None:
        """``elementwise(*arrays)``, differentiated in the first array by the closed form
        ``value_and_grad`` (its derivative times the tangent or cotangent) and in the others
        through ``elementwise``; or None (the caller then composes it, with autodiff's own
        derivative).

        For an elementwise loss whose composition's derivative cancels (BCE on probabilities
        near soft targets) where the caller reduces it itself (weights, masks, reduction
        "none"), which :meth:`chunked_sum` does not cover.  ``value_and_grad`` is called
        as there (``grad=False``; ``value=False``).  Without automatic differentiation there
        is nothing to replace.
        """
        return None

    def log_cosh(self, d: Array, grad: bool) -> tuple[Array, Array | None] | None:
        """log cosh(d) and, where ``grad``, its derivative tanh(d), as a backend computes them
        in fewer operations to the loss's own accuracy (2.5 eps); None: the loss's formula."""
        return None

    #: whether a closed-form derivative should be recomputed from the inputs rather than
    #: share the value's intermediates: True where a compiler fuses value and derivative into
    #: passes of their own, and an intermediate that both use is written to memory between
    #: them (XLA), or where the derivative is computed apart from the value anyway
    #: (TensorFlow's custom gradient); torch eager shares
    recompute_derivative = False

    # -- selection ---------------------------------------------------------------------------
    def where(self, cond: Array, x: Any, y: Any) -> Array:
        """``where`` that accepts a Python scalar for either branch, built in the other's dtype."""
        xp = self.xp
        if not hasattr(x, "shape"):
            x = xp.asarray(x, dtype=y.dtype, device=self.device(y))
        if not hasattr(y, "shape"):
            y = xp.asarray(y, dtype=x.dtype, device=self.device(x))
        return xp.where(cond, x, y)

    def mask_selector(self, mask: Array) -> Callable[..., Array] | None:
        """For a boolean ``mask`` that a loss call applies to several arrays, a function
        ``select(x, axis, zero)`` giving ``where(mask, x, zero)`` (``zero``: 0 or 0.0;
        ``axis``: x has an extra axis there, along which the mask is broadcast), faster than
        ``where`` here; None: use :meth:`where`."""
        return None

    def count(self, mask: Array, axis: Any, dtype: Any) -> Array:
        """The number of True elements of ``mask`` along ``axis`` (None: all), in ``dtype``."""
        return self.xp.sum(self.astype(mask, dtype), axis=axis)

    def select_finite(self, mask: Array, x: Array) -> Array:
        """``where(mask, x, 0)`` for an ``x`` known to be finite where ``mask`` is False: a
        backend may multiply by the mask instead, where a select costs more than a product."""
        return self.where(mask, x, 0.0)

    # -- fused arithmetic (one kernel eagerly where a backend has one; compilers fuse anyway) --
    def add_product(self, a: Array, b: Array, c: Array, k: float = 1.0) -> Array:
        """``a + k * (b * c)`` (torch's ``addcmul``)."""
        return a + k * (b * c)

    def affine(self, y: Array, a: float, b: float) -> Array:
        """``a + b * y`` for Python numbers ``a`` and ``b``."""
        return a + b * y

    def clip(self, x: Array, lo: float | None, hi: float | None) -> Array:
        """``x`` clipped to [lo, hi] (None: no bound on that side), with gradient exactly 1 on
        the closed interval and 0 outside on every framework."""
        # selects rather than min/max: clamp/maximum split or drop ties differently
        if lo is not None:
            x = self.where(x < lo, lo, x)
        return x if hi is None else self.where(x > hi, hi, x)

    def relu(self, x: Array) -> Array:
        """``max(x, 0)`` with derivative 0 at 0 (each framework's own relu where it has one)."""
        return self.where(x > 0, x, 0.0)

    def safe_abs(self, x: Array) -> Array:
        """|x| with gradient exactly 0 at 0 on every framework (JAX's abs takes 1 there)."""
        return x * self.xp.sign(x)

    def safe_sqrt(self, x: Array) -> Array:
        """sqrt(x) for x >= 0 with gradient 0 at 0 (not inf, which times 0 is NaN); NaN stays
        NaN (the test is ``x <= 0``, which NaN fails: an error of NaN is not an RMSE of 0)."""
        low = x <= 0
        return self.where(low, 0.0, self.xp.sqrt(self.where(low, 1.0, x)))

    def safe_pow(self, a: Array, p: float) -> Array:
        """a ** p for a >= 0 with gradient 0 at 0 for every p > 0, and 0 ** 0 == 1; NaN stays
        NaN."""
        low = a <= 0
        # p == 0 goes through the same power, not ones_like: a constant would cut the graph
        # (torch: backward() of a loss made of it fails; TF: the gradient is None, not 0)
        return self.where(low, 1.0 if p == 0 else 0.0, self.where(low, 1.0, a) ** p)

    def take_along_axis(self, x: Array, indices: Array, axis: int) -> Array:
        return self.xp.take_along_axis(x, indices, axis=axis)

    def stop_gradient(self, x: Array) -> Array:
        """``x``, held constant by automatic differentiation (torch's ``detach``, JAX's
        ``lax.stop_gradient``).  The standard has no autodiff, so here: ``x`` unchanged."""
        return x

    # -- smooth functions --------------------------------------------------------------------
    def sigmoid(self, x: Array) -> Array:
        xp = self.xp
        e = xp.exp(-xp.abs(x))
        return self.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def sigmoid_logs(self, x: Array) -> tuple[Array, Array, Array, Array]:
        """``(p, q, log p, log q)`` for ``p = sigmoid(x)``, ``q = 1 - p`` and finite ``x``, each
        to full relative precision, with one ``log1p``: ``log max(p, q)`` is
        ``log1p(-min(p, q))``, and ``log p = min(x, 0) + log max(p, q)``,
        ``log q = (min(x, 0) - x) + log max(p, q)``.

        For closed-form derivatives that a framework may differentiate again (JAX's
        custom_jvp, TensorFlow's custom gradient): the two kinks at ``x = 0`` cancel only if
        both pieces take the same side there, so the smaller sigmoid is selected with
        ``x > 0`` (the clip's derivative is 1 at its bound): a ``min`` would split the tie
        differently per framework and give a wrong second derivative at 0.
        """
        xp = self.xp
        p, q = self.sigmoid(x), self.sigmoid(-x)
        r = self.clip(x, -float(xp.finfo(x.dtype).max), 0.0)
        lm = self.log1p(-self.where(x > 0, q, p))
        return p, q, r + lm, (r - x) + lm

    def log1p(self, x: Array) -> Array:
        """``log(1 + x)`` for ``x`` in ``(-1, max]`` (or NaN), where the caller knows the range:
        ``xp.log1p``, or what a backend computes faster to the same precision there."""
        return self.xp.log1p(x)

    def softplus(self, x: Array) -> Array:
        """log(1 + exp(x)) without overflow: max(x, 0) + log1p(exp(-|x|))."""
        xp = self.xp
        return xp.maximum(x, xp.zeros_like(x)) + self.log1p(xp.exp(-xp.abs(x)))

    def log_sigmoid(self, x: Array) -> Array:
        return -self.softplus(-x)

    def clamped_log_softmax(self, x: Array, axis: int, bound: float) -> Array:
        """``log_softmax(clip(x, -bound, bound))`` along ``axis``, with the clip's derivative
        (a backend may compute it in fewer passes, to the same numbers)."""
        return self.log_softmax(self.clip(x, -bound, bound), axis)

    def _shift(self, x: Array, axis: int) -> Array:
        """The maximum along ``axis`` (kept), 0 where it is not finite: an all -inf (or inf)
        row would give inf - inf = nan, and shifting by 0 there is exact."""
        xp = self.xp
        m = xp.max(x, axis=axis, keepdims=True)
        return self.where(xp.isfinite(m), m, 0.0)

    def logsumexp(self, x: Array, axis: int, keepdims: bool = False) -> Array:
        xp = self.xp
        m = self._shift(x, axis)
        out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
        return out if keepdims else xp.squeeze(out, axis=axis)

    def log_softmax(self, x: Array, axis: int) -> Array:
        # (x - m) - log s, not x - (m + log s): adding the maximum first rounds log s to the
        # maximum's ulp (float32: 1e4 - (1e4 + 0.3133) = -0.3135)
        z = x - self.stop_gradient(self._shift(x, axis))
        return z - self.xp.log(self.xp.sum(self.xp.exp(z), axis=axis, keepdims=True))


LOG2 = math.log(2.0)
