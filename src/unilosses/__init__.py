"""unilosses: loss functions written once, for NumPy, PyTorch, JAX and TensorFlow arrays.

Every loss takes arrays of one framework and returns that framework's array, on the same
device, with that framework's autograd.  ``import unilosses`` imports no framework.
"""

# (the README's `unilosses.ops`, for @unilosses.loss functions; it imports no framework)
from . import ops as ops
from ._core.checks import checks as checks
from ._core.checks import set_checks as set_checks
from ._core.define import loss as loss
from .backends import preload as _preload
from .losses.boxes import ciou_loss, diou_loss, giou_loss
from .losses.classification import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    categorical_cross_entropy,
    categorical_cross_entropy_with_logits,
    poly1_cross_entropy_with_logits,
    sparse_categorical_cross_entropy,
    sparse_categorical_cross_entropy_with_logits,
)
from .losses.distribution import gaussian_nll, kl_divergence, poisson_nll
from .losses.focal import (
    anchor_focal_loss,
    anchor_focal_loss_with_logits,
    binary_focal_loss,
    binary_focal_loss_with_logits,
    categorical_focal_loss,
    categorical_focal_loss_with_logits,
    sparse_categorical_focal_loss,
    sparse_categorical_focal_loss_with_logits,
)
from .losses.hinge import categorical_hinge, hinge, squared_hinge
from .losses.metrics import in_top_k, top_k_accuracy
from .losses.regression import (
    cosine_similarity_loss,
    huber,
    log_cosh,
    mae,
    mape,
    mse,
    msle,
    quantile_loss,
    rmse,
    smooth_l1,
)
from .losses.segmentation import dice_loss, tversky_loss

__version__ = "0.1.0"

_preload()

# `__all__` lists the losses (tools iterate over it); `checks`/`set_checks` are public too.
__all__ = [
    "anchor_focal_loss",
    "anchor_focal_loss_with_logits",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_focal_loss",
    "binary_focal_loss_with_logits",
    "categorical_cross_entropy",
    "categorical_cross_entropy_with_logits",
    "categorical_focal_loss",
    "categorical_focal_loss_with_logits",
    "categorical_hinge",
    "ciou_loss",
    "cosine_similarity_loss",
    "dice_loss",
    "diou_loss",
    "gaussian_nll",
    "giou_loss",
    "hinge",
    "huber",
    "in_top_k",
    "kl_divergence",
    "log_cosh",
    "mae",
    "mape",
    "mse",
    "msle",
    "poisson_nll",
    "poly1_cross_entropy_with_logits",
    "quantile_loss",
    "rmse",
    "smooth_l1",
    "sparse_categorical_cross_entropy",
    "sparse_categorical_cross_entropy_with_logits",
    "sparse_categorical_focal_loss",
    "sparse_categorical_focal_loss_with_logits",
    "squared_hinge",
    "top_k_accuracy",
    "tversky_loss",
]
