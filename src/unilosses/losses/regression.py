"""Regression losses: MSE, RMSE, MAE, Huber, Smooth L1, log-cosh."""

from __future__ import annotations

from typing import Any

from .._core.call import prepare
from .._core.validate import check_positive
from ..backends._base import LOG2

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
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    d = call.clean(p, 0.0) - call.clean(t, 0.0)
    return call.reduce(d * d)


def rmse(predictions: Array, targets: Array, /, *, axis: Any = None,
         weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Root mean squared error over ``axis`` (all axes by default).

    Notes
    -----
    .. math:: \mathrm{RMSE} = \sqrt{\frac{\sum_i w_i m_i (p_i - t_i)^2}{\sum_i m_i}}

    The square root is taken through a safe branch: at zero error its gradient is 0 (the
    derivative of ``sqrt`` at 0 is infinite, and ``0 * inf`` would give NaN), the same choice
    ``l1_loss`` makes at its kink.  A fully masked RMSE is 0.

    Peers: ``keras.metrics.RootMeanSquaredError`` (a metric, no gradient convention).

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> float(unilosses.rmse(np.array([0.0, 2.0]), np.array([2.0, 2.0])))
    1.4142135623730951
    """
    call, (p, t) = prepare(_PT, (predictions, targets), reduction="mean", weights=weights,
                           where=where)
    d = call.clean(p, 0.0) - call.clean(t, 0.0)
    return call.ad.safe_sqrt(call.reduce(d * d, axis=axis))


def mae(predictions: Array, targets: Array, /, *, reduction: str = "mean",
        weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Mean absolute error (L1).

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
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    d = call.clean(p, 0.0) - call.clean(t, 0.0)
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


def huber(predictions: Array, targets: Array, /, *, delta: float = 1.0, reduction: str = "mean",
          weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Huber loss: quadratic for errors up to ``delta``, linear beyond.

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
    delta = check_positive("delta", delta)
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    d = call.clean(p, 0.0) - call.clean(t, 0.0)
    return call.reduce(_huber(call, d, delta))


def smooth_l1(predictions: Array, targets: Array, /, *, beta: float = 1.0,
              reduction: str = "mean", weights: Array | None = None,
              where: Array | None = None) -> Array:
    r"""Smooth L1 loss: ``huber(delta=beta) / beta``.

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
    beta = check_positive("beta", beta)
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    d = call.clean(p, 0.0) - call.clean(t, 0.0)
    return call.reduce(_huber(call, d, beta) * (1.0 / beta))


def log_cosh(predictions: Array, targets: Array, /, *, reduction: str = "mean",
             weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Log-cosh loss.

    Notes
    -----
    .. math:: \ell_i = \log\cosh(p_i - t_i)

    Two branches, each accurate where it is used: for ``|d| < 1``,
    ``log1p(2 sinh(d/2)^2)`` (the usual ``|d| + softplus(-2|d|) - log 2`` loses all relative
    accuracy for small errors through cancellation); otherwise
    ``|d| + softplus(-2|d|) - log 2``, which never overflows.

    Peers: ``keras.losses.LogCosh``, ``optax.log_cosh``.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> round(float(unilosses.log_cosh(np.array([0.0]), np.array([1.0]))), 6)
    0.433781
    """
    call, (p, t) = prepare(_PT, (predictions, targets), reduction=reduction, weights=weights,
                           where=where)
    xp, ad = call.xp, call.ad
    d = call.clean(p, 0.0) - call.clean(t, 0.0)
    a = ad.safe_abs(d)
    small = a < 1.0
    ds = ad.where(small, d, 0.0)
    s = xp.sinh(0.5 * ds)
    near = xp.log1p(2.0 * s * s)
    al = ad.where(small, 1.0, a)
    far = al + ad.softplus(-2.0 * al) - LOG2
    return call.reduce(ad.where(small, near, far))
