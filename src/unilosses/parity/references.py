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


def reduce(loss: Arr, reduction: str = "mean", weights: Arr | None = None,
           where: Arr | None = None, axis: Any = None) -> Arr:
    """The documented reduction: weights, then the mask; "mean" divides by the unmasked count."""
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
    count = _fsum(m.astype(np.float64), axis)
    return total / np.where(count > 0, count, 1.0)


def reduce_grad(dloss: Arr, reduction: str = "mean", weights: Arr | None = None,
                where: Arr | None = None) -> Arr:
    """Gradient of :func:`reduce` (over all elements) given the elementwise derivative."""
    dloss = np.asarray(dloss, dtype=np.float64)
    m = _mask(where, dloss.shape)
    g = dloss
    if weights is not None:
        g = g * np.broadcast_to(weights, g.shape)
    if reduction == "mean":
        g = g / max(int(m.sum()), 1)
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
