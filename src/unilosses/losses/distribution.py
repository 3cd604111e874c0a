"""Losses between distributions and likelihoods: KL divergence, Poisson and Gaussian NLL."""

from __future__ import annotations

import math
from typing import Any

from .._core.call import Call, broadcast_checked, prepare
from .._core.eager import run_whole, runs_whole
from .._core.validate import (
    check_flag,
    check_positive,
    host_shape,
    reduced_axis,
)

Array = Any

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _straight_through_floor(call: Call, v: Array, eps: float) -> Array:
    """``max(v, eps)`` with gradient 1 everywhere: torch's ``gaussian_nll_loss`` clamps the
    variance under ``no_grad``, so a variance below ``eps`` gets the gradient at ``eps``."""
    floored = call.ad.where(v > eps, v, eps)
    return v + call.ad.stop_gradient(floored - v)


def kl_divergence(log_predictions: Array, targets: Array, /, *, axis: int | None = -1,
                  log_target: bool = False, reduction: str = "mean",
                  weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Kullback-Leibler divergence :math:`KL(t \,\|\, p)` from log-probabilities.

    Parameters
    ----------
    log_predictions : array, floating
        Log-probabilities :math:`\log p` (e.g. a ``log_softmax`` output), as torch's
        ``kl_div`` and optax take them.
    targets : array, same shape
        Probabilities :math:`t \ge 0`, or log-probabilities with ``log_target=True``.
    axis : int or None
        The distribution axis, summed over: the elementwise loss is one divergence per
        distribution, with ``axis`` removed (optax's convention).  ``None``: the pointwise
        terms (torch's convention, where "mean" averages over every element).
    log_target : bool
        Whether ``targets`` are log-probabilities (torch's ``log_target``,
        ``optax.kl_divergence_with_log_targets``).
    reduction : {"mean", "sum", "none", "weighted_mean", "batchmean"}
        ``"batchmean"`` (this loss only): the sum divided by the size of the first axis,
        torch's recommended reduction; with ``where``, by the number of first-axis entries that
        keep an element.  With the default ``axis=-1`` on ``(N, C)`` inputs it equals "mean".
    weights : array broadcastable to the elementwise loss, optional
    where : boolean array broadcastable to the elementwise loss, optional
        Elements where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        Scalar for "mean"/"sum"/"weighted_mean"/"batchmean"; for "none" the shape of
        ``log_predictions`` without ``axis`` (every element with ``axis=None``).

    Notes
    -----
    .. math:: \ell = \sum_c t_c (\log t_c - \log p_c),
        \quad t_c \log t_c = 0 \text{ for } t_c = 0

    Terms with :math:`t_c = 0` are exactly 0 with gradient 0, even where
    :math:`\log p_c = -\infty` (torch gives NaN there: ``0 * -inf``).  With ``log_target``
    the term is :math:`e^{t_c}(t_c - \log p_c)`, and 0 for a target of :math:`-\infty`
    (:math:`\log 0`), as for :math:`t_c = 0` above (torch and optax give NaN there).  Targets
    are checked to be non-negative (eagerly).  The gradient with respect to
    :math:`\log p_c` is :math:`-t_c`.

    Peers: ``torch.nn.functional.kl_div`` (``axis=None``; ``reduction="batchmean"``),
    ``optax.kl_divergence`` (``axis=-1``, unreduced), ``keras.losses.KLDivergence``
    (probabilities, both clipped to ``[1e-7, 1]``: ``kl_divergence(log(clip(p)), clip(t))``).

    References
    ----------
    Kullback, S., Leibler, R. A. "On Information and Sufficiency." Annals of Mathematical
    Statistics, 1951.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> logp = np.log(np.array([[0.5, 0.5], [0.9, 0.1]]))
    >>> t = np.array([[1.0, 0.0], [0.5, 0.5]])
    >>> round(float(unilosses.kl_divergence(logp, t)), 6)
    0.601986
    """
    if runs_whole(log_predictions):
        return run_whole(kl_divergence, locals())
    batchmean = reduction == "batchmean"
    log_target = check_flag("log_target", log_target)
    ax = None if axis is None else reduced_axis(axis, log_predictions, "log_predictions")
    call, (x, t) = prepare(("log_predictions", "targets"), (log_predictions, targets),
                           reduction="sum" if batchmean else reduction, weights=weights,
                           where=where, class_axis=ax, same_shape=("targets",))
    xp, ad = call.xp, call.ad
    x = call.clean(x, 0.0) if ax is None else call.clean(x, 0.0, axis=ax)
    t = call.clean(t, 0.0) if ax is None else call.clean(t, 0.0, axis=ax)
    if log_target:
        # a target of log 0 = -inf gives 0, as t = 0 does in the probability form (exp(-inf)
        # times -inf would be NaN); its branch sees 0 instead, so no inf reaches a gradient
        zero = t == -math.inf
        ts = ad.where(zero, 0.0, t)
        term = ad.where(zero, 0.0, xp.exp(ts) * (ts - x))
    else:
        call.require(t >= 0.0, lambda: (
            "`targets` holds negative values (or NaN); they must be probabilities (pass "
            "log-probabilities with log_target=True)."))
        positive = t > 0.0
        # where t == 0 both factors are replaced: 0 * log 0 and 0 * (-inf) must give 0, and
        # their gradients too
        ts = ad.where(positive, t, 1.0)
        term = ad.where(positive, t * (xp.log(ts) - ad.where(positive, x, 0.0)), 0.0)
    loss = term if ax is None else xp.sum(term, axis=ax)
    total = call.reduce(loss)
    if not batchmean:
        return total
    return call.in_dtype(total / _batch_count(call, loss))


def _batch_count(call: Call, loss: Array) -> Any:
    """The number of first-axis entries of the elementwise loss that keep an element."""
    xp, ad = call.xp, call.ad
    shape = call.loss_shape
    if not shape:
        return 1.0
    if call.mask is None and shape[0] is not None:
        # (a float by arithmetic, not float(): float() of jax.export's symbolic dimension
        # raises, and of a symbolic one in torch.export specialises the batch to a constant)
        return max(shape[0], 1) * 1.0
    kept = xp.ones_like(loss) if call.mask is None else ad.astype(call.mask, call.dtype)
    if len(shape) > 1:
        # (a sum, not a max: the max of a zero-size axis is an error, its sum 0, no entry)
        kept = ad.astype(xp.sum(kept, axis=tuple(range(1, len(shape)))) > 0, call.dtype)
    n = xp.sum(kept)
    return ad.where(n > 0, n, 1.0)


def poisson_nll(predictions: Array, targets: Array, /, *, log_input: bool = True,
                full: bool = False, eps: float = 1e-8, reduction: str = "mean",
                weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Poisson negative log-likelihood of ``targets`` (counts) under predicted rates.

    Parameters
    ----------
    predictions : array, floating
        The log-rate :math:`x = \log\lambda` with ``log_input=True`` (the default, as torch),
        else the rate :math:`\lambda \ge 0`.
    targets : array, same shape, counts :math:`k \ge 0`
    log_input : bool
        Whether ``predictions`` are log-rates (torch's ``log_input``).
    full : bool
        Add Stirling's approximation of :math:`\log k!`,
        :math:`k \log k - k + \frac12 \log(2\pi k)`, for :math:`k > 1` (torch's ``full``).
    eps : float > 0
        Added to the rate inside the log when ``log_input=False`` (torch: 1e-8; Keras's
        ``Poisson`` is this loss with ``log_input=False, eps=1e-7``).
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
    .. math:: \ell = e^{x} - k\,x \quad (\texttt{log\_input}), \qquad
        \ell = \lambda - k \log(\lambda + \epsilon) \quad \text{otherwise}

    (the negative log-likelihood up to :math:`\log k!`, or with it when ``full``).  The
    log-input form is the stable one: no log of a rate near 0.  The Stirling term is selected
    with ``where`` on a cleaned input, so counts of 0 and 1 contribute exactly 0.

    Peers: ``torch.nn.functional.poisson_nll_loss`` (same options and defaults),
    ``keras.losses.Poisson``.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> round(float(unilosses.poisson_nll(np.array([0.0, 1.0]), np.array([1.0, 2.0]))), 6)
    0.859141
    """
    if runs_whole(predictions):
        return run_whole(poisson_nll, locals())
    eps = check_positive("eps", eps)
    log_input, full = check_flag("log_input", log_input), check_flag("full", full)
    call, (x, k) = prepare(("predictions", "targets"), (predictions, targets),
                           reduction=reduction, weights=weights, where=where)
    xp, ad = call.xp, call.ad
    k = call.clean(k, 0.0)
    if log_input:
        x = call.clean(x, 0.0)
        loss = xp.exp(x) - k * x
    else:
        x = call.clean(x, 1.0)
        call.require(x >= 0.0, lambda: (
            "`predictions` holds negative rates (or NaN); with log_input=False they must be "
            "rates >= 0 (pass log-rates with log_input=True)."))
        loss = x - k * xp.log(x + eps)
    if full:
        big = k > 1.0
        ks = ad.where(big, k, 1.0)
        loss = loss + ad.where(big, ks * xp.log(ks) - ks + 0.5 * xp.log(2.0 * math.pi * ks),
                               0.0)
    return call.reduce(loss)


def gaussian_nll(predictions: Array, targets: Array, variance: Array, /, *, full: bool = False,
                 eps: float = 1e-6, reduction: str = "mean", weights: Array | None = None,
                 where: Array | None = None) -> Array:
    r"""Gaussian negative log-likelihood with a predicted variance.

    Parameters
    ----------
    predictions : array, floating, the means
    targets : array, same shape
    variance : array
        Non-negative variances: the shape of ``predictions``, one that broadcasts to it (e.g.
        a scalar, or a last axis of 1), or ``predictions.shape[:-1]`` (one variance per row,
        as torch accepts).
    full : bool
        Add the constant :math:`\frac12 \log 2\pi` (torch's ``full``).
    eps : float > 0
        The variance is floored at ``eps`` (torch: 1e-6).
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
    .. math:: \ell = \tfrac12\big(\log \max(v, \epsilon) + (p - t)^2 / \max(v, \epsilon)\big)

    The floor is torch's: a clamp outside differentiation, so the gradient with respect to a
    variance below ``eps`` is the gradient at ``eps`` (not 0).  Variances are checked to be
    non-negative (eagerly), as torch checks.

    Peers: ``torch.nn.functional.gaussian_nll_loss`` (same ``eps``, ``full``, shapes).

    References
    ----------
    Nix, D. A., Weigend, A. S. "Estimating the Mean and Variance of the Target Probability
    Distribution." ICNN, 1994.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([0.0, 1.0]); t = np.array([1.0, 1.0]); v = np.array([1.0, 4.0])
    >>> round(float(unilosses.gaussian_nll(p, t, v)), 6)
    0.596574
    """
    if runs_whole(predictions):
        return run_whole(gaussian_nll, locals())
    eps = check_positive("eps", eps)
    full = check_flag("full", full)
    pshape, vshape = host_shape(predictions), host_shape(variance)
    per_row = len(pshape) >= 1 and vshape == pshape[:-1] and vshape != pshape
    call, (p, t, v) = prepare(("predictions", "targets", "variance"),
                              (predictions, targets, variance), reduction=reduction,
                              weights=weights, where=where, same_shape=("targets",))
    xp, ad = call.xp, call.ad
    if per_row:
        v = xp.expand_dims(v, axis=-1)
    v = broadcast_checked(ad, "variance", v, ad.shape(p), "the predictions of shape")
    if call.mask is not None:
        v = call.clean(xp.broadcast_to(v, call.loss_shape), 1.0)
    call.require(v >= 0.0, lambda: "`variance` holds negative values (or NaN).")
    d = call.clean(p, 0.0) - call.clean(t, 0.0)
    v = _straight_through_floor(call, v, eps)
    loss = 0.5 * (xp.log(v) + d * d / v)
    if full:
        loss = loss + _HALF_LOG_2PI
    return call.reduce(loss)

