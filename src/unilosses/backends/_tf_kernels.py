"""TensorFlow's fused softmax cross-entropy kernels for the cross-entropy losses, and
``tf.math.in_top_k``.

``tf.nn.softmax_cross_entropy_with_logits`` and its sparse form compute the loss and the
gradient ``softmax - target`` in one kernel (and one XLA op); the composition reads and writes
the logits several times, up to 2.3x slower with backward.  That gradient is the loss's only
where each row of targets sums to 1: for others (multi-hot, unnormalised soft targets) the
dense op's gradient is corrected (:func:`dense_cross_entropy`).  Their semantics are the loss's
exactly once the logits are clamped as ``finite_logits`` does (``tf.clip_by_value``, the
adapter's clip) and the labels are range-checked (then clamped) as the generic path does (or,
eagerly on the CPU, by the op itself, which raises; the generic path then takes over); the
reduction is the common one (``Call.reduce``).  Under XLA the sparse op is slower than the
composition, which is then used.  ``tests/test_native.py`` compares them with the
composition.  TensorFlow's other losses (``sigmoid_cross_entropy_with_logits``, Keras's
Huber) are compositions with different subgradients at 0, so they are not used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

try:  # whether a graph is being traced for XLA (tf.function(jit_compile=True)): as Keras asks
    from tensorflow.python.ops import control_flow_util as _control_flow
except ImportError:  # pragma: no cover - another TensorFlow
    _control_flow = None

try:  # which tensors a GradientTape watches: private, so read defensively
    from tensorflow.python.eager import record as _record
    _record.should_record_backprop  # noqa: B018
except (ImportError, AttributeError):  # pragma: no cover - another TensorFlow
    _record = None

_stop_recording = contextlib.nullcontext if _record is None else _record.stop_recording

try:  # which tensors a ForwardAccumulator carries a tangent for: likewise private
    from tensorflow.python import pywrap_tfe as _pywrap_tfe
    _tangents = _pywrap_tfe.TFE_Py_PackJVPs
except (ImportError, AttributeError):  # pragma: no cover - another TensorFlow
    _tangents = None

Array = Any


def in_xla() -> bool:
    """Whether the current graph is being traced for XLA (``jit_compile=True``)."""
    return (_control_flow is not None and not tf.executing_eagerly()
            and _control_flow.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


#: the fused ops themselves (rank 2: a row per example), registered gradients and all; eagerly
#: the tf.nn wrappers' conversions and shape checks cost more than the op on small inputs
_SPARSE = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits
_DENSE = tf.raw_ops.SoftmaxCrossEntropyWithLogits


def _dense_any_targets(x: Array, t: Array) -> Array:
    """The dense op on rank-2 ``x`` and ``t``, its gradient in ``x`` that of
    ``-sum(t log_softmax(x))`` whatever the rows of ``t`` sum to."""
    # eagerly the targets' gradient only where a tape records them (the op's own registered
    # gradient computes it always, a log-softmax: at 10000 x 100 this form's backward, the
    # correction included, took 0.97 of the op's)
    targets_too = not tf.executing_eagerly() or _recorded(t)

    # eagerly under a forward accumulator the op runs unrecorded (the accumulator would take
    # its own JVP, from its registered gradient) and the gradient recomputes the softmax from
    # x, which then carries the tangent (forward over reverse)
    forward_mode = tf.executing_eagerly() and _carries_tangent(x)

    @tf.custom_gradient
    def loss(x: Array, t: Array) -> Any:
        with _stop_recording() if forward_mode else contextlib.nullcontext():
            rows, backprop = _DENSE(features=x, labels=t)
        s = tf.reduce_sum(t, axis=-1, keepdims=True)

        def grad(upstream: Array) -> Any:
            # the op's gradient is softmax - t; the loss's is s softmax - t, with s the row's
            # sum of targets: s (softmax - t) + (s - 1) t, the op's where every s is 1
            g = tf.expand_dims(upstream, -1)
            if forward_mode:
                gx = g * (s * tf.nn.softmax(x) - t)
            else:
                ones = tf.reduce_all(tf.abs(s - 1.0) <= _sum_tolerance(t.dtype.as_numpy_dtype))
                gx = tf.cond(ones, lambda: g * backprop,
                             lambda: g * (s * backprop + (s - 1.0) * t))
            return gx, (-g * tf.nn.log_softmax(x) if targets_too else None)

        return rows, grad

    return loss(x, t)


def _carries_tangent(x: Array) -> bool:
    """Whether a forward accumulator carries a tangent for ``x`` (True where that cannot be
    asked)."""
    return _tangents is None or not isinstance(x, tf.Tensor) or bool(_tangents([x])[1])


def _recorded(x: Array) -> bool:
    """Whether a tape records ``x`` or a forward accumulator carries a tangent for it, whose
    derivative the op's registered gradient would then give (True where that cannot be
    asked: a variable, another TensorFlow)."""
    return (_record is None or not isinstance(x, tf.Tensor)
            or bool(_record.should_record_backprop([x])) or _carries_tangent(x))


#: eagerly, up to this many elements on the CPU the targets' row sums are read, and where
#: every one is 1 (within 8 ulps) the op runs alone: tf.custom_gradient costs some Python
_READ_SUMS_BELOW = 1 << 16


def _sum_tolerance(dtype: Any) -> float:
    """How far from 1 a row's sum of targets may lie for the op's own gradient: its error is
    (s - 1) softmax, within a few ulps."""
    return 8 * float(np.finfo(dtype).eps)


def dense_cross_entropy(x: Array, t: Array) -> Array:
    """``-sum(t log_softmax(x))`` along the last axis, by the dense op.

    The op's registered gradient, ``softmax - t``, holds only where each row of ``t`` sums to
    1 (one-hot, smoothed or normalised soft targets); multi-hot or unnormalised targets need
    ``s softmax - t``, which torch's kernel and the composition give.  So where the logits are
    differentiated (traced, or eagerly under a tape that records them) the op runs under
    :func:`_dense_any_targets`, but on small eager inputs whose row sums are read and found
    1 (within a few ulps: the gradient's error is (s - 1) softmax).  Eagerly outside a tape
    the op alone (its gradient in the targets, ``-log_softmax(x)``, is right for any)."""
    if x.shape.rank == 2:
        return _dense_rows(x, t)
    classes = tf.shape(x)[-1:]
    rows = _dense_rows(tf.reshape(x, tf.concat([[-1], classes], 0)),
                       tf.reshape(t, tf.concat([[-1], classes], 0)))
    return tf.reshape(rows, tf.shape(x)[:-1])


def _dense_rows(x: Array, t: Array) -> Array:
    if tf.executing_eagerly():
        if not _recorded(x):
            return _DENSE(features=x, labels=t)[0]
        if x.shape.num_elements() < _READ_SUMS_BELOW and "CPU" in t.device:
            # (NumPy's reductions of a small host array cost less than TensorFlow's eager ops)
            a = t.numpy()
            if a.size == 0 or np.abs(a.sum(axis=-1) - 1.0).max() <= _sum_tolerance(a.dtype):
                return _DENSE(features=x, labels=t)[0]
    return _dense_any_targets(x, t)


def cross_entropy(call: Any, x: Array, targets: Array, axis: int, label_smoothing: float,
                  labels: Callable[[], Array] | None = None, ignore_index: int | None = None,
                  left_out: bool = False, class_weights: Any = None) -> Array | None:
    ndim = len(call.ad.shape(x))
    if axis != ndim - 1 or left_out or class_weights is not None:
        # (the fused ops take the classes last; nor have they an ignore_index or class
        # weights, and the rows a mask leaves out would need their logits replaced: a
        # full-size select)
        return None
    if labels is not None and in_xla():
        # XLA lowers the sparse op into more passes than the composition's (a log-sum-exp and
        # a gather of one logit per row): under tf.function(jit_compile=True) at 10000 x 100
        # the composition, clamp included, took 0.63 of the op's time forward and 0.83 with
        # backward (in one process, interleaved).  The dense op stays: there the composition
        # (a log-softmax against the targets) took 1.16 and 1.54 of the op's time
        return None
    bound = float(call.xp.finfo(call.dtype).max) / 4
    xc = x if call.ad.bounded(x) else call.ad.clip(x, -bound, bound)
    if labels is not None:
        if label_smoothing:
            return None  # the sparse op has no smoothing
        if call.ad.is_tracing(x) or "CPU" not in x.device:
            # traced, the op's error would come at run time; on a GPU it gives NaN instead
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels(), logits=xc)
        else:
            # eagerly on the CPU the op refuses a label out of range itself, in its own pass:
            # the generic path then gives unilosses's error (or clamps it, checks off), where
            # reading the labels first cost more ops than the loss (3.3x the op's time on 16
            # elements)
            try:
                if ndim == 2:  # the op itself: its wrapper's conversions and checks cost more
                    loss = _SPARSE(features=xc, labels=targets)[0]
                else:
                    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets,
                                                                          logits=xc)
            except tf.errors.InvalidArgumentError:
                return None
    else:
        t = targets
        if label_smoothing:
            classes = call.ad.shape(x)[-1]
            if classes is None:  # (traced with the class dimension None)
                classes = tf.cast(tf.shape(x)[-1], t.dtype)
            t = t * (1.0 - label_smoothing) + label_smoothing / classes
        loss = dense_cross_entropy(xc, t)
    return call.reduce(loss)


def in_top_k(call: Any, scores: Array, labels: Array, k: int) -> Array | None:
    """``tf.math.in_top_k``, eagerly, on float32 scores (the only dtype it takes): one kernel
    against five eager ops.  Its semantics are in_top_k's: ties that straddle the k-th place
    count as in, a row with a non-finite score and a label out of range give False.  Traced
    for XLA, the composition's one fused reduction is faster than XLA's lowering of it."""
    if call.ad.is_tracing(scores) or scores.dtype != tf.float32:
        return None
    if labels.dtype not in (tf.int32, tf.int64):
        labels = tf.cast(labels, tf.int64)
    return tf.math.in_top_k(labels, scores, k)


KERNELS: dict[str, Callable[..., Array | None]] = {
    "cross_entropy_with_logits": cross_entropy,
    "in_top_k": in_top_k,
}

__all__ = ["KERNELS"]
