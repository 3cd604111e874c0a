"""PyTorch front end: one :class:`torch.nn.Module` per unilosses loss.

Each module holds its loss's options (given to the constructor, validated there) and
calls the functional loss in ``forward``, so value and gradient are exactly the functional
loss's.  ``forward`` takes torch's argument order, ``forward(input, target)``; the optional
per-call ``weights`` and ``where`` of the functional losses are keyword arguments of
``forward``.  Tensor options (``pos_weight``, ``weight``, ``class_weights``) are buffers: they
follow ``.to(device)`` / ``.double()`` and are saved in ``state_dict`` under torch's names.
Options that may be a float or per-class values (``alpha``, ``quantiles``) are attributes when
floats and buffers when tensors or sequences (a NumPy array among them, as for
``class_weights``).

Options given positionally follow torch's own order where they mean the same
(``HuberLoss("sum", 0.5)``, ``BCELoss(weight)``, ``BCEWithLogitsLoss(weight)``,
``CrossEntropyLoss(weight)``, ``PoissonNLLLoss(log_input, full)``); the rest are keywords only,
because torch's other constructors take its deprecated ``size_average`` and ``reduce`` first:
a call written for torch is read as torch means it, or refused.

Naming: the function's name in CamelCase with ``Loss`` appended, spelt the way ``torch.nn``
spells it where torch has the same loss (``MSE``, ``L1``, ``BCE``, ``KLDiv``, ``PoissonNLL``,
``GaussianNLL``), a trailing ``_loss`` not repeated, the IoU losses as torchvision's papers
spell them (``GIoULoss``), and ``_with_logits`` as ``WithLogits`` before ``Loss`` (as in
``BCEWithLogitsLoss``).  Two aliases carry torch's own
names: ``L1Loss`` is ``MAELoss``, and ``CrossEntropyLoss`` is the drop-in for
``torch.nn.CrossEntropyLoss`` (class axis 1, ``ignore_index=-100``).

Each class, the function it calls, its ``torch`` equivalent and its options (defaults):

``MSELoss`` -- :func:`~unilosses.mse`
    ``torch.nn.MSELoss`` (drop-in); ``reduction="mean"``
``RMSELoss`` -- :func:`~unilosses.rmse`
    none; ``axis=None`` (no reduction: the mean is inside the root)
``MAELoss``, alias ``L1Loss`` -- :func:`~unilosses.mae`
    ``torch.nn.L1Loss`` (drop-in); ``reduction="mean"``
``HuberLoss`` -- :func:`~unilosses.huber`
    ``torch.nn.HuberLoss`` (drop-in); ``reduction="mean"``, ``delta=1.0``
``SmoothL1Loss`` -- :func:`~unilosses.smooth_l1`
    ``torch.nn.SmoothL1Loss`` (drop-in for ``beta > 0``); ``reduction="mean"``, ``beta=1.0``
``LogCoshLoss`` -- :func:`~unilosses.log_cosh`
    none; ``reduction="mean"``
``MSLELoss`` -- :func:`~unilosses.msle`
    none (Keras's ``MeanSquaredLogarithmicError``); ``reduction="mean"``
``MAPELoss`` -- :func:`~unilosses.mape`
    none (Keras's ``MeanAbsolutePercentageError``); ``reduction="mean"``
``QuantileLoss`` -- :func:`~unilosses.quantile_loss`
    none; ``quantiles=0.5`` (a float, or a tensor/sequence: a buffer), ``reduction="mean"``
``CosineSimilarityLoss`` -- :func:`~unilosses.cosine_similarity_loss`
    ``-torch.nn.CosineSimilarity``; ``axis=-1``, ``eps=1e-7``, ``reduction="mean"``
``BCELoss`` -- :func:`~unilosses.binary_cross_entropy`
    ``torch.nn.BCELoss`` (probabilities clipped to ``[1e-7, 1 - 1e-7]`` where torch clamps
    the log at -100); ``weight=None``, ``reduction="mean"``, ``label_smoothing=0.0``
``BCEWithLogitsLoss`` -- :func:`~unilosses.binary_cross_entropy_with_logits`
    ``torch.nn.BCEWithLogitsLoss`` (drop-in); ``weight=None``, ``reduction="mean"``,
    ``pos_weight=None``, ``label_smoothing=0.0`` (towards 0.5, Keras's; not in torch)
``CategoricalCrossEntropyLoss`` -- :func:`~unilosses.categorical_cross_entropy`
    none (Keras's ``CategoricalCrossentropy``); ``axis=-1``, ``label_smoothing=0.0``,
    ``class_weights=None`` (a buffer), ``reduction="mean"``
``CategoricalCrossEntropyWithLogitsLoss`` --
:func:`~unilosses.categorical_cross_entropy_with_logits`
    ``torch.nn.CrossEntropyLoss`` with probability targets, class axis ``axis=-1`` (torch: 1);
    ``label_smoothing=0.0``, ``class_weights=None``, ``reduction="mean"``
``SparseCategoricalCrossEntropyLoss`` -- :func:`~unilosses.sparse_categorical_cross_entropy`
    none (Keras's ``SparseCategoricalCrossentropy``); ``axis=-1``, ``ignore_index=None``,
    ``label_smoothing=0.0``, ``class_weights=None``, ``reduction="mean"``
``SparseCategoricalCrossEntropyWithLogitsLoss`` --
:func:`~unilosses.sparse_categorical_cross_entropy_with_logits`
    ``torch.nn.CrossEntropyLoss`` with class indices, class axis ``axis=-1`` (torch: 1);
    ``ignore_index=None``, ``label_smoothing=0.0``, ``class_weights=None``,
    ``reduction="mean"`` (torch's weighted mean: ``"weighted_mean"``)
``CrossEntropyLoss`` -- the two ``*_with_logits`` functions above, on class axis 1
    ``torch.nn.CrossEntropyLoss`` (drop-in: integer targets are class indices, floating ones
    probabilities); ``weight=None`` (per class, a buffer, with torch's weighted mean),
    ``ignore_index=-100``, ``reduction="mean"``, ``label_smoothing=0.0``
``Poly1CrossEntropyWithLogitsLoss`` -- :func:`~unilosses.poly1_cross_entropy_with_logits`
    none (``optax.poly_loss_cross_entropy``); ``epsilon=2.0``, ``axis=-1``,
    ``reduction="mean"``
``BinaryFocalLoss`` -- :func:`~unilosses.binary_focal_loss`
    none (Keras's ``BinaryFocalCrossentropy``); ``alpha=0.25`` (None: off; per class: a
    tensor or sequence, a buffer), ``gamma=2.0``, ``reduction="mean"``
``BinaryFocalWithLogitsLoss`` -- :func:`~unilosses.binary_focal_loss_with_logits`
    ``torchvision.ops.sigmoid_focal_loss`` (whose default reduction is "none");
    ``alpha=0.25``, ``gamma=2.0``, ``reduction="mean"``
``CategoricalFocalLoss``, ``CategoricalFocalWithLogitsLoss`` --
:func:`~unilosses.categorical_focal_loss`, :func:`~unilosses.categorical_focal_loss_with_logits`
    none (Keras's ``CategoricalFocalCrossentropy``); ``alpha=0.25`` (as above), ``gamma=2.0``,
    ``axis=-1``, ``label_smoothing=0.0``, ``reduction="mean"``
``SparseCategoricalFocalLoss``, ``SparseCategoricalFocalWithLogitsLoss`` --
:func:`~unilosses.sparse_categorical_focal_loss`, ``..._with_logits``
    none; as the categorical ones, plus ``ignore_index=None``
``AnchorFocalLoss`` -- :func:`~unilosses.anchor_focal_loss`
    none; ``alpha=0.25``, ``gamma=2.0``, ``normalize="batch"`` (or ``"image"``);
    ``forward(input, target, anchor_state, *, normalizer=None)``
``AnchorFocalWithLogitsLoss`` -- :func:`~unilosses.anchor_focal_loss_with_logits`
    torchvision's RetinaNet classification head loss (``normalize="image"``); as
    ``AnchorFocalLoss``
``HingeLoss``, ``SquaredHingeLoss`` -- :func:`~unilosses.hinge`, :func:`~unilosses.squared_hinge`
    none (Keras's ``Hinge``, ``SquaredHinge``); ``reduction="mean"``
``CategoricalHingeLoss`` -- :func:`~unilosses.categorical_hinge`
    none (Keras's ``CategoricalHinge``); ``axis=-1``, ``reduction="mean"``
``KLDivLoss`` -- :func:`~unilosses.kl_divergence`
    ``torch.nn.KLDivLoss`` (drop-in); ``reduction="mean"`` (or ``"batchmean"``),
    ``log_target=False``, ``axis=None`` (pointwise, as torch)
``PoissonNLLLoss`` -- :func:`~unilosses.poisson_nll`
    ``torch.nn.PoissonNLLLoss`` (drop-in); ``log_input=True``, ``full=False``, ``eps=1e-8``,
    ``reduction="mean"``
``GaussianNLLLoss`` -- :func:`~unilosses.gaussian_nll`
    ``torch.nn.GaussianNLLLoss`` (drop-in); ``full=False``, ``eps=1e-6``, ``reduction="mean"``;
    ``forward(input, target, var)``
``DiceLoss``, ``TverskyLoss`` -- :func:`~unilosses.dice_loss`, :func:`~unilosses.tversky_loss`
    none; ``axis=None``, ``smooth=0.0``, ``eps=1e-7`` (Tversky: ``alpha=0.5``, ``beta=0.5``),
    ``reduction="mean"``
``GIoULoss``, ``DIoULoss``, ``CIoULoss`` -- :func:`~unilosses.giou_loss`,
:func:`~unilosses.diou_loss`, :func:`~unilosses.ciou_loss`
    torchvision's ``generalized_box_iou_loss``, ``distance_box_iou_loss``,
    ``complete_box_iou_loss`` (default reduction "none" there); ``eps=1e-7``,
    ``reduction="mean"``

"Drop-in" means: same constructor defaults, same ``forward(input, target)``, same value and
gradient (tested against ``torch.nn`` on the same inputs).  Not carried over: torch's
deprecated ``size_average``/``reduce`` arguments, ``SmoothL1Loss(beta=0)`` (use ``L1Loss``)
and TorchScript (``torch.jit.script``); ``torch.compile`` works (no graph breaks).
torchvision's ``sigmoid_focal_loss`` defaults to ``reduction="none"``; ``BinaryFocalWithLogitsLoss``
to ``"mean"`` like every other module here.

Half precision: float16/bfloat16 inputs (e.g. under ``torch.autocast``) are computed and
returned in float32, and the gradient reaches the input in the input's dtype.

Importing this module imports torch; ``import unilosses`` does not import it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import torch
    from torch import Tensor, nn
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'unilosses.torch needs PyTorch, which is not installed: pip install "unilosses[torch]"'
    ) from exc

from ._core.validate import (
    as_index,
    axes_option,
    check_flag,
    check_nonnegative,
    check_positive,
    check_reduction,
    check_unit_interval,
)
from .backends import adapter_named
from .losses import boxes as _boxes
from .losses import classification as _cls
from .losses import distribution as _dist
from .losses import focal as _focal
from .losses import hinge as _hinge
from .losses import regression as _reg
from .losses import segmentation as _seg

__all__ = [
    "AnchorFocalLoss",
    "AnchorFocalWithLogitsLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BinaryFocalLoss",
    "BinaryFocalWithLogitsLoss",
    "CIoULoss",
    "CategoricalCrossEntropyLoss",
    "CategoricalCrossEntropyWithLogitsLoss",
    "CategoricalFocalLoss",
    "CategoricalFocalWithLogitsLoss",
    "CategoricalHingeLoss",
    "CosineSimilarityLoss",
    "CrossEntropyLoss",
    "DIoULoss",
    "DiceLoss",
    "GIoULoss",
    "GaussianNLLLoss",
    "HingeLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "LogCoshLoss",
    "MAELoss",
    "MAPELoss",
    "MSELoss",
    "MSLELoss",
    "PoissonNLLLoss",
    "Poly1CrossEntropyWithLogitsLoss",
    "QuantileLoss",
    "RMSELoss",
    "SmoothL1Loss",
    "SparseCategoricalCrossEntropyLoss",
    "SparseCategoricalCrossEntropyWithLogitsLoss",
    "SparseCategoricalFocalLoss",
    "SparseCategoricalFocalWithLogitsLoss",
    "SquaredHingeLoss",
    "TverskyLoss",
]

# Load the torch adapter now: its first use imports a module, which torch.compile cannot trace
# (a graph break); afterwards dispatch is a dictionary lookup that compiles away.
adapter_named("torch")


def _tensor_option(name: str, value: Tensor | float | None,
                   check: Callable[[str, Any], float] | None = None) -> Tensor | None:
    """``check``: the loss's own check of a number (NumPy scalars taken), at construction
    rather than at the first call."""
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value
    if check is not None:
        if isinstance(value, (list, tuple)) or _is_array(value):
            # (check would refuse it as "must be a Python number", with advice for jax.jit)
            raise TypeError(f"`{name}` must be a tensor, a number >= 0 or None, got "
                            f"{type(value).__name__}.")
        return torch.tensor(check(name, value))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a tensor, a float or None, got {type(value).__name__}.")
    return torch.tensor(float(value))


def _is_array(value: Any) -> bool:
    """A NumPy array of one or more dimensions (a 0-d one is the number it holds)."""
    return isinstance(value, np.ndarray) and value.ndim > 0


def _sequence_tensor(name: str, values: Any, check: Callable[[str, Any], float]) -> Tensor:
    """``check``: the option's own check of a number, on each entry, as for the option given
    as one number (float() parsed "0.5", took True as 1.0, and named no option)."""
    shape = values.shape if isinstance(values, np.ndarray) else (len(values),)
    entries = values.ravel().tolist() if isinstance(values, np.ndarray) else values
    # float64, so that the values are kept as given: the loss casts them to the inputs' dtype
    return torch.tensor([check(name, v) for v in entries], dtype=torch.float64).reshape(shape)


def _float_or_buffer(module: nn.Module, name: str, value: Any, *,
                     optional: bool = False) -> None:
    """A float option in [0, 1] (an attribute), or per-entry values (a tensor or a sequence:
    a buffer, which follows ``.to()`` and ``state_dict``)."""
    if isinstance(value, (list, tuple)) or _is_array(value):
        value = _sequence_tensor(name, value, check_unit_interval)
    if isinstance(value, Tensor):
        module.register_buffer(name, value)
    elif value is None and optional:
        setattr(module, name, None)
    else:
        setattr(module, name, check_unit_interval(name, value))


def _class_weights(name: str, value: Any) -> Tensor | None:
    """Per-class weights: a tensor, or a sequence made into one."""
    if value is None or isinstance(value, Tensor):
        return value
    if isinstance(value, (list, tuple)) or _is_array(value):
        return _sequence_tensor(name, value, check_nonnegative)
    raise TypeError(f"`{name}` must be a tensor, a sequence of floats or None, got "
                    f"{type(value).__name__}.")


def _ignore_index(value: int | None) -> int | None:
    value = as_index(value)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"`ignore_index` must be an int or None, got {value!r}.")
    return value


def _axis(value: int) -> int:
    value = as_index(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`axis` must be an int, got {type(value).__name__}.")
    return value




class _Loss(nn.Module):
    """Base: holds ``reduction`` and shows the options in ``repr``."""

    _options: tuple[str, ...] = ()

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def extra_repr(self) -> str:
        names = ("reduction",) + self._options if hasattr(self, "reduction") else self._options
        return ", ".join(f"{n}={getattr(self, n)!r}" for n in names)


class _Functional(_Loss):
    """A module whose ``forward(input, target)`` is ``_function`` with the attributes named in
    ``_options`` (buffers included) as keyword options."""

    _function: Any

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        options = {name: getattr(self, name) for name in self._options}
        return self._function(input, target, reduction=self.reduction, weights=weights,
                              where=where, **options)


class MSELoss(_Loss):
    """Mean squared error, :func:`unilosses.mse`; drop-in for ``torch.nn.MSELoss``.

    Example: ``MSELoss()(input, target, weights=w, where=mask)``.
    """

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _reg.mse(input, target, reduction=self.reduction, weights=weights, where=where)


class MAELoss(_Loss):
    """Mean absolute error, :func:`unilosses.mae`; drop-in for ``torch.nn.L1Loss``."""

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _reg.mae(input, target, reduction=self.reduction, weights=weights, where=where)


#: torch's name for :class:`MAELoss` (the same class)
L1Loss = MAELoss


class RMSELoss(_Loss):
    """Root mean squared error over ``axis`` (all axes by default), :func:`unilosses.rmse`.

    It has no ``reduction``: the mean is inside the square root.
    """

    _options: tuple[str, ...] = ("axis",)

    def __init__(self, *, axis: int | tuple[int, ...] | None = None) -> None:
        nn.Module.__init__(self)
        self.axis = axes_option("axis", axis)

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _reg.rmse(input, target, axis=self.axis, weights=weights, where=where)


class HuberLoss(_Loss):
    """Huber loss, :func:`unilosses.huber`; drop-in for ``torch.nn.HuberLoss``."""

    _options: tuple[str, ...] = ("delta",)

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction=reduction)
        self.delta = check_positive("delta", delta)

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _reg.huber(input, target, delta=self.delta, reduction=self.reduction,
                          weights=weights, where=where)


class SmoothL1Loss(_Loss):
    """Smooth L1 loss, :func:`unilosses.smooth_l1`; drop-in for ``torch.nn.SmoothL1Loss``
    (``beta > 0``)."""

    _options: tuple[str, ...] = ("beta",)

    def __init__(self, *, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction=reduction)
        self.beta = check_positive("beta", beta)

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _reg.smooth_l1(input, target, beta=self.beta, reduction=self.reduction,
                              weights=weights, where=where)


class LogCoshLoss(_Loss):
    """Log-cosh loss, :func:`unilosses.log_cosh`."""

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _reg.log_cosh(input, target, reduction=self.reduction, weights=weights,
                             where=where)


class _WeightedLoss(_Loss):
    """A loss with torch's constructor ``weight`` (a buffer), multiplied into ``weights``, and
    Keras's binary ``label_smoothing`` (towards 0.5; torch's binary losses have none)."""

    _options: tuple[str, ...] = ("label_smoothing",)
    weight: Tensor | None

    def __init__(self, weight: Tensor | None = None, *, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__(reduction=reduction)
        self.register_buffer("weight", _tensor_option("weight", weight))
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)

    def _weights(self, weights: Tensor | None) -> Tensor | None:
        if self.weight is None:
            return weights
        if weights is None:
            return self.weight
        return self.weight * weights


class BCELoss(_WeightedLoss):
    """Binary cross-entropy on probabilities, :func:`unilosses.binary_cross_entropy`.

    Like ``torch.nn.BCELoss`` (same defaults, ``weight`` buffer), except that probabilities
    are clipped to ``[1e-7, 1 - 1e-7]`` (Keras's rule) where torch clamps the log at -100.
    """

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _cls.binary_cross_entropy(input, target, label_smoothing=self.label_smoothing,
                                         reduction=self.reduction,
                                         weights=self._weights(weights), where=where)


class BCEWithLogitsLoss(_WeightedLoss):
    """Binary cross-entropy on logits, :func:`unilosses.binary_cross_entropy_with_logits`;
    drop-in for ``torch.nn.BCEWithLogitsLoss``.

    ``weight`` (rescales each element) and ``pos_weight`` (weight of the positive term,
    broadcast against the last axis) are buffers, stored in ``state_dict`` under torch's names,
    so a ``torch.nn.BCEWithLogitsLoss`` state dict loads into this module.
    """

    pos_weight: Tensor | None

    def __init__(self, weight: Tensor | None = None, *, reduction: str = "mean",
                 pos_weight: Tensor | float | None = None, label_smoothing: float = 0.0) -> None:
        super().__init__(weight=weight, reduction=reduction, label_smoothing=label_smoothing)
        self.register_buffer("pos_weight", _tensor_option("pos_weight", pos_weight,
                                                            check_nonnegative))

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _cls.binary_cross_entropy_with_logits(
            input, target, pos_weight=self.pos_weight, label_smoothing=self.label_smoothing,
            reduction=self.reduction, weights=self._weights(weights), where=where)


class _CategoricalLoss(_Functional):
    """Cross-entropy modules: ``class_weights`` (a buffer) with the function's meaning."""

    _options: tuple[str, ...] = ("axis", "label_smoothing", "class_weights")
    class_weights: Tensor | None

    def __init__(self, *, axis: int = -1, label_smoothing: float = 0.0,
                 class_weights: Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.axis = _axis(axis)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)
        self.register_buffer("class_weights", _class_weights("class_weights", class_weights))


class CategoricalCrossEntropyLoss(_CategoricalLoss):
    """Categorical cross-entropy on probabilities with one-hot or soft targets along ``axis``,
    :func:`unilosses.categorical_cross_entropy`."""

    _function = staticmethod(_cls.categorical_cross_entropy)


class CategoricalCrossEntropyWithLogitsLoss(_CategoricalLoss):
    """Softmax cross-entropy on logits with one-hot or soft targets along ``axis``,
    :func:`unilosses.categorical_cross_entropy_with_logits` (``torch.nn.CrossEntropyLoss``
    with probability targets, whose class axis is 1: pass ``axis=1`` or use
    :class:`CrossEntropyLoss`)."""

    _function = staticmethod(_cls.categorical_cross_entropy_with_logits)


class _SparseLoss(_CategoricalLoss):
    _options: tuple[str, ...] = ("axis", "ignore_index", "label_smoothing", "class_weights")

    def __init__(self, *, axis: int = -1, ignore_index: int | None = None,
                 label_smoothing: float = 0.0, class_weights: Tensor | None = None,
                 reduction: str = "mean") -> None:
        super().__init__(axis=axis, label_smoothing=label_smoothing,
                         class_weights=class_weights, reduction=reduction)
        self.ignore_index = _ignore_index(ignore_index)


class SparseCategoricalCrossEntropyLoss(_SparseLoss):
    """Categorical cross-entropy on probabilities with integer class labels,
    :func:`unilosses.sparse_categorical_cross_entropy`."""

    _function = staticmethod(_cls.sparse_categorical_cross_entropy)


class SparseCategoricalCrossEntropyWithLogitsLoss(_SparseLoss):
    """Softmax cross-entropy on logits with integer class labels,
    :func:`unilosses.sparse_categorical_cross_entropy_with_logits`."""

    _function = staticmethod(_cls.sparse_categorical_cross_entropy_with_logits)


class CrossEntropyLoss(_Loss):
    """Drop-in for ``torch.nn.CrossEntropyLoss``: softmax cross-entropy on logits.

    The class axis is 1 (0 for an input of shape ``(C,)``), as in torch.  An integer
    ``target`` holds class indices (:func:`unilosses.sparse_categorical_cross_entropy_with_logits`,
    labels equal to ``ignore_index`` are left out of the sum and of the mean's count); a
    floating ``target`` holds class probabilities
    (:func:`unilosses.categorical_cross_entropy_with_logits`).  ``weight`` (per class, a
    buffer) is the functions' ``class_weights``; with class indices, ``"mean"`` is then torch's
    weighted mean (``reduction="weighted_mean"``: divided by the summed weight of the
    non-ignored labels), with probabilities the mean over the samples, as in torch.
    """

    _options: tuple[str, ...] = ("ignore_index", "label_smoothing")
    weight: Tensor | None

    def __init__(self, weight: Tensor | None = None, *, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        super().__init__(reduction=reduction)
        # torch's module has this buffer (None without class weights)
        self.register_buffer("weight", _class_weights("weight", weight))
        self.ignore_index = _ignore_index(ignore_index)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        axis = 1 if input.dim() > 1 else 0
        if target.is_floating_point():
            return _cls.categorical_cross_entropy_with_logits(
                input, target, axis=axis, label_smoothing=self.label_smoothing,
                class_weights=self.weight, reduction=self.reduction, weights=weights,
                where=where)
        weighted = self.weight is not None and self.reduction == "mean"
        return _cls.sparse_categorical_cross_entropy_with_logits(
            input, target, axis=axis, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, class_weights=self.weight,
            reduction="weighted_mean" if weighted else self.reduction, weights=weights,
            where=where)


class _FocalLoss(_Functional):
    """``alpha``: a float, None (off) or per-class values (a buffer)."""

    _options: tuple[str, ...] = ("alpha", "gamma")

    def __init__(self, *, alpha: Any = 0.25, gamma: float = 2.0,
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        _float_or_buffer(self, "alpha", alpha, optional=True)
        self.gamma = check_nonnegative("gamma", gamma)


class BinaryFocalLoss(_FocalLoss):
    """Binary focal loss on probabilities, :func:`unilosses.binary_focal_loss`.

    ``alpha=None`` turns class balancing off; a tensor or a sequence is one value per class
    (the last axis), held as a buffer.
    """

    _function = staticmethod(_focal.binary_focal_loss)


class BinaryFocalWithLogitsLoss(_FocalLoss):
    """Binary (sigmoid) focal loss on logits, :func:`unilosses.binary_focal_loss_with_logits`
    (torchvision's ``sigmoid_focal_loss`` with ``reduction="mean"``)."""

    _function = staticmethod(_focal.binary_focal_loss_with_logits)


class _CategoricalFocalLoss(_FocalLoss):
    _options: tuple[str, ...] = ("alpha", "gamma", "axis", "label_smoothing")

    def __init__(self, *, alpha: Any = 0.25, gamma: float = 2.0, axis: int = -1,
                 label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(alpha=alpha, gamma=gamma, reduction=reduction)
        self.axis = _axis(axis)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)


class CategoricalFocalLoss(_CategoricalFocalLoss):
    """Softmax focal loss on probabilities with one-hot or soft targets along ``axis``,
    :func:`unilosses.categorical_focal_loss` (Keras's ``CategoricalFocalCrossentropy``)."""

    _function = staticmethod(_focal.categorical_focal_loss)


class CategoricalFocalWithLogitsLoss(_CategoricalFocalLoss):
    """Softmax focal loss on logits with one-hot or soft targets along ``axis``,
    :func:`unilosses.categorical_focal_loss_with_logits`."""

    _function = staticmethod(_focal.categorical_focal_loss_with_logits)


class _SparseFocalLoss(_CategoricalFocalLoss):
    _options: tuple[str, ...] = ("alpha", "gamma", "axis", "label_smoothing", "ignore_index")

    def __init__(self, *, alpha: Any = 0.25, gamma: float = 2.0, axis: int = -1,
                 ignore_index: int | None = None, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__(alpha=alpha, gamma=gamma, axis=axis, label_smoothing=label_smoothing,
                         reduction=reduction)
        self.ignore_index = _ignore_index(ignore_index)


class SparseCategoricalFocalLoss(_SparseFocalLoss):
    """Softmax focal loss on probabilities with integer class labels,
    :func:`unilosses.sparse_categorical_focal_loss`."""

    _function = staticmethod(_focal.sparse_categorical_focal_loss)


class SparseCategoricalFocalWithLogitsLoss(_SparseFocalLoss):
    """Softmax focal loss on logits with integer class labels,
    :func:`unilosses.sparse_categorical_focal_loss_with_logits`."""

    _function = staticmethod(_focal.sparse_categorical_focal_loss_with_logits)


class _AnchorLoss(nn.Module):
    def __init__(self, *, alpha: Any = 0.25, gamma: float = 2.0,
                 normalize: str = "batch") -> None:
        super().__init__()
        _float_or_buffer(self, "alpha", alpha, optional=True)
        self.gamma = check_nonnegative("gamma", gamma)
        if normalize not in ("batch", "image"):
            raise ValueError(f"normalize={normalize!r} is not supported; use 'batch' or "
                             f"'image'.")
        self.normalize = normalize

    def extra_repr(self) -> str:
        return f"alpha={self.alpha!r}, gamma={self.gamma!r}, normalize={self.normalize!r}"


class AnchorFocalLoss(_AnchorLoss):
    """RetinaNet focal loss on probabilities with anchor states,
    :func:`unilosses.anchor_focal_loss`.

    ``forward(input, target, anchor_state, *, normalizer=None)``: input and target of shape
    ``(..., anchors, classes)``, anchor_state ``(..., anchors)`` with -1 ignore, 0 background,
    1 object.  Returns the focal loss summed over non-ignored anchors divided by
    ``max(1, #objects)`` (or by ``normalizer``); ``normalize="image"``: torchvision's
    per-image normalisation, then the mean over the images.
    """

    def forward(self, input: Tensor, target: Tensor, anchor_state: Tensor, *,
                normalizer: Any = None) -> Tensor:
        return _focal.anchor_focal_loss(input, target, anchor_state, alpha=self.alpha,
                                        gamma=self.gamma, normalizer=normalizer,
                                        normalize=self.normalize)


class AnchorFocalWithLogitsLoss(_AnchorLoss):
    """RetinaNet focal loss on logits with anchor states,
    :func:`unilosses.anchor_focal_loss_with_logits`."""

    def forward(self, input: Tensor, target: Tensor, anchor_state: Tensor, *,
                normalizer: Any = None) -> Tensor:
        return _focal.anchor_focal_loss_with_logits(input, target, anchor_state,
                                                    alpha=self.alpha, gamma=self.gamma,
                                                    normalizer=normalizer,
                                                    normalize=self.normalize)


# -- regression extras, margins, distributions ---------------------------------------------------
class MSLELoss(_Functional):
    """Mean squared logarithmic error, :func:`unilosses.msle` (Keras's epsilon floor)."""

    _function = staticmethod(_reg.msle)


class MAPELoss(_Functional):
    """Mean absolute percentage error, :func:`unilosses.mape` (in percent)."""

    _function = staticmethod(_reg.mape)


class QuantileLoss(_Functional):
    """Quantile (pinball) loss, :func:`unilosses.quantile_loss`.

    ``quantiles``: a float, or one level per entry of the input's last axis (a tensor or a
    sequence, held as a buffer); the target may then omit that axis.
    """

    _options: tuple[str, ...] = ("quantiles",)
    _function = staticmethod(_reg.quantile_loss)

    def __init__(self, *, quantiles: Any = 0.5, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        _float_or_buffer(self, "quantiles", quantiles)


class CosineSimilarityLoss(_Functional):
    """Negative cosine similarity along ``axis``, :func:`unilosses.cosine_similarity_loss`
    (``-torch.nn.CosineSimilarity`` with norms floored at ``eps``)."""

    _options: tuple[str, ...] = ("axis", "eps")
    _function = staticmethod(_reg.cosine_similarity_loss)

    def __init__(self, *, axis: int = -1, eps: float = 1e-7, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.axis = _axis(axis)
        self.eps = check_positive("eps", eps)


class HingeLoss(_Functional):
    """Hinge loss, :func:`unilosses.hinge` (labels in {-1, 1}, or {0, 1} as Keras)."""

    _function = staticmethod(_hinge.hinge)


class SquaredHingeLoss(_Functional):
    """Squared hinge loss, :func:`unilosses.squared_hinge`."""

    _function = staticmethod(_hinge.squared_hinge)


class CategoricalHingeLoss(_Functional):
    """Categorical hinge loss with one-hot targets along ``axis``,
    :func:`unilosses.categorical_hinge`."""

    _options: tuple[str, ...] = ("axis",)
    _function = staticmethod(_hinge.categorical_hinge)

    def __init__(self, *, axis: int = -1, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.axis = _axis(axis)


class Poly1CrossEntropyWithLogitsLoss(_Functional):
    """Poly-1 cross-entropy on logits with one-hot or soft targets along ``axis``,
    :func:`unilosses.poly1_cross_entropy_with_logits`."""

    _options: tuple[str, ...] = ("epsilon", "axis")
    _function = staticmethod(_cls.poly1_cross_entropy_with_logits)

    def __init__(self, *, epsilon: float = 2.0, axis: int = -1,
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.epsilon = _cls.check_finite("epsilon", epsilon)
        self.axis = _axis(axis)


class KLDivLoss(_Functional):
    """KL divergence from log-probabilities, :func:`unilosses.kl_divergence`; drop-in for
    ``torch.nn.KLDivLoss``: pointwise terms (``axis=None``), ``reduction="mean"`` over every
    element, ``"batchmean"`` (torch's recommendation: the sum over the batch size),
    ``log_target=False``.  ``axis=-1`` gives one divergence per distribution."""

    _options: tuple[str, ...] = ("axis", "log_target")
    _function = staticmethod(_dist.kl_divergence)

    def __init__(self, *, reduction: str = "mean", log_target: bool = False,
                 axis: int | None = None) -> None:
        check_reduction(reduction, also=("batchmean",))
        super().__init__(reduction="mean" if reduction == "batchmean" else reduction)
        self.reduction = reduction
        self.log_target = check_flag("log_target", log_target)
        self.axis = None if axis is None else _axis(axis)


class PoissonNLLLoss(_Functional):
    """Poisson negative log-likelihood, :func:`unilosses.poisson_nll`; drop-in for
    ``torch.nn.PoissonNLLLoss`` (``log_input=True``, ``full=False``, ``eps=1e-8``)."""

    _options: tuple[str, ...] = ("log_input", "full", "eps")
    _function = staticmethod(_dist.poisson_nll)

    def __init__(self, log_input: bool = True, full: bool = False, *, eps: float = 1e-8,
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.log_input = check_flag("log_input", log_input)
        self.full = check_flag("full", full)
        self.eps = check_positive("eps", eps)


class GaussianNLLLoss(_Loss):
    """Gaussian negative log-likelihood, :func:`unilosses.gaussian_nll`; drop-in for
    ``torch.nn.GaussianNLLLoss`` (``full=False``, ``eps=1e-6``, ``forward(input, target,
    var)``)."""

    _options: tuple[str, ...] = ("full", "eps")

    def __init__(self, *, full: bool = False, eps: float = 1e-6,
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.full = check_flag("full", full)
        self.eps = check_positive("eps", eps)

    def forward(self, input: Tensor, target: Tensor, var: Tensor, *,
                weights: Tensor | None = None, where: Tensor | None = None) -> Tensor:
        return _dist.gaussian_nll(input, target, var, full=self.full, eps=self.eps,
                                  reduction=self.reduction, weights=weights, where=where)


# -- segmentation and boxes -----------------------------------------------------------------------
class DiceLoss(_Functional):
    """Soft Dice loss, :func:`unilosses.dice_loss` (``axis``: the axes of one coefficient)."""

    _options: tuple[str, ...] = ("axis", "smooth", "eps")
    _function = staticmethod(_seg.dice_loss)

    def __init__(self, *, axis: int | tuple[int, ...] | None = None, smooth: float = 0.0,
                 eps: float = 1e-7, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.axis = axes_option("axis", axis)
        self.smooth, self.eps = _seg._smoothing(smooth, eps)


class TverskyLoss(DiceLoss):
    """Tversky loss, :func:`unilosses.tversky_loss` (``alpha`` on false positives, ``beta`` on
    false negatives)."""

    _options: tuple[str, ...] = ("alpha", "beta", "axis", "smooth", "eps")
    _function = staticmethod(_seg.tversky_loss)

    def __init__(self, *, alpha: float = 0.5, beta: float = 0.5,
                 axis: int | tuple[int, ...] | None = None, smooth: float = 0.0,
                 eps: float = 1e-7, reduction: str = "mean") -> None:
        super().__init__(axis=axis, smooth=smooth, eps=eps, reduction=reduction)
        self.alpha = check_nonnegative("alpha", alpha)
        self.beta = check_nonnegative("beta", beta)


class GIoULoss(_Functional):
    """Generalized IoU loss for (x1, y1, x2, y2) boxes, :func:`unilosses.giou_loss`
    (torchvision's ``generalized_box_iou_loss`` with ``reduction="mean"``)."""

    _options: tuple[str, ...] = ("eps",)
    _function = staticmethod(_boxes.giou_loss)

    def __init__(self, *, eps: float = 1e-7, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.eps = check_positive("eps", eps)


class DIoULoss(GIoULoss):
    """Distance IoU loss, :func:`unilosses.diou_loss` (torchvision's
    ``distance_box_iou_loss``)."""

    _function = staticmethod(_boxes.diou_loss)


class CIoULoss(GIoULoss):
    """Complete IoU loss, :func:`unilosses.ciou_loss` (torchvision's
    ``complete_box_iou_loss``)."""

    _function = staticmethod(_boxes.ciou_loss)

