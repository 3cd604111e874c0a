"""Independent float64 NumPy references: each loss from its documented formula, and gradients.

Nothing here calls unilosses.  Each ``*_value`` function takes the loss's positional arrays as
float64 (or integer/bool) NumPy arrays plus its keyword options and returns the float64 result;
each ``*_grad`` returns the analytic gradient with respect to the first argument for a scalar
result, or None where no simple closed form is written (the runner then uses
:func:`finite_difference` on the cases that allow it).

Two conventions make a reference exact for a dtype rather than for float64 alone:

* inputs are the float32/float64 values the backend received, widened to float64;
* documented constants that a loss compares against or clips to (the probability clip
  :math:`[10^{-7}, 1 - 10^{-7}]`) are rounded to the computation dtype first, as every
  implementation computing in that dtype necessarily does (``1 - 1e-7`` is 0.99999988 in
  float32, which changes ``-log(1 - p)`` at ``p = 1`` from 16.12 to 15.94).

The formulas use the stable forms a careful person would write in float64 (``logaddexp`` for
softplus, max-shifted log-softmax, ``log1p``), so their own error is a few float64 ulps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

Arr = np.ndarray
EPSILON = 1e-7  # the probability clip documented by the cross-entropy and focal losses


# -- shared pieces -------------------------------------------------------------------------------
def _clip_bounds(dtype: str) -> tuple[float, float]:
    dt = np.dtype(dtype).type
    return float(dt(EPSILON)), float(dt(1.0 - EPSILON))


def _mask(where: Arr | None, shape: tuple[int, ...]) -> Arr:
    if where is None:
        return np.ones(shape, dtype=bool)
    return np.broadcast_to(np.asarray(where, dtype=bool), shape)


def _fsum(a: Arr, axis: Any = None) -> Arr:
    """Correctly rounded sum (math.fsum), along ``axis`` or over everything."""
    a = np.asarray(a, dtype=np.float64)
    if axis is None:
        return np.asarray(math.fsum(a.ravel().tolist()))
    moved = np.moveaxis(a, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1])
    out = np.array([math.fsum(row.tolist()) for row in flat])
    return out.reshape(moved.shape[:-1])


def _divisor(m: Arr, reduction: str, weights: Arr | None, axis: Any = None) -> Arr:
    """What "mean" (the unmasked count) or "weighted_mean" (the unmasked weights' sum) divide by
    (1 where that is 0: an empty mean is 0)."""
    if reduction == "weighted_mean" and weights is not None:
        count = _fsum(np.where(m, np.broadcast_to(weights, m.shape), 0.0), axis)
    else:
        count = _fsum(m.astype(np.float64), axis)
    return np.where(count != 0, count, 1.0)


def reduce(loss: Arr, reduction: str = "mean", weights: Arr | None = None,
           where: Arr | None = None, axis: Any = None) -> Arr:
    """The documented reduction: weights, then the mask; "mean" divides by the unmasked count,
    "weighted_mean" by the sum of the unmasked weights."""
    loss = np.asarray(loss, dtype=np.float64)
    m = _mask(where, loss.shape)
    if weights is not None:
        loss = loss * np.broadcast_to(weights, loss.shape)
    loss = np.where(m, loss, 0.0)
    if reduction == "none":
        return loss
    total = _fsum(loss, axis)
    if reduction == "sum":
        return total
    return total / _divisor(m, reduction, weights, axis)


def reduce_grad(dloss: Arr, reduction: str = "mean", weights: Arr | None = None,
                where: Arr | None = None) -> Arr:
    """Gradient of :func:`reduce` (over all elements) given the elementwise derivative."""
    dloss = np.asarray(dloss, dtype=np.float64)
    m = _mask(where, dloss.shape)
    g = dloss
    if weights is not None:
        g = g * np.broadcast_to(weights, g.shape)
    if reduction in ("mean", "weighted_mean"):
        g = g / _divisor(m, reduction, weights)
    return np.where(m, g, 0.0)


def _softplus(x: Arr) -> Arr:
    return np.logaddexp(0.0, x)


def _sigmoid(x: Arr) -> Arr:
    return np.exp(-_softplus(-x))


def _log_softmax(x: Arr, axis: int) -> Arr:
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


def _with_class_mask(where: Arr | None, shape: tuple[int, ...], axis: int) -> Arr:
    """The row mask broadcast over the class axis (``where`` has the shape of the loss)."""
    rows = shape[:axis] + shape[axis + 1:]
    return np.expand_dims(_mask(where, rows), axis)


def _errstate() -> Any:
    # masked positions may hold NaN on purpose; the formulas run on them and are then dropped
    return np.errstate(all="ignore")


# -- regression ----------------------------------------------------------------------------------
def _diff(p: Arr, t: Arr, where: Arr | None) -> Arr:
    m = _mask(where, p.shape)
    return np.where(m, p, 0.0) - np.where(m, t, 0.0)


def mse_value(p: Arr, t: Arr, *, dtype: str, reduction: str = "mean", weights: Arr | None = None,
              where: Arr | None = None) -> Arr:
    d = _diff(p, t, where)
    return reduce(d * d, reduction, weights, where)


def mse_grad(p: Arr, t: Arr, *, dtype: str, reduction: str = "mean", weights: Arr | None = None,
             where: Arr | None = None) -> Arr:
    return reduce_grad(2.0 * _diff(p, t, where), reduction, weights, where)


def mae_value(p: Arr, t: Arr, *, dtype: str, reduction: str = "mean", weights: Arr | None = None,
              where: Arr | None = None) -> Arr:
    return reduce(np.abs(_diff(p, t, where)), reduction, weights, where)


def mae_grad(p: Arr, t: Arr, *, dtype: str, reduction: str = "mean", weights: Arr | None = None,
             where: Arr | None = None) -> Arr:
    # documented: the gradient at zero error is 0
    return reduce_grad(np.sign(_diff(p, t, where)), reduction, weights, where)


def _huber_elem(d: Arr, delta: float) -> Arr:
    a = np.abs(d)
    return np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))


def huber_value(p: Arr, t: Arr, *, dtype: str, delta: float = 1.0, reduction: str = "mean",
                weights: Arr | None = None, where: Arr | None = None) -> Arr:
    return reduce(_huber_elem(_diff(p, t, where), delta), reduction, weights, where)


def huber_grad(p: Arr, t: Arr, *, dtype: str, delta: float = 1.0, reduction: str = "mean",
               weights: Arr | None = None, where: Arr | None = None) -> Arr:
    return reduce_grad(np.clip(_diff(p, t, where), -delta, delta), reduction, weights, where)


def smooth_l1_value(p: Arr, t: Arr, *, dtype: str, beta: float = 1.0, reduction: str = "mean",
                    weights: Arr | None = None, where: Arr | None = None) -> Arr:
    d = _diff(p, t, where)
    a = np.abs(d)
    elem = np.where(a <= beta, 0.5 * d * d / beta, a - 0.5 * beta)
    return reduce(elem, reduction, weights, where)


def smooth_l1_grad(p: Arr, t: Arr, *, dtype: str, beta: float = 1.0, reduction: str = "mean",
                   weights: Arr | None = None, where: Arr | None = None) -> Arr:
    return reduce_grad(np.clip(_diff(p, t, where), -beta, beta) / beta, reduction, weights, where)


def log_cosh_value(p: Arr, t: Arr, *, dtype: str, reduction: str = "mean",
                   weights: Arr | None = None, where: Arr | None = None) -> Arr:
    a = np.abs(_diff(p, t, where))
    # log cosh a = log1p(cosh a - 1) and cosh a - 1 = 2 sinh(a/2)^2 (no cancellation for small
    # a); for large a, a + log1p(exp(-2a)) - log 2 (no overflow)
    small = np.log1p(2.0 * np.sinh(0.5 * np.minimum(a, 1.0)) ** 2)
    large = a + np.log1p(np.exp(-2.0 * a)) - math.log(2.0)
    return reduce(np.where(a < 1.0, small, large), reduction, weights, where)


def log_cosh_grad(p: Arr, t: Arr, *, dtype: str, reduction: str = "mean",
                  weights: Arr | None = None, where: Arr | None = None) -> Arr:
    return reduce_grad(np.tanh(_diff(p, t, where)), reduction, weights, where)


def rmse_value(p: Arr, t: Arr, *, dtype: str, axis: Any = None, weights: Arr | None = None,
               where: Arr | None = None) -> Arr:
    d = _diff(p, t, where)
    msq = reduce(d * d, "mean", weights, where, axis=axis)
    return np.sqrt(msq)


def rmse_grad(p: Arr, t: Arr, *, dtype: str, axis: Any = None, weights: Arr | None = None,
              where: Arr | None = None) -> Arr | None:
    if axis is not None:
        return None
    r = float(rmse_value(p, t, dtype=dtype, weights=weights, where=where))
    if r == 0.0:
        return np.zeros_like(p, dtype=np.float64)  # documented: gradient 0 at zero error
    d = _diff(p, t, where)
    return reduce_grad(d / r, "mean", weights, where)


# -- binary cross-entropy ------------------------------------------------------------------------
def binary_cross_entropy_value(p: Arr, t: Arr, *, dtype: str, reduction: str = "mean",
                               weights: Arr | None = None, where: Arr | None = None) -> Arr:
    lo, hi = _clip_bounds(dtype)
    with _errstate():
        pc = np.clip(p, lo, hi)
        elem = -(t * np.log(pc) + (1.0 - t) * np.log1p(-pc))
    return reduce(elem, reduction, weights, where)


def binary_cross_entropy_grad(p: Arr, t: Arr, *, dtype: str, reduction: str = "mean",
                              weights: Arr | None = None, where: Arr | None = None) -> Arr:
    lo, hi = _clip_bounds(dtype)
    with _errstate():
        inside = (p >= lo) & (p <= hi)  # the clip passes the gradient on the closed interval
        pc = np.clip(p, lo, hi)
        d = np.where(inside, -t / pc + (1.0 - t) / (1.0 - pc), 0.0)
    return reduce_grad(d, reduction, weights, where)


def binary_cross_entropy_with_logits_value(x: Arr, t: Arr, *, dtype: str,
                                           pos_weight: Any = None, reduction: str = "mean",
                                           weights: Arr | None = None,
                                           where: Arr | None = None) -> Arr:
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    with _errstate():
        elem = pw * t * _softplus(-x) + (1.0 - t) * _softplus(x)
    return reduce(elem, reduction, weights, where)


def binary_cross_entropy_with_logits_grad(x: Arr, t: Arr, *, dtype: str,
                                          pos_weight: Any = None, reduction: str = "mean",
                                          weights: Arr | None = None,
                                          where: Arr | None = None) -> Arr:
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    with _errstate():
        d = -pw * t * _sigmoid(-x) + (1.0 - t) * _sigmoid(x)
    return reduce_grad(d, reduction, weights, where)


# -- categorical cross-entropy -------------------------------------------------------------------
def _smoothed(t: Arr, s: float, classes: int) -> Arr:
    return t * (1.0 - s) + s / classes


def _one_hot(labels: Arr, classes: int, axis: int) -> Arr:
    safe = np.where((labels >= 0) & (labels < classes), labels, 0)
    oh = np.eye(classes)[safe]                 # class axis last
    return np.moveaxis(oh, -1, axis)


def _prob_log(p: Arr, axis: int, dtype: str) -> tuple[Arr, Arr, Arr, Arr]:
    """Renormalised, clipped log-probabilities; also q, the clip's inside mask and the sums."""
    lo, hi = _clip_bounds(dtype)
    s = np.sum(p, axis=axis, keepdims=True)
    q = p / s
    inside = (q >= lo) & (q <= hi)
    return np.log(np.clip(q, lo, hi)), q, inside, s


def _categorical_value(logp: Arr, tt: Arr, axis: int, reduction: str, weights: Any,
                       where: Any) -> Arr:
    return reduce(-np.sum(tt * logp, axis=axis), reduction, weights, where)


def categorical_cross_entropy_value(p: Arr, t: Arr, *, dtype: str, axis: int = -1,
                                    label_smoothing: float = 0.0, reduction: str = "mean",
                                    weights: Arr | None = None,
                                    where: Arr | None = None) -> Arr:
    ax = axis % p.ndim
    with _errstate():
        m = _with_class_mask(where, p.shape, ax)
        logp = _prob_log(np.where(m, p, 1.0), ax, dtype)[0]
        tt = _smoothed(np.where(m, t, 0.0), label_smoothing, p.shape[ax])
        return _categorical_value(logp, tt, ax, reduction, weights, where)


def _categorical_prob_grad(p: Arr, tt: Arr, ax: int, dtype: str, reduction: str, weights: Any,
                           where: Any) -> Arr:
    # l = -sum_c t_c log clip(q_c), q = p / S:  dl/dp_j = (u_j - sum_c u_c q_c) / S with
    # u_c = -t_c / clip(q_c) inside the clip and 0 outside
    m = _with_class_mask(where, p.shape, ax)
    with _errstate():
        logq, q, inside, s = _prob_log(np.where(m, p, 1.0), ax, dtype)
        u = np.where(inside, -tt / np.exp(logq), 0.0)
        g = (u - np.sum(u * q, axis=ax, keepdims=True)) / s
    rows = reduce_grad(np.ones(p.shape[:ax] + p.shape[ax + 1:]), reduction, weights, where)
    return np.where(m, g * np.expand_dims(rows, ax), 0.0)


def categorical_cross_entropy_grad(p: Arr, t: Arr, *, dtype: str, axis: int = -1,
                                   label_smoothing: float = 0.0, reduction: str = "mean",
                                   weights: Arr | None = None,
                                   where: Arr | None = None) -> Arr:
    ax = axis % p.ndim
    m = _with_class_mask(where, p.shape, ax)
    tt = _smoothed(np.where(m, t, 0.0), label_smoothing, p.shape[ax])
    return _categorical_prob_grad(p, tt, ax, dtype, reduction, weights, where)


def categorical_cross_entropy_with_logits_value(x: Arr, t: Arr, *, dtype: str, axis: int = -1,
                                                label_smoothing: float = 0.0,
                                                reduction: str = "mean",
                                                weights: Arr | None = None,
                                                where: Arr | None = None) -> Arr:
    ax = axis % x.ndim
    with _errstate():
        m = _with_class_mask(where, x.shape, ax)
        logp = _log_softmax(np.where(m, x, 0.0), ax)
        tt = _smoothed(np.where(m, t, 0.0), label_smoothing, x.shape[ax])
        return _categorical_value(logp, tt, ax, reduction, weights, where)


def _softmax_grad(x: Arr, tt: Arr, ax: int, reduction: str, weights: Any, where: Any) -> Arr:
    # d/dx of -sum_c t_c log_softmax(x)_c = softmax(x) * sum_c t_c - t
    m = _with_class_mask(where, x.shape, ax)
    with _errstate():
        sm = np.exp(_log_softmax(np.where(m, x, 0.0), ax))
        g = sm * np.sum(tt, axis=ax, keepdims=True) - tt
    rows = reduce_grad(np.ones(x.shape[:ax] + x.shape[ax + 1:]), reduction, weights, where)
    return np.where(m, g * np.expand_dims(rows, ax), 0.0)


def categorical_cross_entropy_with_logits_grad(x: Arr, t: Arr, *, dtype: str, axis: int = -1,
                                               label_smoothing: float = 0.0,
                                               reduction: str = "mean",
                                               weights: Arr | None = None,
                                               where: Arr | None = None) -> Arr:
    ax = axis % x.ndim
    m = _with_class_mask(where, x.shape, ax)
    tt = _smoothed(np.where(m, t, 0.0), label_smoothing, x.shape[ax])
    return _softmax_grad(x, tt, ax, reduction, weights, where)


def _sparse_targets(x: Arr, y: Arr, ax: int, ignore_index: int | None, label_smoothing: float,
                    where: Arr | None) -> tuple[Arr, Arr]:
    """Smoothed one-hot targets and the effective row mask (``where`` and ``ignore_index``)."""
    keep = _mask(where, y.shape)
    if ignore_index is not None:
        keep = keep & (y != ignore_index)
    tt = _smoothed(_one_hot(y, x.shape[ax], ax), label_smoothing, x.shape[ax])
    return tt * np.expand_dims(keep, ax), keep


def sparse_categorical_cross_entropy_value(p: Arr, y: Arr, *, dtype: str, axis: int = -1,
                                           ignore_index: int | None = None,
                                           label_smoothing: float = 0.0,
                                           reduction: str = "mean",
                                           weights: Arr | None = None,
                                           where: Arr | None = None) -> Arr:
    ax = axis % p.ndim
    tt, keep = _sparse_targets(p, y, ax, ignore_index, label_smoothing, where)
    with _errstate():
        logp = _prob_log(np.where(np.expand_dims(keep, ax), p, 1.0), ax, dtype)[0]
        return _categorical_value(logp, tt, ax, reduction, weights, keep)


def sparse_categorical_cross_entropy_grad(p: Arr, y: Arr, *, dtype: str, axis: int = -1,
                                          ignore_index: int | None = None,
                                          label_smoothing: float = 0.0,
                                          reduction: str = "mean",
                                          weights: Arr | None = None,
                                          where: Arr | None = None) -> Arr:
    ax = axis % p.ndim
    tt, keep = _sparse_targets(p, y, ax, ignore_index, label_smoothing, where)
    return _categorical_prob_grad(p, tt, ax, dtype, reduction, weights, keep)


def sparse_categorical_cross_entropy_with_logits_value(x: Arr, y: Arr, *, dtype: str,
                                                       axis: int = -1,
                                                       ignore_index: int | None = None,
                                                       label_smoothing: float = 0.0,
                                                       reduction: str = "mean",
                                                       weights: Arr | None = None,
                                                       where: Arr | None = None) -> Arr:
    ax = axis % x.ndim
    tt, keep = _sparse_targets(x, y, ax, ignore_index, label_smoothing, where)
    with _errstate():
        logp = _log_softmax(np.where(np.expand_dims(keep, ax), x, 0.0), ax)
        return _categorical_value(logp, tt, ax, reduction, weights, keep)


def sparse_categorical_cross_entropy_with_logits_grad(x: Arr, y: Arr, *, dtype: str,
                                                      axis: int = -1,
                                                      ignore_index: int | None = None,
                                                      label_smoothing: float = 0.0,
                                                      reduction: str = "mean",
                                                      weights: Arr | None = None,
                                                      where: Arr | None = None) -> Arr:
    ax = axis % x.ndim
    tt, keep = _sparse_targets(x, y, ax, ignore_index, label_smoothing, where)
    return _softmax_grad(x, tt, ax, reduction, weights, keep)


# -- focal ---------------------------------------------------------------------------------------
def _weights_ab(alpha: float | None) -> tuple[float, float]:
    return (1.0, 1.0) if alpha is None else (alpha, 1.0 - alpha)


def _hard(t: Arr) -> bool:
    return bool(np.all((t == 0.0) | (t == 1.0)))


def _focal_prob_elem(p: Arr, t: Arr, alpha: float | None, gamma: float, dtype: str) -> Arr:
    lo, hi = _clip_bounds(dtype)
    a_pos, a_neg = _weights_ab(alpha)
    pc = np.clip(p, lo, hi)
    ce = -(a_pos * t * np.log(pc) + a_neg * (1.0 - t) * np.log1p(-pc))
    return np.abs(t - p) ** gamma * ce  # numpy: 0.0 ** 0.0 == 1, as documented


def _focal_prob_elem_grad(p: Arr, t: Arr, alpha: float | None, gamma: float,
                          dtype: str) -> Arr | None:
    """d/dp for 0/1 labels (None for soft labels: finite differences are used instead)."""
    if not _hard(t):
        return None
    lo, hi = _clip_bounds(dtype)
    a_pos, a_neg = _weights_ab(alpha)
    inside = (p >= lo) & (p <= hi)
    pc = np.clip(p, lo, hi)

    def pw(a: Arr, e: float) -> Arr:  # a ** e with the documented 0 at a == 0 for the gradient
        return np.where(a > 0, np.where(a > 0, a, 1.0) ** e, 0.0)

    q = 1.0 - p
    # t = 1: FL = -a (1-p)^g log p;      t = 0: FL = -(1-a) p^g log(1-p)
    g_pos = a_pos * (gamma * pw(q, gamma - 1.0) * np.log(pc) - q ** gamma * inside / pc)
    g_neg = -a_neg * (gamma * pw(p, gamma - 1.0) * np.log1p(-pc) - p ** gamma * inside / (1 - pc))
    if gamma == 0.0:
        g_pos = -a_pos * inside / pc
        g_neg = a_neg * inside / (1 - pc)
    return np.where(t == 1.0, g_pos, g_neg)


def _focal_logit_elem(x: Arr, t: Arr, alpha: float | None, gamma: float) -> Arr:
    a_pos, a_neg = _weights_ab(alpha)
    log_p, log_q = -_softplus(-x), -_softplus(x)
    ce = -(a_pos * t * log_p + a_neg * (1.0 - t) * log_q)
    if gamma == 0.0:
        return ce
    # |t - sigmoid(x)| written as |t sigmoid(-x) - (1 - t) sigmoid(x)| (exact for 0/1 labels)
    mod = np.abs(t * np.exp(log_q) - (1.0 - t) * np.exp(log_p))
    return mod ** gamma * ce


def _focal_logit_elem_grad(x: Arr, t: Arr, alpha: float | None, gamma: float) -> Arr | None:
    if not _hard(t):
        return None
    a_pos, a_neg = _weights_ab(alpha)
    log_p, log_q = -_softplus(-x), -_softplus(x)
    p, q = np.exp(log_p), np.exp(log_q)
    # t = 1: d/dx = a (1-p)^g (g p log p - (1-p));   t = 0: (1-a) p^g (p - g (1-p) log(1-p))
    g_pos = a_pos * np.exp(gamma * log_q) * (gamma * p * log_p - q)
    g_neg = a_neg * np.exp(gamma * log_p) * (p - gamma * q * log_q)
    return np.where(t == 1.0, g_pos, g_neg)


def binary_focal_loss_value(p: Arr, t: Arr, *, dtype: str, alpha: float | None = 0.25,
                            gamma: float = 2.0, reduction: str = "mean",
                            weights: Arr | None = None, where: Arr | None = None) -> Arr:
    m = _mask(where, p.shape)
    with _errstate():
        elem = _focal_prob_elem(np.where(m, p, 0.5), np.where(m, t, 0.0), alpha, gamma, dtype)
    return reduce(elem, reduction, weights, where)


def binary_focal_loss_grad(p: Arr, t: Arr, *, dtype: str, alpha: float | None = 0.25,
                           gamma: float = 2.0, reduction: str = "mean",
                           weights: Arr | None = None, where: Arr | None = None) -> Arr | None:
    m = _mask(where, p.shape)
    with _errstate():
        d = _focal_prob_elem_grad(np.where(m, p, 0.5), np.where(m, t, 0.0), alpha, gamma, dtype)
    return None if d is None else reduce_grad(d, reduction, weights, where)


def binary_focal_loss_with_logits_value(x: Arr, t: Arr, *, dtype: str,
                                        alpha: float | None = 0.25, gamma: float = 2.0,
                                        reduction: str = "mean", weights: Arr | None = None,
                                        where: Arr | None = None) -> Arr:
    m = _mask(where, x.shape)
    with _errstate():
        elem = _focal_logit_elem(np.where(m, x, 0.0), np.where(m, t, 0.0), alpha, gamma)
    return reduce(elem, reduction, weights, where)


def binary_focal_loss_with_logits_grad(x: Arr, t: Arr, *, dtype: str,
                                       alpha: float | None = 0.25, gamma: float = 2.0,
                                       reduction: str = "mean", weights: Arr | None = None,
                                       where: Arr | None = None) -> Arr | None:
    m = _mask(where, x.shape)
    with _errstate():
        d = _focal_logit_elem_grad(np.where(m, x, 0.0), np.where(m, t, 0.0), alpha, gamma)
    return None if d is None else reduce_grad(d, reduction, weights, where)


def _anchor_parts(t: Arr, state: Arr) -> tuple[Arr, Arr, Arr]:
    keep = np.expand_dims(state != -1, -1)
    positive = state == 1
    t_eff = np.where(np.expand_dims(positive, -1), t, 0.0)  # background: all classes negative
    return keep, positive, t_eff


def _anchor_norm(positive: Arr, normalizer: Any) -> float:
    if normalizer is None:
        return max(float(np.sum(positive)), 1.0)
    return float(normalizer)


def anchor_focal_loss_value(p: Arr, t: Arr, state: Arr, *, dtype: str,
                            alpha: float | None = 0.25, gamma: float = 2.0,
                            normalizer: Any = None) -> Arr:
    keep, positive, t_eff = _anchor_parts(t, state)
    with _errstate():
        fl = _focal_prob_elem(np.where(keep, p, 0.5), t_eff, alpha, gamma, dtype)
    return _fsum(np.where(keep, fl, 0.0)) / _anchor_norm(positive, normalizer)


def anchor_focal_loss_grad(p: Arr, t: Arr, state: Arr, *, dtype: str,
                           alpha: float | None = 0.25, gamma: float = 2.0,
                           normalizer: Any = None) -> Arr | None:
    keep, positive, t_eff = _anchor_parts(t, state)
    with _errstate():
        d = _focal_prob_elem_grad(np.where(keep, p, 0.5), t_eff, alpha, gamma, dtype)
    if d is None:
        return None
    return np.where(keep, d, 0.0) / _anchor_norm(positive, normalizer)


def anchor_focal_loss_with_logits_value(x: Arr, t: Arr, state: Arr, *, dtype: str,
                                        alpha: float | None = 0.25, gamma: float = 2.0,
                                        normalizer: Any = None) -> Arr:
    keep, positive, t_eff = _anchor_parts(t, state)
    with _errstate():
        fl = _focal_logit_elem(np.where(keep, x, 0.0), t_eff, alpha, gamma)
    return _fsum(np.where(keep, fl, 0.0)) / _anchor_norm(positive, normalizer)


def anchor_focal_loss_with_logits_grad(x: Arr, t: Arr, state: Arr, *, dtype: str,
                                       alpha: float | None = 0.25, gamma: float = 2.0,
                                       normalizer: Any = None) -> Arr | None:
    keep, positive, t_eff = _anchor_parts(t, state)
    with _errstate():
        d = _focal_logit_elem_grad(np.where(keep, x, 0.0), t_eff, alpha, gamma)
    if d is None:
        return None
    return np.where(keep, d, 0.0) / _anchor_norm(positive, normalizer)


# -- metrics -------------------------------------------------------------------------------------
def in_top_k_value(p: Arr, y: Arr, *, dtype: str, k: int) -> Arr:
    classes = p.shape[-1]
    valid = (y >= 0) & (y < classes)
    rows = np.arange(p.shape[0])
    target = p[rows, np.where(valid, y, 0)]
    with _errstate():
        higher = np.sum(p > target[:, None], axis=-1)
    return (higher < k) & np.all(np.isfinite(p), axis=-1) & valid


def top_k_accuracy_value(p: Arr, y: Arr, *, dtype: str, k: int = 5,
                         where: Arr | None = None) -> Arr:
    hit = in_top_k_value(p, y, dtype=dtype, k=k).astype(np.float64)
    return reduce(hit, "mean", None, where)


# -- the loss catalogue (issue 9) ----------------------------------------------------------------
KERAS_EPSILON = 1e-7  # Keras's backend.epsilon(): MSLE's and MAPE's floor


def _along(v: Any, axis: int, ndim: int) -> Any:
    """A per-class 1-D ``v`` laid along ``axis`` (scalars and None pass)."""
    if v is None or np.ndim(v) == 0:
        return v
    shape = [1] * ndim
    shape[axis] = -1
    return np.reshape(np.asarray(v, dtype=np.float64), shape)


def _through_rows(g: Arr, ax: int, reduction: str, weights: Any, where: Any) -> Arr:
    """The derivative ``g`` of each row's loss (class axis ``ax``) through the reduction."""
    rows = reduce_grad(np.ones(g.shape[:ax] + g.shape[ax + 1:]), reduction, weights, where)
    m = _with_class_mask(where, g.shape, ax)
    return np.where(m, g * np.expand_dims(rows, ax), 0.0)


def _log1m_softmax(x: Arr, ax: int) -> Arr:
    """log(1 - softmax(x)) along ``ax``: the other classes' log-sum-exp minus everyone's."""
    xs = np.moveaxis(x, ax, -1)
    out = np.empty_like(xs)
    for c in range(xs.shape[-1]):
        others = np.delete(xs, c, axis=-1)
        out[..., c] = _lse(others) - _lse(xs)
    return np.moveaxis(out, -1, ax)


def _lse(x: Arr) -> Arr:
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return np.log(np.sum(np.exp(x - m), axis=-1)) + m[..., 0]


def _focal_terms(x: Arr, ax: int, logits: bool, alpha: Any, gamma: float, dtype: str) -> Arr:
    """Per class: -alpha_c (1 - p_c)^gamma log p_c (probabilities renormalised and clipped)."""
    if logits:
        logp = _log_softmax(x, ax)
        mod = np.exp(gamma * _log1m_softmax(x, ax))
    else:
        lo, hi = _clip_bounds(dtype)
        q = np.clip(x / np.sum(x, axis=ax, keepdims=True), lo, hi)
        logp, mod = np.log(q), (1.0 - q) ** gamma
    a = 1.0 if alpha is None else _along(alpha, ax, x.ndim)
    return -a * mod * logp


def _categorical_focal_value(x: Arr, tt: Arr, keep: Arr, ax: int, logits: bool, alpha: Any,
                             gamma: float, dtype: str, reduction: str, weights: Any) -> Arr:
    with _errstate():
        xk = np.where(np.expand_dims(keep, ax), x, 0.0 if logits else 1.0)
        term = _focal_terms(xk, ax, logits, alpha, gamma, dtype)
        return reduce(np.sum(tt * term, axis=ax), reduction, weights, keep)


def _categorical_focal(logits: bool) -> Callable[..., Arr]:
    def value(x: Arr, t: Arr, *, dtype: str, alpha: Any = 0.25, gamma: float = 2.0,
              axis: int = -1, label_smoothing: float = 0.0, reduction: str = "mean",
              weights: Arr | None = None, where: Arr | None = None) -> Arr:
        ax = axis % x.ndim
        keep = _mask(where, x.shape[:ax] + x.shape[ax + 1:])
        tt = _smoothed(np.where(np.expand_dims(keep, ax), t, 0.0), label_smoothing,
                       x.shape[ax])
        return _categorical_focal_value(x, tt, keep, ax, logits, alpha, gamma, dtype,
                                        reduction, weights)

    return value


def _sparse_categorical_focal(logits: bool) -> Callable[..., Arr]:
    def value(x: Arr, y: Arr, *, dtype: str, alpha: Any = 0.25, gamma: float = 2.0,
              axis: int = -1, ignore_index: int | None = None, label_smoothing: float = 0.0,
              reduction: str = "mean", weights: Arr | None = None,
              where: Arr | None = None) -> Arr:
        ax = axis % x.ndim
        tt, keep = _sparse_targets(x, y, ax, ignore_index, label_smoothing, where)
        return _categorical_focal_value(x, tt, keep, ax, logits, alpha, gamma, dtype,
                                        reduction, weights)

    return value


categorical_focal_loss_value = _categorical_focal(False)
categorical_focal_loss_with_logits_value = _categorical_focal(True)
sparse_categorical_focal_loss_value = _sparse_categorical_focal(False)
sparse_categorical_focal_loss_with_logits_value = _sparse_categorical_focal(True)


def _rows_clean(x: Arr, t: Arr, ax: int, where: Any, fill: float = 0.0) -> tuple[Arr, Arr]:
    m = _with_class_mask(where, x.shape, ax)
    return np.where(m, x, fill), np.where(m, t, 0.0)


def poly1_cross_entropy_with_logits_value(x: Arr, t: Arr, *, dtype: str, epsilon: float = 2.0,
                                          axis: int = -1, reduction: str = "mean",
                                          weights: Arr | None = None,
                                          where: Arr | None = None) -> Arr:
    ax = axis % x.ndim
    with _errstate():
        x, t = _rows_clean(x, t, ax, where)
        logp = _log_softmax(x, ax)
        elem = -np.sum(t * logp, axis=ax) + epsilon * np.sum(t * (1.0 - np.exp(logp)), axis=ax)
    return reduce(elem, reduction, weights, where)


def poly1_cross_entropy_with_logits_grad(x: Arr, t: Arr, *, dtype: str, epsilon: float = 2.0,
                                         axis: int = -1, reduction: str = "mean",
                                         weights: Arr | None = None,
                                         where: Arr | None = None) -> Arr:
    # d/dx_j: p_j sum(t) - t_j  -  epsilon p_j (t_j - sum_c t_c p_c)
    ax = axis % x.ndim
    with _errstate():
        x, t = _rows_clean(x, t, ax, where)
        p = np.exp(_log_softmax(x, ax))
        pt = np.sum(t * p, axis=ax, keepdims=True)
        g = p * np.sum(t, axis=ax, keepdims=True) - t - epsilon * p * (t - pt)
    return _through_rows(g, ax, reduction, weights, where)


def _kl_parts(x: Arr, t: Arr, axis: Any, log_target: bool,
              where: Any) -> tuple[Arr, Arr, Arr, int | None]:
    """(pointwise term, its derivative in x, the element mask, the class axis)."""
    ax = None if axis is None else axis % x.ndim
    m = _mask(where, x.shape) if ax is None else _with_class_mask(where, x.shape, ax)
    m = np.broadcast_to(m, x.shape)
    with _errstate():
        x, t = np.where(m, x, 0.0), np.where(m, t, 0.0)
        if log_target:
            return np.exp(t) * (t - x), -np.exp(t), m, ax
        ts = np.where(t > 0, t, 1.0)
        return np.where(t > 0, t * (np.log(ts) - x), 0.0), -t, m, ax


def _batch_count(where: Any, shape: tuple[int, ...]) -> float:
    if where is None:
        return float(max(shape[0], 1)) if shape else 1.0
    m = _mask(where, shape)
    return float(max(int(np.any(m.reshape(m.shape[0], -1), axis=1).sum()), 1))


def kl_divergence_value(x: Arr, t: Arr, *, dtype: str, axis: Any = -1, log_target: bool = False,
                        reduction: str = "mean", weights: Arr | None = None,
                        where: Arr | None = None) -> Arr:
    term, _, _, ax = _kl_parts(x, t, axis, log_target, where)
    loss = term if ax is None else np.sum(term, axis=ax)
    if reduction != "batchmean":
        return reduce(loss, reduction, weights, where)
    return reduce(loss, "sum", weights, where) / _batch_count(where, loss.shape)


def kl_divergence_grad(x: Arr, t: Arr, *, dtype: str, axis: Any = -1, log_target: bool = False,
                       reduction: str = "mean", weights: Arr | None = None,
                       where: Arr | None = None) -> Arr:
    _, d, m, ax = _kl_parts(x, t, axis, log_target, where)
    r = "sum" if reduction == "batchmean" else reduction
    g = reduce_grad(d, r, weights, where) if ax is None else _through_rows(d, ax, r, weights,
                                                                           where)
    if reduction == "batchmean":
        shape = x.shape if ax is None else x.shape[:ax] + x.shape[ax + 1:]
        g = g / _batch_count(where, shape)
    return np.where(m, g, 0.0)


def _elementwise(parts: Callable[..., tuple[Arr, Arr]]) -> tuple[Callable[..., Arr],
                                                                   Callable[..., Arr]]:
    """(value, grad) references of an elementwise loss from ``parts(p, *rest, dtype=, where=,
    **options)``, which returns the elementwise loss and its derivative in ``p``."""
    def value(p: Arr, *rest: Arr, dtype: str, reduction: str = "mean",
              weights: Arr | None = None, where: Arr | None = None, **options: Any) -> Arr:
        return reduce(parts(p, *rest, dtype=dtype, where=where, **options)[0], reduction,
                      weights, where)

    def grad(p: Arr, *rest: Arr, dtype: str, reduction: str = "mean",
             weights: Arr | None = None, where: Arr | None = None, **options: Any) -> Arr:
        return reduce_grad(parts(p, *rest, dtype=dtype, where=where, **options)[1], reduction,
                           weights, where)

    return value, grad


def _poisson_parts(x: Arr, k: Arr, *, dtype: str, where: Any, log_input: bool = True,
                   full: bool = False, eps: float = 1e-8) -> tuple[Arr, Arr]:
    m = _mask(where, x.shape)
    with _errstate():
        k = np.where(m, k, 0.0)
        if log_input:
            x = np.where(m, x, 0.0)
            val, d = np.exp(x) - k * x, np.exp(x) - k
        else:
            x = np.where(m, x, 1.0)
            val, d = x - k * np.log(x + eps), 1.0 - k / (x + eps)
        if full:
            ks = np.where(k > 1, k, 1.0)
            val = val + np.where(k > 1, ks * np.log(ks) - ks + 0.5 * np.log(2 * np.pi * ks), 0.0)
    return val, d


def _gaussian_parts(p: Arr, t: Arr, v: Arr, *, dtype: str, where: Any, full: bool = False,
                    eps: float = 1e-6) -> tuple[Arr, Arr]:
    if v.shape == p.shape[:-1] and v.shape != p.shape:
        v = v[..., None]                      # one variance per row
    m = _mask(where, p.shape)
    with _errstate():
        d = np.where(m, p, 0.0) - np.where(m, t, 0.0)
        vc = np.maximum(np.where(m, np.broadcast_to(v, p.shape), 1.0), eps)
        val = 0.5 * (np.log(vc) + d * d / vc) + (0.5 * math.log(2 * math.pi) if full else 0.0)
    return val, d / vc


def _hinge_parts(p: Arr, t: Arr, *, dtype: str, where: Any) -> tuple[Arr, Arr]:
    """(max(0, 1 - t p), its derivative in p), Keras's {0, 1} -> {-1, 1} on the kept labels."""
    m = _mask(where, p.shape)
    t = np.where(m, t, 1.0)
    if np.all((t == 0.0) | (t == 1.0)):
        t = 2.0 * t - 1.0
    with _errstate():
        margin = 1.0 - t * np.where(m, p, 0.0)
    return np.where(margin > 0, margin, 0.0), np.where(margin > 0, -t, 0.0)


def _squared_hinge_parts(p: Arr, t: Arr, *, dtype: str, where: Any) -> tuple[Arr, Arr]:
    h, d = _hinge_parts(p, t, dtype=dtype, where=where)
    return h * h, 2.0 * h * d


poisson_nll_value, poisson_nll_grad = _elementwise(_poisson_parts)
gaussian_nll_value, gaussian_nll_grad = _elementwise(_gaussian_parts)
hinge_value, hinge_grad = _elementwise(_hinge_parts)
squared_hinge_value, squared_hinge_grad = _elementwise(_squared_hinge_parts)


def _categorical_hinge_parts(p: Arr, t: Arr, ax: int, where: Any) -> tuple[Arr, Arr]:
    with _errstate():
        p, t = _rows_clean(p, t, ax, where)
        wrong = (1.0 - t) * p
        top = np.max(wrong, axis=ax, keepdims=True)
        margin = np.squeeze(top, ax) - np.sum(t * p, axis=ax) + 1.0
        # the inner maximum shares its gradient equally among tied classes
        ties = (wrong == top).astype(np.float64)
        share = ties / np.sum(ties, axis=ax, keepdims=True)
        d = np.where(np.expand_dims(margin > 0, ax), share * (1.0 - t) - t, 0.0)
    return np.where(margin > 0, margin, 0.0), d


def categorical_hinge_value(p: Arr, t: Arr, *, dtype: str, axis: int = -1,
                            reduction: str = "mean", weights: Arr | None = None,
                            where: Arr | None = None) -> Arr:
    ax = axis % p.ndim
    return reduce(_categorical_hinge_parts(p, t, ax, where)[0], reduction, weights, where)


def categorical_hinge_grad(p: Arr, t: Arr, *, dtype: str, axis: int = -1,
                           reduction: str = "mean", weights: Arr | None = None,
                           where: Arr | None = None) -> Arr:
    ax = axis % p.ndim
    d = _categorical_hinge_parts(p, t, ax, where)[1]
    return _through_rows(d, ax, reduction, weights, where)


def _cosine_parts(p: Arr, t: Arr, ax: int, eps: float, where: Any) -> tuple[Arr, Arr]:
    with _errstate():
        p, t = _rows_clean(p, t, ax, where)
        npn = np.sqrt(np.sum(p * p, axis=ax, keepdims=True))
        ntn = np.maximum(np.sqrt(np.sum(t * t, axis=ax, keepdims=True)), eps)
        big = npn > eps
        npc = np.where(big, npn, eps)
        dot = np.sum(p * t, axis=ax, keepdims=True)
        val = -dot / (npc * ntn)
        # below the floor the norm is a constant: only the numerator moves
        d = -t / (npc * ntn) + np.where(big, dot * p / (npc ** 3 * ntn), 0.0)
    return np.squeeze(val, ax), d


def cosine_similarity_loss_value(p: Arr, t: Arr, *, dtype: str, axis: int = -1,
                                 eps: float = 1e-7, reduction: str = "mean",
                                 weights: Arr | None = None, where: Arr | None = None) -> Arr:
    ax = axis % p.ndim
    return reduce(_cosine_parts(p, t, ax, eps, where)[0], reduction, weights, where)


def cosine_similarity_loss_grad(p: Arr, t: Arr, *, dtype: str, axis: int = -1,
                                eps: float = 1e-7, reduction: str = "mean",
                                weights: Arr | None = None, where: Arr | None = None) -> Arr:
    ax = axis % p.ndim
    return _through_rows(_cosine_parts(p, t, ax, eps, where)[1], ax, reduction, weights, where)


def _quantile_parts(p: Arr, t: Arr, *, dtype: str, where: Any,
                    quantiles: Any = 0.5) -> tuple[Arr, Arr]:
    q = quantiles
    if np.ndim(q) == 1 and t.shape == p.shape[:-1]:
        t = t[..., None]
    m = _mask(where, p.shape)
    with _errstate():
        d = np.where(m, np.broadcast_to(t, p.shape), 0.0) - np.where(m, p, 0.0)
        q = np.asarray(q, dtype=np.float64)
        val = np.where(d > 0, q * d, (q - 1.0) * d)
        return val, np.where(d > 0, -q, np.where(d < 0, 1.0 - q, 0.0))


def _msle_parts(p: Arr, t: Arr, *, dtype: str, where: Any) -> tuple[Arr, Arr]:
    floor = float(np.dtype(dtype).type(KERAS_EPSILON))
    m = _mask(where, p.shape)
    with _errstate():
        p, t = np.where(m, p, 0.0), np.where(m, t, 0.0)
        d = np.log1p(np.maximum(p, floor)) - np.log1p(np.maximum(t, floor))
        return d * d, np.where(p > floor, 2.0 * d / (1.0 + p), 0.0)


def _mape_parts(p: Arr, t: Arr, *, dtype: str, where: Any) -> tuple[Arr, Arr]:
    floor = float(np.dtype(dtype).type(KERAS_EPSILON))
    m = _mask(where, p.shape)
    with _errstate():
        p, t = np.where(m, p, 0.0), np.where(m, t, 1.0)
        den = np.maximum(np.abs(t), floor)
        return 100.0 * np.abs(t - p) / den, 100.0 * np.sign(p - t) / den


quantile_loss_value, quantile_loss_grad = _elementwise(_quantile_parts)
msle_value, msle_grad = _elementwise(_msle_parts)
mape_value, mape_grad = _elementwise(_mape_parts)


def _overlap(p: Arr, t: Arr, axis: Any, where: Any) -> tuple[Arr, Arr, Arr, Arr, Arr | None]:
    """Sums over ``axis`` of TP, FP, FN and p + t over the kept pixels, and which coefficient
    keeps any pixel (None without ``where``)."""
    axes = tuple(range(p.ndim)) if axis is None else \
        tuple(a % p.ndim for a in np.atleast_1d(axis))
    m = _mask(where, p.shape)
    with _errstate():
        p, t = np.where(m, p, 0.0), np.where(m, t, 0.0)

    def total(v: Arr) -> Arr:
        return np.sum(v, axis=axes)

    kept = None if where is None else total(m.astype(np.float64)) > 0
    return total(p * t), total(p * (1 - t)), total((1 - p) * t), total(p + t), kept


def dice_loss_value(p: Arr, t: Arr, *, dtype: str, axis: Any = None, smooth: float = 0.0,
                    eps: float = 1e-7, reduction: str = "mean", weights: Arr | None = None,
                    where: Arr | None = None) -> Arr:
    tp, _, _, mass, kept = _overlap(p, t, axis, where)
    return reduce(1.0 - (2.0 * tp + smooth) / (mass + smooth + eps), reduction, weights, kept)


def tversky_loss_value(p: Arr, t: Arr, *, dtype: str, alpha: float = 0.5, beta: float = 0.5,
                       axis: Any = None, smooth: float = 0.0, eps: float = 1e-7,
                       reduction: str = "mean", weights: Arr | None = None,
                       where: Arr | None = None) -> Arr:
    tp, fp, fn, _, kept = _overlap(p, t, axis, where)
    loss = 1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth + eps)
    return reduce(loss, reduction, weights, kept)


def _box_terms(b: Arr, g: Arr, eps: float, where: Any) -> dict[str, Arr]:
    """torchvision's IoU-loss quantities (_utils._loss_inter_union, diou/ciou_loss.py) for
    (x1, y1, x2, y2) boxes, the masked boxes replaced by the empty box at 0."""
    keep = np.expand_dims(_mask(where, b.shape[:-1]), -1)
    with _errstate():
        b, g = np.where(keep, b, 0.0), np.where(keep, g, 0.0)
        x1, y1, x2, y2 = np.moveaxis(b, -1, 0)
        x1g, y1g, x2g, y2g = np.moveaxis(g, -1, 0)
        iw = np.minimum(x2, x2g) - np.maximum(x1, x1g)
        ih = np.minimum(y2, y2g) - np.maximum(y1, y1g)
        inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
        iou = inter / (union + eps)
        cw = np.maximum(x2, x2g) - np.minimum(x1, x1g)
        ch = np.maximum(y2, y2g) - np.minimum(y1, y1g)
        rho2 = ((x1 + x2 - x1g - x2g) / 2) ** 2 + ((y1 + y2 - y1g - y2g) / 2) ** 2
        diou = 1.0 - iou + rho2 / (cw * cw + ch * ch + eps)

        def aspect(w: Arr, h: Arr) -> Arr:   # atan(w / h), the limit at h = 0
            return np.where(h != 0, np.arctan(w / np.where(h != 0, h, 1.0)),
                            np.sign(w) * np.pi / 2)

        v = (4 / np.pi ** 2) * (aspect(x2g - x1g, y2g - y1g) - aspect(x2 - x1, y2 - y1)) ** 2
    return {"iou": iou, "union": union, "area_c": cw * ch, "diou": diou, "v": v}


def giou_loss_value(b: Arr, g: Arr, *, dtype: str, eps: float = 1e-7, reduction: str = "mean",
                    weights: Arr | None = None, where: Arr | None = None) -> Arr:
    q = _box_terms(b, g, eps, where)
    loss = 1.0 - q["iou"] + (q["area_c"] - q["union"]) / (q["area_c"] + eps)
    return reduce(loss, reduction, weights, where)


def diou_loss_value(b: Arr, g: Arr, *, dtype: str, eps: float = 1e-7, reduction: str = "mean",
                    weights: Arr | None = None, where: Arr | None = None) -> Arr:
    return reduce(_box_terms(b, g, eps, where)["diou"], reduction, weights, where)


def ciou_loss_value(b: Arr, g: Arr, *, dtype: str, eps: float = 1e-7, reduction: str = "mean",
                    weights: Arr | None = None, where: Arr | None = None,
                    alpha_at: Arr | None = None) -> Arr:
    """``alpha_at``: boxes at which alpha is taken (the loss holds alpha constant: torchvision
    computes it under no_grad); the boxes themselves by default."""
    q = _box_terms(b, g, eps, where)
    a = q if alpha_at is None else _box_terms(alpha_at, g, eps, where)
    with _errstate():
        alpha = a["v"] / (1.0 - a["iou"] + a["v"] + eps)
    return reduce(q["diou"] + alpha * q["v"], reduction, weights, where)


def ciou_loss_held(b: Arr, *rest: Arr, **kw: Any) -> Callable[..., Arr]:
    """CIoU with alpha held at ``b``: its differences are the gradient of the loss at ``b``."""
    return lambda x, *r, **k: ciou_loss_value(x, *r, alpha_at=b, **k)


# -- finite differences --------------------------------------------------------------------------
#: first step of the differences, relative to max(|x_i|, FD_FLOOR): small enough that a
#: probability of 0.98 stays below 1, large enough for a good first estimate
FD_STEP = 0.02
FD_FLOOR = 0.05


def _ridders(f: Callable[[float], float], x0: float, h0: float, ntab: int = 10,
             con: float = 1.4) -> float:
    """Derivative of ``f`` at ``x0`` by Ridders' method: central differences at shrinking
    steps, extrapolated to step 0 (Neville), keeping the estimate with the smallest error
    estimate (Numerical Recipes' ``dfridr``).  About 1e-12 relative for smooth functions."""
    a = np.full((ntab, ntab), np.nan)
    hh = h0
    a[0, 0] = (f(x0 + hh) - f(x0 - hh)) / (2.0 * hh)
    best, err = a[0, 0], math.inf
    con2 = con * con
    for i in range(1, ntab):
        hh /= con
        a[0, i] = (f(x0 + hh) - f(x0 - hh)) / (2.0 * hh)
        fac = con2
        for j in range(1, i + 1):
            a[j, i] = (a[j - 1, i] * fac - a[j - 1, i - 1]) / (fac - 1.0)
            fac *= con2
            errt = max(abs(a[j, i] - a[j - 1, i]), abs(a[j, i] - a[j - 1, i - 1]))
            if errt <= err:
                err, best = errt, a[j, i]
        if abs(a[i, i] - a[i - 1, i - 1]) >= 2.0 * err:
            break  # higher order is getting worse: rounding has taken over
    return float(best)


def finite_difference(value: Callable[..., Arr], x: Arr, *rest: Arr,
                      fd_step: float | None = None, **kwargs: Any) -> Arr:
    """Gradient of the scalar ``value(x, *rest, **kwargs)`` with respect to ``x``.

    Each entry by Ridders' extrapolated central differences (:func:`_ridders`) from a first
    step of ``FD_STEP * max(|x_i|, FD_FLOOR)``.  Non-finite entries of ``x`` (NaN placed under
    a mask on purpose) get 0, the documented gradient of a masked element.  Valid only where
    the function is smooth near ``x`` (the cases marked ``fd=True``); accurate to about 1e-10
    relative on the built-in cases (checked in the test suite against the analytic
    gradients), hence ``tolerance.FD_RTOL``.
    """
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        xi = flat[i]
        if not math.isfinite(xi):
            continue

        def f(v: float, i: int = i, xi: float = xi) -> float:
            flat[i] = v
            try:
                return float(value(x, *rest, **kwargs))
            finally:
                flat[i] = xi

        gflat[i] = _ridders(f, xi, (fd_step or FD_STEP) * max(abs(xi), FD_FLOOR))
    return g
