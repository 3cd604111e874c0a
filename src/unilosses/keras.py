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
* Dtype: ``Loss.__call__`` converts ``y_true`` and ``y_pred`` to the loss's ``dtype``
  (``keras.backend.floatx()``, float32, whatever the model's policy), so under
  ``mixed_float16`` the loss is computed in float32, as Keras's own are; a float16/bfloat16
  ``dtype=`` is computed in float32 by the functions and the reduced value returned in it.
* Where the ranks of targets and predictions differ by one and the longer has a last axis of 1
  (``(batch,)`` against ``(batch, 1)``, a ``(batch, H, W)`` mask against a ``(batch, H, W, 1)``
  output, or the reverse), the longer is squeezed (a rank-1 shorter one expanded), as Keras
  does for every loss, Dice and the categorical ones included; otherwise shapes must match
  exactly (integer labels and boxes follow their own layouts).
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
``CategoricalFocalCrossentropy``: ``categorical_focal_loss`` / ``..._with_logits``;
    Keras ``CategoricalFocalCrossentropy``
``SparseCategoricalFocalCrossentropy``: ``sparse_categorical_focal_loss`` /
    ``..._with_logits``; none
``Poly1Crossentropy``: ``poly1_cross_entropy_with_logits`` (logits only); none
``KLDivergence``: ``kl_divergence`` of the clipped ``log(y_pred)``; Keras ``KLDivergence``
``Poisson``: ``poisson_nll(log_input=False, eps=1e-7)``; Keras ``Poisson``
``GaussianNLL``: ``gaussian_nll``, ``y_pred`` = (means, variances); none
``Hinge``, ``SquaredHinge``, ``CategoricalHinge``: ``hinge``, ``squared_hinge``,
    ``categorical_hinge``; Keras's classes of the same names
``CosineSimilarity``: ``cosine_similarity_loss``; Keras ``CosineSimilarity``
``Quantile``: ``quantile_loss``; none
``MeanSquaredLogarithmicError``, ``MeanAbsolutePercentageError``: ``msle``, ``mape``;
    Keras's classes of the same names
``Dice``, ``Tversky``: ``dice_loss``, ``tversky_loss``; Keras ``Dice``, ``Tversky``
``GIoULoss``, ``DIoULoss``, ``CIoULoss``: ``giou_loss``, ``diou_loss``, ``ciou_loss`` (the
    mean over a sample's boxes); none (KerasCV's ``GIoULoss``/``CIoULoss`` take other box
    formats)

Positional options follow Keras's own order as far as they mean the same; the rest are
keywords only, so that a Keras call is read as Keras means it or refused, never read as
another option.

Differences from Keras's classes with the same name: ``BinaryFocalCrossentropy`` (class
balancing off unless ``apply_class_balancing=True``, as in Keras) applies no label smoothing
(refused), and for soft
targets (not 0/1) takes :func:`unilosses.binary_focal_loss`'s factor ``|t - p|**gamma`` with
``alpha`` inside the two log terms, where Keras's is ``(1 - p_t)**gamma`` times its
alpha-weighted BCE (equal for 0/1 targets); ``BinaryCrossentropy`` takes ``pos_weight`` as a
keyword; ``SparseCategoricalCrossentropy`` names Keras's ``ignore_class`` ``ignore_index`` (and
takes it under either name) and also takes ``label_smoothing``, as a keyword;
``Tversky``'s ``alpha`` weighs the false positives as Keras documents, where Keras's code
weighs the false negatives (``Tversky(alpha=a, beta=b)`` here is Keras's
``Tversky(alpha=b, beta=a)``).  The classes of the catalogue (from
``CategoricalFocalCrossentropy`` on) take their options as keywords only.

``AnchorFocalCrossentropy`` takes the RetinaNet seed's layout: ``y_true`` of shape
``(batch, anchors, classes + 1)`` whose last channel is the anchor state (-1 ignore,
0 background, 1 object), ``y_pred`` of shape ``(batch, anchors, classes)``; ``y_true`` may also
be a pair ``(targets, anchor_state)``.  Its per-sample value is the sample's focal sum divided
by the mean number of object anchors per sample, ``batch * S_b / max(1, #objects)``, so that the
default reduction (the mean over the batch) is exactly :func:`unilosses.anchor_focal_loss` and
``sample_weight`` weights each image.
"""

from __future__ import annotations

from collections.abc import Callable
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
        f"unilosses.keras needs Keras 3, found Keras {keras.__version__}: pip install 'keras>=3.8'"
    )

from ._core.validate import (
    _number,
    as_index,
    axes_option,
    check_flag,
    check_nonnegative,
    check_positive,
    check_unit_interval,
)
from .losses import boxes as _boxes
from .losses import classification as _cls
from .losses import distribution as _dist
from .losses import focal as _focal
from .losses import hinge as _hinge
from .losses import regression as _reg
from .losses import segmentation as _seg

__all__ = [
    "AnchorFocalCrossentropy",
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "CIoULoss",
    "CategoricalCrossentropy",
    "CategoricalFocalCrossentropy",
    "CategoricalHinge",
    "CosineSimilarity",
    "DIoULoss",
    "Dice",
    "GIoULoss",
    "GaussianNLL",
    "Hinge",
    "Huber",
    "KLDivergence",
    "LogCosh",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredError",
    "MeanSquaredLogarithmicError",
    "Poisson",
    "Poly1Crossentropy",
    "Quantile",
    "RootMeanSquaredError",
    "SmoothL1",
    "SparseCategoricalCrossentropy",
    "SparseCategoricalFocalCrossentropy",
    "SquaredHinge",
    "Tversky",
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
    value = as_index(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`axis` must be an int, got {type(value).__name__}.")
    return value


def _alpha(alpha: Any) -> Any:
    """A float in [0, 1], None, or per-class values (kept as a list: it goes in the config)."""
    if alpha is None or (isinstance(alpha, (int, float)) and not isinstance(alpha, bool)):
        return None if alpha is None else check_unit_interval("alpha", alpha)
    if getattr(alpha, "shape", None) == () and "bool" not in str(alpha.dtype):
        return check_unit_interval("alpha", alpha)  # a NumPy scalar: the number it holds
    return _float_list("alpha", alpha, check_unit_interval)


def _ignore_index(name: str, value: Any) -> int | None:
    value = as_index(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"`{name}` must be an int or None, got {value!r}.")
    return value


def _float_list(name: str, values: Any,
                check: Callable[[str, Any], float] = _number) -> list[float] | None:
    """``check``: the option's own check of a number, on each entry (as for the option given
    as one number, at construction: not at the first call)."""
    if values is None:
        return None
    # (a string is a sequence: "123" was [1.0, 2.0, 3.0]; and float() parsed "0.5" entries)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"`{name}` must be a sequence of numbers, got "
                        f"{type(values).__name__}.")
    return [check(name, v) for v in values]


def _tensor(value: Any, like: Tensor) -> Any:
    """A list option as a tensor of ``like``'s dtype (floats and None pass unchanged)."""
    return ops.convert_to_tensor(value, dtype=like.dtype) if isinstance(value, list) else value


class _Loss(keras.losses.Loss):
    """Base: Keras's constructor arguments, and the options in ``get_config``."""

    _options: tuple[str, ...] = ()

    def __init__(self, *, reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Tensor:
        # On TensorFlow, Keras's conversion to the loss's dtype hands a keras.Variable to
        # ``call`` unchanged (its dtype a string, which the functions cannot read); its value,
        # the backend's own variable or tensor, is what Keras's ops read (same gradient).
        def value(x: Any) -> Any:
            return x.value if isinstance(x, keras.Variable) else x

        return super().__call__(keras.tree.map_structure(value, y_true),
                                keras.tree.map_structure(value, y_pred), sample_weight)

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


def _pos_weight(value: Any) -> float | list[float] | None:
    """A number >= 0 or a list of them, checked at construction (as the loss checks a number;
    an array's values only at the first call, eagerly) and kept as Python floats, which
    ``get_config`` serialises (a NumPy scalar is not JSON)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return [check_nonnegative("pos_weight", v) for v in value]
    shape = getattr(value, "shape", ())
    if len(shape) == 1 and hasattr(value, "tolist"):  # (NumPy, torch, JAX: kept as a list)
        return [check_nonnegative("pos_weight", v) for v in value.tolist()]
    if shape != ():
        raise TypeError(f"`pos_weight` must be a number >= 0 or a list of them, got "
                        f"{type(value).__name__} of shape {tuple(shape)}; pass a list (e.g. "
                        f"`pos_weight.tolist()`), which get_config can store.")
    return check_nonnegative("pos_weight", value)


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
                 *, pos_weight: float | list[float] | None = None,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = check_flag("from_logits", from_logits)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)
        self.axis = _axis(axis)
        if pos_weight is not None and not self.from_logits:
            raise ValueError("`pos_weight` needs from_logits=True.")
        self.pos_weight = _pos_weight(pos_weight)

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
    :func:`unilosses.categorical_cross_entropy_with_logits`.  ``class_weights`` (one per class)
    multiply each class's term; Keras's reduction then averages the samples."""

    _options = ("from_logits", "label_smoothing", "axis", "class_weights")

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, axis: int = -1,
                 *, class_weights: list[float] | None = None,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = check_flag("from_logits", from_logits)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)
        self.axis = _axis(axis)
        self.class_weights = _float_list("class_weights", class_weights, check_nonnegative)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        fn = (_cls.categorical_cross_entropy_with_logits if self.from_logits
              else _cls.categorical_cross_entropy)
        return fn(y_pred, y_true, axis=self.axis, label_smoothing=self.label_smoothing,
                  class_weights=_tensor(self.class_weights, y_pred), reduction="none")


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
    trailing axis of 1.  Samples whose label equals ``ignore_index`` (Keras's ``ignore_class``,
    also taken under that name) get loss 0 and are left out of the count of
    ``"sum_over_batch_size"``, as in Keras.
    """

    _options = ("from_logits", "ignore_index", "label_smoothing", "axis", "class_weights")

    def __init__(self, from_logits: bool = False, ignore_index: int | None = None, *,
                 label_smoothing: float = 0.0, axis: int = -1,
                 class_weights: list[float] | None = None,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None, ignore_class: int | None = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = check_flag("from_logits", from_logits)
        if ignore_class is not None:  # Keras's name
            if ignore_index is not None:
                raise TypeError("Pass `ignore_index` or Keras's name for it, `ignore_class`, "
                                "not both.")
            ignore_index = _ignore_index("ignore_class", ignore_class)
        self.ignore_index = _ignore_index("ignore_index", ignore_index)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)
        self.axis = _axis(axis)
        self.class_weights = _float_list("class_weights", class_weights, check_nonnegative)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        labels = _labels(y_true, y_pred)
        fn = (_cls.sparse_categorical_cross_entropy_with_logits if self.from_logits
              else _cls.sparse_categorical_cross_entropy)
        loss = fn(y_pred, labels, axis=self.axis, ignore_index=self.ignore_index,
                  label_smoothing=self.label_smoothing,
                  class_weights=_tensor(self.class_weights, y_pred), reduction="none")
        return _mask_ignored(loss, labels, self.ignore_index)


def _labels(y_true: Tensor, y_pred: Tensor) -> Tensor:
    """Integer labels from Keras's ``y_true`` (float, maybe with a trailing axis of 1)."""
    if len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, -1)
    return ops.cast(y_true, "int32")


def _mask_ignored(loss: Tensor, labels: Tensor, ignore_index: int | None) -> Tensor:
    if ignore_index is not None:
        _set_keras_mask(loss, ops.not_equal(labels, ignore_index))
    return loss


@_register
class BinaryFocalCrossentropy(_Loss):
    """Binary focal loss averaged over ``axis``, per sample:
    :func:`unilosses.binary_focal_loss` or, with ``from_logits=True``,
    :func:`unilosses.binary_focal_loss_with_logits`.  Class balancing as Keras has it: off
    unless ``apply_class_balancing=True``, which weighs by ``alpha`` (0.25; a list is one value
    per class, the last axis), so that a call written for Keras gives Keras's number (the
    functions' ``alpha=0.25`` is on by default, as torchvision's).  Options are keywords only:
    Keras's class takes ``apply_class_balancing`` first."""

    _options = ("from_logits", "apply_class_balancing", "alpha", "gamma", "axis")

    def __init__(self, *, from_logits: bool = False, alpha: float | None = 0.25,
                 gamma: float = 2.0, axis: int = -1,
                 reduction: str | None = "sum_over_batch_size", name: str | None = None,
                 dtype: Any = None, apply_class_balancing: bool = False) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = check_flag("from_logits", from_logits)
        if not isinstance(apply_class_balancing, bool):
            raise TypeError("`apply_class_balancing` must be True or False, got "
                            f"{apply_class_balancing!r}.")
        if apply_class_balancing and alpha is None:
            raise ValueError("apply_class_balancing=True needs an `alpha` (0.25 by default).")
        self.apply_class_balancing = apply_class_balancing
        self.alpha = _alpha(alpha)
        self.gamma = check_nonnegative("gamma", gamma)
        self.axis = _axis(axis)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        fn = (_focal.binary_focal_loss_with_logits if self.from_logits
              else _focal.binary_focal_loss)
        alpha = _tensor(self.alpha, y_pred) if self.apply_class_balancing else None
        loss = fn(y_pred, y_true, alpha=alpha, gamma=self.gamma, reduction="none")
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
    functional loss; with ``normalize="image"``, ``S_b / max(1, #objects in the sample)``
    (torchvision's RetinaNet head).
    """

    _options = ("from_logits", "alpha", "gamma", "normalize")

    def __init__(self, from_logits: bool = False, alpha: Any = 0.25,
                 gamma: float = 2.0, *, normalize: str = "batch",
                 reduction: str | None = "sum_over_batch_size",
                 name: str | None = None, dtype: Any = None) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        self.from_logits = check_flag("from_logits", from_logits)
        self.alpha = _alpha(alpha)
        self.gamma = check_nonnegative("gamma", gamma)
        if normalize not in ("batch", "image"):
            raise ValueError(f"normalize={normalize!r} is not supported; use 'batch' or "
                             f"'image'.")
        self.normalize = normalize

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
        elementwise = fn(y_pred, targets, alpha=_tensor(self.alpha, y_pred), gamma=self.gamma,
                         reduction="none", where=keep)
        per_sample = ops.sum(elementwise, axis=tuple(range(1, len(elementwise.shape))))
        if self.normalize == "image":
            # torchvision's RetinaNet head: each image over its own positives
            own = ops.sum(ops.cast(positive, dtype), axis=tuple(range(1, len(state.shape))))
            return per_sample / ops.maximum(own, 1.0)
        objects = ops.sum(ops.cast(positive, dtype))
        batch = ops.cast(ops.shape(y_pred)[0], dtype)
        return per_sample * (batch / ops.maximum(objects, 1.0))


# -- the loss catalogue: one body, the options declared per class ---------------------------------
def _quantiles(name: str, value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return check_unit_interval(name, value)
    if getattr(value, "shape", None) == () and "bool" not in str(value.dtype):
        return check_unit_interval(name, value)  # a NumPy scalar: the number it holds
    return _float_list(name, value, check_unit_interval)


#: option name -> check(name, value) returning the value kept (and put in the config)
_CHECKS: dict[str, Any] = {
    # (check_flag, not bool(): bool("no") is True)
    "from_logits": check_flag, "log_input": check_flag, "full": check_flag,
    "axis": lambda n, v: _axis(v), "alpha": lambda n, v: _alpha(v),
    "gamma": check_nonnegative, "label_smoothing": check_unit_interval,
    "ignore_index": _ignore_index, "epsilon": lambda n, v: _cls.check_finite(n, v),
    "eps": check_positive, "quantiles": _quantiles,
}
#: options passed to the loss as tensors of the predictions' dtype when they are lists
_TENSOR_OPTIONS = ("alpha", "quantiles")


class _Catalogue(_Loss):
    """A loss whose per-sample value is its function's ``reduction="none"`` output.

    Subclasses declare ``_function`` (and ``_logits_function``, chosen by ``from_logits``),
    their keyword options with defaults in ``_defaults`` (checked by ``_CHECKS``, or by
    ``_checks`` for a class's own meaning), and ``_last_axis_mean`` for elementwise losses that
    Keras averages over the last axis.
    """

    _function: Any = None
    _logits_function: Any = None
    _defaults: dict[str, Any] = {}
    _checks: dict[str, Any] = {}
    _last_axis_mean = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._options = tuple(cls._defaults)

    def __init__(self, *, reduction: str | None = "sum_over_batch_size",
                 name: str | None = None, dtype: Any = None, **options: Any) -> None:
        super().__init__(reduction=reduction, name=name, dtype=dtype)
        unknown = sorted(set(options) - set(self._defaults))
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected option(s) "
                            f"{', '.join(unknown)}; it takes "
                            f"{', '.join(self._defaults) or 'none'}.")
        for key, default in self._defaults.items():
            check = self._checks[key] if key in self._checks else _CHECKS[key]
            setattr(self, key, check(key, options.get(key, default)))
        if "smooth" in self._defaults:  # Dice, Tversky: the two checked together, as the loss does
            _seg._smoothing(self.smooth, self.eps)

    def _loss(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        """The function on (predictions, targets) with the options, unreduced."""
        fn = self._logits_function if getattr(self, "from_logits", False) else self._function
        options = {k: _tensor(getattr(self, k), y_pred) if k in _TENSOR_OPTIONS
                   else getattr(self, k) for k in self._defaults if k != "from_logits"}
        return fn(y_pred, y_true, reduction="none", **options)

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        # Keras's rank rule for every loss it wraps, those with a class or overlap axis too
        y_true, y_pred = _same_rank(y_true, y_pred)
        loss = self._loss(y_true, y_pred)
        return ops.mean(loss, axis=-1) if self._last_axis_mean else loss


@_register
class CategoricalFocalCrossentropy(_Catalogue):
    """Softmax focal loss over ``axis``, per sample: :func:`unilosses.categorical_focal_loss`
    or, with ``from_logits=True``, :func:`unilosses.categorical_focal_loss_with_logits`.
    ``alpha``: a float, None or one value per class."""

    _function = staticmethod(_focal.categorical_focal_loss)
    _logits_function = staticmethod(_focal.categorical_focal_loss_with_logits)
    _defaults = {"from_logits": False, "alpha": 0.25, "gamma": 2.0, "label_smoothing": 0.0,
                 "axis": -1}


@_register
class SparseCategoricalFocalCrossentropy(_Catalogue):
    """Softmax focal loss with integer labels, per sample:
    :func:`unilosses.sparse_categorical_focal_loss` (or ``..._with_logits``); labels and
    ``ignore_index`` as in :class:`SparseCategoricalCrossentropy`."""

    _function = staticmethod(_focal.sparse_categorical_focal_loss)
    _logits_function = staticmethod(_focal.sparse_categorical_focal_loss_with_logits)
    _defaults = {"from_logits": False, "alpha": 0.25, "gamma": 2.0, "label_smoothing": 0.0,
                 "axis": -1, "ignore_index": None}

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        labels = _labels(y_true, y_pred)
        return _mask_ignored(self._loss(labels, y_pred), labels, self.ignore_index)


@_register
class Poly1Crossentropy(_Catalogue):
    """Poly-1 cross-entropy on logits over ``axis``, per sample
    (:func:`unilosses.poly1_cross_entropy_with_logits`)."""

    _function = staticmethod(_cls.poly1_cross_entropy_with_logits)
    _defaults = {"epsilon": 2.0, "axis": -1}


@_register
class KLDivergence(_Catalogue):
    """KL divergence over ``axis``, per sample, on probabilities as Keras takes them: both
    clipped to ``[1e-7, 1]``, then :func:`unilosses.kl_divergence` of ``log(y_pred)``."""

    _function = staticmethod(_dist.kl_divergence)
    _defaults = {"axis": -1}

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        y_true, y_pred = _same_rank(y_true, y_pred)
        y_true = ops.clip(ops.cast(y_true, y_pred.dtype), 1e-7, 1.0)
        return self._loss(y_true, ops.log(ops.clip(y_pred, 1e-7, 1.0)))


@_register
class Poisson(_Catalogue):
    """Poisson negative log-likelihood averaged over the last axis, per sample
    (:func:`unilosses.poisson_nll`); Keras's defaults: rates (``log_input=False``),
    ``eps=1e-7``."""

    _function = staticmethod(_dist.poisson_nll)
    _defaults = {"log_input": False, "full": False, "eps": 1e-7}
    _last_axis_mean = True


@_register
class GaussianNLL(_Catalogue):
    """Gaussian negative log-likelihood averaged over the last axis, per sample
    (:func:`unilosses.gaussian_nll`).  ``y_pred`` is a pair ``(mean, variance)``, or one
    tensor whose last axis holds the means then the variances (twice the targets' size)."""

    _function = staticmethod(_dist.gaussian_nll)
    _defaults = {"full": False, "eps": 1e-6}

    def call(self, y_true: Tensor, y_pred: Any) -> Tensor:
        if isinstance(y_pred, (tuple, list)):
            mean, variance = y_pred
        else:
            mean, variance = ops.split(y_pred, 2, axis=-1)
        y_true, mean = _same_rank(y_true, mean)
        loss = _dist.gaussian_nll(mean, y_true, variance, full=self.full, eps=self.eps,
                                  reduction="none")
        return ops.mean(loss, axis=-1)


@_register
class Hinge(_Catalogue):
    """Hinge loss averaged over the last axis, per sample (:func:`unilosses.hinge`)."""

    _function = staticmethod(_hinge.hinge)
    _last_axis_mean = True


@_register
class SquaredHinge(_Catalogue):
    """Squared hinge loss averaged over the last axis, per sample
    (:func:`unilosses.squared_hinge`)."""

    _function = staticmethod(_hinge.squared_hinge)
    _last_axis_mean = True


@_register
class CategoricalHinge(_Catalogue):
    """Categorical hinge loss over ``axis``, per sample (:func:`unilosses.categorical_hinge`)."""

    _function = staticmethod(_hinge.categorical_hinge)
    _defaults = {"axis": -1}


@_register
class CosineSimilarity(_Catalogue):
    """Negative cosine similarity over ``axis``, per sample
    (:func:`unilosses.cosine_similarity_loss`, Keras's sign and norm floor)."""

    _function = staticmethod(_reg.cosine_similarity_loss)
    _defaults = {"axis": -1, "eps": 1e-7}


@_register
class Quantile(_Catalogue):
    """Quantile (pinball) loss averaged over the last axis, per sample
    (:func:`unilosses.quantile_loss`).  With a list of ``quantiles`` the predictions' last axis
    holds one prediction per quantile and ``y_true`` may lack it (or have it of size 1)."""

    _function = staticmethod(_reg.quantile_loss)
    _defaults = {"quantiles": 0.5}

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        if not isinstance(self.quantiles, list):
            y_true, y_pred = _same_rank(y_true, y_pred)
        elif len(y_true.shape) == len(y_pred.shape) and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, -1)
        return ops.mean(self._loss(y_true, y_pred), axis=-1)


@_register
class MeanSquaredLogarithmicError(_Catalogue):
    """Mean squared logarithmic error over the last axis, per sample (:func:`unilosses.msle`)."""

    _function = staticmethod(_reg.msle)
    _last_axis_mean = True


@_register
class MeanAbsolutePercentageError(_Catalogue):
    """Mean absolute percentage error over the last axis, per sample
    (:func:`unilosses.mape`)."""

    _function = staticmethod(_reg.mape)
    _last_axis_mean = True


@_register
class Dice(_Catalogue):
    """Soft Dice loss (:func:`unilosses.dice_loss`): one coefficient over ``axis`` (None: all
    axes, Keras's default; ``(1, 2, 3)``: one per sample of ``(batch, H, W, C)``)."""

    _function = staticmethod(_seg.dice_loss)
    _defaults = {"axis": None, "smooth": 0.0, "eps": 1e-7}
    _checks = {"axis": axes_option, "smooth": check_nonnegative, "eps": check_nonnegative}


@_register
class Tversky(_Catalogue):
    """Tversky loss (:func:`unilosses.tversky_loss`): ``alpha`` weighs the false positives and
    ``beta`` the false negatives, as Keras documents (Keras's code swaps them)."""

    _function = staticmethod(_seg.tversky_loss)
    _defaults = {"alpha": 0.5, "beta": 0.5, "axis": None, "smooth": 0.0, "eps": 1e-7}
    _checks = {"alpha": check_nonnegative, "beta": check_nonnegative, **Dice._checks}


@_register
class GIoULoss(_Catalogue):
    """Generalized IoU loss of ``(x1, y1, x2, y2)`` boxes (:func:`unilosses.giou_loss`), per
    sample: the mean over its boxes (``(batch, 4)`` or ``(batch, boxes, 4)``)."""

    _function = staticmethod(_boxes.giou_loss)
    _defaults = {"eps": 1e-7}

    def call(self, y_true: Tensor, y_pred: Tensor) -> Tensor:
        loss = self._loss(y_true, y_pred)
        rank = len(loss.shape)
        return ops.mean(loss, axis=tuple(range(1, rank))) if rank > 1 else loss


@_register
class DIoULoss(GIoULoss):
    """Distance IoU loss of boxes (:func:`unilosses.diou_loss`), per sample as
    :class:`GIoULoss`."""

    _function = staticmethod(_boxes.diou_loss)


@_register
class CIoULoss(GIoULoss):
    """Complete IoU loss of boxes (:func:`unilosses.ciou_loss`), per sample as
    :class:`GIoULoss`."""

    _function = staticmethod(_boxes.ciou_loss)
