"""Top-k membership and accuracy (metrics, no gradient)."""

from __future__ import annotations

from typing import Any

from .._core.call import plain, prepare
from .._core.eager import run_whole, runs_whole
from .._core.validate import check_positive_int, fmt_shape, host_shape

Array = Any


def _check_2d(predictions: Any) -> None:
    shape = host_shape(predictions)
    if len(shape) != 2:
        raise ValueError(
            f"`predictions` must have shape (N, classes), got {fmt_shape(shape)}; "
            f"reshape to two dimensions first."
        )


def _in_top_k(call: Any, scores: Array, labels: Array, k: int) -> Array:
    # (the dtype is read only for a k that float32, the narrowest computation dtype, cannot
    # count exactly: a namespace look-up per call otherwise)
    if k > 1 << 24:
        exact = round(2.0 / float(call.xp.finfo(call.dtype).eps))  # 2^24 (float32), 2^53
        if k > exact:
            raise ValueError(
                f"`k`={k} is above {exact}, the largest count that {call.dtype} predictions "
                f"rank exactly; pass float64 predictions."
            )
    ad = call.ad
    classes = ad.shape(scores)[-1]
    if classes is None:  # (TensorFlow traced with the class dimension None)
        classes = ad.astype(ad.dim(scores, -1), labels.dtype)
    elif classes == 0:  # no class to rank: every label lies out of range, so every row False
        return (labels >= 0) & (labels < 0)
    fused = call.native("in_top_k", scores, labels, k)
    if fused is not None:
        return fused
    xp = call.xp
    valid = (labels >= 0) & (labels < classes)
    safe = ad.where(valid, labels, 0)
    target = ad.take_along_axis(scores, xp.expand_dims(safe, axis=-1), -1)
    # one pass over each row: a higher score counts 1, a non-finite one (NaN included) inf,
    # where a count and a separate all(isfinite) took two (XLA: 2.2 against 0.8 ms at
    # 10000 x 100).  A floating count is exact below 2^24 (float32); above, it rounds but
    # never below 2^24, so ``count < k`` is exact for every k up to 2^24 (checked above)
    above = ad.where(xp.isfinite(scores), ad.astype(scores > target, call.dtype), float("inf"))
    return (xp.sum(above, axis=-1) < k) & valid


def in_top_k(predictions: Array, labels: Array, /, *, k: int) -> Array:
    r"""Whether each label is among the top ``k`` predictions of its row.

    Parameters
    ----------
    predictions : array (N, classes), floating
    labels : integer array (N,)
    k : int >= 1

    Returns
    -------
    boolean array (N,)

    Notes
    -----
    A label is in the top k when fewer than k classes score strictly higher than it
    (TensorFlow's ``in_top_k`` rule: ties count in the label's favour, no sort needed).  A row
    with any non-finite score, or a label outside ``[0, classes)``, gives False.

    Peers: ``tf.math.in_top_k`` (the same rule), ``keras.ops.in_top_k``; ``torch.topk``
    breaks ties by position instead.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> unilosses.in_top_k(np.array([[0.1, 0.5, 0.5], [0.9, 0.0, 0.1]]), np.array([2, 2]), k=1)
    array([ True, False])
    """
    if runs_whole(predictions):
        return run_whole(in_top_k, locals())
    fused = plain("in_top_k", predictions, labels, k)
    if fused is not None:
        return fused
    k = check_positive_int("k", k)
    _check_2d(predictions)
    call, (p, y) = prepare(("predictions", "labels"), (predictions, labels), class_axis=1,
                           labels=("labels",))
    return _in_top_k(call, p, y, k)


def top_k_accuracy(predictions: Array, labels: Array, /, *, k: int = 5,
                   where: Array | None = None) -> Array:
    r"""Fraction of rows whose label is in the top ``k`` (see :func:`in_top_k`).

    Parameters
    ----------
    predictions : array (N, classes), floating
    labels : integer array (N,)
    k : int >= 1
        A row counts as a hit when fewer than ``k`` classes score strictly higher than its
        label (:func:`in_top_k`'s rule).
    where : boolean array (N,), optional
        Rows where it is False are not counted.

    Returns
    -------
    scalar array in the predictions' floating dtype
        The fraction of counted rows that are hits; 0 when every row is masked.

    Notes
    -----
    Peers: ``keras.metrics.SparseTopKCategoricalAccuracy`` (default ``k=5`` too),
    torchmetrics' ``Accuracy(top_k=k)``.

    Examples
    --------
    >>> import numpy as np, unilosses
    >>> float(unilosses.top_k_accuracy(np.array([[0.1, 0.5, 0.4], [0.9, 0.0, 0.1]]),
    ...                                np.array([2, 2]), k=2))
    1.0
    """
    if runs_whole(predictions):
        return run_whole(top_k_accuracy, locals())
    k = check_positive_int("k", k)
    _check_2d(predictions)
    call, (p, y) = prepare(("predictions", "labels"), (predictions, labels), class_axis=1,
                           labels=("labels",), where=where)
    hit = _in_top_k(call, p, y, k)
    return call.reduce(call.ad.astype(hit, call.dtype))
