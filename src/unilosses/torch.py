"""PyTorch front end: one :class:`torch.nn.Module` per unilosses loss.

Each module holds its loss's keyword options (given to the constructor, validated there) and
calls the functional loss in ``forward``, so value and gradient are exactly the functional
loss's.  ``forward`` takes torch's argument order, ``forward(input, target)``; the optional
per-call ``weights`` and ``where`` of the functional losses are keyword arguments of
``forward``.  Tensor options (``pos_weight``, ``weight``) are buffers: they follow
``.to(device)`` / ``.double()`` and are saved in ``state_dict`` under torch's names.

Naming: the function's name in CamelCase with ``Loss`` appended, spelt the way ``torch.nn``
spells it where torch has the same loss (``MSE``, ``L1``, ``BCE``), and ``_with_logits`` as
``WithLogits`` before ``Loss`` (as in ``BCEWithLogitsLoss``).  Two aliases carry torch's own
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
``BCELoss`` -- :func:`~unilosses.binary_cross_entropy`
    ``torch.nn.BCELoss`` (probabilities clipped to ``[1e-7, 1 - 1e-7]`` where torch clamps
    the log at -100); ``weight=None``, ``reduction="mean"``
``BCEWithLogitsLoss`` -- :func:`~unilosses.binary_cross_entropy_with_logits`
    ``torch.nn.BCEWithLogitsLoss`` (drop-in); ``weight=None``, ``reduction="mean"``,
    ``pos_weight=None``
``CategoricalCrossEntropyLoss`` -- :func:`~unilosses.categorical_cross_entropy`
    none (Keras's ``CategoricalCrossentropy``); ``axis=-1``, ``label_smoothing=0.0``,
    ``reduction="mean"``
``CategoricalCrossEntropyWithLogitsLoss`` --
:func:`~unilosses.categorical_cross_entropy_with_logits`
    ``torch.nn.CrossEntropyLoss`` with probability targets, class axis ``axis=-1`` (torch: 1);
    ``label_smoothing=0.0``, ``reduction="mean"``
``SparseCategoricalCrossEntropyLoss`` -- :func:`~unilosses.sparse_categorical_cross_entropy`
    none (Keras's ``SparseCategoricalCrossentropy``); ``axis=-1``, ``ignore_index=None``,
    ``label_smoothing=0.0``, ``reduction="mean"``
``SparseCategoricalCrossEntropyWithLogitsLoss`` --
:func:`~unilosses.sparse_categorical_cross_entropy_with_logits`
    ``torch.nn.CrossEntropyLoss`` with class indices, class axis ``axis=-1`` (torch: 1);
    ``ignore_index=None``, ``label_smoothing=0.0``, ``reduction="mean"``
``CrossEntropyLoss`` -- the two ``*_with_logits`` functions above, on class axis 1
    ``torch.nn.CrossEntropyLoss`` (drop-in: integer targets are class indices, floating ones
    probabilities); ``ignore_index=-100``, ``reduction="mean"``, ``label_smoothing=0.0``
``BinaryFocalLoss`` -- :func:`~unilosses.binary_focal_loss`
    none (Keras's ``BinaryFocalCrossentropy``); ``alpha=0.25`` (None: off), ``gamma=2.0``,
    ``reduction="mean"``
``BinaryFocalWithLogitsLoss`` -- :func:`~unilosses.binary_focal_loss_with_logits`
    ``torchvision.ops.sigmoid_focal_loss`` (whose default reduction is "none");
    ``alpha=0.25``, ``gamma=2.0``, ``reduction="mean"``
``AnchorFocalLoss`` -- :func:`~unilosses.anchor_focal_loss`
    none; ``alpha=0.25``, ``gamma=2.0``; ``forward(input, target, anchor_state, *,
    normalizer=None)``
``AnchorFocalWithLogitsLoss`` -- :func:`~unilosses.anchor_focal_loss_with_logits`
    torchvision's RetinaNet classification head loss; as ``AnchorFocalLoss``

"Drop-in" means: same constructor defaults, same ``forward(input, target)``, same value and
gradient (tested against ``torch.nn`` on the same inputs).  Not carried over: torch's
deprecated ``size_average``/``reduce`` arguments, ``CrossEntropyLoss(weight=...)`` (per-class
weights; it raises ``NotImplementedError``), ``SmoothL1Loss(beta=0)`` (use ``L1Loss``) and
TorchScript (``torch.jit.script``); ``torch.compile`` works (no graph breaks).
torchvision's ``sigmoid_focal_loss`` defaults to ``reduction="none"``; ``BinaryFocalWithLogitsLoss``
to ``"mean"`` like every other module here.

Half precision: float16/bfloat16 inputs (e.g. under ``torch.autocast``) are computed and
returned in float32, and the gradient reaches the input in the input's dtype.

Importing this module imports torch; ``import unilosses`` does not import it.
"""

from __future__ import annotations

from typing import Any

try:
    import torch
    from torch import Tensor, nn
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        'unilosses.torch needs PyTorch, which is not installed: pip install "unilosses[torch]"'
    ) from exc

from ._core.validate import (
    check_nonnegative,
    check_positive,
    check_reduction,
    check_unit_interval,
)
from .backends import adapter_named
from .losses import classification as _cls
from .losses import focal as _focal
from .losses import regression as _reg

__all__ = [
    "AnchorFocalLoss",
    "AnchorFocalWithLogitsLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "BinaryFocalLoss",
    "BinaryFocalWithLogitsLoss",
    "CategoricalCrossEntropyLoss",
    "CategoricalCrossEntropyWithLogitsLoss",
    "CrossEntropyLoss",
    "HuberLoss",
    "L1Loss",
    "LogCoshLoss",
    "MAELoss",
    "MSELoss",
    "RMSELoss",
    "SmoothL1Loss",
    "SparseCategoricalCrossEntropyLoss",
    "SparseCategoricalCrossEntropyWithLogitsLoss",
]

# Load the torch adapter now: its first use imports a module, which torch.compile cannot trace
# (a graph break); afterwards dispatch is a dictionary lookup that compiles away.
adapter_named("torch")


def _tensor_option(name: str, value: Tensor | float | None) -> Tensor | None:
    if value is None:
        return None
    if isinstance(value, Tensor):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"`{name}` must be a tensor, a float or None, got {type(value).__name__}.")
    return torch.tensor(float(value))


def _alpha(alpha: float | None) -> float | None:
    return None if alpha is None else check_unit_interval("alpha", alpha)


def _ignore_index(value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"`ignore_index` must be an int or None, got {value!r}.")
    return value


def _axis(value: int) -> int:
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

    _options = ("axis",)

    def __init__(self, *, axis: int | tuple[int, ...] | None = None) -> None:
        nn.Module.__init__(self)
        self.axis = axis

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _reg.rmse(input, target, axis=self.axis, weights=weights, where=where)


class HuberLoss(_Loss):
    """Huber loss, :func:`unilosses.huber`; drop-in for ``torch.nn.HuberLoss``."""

    _options = ("delta",)

    def __init__(self, *, reduction: str = "mean", delta: float = 1.0) -> None:
        super().__init__(reduction=reduction)
        self.delta = check_positive("delta", delta)

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _reg.huber(input, target, delta=self.delta, reduction=self.reduction,
                          weights=weights, where=where)


class SmoothL1Loss(_Loss):
    """Smooth L1 loss, :func:`unilosses.smooth_l1`; drop-in for ``torch.nn.SmoothL1Loss``
    (``beta > 0``)."""

    _options = ("beta",)

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
    """A loss with torch's constructor ``weight`` (a buffer), multiplied into ``weights``."""

    weight: Tensor | None

    def __init__(self, *, weight: Tensor | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.register_buffer("weight", _tensor_option("weight", weight))

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
        return _cls.binary_cross_entropy(input, target, reduction=self.reduction,
                                         weights=self._weights(weights), where=where)


class BCEWithLogitsLoss(_WeightedLoss):
    """Binary cross-entropy on logits, :func:`unilosses.binary_cross_entropy_with_logits`;
    drop-in for ``torch.nn.BCEWithLogitsLoss``.

    ``weight`` (rescales each element) and ``pos_weight`` (weight of the positive term,
    broadcast against the last axis) are buffers, stored in ``state_dict`` under torch's names,
    so a ``torch.nn.BCEWithLogitsLoss`` state dict loads into this module.
    """

    pos_weight: Tensor | None

    def __init__(self, *, weight: Tensor | None = None, reduction: str = "mean",
                 pos_weight: Tensor | float | None = None) -> None:
        super().__init__(weight=weight, reduction=reduction)
        self.register_buffer("pos_weight", _tensor_option("pos_weight", pos_weight))

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _cls.binary_cross_entropy_with_logits(
            input, target, pos_weight=self.pos_weight, reduction=self.reduction,
            weights=self._weights(weights), where=where)


class _CategoricalLoss(_Loss):
    _options = ("axis", "label_smoothing")

    def __init__(self, *, axis: int = -1, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.axis = _axis(axis)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)


class CategoricalCrossEntropyLoss(_CategoricalLoss):
    """Categorical cross-entropy on probabilities with one-hot or soft targets along ``axis``,
    :func:`unilosses.categorical_cross_entropy`."""

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _cls.categorical_cross_entropy(
            input, target, axis=self.axis, label_smoothing=self.label_smoothing,
            reduction=self.reduction, weights=weights, where=where)


class CategoricalCrossEntropyWithLogitsLoss(_CategoricalLoss):
    """Softmax cross-entropy on logits with one-hot or soft targets along ``axis``,
    :func:`unilosses.categorical_cross_entropy_with_logits` (``torch.nn.CrossEntropyLoss``
    with probability targets, whose class axis is 1: pass ``axis=1`` or use
    :class:`CrossEntropyLoss`)."""

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _cls.categorical_cross_entropy_with_logits(
            input, target, axis=self.axis, label_smoothing=self.label_smoothing,
            reduction=self.reduction, weights=weights, where=where)


class _SparseLoss(_Loss):
    _options = ("axis", "ignore_index", "label_smoothing")

    def __init__(self, *, axis: int = -1, ignore_index: int | None = None,
                 label_smoothing: float = 0.0, reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.axis = _axis(axis)
        self.ignore_index = _ignore_index(ignore_index)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)


class SparseCategoricalCrossEntropyLoss(_SparseLoss):
    """Categorical cross-entropy on probabilities with integer class labels,
    :func:`unilosses.sparse_categorical_cross_entropy`."""

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _cls.sparse_categorical_cross_entropy(
            input, target, axis=self.axis, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction, weights=weights,
            where=where)


class SparseCategoricalCrossEntropyWithLogitsLoss(_SparseLoss):
    """Softmax cross-entropy on logits with integer class labels,
    :func:`unilosses.sparse_categorical_cross_entropy_with_logits`."""

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _cls.sparse_categorical_cross_entropy_with_logits(
            input, target, axis=self.axis, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction, weights=weights,
            where=where)


class CrossEntropyLoss(_Loss):
    """Drop-in for ``torch.nn.CrossEntropyLoss``: softmax cross-entropy on logits.

    The class axis is 1 (0 for an input of shape ``(C,)``), as in torch.  An integer
    ``target`` holds class indices (:func:`unilosses.sparse_categorical_cross_entropy_with_logits`,
    labels equal to ``ignore_index`` are left out of the sum and of the mean's count); a
    floating ``target`` holds class probabilities
    (:func:`unilosses.categorical_cross_entropy_with_logits`).  Per-class ``weight`` is not
    supported.
    """

    _options = ("ignore_index", "label_smoothing")
    weight: Tensor | None

    def __init__(self, weight: Tensor | None = None, *, ignore_index: int = -100,
                 reduction: str = "mean", label_smoothing: float = 0.0) -> None:
        if weight is not None:
            raise NotImplementedError(
                "CrossEntropyLoss(weight=...) (per-class weights, with torch's weighted "
                "mean) is not supported; use torch.nn.CrossEntropyLoss for it, or pass "
                "per-sample weights to forward(..., weights=w)."
            )
        super().__init__(reduction=reduction)
        # torch's module has this buffer (None without class weights); kept for code reading it
        self.register_buffer("weight", None)
        self.ignore_index = _ignore_index(ignore_index)
        self.label_smoothing = check_unit_interval("label_smoothing", label_smoothing)

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        axis = 1 if input.dim() > 1 else 0
        if target.is_floating_point():
            return _cls.categorical_cross_entropy_with_logits(
                input, target, axis=axis, label_smoothing=self.label_smoothing,
                reduction=self.reduction, weights=weights, where=where)
        return _cls.sparse_categorical_cross_entropy_with_logits(
            input, target, axis=axis, ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing, reduction=self.reduction, weights=weights,
            where=where)


class _FocalLoss(_Loss):
    _options = ("alpha", "gamma")

    def __init__(self, *, alpha: float | None = 0.25, gamma: float = 2.0,
                 reduction: str = "mean") -> None:
        super().__init__(reduction=reduction)
        self.alpha = _alpha(alpha)
        self.gamma = check_nonnegative("gamma", gamma)


class BinaryFocalLoss(_FocalLoss):
    """Binary focal loss on probabilities, :func:`unilosses.binary_focal_loss`.

    ``alpha=None`` turns class balancing off.
    """

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _focal.binary_focal_loss(input, target, alpha=self.alpha, gamma=self.gamma,
                                        reduction=self.reduction, weights=weights, where=where)


class BinaryFocalWithLogitsLoss(_FocalLoss):
    """Binary (sigmoid) focal loss on logits, :func:`unilosses.binary_focal_loss_with_logits`
    (torchvision's ``sigmoid_focal_loss`` with ``reduction="mean"``)."""

    def forward(self, input: Tensor, target: Tensor, *, weights: Tensor | None = None,
                where: Tensor | None = None) -> Tensor:
        return _focal.binary_focal_loss_with_logits(
            input, target, alpha=self.alpha, gamma=self.gamma, reduction=self.reduction,
            weights=weights, where=where)


class _AnchorLoss(nn.Module):
    def __init__(self, *, alpha: float | None = 0.25, gamma: float = 2.0) -> None:
        super().__init__()
        self.alpha = _alpha(alpha)
        self.gamma = check_nonnegative("gamma", gamma)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha!r}, gamma={self.gamma!r}"


class AnchorFocalLoss(_AnchorLoss):
    """RetinaNet focal loss on probabilities with anchor states,
    :func:`unilosses.anchor_focal_loss`.

    ``forward(input, target, anchor_state, *, normalizer=None)``: input and target of shape
    ``(..., anchors, classes)``, anchor_state ``(..., anchors)`` with -1 ignore, 0 background,
    1 object.  Returns the focal loss summed over non-ignored anchors divided by
    ``max(1, #objects)`` (or by ``normalizer``).
    """

    def forward(self, input: Tensor, target: Tensor, anchor_state: Tensor, *,
                normalizer: Any = None) -> Tensor:
        return _focal.anchor_focal_loss(input, target, anchor_state, alpha=self.alpha,
                                        gamma=self.gamma, normalizer=normalizer)


class AnchorFocalWithLogitsLoss(_AnchorLoss):
    """RetinaNet focal loss on logits with anchor states,
    :func:`unilosses.anchor_focal_loss_with_logits`."""

    def forward(self, input: Tensor, target: Tensor, anchor_state: Tensor, *,
                normalizer: Any = None) -> Tensor:
        return _focal.anchor_focal_loss_with_logits(input, target, anchor_state,
                                                    alpha=self.alpha, gamma=self.gamma,
                                                    normalizer=normalizer)
