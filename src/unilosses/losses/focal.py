"""Focal losses: binary (sigmoid), categorical (softmax) and RetinaNet's anchor focal loss."""

from __future__ import annotations

import math
from typing import Any

from .._core.call import Call, broadcast_checked, plain, prepare
from .._core.checks import checks_enabled
from .._core.eager import run_whole, runs_whole
from .._core.validate import (
    check_nonnegative,
    check_positive,
    check_unit_interval,
    fmt_shape,
    host_shape,
    reduced_axis,
    refuse_boolean,
)
from .classification import (
    EPSILON,
    _smooth,
    along_axis,
    check_class_vector,
    check_ignore_index,
    checked_labels,
    clamped_logits,
    finite_logits,
    inside_clip,
    logit_bound,
    normalized_probabilities,
    per_class,
    pick,
)

Array = Any


def _alpha(alpha: Any) -> tuple[float | None, Any]:
    """(a float or None, an array or None): a per-class ``alpha`` is an array or a sequence."""
    if alpha is None:
        return None, None
    if type(alpha) is not float and type(alpha) is not int:  # (exact: a bool is an int)
        refuse_boolean("alpha", alpha, "a number in [0, 1] or per-class weights")
        if not isinstance(alpha, (int, float)):
            return None, alpha
    return check_unit_interval("alpha", alpha), None


def _scalar(a: Any) -> bool:
    """Whether ``a`` is None or a Python number, not an array.  (Not ``hasattr(a, "shape")``:
    torch.compile cannot ask that of a float option it traces symbolically, as it does one
    that changed between calls.)"""
    return a is None or isinstance(a, (int, float))


def _with_alpha(names: tuple[str, ...], arrays: tuple[Any, ...],
                alpha_array: Any) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    if alpha_array is None:
        return names, arrays
    return names + ("alpha",), arrays + (alpha_array,)


def _check_alpha_values(call: Call, a: Array) -> None:
    call.require_within(a, 0.0, 1.0, lambda: "`alpha` holds values outside [0, 1] (or NaN).")


def _broadcast_alpha(call: Call, out: list[Array], n: int, alpha: float | None,
                     against: str) -> Any:
    """The float ``alpha``, or the alpha array (after ``n`` arrays in ``out``), checked to
    broadcast against the predictions (per class: the last axis)."""
    if len(out) <= n:
        return alpha
    a = out[n]
    a = broadcast_checked(call.ad, "alpha", a, call.ad.shape(out[0]), f"the {against} of shape")
    _check_alpha_values(call, a)
    return a


def _focal_from_logits(call: Call, x: Array, y: Array, alpha: float | None,
                       gamma: float) -> Array:
    ad, xp = call.ad, call.xp
    log_p = ad.log_sigmoid(x)        # log p
    log_q = ad.log_sigmoid(-x)       # log (1 - p)
    if alpha is None:
        ce = -(y * log_p + (1.0 - y) * log_q)
    else:
        ce = -(alpha * y * log_p + (1.0 - alpha) * (1.0 - y) * log_q)
    if gamma == 0.0:
        return ce
    # log |y - p| in log space.  Hard labels (the usual case) take log(1-p) or log p exactly,
    # smooth in x, finite for any gamma >= 0 and any logit.  Soft labels use |y - p| written
    # as |y (1-p) - (1-y) p| (no cancellation for y near 0 or 1); where it is exactly 0 the
    # factor is 0 and its gradient is taken as 0 (it does not exist for 0 < gamma < 1).
    hard_one = y == 1.0
    hard_zero = y == 0.0
    m = y * ad.sigmoid(-x) - (1.0 - y) * ad.sigmoid(x)
    am = ad.safe_abs(m)
    soft_ok = am > 0
    log_soft = xp.log(ad.where(soft_ok, am, 1.0))
    # log q and log p are constant in y, where log |m| is not: as m is linear in y (slope 1),
    # log |m(x, y)| = log |m(x, y0)| + log1p((y - y0) / m(x, y0)), whose second term, of value
    # 0 at y0 = y held constant, carries every derivative in y and the mixed ones, so that
    # targets differentiated at 0 or 1 get their gradient and curvature.  1 / m(x, y0) is
    # taken where its square is finite (|m| from sqrt(smallest normal), else 1): the
    # derivatives in x multiply 0 = y - y0 by it, which must not be inf (NaN at logits of
    # +-1e4); the value and x's gradient stay
    y0 = ad.stop_gradient(y)
    m0 = y0 * ad.sigmoid(-x) - (1.0 - y0) * ad.sigmoid(x)
    floor = math.sqrt(float(xp.finfo(call.dtype).smallest_normal))
    slope = ad.log1p((y - y0) * (1.0 / ad.where(ad.safe_abs(m0) >= floor, m0, 1.0)))
    log_mod = ad.where(hard_one, log_q + slope, ad.where(hard_zero, log_p + slope, log_soft))
    factor = xp.exp(gamma * log_mod)
    factor = ad.where(hard_one | hard_zero | soft_ok, factor, 0.0)
    return factor * ce


def _log_max_sigmoid(xp: Any, a: Array, b: Array) -> Array:
    """``log(max(a, b))`` for ``a = sigmoid(x)``, ``b = sigmoid(-x)``: ``-log1p(exp(-|x|))``.

    Written as ``log1p(-min(a, b))``: the smaller sigmoid carries full relative precision
    (so does the result, down to ``exp(-|x|)`` where it is tiny), and the forms that already
    need both sigmoids spare an ``exp``.
    """
    return xp.log1p(-xp.minimum(a, b))


def _focal_logits_value_grad(call: Call, x: Array, y: Array, alpha: float | None,
                             gamma: float, grad: bool = True) -> tuple[Array, Array | None]:
    r""":func:`_focal_from_logits` for finite logits, and its derivative in ``x``, in closed form.

    With :math:`p = \sigma(x)`, :math:`q = 1 - p`, :math:`m = y - p` (written
    :math:`y q - (1-y) p`), :math:`dp/dx = pq`, :math:`dm/dx = -pq`:
    :math:`FL = |m|^\gamma\, ce` and
    :math:`FL' = -\gamma\, pq\, |m|^\gamma / m \cdot ce + |m|^\gamma (w_0 p - w_1 q)`,
    with :math:`ce = -(w_1 \log p + w_0 \log q)`, :math:`w_1 = \alpha y`,
    :math:`w_0 = (1-\alpha)(1-y)`.  For 0/1 labels :math:`|m|` is :math:`q` or :math:`p`
    exactly, so this is the log-space value of :func:`_focal_from_logits`; where :math:`m = 0`
    the factor's derivative is 0, as there.  Used by backends that evaluate it block by block
    (``Call.chunked_sum``); it needs no branch on the label kind for the usual gamma 0, 1, 2.
    """
    xp, ad = call.xp, call.ad
    # sigmoid, as _focal_from_logits has it: near y == p the factor's derivative hangs on
    # the last bit of y - p
    p, q, log_p, log_q = ad.sigmoid_logs(x)
    ny = 1.0 - y
    w1 = y if alpha is None else alpha * y
    w0 = ny if alpha is None else (1.0 - alpha) * ny
    ce = -(w1 * log_p + w0 * log_q)
    if gamma == 0.0:
        return ce, (w0 * p - w1 * q) if grad else None
    m = y * q - ny * p
    if not grad:
        f = m * m if gamma == 2.0 else ad.safe_pow(xp.abs(m), gamma)
        return f * ce, None
    dce = w0 * p - w1 * q
    if gamma == 2.0:
        f = m * m
        return f * ce, f * dce - (2.0 * p * q * m) * ce
    pq = p * q
    if gamma == 1.0:
        sign = xp.sign(m)
        f, df = m * sign, -pq * sign
    else:
        am = xp.abs(m)
        nonzero = am > 0
        f = ad.where(nonzero, xp.exp(gamma * xp.log(ad.where(nonzero, am, 1.0))), 0.0)
        df = ad.where(nonzero, -gamma * pq * f / ad.where(nonzero, m, 1.0), 0.0)
    return f * ce, df * ce + f * dce


def _hard_focal_logits_value_grad(call: Call, x: Array, y: Array, alpha: float | None,
                                  gamma: float, grad: bool = True,
                                  weight: Array | None = None) -> tuple[Array, Array | None]:
    r""":func:`_focal_logits_value_grad` for labels known to be 0 or 1, in fewer operations.

    With the label's sign :math:`s = 1 - 2y` and :math:`z = s x` (minus the margin),
    :math:`p_t = \sigma(-z)`, :math:`1 - p_t = \sigma(z)` and :math:`-\log p_t =
    \mathrm{softplus}(z)`, so :math:`FL = w\,\sigma(z)^\gamma \mathrm{softplus}(z)` with
    :math:`w = \alpha_t = (1-\alpha) + (2\alpha - 1) y`, and
    :math:`FL' = w s\,\sigma(z)^\gamma (\gamma\, p_t \mathrm{softplus}(z) + \sigma(z))`.
    Every factor is a sigmoid or a softplus of the logit, so value and derivative keep the
    general form's accuracy; for 0/1 labels they are its values.  ``weight`` (0/1 or any
    factor broadcast against ``x``) multiplies value and derivative.
    """
    xp, ad = call.xp, call.ad
    big = float(xp.finfo(call.dtype).max)
    # fused where a backend has the kernels (this form runs where passes are paid one by
    # one, eagerly): z = x - 2yx is s x exactly, w is affine in y, and for 0/1 labels
    # u - 2yu is s u exactly
    z = ad.add_product(x, y, x, -2.0)
    q, pt = ad.sigmoid(z), ad.sigmoid(-z)
    lm = _log_max_sigmoid(xp, q, pt)
    ce = ad.clip(z, 0.0, big) - lm
    w = None if alpha is None else ad.affine(y, 1.0 - alpha, 2.0 * alpha - 1.0)
    if weight is not None:
        w = weight if w is None else w * weight
    if gamma == 0.0:
        f = None
    elif gamma == 1.0:
        f = q
    elif gamma == 2.0:
        f = q * q
    else:  # q ** gamma in log space: log q = -softplus(-z)
        f = xp.exp(gamma * (lm - ad.clip(-z, 0.0, big)))
    wf = f if w is None else w if f is None else w * f
    v = ce if wf is None else wf * ce
    if not grad:
        return v, None
    bracket = q if gamma == 0.0 else ad.add_product(q, pt, ce, gamma)
    u = bracket if wf is None else wf * bracket
    return v, ad.add_product(u, u, y, -2.0)


def _finite_focal_value_grad(call: Call, x: Array, y: Array, alpha: float | None,
                             gamma: float, grad: bool = True, bounded: bool = False,
                             hard: bool = False, **_: Any) -> tuple[Array, Array | None]:
    """The closed form on logits clamped as the composition clamps them (with clamp's zero
    derivative outside); ``bounded``: the caller knows the clamp is the identity; ``hard``:
    the caller knows every label is 0 or 1."""
    form = _hard_focal_logits_value_grad if hard else _focal_logits_value_grad
    if bounded or call.ad.bounded(x):
        return form(call, x, y, alpha, gamma, grad)
    xc = clamped_logits(call, x)
    v, g = form(call, xc, y, alpha, gamma, grad)
    return v, None if g is None else call.ad.where(xc == x, g, 0.0)


def _focal_from_probabilities(call: Call, p: Array, y: Array, alpha: float | None,
                              gamma: float) -> Array:
    xp, ad = call.xp, call.ad
    pc = ad.clip(p, EPSILON, 1.0 - EPSILON)
    log_p, log_q = xp.log(pc), ad.log1p(-pc)
    if alpha is None:
        ce = -(y * log_p + (1.0 - y) * log_q)
    else:
        ce = -(alpha * y * log_p + (1.0 - alpha) * (1.0 - y) * log_q)
    return ad.safe_pow(ad.safe_abs(y - p), gamma) * ce


def _focal_probabilities_value_grad(call: Call, p: Array, y: Array, alpha: float | None,
                                    gamma: float, grad: bool = True, bounded: bool = False,
                                    inside: bool = False, **_: Any) -> tuple[Array, Array | None]:
    r""":func:`_focal_from_probabilities` and its derivative in ``p``, in closed form.

    With :math:`m = y - p`, :math:`\tilde p` = p clipped to :math:`[\epsilon, 1-\epsilon]`:
    :math:`FL' = -\gamma |m|^\gamma / m \cdot ce + |m|^\gamma (w_0 / (1-\tilde p)
    - w_1 / \tilde p)\,[\tilde p = p]`, the factor's derivative 0 where :math:`m = 0` (as
    ``safe_pow``) and the log terms' 0 outside the clip (as the clip's).  ``bounded`` is
    accepted for the block-wise driver and ignored; ``inside``: the caller knows every
    :math:`p` lies in :math:`[\epsilon, 1-\epsilon]`, so the clip and its test are dropped.
    """
    xp, ad = call.xp, call.ad
    pc = p if inside else ad.clip(p, EPSILON, 1.0 - EPSILON)
    log_p, log_q = xp.log(pc), ad.log1p(-pc)
    ny = 1.0 - y
    w1 = y if alpha is None else alpha * y
    w0 = ny if alpha is None else (1.0 - alpha) * ny
    ce = -(w1 * log_p + w0 * log_q)
    m = y - p
    if gamma == 0.0:
        f = None
    elif gamma == 2.0:
        f = m * m
    else:
        f = ad.safe_pow(ad.safe_abs(m), gamma)
    v = ce if f is None else f * ce
    if not grad:
        return v, None
    # w0 / (1 - p) - w1 / p over one denominator: the numerator (1 - alpha)(p - y) + (1 -
    # 2 alpha) y (1 - p) (p - y without alpha) keeps its digits where p nears y, where the
    # two quotients, each rounded, cancelled (BCE's gradient at p = y +- 1e-4 was off by up
    # to 1e7 ulps, float32; torch's binary_cross_entropy: 2)
    q = 1.0 - pc
    if alpha is None:
        dce = (pc - y) / (pc * q)
    else:
        dce = ((1.0 - alpha) * (pc - y) + (1.0 - 2.0 * alpha) * (y * q)) / (pc * q)
    if not inside:
        dce = ad.where(pc == p, dce, 0.0)
    if f is None:
        return v, dce
    if gamma == 2.0:
        df = -2.0 * m
    elif gamma == 1.0:
        df = -xp.sign(m)
    else:
        nonzero = m != 0
        df = ad.where(nonzero, -gamma * f / ad.where(nonzero, m, 1.0), 0.0)
    return v, df * ce + f * dce


def binary_focal_loss(predictions: Array, targets: Array, /, *, alpha: Any = 0.25,
                      gamma: float = 2.0, reduction: str = "mean",
                      weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Binary focal loss on probabilities.

    Parameters
    ----------
    predictions : array, floating, probabilities in [0, 1]
    targets : array, same shape, labels in {0, 1} or soft labels in [0, 1]
    alpha : float in [0, 1], array, or None
        Weight of the positive term (``1 - alpha`` on the negative); None turns class
        balancing off.  An array (e.g. one value per class, shape ``(C,)``) broadcasts against
        the predictions: per class along the last axis.
    gamma : float >= 0
        Focusing parameter; 0 gives (alpha-weighted) binary cross-entropy.
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
    .. math:: FL = -|t - p|^\gamma \big(\alpha\, t \log p + (1-\alpha)(1-t) \log(1-p)\big)

    For 0/1 labels :math:`|t - p| = 1 - p_t`, the modulating factor of Lin et al.; for soft
    labels it stays meaningful (zero when the prediction equals the label).  The logs use
    probabilities clipped to :math:`[10^{-7}, 1 - 10^{-7}]`; the factor uses them unclipped.
    Where :math:`|t - p| = 0` the factor's gradient is 0.

    Peers: ``keras.losses.BinaryFocalCrossentropy`` (``apply_class_balancing=True`` for alpha),
    torchvision's ``sigmoid_focal_loss`` (logits).

    References
    ----------
    Lin, T.-Y., Goyal, P., Girshick, R., He, K., Dollar, P. "Focal Loss for Dense Object
    Detection." ICCV, 2017.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> round(float(unilosses.binary_focal_loss(np.array([0.9, 0.2]), np.array([1, 0]))), 6)
    0.003479
    """
    if runs_whole(predictions):
        return run_whole(binary_focal_loss, locals())
    fused = plain("binary_focal_loss", predictions, targets, alpha, gamma, reduction,
                  EPSILON, checks_enabled, weights=weights, where=where)
    if fused is not None:
        return fused
    a, a_array = _alpha(alpha)
    gamma = check_nonnegative("gamma", gamma)
    names, arrays = _with_alpha(("predictions", "targets"), (predictions, targets), a_array)
    call, out = prepare(names, arrays, reduction=reduction, weights=weights, where=where,
                        same_shape=("targets",))
    a = _broadcast_alpha(call, out, 2, a, "predictions")
    p, t = call.clean(out[0], 0.5), call.clean(out[1], 0.0)
    inside = inside_clip(call, p)
    if not _scalar(a):
        return call.reduce(_focal_from_probabilities(call, p, t, a, gamma))

    def elementwise(pb: Array, tb: Array) -> Array:
        return _focal_from_probabilities(call, pb, tb, a, gamma)

    def value_and_grad(pb: Array, tb: Array, **kw: Any) -> tuple[Array, Array | None]:
        return _focal_probabilities_value_grad(call, pb, tb, a, gamma, inside=inside, **kw)

    # weighted, masked or unreduced, the closed form per element at gamma 0 only: there the
    # composition's derivative cancels near soft targets; above it the factor's term
    # outweighs the log terms' error, and recomputing the closed form in backward cost more
    # than the composition's (torch eager, 1e6 elements, gamma 2, fwd+bwd: 1.06-1.08x, best
    # of 20)
    return call.closed_form_loss(elementwise, value_and_grad, p, t, per_element=gamma == 0.0)


def binary_focal_loss_with_logits(logits: Array, targets: Array, /, *,
                                  alpha: Any = 0.25, gamma: float = 2.0,
                                  reduction: str = "mean", weights: Array | None = None,
                                  where: Array | None = None) -> Array:
    r"""Binary (sigmoid) focal loss on logits, computed in log space.

    Parameters
    ----------
    logits : array, floating
    targets : array, same shape, labels in {0, 1} or soft labels in [0, 1]
    alpha : float in [0, 1], array, or None
        Weight of the positive term (``1 - alpha`` on the negative); None turns class
        balancing off.  An array broadcasts against the logits: per class along the last
        axis.
    gamma : float >= 0
        Focusing parameter; 0 gives (alpha-weighted) binary cross-entropy.
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
    .. math:: FL = -|t - \sigma(x)|^\gamma \big(\alpha\, t \log\sigma(x)
        + (1-\alpha)(1-t) \log(1 - \sigma(x))\big)

    The logs are the backend's stable log-sigmoid.  For 0/1 labels the modulating factor is
    :math:`\exp(\gamma \log(1 - p_t))` with :math:`\log(1-p_t)` a log-sigmoid too, so value and
    gradient are finite for any :math:`\gamma \ge 0` and any logit (+-1e4 included), and every
    backend gets the same gradient at logit 0 (no ``abs``/``max`` ties).

    ``alpha`` may be an array, as in :func:`binary_focal_loss`.

    Peers: torchvision ``ops.sigmoid_focal_loss`` (same defaults, no reduction by default),
    ``optax.sigmoid_focal_loss``, ``keras.losses.BinaryFocalCrossentropy(from_logits=True)``.

    References
    ----------
    Lin, T.-Y., Goyal, P., Girshick, R., He, K., Dollar, P. "Focal Loss for Dense Object
    Detection." ICCV, 2017.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> x = np.array([2.0, -1.0]); t = np.array([1.0, 0.0])
    >>> round(float(unilosses.binary_focal_loss_with_logits(x, t)), 6)
    0.008722
    """
    if runs_whole(logits):
        return run_whole(binary_focal_loss_with_logits, locals())
    fused = plain("binary_focal_loss_with_logits", logits, targets, alpha, gamma,
                  reduction, weights=weights, where=where)
    if fused is not None:
        return fused
    a, a_array = _alpha(alpha)
    gamma = check_nonnegative("gamma", gamma)
    names, arrays = _with_alpha(("logits", "targets"), (logits, targets), a_array)
    call, out = prepare(names, arrays, reduction=reduction, weights=weights, where=where,
                        same_shape=("targets",))
    a = _broadcast_alpha(call, out, 2, a, "logits")
    if _scalar(a):
        total = call.reduced_sum(
            lambda xb, tb: _focal_from_logits(call, finite_logits(call, xb), tb, a, gamma),
            out[0], out[1], bounds=True,
            value_and_grad=lambda xb, tb, **kw: _finite_focal_value_grad(
                call, xb, tb, a, gamma, hard=call.ad.known_binary(tb), **kw))
        if total is not None:
            return total
    if _scalar(a):
        x, t = call.clean_inputs(out[0], out[1])
    else:  # (alpha an array, differentiable, whose gradient sums over the masked too)
        x, t = call.clean(out[0], 0.0, grad_only=True), call.clean(out[1], 0.0, grad_only=True)
    return call.reduce(_focal_from_logits(call, finite_logits(call, x), t, a, gamma))


_NORMALIZE = ("batch", "image")


def _anchor_terms(call: Call, p: Array, t: Array, keep: Array, pos: Array, alpha: Any,
                  gamma: float, logits: bool) -> Array:
    ad = call.ad
    # background anchors are scored as all-negative whatever their targets say (the seed's
    # RetinaNet rule); ignored anchors are cleaned so NaN there cannot reach the gradient
    t = ad.where(pos, t, 0.0)
    p = ad.where(keep, p, 0.0 if logits else 0.5)
    if logits:
        fl = _focal_from_logits(call, finite_logits(call, p), t, alpha, gamma)
    else:
        fl = _focal_from_probabilities(call, p, t, alpha, gamma)
    return ad.where(keep, fl, 0.0)


def _anchor_value_grad(call: Call, x: Array, t: Array, keep: Array, pos: Array,
                       alpha: float | None, gamma: float, logits: bool, grad: bool = True,
                       bounded: bool = False, inside: bool = False,
                       **_: Any) -> tuple[Array, Array | None]:
    ad = call.ad
    # value and derivative are finite at ignored anchors (their inputs are cleaned), and so
    # are inputs known to be finite (0/1 labels, bounded logits): select_finite may zero them
    # by a product with the mask
    hard = ad.known_binary(t)
    t = ad.select_finite(pos, t) if hard else ad.where(pos, t, 0.0)
    if logits and hard and bounded:
        # every input finite: ignored anchors weigh 0 in the closed form, instead of their
        # logits being cleaned and their value and derivative zeroed (three passes for one)
        return _hard_focal_logits_value_grad(call, x, t, alpha, gamma, grad,
                                             weight=ad.astype(keep, call.dtype))
    if logits:
        x = ad.select_finite(keep, x) if bounded else ad.where(keep, x, 0.0)
        v, g = _finite_focal_value_grad(call, x, t, alpha, gamma, grad, bounded, hard)
    else:
        v, g = _focal_probabilities_value_grad(call, ad.where(keep, x, 0.5), t, alpha, gamma,
                                               grad, inside=inside)
    return ad.select_finite(keep, v), None if g is None else ad.select_finite(keep, g)


def _anchor(predictions: Array, targets: Array, anchor_state: Array, alpha: Any,
            gamma: float, normalizer: Any, normalize: str, logits: bool) -> Array:
    a, a_array = _alpha(alpha)
    gamma = check_nonnegative("gamma", gamma)
    if normalize not in _NORMALIZE:
        raise ValueError(f"normalize={normalize!r} is not supported; use 'batch' or 'image'.")
    if normalize == "image" and normalizer is not None:
        raise ValueError("`normalizer` applies to normalize='batch' only; with "
                         "normalize='image' each image is divided by its own positive count.")
    pname = "logits" if logits else "predictions"
    pshape = host_shape(predictions)
    if len(pshape) < 2:
        raise ValueError(
            f"`{pname}` must have shape (..., anchors, classes), got {fmt_shape(pshape)}."
        )
    names, arrays = _with_alpha((pname, "targets", "anchor_state"),
                                (predictions, targets, anchor_state), a_array)
    if _scalar(normalizer) and normalizer is not None:
        # (a bool, NaN, inf, 0 or a negative count divided the sum silently)
        normalizer = check_positive("normalizer", normalizer)
    elif normalizer is not None:
        # an array (a count summed across devices, perhaps traced) or a NumPy scalar: through
        # prepare, which names a string or another framework's array and casts it
        names, arrays = names + ("normalizer",), arrays + (normalizer,)
    call, out = prepare(names, arrays, reduction="sum", where=None, same_shape=("targets",))
    p, t, state = out[0], out[1], out[2]
    if names[-1] == "normalizer":
        normalizer = out.pop()
        if call.ad.shape(normalizer) != ():
            raise ValueError(
                f"`normalizer` has shape {fmt_shape(call.ad.shape(normalizer))}; it must be a "
                f"number or a 0-d array (the count the summed loss is divided by)."
            )
        call.require((normalizer > 0.0) & (normalizer < math.inf), lambda: (
            "`normalizer` holds a value that is not a finite number > 0; pass the (positive) "
            "count to divide the summed loss by, or None for the batch's object count."))
    alpha = _broadcast_alpha(call, out, 3, a, pname)
    xp, ad = call.xp, call.ad
    sshape, want = ad.shape(state), ad.shape(p)[:-1]
    if len(sshape) != len(want) or any(a is not None and b is not None and a != b
                                       for a, b in zip(sshape, want)):
        raise ValueError(
            f"`anchor_state` has shape {fmt_shape(sshape)} but must be {pname}.shape[:-1] = "
            f"{fmt_shape(want)} (one state per anchor: -1 ignore, 0 background, 1 object)."
        )
    call.require((state == -1.0) | (state == 0.0) | (state == 1.0), lambda: (
        "`anchor_state` holds values other than -1 (ignore), 0 (background) and 1 (object); "
        "map your anchor assignments to these three states."))
    keep = xp.expand_dims(state != -1.0, axis=-1)
    positive = state == 1.0
    pos = xp.expand_dims(positive, axis=-1)
    inside = False
    if not logits:
        inside = inside_clip(call, ad.where(keep, p, 0.5), pname)
    total = None
    if normalize == "batch" and _scalar(alpha):
        total = call.chunked_sum(
            lambda pb, tb, kb, sb: _anchor_terms(call, pb, tb, kb, sb, alpha, gamma, logits),
            p, t, keep, pos, columns=ad.shape(p)[-1], bounds=logits,
            value_and_grad=lambda pb, tb, kb, sb, **kw: _anchor_value_grad(
                call, pb, tb, kb, sb, alpha, gamma, logits, inside=inside, **kw))
    if total is None:
        fl = _anchor_terms(call, p, t, keep, pos, alpha, gamma, logits)
    if normalize == "image":
        # torchvision's RetinaNet head: each image's sum over max(1, its positives), then the
        # mean over the images (every leading axis)
        count = xp.sum(ad.astype(positive, call.dtype), axis=-1)
        per_image = xp.sum(xp.sum(fl, axis=-1), axis=-1) / ad.where(count > 1.0, count, 1.0)
        images: int | None = 1
        for d in ad.shape(per_image):
            images = None if d is None or images is None else images * d
        if images is None:
            return xp.mean(per_image)
        return call.in_dtype(xp.sum(per_image) / max(images, 1))
    if total is None:
        total = xp.sum(fl)
    if normalizer is None:
        count = xp.sum(ad.astype(positive, call.dtype))
        return total / ad.where(count > 1.0, count, 1.0)
    return call.in_dtype(total / normalizer)


def anchor_focal_loss(predictions: Array, targets: Array, anchor_state: Array, /, *,
                      alpha: Any = 0.25, gamma: float = 2.0,
                      normalizer: Any = None, normalize: str = "batch") -> Array:
    r"""RetinaNet focal loss on probabilities with anchor states, normalised by the positives.

    Parameters
    ----------
    predictions : array (..., anchors, classes), probabilities
    targets : array (..., anchors, classes), 0/1 class labels
    anchor_state : array (..., anchors)
        -1 ignore, 0 background (scored as all classes negative), 1 object.
    alpha : float in [0, 1], array, or None
        As in :func:`binary_focal_loss`; an array of shape ``(classes,)`` is per class.
    gamma : float >= 0
        Focusing parameter, as in :func:`binary_focal_loss`.
    normalizer : scalar or 0-d array, optional
        Divide by this instead of ``max(1, #anchors with state 1)``: e.g. a positive count
        already summed across devices (``normalize="batch"`` only).
    normalize : {"batch", "image"}
        ``"batch"``: the sum over the whole batch divided by ``max(1, positives in the
        batch)`` (the Keras RetinaNet tutorial).  ``"image"``: each image's sum divided by
        ``max(1, positives of that image)``, then the mean over the images (torchvision's
        ``RetinaNetClassificationHead.compute_loss``); the images are the leading axes before
        ``(anchors, classes)``, and without them the input is one image.

    Returns
    -------
    scalar
        Focal loss summed over every class of every non-ignored anchor, divided by the
        normaliser.

    Notes
    -----
    Per element the loss is :func:`binary_focal_loss`'s.  Anchors are selected with masks
    and masked sums, never boolean indexing, so shapes stay static under jit/compile.

    Peers: keras-retinanet's (fizyr) ``losses.focal`` (the same anchor states, one batch
    normaliser: ``normalize="batch"``), torchvision's
    ``RetinaNetClassificationHead.compute_loss`` (``normalize="image"``, on logits).

    References
    ----------
    Lin, T.-Y. et al. "Focal Loss for Dense Object Detection." ICCV, 2017.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([[[0.9, 0.1], [0.3, 0.2], [0.5, 0.5]]])
    >>> t = np.array([[[1.0, 0.0], [0.0, 0.0], [0.0, 1.0]]])
    >>> s = np.array([[1, 0, -1]])
    >>> round(float(unilosses.anchor_focal_loss(p, t, s)), 6)
    0.031823
    """
    if runs_whole(predictions):
        return run_whole(anchor_focal_loss, locals())
    fused = plain("anchor_focal_loss", predictions, targets, anchor_state, alpha, gamma,
                  normalizer, normalize, EPSILON, checks_enabled)
    if fused is not None:
        return fused
    return _anchor(predictions, targets, anchor_state, alpha, gamma, normalizer, normalize,
                   logits=False)


def anchor_focal_loss_with_logits(logits: Array, targets: Array, anchor_state: Array, /, *,
                                  alpha: Any = 0.25, gamma: float = 2.0,
                                  normalizer: Any = None, normalize: str = "batch") -> Array:
    r"""RetinaNet focal loss on logits with anchor states, normalised by the positives.

    As :func:`anchor_focal_loss`, with the elementwise loss of
    :func:`binary_focal_loss_with_logits` (log space, finite for any logit and gamma).
    ``normalize="image"`` is torchvision's RetinaNet head normalisation.

    Peers: as :func:`anchor_focal_loss`.

    Parameters
    ----------
    logits : array (..., anchors, classes), floating
    targets, anchor_state, alpha, gamma, normalizer, normalize
        As in :func:`anchor_focal_loss`.

    Returns
    -------
    scalar
        As in :func:`anchor_focal_loss`.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> x = np.array([[[2.0, -2.0], [-1.0, -3.0]]])
    >>> t = np.array([[[1.0, 0.0], [0.0, 0.0]]])
    >>> s = np.array([[1, 0]])
    >>> round(float(unilosses.anchor_focal_loss_with_logits(x, t, s)), 6)
    0.018879
    """
    if runs_whole(logits):
        return run_whole(anchor_focal_loss_with_logits, locals())
    fused = plain("anchor_focal_loss_with_logits", logits, targets, anchor_state, alpha,
                  gamma, normalizer, normalize, checks_enabled)
    if fused is not None:
        return fused
    return _anchor(logits, targets, anchor_state, alpha, gamma, normalizer, normalize,
                   logits=True)


# -- softmax (categorical) focal loss ------------------------------------------------------------
#: above this log-probability (p > 0.905) log(1 - p) is taken from the other classes' mass
_NEAR_ONE = -0.1


def log1m_softmax(call: Call, x: Array, logp: Array, axis: int) -> Array:
    """``log(1 - softmax(x))`` along ``axis``, accurate and with a finite gradient everywhere.

    ``log1p(-exp(logp))`` loses every digit as p approaches 1 and is ``-inf`` (NaN gradient)
    once p rounds to 1, which a logit margin of ~40 (float64) or ~17 (float32) already does.
    A probability above 1/2 belongs to the row's unique maximum, and there
    :math:`1 - p_c = \\sum_{k \\ne c} p_k`, so
    :math:`\\log(1 - p_c) = \\mathrm{logsumexp}_{k \\ne c}\\,x_k - \\mathrm{logsumexp}_k\\,x_k`,
    which is exact at any margin and has the bounded derivative of a log-softmax.
    """
    xp, ad = call.xp, call.ad
    # the maximum is replaced by the lowest logit finite_logits lets through, not -inf:
    # a row of one class then gives a finite (hugely negative) log, not inf - inf
    low = -logit_bound(call)
    top = x == xp.max(x, axis=axis, keepdims=True)
    rest = (ad.logsumexp(ad.where(top, low, x), axis, keepdims=True)
            - ad.logsumexp(x, axis, keepdims=True))
    near_one = logp > _NEAR_ONE
    # the unselected branch gets a harmless input, so its gradient cannot be inf * 0
    far = xp.log1p(-xp.exp(ad.where(near_one, _NEAR_ONE, logp)))
    return ad.where(near_one, rest, far)


def _categorical_focal(predictions: Array, targets: Array, *, sparse: bool, logits: bool,
                       alpha: Any, gamma: float, axis: int, label_smoothing: float,
                       ignore_index: int | None, reduction: str, weights: Any,
                       where: Any) -> Array:
    ls = check_unit_interval("label_smoothing", label_smoothing)
    gamma = check_nonnegative("gamma", gamma)
    ignore_index = check_ignore_index(ignore_index)
    a, a_array = _alpha(alpha)
    pname, tname = ("logits" if logits else "predictions"), ("labels" if sparse else "targets")
    ndim = len(host_shape(predictions))
    ax = reduced_axis(axis, predictions, pname)
    names, arrays = _with_alpha((pname, tname), (predictions, targets), a_array)
    call, out = prepare(names, arrays, reduction=reduction, weights=weights, where=where,
                        class_axis=ax, labels=(tname,) if sparse else (),
                        same_shape=() if sparse else ("targets",),
                        sparse_form="sparse_categorical_focal_loss"
                                    + ("_with_logits" if logits else ""))
    xp, ad = call.xp, call.ad
    p = out[0]
    if len(out) > 2:
        out[2] = check_class_vector(call, "alpha", out[2], ad.shape(p), ax)
        _check_alpha_values(call, out[2])
        a = along_axis(call, out[2], ax, ndim)
    if logits:
        x = finite_logits(call, call.clean(p, 0.0, axis=ax))
        logp = ad.log_softmax(x, ax)
        log1m = log1m_softmax(call, x, logp, ax) if gamma else None
    else:
        q = normalized_probabilities(call, p, ax)
        logp = xp.log(q)
        log1m = xp.log1p(-q) if gamma else None
    # the per-class focal term alpha_c (1 - p_c)^gamma (-log p_c); (1 - p)^gamma in log space
    term = -logp if log1m is None else -xp.exp(gamma * log1m) * logp
    if a is not None:
        term = a * term
    if sparse:
        y = checked_labels(call, out[1], p, ax, ignore_index)
        loss = pick(call, term, y, ax)
        if ls:
            loss = (1.0 - ls) * loss + per_class(call, ls, p, ax) * xp.sum(term, axis=ax)
        return call.reduce(loss)
    t = _smooth(call, call.clean(out[1], 0.0, axis=ax), ls, p, ax)
    return call.reduce(xp.sum(t * term, axis=ax))


def categorical_focal_loss(predictions: Array, targets: Array, /, *, alpha: Any = 0.25,
                           gamma: float = 2.0, axis: int = -1, label_smoothing: float = 0.0,
                           reduction: str = "mean", weights: Array | None = None,
                           where: Array | None = None) -> Array:
    r"""Softmax focal loss on probabilities, one-hot or soft targets along ``axis``.

    Parameters
    ----------
    predictions : array (..., C, ...), probabilities along ``axis``
        Renormalised along ``axis`` and clipped to :math:`[10^{-7}, 1 - 10^{-7}]`, as Keras
        does; the clipped values enter both the log and the modulating factor.
    targets : array, same shape
    alpha : float in [0, 1], 1-D array (C,), or None
    gamma : float >= 0
    axis : int
        The class axis; the elementwise loss has it removed.
    label_smoothing : float in [0, 1]
        Targets become :math:`t (1 - s) + s / C`.
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
    .. math:: \ell = -\sum_c t_c\, \alpha_c\, (1 - p_c)^\gamma \log p_c

    (targets smoothed to :math:`t (1 - s) + s / C`).  The factor is
    :math:`\exp(\gamma\,\mathrm{log1p}(-p_c))` on the clipped probability: finite, with a
    finite gradient, for every :math:`\gamma \ge 0`.

    Peers: ``keras.losses.CategoricalFocalCrossentropy`` (same ``alpha=0.25``, ``gamma=2``,
    clip and renormalisation).

    References
    ----------
    Lin, T.-Y., Goyal, P., Girshick, R., He, K., Dollar, P. "Focal Loss for Dense Object
    Detection." ICCV, 2017.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([[0.7, 0.2, 0.1]]); t = np.array([[1.0, 0.0, 0.0]])
    >>> round(float(unilosses.categorical_focal_loss(p, t)), 6)
    0.008025
    """
    if runs_whole(predictions):
        return run_whole(categorical_focal_loss, locals())
    return _categorical_focal(predictions, targets, sparse=False, logits=False, alpha=alpha,
                              gamma=gamma, axis=axis, label_smoothing=label_smoothing,
                              ignore_index=None, reduction=reduction, weights=weights,
                              where=where)


def categorical_focal_loss_with_logits(logits: Array, targets: Array, /, *, alpha: Any = 0.25,
                                       gamma: float = 2.0, axis: int = -1,
                                       label_smoothing: float = 0.0, reduction: str = "mean",
                                       weights: Array | None = None,
                                       where: Array | None = None) -> Array:
    r"""Softmax focal loss on logits, computed in log space.

    Parameters
    ----------
    logits : array (..., C, ...), floating
    targets : array, same shape, one-hot or soft targets along ``axis``
    alpha : float in [0, 1], 1-D array (C,), or None
        The weight of each class's term (one per class as an array); None: 1.
    gamma : float >= 0
        Focusing parameter; 0 gives (alpha-weighted) cross-entropy.
    axis : int
        The class axis; the elementwise loss has it removed.
    label_smoothing : float in [0, 1]
        Targets become :math:`t (1 - s) + s / C`.
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
    .. math:: \ell = -\sum_c t_c\, \alpha_c\, (1 - p_c)^\gamma \log p_c,
        \quad \log p = \mathrm{log\_softmax}(x)

    :math:`(1 - p_c)^\gamma = \exp(\gamma \log(1 - p_c))`, with :math:`\log(1 - p_c)` taken
    from the other classes' log-sum-exp where :math:`p_c > 0.9` (exact when :math:`p_c`
    rounds to 1) and from ``log1p(-exp(log p))`` elsewhere: value and gradient are finite for
    every :math:`\gamma \ge 0` and logits of +-1e4, with no clip (so no zero gradient for very
    confident predictions).  Options as in :func:`categorical_focal_loss`.

    Peers: ``keras.losses.CategoricalFocalCrossentropy(from_logits=True)`` (which applies a
    softmax and then the probability form's clip, so it differs for probabilities within
    1e-7 of 0 or 1).

    References
    ----------
    Lin, T.-Y. et al. "Focal Loss for Dense Object Detection." ICCV, 2017.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> x = np.array([[2.0, 0.5, -1.0]]); t = np.array([[0.0, 1.0, 0.0]])
    >>> round(float(unilosses.categorical_focal_loss_with_logits(x, t, alpha=None)), 6)
    1.184346
    """
    if runs_whole(logits):
        return run_whole(categorical_focal_loss_with_logits, locals())
    return _categorical_focal(logits, targets, sparse=False, logits=True, alpha=alpha,
                              gamma=gamma, axis=axis, label_smoothing=label_smoothing,
                              ignore_index=None, reduction=reduction, weights=weights,
                              where=where)


def sparse_categorical_focal_loss(predictions: Array, labels: Array, /, *, alpha: Any = 0.25,
                                  gamma: float = 2.0, axis: int = -1,
                                  ignore_index: int | None = None,
                                  label_smoothing: float = 0.0, reduction: str = "mean",
                                  weights: Array | None = None,
                                  where: Array | None = None) -> Array:
    r"""Softmax focal loss on probabilities with integer labels.

    Parameters
    ----------
    predictions : array (..., C, ...), probabilities along ``axis``
        Renormalised and clipped as in :func:`categorical_focal_loss`.
    labels : integer array, the shape of ``predictions`` without ``axis``
    alpha : float in [0, 1], 1-D array (C,), or None
        The weight of each class's term (one per class as an array); None: 1.
    gamma : float >= 0
        Focusing parameter; 0 gives (alpha-weighted) cross-entropy.
    axis : int
        The class axis; the elementwise loss has it removed.
    ignore_index : int, optional
        Labels equal to it are left out (zero loss and gradient, not counted by "mean").
    label_smoothing : float in [0, 1]
        The label's one-hot target becomes :math:`(1 - s)` on it plus :math:`s / C` on every
        class.
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
    .. math:: \ell = (1 - s)\, f_y + \frac{s}{C} \sum_c f_c,
        \quad f_c = -\alpha_c (1 - p_c)^\gamma \log p_c

    :func:`categorical_focal_loss` with one-hot targets, without building them: the label's
    term is gathered.  Labels equal to ``ignore_index`` are left out (and not counted by
    "mean").

    Peers: Keras has no sparse form; ``keras.losses.CategoricalFocalCrossentropy`` on one-hot
    targets.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([[0.7, 0.2, 0.1]])
    >>> round(float(unilosses.sparse_categorical_focal_loss(p, np.array([0]))), 6)
    0.008025
    """
    if runs_whole(predictions):
        return run_whole(sparse_categorical_focal_loss, locals())
    return _categorical_focal(predictions, labels, sparse=True, logits=False, alpha=alpha,
                              gamma=gamma, axis=axis, label_smoothing=label_smoothing,
                              ignore_index=ignore_index, reduction=reduction, weights=weights,
                              where=where)


def sparse_categorical_focal_loss_with_logits(logits: Array, labels: Array, /, *,
                                              alpha: Any = 0.25, gamma: float = 2.0,
                                              axis: int = -1, ignore_index: int | None = None,
                                              label_smoothing: float = 0.0,
                                              reduction: str = "mean",
                                              weights: Array | None = None,
                                              where: Array | None = None) -> Array:
    r"""Softmax focal loss on logits with integer labels, computed in log space.

    As :func:`categorical_focal_loss_with_logits` with one-hot targets (gathered, not built),
    and ``ignore_index`` as in :func:`sparse_categorical_cross_entropy_with_logits`.

    Peers: none takes integer labels; ``keras.losses.CategoricalFocalCrossentropy(
    from_logits=True)`` on one-hot targets.

    Parameters
    ----------
    logits : array (..., C, ...), floating
    labels : integer array, the shape of ``logits`` without ``axis``
    alpha : float in [0, 1], 1-D array (C,), or None
        The weight of each class's term (one per class as an array); None: 1.
    gamma : float >= 0
        Focusing parameter; 0 gives (alpha-weighted) cross-entropy.
    axis : int
        The class axis; the elementwise loss has it removed.
    ignore_index : int, optional
        Labels equal to it are left out (zero loss and gradient, not counted by "mean").
    label_smoothing : float in [0, 1]
        The label's one-hot target becomes :math:`(1 - s)` on it plus :math:`s / C` on every
        class.
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

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> x = np.array([[2.0, 0.5, -1.0]])
    >>> round(float(unilosses.sparse_categorical_focal_loss_with_logits(
    ...     x, np.array([1]), alpha=None)), 6)
    1.184346
    """
    if runs_whole(logits):
        return run_whole(sparse_categorical_focal_loss_with_logits, locals())
    return _categorical_focal(logits, labels, sparse=True, logits=True, alpha=alpha,
                              gamma=gamma, axis=axis, label_smoothing=label_smoothing,
                              ignore_index=ignore_index, reduction=reduction, weights=weights,
                              where=where)
