"""Regression losses: MSE, RMSE, MAE, Huber, Smooth L1, log-cosh."""

from __future__ import annotations

from typing import Any

from .._core.call import Call, plain, prepare
from .._core.eager import run_whole, runs_whole
from .._core.validate import (
    check_positive,
    check_unit_interval,
    fmt_shape,
    host_shape,
    normalize_axes,
    reduced_axis,
    refuse_boolean,
)

Array = Any
_PT = ("predictions", "targets")


def mse(predictions: Array, targets: Array, /, *, reduction: str = "mean",
        weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Mean squared error.

    Parameters
    ----------
    predictions : array, floating, any shape
    targets : array or Python values, same shape as ``predictions``
    reduction : {"mean", "sum", "none"}
    weights : array broadcastable to the shape of ``predictions``, optional
    where : boolean array broadcastable to the shape of ``predictions``, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        Scalar for "mean"/"sum"; the shape of ``predictions`` for "none".

    Notes
    -----
    .. math:: \ell_i = (p_i - t_i)^2

    Peers: ``torch.nn.functional.mse_loss``, ``keras.losses.MeanSquaredError``,
    ``optax.squared_error`` (optax leaves the reduction to the user).

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> float(unilosses.mse(np.array([0.0, 2.0]), np.array([1.0, 2.0])))
    0.5
    """
    if runs_whole(predictions):
        return run_whole(mse, locals())
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    p, t = call.clean_inputs(p, t)
    fused = call.native("mse", p, t, cleaned=True)
    if fused is not None:
        return fused
    d = p - t
    return call.reduce(d * d)


def rmse(predictions: Array, targets: Array, /, *, axis: Any = None,
         weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Root mean squared error over ``axis`` (all axes by default).

    Parameters
    ----------
    predictions : array, floating, any shape
    targets : array or Python values, same shape as ``predictions``
    axis : None, int or tuple of ints
        The axes averaged under the square root; None: all of them.
    weights : array broadcastable to the elementwise loss, optional
    where : boolean array broadcastable to the elementwise loss, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        A scalar with ``axis=None``; otherwise the shape of ``predictions`` without ``axis``.

    Notes
    -----
    .. math:: \mathrm{RMSE} = \sqrt{\frac{\sum_i w_i m_i (p_i - t_i)^2}{\sum_i m_i}}

    The square root is taken through a safe branch: at zero error its gradient is 0 (the
    derivative of ``sqrt`` at 0 is infinite, and ``0 * inf`` would give NaN), the same choice
    ``l1_loss`` makes at its kink.  A fully masked RMSE is 0; a NaN among the errors gives
    NaN.

    Peers: ``keras.metrics.RootMeanSquaredError`` (a metric, no gradient convention).

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> float(unilosses.rmse(np.array([0.0, 2.0]), np.array([2.0, 2.0])))
    1.4142135623730951
    """
    if runs_whole(predictions):
        return run_whole(rmse, locals())
    if axis is None and weights is None and where is None:
        fused = plain("rmse", predictions, targets)
        if fused is not None:
            return fused
    call, (p, t) = prepare(_PT, (predictions, targets), reduction="mean", weights=weights,
                           where=where)
    if axis is not None:
        axis = normalize_axes(axis, len(call.ad.shape(p)))
    p, t = call.clean_inputs(p, t)
    ms = call.native("mse", p, t, cleaned=True) if axis is None else None
    if ms is None:
        d = p - t
        ms = call.reduce(d * d, axis=axis)
    return call.ad.safe_sqrt(ms)


def mae(predictions: Array, targets: Array, /, *, reduction: str = "mean",
        weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Mean absolute error (L1).

    Parameters
    ----------
    predictions : array, floating, any shape
    targets : array or Python values, same shape as ``predictions``
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
    .. math:: \ell_i = |p_i - t_i|

    Written as ``d * sign(d)`` so that the gradient at zero error is exactly 0 on every backend
    (JAX's ``abs`` takes 1 there, torch's 0), as ``torch.nn.functional.l1_loss`` gives.

    Peers: ``torch.nn.functional.l1_loss``, ``keras.losses.MeanAbsoluteError``.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> float(unilosses.mae(np.array([0.0, 2.0]), np.array([1.0, 2.0])))
    0.5
    """
    if runs_whole(predictions):
        return run_whole(mae, locals())
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    p, t = call.clean_inputs(p, t)
    fused = call.native("mae", p, t, cleaned=True)
    if fused is not None:
        return fused
    d = p - t
    return call.reduce(call.ad.safe_abs(d))


def _huber(call: Any, d: Array, delta: float) -> Array:
    ad = call.ad
    a = ad.safe_abs(d)
    small = a <= delta
    # each branch sees only inputs it is selected for: no inf from squaring a huge error,
    # no kink of |d| at zero in the linear branch
    dq = ad.where(small, d, 0.0)
    al = ad.where(small, delta, a)
    return ad.where(small, 0.5 * dq * dq, delta * (al - 0.5 * delta))


def _smooth_l1(call: Any, d: Array, beta: float) -> Array:
    """``huber(d, beta) / beta`` without ``1 / beta``, which overflows for a beta subnormal
    in the dtype (below ~3e-39 in float32).  A beta that rounds to 0 in the dtype (or that a
    backend flushes to 0) takes the linear branch everywhere, L1, as torch's kernel does,
    rather than 0 / 0 at a zero error."""
    ad = call.ad
    a = ad.safe_abs(d)
    small = a < beta  # (at a = beta both branches give beta / 2 and slope 1)
    dq = ad.where(small, d, 0.0)
    al = ad.where(small, beta, a)
    return ad.where(small, (0.5 * dq) * (dq / beta), al - 0.5 * beta)


def huber(predictions: Array, targets: Array, /, *, delta: float = 1.0, reduction: str = "mean",
          weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Huber loss: quadratic for errors up to ``delta``, linear beyond.

    Parameters
    ----------
    predictions : array, floating, any shape
    targets : array or Python values, same shape as ``predictions``
    delta : float > 0
        The error at which the loss turns from quadratic to linear.
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
    .. math::
        \ell_i = \begin{cases} \tfrac12 d_i^2 & |d_i| \le \delta \\
                 \delta (|d_i| - \tfrac12 \delta) & \text{otherwise} \end{cases},
        \quad d_i = p_i - t_i

    The branches are selected with ``where`` on cleaned inputs, so errors of 1e30 in float32
    give a finite value and gradient ``delta * sign(d)``.

    Peers: ``torch.nn.functional.huber_loss`` (same ``delta=1.0``), ``keras.losses.Huber``,
    ``optax.huber_loss`` (unreduced).

    References
    ----------
    Huber, P. J. "Robust Estimation of a Location Parameter." Annals of Mathematical
    Statistics, 1964.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> float(unilosses.huber(np.array([0.0, 3.0]), np.array([0.5, 0.0])))
    1.3125
    """
    if runs_whole(predictions):
        return run_whole(huber, locals())
    delta = check_positive("delta", delta)
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    p, t = call.clean_inputs(p, t)
    fused = call.native("huber", p, t, delta, cleaned=True)
    if fused is not None:
        return fused
    d = p - t
    return call.reduce(_huber(call, d, delta))


def smooth_l1(predictions: Array, targets: Array, /, *, beta: float = 1.0,
              reduction: str = "mean", weights: Array | None = None,
              where: Array | None = None) -> Array:
    r"""Smooth L1 loss: ``huber(delta=beta) / beta``.

    Parameters
    ----------
    predictions : array, floating, any shape
    targets : array or Python values, same shape as ``predictions``
    beta : float > 0
        The error at which the loss turns linear; the quadratic part is divided by it.
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
    .. math::
        \ell_i = \begin{cases} \tfrac{1}{2\beta} d_i^2 & |d_i| \le \beta \\
                 |d_i| - \tfrac12 \beta & \text{otherwise} \end{cases}

    Peers: ``torch.nn.functional.smooth_l1_loss`` (same ``beta=1.0``; torch also accepts
    ``beta=0`` meaning L1, for which use :func:`mae`).

    References
    ----------
    Girshick, R. "Fast R-CNN." ICCV, 2015.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> float(unilosses.smooth_l1(np.array([0.0, 3.0]), np.array([0.5, 0.0])))
    1.3125
    """
    if runs_whole(predictions):
        return run_whole(smooth_l1, locals())
    beta = check_positive("beta", beta)
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    p, t = call.clean_inputs(p, t)
    fused = call.native("smooth_l1", p, t, beta, cleaned=True)
    if fused is not None:
        return fused
    d = p - t
    return call.reduce(_smooth_l1(call, d, beta))


#: beyond this |d|, log cosh(d) = |d| - log 2 to every digit of the dtype (the rest,
#: log1p(e^(-2|d|)), is below 4e-11 from 12 on, 2e-35 from 40 on): the formula is evaluated at
#: the clamped |d| and the excess added.  In float32, 12: at 40 the derivatives of the
#: composition ran through products as small as e^(-3u), which XLA on the CPU flushes to 0
#: (JAX's gradient came out 2 from |d| = 29 on, its second derivative -2)
_LOG_COSH_TAIL = {32: 12.0, 64: 40.0}


def _log_cosh_tail(call: Call) -> float:
    return _LOG_COSH_TAIL[32 if float(call.xp.finfo(call.dtype).eps) > 1e-10 else 64]


def _log_cosh_terms(call: Call, d: Array, curvature: bool = False) -> tuple[Array, Array]:
    r"""log cosh(d) for the error ``d``, to 2.5 eps of float32/float64 and finite for finite d,
    and :math:`m = \mathrm{expm1}(u)`, :math:`u = \min(|d|, 12)` (float32; 40 in float64), from
    which tanh follows.

    :math:`\cosh u - 1 = (e^u - 1)^2 / (2 e^u) = m^2 / (2 + 2m)`, so
    :math:`\log\cosh d = \mathrm{log1p}\big(m^2 / (2 + 2m)\big) + (|d| - u)`.  No term cancels
    another near 0, nothing overflows for large :math:`|d|`, and the value alone takes no
    branch (a select costs more than the whole formula on some eager backends).  Two
    transcendental functions, as many as ``|d| + softplus(-2|d|) - log 2``, which cancels
    near 0.

    ``curvature``: the result will be differentiated by autodiff (the composition), so
    ``|d|`` takes the derivative 1 at 0, not ``safe_abs``'s 0: log cosh is even with a zero
    slope at 0, so the first derivative is 0 either way, and the second, log cosh''(0) = 1,
    comes out only then.  And the excess is ``relu(|d| - tail)``, whose derivative below the
    bound is 0 itself: through ``|d| - u`` autodiff adds 1 and the rounded ``tanh(u) - 1``,
    which in float32 quantised the derivative to multiples of 2^-24 (0 for errors below 3e-8,
    6% off at 1e-6).  The same values: both are 0 up to the tail and ``|d| - tail`` beyond.
    """
    xp, ad = call.xp, call.ad
    a = ad.where(d >= 0, d, -d) if curvature else ad.safe_abs(d)
    tail = _log_cosh_tail(call)
    u = ad.clip(a, None, tail)  # (a >= 0: one bound, one eager op)
    m = xp.expm1(u)
    excess = ad.relu(a - tail) if curvature else a - u
    return ad.log1p(m * (m / (2.0 + 2.0 * m))) + excess, m


def _log_cosh(call: Call, d: Array) -> Array:
    return _log_cosh_terms(call, d, curvature=True)[0]


def _log_cosh_value_grad(call: Call, p: Array, t: Array, *, grad: bool = True,
                         value: bool = True, **_: Any) -> tuple[Array | None, Array | None]:
    """log cosh(p - t) and its derivative in p, tanh(p - t), for ``Call.chunked_sum``.

    tanh u = (e^2u - 1) / (e^2u + 1) = m (m + 2) / ((1 + m)^2 + 1), from the value's ``m``:
    a tanh would cost as much as the value's two transcendental functions together (torch
    eager, which never differentiates this derivative again).  Where the backend recomputes
    derivatives (XLA, TensorFlow), ``tanh(d)`` itself, which a framework may differentiate
    again (its curvature at 0 is 1; the m-form's, through ``|d|``, would be 0); asked for the
    derivative alone (``value=False``), only that.
    """
    d = p - t
    if grad and not value and call.ad.recompute_derivative:
        return None, call.xp.tanh(d)
    fast = call.ad.log_cosh(d, grad)
    if fast is not None:
        return fast
    v, m = _log_cosh_terms(call, d)
    if not grad:
        return v, None
    if call.ad.recompute_derivative:
        return v, call.xp.tanh(d)
    e = 1.0 + m
    return v, call.xp.copysign(m * (m + 2.0) / (e * e + 1.0), d)


def log_cosh(predictions: Array, targets: Array, /, *, reduction: str = "mean",
             weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Log-cosh loss.

    Parameters
    ----------
    predictions : array, floating, any shape
    targets : array or Python values, same shape as ``predictions``
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
    .. math:: \ell_i = \log\cosh(p_i - t_i)

    Computed as :math:`\mathrm{log1p}\big(m^2 / (2 + 2m)\big) + (|d| - u)` with
    :math:`d = p - t`, :math:`u = \min(|d|, 12)` (40 in float64) and
    :math:`m = \mathrm{expm1}(u)`: to 2.5 eps everywhere (the usual ``|d| + softplus(-2|d|) -
    log 2`` loses all relative accuracy for small errors through cancellation), and it never
    overflows.  The derivative is
    :math:`\tanh(d)`; where a backend can (torch eager on large inputs, compiled torch, JAX),
    it is computed in closed form alongside the value and backward keeps only it.

    Peers: ``keras.losses.LogCosh``, ``optax.log_cosh``.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> round(float(unilosses.log_cosh(np.array([0.0]), np.array([1.0]))), 6)
    0.433781
    """
    if runs_whole(predictions):
        return run_whole(log_cosh, locals())
    fused = plain("log_cosh", predictions, targets, reduction, weights=weights, where=where)
    if fused is not None:
        return fused
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    total = call.reduced_sum(
        lambda pb, tb: _log_cosh(call, pb - tb), p, t,
        value_and_grad=lambda pb, tb, **kw: _log_cosh_value_grad(call, pb, tb, **kw))
    if total is not None:
        return total
    p, t = call.clean_inputs(p, t)
    return call.reduce(_log_cosh(call, p - t))


#: Keras's ``backend.epsilon()``, the floor of MSLE's and MAPE's divisors and logs
KERAS_EPSILON = 1e-7


def msle(predictions: Array, targets: Array, /, *, reduction: str = "mean",
         weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Mean squared logarithmic error.

    Parameters
    ----------
    predictions : array, floating, any shape
    targets : array or Python values, same shape as ``predictions``
        Values below 1e-7 are raised to it.
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
    .. math:: \ell_i = \big(\log(1 + \max(p_i, \epsilon)) - \log(1 + \max(t_i, \epsilon))
        \big)^2, \quad \epsilon = 10^{-7}

    Values below :math:`\epsilon` (negative ones included) are raised to it, as Keras does, so
    the logs are always defined; the gradient there is 0.  ``log1p`` keeps the digits of
    small values.

    Peers: ``keras.losses.MeanSquaredLogarithmicError`` (same epsilon); torch and optax have
    none.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> round(float(unilosses.msle(np.array([1.0, 3.0]), np.array([0.0, 3.0]))), 6)
    0.240226
    """
    if runs_whole(predictions):
        return run_whole(msle, locals())
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    xp, ad = call.xp, call.ad
    p, t = call.clean_inputs(p, t)
    lp = xp.log1p(ad.where(p > KERAS_EPSILON, p, KERAS_EPSILON))
    lt = xp.log1p(ad.where(t > KERAS_EPSILON, t, KERAS_EPSILON))
    d = lp - lt
    return call.reduce(d * d)


def mape(predictions: Array, targets: Array, /, *, reduction: str = "mean",
         weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Mean absolute percentage error (in percent).

    Parameters
    ----------
    predictions : array, floating, any shape
    targets : array or Python values, same shape as ``predictions``
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
    .. math:: \ell_i = 100\, \frac{|t_i - p_i|}{\max(|t_i|, \epsilon)}, \quad
        \epsilon = 10^{-7}

    The divisor is floored at :math:`\epsilon` (Keras's ``backend.epsilon()``), so a zero
    target gives a large finite loss, not inf.  ``|d|`` is taken with gradient 0 at zero error,
    as :func:`mae`.

    Peers: ``keras.losses.MeanAbsolutePercentageError`` (same epsilon and factor 100).

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> float(unilosses.mape(np.array([1.5, 2.0]), np.array([1.0, 4.0])))
    50.0
    """
    if runs_whole(predictions):
        return run_whole(mape, locals())
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    ad = call.ad
    p, t = call.clean(p, 0.0, grad_only=True), call.clean(t, 1.0, grad_only=True)
    at = ad.safe_abs(t)
    return call.reduce(100.0 * ad.safe_abs(t - p) / ad.where(at > KERAS_EPSILON, at,
                                                              KERAS_EPSILON))


def quantile_loss(predictions: Array, targets: Array, /, *, quantiles: Any = 0.5,
                  reduction: str = "mean", weights: Array | None = None,
                  where: Array | None = None) -> Array:
    r"""Quantile (pinball) loss for one quantile or several at once.

    Parameters
    ----------
    predictions : array, floating
        With a float ``quantiles``: any shape.  With a 1-D ``quantiles`` of length Q: shape
        ``(..., Q)``, one prediction per quantile along the last axis.
    targets : array
        The shape of ``predictions``, or (with 1-D ``quantiles``) that shape without the
        quantile axis: each target is then compared with all Q predictions.
    quantiles : float in [0, 1], or 1-D array / sequence of them
        The quantile level(s) :math:`q`; 0.5 gives half the absolute error.
    reduction : {"mean", "sum", "weighted_mean", "none"}
        "mean" averages over the unmasked elements, "weighted_mean" divides by the summed
        weights, "none" returns the elementwise loss (see "Common semantics" in the README).
    weights : array broadcastable to the elementwise loss, optional
    where : boolean array broadcastable to the elementwise loss, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        "none": the shape of ``predictions`` (quantile axis included); "mean" averages over
        every element, quantiles too.

    Notes
    -----
    .. math:: \ell = \begin{cases} q\,(t - p) & t > p \\ (1 - q)\,(p - t) & t \le p
        \end{cases}

    Under-prediction costs :math:`q` per unit, over-prediction :math:`1 - q`, so the minimiser
    is the q-quantile.  At zero error the gradient is 0 on every backend (a subgradient, as
    :func:`mae` takes).

    Peers: none in torch, Keras or optax (TensorFlow Addons' ``PinballLoss``,
    pytorch-forecasting's ``QuantileLoss``).

    References
    ----------
    Koenker, R., Bassett, G. "Regression Quantiles." Econometrica, 1978.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([[1.0, 2.0, 3.0]]); t = np.array([2.0])
    >>> unilosses.quantile_loss(p, t, quantiles=[0.1, 0.5, 0.9], reduction="none")
    array([[0.1, 0. , 0.1]])
    """
    if runs_whole(predictions):
        return run_whole(quantile_loss, locals())
    if type(quantiles) is not float and type(quantiles) is not int:  # (a bool is an int)
        refuse_boolean("quantiles", quantiles, "a number in [0, 1] or a 1-D array of levels")
        if getattr(quantiles, "shape", None) == ():
            # a NumPy scalar or a 0-d array is the number it holds, as for the other number
            # options (a 0-d torch/JAX/TF array was refused as "several quantiles must be
            # 1-D", a 0-d NumPy one taken)
            quantiles = check_unit_interval("quantiles", quantiles)
    many = not isinstance(quantiles, (int, float))
    if not many:
        q = check_unit_interval("quantiles", quantiles)
        call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction,
                               weights=weights, where=where)
    else:
        pshape, tshape = host_shape(predictions), host_shape(targets)
        expand = len(pshape) >= 1 and tshape == pshape[:-1]
        call, (p, t, q) = prepare(_PT + ("quantiles",), (predictions, targets, quantiles),
                                  reduction=reduction, weights=weights, where=where,
                                  same_shape=() if expand else ("targets",))
        qshape, pshape = call.ad.shape(q), call.ad.shape(p)
        if len(qshape) != 1 or not pshape or (qshape[0] is not None and pshape[-1] is not None
                                              and qshape[0] != pshape[-1]):
            raise ValueError(
                f"`quantiles` has shape {fmt_shape(qshape)}; with several quantiles it must be "
                f"1-D with one level per entry of the predictions' last axis "
                f"({pshape[-1] if pshape else '?'},)."
            )
        call.require_within(q, 0.0, 1.0, lambda: (
            "`quantiles` holds values outside [0, 1] (or NaN)."))
        if expand:
            t = call.xp.expand_dims(t, axis=-1)
    ad = call.ad
    d = call.clean(t, 0.0, grad_only=True) - call.clean(p, 0.0, grad_only=True)
    # both branches are linear: a where per side, and 0 (value and gradient) at d == 0
    return call.reduce(ad.where(d > 0, q * d, ad.where(d < 0, (q - 1.0) * d, 0.0)))


def cosine_similarity_loss(predictions: Array, targets: Array, /, *, axis: int = -1,
                           eps: float = 1e-7, reduction: str = "mean",
                           weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Negative cosine similarity along ``axis``: -1 for parallel vectors, 1 for opposite.

    Parameters
    ----------
    predictions, targets : arrays of one shape (..., D, ...), vectors along ``axis``
    axis : int
        The vector axis; the elementwise loss has it removed.
    eps : float > 0
        Norms are floored at ``eps`` (Keras's ``normalize``), so a zero vector has similarity 0
        and a finite gradient.
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
    .. math:: \ell = -\frac{\sum_k p_k t_k}{\max(\lVert p\rVert, \epsilon)\,
        \max(\lVert t\rVert, \epsilon)}

    The sign is Keras's: minimising the loss aligns the vectors, and :math:`1 + \ell` is the
    cosine distance (``optax.cosine_distance``).  The norm's square root has gradient 0 at a
    zero vector (no ``inf * 0``).  Each vector is divided by its largest :math:`|v_k|` first
    (and ``eps`` with it), so no square overflows: float32 vectors beyond about 1e19 had made
    inf / inf = NaN.  The scale is held constant under differentiation, which is exact: the
    quotient does not depend on it.

    Peers: ``keras.losses.CosineSimilarity`` (same sign and floor), ``optax.cosine_similarity``
    (:math:`-\ell`, floor on the squared norm), ``torch.nn.functional.cosine_similarity``
    (:math:`-\ell`, eps 1e-8).

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([[1.0, 0.0], [1.0, 1.0]]); t = np.array([[1.0, 1.0], [-2.0, -2.0]])
    >>> np.round(unilosses.cosine_similarity_loss(p, t, reduction="none"), 6)
    array([-0.707107,  1.      ])
    """
    if runs_whole(predictions):
        return run_whole(cosine_similarity_loss, locals())
    eps = check_positive("eps", eps)
    ax = reduced_axis(axis, predictions, "predictions")
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where, class_axis=ax, same_shape=("targets",))
    xp, ad = call.xp, call.ad
    p, t = call.clean(p, 0.0, axis=ax), call.clean(t, 0.0, axis=ax)

    def scale(v: Array) -> Array:
        if ad.shape(v)[ax] == 0:  # (no entries: nothing to scale; a maximum of none fails)
            return xp.ones_like(xp.sum(v, axis=ax, keepdims=True))
        s = ad.stop_gradient(xp.max(xp.abs(v), axis=ax, keepdims=True))
        return ad.where(s > 0.0, s, 1.0)  # (a zero vector stays 0; NaN stays NaN)

    def norm(v: Array, s: Array) -> Array:
        n, floor = ad.safe_sqrt(xp.sum(v * v, axis=ax)), eps / xp.squeeze(s, axis=ax)
        return ad.where(n > floor, n, floor)

    sp, st = scale(p), scale(t)
    p, t = p / sp, t / st
    return call.reduce(-xp.sum(p * t, axis=ax) / (norm(p, sp) * norm(t, st)))
