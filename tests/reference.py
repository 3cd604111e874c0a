"""Float64 NumPy references, written from the formulas independently of the implementation.

Values are computed the direct way in float64 (with ``math``-level care only where float64
itself would overflow); gradients are the analytic derivatives, written out by hand.
"""

from __future__ import annotations

import numpy as np

EPS = 1e-7


def _f64(*arrays):  # type: ignore[no-untyped-def]
    return [np.asarray(a, dtype=np.float64) for a in arrays]


def reduce(loss, reduction="mean", weights=None, where=None):  # type: ignore[no-untyped-def]
    loss = np.asarray(loss, dtype=np.float64)
    w = np.ones_like(loss) if weights is None else np.broadcast_to(weights, loss.shape)
    m = np.ones(loss.shape, bool) if where is None else np.broadcast_to(where, loss.shape)
    wl = np.where(m, w * np.where(m, loss, 0.0), 0.0)
    if reduction == "none":
        return wl
    if reduction == "sum":
        return wl.sum()
    n = m.sum()
    return wl.sum() / max(n, 1)


def reduce_grad(dloss, reduction="mean", weights=None, where=None):  # type: ignore[no-untyped-def]
    """d(reduced)/d(input) for an elementwise loss whose derivative is ``dloss``."""
    dloss = np.asarray(dloss, dtype=np.float64)
    w = np.ones_like(dloss) if weights is None else np.broadcast_to(weights, dloss.shape)
    m = np.ones(dloss.shape, bool) if where is None else np.broadcast_to(where, dloss.shape)
    g = np.where(m, w * np.where(m, dloss, 0.0), 0.0)
    if reduction == "mean":
        g = g / max(m.sum(), 1)
    return g


# -- regression: (elementwise loss, derivative w.r.t. predictions) ---------------------------
def mse(p, t):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    return (p - t) ** 2, 2 * (p - t)


def mae(p, t):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    return np.abs(p - t), np.sign(p - t)


def huber(p, t, delta=1.0):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    d = p - t
    a = np.abs(d)
    val = np.where(a <= delta, 0.5 * d**2, delta * (a - 0.5 * delta))
    return val, np.clip(d, -delta, delta)


def smooth_l1(p, t, beta=1.0):  # type: ignore[no-untyped-def]
    v, g = huber(p, t, beta)
    return v / beta, g / beta


def log_cosh(p, t):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    d = p - t
    a = np.abs(d)
    # cosh d - 1 = 2 sinh(d/2)^2 keeps the digits of small errors; large ones use
    # log cosh d = |d| + log1p(e^{-2|d|}) - log 2, which cannot overflow
    small = np.minimum(a, 1.0)
    val = np.where(a < 1, np.log1p(2 * np.sinh(small / 2) ** 2),
                   a + np.log1p(np.exp(-2 * a)) - np.log(2))
    return val, np.tanh(d)


# -- binary ----------------------------------------------------------------------------------
def sigmoid(x):  # type: ignore[no-untyped-def]
    x = np.asarray(x, np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def log_sigmoid(x):  # type: ignore[no-untyped-def]
    x = np.asarray(x, np.float64)
    return np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x)))


def bce(p, t):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    pc = np.clip(p, EPS, 1 - EPS)
    val = -(t * np.log(pc) + (1 - t) * np.log(1 - pc))
    inside = (p >= EPS) & (p <= 1 - EPS)
    grad = np.where(inside, -(t / pc) + (1 - t) / (1 - pc), 0.0)
    return val, grad


def bce_logits(x, t, pos_weight=1.0):  # type: ignore[no-untyped-def]
    x, t = _f64(x, t)
    val = -(pos_weight * t * log_sigmoid(x) + (1 - t) * log_sigmoid(-x))
    grad = -pos_weight * t * sigmoid(-x) + (1 - t) * sigmoid(x)
    return val, grad


def focal_logits(x, t, alpha=0.25, gamma=2.0):  # type: ignore[no-untyped-def]
    """Elementwise focal loss on logits and its derivative, for labels in [0, 1]."""
    x, t = _f64(x, t)
    p = sigmoid(x)
    a_pos = 1.0 if alpha is None else alpha
    a_neg = 1.0 if alpha is None else 1 - alpha
    ce = -(a_pos * t * log_sigmoid(x) + a_neg * (1 - t) * log_sigmoid(-x))
    dce = -a_pos * t * (1 - p) + a_neg * (1 - t) * p
    u = np.abs(t - p)
    # d|t - p|/dx = -sign(t - p) p (1 - p)
    du = -np.sign(t - p) * p * (1 - p)
    if gamma == 0:
        f, df = np.ones_like(u), np.zeros_like(u)
    else:
        f = u**gamma
        with np.errstate(divide="ignore", invalid="ignore"):
            df = np.where(u > 0, gamma * u ** (gamma - 1) * du, 0.0)
    return f * ce, df * ce + f * dce


def focal_probs(p, t, alpha=0.25, gamma=2.0):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    pc = np.clip(p, EPS, 1 - EPS)
    a_pos = 1.0 if alpha is None else alpha
    a_neg = 1.0 if alpha is None else 1 - alpha
    ce = -(a_pos * t * np.log(pc) + a_neg * (1 - t) * np.log(1 - pc))
    inside = (p >= EPS) & (p <= 1 - EPS)
    dce = np.where(inside, -a_pos * t / pc + a_neg * (1 - t) / (1 - pc), 0.0)
    u = np.abs(t - p)
    du = -np.sign(t - p)
    if gamma == 0:
        f, df = np.ones_like(u), np.zeros_like(u)
    else:
        f = u**gamma
        with np.errstate(divide="ignore", invalid="ignore"):
            df = np.where(u > 0, gamma * u ** (gamma - 1) * du, 0.0)
    return f * ce, df * ce + f * dce


# -- categorical (class axis last) -------------------------------------------------------------
def log_softmax(x, axis=-1):  # type: ignore[no-untyped-def]
    x = np.asarray(x, np.float64)
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def cce_logits(x, t, axis=-1, label_smoothing=0.0):  # type: ignore[no-untyped-def]
    x, t = _f64(x, t)
    c = x.shape[axis]
    t = t * (1 - label_smoothing) + label_smoothing / c
    ls = log_softmax(x, axis)
    val = -(t * ls).sum(axis=axis)
    sm = np.exp(ls)
    grad = sm * t.sum(axis=axis, keepdims=True) - t
    return val, grad


def cce_probs(p, t, axis=-1, label_smoothing=0.0):  # type: ignore[no-untyped-def]
    """Value only: renormalise, clip, cross-entropy (Keras's definition)."""
    p, t = _f64(p, t)
    c = p.shape[axis]
    t = t * (1 - label_smoothing) + label_smoothing / c
    q = np.clip(p / p.sum(axis=axis, keepdims=True), EPS, 1 - EPS)
    return -(t * np.log(q)).sum(axis=axis)


def one_hot(labels, classes, axis=-1):  # type: ignore[no-untyped-def]
    labels = np.asarray(labels)
    oh = (labels[..., None] == np.arange(classes)).astype(np.float64)
    return np.moveaxis(oh, -1, axis)


def in_top_k(scores, labels, k):  # type: ignore[no-untyped-def]
    scores = np.asarray(scores, np.float64)
    out = []
    for row, y in zip(scores, labels):
        if not np.all(np.isfinite(row)) or not 0 <= y < row.size:
            out.append(False)
        else:
            out.append(int((row > row[y]).sum()) < k)
    return np.array(out)
