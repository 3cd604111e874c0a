"""Soft overlap losses for segmentation: Dice and Tversky."""

from __future__ import annotations

from typing import Any

from .._core.call import Call, broadcast_checked, check_host_value, prepare
from .._core.dispatch import resolve
from .._core.eager import run_whole, runs_whole
from .._core.validate import check_nonnegative, normalize_axes

Array = Any


def _overlap(predictions: Array, targets: Array, axis: Any, reduction: str, weights: Any,
             where: Any) -> tuple[Call, Array, Array, Array, Array]:
    """(call for the reduction, intersection, false positives, false negatives, and the
    predicted + target mass), each summed over ``axis`` over the unmasked elements."""
    # weights belong to the reduced loss, not to the pixels: checked here, not by prepare
    resolve(("predictions", "weights"), (predictions, weights))
    call, (p, t) = prepare(("predictions", "targets"), (predictions, targets),
                           reduction=reduction, where=where)
    xp, ad = call.xp, call.ad
    pshape = ad.shape(p)
    axes = normalize_axes(axis, len(pshape))
    # masked pixels are cleaned to 0: they add to no sum, and NaN there reaches nothing
    p, t = call.clean(p, 0.0), call.clean(t, 0.0)
    s = axes if axes else None

    def total(v: Array) -> Array:
        return v if not axes else xp.sum(v, axis=s)

    inter = total(p * t)
    fp = total(p * (1.0 - t))
    fn = total((1.0 - p) * t)
    mass = total(p + t)
    # pshape's own slices, joined: a backend's shape with unknown dimensions (TensorFlow's,
    # traced with a None batch) keeps its run-time shape along, for broadcasting the weights
    loss_shape = pshape[:0]
    for i in range(len(pshape)):
        if i not in axes:
            loss_shape = loss_shape + pshape[i:i + 1]
    mask = None
    if call.mask is not None:
        # a coefficient whose pixels are all masked is left out of the reduction, as if sliced
        kept = total(ad.astype(call.mask, call.dtype))
        mask = kept > 0.0
    w = None
    if weights is not None:
        if not hasattr(weights, "shape"):
            check_host_value("weights", weights)
            weights = ad.asarray(weights, like=p)
        if not (ad.is_floating(weights) or ad.is_integral(weights)):
            raise TypeError(f"`weights` must be a real array, got dtype {weights.dtype}.")
        weights = broadcast_checked(ad, "weights", weights, loss_shape,
                                    f"the loss (predictions without axis {axes}) of shape")
        w = ad.astype(weights, call.dtype)
        if mask is not None:
            w = ad.where(mask, xp.broadcast_to(w, loss_shape), 0.0)
    return Call(ad, call.dtype, loss_shape, mask, w, reduction), inter, fp, fn, mass


def _smoothing(smooth: float, eps: float) -> tuple[float, float]:
    smooth = check_nonnegative("smooth", smooth)
    eps = check_nonnegative("eps", eps)
    if smooth + eps == 0.0:
        raise ValueError("`smooth` and `eps` are both 0: an empty prediction and target would "
                         "give 0/0; make one of them positive.")
    return smooth, eps


def dice_loss(predictions: Array, targets: Array, /, *, axis: Any = None, smooth: float = 0.0,
              eps: float = 1e-7, reduction: str = "mean", weights: Array | None = None,
              where: Array | None = None) -> Array:
    r"""Soft Dice loss, binary or multi-class.

    Parameters
    ----------
    predictions : array, floating
        Probabilities (a sigmoid or softmax output), e.g. ``(N, H, W)`` for binary or
        ``(N, H, W, C)`` for multi-class.
    targets : array, same shape
        Binary masks or one-hot class maps (soft values allowed).
    axis : None, int or tuple of ints
        The axes summed into one Dice coefficient (Keras's ``axis``); every other axis indexes
        a separate coefficient, and "mean" averages them.  ``None`` (Keras's default): one
        coefficient over everything.  ``(1, 2)`` on ``(N, H, W, C)``: one per image and class,
        the usual multi-class Dice; ``(0, 1, 2)``: one per class over the batch.
    smooth : float >= 0
        Added to numerator and denominator (Laplace smoothing): an empty prediction of an
        empty target then scores Dice 1 (loss 0).
    eps : float >= 0
        Added to the denominator only (Keras's 1e-7): keeps an empty case finite when
        ``smooth`` is 0.
    weights : array broadcastable to the loss (the predictions without ``axis``), optional
        E.g. one weight per class.
    where : boolean array broadcastable to ``predictions``, optional
        Elements (pixels) to use: masked ones (an "ignore" label) are left out of every sum.
        A coefficient with no unmasked element is left out of the reduction.
    reduction : {"mean", "sum", "weighted_mean", "none"}
        How the coefficients' losses are combined (see "Common semantics" in the README).

    Returns
    -------
    array
        Scalar for "mean"/"sum"; for "none" the shape of ``predictions`` without ``axis``.

    Notes
    -----
    .. math:: \ell = 1 - \frac{2 \sum_i p_i t_i + s}{\sum_i p_i + \sum_i t_i + s + \epsilon}

    A smooth function of the predictions: no branch, no clip.

    Peers: ``keras.losses.Dice`` (``smooth=0``, ``eps=1e-7``, same ``axis``);
    ``optax.dice_loss`` (``apply_softmax=False``) smooths numerator and denominator by
    ``smooth`` after halving, i.e. our ``smooth`` is twice optax's (use :func:`tversky_loss`
    to match it exactly).

    References
    ----------
    Milletari, F., Navab, N., Ahmadi, S.-A. "V-Net: Fully Convolutional Neural Networks for
    Volumetric Medical Image Segmentation." 3DV, 2016.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([[0.9, 0.2, 0.1, 0.8]]); t = np.array([[1.0, 0.0, 0.0, 1.0]])
    >>> round(float(unilosses.dice_loss(p, t)), 6)
    0.15
    """
    if runs_whole(predictions):
        return run_whole(dice_loss, locals())
    smooth, eps = _smoothing(smooth, eps)
    call, inter, _, _, mass = _overlap(predictions, targets, axis, reduction, weights, where)
    return call.reduce(1.0 - (2.0 * inter + smooth) / (mass + (smooth + eps)))


def tversky_loss(predictions: Array, targets: Array, /, *, alpha: float = 0.5,
                 beta: float = 0.5, axis: Any = None, smooth: float = 0.0, eps: float = 1e-7,
                 reduction: str = "mean", weights: Array | None = None,
                 where: Array | None = None) -> Array:
    r"""Tversky loss: Dice with separate weights for false positives and false negatives.

    Parameters
    ----------
    predictions : array, floating, probabilities
    targets : array, same shape, binary masks or one-hot class maps
    alpha : float >= 0
        Weight of the false positives :math:`\sum p (1 - t)`.
    beta : float >= 0
        Weight of the false negatives :math:`\sum (1 - p) t`; ``beta > alpha`` favours recall.
    axis, smooth, eps, weights, where
        As in :func:`dice_loss`.
    reduction : {"mean", "sum", "weighted_mean", "none"}
        "mean" averages over the unmasked elements, "weighted_mean" divides by the summed
        weights, "none" returns the elementwise loss (see "Common semantics" in the README).

    Returns
    -------
    array
        As in :func:`dice_loss`: scalar for "mean"/"sum"/"weighted_mean"; for "none" the shape
        of ``predictions`` without ``axis``.

    Notes
    -----
    .. math:: \ell = 1 - \frac{TP + s}{TP + \alpha\,FP + \beta\,FN + s + \epsilon},
        \quad TP = \sum p\,t,\ FP = \sum p (1 - t),\ FN = \sum (1 - p)\,t

    ``alpha = beta = 0.5`` is the Dice loss (with ``smooth`` and ``eps`` doubled).

    Peers: ``optax.dice_loss(apply_softmax=False, alpha=, beta=, smooth=)`` (same roles,
    ``eps=0``); ``keras.losses.Tversky`` multiplies ``alpha`` by :math:`\sum t (1 - p)` and
    ``beta`` by :math:`\sum p (1 - t)` despite its documentation, so Keras's
    ``Tversky(alpha=a, beta=b)`` is ``tversky_loss(alpha=b, beta=a)`` (``eps=1e-7`` as here).

    References
    ----------
    Salehi, S. S. M., Erdogmus, D., Gholipour, A. "Tversky loss function for image
    segmentation using 3D fully convolutional deep networks." MLMI, 2017.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> p = np.array([[0.9, 0.4, 0.1, 0.8]]); t = np.array([[1.0, 0.0, 0.0, 1.0]])
    >>> round(float(unilosses.tversky_loss(p, t, alpha=0.3, beta=0.7)), 6)
    0.174757
    """
    if runs_whole(predictions):
        return run_whole(tversky_loss, locals())
    alpha = check_nonnegative("alpha", alpha)
    beta = check_nonnegative("beta", beta)
    smooth, eps = _smoothing(smooth, eps)
    call, tp, fp, fn, _ = _overlap(predictions, targets, axis, reduction, weights, where)
    return call.reduce(1.0 - (tp + smooth) / (tp + alpha * fp + beta * fn + (smooth + eps)))

