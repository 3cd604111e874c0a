"""Margin losses: hinge, squared hinge and categorical hinge (Keras's definitions)."""

from __future__ import annotations

import math
from typing import Any

from .._core.call import Call, prepare
from .._core.eager import run_whole, runs_whole
from .._core.validate import reduced_axis

Array = Any


def _positive_part(call: Call, m: Array) -> Array:
    # max(m, 0) as a select: gradient 0 at m == 0 on every backend (JAX's maximum splits a
    # tie 1/2-1/2, TensorFlow's gives it to the first argument)
    return call.ad.where(m > 0, m, 0.0)


def _margins(predictions: Array, targets: Array, reduction: str, weights: Any,
             where: Any) -> tuple[Call, Array]:
    call, (p, t) = prepare(("predictions", "targets"), (predictions, targets),
                           reduction=reduction, weights=weights, where=where)
    xp, ad = call.xp, call.ad
    # masked targets become 1, a value of both label sets, so they cannot change the test
    t = call.clean(t, 1.0)
    # Keras converts {0, 1} labels to {-1, 1} when every label is 0 or 1; the test is on the
    # whole batch, written as a select so that it traces
    binary = xp.all((t == 0.0) | (t == 1.0))
    t = ad.where(binary, 2.0 * t - 1.0, t)
    return call, 1.0 - t * call.clean(p, 0.0)


def hinge(predictions: Array, targets: Array, /, *, reduction: str = "mean",
          weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Hinge loss for binary classification with a margin of 1.

    Parameters
    ----------
    predictions : array, floating, decision values (e.g. logits)
    targets : array, same shape
        Labels in {-1, 1}, or in {0, 1}: when every (unmasked) label is 0 or 1 they are mapped
        to -1 and 1, as Keras does (so an all-ones batch means all positive).
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
    .. math:: \ell = \max(0, 1 - t\,p)

    The gradient is 0 at the kink :math:`t p = 1` on every backend.

    Peers: ``keras.losses.Hinge`` (same label conversion), ``optax.hinge_loss`` (labels in
    {-1, 1} only, unreduced); ``torch.nn.functional.hinge_embedding_loss`` is a different loss.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> round(float(unilosses.hinge(np.array([0.5, -2.0, 2.0]), np.array([1, 0, 0]))), 6)
    1.166667
    """
    if runs_whole(predictions):
        return run_whole(hinge, locals())
    call, m = _margins(predictions, targets, reduction, weights, where)
    return call.reduce(_positive_part(call, m))


def squared_hinge(predictions: Array, targets: Array, /, *, reduction: str = "mean",
                  weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Squared hinge loss: :math:`\max(0, 1 - t\,p)^2`.

    Labels as in :func:`hinge` (Keras's {0, 1} to {-1, 1} conversion).  Differentiable
    everywhere, with gradient 0 at the kink.

    Peers: ``keras.losses.SquaredHinge``.

    Parameters
    ----------
    predictions : array, floating, decision values (e.g. logits)
    targets : array, same shape, labels in {-1, 1} or {0, 1} (as in :func:`hinge`)
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

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p, t = np.array([0.5, -2.0, 2.0]), np.array([1, 0, 0])
    >>> round(float(unilosses.squared_hinge(p, t)), 6)
    3.083333
    """
    if runs_whole(predictions):
        return run_whole(squared_hinge, locals())
    call, m = _margins(predictions, targets, reduction, weights, where)
    h = _positive_part(call, m)
    return call.reduce(h * h)


def categorical_hinge(predictions: Array, targets: Array, /, *, axis: int = -1,
                      reduction: str = "mean", weights: Array | None = None,
                      where: Array | None = None) -> Array:
    r"""Categorical (Crammer-Singer style) hinge loss with one-hot targets along ``axis``.

    Parameters
    ----------
    predictions : array (..., C, ...), floating, class scores
    targets : array, same shape, one-hot along ``axis``
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
        Scalar for "mean"/"sum"/"weighted_mean"; for "none" the shape of ``predictions`` without
        ``axis``.

    Notes
    -----
    .. math:: \ell = \max\big(0,\ \max_c\,(1 - t_c)\,p_c - \sum_c t_c\,p_c + 1\big)

    Keras's definition, literally: the "best wrong class" is the maximum of
    :math:`(1 - t_c) p_c`, in which the true class counts as 0 (so with all wrong scores
    negative the margin is measured against 0).  The inner maximum shares its gradient
    equally among tied classes on every backend; the outer one is a select (gradient 0 at
    the kink).

    Peers: ``keras.losses.CategoricalHinge``.

    References
    ----------
    Crammer, K., Singer, Y. "On the Algorithmic Implementation of Multiclass Kernel-based
    Vector Machines." JMLR, 2001.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([[2.0, 1.5, -1.0], [0.1, 0.3, 0.2]])
    >>> t = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    >>> round(float(unilosses.categorical_hinge(p, t)), 6)
    0.85
    """
    if runs_whole(predictions):
        return run_whole(categorical_hinge, locals())
    ax = reduced_axis(axis, predictions, "predictions")
    call, (p, t) = prepare(("predictions", "targets"), (predictions, targets),
                           reduction=reduction, weights=weights, where=where, class_axis=ax)
    xp = call.xp
    p, t = call.clean(p, 0.0, axis=ax), call.clean(t, 0.0, axis=ax)
    pos = xp.sum(t * p, axis=ax)
    if call.ad.shape(p)[ax] == 0:
        # no classes: no wrong class's score, the maximum of none -inf (TensorFlow's), the
        # loss 0 (NumPy, torch and JAX refuse a maximum over nothing)
        neg = pos - math.inf
    else:
        neg = xp.max((1.0 - t) * p, axis=ax)
    return call.reduce(_positive_part(call, neg - pos + 1.0))
