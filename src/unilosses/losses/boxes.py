"""Bounding-box regression losses: generalized, distance and complete IoU (torchvision's)."""

from __future__ import annotations

import math
from typing import Any

from .._core.call import Call, prepare
from .._core.eager import run_whole, runs_whole
from .._core.validate import check_positive, fmt_shape, host_shape

Array = Any

def _max(call: Call, a: Array, b: Array) -> Array:
    # a tie shares the gradient 1/2-1/2, as torch.max(a, b) and jnp.maximum do (TensorFlow's
    # maximum gives it all to `a`): boxes equal to their targets are a common case
    ad = call.ad
    return ad.where(a > b, a, ad.where(a < b, b, 0.5 * (a + b)))


def _min(call: Call, a: Array, b: Array) -> Array:
    return -_max(call, -a, -b)


class _Geometry:
    """The quantities torchvision's IoU losses share, for (x1, y1, x2, y2) boxes."""

    def __init__(self, call: Call, b: Array, g: Array, eps: float) -> None:
        ad = call.ad
        x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
        x1g, y1g, x2g, y2g = g[..., 0], g[..., 1], g[..., 2], g[..., 3]
        iw = _min(call, x2, x2g) - _max(call, x1, x1g)
        ih = _min(call, y2, y2g) - _max(call, y1, y1g)
        # torchvision's `intsct[mask] = ...` as a select: no boolean indexing
        inter = ad.where((iw > 0) & (ih > 0), iw * ih, 0.0)
        self.union = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - inter
        self.iou = inter / (self.union + eps)
        # the smallest enclosing box
        self.cw = _max(call, x2, x2g) - _min(call, x1, x1g)
        self.ch = _max(call, y2, y2g) - _min(call, y1, y1g)
        self.dx = (x2 + x1) / 2 - (x1g + x2g) / 2
        self.dy = (y2 + y1) / 2 - (y1g + y2g) / 2
        self.w, self.h, self.wg, self.hg = x2 - x1, y2 - y1, x2g - x1g, y2g - y1g

    def distance_term(self, eps: float) -> Array:
        diagonal = self.cw * self.cw + self.ch * self.ch + eps
        return (self.dx * self.dx + self.dy * self.dy) / diagonal


def _prepare(boxes: Array, target_boxes: Array, eps: float, reduction: str, weights: Any,
             where: Any) -> tuple[Call, _Geometry]:
    check_positive("eps", eps)
    shape = host_shape(boxes)
    if not shape or shape[-1] not in (4, None):
        raise ValueError(
            f"`boxes` has shape {fmt_shape(shape)}; it must be (..., 4): (x1, y1, x2, y2) along "
            f"the last axis."
        )
    call, (b, g) = prepare(("boxes", "target_boxes"), (boxes, target_boxes),
                           reduction=reduction, weights=weights, where=where,
                           class_axis=len(shape) - 1, same_shape=("target_boxes",))
    # masked boxes become the empty box at 0: a degenerate box, finite like any other
    b, g = call.clean(b, 0.0, axis=-1), call.clean(g, 0.0, axis=-1)
    return call, _Geometry(call, b, g, eps)


def giou_loss(boxes: Array, target_boxes: Array, /, *, eps: float = 1e-7,
              reduction: str = "mean", weights: Array | None = None,
              where: Array | None = None) -> Array:
    r"""Generalized IoU loss for (x1, y1, x2, y2) boxes.

    Parameters
    ----------
    boxes : array (..., 4), floating
        Predicted boxes as (x1, y1, x2, y2) with x1 <= x2 and y1 <= y2.
    target_boxes : array (..., 4)
        The matched target boxes, same shape.
    eps : float > 0
        torchvision's 1e-7, added to the divisors.
    reduction : {"mean", "sum", "weighted_mean", "none"}
        "mean" averages over the unmasked boxes, "weighted_mean" divides by the summed
        weights, "none" returns one loss per box (see "Common semantics" in the README).
    weights : array broadcastable to ``boxes.shape[:-1]``, optional
    where : boolean array broadcastable to ``boxes.shape[:-1]``, optional
        Boxes where it is False are left out (zero loss and gradient).

    Returns
    -------
    array
        Scalar for "mean"/"sum"/"weighted_mean"; for "none" the shape of ``boxes`` without
        the last axis.

    Notes
    -----
    .. math:: \ell = 1 - \frac{I}{U + \epsilon} + \frac{C - U}{C + \epsilon}

    with :math:`I` the intersection area, :math:`U` the union and :math:`C` the area of the
    smallest enclosing box.  Coordinate maxima/minima are selects that share a tie's gradient
    equally (as ``torch.max``), and the intersection is a select rather than torchvision's
    boolean-mask write, so the loss traces under jit/compile; degenerate (zero-area) boxes give
    finite values and gradients.  Default ``reduction="mean"`` (torchvision: ``"none"``).

    Peers: ``torchvision.ops.generalized_box_iou_loss`` (same formula and eps).

    References
    ----------
    Rezatofighi, H., Tsoi, N., Gwak, J., Sadeghian, A., Reid, I., Savarese, S. "Generalized
    Intersection over Union: A Metric and A Loss for Bounding Box Regression." CVPR, 2019.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> b = np.array([[0.0, 0.0, 2.0, 2.0]]); g = np.array([[1.0, 1.0, 3.0, 3.0]])
    >>> round(float(unilosses.giou_loss(b, g)), 6)
    1.079365
    """
    if runs_whole(boxes):
        return run_whole(giou_loss, locals())
    call, geo = _prepare(boxes, target_boxes, eps, reduction, weights, where)
    area_c = geo.cw * geo.ch
    return call.reduce(1.0 - geo.iou + (area_c - geo.union) / (area_c + eps))


def diou_loss(boxes: Array, target_boxes: Array, /, *, eps: float = 1e-7,
              reduction: str = "mean", weights: Array | None = None,
              where: Array | None = None) -> Array:
    r"""Distance IoU loss for (x1, y1, x2, y2) boxes.

    Parameters
    ----------
    boxes, target_boxes, eps, reduction, weights, where
        As in :func:`giou_loss`.

    Returns
    -------
    array
        As in :func:`giou_loss`: scalar for "mean"/"sum"/"weighted_mean"; for "none" the shape
        of ``boxes`` without the last axis.

    Notes
    -----
    .. math:: \ell = 1 - \frac{I}{U + \epsilon} + \frac{\rho^2}{c^2 + \epsilon}

    with :math:`\rho` the distance between the box centres and :math:`c` the diagonal of the
    smallest enclosing box.

    Peers: ``torchvision.ops.distance_box_iou_loss`` (same formula and eps).

    References
    ----------
    Zheng, Z., Wang, P., Liu, W., Li, J., Ye, R., Ren, D. "Distance-IoU Loss: Faster and Better
    Learning for Bounding Box Regression." AAAI, 2020.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> b = np.array([[0.0, 0.0, 2.0, 2.0]]); g = np.array([[1.0, 1.0, 3.0, 3.0]])
    >>> round(float(unilosses.diou_loss(b, g)), 6)
    0.968254
    """
    if runs_whole(boxes):
        return run_whole(diou_loss, locals())
    call, geo = _prepare(boxes, target_boxes, eps, reduction, weights, where)
    return call.reduce(1.0 - geo.iou + geo.distance_term(eps))


def _aspect(call: Call, w: Array, h: Array) -> Array:
    """atan(w / h), with its limit sign(w) pi / 2 (gradient 0) for a zero height."""
    ad = call.ad
    nonzero = h != 0
    return ad.where(nonzero, call.xp.atan(w / ad.where(nonzero, h, 1.0)),
                    call.xp.sign(w) * (math.pi / 2))


def ciou_loss(boxes: Array, target_boxes: Array, /, *, eps: float = 1e-7,
              reduction: str = "mean", weights: Array | None = None,
              where: Array | None = None) -> Array:
    r"""Complete IoU loss for (x1, y1, x2, y2) boxes.

    Parameters
    ----------
    boxes, target_boxes, eps, reduction, weights, where
        As in :func:`giou_loss`.

    Returns
    -------
    array
        As in :func:`giou_loss`: scalar for "mean"/"sum"/"weighted_mean"; for "none" the shape
        of ``boxes`` without the last axis.

    Notes
    -----
    .. math:: \ell = 1 - \mathrm{IoU} + \frac{\rho^2}{c^2 + \epsilon} + \alpha v,
        \quad v = \frac{4}{\pi^2}\Big(\arctan\frac{w_g}{h_g} - \arctan\frac{w}{h}\Big)^2,
        \quad \alpha = \frac{v}{1 - \mathrm{IoU} + v + \epsilon}

    the :func:`diou_loss` terms plus an aspect-ratio consistency term.  A zero height takes
    the limit :math:`\arctan(w/0) = \pm\pi/2` (torchvision gives NaN for a 0/0 box).

    :math:`\alpha` is a weight, not a function of the boxes: it is held constant under
    differentiation (the paper's rule; torchvision computes it under ``no_grad``), so values
    and gradients agree with torchvision's.

    Peers: ``torchvision.ops.complete_box_iou_loss`` (same formula and eps).

    References
    ----------
    Zheng, Z., Wang, P., Liu, W., Li, J., Ye, R., Ren, D. "Distance-IoU Loss: Faster and Better
    Learning for Bounding Box Regression." AAAI, 2020.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> b = np.array([[0.0, 0.0, 2.0, 4.0]]); g = np.array([[1.0, 1.0, 3.0, 3.0]])
    >>> round(float(unilosses.ciou_loss(b, g)), 6)
    0.842091
    """
    if runs_whole(boxes):
        return run_whole(ciou_loss, locals())
    call, geo = _prepare(boxes, target_boxes, eps, reduction, weights, where)
    diff = _aspect(call, geo.wg, geo.hg) - _aspect(call, geo.w, geo.h)
    v = (4.0 / math.pi ** 2) * diff * diff
    alpha = call.ad.stop_gradient(v / (1.0 - geo.iou + v + eps))
    return call.reduce(1.0 - geo.iou + geo.distance_term(eps) + alpha * v)
