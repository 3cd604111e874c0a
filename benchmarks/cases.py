"""What is measured: the losses, their options, the sizes and the inputs (NumPy, seeded).

A size is the number of elements of the first input (the predictions or logits).  Categorical
losses lay it out as ``(rows, classes)``, the anchor focal losses as ``(1, anchors, classes)``;
the row of the table shows the shape actually used.  The focal shape ``(8, 19, 384, 384)``
(a batch of 19-class 384x384 segmentation logits) is used by the four focal losses only: the
binary ones take it as it is, the anchor ones as ``(8, 384 * 384, 19)`` (one anchor per pixel).

Inputs are float32.  They are drawn so that every peer computes the same number as unilosses:
probabilities lie well inside unilosses's clip ``[1e-7, 1 - 1e-7]``, labels are hard (0/1 or
one-hot: the focal peers use ``1 - p_t``, which equals unilosses's ``|t - p|`` only there), and
the scores of ``in_top_k`` are distinct within a row (no ties for the peers' ``top_k``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: the focal-loss shape of the issue: (batch, classes, height, width)
FOCAL_SHAPE = (8, 19, 384, 384)
#: classes of the categorical losses and of in_top_k (fewer when the size is smaller)
CLASSES = 100
#: classes of the anchor focal losses (COCO's 80)
ANCHOR_CLASSES = 80
#: k of in_top_k
TOP_K = 5

DEFAULT_SIZES = (16, 1_000, 1_000_000)
FULL_SIZES = (16, 1_000, 1_000_000, 16_000_000)


@dataclass(frozen=True)
class Size:
    """A size of the run: a number of elements, or an explicit shape (the focal shape)."""

    label: str
    elements: int
    shape: tuple[int, ...] | None = None

    @property
    def is_shape(self) -> bool:
        return self.shape is not None


def size_label(n: int) -> str:
    """16 -> "16", 1000 -> "1e3", 16000000 -> "1.6e7"."""
    if n < 1000:
        return str(n)
    e = int(math.floor(math.log10(n)))
    m = n / 10**e
    return f"{m:g}e{e}"


def parse_size(text: str) -> Size:
    """"1e6" or "1000000" (elements), or "8x19x384x384" (a shape)."""
    text = text.strip().lower()
    if "x" in text:
        try:
            shape = tuple(int(v) for v in text.split("x"))
        except ValueError:
            raise ValueError(f"bad shape {text!r}") from None
        if not shape or any(v < 1 for v in shape):
            raise ValueError(f"bad shape {text!r}")
        return Size("x".join(map(str, shape)), math.prod(shape), shape)
    try:
        n = int(float(text))
    except (ValueError, OverflowError):
        raise ValueError(f"bad size {text!r}") from None
    if n < 1:
        raise ValueError(f"bad size {text!r}")
    return Size(size_label(n), n)


def focal_size(shape: tuple[int, ...] = FOCAL_SHAPE) -> Size:
    return Size("x".join(map(str, shape)), math.prod(shape), tuple(shape))


@dataclass(frozen=True)
class Case:
    """One unilosses loss with the options and the kind of inputs it is benchmarked on."""

    loss: str
    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)
    differentiable: bool = True
    #: runs on the focal shape
    focal: bool = False

    def shape(self, size: Size) -> tuple[int, ...] | None:
        """The shape of the first input at ``size`` (None: the case does not run there)."""
        if size.is_shape:
            if not self.focal:
                return None
            assert size.shape is not None
            if self.kind.startswith("anchor"):
                b, c = size.shape[0], size.shape[1]
                return (b, math.prod(size.shape[2:]), c)
            return size.shape
        n = size.elements
        if self.kind in ("regression", "binary_prob", "binary_logits"):
            return (n,)
        if self.kind.startswith("anchor"):
            c = min(n, ANCHOR_CLASSES)
            return (1, max(1, n // c), c)
        c = min(n, CLASSES)
        if self.kind == "top_k":
            c = max(c, TOP_K)
        return (max(1, n // c), c)

    def passes(self) -> tuple[str, ...]:
        return ("fwd", "fwd+bwd") if self.differentiable else ("fwd",)

    def make(self, size: Size, seed: int = 0) -> tuple[np.ndarray, ...]:
        """The NumPy inputs (the first one is differentiated), reproducible from ``seed``."""
        shape = self.shape(size)
        if shape is None:
            raise ValueError(f"{self.loss} does not run on size {size.label}")
        rng = np.random.default_rng(seed)
        f32 = np.float32
        kind = self.kind
        if kind == "regression":
            return (rng.standard_normal(shape, f32), rng.standard_normal(shape, f32))
        if kind in ("binary_prob", "binary_logits"):
            t = (rng.random(shape, f32) < 0.3).astype(f32)
            if kind == "binary_logits":
                return (2.0 * rng.standard_normal(shape, f32), t)
            return (rng.uniform(0.02, 0.98, shape).astype(f32), t)
        rows, c = shape[:-1], shape[-1]
        labels = rng.integers(0, c, rows)
        if kind == "top_k":
            # distinct scores in every row: a shuffled 0..c-1, scaled
            scores = rng.permuted(np.broadcast_to(np.arange(c, dtype=f32), shape), axis=-1)
            return (scores / f32(c), labels)
        logits = rng.standard_normal(shape, f32)
        if kind.endswith("_prob"):
            e = np.exp(logits - logits.max(axis=-1, keepdims=True))
            first = (e / e.sum(axis=-1, keepdims=True)).astype(f32)
        else:
            first = logits
        if kind.startswith("sparse"):
            return (first, labels)
        onehot = np.zeros(shape, f32)
        np.put_along_axis(onehot, labels[..., None], 1.0, axis=-1)
        if kind.startswith("categorical"):
            return (first, onehot)
        # anchors: -1 ignore, 0 background, 1 object
        state = rng.choice(np.array([-1, 0, 1]), size=rows, p=[0.1, 0.8, 0.1])
        if kind == "anchor_prob":
            # probabilities per class (sigmoid outputs), not a softmax
            first = (1.0 / (1.0 + np.exp(-logits))).astype(f32)
        return (first, onehot, state)


_FOCAL = {"alpha": 0.25, "gamma": 2.0}

CASES: dict[str, Case] = {c.loss: c for c in (
    Case("mse", "regression"),
    Case("mae", "regression"),
    Case("huber", "regression", {"delta": 1.0}),
    Case("smooth_l1", "regression", {"beta": 1.0}),
    Case("log_cosh", "regression"),
    Case("rmse", "regression"),
    Case("binary_cross_entropy", "binary_prob"),
    Case("binary_cross_entropy_with_logits", "binary_logits"),
    Case("categorical_cross_entropy", "categorical_prob"),
    Case("categorical_cross_entropy_with_logits", "categorical_logits"),
    Case("sparse_categorical_cross_entropy", "sparse_prob"),
    Case("sparse_categorical_cross_entropy_with_logits", "sparse_logits"),
    Case("binary_focal_loss", "binary_prob", _FOCAL, focal=True),
    Case("binary_focal_loss_with_logits", "binary_logits", _FOCAL, focal=True),
    Case("anchor_focal_loss", "anchor_prob", _FOCAL, focal=True),
    Case("anchor_focal_loss_with_logits", "anchor_logits", _FOCAL, focal=True),
    Case("in_top_k", "top_k", {"k": TOP_K}, differentiable=False),
)}

LOSSES = tuple(CASES)


def select(names: list[str] | None) -> list[Case]:
    if not names:
        return list(CASES.values())
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise ValueError(f"unknown loss(es) {unknown}; choose from {', '.join(LOSSES)}")
    return [CASES[n] for n in names]


__all__ = ["CASES", "DEFAULT_SIZES", "FOCAL_SHAPE", "FULL_SIZES", "LOSSES", "Case", "Size",
           "focal_size", "parse_size", "select", "size_label"]
