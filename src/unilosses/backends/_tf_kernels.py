"""TensorFlow's fused softmax cross-entropy kernels for the cross-entropy losses, and
``tf.math.in_top_k``.

``tf.nn.softmax_cross_entropy_with_logits`` and its sparse form compute the loss and the
gradient ``softmax - target`` in one kernel (and one XLA op); the composition reads and writes
the logits several times, up to 2.3x slower with backward.  Their semantics are the loss's
exactly once the logits are clamped as ``finite_logits`` does (``tf.clip_by_value``, the
adapter's clip) and the labels are range-checked (then clamped) as the generic path does (or,
eagerly on the CPU, by the op itself, which raises; the generic path then takes over); the
reduction is the common one (``Call.reduce``).  Under XLA the sparse op is slower than the
composition, which is then used.  ``tests/test_native.py`` compares them with the
composition.  TensorFlow's other losses (``sigmoid_cross_entropy_with_logits``, Keras's
Huber) are compositions with different subgradients at 0, so they are not used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

try:  # whether a graph is being traced for XLA (tf.function(jit_compile=True)): as Keras asks
    from tensorflow.python.ops import control_flow_util as _control_flow
except ImportError:  # pragma: no cover - another TensorFlow
    _control_flow = None

Array = Any


def in_xla() -> bool:
    """Whether the current graph is being traced for XLA (``jit_compile=True``)."""
    return (_control_flow is not None and not tf.executing_eagerly()
            and _control_flow.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


#: the fused ops themselves (rank 2: a row per example), registered gradients and all; eagerly
#: the tf.nn wrappers' conversions and shape checks cost more than the op on small inputs
_SPARSE = tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits
_DENSE = tf.raw_ops.SoftmaxCrossEntropyWithLogits


def cross_entropy(call: Any, x: Array, targets: Array, axis: int, label_smoothing: float,
                  labels: Callable[[], Array] | None = None) -> Array | None:
    ndim = len(call.ad.shape(x))
    if axis != ndim - 1:
        return None  # the fused ops take the classes last
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
        if ndim == 2 and tf.executing_eagerly():
            loss = _DENSE(features=xc, labels=t)[0]
        else:
            loss = tf.nn.softmax_cross_entropy_with_logits(labels=t, logits=xc)
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
