"""Cross-entropy losses: binary and categorical, on probabilities and on logits."""

from __future__ import annotations

import math
from typing import Any

from .._core.call import Call, broadcast_checked, plain, prepare
from .._core.checks import checks_enabled
from .._core.eager import run_whole, runs_whole
from .._core.validate import (
    _number,
    as_index,
    check_nonnegative,
    check_unit_interval,
    fmt_shape,
    host_shape,
    reduced_axis,
    refuse_boolean,
    size_of,
)

Array = Any


def check_finite(name: str, value: Any) -> float:
    """A finite Python number (``_core.validate`` checks signs and ranges; this only that)."""
    return _number(name, value)


#: probabilities are clipped to [EPSILON, 1 - EPSILON] before the log, as Keras does
EPSILON = 1e-7


#: with checks off, the probability losses read whether every probability lies inside the
#: clip (then dropped) only from this many elements on; with checks on, the check's read says
_INSIDE_MIN = 1 << 16


def inside_clip(call: Call, p: Array, name: str = "predictions") -> bool:
    """The range check of probabilities ``p``, and whether every one lies inside the clip
    [eps, 1 - eps], so that the clip can be dropped.  With checks off, the values are read for
    that only from :data:`_INSIDE_MIN` elements on."""
    n = size_of(call.ad.shape(p))
    # (an int: a symbolic size, jax.export's or torch.compile's, is not compared, which
    # jax.export refuses as inconclusive and torch would guard on; it is not read anyway)
    return call.require_probabilities(p, name, inside=(EPSILON, 1.0 - EPSILON),
                                      read=isinstance(n, int) and n >= _INSIDE_MIN)


def finite_logits(call: Call, x: Array) -> Array:
    """Logits with +-inf replaced by +-max/4 of their dtype.

    An infinite logit is meaningful (certainty), but ``0 * inf`` in the loss formulas would
    make it NaN; a quarter of the dtype's maximum behaves the same in every log-sigmoid and
    log-softmax (no overflow when two are added) while staying finite.  The gradient there is
    0, the limit of the true gradient for a correct certain prediction; for a wrong one too,
    the clamp's derivative (the loss is flat beyond the bound, where the unclamped loss's
    slope tends to 1: torch's kernels give NaN at an infinite logit).  Where one read shows
    the clamp changes nothing (``Adapter.bounded``: eagerly, on large inputs), it is skipped.
    """
    return x if call.ad.bounded(x) else clamped_logits(call, x)


def logit_bound(call: Call) -> float:
    """A quarter of the computation dtype's maximum: the logits' clamp."""
    return float(call.xp.finfo(call.dtype).max) / 4


def clamped_logits(call: Call, x: Array) -> Array:
    """:func:`finite_logits` without the bound's read: ``x`` clamped to +-max/4."""
    bound = logit_bound(call)
    return call.ad.clip(x, -bound, bound)


def clamped_log_normalizer(call: Call, x: Array, axis: int) -> tuple[Array, Array]:
    """``(m, log s)`` with ``logsumexp(finite_logits(x)) = m + log s`` along ``axis``, ``m``
    the clamped row maximum (kept, for ``(m - x_y) + log s``: adding ``m`` first would round
    ``log s`` away, e.g. in float32 ``1e4 + 0.3133 - 9999 = 1.3135``), ``log s`` with
    ``axis`` removed.

    The clamp is monotonic, so the row maximum is taken of ``x`` itself and clamped after; the
    elements are clamped inside the exp's pass, their only use.  XLA then fuses the clamp into
    that reduction, where a clamped array read by two reductions (and by backward) is written
    out and read back.  The maximum is finite, so no guard against inf - inf is needed.

    Each element's ``clamp(x) - m`` is taken as ``min(x - m, 0)``, one bound instead of two:
    equal wherever the row's maximum lies above ``-max/4`` (an element below ``-max/4`` is then
    more than ``max/4`` below ``m``, where both exps are 0), and for +inf or above ``max/4``
    (``m = max/4``, each term 1).  A row whose every logit is at most ``-max/4`` is all
    ``-max/4`` when clamped, so its sum is the class count, and its logits get no gradient
    through the sum: the clamp's below ``-max/4``, and at exactly ``-max/4`` its derivative
    from below (the two-bound form passes 1 there).  One select fewer per element: in one
    process, forward+backward under ``jax.jit``, XLA and torch.compile took 0.88-0.93 of the
    two-bound form's time (XLA forward 0.91-0.95).
    """
    xp, ad = call.xp, call.ad
    m = ad.stop_gradient(finite_logits(call, xp.max(x, axis=axis, keepdims=True)))
    if ad.bounded(x):  # every logit shown within the bounds: no clamp (eager, large inputs)
        return m, xp.log(xp.sum(xp.exp(x - m), axis=axis))
    classes = ad.shape(x)[axis]
    if classes is None:  # (unknown while tracing: both bounds)
        return m, xp.log(xp.sum(xp.exp(clamped_logits(call, x) - m), axis=axis))
    s = xp.sum(xp.exp(ad.clip(x - m, None, 0.0)), axis=axis)
    # (NaN rows keep their sum, NaN)
    low = xp.squeeze(m, axis=axis) <= -logit_bound(call)
    # (a float by arithmetic, not float(): float() of jax.export's symbolic dimension raises,
    # and of a symbolic one in torch.export specialises the class count to a constant)
    return m, xp.log(ad.where(low, classes * 1.0, s))


def along_axis(call: Call, v: Array, axis: int, ndim: int) -> Array:
    """The 1-D array ``v`` laid along ``axis`` of an ``ndim``-dimensional array (trailing 1s)."""
    for _ in range(ndim - 1 - axis):
        v = call.xp.expand_dims(v, axis=-1)
    return v


def check_class_vector(call: Call, name: str, v: Array, shape: tuple[Any, ...],
                       axis: int) -> Array:
    """``v`` must be 1-D with one entry per class (axis ``axis`` of ``shape``); returned
    checked again when it runs where the class count is unknown when traced."""
    classes = shape[axis]
    vshape = call.ad.shape(v)
    if len(vshape) != 1 or (classes is not None and vshape[0] is not None
                            and vshape[0] != classes):
        raise ValueError(
            f"`{name}` has shape {fmt_shape(vshape)}; it must be 1-D with one entry per "
            f"class, ({classes},)."
        )
    if classes is not None and vshape[0] is not None:
        return v
    return call.ad.run_time_shape(v, shape[axis:axis + 1], f"`{name}` must be 1-D with one "
                                  f"entry per class, but its length differs from the class "
                                  f"count at run time:")


def _smooth_binary(t: Array, label_smoothing: float) -> Array:
    # towards 0.5, as Keras does: t (1 - s) + s / 2
    if label_smoothing == 0.0:
        return t
    return t * (1.0 - label_smoothing) + 0.5 * label_smoothing


def binary_cross_entropy(predictions: Array, targets: Array, /, *, label_smoothing: float = 0.0,
                         reduction: str = "mean", weights: Array | None = None,
                         where: Array | None = None) -> Array:
    r"""Binary cross-entropy on probabilities.

    Parameters
    ----------
    predictions : array, floating
        Probabilities in [0, 1].
    targets : array, same shape
        Labels in {0, 1} or soft labels in [0, 1] (bool/int are cast), taken as given: values
        outside [0, 1] are not refused, as Keras and optax take them (torch's CPU kernel
        refuses them); the loss is then the formula's, which can be negative.
    label_smoothing : float in [0, 1]
        Targets become :math:`t (1 - s) + s / 2` (towards 0.5, Keras's convention).
    reduction : {"mean", "sum", "weighted_mean", "none"}
        "mean" averages over the unmasked elements, "weighted_mean" divides by the summed
        weights, "none" returns the elementwise loss (see "Common semantics" in the README).
    weights : array broadcastable to the elementwise loss, optional
    where : boolean array broadcastable to the elementwise loss, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        Scalar for "mean"/"sum"/"weighted_mean"; the shape of ``predictions`` for "none".

    Notes
    -----
    .. math:: \ell_i = -\big(t_i \log \tilde p_i + (1 - t_i)\log(1 - \tilde p_i)\big),
        \quad \tilde p_i = \mathrm{clip}(p_i, \epsilon, 1-\epsilon),\ \epsilon = 10^{-7}

    The clip (Keras's convention) keeps the loss finite at exact 0/1 probabilities; there the
    gradient is 0, like the clip's.  Prefer :func:`binary_cross_entropy_with_logits`, which
    needs no clip.

    Peers: ``keras.losses.BinaryCrossentropy`` (same epsilon), ``torch.nn.functional.
    binary_cross_entropy`` (clamps the log at -100 instead).

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> round(float(unilosses.binary_cross_entropy(np.array([0.9, 0.2]), np.array([1, 0]))), 6)
    0.164252
    """
    if runs_whole(predictions):
        return run_whole(binary_cross_entropy, locals())
    # (checks_enabled itself: its ContextVar cannot be read under torch.compile)
    fused = plain("binary_cross_entropy", predictions, targets, label_smoothing, reduction,
                  EPSILON, checks_enabled, weights=weights, where=where)
    if fused is not None:
        return fused
    ls = check_unit_interval("label_smoothing", label_smoothing)
    call, (p, t) = prepare(("predictions", "targets"), (predictions, targets),
                           reduction=reduction, weights=weights, where=where)
    p = call.clean(p, 0.5)
    # probabilities already inside the clip (read with the range check) skip it
    if not inside_clip(call, p):
        p = call.ad.clip(p, EPSILON, 1.0 - EPSILON)
    t = _smooth_binary(call.clean(t, 0.0), ls)
    # whether the range check above ran (and so refused NaN), which a kernel may rely on;
    # asked only by one that does (torch's, off the CPU)
    fused = call.native("binary_cross_entropy", p, t, cleaned=True,
                        checked=lambda: not call.ad.is_tracing(p) and checks_enabled())
    if fused is not None:
        return fused
    def elementwise(pb: Array, tb: Array) -> Array:
        return _bce_probabilities_value_grad(call, pb, tb, grad=False)[0]

    def value_and_grad(pb: Array, tb: Array, **kw: Any) -> tuple[Array | None, Array | None]:
        return _bce_probabilities_value_grad(call, pb, tb, **kw)

    return call.closed_form_loss(elementwise, value_and_grad, p, t)


def _bce_probabilities_value_grad(call: Call, p: Array, t: Array, grad: bool = True,
                                  value: bool = True,
                                  **_: Any) -> tuple[Array | None, Array | None]:
    """The elementwise BCE of probabilities ``p`` inside the clip and its derivative in ``p``,
    ``(p - t) / (p (1 - p))``: autodiff's ``(1 - t) / (1 - p) - t / p`` cancels as ``p``
    nears a soft target (up to 1.4e7 ulps in float32, median 52, at ``|p - t|`` of 1e-7 to
    1e-1; torch's ``binary_cross_entropy`` backward: 2)."""
    xp = call.xp
    v = -(t * xp.log(p) + (1.0 - t) * call.ad.log1p(-p)) if value else None
    if not grad:
        return v, None
    return v, (p - t) / (p * (1.0 - p))


def binary_cross_entropy_with_logits(
    logits: Array, targets: Array, /, *, pos_weight: Array | float | None = None,
    label_smoothing: float = 0.0, reduction: str = "mean", weights: Array | None = None,
    where: Array | None = None,
) -> Array:
    r"""Binary cross-entropy on logits, computed in log space.

    Parameters
    ----------
    logits : array, floating
    targets : array, same shape, labels in [0, 1]
    pos_weight : array or float, optional
        Weight of the positive term, broadcast against the classes (the last axis), with
        torch's meaning.
    label_smoothing : float in [0, 1]
        Targets become :math:`t (1 - s) + s / 2` (towards 0.5, Keras's convention; torch's
        ``binary_cross_entropy_with_logits`` has no smoothing).
    reduction : {"mean", "sum", "weighted_mean", "none"}
        "mean" averages over the unmasked elements, "weighted_mean" divides by the summed
        weights, "none" returns the elementwise loss (see "Common semantics" in the README).
    weights : array broadcastable to the elementwise loss, optional
    where : boolean array broadcastable to the elementwise loss, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        Scalar for "mean"/"sum"/"weighted_mean"; the shape of ``logits`` for "none".

    Notes
    -----
    .. math:: \ell_i = w_+ t_i\,\mathrm{softplus}(-x_i) + (1 - t_i)\,\mathrm{softplus}(x_i)

    since :math:`-\log\sigma(x) = \mathrm{softplus}(-x)` and
    :math:`-\log(1-\sigma(x)) = \mathrm{softplus}(x)`.  Both softplus share one
    :math:`\log(1 + e^{-|x|})` (:math:`\mathrm{softplus}(\pm x) = \mathrm{relu}(\pm x) +
    \log(1 + e^{-|x|})`), and no term cancels another, so logits of +-1e4 give finite values,
    confident correct predictions keep their tiny losses, and the gradient is the exact
    :math:`\sigma(x) - t` (for :math:`w_+ = 1`) everywhere, including at 0, where the usual
    ``max(x, 0) - x t + log1p(exp(-|x|))`` gets different subgradients on different frameworks.

    On torch (eager and compiled) the loss is torch's own kernel, for speed, which computes
    :math:`(1 - t) x - \log\sigma(x)`: for confident correct negatives (:math:`t = 0`,
    :math:`x \ll 0`) its two terms cancel, so in float32 a loss of 4.5e-5 at :math:`x = -10`
    comes out 0.8% high and one at :math:`x \le -15` as 0, as with
    ``F.binary_cross_entropy_with_logits`` itself (the gradient stays exact).  NumPy, JAX and
    TensorFlow keep the form above.

    Peers: ``torch.nn.functional.binary_cross_entropy_with_logits``,
    ``optax.sigmoid_binary_cross_entropy``, ``tf.nn.sigmoid_cross_entropy_with_logits``,
    ``keras.losses.BinaryCrossentropy(from_logits=True)``.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> round(float(unilosses.binary_cross_entropy_with_logits(np.array([2.0, -1.0]),
    ...                                                        np.array([1.0, 0.0]))), 6)
    0.220095
    """
    if runs_whole(logits):
        return run_whole(binary_cross_entropy_with_logits, locals())
    if pos_weight is None:
        fused = plain("binary_cross_entropy_with_logits", logits, targets, label_smoothing,
                      reduction, weights=weights, where=where)
        if fused is not None:
            return fused
    ls = check_unit_interval("label_smoothing", label_smoothing)
    names: tuple[str, ...] = ("logits", "targets")
    arrays: tuple[Any, ...] = (logits, targets)
    if pos_weight is not None and not isinstance(pos_weight, (int, float)):
        refuse_boolean("pos_weight", pos_weight, "a number >= 0 or an array")
        names, arrays = names + ("pos_weight",), arrays + (pos_weight,)
    elif pos_weight is not None:
        # (NaN, inf, a negative weight or True, taken as 1, went into the loss silently)
        pos_weight = check_nonnegative("pos_weight", pos_weight)
    call, out = prepare(names, arrays, reduction=reduction, weights=weights, where=where,
                        same_shape=("targets",))
    ad = call.ad
    pw = pos_weight if len(out) <= 2 else out[2]
    if len(out) > 2:
        pw = broadcast_checked(ad, "pos_weight", pw, ad.shape(out[0]), "the logits of shape")
        call.require_within(pw, 0.0, float(call.xp.finfo(call.dtype).max), lambda: (
            "`pos_weight` holds values outside [0, inf) (or NaN, or inf); give each class's "
            "positive term a finite weight >= 0."))
    if len(out) == 2:
        x, t = call.clean_inputs(out[0], out[1])
    else:  # (pos_weight an array, differentiable, whose gradient sums over the masked too)
        x, t = call.clean(out[0], 0.0, grad_only=True), call.clean(out[1], 0.0, grad_only=True)
    fused = call.native("binary_cross_entropy_with_logits", x, _smooth_binary(t, ls), pw,
                        cleaned=True)
    if fused is not None:
        return fused
    if pos_weight is None:
        total = call.reduced_sum(
            lambda xb, tb: _bce_logits(call, finite_logits(call, xb), _smooth_binary(tb, ls)),
            x, t,
            value_and_grad=lambda xb, tb, **kw: _bce_logits_value_grad(
                call, xb, _smooth_binary(tb, ls), **kw), light=True)
        if total is not None:
            return total
    return call.reduce(_bce_logits(call, finite_logits(call, x), _smooth_binary(t, ls), pw))


def _bce_logits(call: Call, x: Array, t: Array, pw: Any = None) -> Array:
    """The elementwise loss of :func:`binary_cross_entropy_with_logits` on finite logits."""
    ad = call.ad
    # t softplus(-x) + (1 - t) softplus(x) with one exp and one log1p instead of two of each:
    # softplus(+-x) = relu(+-x) + log1p(exp(-|x|)).  relu(-x) = relu(x) - x exactly, and
    # -|x| = x - 2 relu(x) takes relu's side at 0, so the gradient at 0 is the true
    # sigmoid(0) - t on every backend; no term cancels another (soft labels included)
    r = ad.relu(x)
    sp = ad.log1p(call.xp.exp(x - 2.0 * r))
    if pw is None:
        # (1 - t) relu(x) + t relu(-x) as (H - t) x, H = sign(relu(x)) the step (1 above 0,
        # 0 at and below it, derivative 0): the same numbers in two ops fewer (TensorFlow
        # eager, 1e6 elements, forward: 11.6 ms against 15.5; tf.nn 11.3)
        return (call.xp.sign(r) - t) * x + sp
    w1 = t * pw
    nt = 1.0 - t
    return nt * r + w1 * (r - x) + (w1 + nt) * sp


def _bce_logits_value_grad(call: Call, x: Array, t: Array, grad: bool = True,
                           value: bool = True, bounded: bool = False,
                           **_: Any) -> tuple[Array | None, Array | None]:
    """:func:`_bce_logits` of the clamped logits (``bounded``: known unclamped) and its
    derivative in ``x``, ``sigmoid(x) - t`` (to full relative precision for hard labels), 0
    where the clamp acts (as the clamp's)."""
    ad = call.ad
    xc = x if bounded or ad.bounded(x) else clamped_logits(call, x)
    v = _bce_logits(call, xc, t) if value else None
    if not grad:
        return v, None
    # sigmoid(x) - t as (1 - t) - sigmoid(-x) above 0, sigmoid(x) - t below: for a label
    # that agrees with the logit the small sigmoid, not 1 - sigmoid(x) (which rounds to 0
    # from x = 17 in float32: 1.7e7 ulps off, where tf.nn's gradient is 3).  sigmoid(-|x|)
    # by a select, not abs: abs's derivative at 0 is 0, which the second derivative kept
    up = xc > 0
    s = ad.sigmoid(ad.where(up, -xc, xc))
    g = ad.where(up, (1.0 - t) - s, s - t)
    return v, g if xc is x else ad.where(xc == x, g, 0.0)


def _smooth(call: Call, t: Array, label_smoothing: float, x: Array, axis: int) -> Array:
    """Targets smoothed towards the uniform over ``x``'s classes along ``axis``."""
    if label_smoothing == 0.0:
        return t
    return t * (1.0 - label_smoothing) + per_class(call, label_smoothing, x, axis)


def nonnegative_probabilities(call: Call, p: Array, axis: int) -> Array:
    """``p`` with masked rows made harmless, required >= 0 (one read: its extrema)."""
    p = call.clean(p, 1.0, axis=axis)
    call.require_within(p, 0.0, math.inf, lambda: (
        "`predictions` holds negative values (or NaN), but this loss takes probabilities. "
        "Pass logits to the `_with_logits` form instead, or apply a softmax first."))
    return p


def normalized_probabilities(call: Call, p: Array, axis: int) -> Array:
    """Probabilities renormalised along ``axis`` and clipped to [eps, 1 - eps], as Keras does."""
    return _renormalized(call, nonnegative_probabilities(call, p, axis), axis)


def _renormalized(call: Call, p: Array, axis: int) -> Array:
    p = p / call.xp.sum(p, axis=axis, keepdims=True)
    return call.ad.clip(p, EPSILON, 1.0 - EPSILON)


def _categorical_value_grad(call: Call, p: Array, t: Array, *, grad: bool = True,
                            **_: Any) -> tuple[Array, Array | None]:
    r"""Per row (the class axis last), :math:`-\sum_c t_c \log \hat r_c` with
    :math:`\hat r = \mathrm{clip}(r)`, :math:`r = p / S`, :math:`S = \sum_c p_c`, and its
    derivative in ``p``, in closed form: with :math:`a_c = -t_c / \hat r_c` where the clip
    passes (0 outside), :math:`\partial / \partial p_j = (a_j - \sum_c a_c r_c) / S`.
    Backward then walks neither the clip nor the renormalisation (torch eager, in blocks)."""
    xp, ad = call.xp, call.ad
    s = xp.sum(p, axis=-1, keepdims=True)
    r = p / s
    rc = ad.clip(r, EPSILON, 1.0 - EPSILON)
    v = -xp.sum(t * xp.log(rc), axis=-1)
    if not grad:
        return v, None
    a = ad.select_finite(rc == r, -(t / rc))
    return v, (a - xp.sum(a * r, axis=-1, keepdims=True)) / s


def clamped_log_softmax(call: Call, x: Array, axis: int) -> Array:
    """``log_softmax(finite_logits(x))`` along ``axis`` (``Adapter.clamped_log_softmax``; no
    clamp where a read shows it idle)."""
    ad = call.ad
    if ad.bounded(x):
        return ad.log_softmax(x, axis)
    return ad.clamped_log_softmax(x, axis, logit_bound(call))


def _log_probabilities(call: Call, p: Array, axis: int) -> Array:
    """log of probabilities renormalised along ``axis`` and clipped, as Keras does."""
    return call.xp.log(normalized_probabilities(call, p, axis))


def class_weight_arrays(names: tuple[str, ...], arrays: tuple[Any, ...],
                        class_weights: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """``names``/``arrays`` with ``class_weights`` appended (dispatched and cast like them)."""
    if class_weights is None:
        return names, arrays
    return names + ("class_weights",), arrays + (class_weights,)


def prepared_class_weights(call: Call, out: list[Array], n: int, axis: int,
                           ndim: int) -> Array | None:
    """The class weights among ``out`` (after ``n`` arrays), checked and laid along ``axis``."""
    if len(out) <= n:
        return None
    cw = out[n]
    cw = check_class_vector(call, "class_weights", cw, call.ad.shape(out[0]), axis)
    call.require(cw >= 0.0, lambda: "`class_weights` holds negative values (or NaN).")
    return along_axis(call, cw, axis, ndim)


def _categorical(predictions: Array, targets: Array, axis: int, label_smoothing: float,
                 class_weights: Any, reduction: str, weights: Any, where: Any,
                 logits: bool) -> Array:
    ls = check_unit_interval("label_smoothing", label_smoothing)
    ndim = len(host_shape(predictions))
    ax = reduced_axis(axis, predictions, "logits" if logits else "predictions")
    names, arrays = class_weight_arrays((("logits" if logits else "predictions"), "targets"),
                                        (predictions, targets), class_weights)
    call, out = prepare(names, arrays, reduction=reduction, weights=weights, where=where,
                        class_axis=ax, same_shape=("targets",),
                        sparse_form="sparse_categorical_cross_entropy"
                                    + ("_with_logits" if logits else ""))
    xp = call.xp
    p, t = out[0], out[1]
    cw = prepared_class_weights(call, out, 2, ax, ndim)
    if logits:
        # masked rows replaced once, for the kernel (which a mask takes then) and the
        # composition alike, or their gradients masked (not with class weights, another
        # differentiable operand, whose gradient sums over the rows)
        if cw is None:
            p, t = call.clean_inputs(p, t, axis=ax)
            fused = call.native("cross_entropy_with_logits", p, t, ax, ls, cleaned=True)
            if fused is not None:
                return fused
        else:
            p = call.clean(p, 0.0, axis=ax, grad_only=True)
            t = call.clean(t, 0.0, axis=ax, grad_only=True)
        logp = clamped_log_softmax(call, p, ax)
    else:
        q = nonnegative_probabilities(call, p, ax)
        if cw is None and ax == ndim - 1:
            # by rows, in closed form, where blocks are evaluated one by one (torch eager)
            classes = call.ad.shape(p)[ax]
            total = call.reduced_sum(
                lambda pb, tb: -xp.sum(tb * xp.log(_renormalized(call, pb, -1)), axis=-1),
                q, _smooth(call, t, ls, p, ax), columns=classes, blocks_only=True,
                value_and_grad=lambda pb, tb, **kw: _categorical_value_grad(call, pb, tb, **kw))
            if total is not None:
                return total
        logp = call.xp.log(_renormalized(call, q, ax))
        # (q replaced where masked: a NaN in masked targets reaches only their rows'
        # derivatives, which the replacement's select drops)
        (t,) = call.clean_inputs(t, axis=ax)
    ts = _smooth(call, t, ls, p, ax)
    if cw is None:
        return call.reduce(-xp.sum(ts * logp, axis=ax))
    # torch's weighted cross-entropy: each class's term times its weight; "weighted_mean"
    # divides by sum_c w_c t_c (the weight of the label, for one-hot targets)
    return call.reduce(-xp.sum(cw * ts * logp, axis=ax), norm=xp.sum(cw * t, axis=ax))


def categorical_cross_entropy(predictions: Array, targets: Array, /, *, axis: int = -1,
                              label_smoothing: float = 0.0,
                              class_weights: Array | None = None, reduction: str = "mean",
                              weights: Array | None = None,
                              where: Array | None = None) -> Array:
    r"""Categorical cross-entropy on probabilities, one-hot or soft targets along ``axis``.

    Parameters
    ----------
    predictions : array (..., C, ...), floating
        Probabilities along ``axis``, renormalised to sum 1 and clipped to
        :math:`[10^{-7}, 1 - 10^{-7}]`.
    targets : array, same shape
        One-hot or soft targets along ``axis``.
    axis : int
        The class axis; the elementwise loss has it removed.
    label_smoothing : float in [0, 1]
        Targets become :math:`t (1 - s) + s / C`.
    class_weights : 1-D array (C,), optional
        A non-negative weight per class, as torch's ``weight=``: see
        :func:`categorical_cross_entropy_with_logits`.
    reduction : {"mean", "sum", "weighted_mean", "none"}
        "mean" averages over the unmasked elements, "weighted_mean" divides by the summed
        weights, "none" returns the elementwise loss (see "Common semantics" in the README).
    weights : array broadcastable to the elementwise loss, optional
    where : boolean array broadcastable to the elementwise loss, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        Scalar for "mean"/"sum"/"weighted_mean"; for "none" the shape of ``predictions`` without
        ``axis``.

    Notes
    -----
    .. math:: \ell = -\sum_c w_c t_c \log \mathrm{clip}\big(p_c / \textstyle\sum_k p_k,
        \epsilon, 1-\epsilon\big)

    The probabilities are renormalised along ``axis`` first and clipped with
    :math:`\epsilon = 10^{-7}`, as Keras does.  With label smoothing :math:`s`, targets become
    :math:`t (1 - s) + s / C`.  The elementwise result has ``axis`` removed.  :math:`w_c` are
    the ``class_weights`` (1 without them).

    Peers: ``keras.losses.CategoricalCrossentropy``.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([[0.9, 0.1], [0.2, 0.8]]); t = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> round(float(unilosses.categorical_cross_entropy(p, t)), 6)
    0.164252
    """
    if runs_whole(predictions):
        return run_whole(categorical_cross_entropy, locals())
    if class_weights is None and weights is None and where is None:
        fused = plain("categorical_cross_entropy", predictions, targets, axis, label_smoothing,
                      reduction, EPSILON, checks_enabled)
        if fused is not None:
            return fused
    return _categorical(predictions, targets, axis, label_smoothing, class_weights, reduction,
                        weights, where, logits=False)


def categorical_cross_entropy_with_logits(logits: Array, targets: Array, /, *, axis: int = -1,
                                          label_smoothing: float = 0.0,
                                          class_weights: Array | None = None,
                                          reduction: str = "mean",
                                          weights: Array | None = None,
                                          where: Array | None = None) -> Array:
    r"""Softmax cross-entropy on logits, one-hot or soft targets along ``axis``.

    Parameters
    ----------
    logits : array (..., C, ...), floating
    targets : array, same shape
        One-hot or soft targets along ``axis``.
    axis : int
        The class axis; the elementwise loss has it removed.
    label_smoothing : float in [0, 1]
        Targets become :math:`t (1 - s) + s / C`.
    class_weights : 1-D array (C,), optional
        A non-negative weight per class (torch's ``weight=``).  Each class's term is multiplied
        by its weight.  ``reduction="weighted_mean"`` divides the sum by
        :math:`\sum_i \sum_c w_c t_{ic}` (the summed weight of the labels, for one-hot
        targets: torch's normalisation for class indices); ``"mean"`` divides by the number of
        rows (torch's normalisation for probability targets).
    reduction : {"mean", "sum", "weighted_mean", "none"}
        "mean" averages over the unmasked elements, "weighted_mean" divides by the summed
        weights, "none" returns the elementwise loss (see "Common semantics" in the README).
    weights : array broadcastable to the elementwise loss, optional
    where : boolean array broadcastable to the elementwise loss, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        Scalar for "mean"/"sum"/"weighted_mean"; for "none" the shape of ``logits`` without
        ``axis``.

    Notes
    -----
    .. math:: \ell = -\sum_c w_c t_c \,\mathrm{log\_softmax}(x)_c

    ``log_softmax`` subtracts the row maximum (the backend's fused kernel where it has one), so
    logits of +-1e4 are exact.  With label smoothing :math:`s`, targets become
    :math:`t (1 - s) + s / C` (torch's and Keras's convention); the ``"weighted_mean"``
    divisor uses the unsmoothed targets, as torch's does.

    Peers: ``torch.nn.functional.cross_entropy`` (probability targets),
    ``optax.softmax_cross_entropy``, ``tf.nn.softmax_cross_entropy_with_logits``.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> x = np.array([[2.0, 0.0]]); t = np.array([[1.0, 0.0]])
    >>> round(float(unilosses.categorical_cross_entropy_with_logits(x, t)), 6)
    0.126928
    """
    if runs_whole(logits):
        return run_whole(categorical_cross_entropy_with_logits, locals())
    if class_weights is None:
        fused = plain("cross_entropy_with_logits", logits, targets, axis, label_smoothing,
                      reduction, False, weights=weights, where=where)
        if fused is not None:
            return fused
    return _categorical(logits, targets, axis, label_smoothing, class_weights, reduction,
                        weights, where, logits=True)


def check_ignore_index(ignore_index: Any) -> int | None:
    ignore_index = as_index(ignore_index)
    if ignore_index is not None and (isinstance(ignore_index, bool)
                                     or not isinstance(ignore_index, int)):
        raise TypeError(f"`ignore_index` must be an int or None, got {ignore_index!r}.")
    return ignore_index


def per_class(call: Call, value: float, x: Array, axis: int) -> Any:
    """``value`` divided by the number of classes, ``x``'s size along ``axis``."""
    classes = call.ad.shape(x)[axis]
    if classes is not None:  # (known: an int, or torch.compile's symbolic size)
        return value / classes
    return value / call.ad.astype(call.ad.dim(x, axis), call.dtype)


def _range_error(call: Call, y: Array, classes: int, ax: int,
                 ignore_index: int | None) -> str:
    """The message for labels outside [0, classes), with the first few found (read back to
    the host, on the error path only) and, for -100, torch's default ignore_index."""
    bad = sorted({v for v in call.ad.to_numpy(y).ravel().tolist() if not 0 <= v < classes})
    found = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
    return (f"`labels` holds values outside [0, {classes}) for {classes} classes along axis {ax}"
            + ("" if ignore_index is None else f" (other than ignore_index={ignore_index})")
            + (f" (found {found})" if bad else "")
            + "; fix the labels, or mark entries to skip with `ignore_index=` or `where=`."
            + (" -100 is torch's default ignore_index: pass ignore_index=-100 to skip them."
               if ignore_index is None and -100 in bad else ""))


def checked_labels(call: Call, y: Array, x: Array, ax: int,
                   ignore_index: int | None) -> Array:
    """Labels of ``x``'s classes along ``ax`` with ``ignore_index`` masked out,
    range-checked (eagerly) and clamped."""
    ad = call.ad
    classes = ad.shape(x)[ax]
    if ignore_index is not None:
        call.restrict(y != ignore_index)
    y = call.clean(y, 0)
    if classes is None:  # (TensorFlow traced with the class dimension None: no value check)
        return call.xp.minimum(ad.clip(y, 0, None), ad.astype(ad.dim(x, ax) - 1, y.dtype))
    checked = call.require_within(y, 0, classes - 1,
                                  lambda: _range_error(call, y, classes, ax, ignore_index))
    # with checks off (or traced) an out-of-range label must still not index out of bounds
    # (NumPy raises, CUDA asserts): clamp it, as JAX's gather does
    return y if checked else ad.clip(y, 0, classes - 1)


def pick(call: Call, v: Array, y: Array, ax: int) -> Array:
    """``v[..., y, ...]`` along ``ax`` (a gather, no one-hot), ``ax`` removed."""
    xp = call.xp
    return xp.squeeze(call.ad.take_along_axis(v, xp.expand_dims(y, axis=ax), ax), axis=ax)


def _sparse_kernel(call: Call, x: Array, y: Array, ax: int, ls: float,
                   ignore_index: int | None) -> Array | None:
    """The backend's cross-entropy kernel for integer labels, or None.  Rows left out (by
    ``where`` or ``ignore_index``) are left out by the kernel (torch's ``ignore_index``) or
    masked after it, their labels made valid first; their logits stay as given, so the kernel
    declines unless it shows them finite (a NaN there would reach their gradient)."""
    if call.mask is None and ignore_index is None:
        return call.native("cross_entropy_with_logits", x, y, ax, ls,
                           labels=lambda: checked_labels(call, y, x, ax, None))
    return call.native("cross_entropy_with_logits", x, call.clean(y, 0), ax, ls, cleaned=True,
                       keep=None if ignore_index is None else lambda: y != ignore_index,
                       ignore_index=ignore_index, left_out=True)


def _sparse(predictions: Array, labels: Array, axis: int, ignore_index: int | None,
            label_smoothing: float, class_weights: Any, reduction: str, weights: Any,
            where: Any, logits: bool) -> Array:
    ls = check_unit_interval("label_smoothing", label_smoothing)
    ignore_index = check_ignore_index(ignore_index)
    ndim = len(host_shape(predictions))
    ax = reduced_axis(axis, predictions, "logits" if logits else "predictions")
    names, arrays = class_weight_arrays((("logits" if logits else "predictions"), "labels"),
                                        (predictions, labels), class_weights)
    call, out = prepare(names, arrays, reduction=reduction, weights=weights, where=where,
                        class_axis=ax, labels=("labels",), same_shape=())
    xp, ad = call.xp, call.ad
    p = out[0]
    cw = prepared_class_weights(call, out, 2, ax, ndim)
    if logits and cw is None:
        fused = _sparse_kernel(call, p, out[1], ax, ls, ignore_index)
        if fused is not None:
            return fused
    elif logits and call.mask is None and call.weights is None:
        # the backend's own class weights (torch's weight=), where it reduces them itself
        fused = call.native("cross_entropy_with_logits", p, out[1], ax, ls,
                            ignore_index=ignore_index, left_out=True, class_weights=out[2])
        if fused is not None:
            return fused
    y = checked_labels(call, out[1], p, ax, ignore_index)
    if logits:
        x = call.clean(p, 0.0, axis=ax, grad_only=True)
        if cw is None:
            # -log_softmax(x)_y as lse(x) - x_y: no full-size log-softmax is kept (one pass
            # for the reduction, one pick, where XLA and eager backends would write the
            # log-softmax out and read it back)
            m, log_s = clamped_log_normalizer(call, x, ax)
            nll = (xp.squeeze(m, axis=ax) - finite_logits(call, pick(call, x, y, ax))) + log_s
            if ls:
                mean = xp.mean(finite_logits(call, x) - m, axis=ax)
                nll = (1.0 - ls) * nll - ls * (mean - log_s)
            return call.reduce(nll)
        logp = clamped_log_softmax(call, x, ax)
    elif not ls:
        # only the label's probability is needed: pick it and the row's sum, then normalise,
        # clip and log per row (the clip acts elementwise, so picking first changes nothing)
        p = nonnegative_probabilities(call, p, ax)
        py = pick(call, p, y, ax) / xp.sum(p, axis=ax)
        nll = -xp.log(ad.clip(py, EPSILON, 1.0 - EPSILON))
        if cw is None:
            return call.reduce(nll)
        wy = pick(call, xp.broadcast_to(cw, ad.shape(p)), y, ax)
        return call.reduce(wy * nll, norm=wy)
    else:
        logp = _log_probabilities(call, p, ax)
    if cw is None:
        nll = -pick(call, logp, y, ax)
        if ls:
            nll = (1.0 - ls) * nll - ls * xp.mean(logp, axis=ax)
        return call.reduce(nll)
    # torch's weighted form: w_y nll, the smoothing term weighted per class, and
    # "weighted_mean" dividing by the summed weight of the labels
    wy = pick(call, xp.broadcast_to(cw, ad.shape(logp)), y, ax)
    nll = -wy * pick(call, logp, y, ax)
    if ls:
        nll = (1.0 - ls) * nll - per_class(call, ls, p, ax) * xp.sum(cw * logp, axis=ax)
    return call.reduce(nll, norm=wy)


def sparse_categorical_cross_entropy(predictions: Array, labels: Array, /, *, axis: int = -1,
                                     ignore_index: int | None = None,
                                     label_smoothing: float = 0.0,
                                     class_weights: Array | None = None,
                                     reduction: str = "mean",
                                     weights: Array | None = None,
                                     where: Array | None = None) -> Array:
    r"""Categorical cross-entropy on probabilities with integer labels.

    Parameters
    ----------
    predictions : array (..., C, ...), floating
        Probabilities along ``axis``, renormalised and clipped as in
        :func:`categorical_cross_entropy`.
    labels : integer array, the shape of ``predictions`` without ``axis``
        Class indices in ``[0, C)``.
    axis : int
        The class axis.
    ignore_index : int, optional
        Labels equal to it are left out (zero loss and gradient, not counted by "mean").
    label_smoothing : float in [0, 1]
        The label's one-hot target becomes :math:`(1 - s)` on it plus :math:`s / C` on every
        class.
    class_weights : 1-D array (C,), optional
        A non-negative weight per class, as in
        :func:`sparse_categorical_cross_entropy_with_logits`.
    reduction : {"mean", "sum", "weighted_mean", "none"}
        "mean" averages over the unmasked elements, "weighted_mean" divides by the summed
        weights, "none" returns the elementwise loss (see "Common semantics" in the README).
    weights : array broadcastable to the elementwise loss, optional
    where : boolean array broadcastable to the elementwise loss, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        Scalar for "mean"/"sum"/"weighted_mean"; for "none" the shape of ``labels`` (the
        predictions without ``axis``).

    Notes
    -----
    .. math:: \ell = -(1 - s)\,w_y \log \tilde p_{y} - \frac{s}{C}\sum_c w_c \log \tilde p_c

    with :math:`\tilde p` renormalised along ``axis`` and clipped as in
    :func:`categorical_cross_entropy`.  The label's entry is gathered
    (``take_along_axis``); no one-hot is built.  Labels equal to ``ignore_index`` are left
    out, and "mean" divides by the number of the others (torch's convention).

    Peers: ``keras.losses.SparseCategoricalCrossentropy``.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([[0.9, 0.1], [0.2, 0.8]])
    >>> round(float(unilosses.sparse_categorical_cross_entropy(p, np.array([0, 1]))), 6)
    0.164252
    """
    if runs_whole(predictions):
        return run_whole(sparse_categorical_cross_entropy, locals())
    if ignore_index is None and class_weights is None and weights is None and where is None:
        fused = plain("sparse_categorical_cross_entropy", predictions, labels, axis,
                      label_smoothing, reduction, EPSILON, checks_enabled)
        if fused is not None:
            return fused
    return _sparse(predictions, labels, axis, ignore_index, label_smoothing, class_weights,
                   reduction, weights, where, logits=False)


def sparse_categorical_cross_entropy_with_logits(logits: Array, labels: Array, /, *,
                                                 axis: int = -1,
                                                 ignore_index: int | None = None,
                                                 label_smoothing: float = 0.0,
                                                 class_weights: Array | None = None,
                                                 reduction: str = "mean",
                                                 weights: Array | None = None,
                                                 where: Array | None = None) -> Array:
    r"""Softmax cross-entropy on logits with integer labels.

    Parameters
    ----------
    logits : array (..., C, ...), floating
    labels : integer array, the shape of ``logits`` without ``axis``
        Class indices in ``[0, C)``.
    axis : int
        The class axis.
    ignore_index : int, optional
        Labels equal to it are left out (zero loss and gradient, not counted by "mean"),
        torch's ``ignore_index``.
    label_smoothing : float in [0, 1]
        The label's one-hot target becomes :math:`(1 - s)` on it plus :math:`s / C` on every
        class.
    class_weights : 1-D array (C,), optional
        A non-negative weight per class (torch's ``weight=``).  With
        ``reduction="weighted_mean"`` the sum is divided by the summed weight of the
        (non-ignored, unmasked) labels, :math:`\sum_i w_{y_i}`: torch's ``cross_entropy(...,
        weight=w)`` with its default ``"mean"``.  ``"mean"`` divides by their number.
    reduction : {"mean", "sum", "weighted_mean", "none"}
        "mean" averages over the unmasked elements, "weighted_mean" divides by the summed
        weights, "none" returns the elementwise loss (see "Common semantics" in the README).
    weights : array broadcastable to the elementwise loss, optional
    where : boolean array broadcastable to the elementwise loss, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        Scalar for "mean"/"sum"/"weighted_mean"; for "none" the shape of ``labels`` (the
        logits without ``axis``).

    Notes
    -----
    .. math:: \ell = -(1 - s)\,w_y\,\mathrm{log\_softmax}(x)_y
        - \frac{s}{C}\sum_c w_c\,\mathrm{log\_softmax}(x)_c

    (:math:`w = 1` without ``class_weights``.)  Labels equal to ``ignore_index`` are left out
    of the sum and of the count for "mean".

    Peers: ``torch.nn.functional.cross_entropy`` (class indices; ``ignore_index``,
    ``label_smoothing`` with the same meaning), ``optax.softmax_cross_entropy_with_integer_labels``,
    ``tf.nn.sparse_softmax_cross_entropy_with_logits``.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> x = np.array([[2.0, 0.0]])
    >>> round(float(unilosses.sparse_categorical_cross_entropy_with_logits(x, np.array([0]))), 6)
    0.126928
    """
    if runs_whole(logits):
        return run_whole(sparse_categorical_cross_entropy_with_logits, locals())
    fused = plain("cross_entropy_with_logits", logits, labels, axis, label_smoothing,
                  reduction, True, ignore_index, class_weights, checks_enabled,
                  weights=weights, where=where)
    if fused is not None:
        return fused
    return _sparse(logits, labels, axis, ignore_index, label_smoothing, class_weights,
                   reduction, weights, where, logits=True)


def poly1_cross_entropy_with_logits(logits: Array, targets: Array, /, *, epsilon: float = 2.0,
                                    axis: int = -1, reduction: str = "mean",
                                    weights: Array | None = None,
                                    where: Array | None = None) -> Array:
    r"""Poly-1 cross-entropy on logits: cross-entropy plus ``epsilon`` times ``1 - p_t``.

    Parameters
    ----------
    logits : array (..., C, ...), floating
    targets : array, same shape: one-hot or soft targets along ``axis``
    epsilon : float
        The coefficient of the first polynomial term; 2.0 (the paper's ImageNet value, and
        optax's default), -1.0 for detection; 0 gives plain cross-entropy.
    axis : int
        The class axis; the elementwise loss has it removed.
    reduction : {"mean", "sum", "weighted_mean", "none"}
        "mean" averages over the unmasked elements, "weighted_mean" divides by the summed
        weights, "none" returns the elementwise loss (see "Common semantics" in the README).
    weights : array broadcastable to the elementwise loss, optional
    where : boolean array broadcastable to the elementwise loss, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        Scalar for "mean"/"sum"/"weighted_mean"; for "none" the shape of ``logits`` without
        ``axis``.

    Notes
    -----
    .. math:: \ell = -\sum_c t_c \log p_c + \epsilon \sum_c t_c (1 - p_c),
        \quad \log p = \mathrm{log\_softmax}(x)

    (the second sum is :math:`1 - p_t` for one-hot targets).  Computed from one stable
    ``log_softmax``, so logits of +-1e4 are exact.

    Peers: ``optax.poly_loss_cross_entropy`` (same ``epsilon=2.0``, unreduced).

    References
    ----------
    Leng, Z., Tan, M., Liu, C., Cubuk, E. D., Shi, X., Cheng, S., Anguelov, D. "PolyLoss: A
    Polynomial Expansion Perspective of Classification Loss Functions." ICLR, 2022.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> x = np.array([[2.0, 0.5, -1.0]]); t = np.array([[1.0, 0.0, 0.0]])
    >>> round(float(unilosses.poly1_cross_entropy_with_logits(x, t)), 6)
    0.670117
    """
    if runs_whole(logits):
        return run_whole(poly1_cross_entropy_with_logits, locals())
    eps = check_finite("epsilon", epsilon)
    ax = reduced_axis(axis, logits, "logits")
    call, (x, t) = prepare(("logits", "targets"), (logits, targets), reduction=reduction,
                           weights=weights, where=where, class_axis=ax)
    xp = call.xp
    x, t = call.clean_inputs(x, t, axis=ax)
    logp = clamped_log_softmax(call, x, ax)
    return call.reduce(xp.sum(t * (eps * (1.0 - xp.exp(logp)) - logp), axis=ax))
