"""unilosses: loss functions written once, for NumPy, PyTorch, JAX and TensorFlow arrays.

Every loss takes arrays of one framework and returns that framework's array, on the same
device, with that framework's autograd.  ``import unilosses`` imports no framework.
"""

from ._core.checks import checks as checks
from ._core.checks import set_checks as set_checks
from ._core.define import loss as loss
from .backends import preload as _preload
from .losses.classification import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    categorical_cross_entropy,
    categorical_cross_entropy_with_logits,
    sparse_categorical_cross_entropy,
    sparse_categorical_cross_entropy_with_logits,
)
from .losses.focal import (
    anchor_focal_loss,
    anchor_focal_loss_with_logits,
    binary_focal_loss,
    binary_focal_loss_with_logits,
)
from .losses.metrics import in_top_k, top_k_accuracy
from .losses.regression import huber, log_cosh, mae, mse, rmse, smooth_l1

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
    "huber",
    "in_top_k",
    "log_cosh",
    "mae",
    "mse",
    "rmse",
    "smooth_l1",
    "sparse_categorical_cross_entropy",
    "sparse_categorical_cross_entropy_with_logits",
    "top_k_accuracy",
]
