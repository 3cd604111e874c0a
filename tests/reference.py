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


# -- the loss catalogue (issue 9): elementwise float64 values from the published formulas ----
# Each function returns the elementwise loss (categorical: class axis last, removed); the tests
# take gradients of these by high-order finite differences where no closed form is written.
KERAS_EPS = 1e-7


def smooth_binary(t, s):  # type: ignore[no-untyped-def]
    """Keras's binary label smoothing: towards 0.5."""
    return np.asarray(t, np.float64) * (1 - s) + 0.5 * s


def cce_weighted(x, t, w, label_smoothing=0.0):  # type: ignore[no-untyped-def]
    """torch's cross_entropy with weight= and probability targets: (loss, weight of the label)."""
    x, t, w = _f64(x, t, w)
    c = x.shape[-1]
    ts = t * (1 - label_smoothing) + label_smoothing / c
    return -(w * ts * log_softmax(x)).sum(-1), (w * t).sum(-1)


def sparse_weighted(x, y, w, label_smoothing=0.0):  # type: ignore[no-untyped-def]
    """torch's cross_entropy with weight= and class indices (ATen's label-smoothing branch)."""
    x, w = _f64(x, w)
    ls = log_softmax(x)
    c = x.shape[-1]
    wy = w[y]
    nll = -wy * np.take_along_axis(ls, np.asarray(y)[..., None], -1)[..., 0]
    smooth = -(ls * w).sum(-1)
    return (1 - label_smoothing) * nll + label_smoothing / c * smooth, wy


def log1m_softmax(x):  # type: ignore[no-untyped-def]
    """log(1 - softmax(x)_c) as the log-sum-exp of the other classes, class by class."""
    x = np.asarray(x, np.float64)
    out = np.empty_like(x)
    for c in range(x.shape[-1]):
        others = np.delete(x, c, axis=-1)
        m = others.max(-1, keepdims=True)
        out[..., c] = (np.log(np.exp(others - m).sum(-1)) + m[..., 0]
                       - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1))
                       - x.max(-1))
    return out


def categorical_focal_logits(x, t, alpha=0.25, gamma=2.0, label_smoothing=0.0):  # type: ignore[no-untyped-def]
    x, t = _f64(x, t)
    c = x.shape[-1]
    t = t * (1 - label_smoothing) + label_smoothing / c
    a = 1.0 if alpha is None else np.asarray(alpha, np.float64)
    term = -a * np.exp(gamma * log1m_softmax(x)) * log_softmax(x)
    return (t * term).sum(-1)


def categorical_focal_probs(p, t, alpha=0.25, gamma=2.0, label_smoothing=0.0):  # type: ignore[no-untyped-def]
    """Keras's categorical_focal_crossentropy: renormalise, clip, (1 - p)^gamma on the clip."""
    p, t = _f64(p, t)
    c = p.shape[-1]
    t = t * (1 - label_smoothing) + label_smoothing / c
    q = np.clip(p / p.sum(-1, keepdims=True), EPS, 1 - EPS)
    a = 1.0 if alpha is None else np.asarray(alpha, np.float64)
    return (t * a * (1 - q) ** gamma * -np.log(q)).sum(-1)


def poly1(x, t, epsilon=2.0):  # type: ignore[no-untyped-def]
    x, t = _f64(x, t)
    ls = log_softmax(x)
    return -(t * ls).sum(-1) + epsilon * (t * (1 - np.exp(ls))).sum(-1)


def anchor_focal_image(x, t, state, alpha=0.25, gamma=2.0):  # type: ignore[no-untyped-def]
    """torchvision's RetinaNetClassificationHead.compute_loss, image by image with indexing."""
    x, t = _f64(x, t)
    losses = []
    for xi, ti, si in zip(x.reshape(-1, *x.shape[-2:]), t.reshape(-1, *t.shape[-2:]),
                          state.reshape(-1, state.shape[-1])):
        target = np.where((si == 1)[:, None], ti, 0.0)
        valid = si != -1
        fl, _ = focal_logits(xi[valid], target[valid], alpha, gamma)
        losses.append(fl.sum() / max(1, int((si == 1).sum())))
    return np.mean(losses)


def kl(logp, t, log_target=False):  # type: ignore[no-untyped-def]
    """torch.nn.functional.kl_div's pointwise terms (xlogy for t log t)."""
    logp, t = _f64(logp, t)
    if log_target:
        return np.exp(t) * (t - logp)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(t > 0, t * (np.log(np.where(t > 0, t, 1)) - logp), 0.0)


def poisson_nll(x, k, log_input=True, full=False, eps=1e-8):  # type: ignore[no-untyped-def]
    x, k = _f64(x, k)
    if log_input:
        val, grad = np.exp(x) - k * x, np.exp(x) - k
    else:
        val, grad = x - k * np.log(x + eps), 1 - k / (x + eps)
    if full:
        ks = np.where(k > 1, k, 1.0)
        val = val + np.where(k > 1, ks * np.log(ks) - ks + 0.5 * np.log(2 * np.pi * ks), 0.0)
    return val, grad


def gaussian_nll(p, t, v, full=False, eps=1e-6):  # type: ignore[no-untyped-def]
    """torch's gaussian_nll_loss: (value, d/dp, d/dv with torch's no_grad clamp)."""
    p, t, v = _f64(p, t, v)
    vc = np.maximum(v, eps)
    val = 0.5 * (np.log(vc) + (p - t) ** 2 / vc) + (0.5 * np.log(2 * np.pi) if full else 0.0)
    return val, (p - t) / vc, 0.5 * (1 / vc - (p - t) ** 2 / vc**2)


def hinge_labels(t):  # type: ignore[no-untyped-def]
    """Keras's convert_binary_labels_to_hinge: {0, 1} -> {-1, 1} if every label is 0 or 1."""
    t = np.asarray(t, np.float64)
    return 2 * t - 1 if np.all((t == 0) | (t == 1)) else t


def hinge(p, t, squared=False):  # type: ignore[no-untyped-def]
    p = np.asarray(p, np.float64)
    t = hinge_labels(t)
    m = 1 - t * p
    h = np.where(m > 0, m, 0.0)
    dh = np.where(m > 0, -t, 0.0)
    return (h * h, 2 * h * dh) if squared else (h, dh)


def categorical_hinge(p, t):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    return np.maximum(((1 - t) * p).max(-1) - (t * p).sum(-1) + 1, 0.0)


def cosine_loss(p, t, eps=1e-7):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    npn = np.maximum(np.sqrt((p * p).sum(-1)), eps)
    ntn = np.maximum(np.sqrt((t * t).sum(-1)), eps)
    return -(p * t).sum(-1) / (npn * ntn)


def quantile(p, t, q):  # type: ignore[no-untyped-def]
    """Pinball loss and its derivative w.r.t. p (0 at zero error)."""
    p, t, q = _f64(p, t, q)
    d = t - p
    val = np.where(d > 0, q * d, (q - 1) * d)
    return val, np.where(d > 0, -q, np.where(d < 0, 1 - q, 0.0))


def msle(p, t):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    a, b = np.log(np.maximum(p, KERAS_EPS) + 1), np.log(np.maximum(t, KERAS_EPS) + 1)
    return (a - b) ** 2, np.where(p > KERAS_EPS, 2 * (a - b) / (1 + p), 0.0)


def mape(p, t):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    den = np.maximum(np.abs(t), KERAS_EPS)
    return 100 * np.abs(t - p) / den, 100 * np.sign(p - t) / den


def tversky(p, t, axis=None, alpha=0.5, beta=0.5, smooth=0.0, eps=1e-7, where=None):  # type: ignore[no-untyped-def]
    """Salehi et al.'s Tversky loss (alpha on false positives), sums over `axis`."""
    p, t = _f64(p, t)
    m = np.ones(p.shape) if where is None else np.broadcast_to(where, p.shape) * 1.0
    tp = (m * p * t).sum(axis=axis)
    fp = (m * p * (1 - t)).sum(axis=axis)
    fn = (m * (1 - p) * t).sum(axis=axis)
    return 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth + eps)


def dice(p, t, axis=None, smooth=0.0, eps=1e-7, where=None):  # type: ignore[no-untyped-def]
    p, t = _f64(p, t)
    m = np.ones(p.shape) if where is None else np.broadcast_to(where, p.shape) * 1.0
    inter = (m * p * t).sum(axis=axis)
    return 1 - (2 * inter + smooth) / ((m * (p + t)).sum(axis=axis) + smooth + eps)


def _box_parts(b, g, eps):  # type: ignore[no-untyped-def]
    """torchvision's IoU-loss quantities, restated in NumPy: (iou, giou, diou, v)."""
    b, g = _f64(b, g)
    x1, y1, x2, y2 = np.moveaxis(b, -1, 0)
    x1g, y1g, x2g, y2g = np.moveaxis(g, -1, 0)
    xkis1, ykis1 = np.maximum(x1, x1g), np.maximum(y1, y1g)
    xkis2, ykis2 = np.minimum(x2, x2g), np.minimum(y2, y2g)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsct = np.where(mask, (xkis2 - xkis1) * (ykis2 - ykis1), 0.0)
    union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsct
    iou = intsct / (union + eps)
    xc1, yc1 = np.minimum(x1, x1g), np.minimum(y1, y1g)
    xc2, yc2 = np.maximum(x2, x2g), np.maximum(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    giou = 1 - (iou - (area_c - union) / (area_c + eps))
    diag = (xc2 - xc1) ** 2 + (yc2 - yc1) ** 2 + eps
    cdist = ((x2 + x1) / 2 - (x1g + x2g) / 2) ** 2 + ((y2 + y1) / 2 - (y1g + y2g) / 2) ** 2
    diou = 1 - iou + cdist / diag
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (4 / np.pi**2) * (np.arctan((x2g - x1g) / (y2g - y1g))
                              - np.arctan((x2 - x1) / (y2 - y1))) ** 2
    return iou, giou, diou, v


def box_losses(b, g, eps=1e-7, alpha_at=None):  # type: ignore[no-untyped-def]
    """torchvision.ops.{generalized,distance,complete}_box_iou_loss (torchvision 0.15+:
    giou_loss.py, diou_loss.py::_diou_iou_loss, ciou_loss.py, _utils.py::_loss_inter_union):
    (giou, diou, ciou) elementwise.  CIoU's alpha is computed under no_grad there; with
    ``alpha_at`` it is taken at those boxes, so differences in ``b`` hold it constant."""
    iou, giou, diou, v = _box_parts(b, g, eps)
    a_iou, _, _, a_v = _box_parts(b if alpha_at is None else alpha_at, g, eps)
    alpha = a_v / (1 - a_iou + a_v + eps)
    return giou, diou, diou + alpha * v
