"""Focal losses: binary (sigmoid) focal loss and RetinaNet's anchor focal loss."""

from __future__ import annotations

from typing import Any

from .._core.call import Call, prepare
from .._core.validate import check_nonnegative, check_unit_interval, fmt_shape
from .classification import EPSILON, finite_logits

Array = Any


def _alpha(alpha: float | None) -> float | None:
    return None if alpha is None else check_unit_interval("alpha", alpha)


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
    log_mod = ad.where(hard_one, log_q, ad.where(hard_zero, log_p, log_soft))
    factor = xp.exp(gamma * log_mod)
    factor = ad.where(hard_one | hard_zero | soft_ok, factor, 0.0)
    return factor * ce


def _focal_from_probabilities(call: Call, p: Array, y: Array, alpha: float | None,
                              gamma: float) -> Array:
    xp, ad = call.xp, call.ad
    pc = ad.clip(p, EPSILON, 1.0 - EPSILON)
    log_p, log_q = xp.log(pc), xp.log1p(-pc)
    if alpha is None:
        ce = -(y * log_p + (1.0 - y) * log_q)
    else:
        ce = -(alpha * y * log_p + (1.0 - alpha) * (1.0 - y) * log_q)
    return ad.safe_pow(ad.safe_abs(y - p), gamma) * ce


def binary_focal_loss(predictions: Array, targets: Array, /, *, alpha: float | None = 0.25,
                      gamma: float = 2.0, reduction: str = "mean",
                      weights: Array | None = None, where: Array | None = None) -> Array:
    r"""Binary focal loss on probabilities.

    Parameters
    ----------
    predictions : array, floating, probabilities in [0, 1]
    targets : array, same shape, labels in {0, 1} or soft labels in [0, 1]
    alpha : float in [0, 1] or None
        Weight of the positive term (``1 - alpha`` on the negative); None turns class
        balancing off.
    gamma : float >= 0
        Focusing parameter; 0 gives (alpha-weighted) binary cross-entropy.

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
    alpha = _alpha(alpha)
    gamma = check_nonnegative("gamma", gamma)
    call, (p, t) = prepare(("predictions", "targets"), (predictions, targets),
                           reduction=reduction, weights=weights, where=where)
    p, t = call.clean(p, 0.5), call.clean(t, 0.0)
    call.require_probabilities(p, "predictions")
    return call.reduce(_focal_from_probabilities(call, p, t, alpha, gamma))


def binary_focal_loss_with_logits(logits: Array, targets: Array, /, *,
                                  alpha: float | None = 0.25, gamma: float = 2.0,
                                  reduction: str = "mean", weights: Array | None = None,
                                  where: Array | None = None) -> Array:
    r"""Binary (sigmoid) focal loss on logits, computed in log space.

    Notes
    -----
    .. math:: FL = -|t - \sigma(x)|^\gamma \big(\alpha\, t \log\sigma(x)
        + (1-\alpha)(1-t) \log(1 - \sigma(x))\big)

    The logs are the backend's stable log-sigmoid.  For 0/1 labels the modulating factor is
    :math:`\exp(\gamma \log(1 - p_t))` with :math:`\log(1-p_t)` a log-sigmoid too, so value and
    gradient are finite for any :math:`\gamma \ge 0` and any logit (+-1e4 included), and every
    backend gets the same gradient at logit 0 (no ``abs``/``max`` ties).

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
    alpha = _alpha(alpha)
    gamma = check_nonnegative("gamma", gamma)
    call, (x, t) = prepare(("logits", "targets"), (logits, targets), reduction=reduction,
                           weights=weights, where=where)
    x, t = finite_logits(call, call.clean(x, 0.0)), call.clean(t, 0.0)
    return call.reduce(_focal_from_logits(call, x, t, alpha, gamma))


def _anchor(predictions: Array, targets: Array, anchor_state: Array, alpha: float | None,
            gamma: float, normalizer: Any, logits: bool) -> Array:
    alpha = _alpha(alpha)
    gamma = check_nonnegative("gamma", gamma)
    pname = "logits" if logits else "predictions"
    pshape = tuple(getattr(predictions, "shape", ()))
    if len(pshape) < 2:
        raise ValueError(
            f"`{pname}` must have shape (..., anchors, classes), got {fmt_shape(pshape)}."
        )
    call, (p, t, state) = prepare(
        (pname, "targets", "anchor_state"), (predictions, targets, anchor_state),
        reduction="sum", where=None, same_shape=("targets",),
    )
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
    # background anchors are scored as all-negative whatever their targets say (the seed's
    # RetinaNet rule); ignored anchors are cleaned so NaN there cannot reach the gradient
    t = ad.where(xp.expand_dims(positive, axis=-1), t, 0.0)
    p = ad.where(keep, p, 0.0 if logits else 0.5)
    if not logits:
        call.require_probabilities(p, pname)
    if logits:
        fl = _focal_from_logits(call, finite_logits(call, p), t, alpha, gamma)
    else:
        fl = _focal_from_probabilities(call, p, t, alpha, gamma)
    total = xp.sum(ad.where(keep, fl, 0.0))
    if normalizer is None:
        count = xp.sum(ad.astype(positive, call.dtype))
        return total / ad.where(count > 1.0, count, 1.0)
    if hasattr(normalizer, "shape"):
        normalizer = ad.astype(normalizer, call.dtype)
    return total / normalizer


def anchor_focal_loss(predictions: Array, targets: Array, anchor_state: Array, /, *,
                      alpha: float | None = 0.25, gamma: float = 2.0,
                      normalizer: Any = None) -> Array:
    r"""RetinaNet focal loss on probabilities with anchor states, normalised by the positives.

    Parameters
    ----------
    predictions : array (..., anchors, classes), probabilities
    targets : array (..., anchors, classes), 0/1 class labels
    anchor_state : array (..., anchors)
        -1 ignore, 0 background (scored as all classes negative), 1 object.
    normalizer : scalar or 0-d array, optional
        Divide by this instead of ``max(1, #anchors with state 1)``: e.g. a positive count
        already summed across devices.

    Returns
    -------
    scalar
        Focal loss summed over every class of every non-ignored anchor, divided by the
        normaliser.

    Notes
    -----
    Per element the loss is :func:`binary_focal_loss`'s.  Anchors are selected with masks
    and masked sums, never boolean indexing, so shapes stay static under jit/compile.

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
    return _anchor(predictions, targets, anchor_state, alpha, gamma, normalizer, logits=False)


def anchor_focal_loss_with_logits(logits: Array, targets: Array, anchor_state: Array, /, *,
                                  alpha: float | None = 0.25, gamma: float = 2.0,
                                  normalizer: Any = None) -> Array:
    r"""RetinaNet focal loss on logits with anchor states, normalised by the positives.

    As :func:`anchor_focal_loss`, with the elementwise loss of
    :func:`binary_focal_loss_with_logits` (log space, finite for any logit and gamma).

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> x = np.array([[[2.0, -2.0], [-1.0, -3.0]]])
    >>> t = np.array([[[1.0, 0.0], [0.0, 0.0]]])
    >>> s = np.array([[1, 0]])
    >>> round(float(unilosses.anchor_focal_loss_with_logits(x, t, s)), 6)
    0.018879
    """
    return _anchor(logits, targets, anchor_state, alpha, gamma, normalizer, logits=True)
