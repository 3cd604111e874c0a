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
