"""Keras 3 front end: one :class:`keras.losses.Loss` per unilosses loss family.

Works on the Keras backends JAX, TensorFlow and PyTorch (each tested, training included; the
NumPy backend, which only evaluates, works too): inside Keras the arrays handed to ``call`` are
the backend's own tensors, so the functional losses dispatch to that backend as they would
anywhere else.

Keras conventions throughout:

* ``loss(y_true, y_pred, sample_weight=None)``: targets first.
* ``call`` returns one loss per sample (the functional loss with ``reduction="none"``, averaged
  over the last axis where Keras's own loss does); Keras's ``Loss.__call__`` then applies
  ``sample_weight``, masks and ``reduction`` (``"sum_over_batch_size"`` by default, ``"sum"``,
  ``None``/``"none"``, ``"mean"``, ``"mean_with_sample_weight"``) exactly as for Keras's losses.
* ``from_logits=False`` chooses the probability form, ``True`` the ``_with_logits`` form.
* Targets of shape ``(batch,)`` against predictions ``(batch, 1)`` (or the reverse) are squeezed
  or expanded to the same rank, as Keras does; otherwise shapes must match exactly.
* ``get_config``/``from_config`` round trip, and every class is registered with
  ``keras.saving.register_keras_serializable(package="unilosses")``, so a model compiled with
  one of these losses and saved with ``model.save("m.keras")`` loads back with it (once
  ``unilosses.keras`` has been imported).

Naming: Keras's own class name where Keras has the same loss, so switching is a change of
import, and Keras's spelling for the others.  Options keep unilosses's names and defaults.

Each class, the functions it calls (``from_logits`` False / True) and Keras's class:

``MeanSquaredError``: ``mse``; Keras ``MeanSquaredError``
``RootMeanSquaredError``: ``rmse(axis=-1)`` per sample; Keras has it as a metric only
``MeanAbsoluteError``: ``mae``; Keras ``MeanAbsoluteError``
``Huber``: ``huber`` (``delta=1.0``); Keras ``Huber``
``SmoothL1``: ``smooth_l1`` (``beta=1.0``); none
``LogCosh``: ``log_cosh``; Keras ``LogCosh``
``BinaryCrossentropy``: ``binary_cross_entropy`` / ``binary_cross_entropy_with_logits``;
    Keras ``BinaryCrossentropy``
``CategoricalCrossentropy``: ``categorical_cross_entropy`` / ``..._with_logits``;
    Keras ``CategoricalCrossentropy``
``SparseCategoricalCrossentropy``: ``sparse_categorical_cross_entropy`` / ``..._with_logits``;
    Keras ``SparseCategoricalCrossentropy``
``BinaryFocalCrossentropy``: ``binary_focal_loss`` / ``binary_focal_loss_with_logits``;
    Keras ``BinaryFocalCrossentropy``
``AnchorFocalCrossentropy``: ``anchor_focal_loss`` / ``anchor_focal_loss_with_logits``;
    none (RetinaNet)

Differences from Keras's classes with the same name: ``BinaryFocalCrossentropy`` has
``alpha=0.25`` on by default (``alpha=None`` turns it off; Keras needs
``apply_class_balancing=True``) and applies no label smoothing;
``SparseCategoricalCrossentropy`` names Keras's ``ignore_class`` ``ignore_index`` and also takes
``label_smoothing``.

``AnchorFocalCrossentropy`` takes the RetinaNet seed's layout: ``y_true`` of shape
``(batch, anchors, classes + 1)`` whose last channel is the anchor state (-1 ignore,
0 background, 1 object), ``y_pred`` of shape ``(batch, anchors, classes)``; ``y_true`` may also
be a pair ``(targets, anchor_state)``.  Its per-sample value is the sample's focal sum divided
by the mean number of object anchors per sample, ``batch * S_b / max(1, #objects)``, so that the
default reduction (the mean over the batch) is exactly :func:`unilosses.anchor_focal_loss` and
``sample_weight`` weights each image.
"""

from __future__ import annotations

from typing import Any

try:
    import keras
    from keras import ops
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "unilosses.keras needs Keras 3 and one of its backends, which are not installed: "
        'pip install keras "unilosses[jax]" (or "unilosses[torch]", "unilosses[tensorflow]")'
    ) from exc

if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover - Keras 2 is tf.keras
    raise ImportError(
        f"unilosses.keras needs Keras 3, found Keras {keras.__version__}: pip install 'keras>=3'"
    )

from ._core.validate import check_nonnegative, check_positive, check_unit_interval
from .losses import classification as _cls
from .losses import focal as _focal
from .losses import regression as _reg

__all__ = [
    "AnchorFocalCrossentropy",
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "CategoricalCrossentropy",
    "Huber",
    "LogCosh",
    "MeanAbsoluteError",
    "MeanSquaredError",
    "RootMeanSquaredError",
    "SmoothL1",
    "SparseCategoricalCrossentropy",
]

Tensor = Any
_register = keras.saving.register_keras_serializable(package="unilosses")


def _same_rank(y_true: Tensor, y_pred: Tensor) -> tuple[Tensor, Tensor]:
    """Keras's rule: if the ranks differ by one and the longer has a last axis of 1, match them
    (expand a rank-1 shorter one, else squeeze the longer)."""
    rt, rp = len(y_true.shape), len(y_pred.shape)
    if rt == rp + 1 and y_true.shape[-1] == 1:
        if rp == 1:
            y_pred = ops.expand_dims(y_pred, -1)
        else:
            y_true = ops.squeeze(y_true, -1)
    elif rp == rt + 1 and y_pred.shape[-1] == 1:
        if rt == 1:
            y_true = ops.expand_dims(y_true, -1)
        else:
            y_pred = ops.squeeze(y_pred, -1)
    return y_true, y_pred


def _axis(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`axis` must be an int, got {type(value).__name__}.")
    return value


def _alpha(alpha: float | None) -> float | None:
    return None if alpha is None else check_unit_interval("alpha", alpha)


class _Loss(keras.losses.Loss):
    """Base: Keras's constructor arguments, and the options in ``get_config``."""

    _options: tuple[str, ...] = ()

    def __init__(self, *, reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["dtype"] = self.dtype
        for option in self._options:
            config[option] = getattr(self, option)
        return config

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._options)
        return f"{type(self).__name__}({opts}{', ' if opts else ''}reduction={self.reduction!r})"


@_register
class MeanSquaredError(_Loss):
    """Mean squared error over the last axis, per sample (:func:`unilosses.mse`)."""

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        return ops.mean(_reg.mse(y_pred, y_true, reduction="none"), axis=-1)


@_register
class MeanAbsoluteError(_Loss):
    """Mean absolute error over the last axis, per sample (:func:`unilosses.mae`)."""

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        return ops.mean(_reg.mae(y_pred, y_true, reduction="none"), axis=-1)


@_register
class RootMeanSquaredError(_Loss):
    """Root mean squared error over the last axis, per sample (:func:`unilosses.rmse`); Keras's
    reduction then averages the per-sample values."""

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        return _reg.rmse(y_pred, y_true, axis=-1)


@_register
class Huber(_Loss):
    """Huber loss averaged over the last axis, per sample (:func:`unilosses.huber`)."""

    _options = ("delta",)

    def __init__(self, delta: float = 1.0, *, reduction: str | None = "sum_over_batch_size",
                 name: str | None = None, dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.delta = check_positive("delta", delta)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        return ops.mean(_reg.huber(y_pred, y_true, delta=self.delta, reduction="none"), axis=-1)


@_register
class SmoothL1(_Loss):
    """Smooth L1 loss averaged over the last axis, per sample (:func:`unilosses.smooth_l1`)."""

    _options = ("beta",)

    def __init__(self, beta: float = 1.0, *, reduction: str | None = "sum_over_batch_size",
                 name: str | None = None, dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.beta = check_positive("beta", beta)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        return ops.mean(_reg.smooth_l1(y_pred, y_true, beta=self.beta, reduction="none"),
                        axis=-1)


@_register
class LogCosh(_Loss):
    """Log-cosh loss averaged over the last axis, per sample (:func:`unilosses.log_cosh`)."""

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        return ops.mean(_reg.log_cosh(y_pred, y_true, reduction="none"), axis=-1)


@_register
class BinaryCrossentropy(_Loss):
    """Binary cross-entropy averaged over ``axis``, per sample.

    ``from_logits=False``: :func:`unilosses.binary_cross_entropy` on probabilities;
    ``True``: :func:`unilosses.binary_cross_entropy_with_logits`, which also takes
    ``pos_weight`` (a float, or a list broadcast against the last axis).  ``label_smoothing``
    moves the targets towards 0.5, ``t (1 - s) + s / 2``, as Keras does.
    """

    _options = ("from_logits", "label_smoothing", "axis", "pos_weight")

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 pos_weight: float | list[float] | None = None, *,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)
        self.axis = _axis(axis)
        if pos_weight is not None and not self.from_logits:
            raise ValueError("`pos_weight` needs from_logits=True.")
        if isinstance(pos_weight, tuple):
            pos_weight = list(pos_weight)
        self.pos_weight = pos_weight

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        if self.label_smoothing:
            y_true = y_true * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        if self.from_logits:
            pw = self.pos_weight
            if isinstance(pw, list):
                pw = ops.convert_to_tensor(pw, dtype=y_pred.dtype)
            loss = _cls.binary_cross_entropy_with_logits(y_pred, y_true, pos_weight=pw,
                                                         reduction="none")
        else:
            loss = _cls.binary_cross_entropy(y_pred, y_true, reduction="none")
        return ops.mean(loss, axis=self.axis)


@_register
class CategoricalCrossentropy(_Loss):
    """Categorical cross-entropy over ``axis`` (one-hot or soft targets), per sample:
    :func:`unilosses.categorical_cross_entropy` or, with ``from_logits=True``,
    :func:`unilosses.categorical_cross_entropy_with_logits`."""

    _options = ("from_logits", "label_smoothing", "axis")

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 *, reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)
        self.axis = _axis(axis)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        fn = (_cls.categorical_cross_entropy_with_logits if self.from_logits
              else _cls.categorical_cross_entropy)
        return fn(y_pred, y_true, axis=self.axis, label_smoothing=self.label_smoothing,
                  reduction="none")


def _set_keras_mask(x: Tensor, mask: Tensor) -> None:
    # Keras's own SparseCategoricalCrossentropy marks ignored samples this way, so that the
    # "sum_over_batch_size" reduction divides by the number of the others.
    from keras.src.backend import set_keras_mask

    set_keras_mask(x, mask)


@_register
class SparseCategoricalCrossentropy(_Loss):
    """Categorical cross-entropy with integer labels, per sample:
    :func:`unilosses.sparse_categorical_cross_entropy` or, with ``from_logits=True``,
    :func:`unilosses.sparse_categorical_cross_entropy_with_logits`.

    Labels may come as floats (Keras converts ``y_true`` to the loss's dtype) and with a
    trailing axis of 1.  Samples whose label equals ``ignore_index`` (Keras's ``ignore_class``)
    get loss 0 and are left out of the count of ``"sum_over_batch_size"``, as in Keras.
    """

    _options = ("from_logits", "ignore_index", "label_smoothing", "axis")

    def __init__(self, from_logits: bool = False, ignore_index: int | None = None,
                 label_smoothing: float = 0.0, axis: int = -1, *,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        if ignore_index is not None and (isinstance(ignore_index, bool)
                                         or not isinstance(ignore_index, int)):
            raise TypeError(f"`ignore_index` must be an int or None, got {ignore_index!r}.")
        self.ignore_index = ignore_index
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)
        self.axis = _axis(axis)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, -1)
        labels = ops.cast(y_true, "int32")
        fn = (_cls.sparse_categorical_cross_entropy_with_logits if self.from_logits
              else _cls.sparse_categorical_cross_entropy)
        loss = fn(y_pred, labels, axis=self.axis, ignore_index=self.ignore_index,
                  label_smoothing=self.label_smoothing, reduction="none")
        if self.ignore_index is not None:
            _set_keras_mask(loss, ops.not_equal(labels, self.ignore_index))
        return loss


@_register
class BinaryFocalCrossentropy(_Loss):
    """Binary focal loss averaged over ``axis``, per sample:
    :func:`unilosses.binary_focal_loss` or, with ``from_logits=True``,
    :func:`unilosses.binary_focal_loss_with_logits`.  ``alpha=None`` turns class balancing
    off."""

    _options = ("from_logits", "alpha", "gamma", "axis")

    def __init__(self, from_logits: bool = False, alpha: float | None = 0.25,
                 gamma: float = 2.0, axis: int = -1, *,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.alpha = _alpha(alpha)
        self.gamma = check_nonnegative("gamma", gamma)
        self.axis = _axis(axis)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        fn = (_focal.binary_focal_loss_with_logits if self.from_logits
              else _focal.binary_focal_loss)
        loss = fn(y_pred, y_true, alpha=self.alpha, gamma=self.gamma, reduction="none")
        return ops.mean(loss, axis=self.axis)


@_register
class AnchorFocalCrossentropy(_Loss):
    """RetinaNet focal loss with anchor states (:func:`unilosses.anchor_focal_loss`, or
    :func:`unilosses.anchor_focal_loss_with_logits` with ``from_logits=True``).

    ``y_true``: ``(batch, anchors, classes + 1)`` with the anchor state (-1 ignore,
    0 background, 1 object) as the last channel, or a pair ``(targets, anchor_state)``;
    ``y_pred``: ``(batch, anchors, classes)``.  Per sample ``b`` it returns
    ``batch * S_b / max(1, #objects in the batch)``, ``S_b`` being the focal loss summed over
    the sample's non-ignored anchors, so that the default reduction gives exactly the
    functional loss.
    """

    _options = ("from_logits", "alpha", "gamma")

    def __init__(self, from_logits: bool = False, alpha: float | None = 0.25,
                 gamma: float = 2.0, *, reduction: str | None = "sum_over_batch_size",
                 name: str | None = None, dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.alpha = _alpha(alpha)
        self.gamma = check_nonnegative("gamma", gamma)

    def call(self, y_true: Any, y_pred: Tensor) -> Tensor:
        if isinstance(y_true, (tuple, list)):
            targets, state = y_true
        else:
            targets, state = y_true[..., :-1], y_true[..., -1]
        if len(y_pred.shape) < 2 or len(state.shape) != len(y_pred.shape) - 1:
            raise ValueError(
                f"AnchorFocalCrossentropy takes y_pred of shape (batch, anchors, classes) and "
                f"y_true of shape (batch, anchors, classes + 1) or (targets, anchor_state); got "
                f"y_pred {tuple(y_pred.shape)} and anchor_state {tuple(state.shape)}."
            )
        dtype = y_pred.dtype
        state = ops.cast(state, dtype)
        positive = ops.equal(state, 1.0)
        keep = ops.expand_dims(ops.not_equal(state, -1.0), -1)
        # background anchors are scored as all-negative whatever their targets say
        targets = ops.where(ops.expand_dims(positive, -1), ops.cast(targets, dtype), 0.0)
        fn = (_focal.binary_focal_loss_with_logits if self.from_logits
              else _focal.binary_focal_loss)
        elementwise = fn(y_pred, targets, alpha=self.alpha, gamma=self.gamma,
                         reduction="none", where=keep)
        per_sample = ops.sum(elementwise, axis=tuple(range(1, len(elementwise.shape))))
        objects = ops.sum(ops.cast(positive, dtype))
        batch = ops.cast(ops.shape(y_pred)[0], dtype)
        return per_sample * (batch / ops.maximum(objects, 1.0))
