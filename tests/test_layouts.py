"""A loss's value and gradient depend on its inputs' values, not on how they are laid out.

Strided, transposed, expanded (stride 0) and offset views, NumPy's Fortran order, negative
strides, read-only, broadcast and byte-swapped arrays, JAX arrays made from them, TensorFlow
variables: each is compared with the same loss on a plain contiguous copy of the same values
(which the other tests check against float64 references), on the sizes that take each of
torch's paths.
"""

from __future__ import annotations

import numpy as np
import pytest

import unilosses
from conftest import assert_close


@pytest.mark.parametrize("wshape", [(2,), (1, 2), "full"], ids=["per-class", "row", "full"])
def test_weighted_mean_of_broadcast_weights_is_accurate(xp, wshape):  # type: ignore[no-untyped-def]
    """"weighted_mean" divides by the sum of the weights broadcast to the loss; torch sums a
    view with a zero stride (and other non-dense views) element by element along it, where a
    dense tensor's sum is pairwise: per-class weights over 1e5 rows were 2e-4 off in float32."""
    rng = np.random.default_rng(0)
    n, c = 100_000, 2
    p, t = rng.normal(size=(n, c)), rng.normal(size=(n, c))
    w = rng.uniform(0.5, 2.0, size=(c,) if wshape == "full" else wshape)
    full = np.broadcast_to(w, (n, c))
    expected = ((p - t) ** 2 * full).sum() / full.sum()
    f32 = [xp.asarray(a, "float32") for a in (p, t)]
    weights = xp.asarray(w, "float32")
    if wshape == "full":  # the caller's own broadcast view (stride 0 where the framework has them)
        weights = xp.xp.broadcast_to(weights, (n, c))
    out = unilosses.mse(*f32, weights=weights, reduction="weighted_mean")
    assert_close(xp, out, expected, "float32")
