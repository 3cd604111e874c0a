"""One loss call: inputs dispatched, checked, cast and masked; the loss reduced in one place.

Every loss goes through :func:`prepare`, computes its elementwise loss over ``call.xp`` and hands
it to :meth:`Call.reduce`.  The semantics below are documented once, in README "Common semantics".

* The computation dtype is the predictions' floating dtype; float16/bfloat16 are computed (and
  returned) in float32, as autocast does.  Targets, weights and Python scalars are cast to it.
* ``where`` masks elements of the elementwise loss.  Masked input elements are replaced by a
  harmless value *before* the loss is computed, so a NaN or inf there reaches neither the value
  nor the gradient (``where(mask, f(x), 0)`` alone would leak NaN through f's backward).
* ``reduction="mean"`` divides the (weighted) sum over unmasked elements by their number; a fully
  masked mean is 0 with zero gradient.  ``"weighted_mean"`` divides it by the sum of the weights
  over unmasked elements instead (Keras's ``mean_with_sample_weight``, torch's class-weighted
  mean); 0 where that sum is 0.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from ..backends import _BY_TYPE, Adapter
from .checks import checks_enabled, deferred
from .dispatch import resolve
from .validate import (
    REDUCTIONS,
    check_broadcastable,
    check_reduction,
    check_same_shape,
    fmt_shape,
    size_of,
)

Array = Any


class Call:
    """The state of one loss evaluation, handed from :func:`prepare` to :meth:`reduce`."""

    __slots__ = ("ad", "xp", "dtype", "loss_shape", "mask", "weights", "reduction",
                 "grad_free", "_select")

    def __init__(self, ad: Adapter, dtype: Any, loss_shape: tuple[Any, ...], mask: Array | None,
                 weights: Array | None, reduction: str) -> None:
        self.ad = ad
        self.xp = ad.xp
        self.dtype = dtype
        self.loss_shape = loss_shape
        self.mask = mask
        self.weights = weights
        self.reduction = reduction
        #: masked, whether no gradient can reach the inputs (``Adapter.no_gradient``)
        self.grad_free = False
        self._select: Any = False  # Adapter.mask_selector's, made at the first select

    def restrict(self, keep: Array) -> None:
        """Also mask out elements where ``keep`` is False (e.g. labels equal to ignore_index)."""
        self.mask = keep if self.mask is None else self.mask & keep
        self._select = False
        if self.weights is not None:
            self.weights = self.masked(self.xp.broadcast_to(self.weights, self.loss_shape))

    def _selector(self) -> Any:
        """The backend's selector for this call's mask, made at the first use (None: none)."""
        select = self._select
        if select is False:
            select = self._select = self.ad.mask_selector(self.mask)
        return select

    def masked(self, x: Array, zero: float = 0.0, axis: int | None = None) -> Array:
        """``where(mask, x, zero)`` (``zero``: 0 or 0.0, of x's kind; ``axis``: x has an
        extra class axis), by the backend's selector for a mask applied several times where
        it has one (``Adapter.mask_selector``)."""
        select = self._selector()
        if select is not None:
            return select(x, axis, zero)
        m = self.mask if axis is None else self.xp.expand_dims(self.mask, axis=axis)
        return self.ad.where(m, x, zero)

    def clean(self, x: Array, fill: float, axis: int | None = None, *,
              grad_only: bool = False) -> Array:
        """``x`` with masked elements replaced by ``fill`` (``axis``: x has an extra class axis).

        ``grad_only``: the replacement only keeps NaN out of the gradient, and the loss's
        value at a masked element, whatever ``x`` holds there, is dropped by :meth:`reduce`'s
        select (an elementwise loss, no check or gather reading ``x``): skipped where no
        gradient can reach the inputs (an evaluation loop under ``torch.no_grad``; torch's
        CPU ``where`` is a scalar loop, 3.9 ms for 1e6 float32 elements here, a masked MSE
        cleaned its predictions, targets and weights and masked its loss: four); see also
        :meth:`clean_inputs`, which masks the gradient instead where it can."""
        if self.mask is None or (grad_only and self.grad_free):
            return x
        if fill == 0:
            return self.masked(x, fill, axis)
        m = self.mask
        if axis is not None:
            m = self.xp.expand_dims(m, axis=axis)
        return self.ad.where(m, x, fill)

    def clean_inputs(self, *arrays: Array, axis: int | None = None) -> tuple[Array, ...]:
        """:meth:`clean`'s ``grad_only`` replacement of ``arrays`` by 0 where masked, or the
        arrays as they are with their gradients masked where the backend can (the selector's
        ``guard``: torch's CPU, eagerly; no copy to write and read).  Only for a loss whose
        value and derivatives at each element (row, along ``axis``) read the inputs there
        alone, and whose other differentiable operand is the weights (which :func:`prepare`
        replaced at the loss's shape): a NaN in a masked element then reaches the masked
        loss, which :meth:`reduce` selects away, and masked derivatives, which the guard and
        the weights' select drop."""
        if self.mask is None or self.grad_free:
            return arrays
        guard = getattr(self._selector(), "guard", None)
        if guard is not None:
            out = tuple(guard(a, axis) for a in arrays)
            if all(a is not None for a in out):
                return out
        return tuple(self.clean(a, 0.0, axis, grad_only=True) for a in arrays)

    def native(self, name: str, *arrays: Array, cleaned: bool = False,
               keep: Callable[[], Array] | None = None, **options: Any) -> Array | None:
        """The backend's own kernel for the whole loss ``name``, reduced; None where it has none.

        A backend supplies one (``Adapter.kernels``) only where its semantics match the loss
        exactly, which tests check against the generic composition on the same inputs.  With
        weights, the kernel gives the elementwise loss (reduction "none") and :meth:`reduce`
        weighs and reduces it; with a mask too, but only where no NaN in the masked elements
        reaches the kernel's backward (``cleaned``: the caller replaced them, :meth:`clean`,
        or the kernel declines unless it shows them finite).  ``keep()``: the elements kept,
        where the kernel itself leaves the others out (zero loss and gradient: labels equal to
        ignore_index), its "mean" over the kept ones (0 where there are none); with weights or
        a mask the reduction leaves them out too, as :meth:`restrict` would.  (torch, weighted
        sum, forward and backward: Huber 0.09 of the composition's time at 1e6 elements, sparse
        CE 0.55 on 1e3, BCE 0.68 on 16.)
        """
        kernel = self.ad.kernels.get(name)
        if kernel is None:
            return None
        if self.mask is None and self.weights is None:
            return kernel(self, *arrays, **options)
        if self.mask is not None and not cleaned:
            return None
        loss = kernel(Call(self.ad, self.dtype, self.loss_shape, None, None, "none"), *arrays,
                      **options)
        if loss is None:
            return None
        if keep is None:
            return self.reduce(loss)
        # (a copy: the call is left as it was where the kernel declines)
        kept = Call(self.ad, self.dtype, self.loss_shape, self.mask, self.weights,
                    self.reduction)
        kept.restrict(keep())
        return kept.reduce(loss)

    def chunked_sum(self, elementwise: Callable[..., Array], *arrays: Array,
                    value_and_grad: Callable[..., tuple[Array, Array]] | None = None,
                    scale: float = 1.0, columns: int = 1, blocks_only: bool = False,
                    bounds: bool = False, light: bool = False) -> Array | None:
        """``scale * sum(elementwise(*arrays))`` block by block, or None where not worth it.

        The blocks are of rows of each array laid out as ``(rows, -1)``, with ``rows`` the
        size of the first array over ``columns`` (1: elementwise; the class count: per anchor).

        For long elementwise compositions (the focal losses) evaluated eagerly: a backend that
        can (``Adapter.chunked_sum``) evaluates blocks of rows that stay in cache and keeps
        only the inputs for backward, recomputing each block's gradient there, instead of
        keeping every full-size intermediate; ``value_and_grad``, a closed-form derivative in
        the first array, spares the recomputation (``blocks_only``: only there, not where a
        compiler fuses the composition; ``bounds``: it takes ``bounded=``; ``light``: the
        composition's derivative is short, see ``Adapter.chunked_sum``).  Unmasked,
        unweighted calls only.
        """
        if self.mask is not None or self.weights is not None:
            return None
        return self.ad.chunked_sum(elementwise, *arrays, value_and_grad=value_and_grad,
                                   scale=scale, columns=columns, blocks_only=blocks_only,
                                   bounds=bounds, light=light)

    def reduced_sum(self, elementwise: Callable[..., Array], *arrays: Array,
                    value_and_grad: Callable[..., tuple[Array, Array]] | None = None,
                    columns: int = 1, blocks_only: bool = False,
                    bounds: bool = False, light: bool = False) -> Array | None:
        """The loss reduced by this call's "mean" or "sum" through :meth:`chunked_sum`, or
        None (reduction "none", a size unknown while tracing, or no gain on the backend).
        Weighted or masked, a loss with a closed form through ``Adapter.weighted_block_sum``,
        which weighs, masks and divides it as :meth:`reduce` would."""
        n = size_of(self.loss_shape)
        if self.reduction == "none" or n is None:
            return None
        if self.mask is not None or self.weights is not None:
            if value_and_grad is None:
                return None
            return self.ad.weighted_block_sum(elementwise, *arrays,
                                              value_and_grad=value_and_grad,
                                              weights=self.weights, mask=self.mask,
                                              reduction=self.reduction, columns=columns,
                                              blocks_only=blocks_only, bounds=bounds)
        return self.chunked_sum(elementwise, *arrays, value_and_grad=value_and_grad,
                                scale=1.0 if self.reduction == "sum" else 1.0 / max(n, 1),
                                columns=columns, blocks_only=blocks_only, bounds=bounds,
                                light=light)

    def closed_form_loss(self, elementwise: Callable[..., Array],
                         value_and_grad: Callable[..., tuple[Array, Array]], *arrays: Array,
                         per_element: bool = True) -> Array:
        """The loss reduced by this call, differentiated in the first array by the closed form
        ``value_and_grad``: through :meth:`reduced_sum` where it applies, else (reduction
        "none", weights, a mask) through ``Adapter.elementwise_closed_form`` where
        ``per_element`` (the composition's derivative cancels there, and the closed form
        repays its recomputation), else the composition ``elementwise``."""
        total = self.reduced_sum(elementwise, *arrays, value_and_grad=value_and_grad)
        if total is not None:
            return total
        loss = None
        if per_element and (self.reduction == "none" or self.weights is not None
                            or self.mask is not None):
            loss = self.ad.elementwise_closed_form(elementwise, value_and_grad, *arrays)
        return self.reduce(elementwise(*arrays) if loss is None else loss)

    def require(self, ok: Array, message: Callable[[], str]) -> None:
        """Raise ``ValueError(message())`` unless every element of ``ok`` is True.

        Eager only (skipped while tracing) and only while checks are enabled; see
        :mod:`unilosses._core.checks`.
        """
        # is_tracing first: under torch.compile the ContextVar read in checks_enabled()
        # cannot be traced, and a traced value is never checked anyway (but where an eager
        # call is compiled whole, which checks its predicates after the run)
        if self.ad.is_tracing(ok):
            self._defer(ok)
            return
        if not checks_enabled():
            return
        if not bool(self.xp.all(ok)):
            raise ValueError(message())

    def _defer(self, ok: Array) -> None:
        """Hand a traced check's predicate ``ok`` to the eager call compiled whole around
        this one, if any (:func:`~unilosses._core.checks.deferred`)."""
        if self.ad.compile_whole is not None:
            found = deferred()
            if found is not None:
                found.append(self.xp.all(ok))

    def require_within(self, x: Array, lo: float, hi: float, message: Callable[[], str]) -> bool:
        """Raise ``ValueError(message())`` unless every element of ``x`` lies in [lo, hi]
        (NaN does not); eager only and while checks are enabled, as :meth:`require`.  True
        when the values were read and passed (a clamp to [lo, hi] is then the identity)."""
        if self.ad.is_tracing(x):
            if self.ad.compile_whole is not None:
                self._defer((x >= lo) & (x <= hi))
            return False
        if not checks_enabled():
            return False
        ok = self._within(x, lo, hi, self.ad.extrema(x))
        if ok is False:
            raise ValueError(message())
        return ok is True

    def _within(self, x: Array, lo: float, hi: float,
                extrema: tuple[Any, Any] | None) -> bool | None:
        """Whether every element lies in [lo, hi]; None where that cannot be read (a JAX
        trace turns even constants' comparisons into tracers)."""
        if extrema is None:  # no cheap extrema: one pass of comparisons
            ok = (x >= lo) & (x <= hi)
            return None if self.ad.is_tracing(ok) else bool(self.xp.all(ok))
        return bool(extrema[0] >= lo and extrema[1] <= hi)

    def require_probabilities(self, p: Array, name: str,
                              inside: tuple[float, float] | None = None,
                              read: bool = True) -> bool:
        """Require ``p`` in [0, 1], as :meth:`require_within`.  With ``inside=(lo, hi)``, also
        say whether every value is known to lie in [lo, hi], from the same read (False when
        unknown: traced, or no cheap extrema), so that a loss may drop a clip that cannot
        change anything.  ``read=False``: with checks off, do not read the values only to
        answer that (on small inputs the read costs as much as the clip it would spare)."""
        tracing = self.ad.is_tracing(p)
        if tracing and self.ad.compile_whole is not None:
            self._defer((p >= 0.0) & (p <= 1.0))
        check = not tracing and checks_enabled()
        extrema = (self.ad.extrema(p)
                   if check or (inside is not None and read and not tracing) else None)
        if check and self._within(p, 0.0, 1.0, extrema) is False:
            raise ValueError(
                f"`{name}` holds values outside [0, 1] (or NaN), but this loss takes "
                f"probabilities. Pass logits to the `_with_logits` form instead, or apply a "
                f"sigmoid/softmax first.")
        return (inside is not None and extrema is not None
                and bool(extrema[0] >= inside[0] and extrema[1] <= inside[1]))

    def _run_time_count(self, loss: Array, axis: Any) -> Any:
        """The number of elements of ``loss`` along ``axis`` (None: all), the dimensions the
        static shape leaves unknown read at run time (``Adapter.dim``)."""
        count: Any = 1
        for a in _axes(len(self.loss_shape), axis):
            d = self.loss_shape[a]
            count = count * (self.ad.dim(loss, a) if d is None else d)
        return count

    def in_dtype(self, x: Array) -> Array:
        """``x`` (a loss's 0-d value, computed after a reduction with Python numbers) in the
        computation dtype, which NumPy 1.x's promotion may have left (float32 to float64);
        ``x`` itself on every other backend (``Adapter.promotes_scalars``)."""
        return self.ad.astype(x, self.dtype) if self.ad.promotes_scalars else x

    def reduce(self, loss: Array, axis: Any = None, *, norm: Array | None = None) -> Array:
        """Apply weights, mask and the reduction to the elementwise ``loss``.

        ``norm``: per-element weights already inside ``loss`` (e.g. the class weight of each
        label), which "weighted_mean" also divides by, together with ``weights``.
        """
        ad, xp = self.ad, self.xp
        if ad.promotes_scalars:
            # (a 0-d loss, e.g. one Dice coefficient, from sums and Python numbers)
            loss = ad.astype(loss, self.dtype)
        if self.weights is not None:
            loss = loss * self.weights
        if self.mask is not None:
            loss = self.masked(loss)
        if self.reduction == "none":
            return loss
        weighted = self.reduction == "weighted_mean" and (self.weights is not None
                                                           or norm is not None)
        n = _count(self.loss_shape, axis)
        if self.mask is None and self.reduction != "sum" and not weighted and n is not None \
                and n != 0:
            # one op, where sum / n would be two eagerly (the mean of nothing is 0, below)
            return xp.mean(loss, axis=axis)
        total = xp.sum(loss, axis=axis)
        if self.reduction == "sum":
            return total
        if self.mask is None and not weighted and n is None:
            # a size known only at run time (TensorFlow traced with a None dimension), which
            # may be 0: the mean of nothing is 0 there too, not NaN
            count = ad.astype(self._run_time_count(loss, axis), self.dtype)
            return total / ad.where(count > 0, count, 1.0)
        if weighted:
            w = self.weights if norm is None else norm if self.weights is None else \
                self.weights * norm
            w = xp.broadcast_to(w, self.loss_shape)
            # dense (the select makes it so): a broadcast view's sum may be less accurate
            # (Adapter.dense)
            w = ad.dense(w) if self.mask is None else self.masked(w)
            wsum = xp.sum(w, axis=axis)
            nonzero = wsum != 0.0
            return ad.where(nonzero, total / ad.where(nonzero, wsum, 1.0), 0.0)
        if self.mask is None:
            return total  # of nothing: 0, where a mean would be NaN
        count = ad.count(self.mask, axis, self.dtype)
        return total / ad.where(count > 0, count, 1.0)


def _axes(ndim: int, axis: Any) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    return (axis,) if isinstance(axis, int) else tuple(axis)


def _count(shape: tuple[Any, ...], axis: Any) -> int | None:
    if axis is None:
        dims = shape
    else:
        axes = (axis,) if isinstance(axis, int) else tuple(axis)
        dims = tuple(shape[a] for a in axes)
    n = 1
    for d in dims:
        if d is None:
            return None
        n = n * d
    return n


def _same_device(ad: Adapter, device: Any, first: str, name: str, x: Array) -> None:
    other = ad.device(x)
    if device is not None and other is not None and other != device:
        raise ValueError(
            f"`{first}` is on device {device} but `{name}` is on device {other}; move them to "
            f"one device first (e.g. x.to(device) / jax.device_put(x, device))."
        )


def floating_predictions(ad: Adapter, p: Array, name: str = "predictions") -> tuple[Array, Any]:
    if not ad.is_floating(p):
        raise TypeError(
            f"`{name}` must be a real floating array, got dtype {p.dtype}. "
            f"Cast it first, e.g. x.astype(float32) / x.float() / tf.cast(x, tf.float32)."
        )
    if ad.is_half(p.dtype):
        # half inputs are computed and returned in float32, as autocast does; autograd casts
        # the gradient back to the input's dtype
        p = ad.astype(p, ad.xp.float32)
    return p, p.dtype


def plain(name: str, *args: Any, weights: Any = None, where: Any = None) -> Array | None:
    """The backend's whole-loss kernel ``name`` for a plain call (``Adapter.plain``), on the
    loss's own arguments, first array first; None: take the generic path.  ``weights`` and
    ``where``, where either is given, go to the kernels that take them as keywords: those of
    binary and categorical cross-entropy, the binary focal losses and ``log_cosh``, which
    decline what they cannot weigh or mask.

    On tiny inputs the generic path's checks, dispatch and conditions cost more than the
    kernel itself; a plain kernel checks what it relies on in a few comparisons and declines
    anything else, which the generic path then checks, converts or refuses."""
    ad = _BY_TYPE.get(type(args[0]))
    kernel = None if ad is None else ad.plain.get(name)
    if kernel is None:
        return None
    if weights is None and where is None:
        return kernel(*args)
    return kernel(*args, weights=weights, where=where)


def _prepare_plain(names: tuple[str, ...], arrays: tuple[Any, ...], reduction: str,
                   class_axis: int | None, labels: tuple[str, ...],
                   same_shape: tuple[str, ...] | None, weights: Any = None,
                   where: Any = None) -> tuple[Call, list[Array]] | None:
    """:func:`prepare` for the common call that has nothing to convert, cast or refuse, or
    None: arrays of one type, on one device, of the predictions' dtype (labels: of an integer
    dtype), of the shapes :func:`prepare` requires; ``weights`` (of the predictions' dtype)
    and ``where`` (boolean) of the elementwise loss's shape, not broadcast.  On tiny inputs
    the full path's checks cost more than the kernel (weighted Huber on 16 elements, torch:
    the generic checks took as long as the kernel, the product and the sum together)."""
    p = arrays[0]
    first = type(p)
    ad = _BY_TYPE.get(first)
    if ad is None:
        return None
    dtype = p.dtype
    if dtype not in ad.plain_dtypes:
        return None
    shape = p.shape
    # sliced as a tuple: a torch.Size's slices and sum take a microsecond
    dims = tuple(shape)
    loss_shape = dims if class_axis is None else dims[:class_axis] + dims[class_axis + 1:]
    device = p.device
    for name, x in zip(names[1:], arrays[1:]):
        if type(x) is not first or x.device != device:
            return None
        if name in labels:
            if x.dtype not in ad.label_dtypes or x.shape != loss_shape:
                return None
        elif x.dtype != dtype or ((same_shape is None or name in same_shape)
                                  and x.shape != shape):
            return None
    if weights is not None and (type(weights) is not first or weights.device != device
                                or weights.dtype != dtype or weights.shape != loss_shape):
        return None
    if where is not None and (type(where) is not first or where.device != device
                              or where.dtype != ad.xp.bool or where.shape != loss_shape):
        return None
    call = Call(ad, dtype, loss_shape, where, weights, reduction)
    if where is not None:
        call.grad_free = ad.no_gradient(*arrays) if weights is None else \
            ad.no_gradient(*arrays, weights)
        if weights is not None:
            call.weights = call.clean(weights, 0.0, grad_only=True)
    return call, list(arrays)


def _run_time_shape(ad: Adapter, x: Array, shape: tuple[Any, ...], name: str,
                    other: str) -> Array:
    """``x`` checked to have ``shape`` when it runs, where a dimension is unknown when traced
    (the check above let it pass)."""
    if not ad.unknown_dims or (size_of(shape) is not None
                               and size_of(ad.shape(x)) is not None):
        return x
    return ad.run_time_shape(
        x, shape, f"`{name}` and {other} must have the same shape (unilosses never broadcasts "
        f"one against the other), but their shapes differ at run time; reshape one of them:")


def broadcast_checked(ad: Adapter, name: str, x: Array, shape: tuple[Any, ...],
                      what: str) -> Array:
    """:func:`check_broadcastable`, and ``x`` checked again when it runs where a dimension is
    unknown when traced (the static check let it pass)."""
    check_broadcastable(name, ad.shape(x), shape, what)
    if not ad.unknown_dims or (size_of(shape) is not None
                               and size_of(ad.shape(x)) is not None):
        return x
    return ad.run_time_shape(
        x, shape, f"`{name}` does not broadcast to {what} at run time; give it that shape or "
        f"one that broadcasts to it (size-1 or missing leading dimensions):", broadcast=True)


def check_host_value(name: str, x: Any) -> None:
    """A Python number or list may stand for an array argument; anything else (a string) is
    refused here, naming it, rather than by a framework's conversion."""
    if not isinstance(x, (int, float, list, tuple)):
        raise TypeError(
            f"`{name}` must be an array (or a Python number or list), got {type(x).__name__}."
        )


def _numbers_from_numpy_scalars(np: Any, arrays: tuple[Any, ...], weights: Any,
                                where: Any) -> tuple[tuple[Any, ...], Any, Any]:
    """NumPy scalars (``w.mean()``, ``np.float32(2)``, ``np.True_``) as the Python numbers
    they hold, which every framework takes (and which carry none), rather than as arrays of
    a framework of their own; predictions as a 0-d NumPy array, which keeps their dtype."""
    generic = np.generic
    if not any(isinstance(a, generic) for a in (*arrays, weights, where)):
        return arrays, weights, where
    first = np.asarray(arrays[0]) if isinstance(arrays[0], generic) else arrays[0]
    rest = tuple(a.item() if isinstance(a, generic) else a for a in arrays[1:])
    return ((first, *rest), weights.item() if isinstance(weights, generic) else weights,
            where.item() if isinstance(where, generic) else where)


def _class_axis_hint(name: str, shape: tuple[Any, ...], labels: tuple[Any, ...]) -> str:
    """The axis of ``shape`` whose removal leaves the labels' shape: torch's (N, C, H, W)
    layout given with the default axis=-1 ("" when none, or for 2-D predictions, where the
    labels of an (N, C) batch against (C, N) is a mistake of another kind)."""
    if len(shape) < 3:
        return ""
    for a in range(len(shape)):
        if shape[:a] + shape[a + 1:] == labels:
            return (f" `labels` has `{name}`' shape without axis {a}: if that is the class "
                    f"axis (torch's (N, C, ...) layout), pass axis={a}.")
    return ""


def _sparse_hint(ad: Any, name: str, x: Array, loss_shape: tuple[Any, ...],
                 sparse_form: str | None) -> str:
    """Integer targets of the labels' shape, (N,) or Keras's (N, 1), given to a loss that
    takes one-hot or soft targets: name the loss that takes them."""
    shape = ad.shape(x)
    if (sparse_form is None or not ad.is_integral(x) or x.dtype == ad.xp.bool
            or shape not in (loss_shape, (*loss_shape, 1))):
        return ""
    squeezed = "" if shape == loss_shape else f" (squeezed to {fmt_shape(loss_shape)})"
    return (f" `{name}` holds integers, one per sample: if they are class indices, pass them "
            f"to {sparse_form}{squeezed}, or one-hot encode them.")


def prepare(
    names: tuple[str, ...],
    arrays: tuple[Any, ...],
    *,
    reduction: str = "mean",
    weights: Any = None,
    where: Any = None,
    class_axis: int | None = None,
    labels: tuple[str, ...] = (),
    same_shape: tuple[str, ...] | None = None,
    sparse_form: str | None = None,
) -> tuple[Call, list[Array]]:
    """Dispatch, check and cast the arrays of a loss call.

    ``names``/``arrays``: the array arguments, predictions first.  Arrays named in ``labels``
    are integer class labels (shape: predictions without ``class_axis``) and stay integer; the
    others are cast to the computation dtype and must have the predictions' shape (or those
    named in ``same_shape``).  With ``class_axis`` the elementwise loss drops that axis.
    ``sparse_form``: the loss that takes integer labels in place of the targets, named when
    integer targets of the labels' shape are refused.
    """
    if reduction in REDUCTIONS:
        plain = _prepare_plain(names, arrays, reduction, class_axis, labels, same_shape,
                               weights, where)
        if plain is not None:
            return plain
    if reduction not in REDUCTIONS:
        check_reduction(reduction)
    np = sys.modules.get("numpy")
    if np is not None:
        arrays, weights, where = _numbers_from_numpy_scalars(np, arrays, weights, where)
    if weights is None and where is None:
        ad = resolve(names, arrays)
    else:
        ad = resolve(names + ("weights", "where"), arrays + (weights, where))
    xp = ad.xp

    for name, x in zip(names, arrays):
        if not hasattr(x, "shape"):
            check_host_value(name, x)
    p = arrays[0]
    if not hasattr(p, "shape"):
        p = ad.asarray(p)
    try:
        p, dtype = floating_predictions(ad, p, names[0])
    except TypeError as exc:
        swapped = (len(arrays) > 1 and names[1] not in labels
                   and hasattr(arrays[1], "dtype") and ad.is_floating(arrays[1]))
        if not swapped:
            raise
        raise TypeError(f"{exc} If `{names[1]}` holds the predictions: unilosses takes "
                        f"predictions first, then targets (keras.losses take y_true first)."
                        ) from None
    pshape = ad.shape(p)
    if class_axis is None:
        loss_shape = pshape
    else:
        loss_shape = pshape[:class_axis] + pshape[class_axis + 1:]

    out = [p]
    device = ad.device(p)
    for name, x in zip(names[1:], arrays[1:]):
        if not hasattr(x, "shape"):
            # Python values straight in the computation dtype (labels: the default integer)
            x = ad.asarray(x, like=p, dtype=None if name in labels else dtype)
        else:
            _same_device(ad, device, names[0], name, x)
        if name in labels:
            if not ad.is_integral(x) or x.dtype == xp.bool:
                raise TypeError(
                    f"`{name}` must hold integer class indices, got dtype {x.dtype}; "
                    f"for one-hot or soft targets use the categorical (non-sparse) loss."
                )
            try:
                check_same_shape(name, ad.shape(x), f"{names[0]} without axis {class_axis}",
                                 loss_shape)
            except ValueError as exc:
                raise ValueError(f"{exc}{_class_axis_hint(names[0], pshape, ad.shape(x))}"
                                 ) from None
            x = _run_time_shape(ad, x, loss_shape, name, f"`{names[0]}` without axis "
                                f"{class_axis}")
            if x.dtype != xp.int64 and x.dtype != xp.int32:
                # (uint8 labels, MNIST's, and the like) TensorFlow gathers only int16/32/64
                # indices, torch has no min/max or comparisons of uint16/32/64, and an
                # unsigned array cannot be compared with a negative ignore_index
                x = ad.astype(x, ad.index_dtype())
        else:
            if same_shape is None or name in same_shape:
                try:
                    check_same_shape(names[0], pshape, name, ad.shape(x))
                except ValueError as exc:
                    raise ValueError(f"{exc}{_sparse_hint(ad, name, x, loss_shape, sparse_form)}"
                                     ) from None
                x = _run_time_shape(ad, x, pshape, name, f"`{names[0]}`")
            if not (ad.is_floating(x) or ad.is_integral(x)):
                raise TypeError(f"`{name}` must be a real array, got dtype {x.dtype}.")
            x = ad.astype(x, dtype)
        out.append(x)

    mask = None
    if where is not None:
        if not hasattr(where, "shape"):
            check_host_value("where", where)
            where = ad.asarray(where, like=p)
        else:
            _same_device(ad, device, names[0], "where", where)
        if where.dtype != xp.bool:
            raise TypeError(
                f"`where` must be a boolean mask, got dtype {where.dtype}; "
                f"pass e.g. `where=mask != 0`."
            )
        check_broadcastable("where", ad.shape(where), loss_shape, "the elementwise loss of shape")
        mask = xp.broadcast_to(where, loss_shape) if ad.shape(where) != loss_shape else where
    w = None
    if weights is not None:
        if not hasattr(weights, "shape"):
            check_host_value("weights", weights)
            weights = ad.asarray(weights, like=p)
        else:
            _same_device(ad, device, names[0], "weights", weights)
        if not (ad.is_floating(weights) or ad.is_integral(weights)):
            raise TypeError(f"`weights` must be a real array, got dtype {weights.dtype}.")
        weights = broadcast_checked(ad, "weights", weights, loss_shape,
                                    "the elementwise loss of shape")
        w = ad.astype(weights, dtype)
    call = Call(ad, dtype, loss_shape, mask, w, reduction)
    if mask is not None:
        call.grad_free = ad.no_gradient(*out) if w is None else ad.no_gradient(*out, w)
        if w is not None:
            call.weights = call.clean(xp.broadcast_to(w, loss_shape), 0.0, grad_only=True)
    return call, out


__all__ = ["Call", "broadcast_checked", "plain", "prepare", "fmt_shape"]
