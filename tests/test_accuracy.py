"""Accuracy against the float64 reference where a peer is accurate: errors in ulps of the
dtype, per element, on inputs where a careless formula cancels.

``assert_close``'s absolute floor hides errors on small results; here each element's error
is measured against the spacing of its own true value.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference as R
import unilosses


def ulp_errors(got, expected, dtype):  # type: ignore[no-untyped-def]
    """|got - expected| in units of the spacing of ``expected`` in ``dtype``."""
    got, expected = np.asarray(got, np.float64), np.asarray(expected, np.float64)
    spacing = np.spacing(np.abs(expected).astype(dtype)).astype(np.float64)
    return np.abs(got - expected) / np.maximum(spacing, np.finfo(dtype).tiny)


def near_targets(n: int, seed: int = 0):  # type: ignore[no-untyped-def]
    """Probabilities in the clip's interior and soft targets within 1e-7 to 1e-1 of them:
    a model close to its (distillation, smoothed) targets, where the gradient nears 0."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(1e-3, 1 - 1e-3, n)
    t = np.clip(p + rng.standard_normal(n) * 10 ** rng.uniform(-7, -1, n), 0, 1)
    return p.astype(np.float32), t.astype(np.float32)


def _weighted_near_targets(n: int):  # type: ignore[no-untyped-def]
    """``near_targets(n)`` with weights in [0.5, 2] and a mask leaving out a quarter."""
    p, t = near_targets(n)
    rng = np.random.default_rng(2)
    return p, t, rng.uniform(0.5, 2.0, n).astype(np.float32), rng.uniform(0, 1, n) < 0.75


@pytest.mark.parametrize("alpha", [None, 0.5])
def test_focal_probabilities_gradient_near_targets(ad_backend, alpha):  # type: ignore[no-untyped-def]
    # gamma 0 is BCE: d/dp = (p - t) / (p (1 - p)).  The closed form's
    # t / p - (1 - t) / (1 - p) cancelled: up to 1.4e7 ulps (median 52) on float32, torch's
    # binary_cross_entropy's backward 2 ulps
    p, t = near_targets(4096)
    _, g64 = R.focal_probs(p, t, alpha=alpha, gamma=0.0)
    x, y = ad_backend.asarray(p), ad_backend.asarray(t)
    _, g = ad_backend.value_and_grad(
        lambda a, b: unilosses.binary_focal_loss(a, b, alpha=alpha, gamma=0.0,
                                                 reduction="sum"), x, y)
    assert ulp_errors(g, g64, np.float32).max() <= 8


@pytest.mark.parametrize("case", ["none", "weights-weighted_mean", "where-mean"])
@pytest.mark.parametrize("alpha", [None, 0.5])
def test_focal_probabilities_gradient_near_targets_weighted(ad_backend, alpha, case):  # type: ignore[no-untyped-def]
    # gamma 0 reduced by weights, a mask or the caller: composed, the same cancellation
    p, t, w, keep = _weighted_near_targets(4096)
    _, g64 = R.focal_probs(p, t, alpha=alpha, gamma=0.0)
    kw: dict = {"alpha": alpha, "gamma": 0.0}
    xp = ad_backend.ad.xp
    if case == "none":
        kw["reduction"] = "none"
    elif case.startswith("weights"):
        kw.update(weights=ad_backend.asarray(w), reduction="weighted_mean")
        g64 = g64 * w / w.astype(np.float64).sum()
    else:
        kw.update(where=ad_backend.asarray(keep), reduction="mean")
        g64 = np.where(keep, g64, 0.0) / keep.sum()
    _, g = ad_backend.value_and_grad(
        lambda a, b: xp.sum(unilosses.binary_focal_loss(a, b, **kw)),
        ad_backend.asarray(p), ad_backend.asarray(t))
    assert ulp_errors(g, g64, np.float32).max() <= 8


def test_bce_with_logits_gradient_of_confident_logits(ad_backend):  # type: ignore[no-untyped-def]
    # hard labels and logits of either sign up to 30: d/dx = sigmoid(x) - t.  Formed as
    # such, sigmoid(x) rounds to 1 for x > 17 (float32) and the gradient of a right
    # positive becomes 0 (TensorFlow eagerly, the closed form: 1.7e7 ulps before it took
    # (1 - t) - sigmoid(-x) above 0); tf.nn's, optax's and the composition's are within 8
    rng = np.random.default_rng(1)
    x = rng.uniform(-30, 30, 4096).astype(np.float32)
    t = (rng.uniform(0, 1, 4096) < 0.5).astype(np.float32)
    _, g64 = R.bce_logits(x, t)
    a, b = ad_backend.asarray(x), ad_backend.asarray(t)
    _, g = ad_backend.value_and_grad(
        lambda u, v: unilosses.binary_cross_entropy_with_logits(u, v, reduction="sum"), a, b)
    errors = ulp_errors(g, g64, np.float32)
    if ad_backend.name == "torch":
        # torch's fused kernel (F.binary_cross_entropy_with_logits), taken as it is: its
        # backward is sigmoid(x) - t, e^x / 2 ulps off for a positive label (see README)
        errors = errors[(t == 0) | (x <= 0)]
    assert errors.max() <= 8


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_bce_probabilities_gradient_near_targets(ad_backend, reduction):  # type: ignore[no-untyped-def]
    # d/dp = (p - t) / (p (1 - p)); autodiff's (1 - t) / (1 - p) - t / p cancelled: up to
    # 1.4e7 ulps (median 52) in float32 above torch's kernel's sizes (4096 elements with a
    # gradient), against 2 for torch's binary_cross_entropy
    p, t = near_targets(8192)
    _, g64 = R.bce(p, t)
    g64 = g64 / (p.size if reduction == "mean" else 1)
    x, y = ad_backend.asarray(p), ad_backend.asarray(t)
    _, g = ad_backend.value_and_grad(
        lambda a, b: unilosses.binary_cross_entropy(a, b, reduction=reduction), x, y)
    assert ulp_errors(g, g64, np.float32).max() <= 8


@pytest.mark.parametrize("case", ["none", "weights-sum", "weights-weighted_mean", "where-mean"])
def test_bce_probabilities_gradient_near_targets_weighted(ad_backend, case):  # type: ignore[no-untyped-def]
    # the same derivative where the loss is reduced by weights, a mask, or by the caller
    # (reduction "none"): composed, autodiff's (1 - t) / (1 - p) - t / p cancelled there,
    # up to 7.6e6 ulps on torch and JAX, and on TensorFlow a gradient where the truth is 0
    p, t, w, keep = _weighted_near_targets(8192)
    _, g64 = R.bce(p, t)
    x, y = ad_backend.asarray(p), ad_backend.asarray(t)
    kw: dict = {}
    xp = ad_backend.ad.xp
    if case == "none":
        def loss(a, b):  # type: ignore[no-untyped-def]
            return xp.sum(unilosses.binary_cross_entropy(a, b, reduction="none"))
    elif case.startswith("weights"):
        reduction = case.split("-")[1]
        kw = {"weights": ad_backend.asarray(w), "reduction": reduction}
        g64 = g64 * w / (w.astype(np.float64).sum() if reduction == "weighted_mean" else 1)
    else:
        kw = {"where": ad_backend.asarray(keep), "reduction": "mean"}
        g64 = np.where(keep, g64, 0.0) / keep.sum()
    if kw:
        def loss(a, b):  # type: ignore[no-untyped-def]
            return unilosses.binary_cross_entropy(a, b, **kw)
    _, g = ad_backend.value_and_grad(loss, x, y)
    assert ulp_errors(g, g64, np.float32).max() <= 8


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_categorical_probabilities_gradient_is_backward_stable(ad_backend, reduction):  # type: ignore[no-untyped-def]
    # d/dp_j = -t_j / p_j + (sum t) / (sum p).  Near the targets it cancels in any float32
    # formula, the peers' too (torch's F.cross_entropy(log p) up to 8.7e8 ulps of the result
    # where ours reached 5.1e7, on p within 1e-4 of t,
    # 2000 x 10, 2026-12-01): the row sum carries an error of an ulp of 1.  What
    # can be asked is backward stability, an error of a few eps times the terms' size
    # t_j / p_j + (sum t) / (sum p), measured at 1.0-1.6 on torch, JAX and TensorFlow
    rng = np.random.default_rng(2)
    t = (1e-3 + rng.dirichlet(np.ones(10), size=512)) / (1 + 1e-2)
    p = t * (1 + 10 ** rng.uniform(-7, -1, t.shape) * rng.standard_normal(t.shape))
    t, p = t.astype(np.float32), p.astype(np.float32)
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    q = p64 / p64.sum(1, keepdims=True)
    assert q.min() > 1e-7 and q.max() < 1 - 1e-7  # the clip is idle: the formula above holds
    ratio = t64.sum(1, keepdims=True) / p64.sum(1, keepdims=True)
    scale = 1 / (t.shape[0] if reduction == "mean" else 1)
    g64 = (-t64 / p64 + ratio) * scale
    size = (t64 / p64 + ratio) * scale
    _, g = ad_backend.value_and_grad(
        lambda a, b: unilosses.categorical_cross_entropy(a, b, reduction=reduction),
        ad_backend.asarray(p), ad_backend.asarray(t))
    errors = np.abs(np.asarray(g, np.float64) - g64) / (np.finfo(np.float32).eps * size)
    assert errors.max() <= 4
