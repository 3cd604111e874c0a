"""Categorical and sparse cross-entropy, anchor focal loss and top-k on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
import unilosses
from conftest import assert_close

rng = np.random.default_rng(1)
DTYPES = ("float32", "float64")
N, C = 6, 4


def _logits():  # type: ignore[no-untyped-def]
    x = rng.normal(size=(N, C)) * 3
    x[0] = [1e4, -1e4, 0.0, 5.0]      # extreme logits in one row
    return x


X = _logits()
LABELS = rng.integers(0, C, size=N)
SOFT = rng.dirichlet(np.ones(C), size=N)
PROBS = rng.dirichlet(np.ones(C), size=N) * 1.7   # not normalised: the loss renormalises


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cce_logits(xp, reduction, ls, dtype):
    x = X.astype(dtype)
    out = unilosses.categorical_cross_entropy_with_logits(
        xp.asarray(x), xp.asarray(SOFT, dtype), label_smoothing=ls, reduction=reduction)
    val, _ = ref.cce_logits(x, SOFT.astype(dtype), label_smoothing=ls)
    # the 1e4 row: a loss of ~1e4 whose last bits are those of the logits' rounding
    assert_close(xp, out, ref.reduce(val, reduction), dtype, scale=5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_sparse_logits_equals_one_hot(xp, ls, dtype):
    x = X.astype(dtype)
    out = unilosses.sparse_categorical_cross_entropy_with_logits(
        xp.asarray(x), xp.asarray(LABELS), label_smoothing=ls, reduction="none")
    val, _ = ref.cce_logits(x, ref.one_hot(LABELS, C), label_smoothing=ls)
    assert_close(xp, out, val, dtype, scale=5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_cce_probabilities(xp, ls, dtype):
    p = PROBS.astype(dtype)
    out = unilosses.categorical_cross_entropy(xp.asarray(p), xp.asarray(SOFT, dtype),
                                              label_smoothing=ls, reduction="none")
    assert_close(xp, out, ref.cce_probs(p, SOFT.astype(dtype), label_smoothing=ls), dtype,
                 scale=5)
    out = unilosses.sparse_categorical_cross_entropy(xp.asarray(p), xp.asarray(LABELS),
                                                     label_smoothing=ls, reduction="none")
    assert_close(xp, out, ref.cce_probs(p, ref.one_hot(LABELS, C), label_smoothing=ls), dtype,
                 scale=5)


@pytest.mark.parametrize("sparse", [False, True])
def test_class_axis_1(xp, sparse):
    """(N, C, d) inputs with axis=1, as torch's cross_entropy lays them out."""
    x = rng.normal(size=(3, C, 5))
    y = rng.integers(0, C, size=(3, 5))
    if sparse:
        out = unilosses.sparse_categorical_cross_entropy_with_logits(
            xp.asarray(x), xp.asarray(y), axis=1, reduction="none")
    else:
        out = unilosses.categorical_cross_entropy_with_logits(
            xp.asarray(x), xp.asarray(ref.one_hot(y, C, axis=1)), axis=1, reduction="none")
    val, _ = ref.cce_logits(np.moveaxis(x, 1, -1), ref.one_hot(y, C))
    assert_close(xp, out, val, "float64")


def test_ignore_index(xp):
    y = LABELS.copy()
    y[[1, 4]] = -100
    out = unilosses.sparse_categorical_cross_entropy_with_logits(
        xp.asarray(X), xp.asarray(y), ignore_index=-100)
    keep = y != -100
    val, _ = ref.cce_logits(X[keep], ref.one_hot(y[keep], C))
    assert_close(xp, out, val.mean(), "float64")


def test_ignore_index_and_where_together(xp):
    """Labels equal to ignore_index and elements masked by ``where`` are both left out: of
    the sum, of the count ("mean") and of the summed weights ("weighted_mean") (mutant:
    Call.restrict replacing the mask by the labels' instead of combining the two)."""
    y = LABELS.copy()
    y[[1, 4]] = -100
    where = np.ones(N, bool)
    where[[0, 4]] = False  # (the row of extreme logits masked; row 4 both ignored and masked)
    keep = (y != -100) & where
    w = np.linspace(0.5, 2.0, N)
    val, _ = ref.cce_logits(X[keep], ref.one_hot(y[keep], C))
    expected = {"mean": val.mean(), "sum": val.sum(),
                "weighted_mean": (w[keep] * val).sum() / w[keep].sum()}
    for reduction, want in expected.items():
        out = unilosses.sparse_categorical_cross_entropy_with_logits(
            xp.asarray(X), xp.asarray(y), ignore_index=-100, where=xp.asarray(where),
            weights=xp.asarray(w) if reduction == "weighted_mean" else None,
            reduction=reduction)
        assert_close(xp, out, want, "float64")


@pytest.mark.parametrize("dtype", DTYPES)
def test_cce_gradient(ad_backend, dtype):
    b = ad_backend
    x = X.astype(dtype)
    _, g = b.value_and_grad(
        lambda a, t: unilosses.categorical_cross_entropy_with_logits(a, t, reduction="sum"),
        b.asarray(x), b.asarray(SOFT, dtype))
    _, dref = ref.cce_logits(x, SOFT.astype(dtype))
    tol = 256 * np.finfo(dtype).eps
    np.testing.assert_allclose(g, dref, rtol=tol, atol=tol)
    _, g = b.value_and_grad(
        lambda a, y: unilosses.sparse_categorical_cross_entropy_with_logits(a, y),
        b.asarray(x), b.asarray(LABELS))
    _, dref = ref.cce_logits(x, ref.one_hot(LABELS, C))
    np.testing.assert_allclose(g, dref / N, rtol=tol, atol=tol)


def test_sparse_mask_blocks_nan(ad_backend):
    b = ad_backend
    x = X.copy()
    x[2] = np.nan
    m = np.ones(N, bool)
    m[2] = False
    v, g = b.value_and_grad(
        lambda a, y: unilosses.sparse_categorical_cross_entropy_with_logits(
            a, y, where=b.asarray(m)), b.asarray(x), b.asarray(LABELS))
    val, _ = ref.cce_logits(X[m], ref.one_hot(LABELS[m], C))
    np.testing.assert_allclose(v, val.mean(), rtol=1e-13)
    assert np.all(np.isfinite(g)) and np.all(g[2] == 0)


# -- anchor focal loss ------------------------------------------------------------------------
def _anchor_ref(p, t, state, alpha=0.25, gamma=2.0, logits=True):  # type: ignore[no-untyped-def]
    """The seed's Keras RetinaNet focal loss, restated in float64 NumPy with indexing."""
    total = 0.0
    f = ref.focal_logits if logits else ref.focal_probs
    for idx in np.ndindex(state.shape):
        s = state[idx]
        if s == -1:
            continue
        y = t[idx] if s == 1 else np.zeros_like(t[idx])
        total += f(p[idx], y, alpha, gamma)[0].sum()
    return total / max(1, int((state == 1).sum()))


@pytest.mark.parametrize("logits", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
def test_anchor_focal(xp, logits, dtype):
    B, A, K = 2, 7, 3
    p = rng.normal(size=(B, A, K)) if logits else rng.uniform(0.01, 0.99, (B, A, K))
    p = p.astype(dtype)
    t = (rng.random((B, A, K)) > 0.7).astype(dtype)
    state = rng.integers(-1, 2, size=(B, A))
    fn = unilosses.anchor_focal_loss_with_logits if logits else unilosses.anchor_focal_loss
    out = fn(xp.asarray(p), xp.asarray(t), xp.asarray(state))
    assert_close(xp, out, _anchor_ref(p, t, state, logits=logits), dtype, scale=5)
    out = fn(xp.asarray(p), xp.asarray(t), xp.asarray(state), normalizer=10.0, gamma=0.5,
             alpha=None)
    expected = _anchor_ref(p, t, state, None, 0.5, logits) * max(1, (state == 1).sum()) / 10
    assert_close(xp, out, expected, dtype, scale=5)


def test_anchor_focal_no_positives_and_ignored_nan(ad_backend):
    b = ad_backend
    x = rng.normal(size=(1, 4, 2))
    x[0, 3] = np.nan                           # an ignored anchor may hold garbage
    t = np.zeros((1, 4, 2))
    state = np.array([[0, 0, 0, -1]])
    v, g = b.value_and_grad(
        lambda a, y, s: unilosses.anchor_focal_loss_with_logits(a, y, s),
        b.asarray(x), b.asarray(t), b.asarray(state))
    clean = x.copy()
    clean[0, 3] = 0.0
    np.testing.assert_allclose(v, _anchor_ref(clean, t, state), rtol=1e-13)   # divided by 1
    assert np.all(np.isfinite(g)) and np.all(g[0, 3] == 0)


# -- top-k --------------------------------------------------------------------------------------
def test_in_top_k_ties_and_invalid(xp):
    s = np.array([[0.1, 0.5, 0.5, 0.2],
                  [0.3, 0.3, 0.3, 0.3],
                  [0.9, 0.0, 0.1, 0.2],
                  [0.9, np.nan, 0.1, 0.2],
                  [0.9, 0.0, 0.1, 0.2],
                  [0.9, 0.0, 0.1, 0.2]])
    y = np.array([2, 3, 2, 0, 4, -1])
    for k in (1, 2, 4):
        out = unilosses.in_top_k(xp.asarray(s), xp.asarray(y), k=k)
        got = xp.to_numpy(out)
        assert got.dtype == np.bool_
        np.testing.assert_array_equal(got, ref.in_top_k(s, y, k))


def test_in_top_k_of_no_classes_is_false(xp):
    # no class to rank: every label lies outside [0, 0), so every row is False (the rule
    # for a label out of range), on every backend and both paths
    s = xp.asarray(np.zeros((3, 0)))
    y = xp.asarray(np.array([0, -1, 2]))
    for _ in range(2):  # (torch and TensorFlow try their plain calls from the second on)
        for k in (1, 3):
            got = xp.to_numpy(unilosses.in_top_k(s, y, k=k))
            assert got.dtype == np.bool_
            np.testing.assert_array_equal(got, [False, False, False])
    assert float(xp.to_numpy(unilosses.top_k_accuracy(s, y, k=1))) == 0.0


def test_top_k_accuracy(xp):
    s = rng.normal(size=(20, 5))
    y = rng.integers(0, 5, 20)
    m = rng.random(20) > 0.3
    out = unilosses.top_k_accuracy(xp.asarray(s, "float32"), xp.asarray(y), k=2,
                                   where=xp.asarray(m))
    assert_close(xp, out, ref.in_top_k(s.astype("float32"), y, 2)[m].mean(), "float32")
