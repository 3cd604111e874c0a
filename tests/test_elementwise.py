"""Elementwise losses on every backend: values, reductions, weights, masks and gradients
against the float64 references in reference.py."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
import unilosses
from conftest import assert_close

rng = np.random.default_rng(0)
SHAPE = (4, 5)
DTYPES = ("float32", "float64")


def _regression_inputs():  # type: ignore[no-untyped-def]
    p = rng.normal(size=SHAPE) * 2
    t = rng.normal(size=SHAPE) * 2
    t[0, 0] = p[0, 0]            # an exact zero error
    t[0, 1] = p[0, 1] - 1.0      # an error exactly at Huber's kink (delta = 1)
    t[1, 0] = p[1, 0] + 1e-3     # a small error (log-cosh cancellation territory)
    t[1, 1] = p[1, 1] - 40.0     # a large one
    return p, t


def _binary_inputs():  # type: ignore[no-untyped-def]
    x = rng.normal(size=SHAPE) * 3
    x[0, 0] = 0.0                # logit exactly 0
    t = (rng.random(SHAPE) > 0.5).astype(np.float64)
    return x, t


# name -> (unilosses function, kwargs, reference(p, t) -> (value, grad), input builder)
CASES = {
    "mse": (unilosses.mse, {}, ref.mse, _regression_inputs),
    "mae": (unilosses.mae, {}, ref.mae, _regression_inputs),
    "huber": (unilosses.huber, {}, ref.huber, _regression_inputs),
    "huber_delta": (unilosses.huber, {"delta": 0.3}, lambda p, t: ref.huber(p, t, 0.3),
                    _regression_inputs),
    "smooth_l1": (unilosses.smooth_l1, {"beta": 2.0}, lambda p, t: ref.smooth_l1(p, t, 2.0),
                  _regression_inputs),
    "log_cosh": (unilosses.log_cosh, {}, ref.log_cosh, _regression_inputs),
    "bce_logits": (unilosses.binary_cross_entropy_with_logits, {}, ref.bce_logits,
                   _binary_inputs),
    "bce_logits_pos_weight": (
        unilosses.binary_cross_entropy_with_logits, {"pos_weight": 3.0},
        lambda x, t: ref.bce_logits(x, t, 3.0), _binary_inputs),
    "bce": (unilosses.binary_cross_entropy, {}, ref.bce,
            lambda: (rng.uniform(0.01, 0.99, SHAPE), (rng.random(SHAPE) > 0.5) * 1.0)),
    "focal_logits": (unilosses.binary_focal_loss_with_logits, {}, ref.focal_logits,
                     _binary_inputs),
    "focal_logits_g05_noalpha": (
        unilosses.binary_focal_loss_with_logits, {"gamma": 0.5, "alpha": None},
        lambda x, t: ref.focal_logits(x, t, None, 0.5), _binary_inputs),
    "focal_logits_soft": (
        unilosses.binary_focal_loss_with_logits, {"gamma": 2.0, "alpha": 0.4},
        lambda x, t: ref.focal_logits(x, t, 0.4, 2.0),
        lambda: (rng.normal(size=SHAPE), rng.random(SHAPE))),
    "focal_probs": (unilosses.binary_focal_loss, {}, ref.focal_probs,
                    lambda: (rng.uniform(0.01, 0.99, SHAPE), (rng.random(SHAPE) > 0.5) * 1.0)),
    "focal_probs_g0": (unilosses.binary_focal_loss, {"gamma": 0.0},
                       lambda p, t: ref.focal_probs(p, t, 0.25, 0.0),
                       lambda: (rng.uniform(0.01, 0.99, SHAPE), rng.random(SHAPE))),
}
INPUTS = {name: case[3]() for name, case in CASES.items()}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_value(xp, case, reduction, dtype):
    fn, kw, reference, _ = CASES[case]
    p, t = INPUTS[case]
    p = p.astype(dtype)  # the reference sees the same rounded inputs
    out = fn(xp.asarray(p), xp.asarray(t, dtype), reduction=reduction, **kw)
    val, _ = reference(p, t.astype(dtype))
    # sums of 20 terms: tolerance scaled by the count's square root
    assert_close(xp, out, ref.reduce(val, reduction), dtype, scale=5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CASES))
def test_weights_and_mask(xp, case, dtype):
    fn, kw, reference, _ = CASES[case]
    p, t = INPUTS[case]
    p = p.astype(dtype)
    w = rng.uniform(0.5, 2.0, size=(SHAPE[1],))           # broadcast along the rows
    m = rng.random(SHAPE) > 0.3
    out = fn(xp.asarray(p), xp.asarray(t, dtype), weights=xp.asarray(w, dtype),
             where=xp.asarray(m), **kw)
    val, _ = reference(p, t.astype(dtype))
    assert_close(xp, out, ref.reduce(val, "mean", w.astype(dtype), m), dtype, scale=5)


@pytest.mark.parametrize("number", [np.float64(2.5), np.float32(2.5), np.int64(2), np.True_,
                                    np.False_])
def test_numpy_scalars_are_numbers(xp, number):
    # ``weights=w.mean()`` and ``where=np.True_`` are NumPy scalars: they were refused as
    # "arrays from two frameworks", even next to NumPy arrays (they carry an array namespace)
    p, t = _regression_inputs()
    x, y = xp.asarray(p, "float32"), xp.asarray(t, "float32")
    option = "where" if isinstance(number, np.bool_) else "weights"
    for reduction in ("sum", "weighted_mean"):
        got = unilosses.huber(x, y, reduction=reduction, **{option: number})
        assert xp.is_native(got)
        want = unilosses.huber(x, y, reduction=reduction, **{option: number.item()})
        np.testing.assert_array_equal(xp.to_numpy(got), xp.to_numpy(want))
    labels = xp.asarray(np.array([0, 1, 1, 0]))
    want = unilosses.sparse_categorical_cross_entropy_with_logits(x, labels, weights=2.5)
    got = unilosses.sparse_categorical_cross_entropy_with_logits(x, labels,
                                                                 weights=np.float32(2.5))
    np.testing.assert_array_equal(xp.to_numpy(got), xp.to_numpy(want))


@pytest.mark.parametrize("level", [np.float32(0.3), np.float64(0.3), np.float16(0.5)])
def test_numpy_scalar_quantile_is_a_number(xp, level):
    """quantile_loss's level as a NumPy scalar is the one level it holds (a float32 one had
    been taken as an array of shape () and refused)."""
    p, t = _regression_inputs()
    x, y = xp.asarray(p, "float32"), xp.asarray(t, "float32")
    np.testing.assert_array_equal(
        xp.to_numpy(unilosses.quantile_loss(x, y, quantiles=level)),
        xp.to_numpy(unilosses.quantile_loss(x, y, quantiles=level.item())))


def test_numpy_scalar_predictions_keep_their_dtype():
    got = unilosses.mse(np.float32(3.0), np.float64(1.0))
    assert got == 4.0 and got.dtype == np.float32


@pytest.mark.parametrize("case", sorted(CASES))
def test_mask_equals_slicing_and_blocks_nan(xp, case):
    fn, kw, _, _ = CASES[case]
    p, t = INPUTS[case]
    m = np.ones(SHAPE, bool)
    m[1:3] = False
    p_bad = p.copy()
    p_bad[1, :] = np.nan
    p_bad[2, :] = np.inf
    masked = fn(xp.asarray(p_bad), xp.asarray(t), where=xp.asarray(m), **kw)
    sliced = fn(xp.asarray(p[m]), xp.asarray(t[m]), **kw)
    assert_close(xp, masked, xp.to_numpy(sliced), "float64")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient(ad_backend, case, reduction, dtype):
    fn, kw, reference, _ = CASES[case]
    p, t = INPUTS[case]
    p = p.astype(dtype)
    b = ad_backend
    _, g = b.value_and_grad(lambda x, y: fn(x, y, reduction=reduction, **kw),
                            b.asarray(p), b.asarray(t, dtype))
    _, dref = reference(p, t.astype(dtype))
    expected = ref.reduce_grad(dref, reduction)
    tol = 256 * np.finfo(dtype).eps
    np.testing.assert_allclose(g, expected, rtol=tol * 5, atol=tol * 5)
    assert str(g.dtype) == dtype


@pytest.mark.parametrize("case", sorted(CASES))
def test_masked_gradient_is_zero_and_finite(ad_backend, case):
    fn, kw, _, _ = CASES[case]
    p, t = INPUTS[case]
    m = np.ones(SHAPE, bool)
    m[0] = False
    p_bad = p.copy()
    p_bad[0, :2] = np.nan
    p_bad[0, 2:] = np.inf
    b = ad_backend
    v, g = b.value_and_grad(lambda x, y: fn(x, y, where=b.asarray(m), **kw),
                            b.asarray(p_bad), b.asarray(t))
    assert np.isfinite(v)
    assert np.all(np.isfinite(g))
    assert np.all(g[0] == 0)


@pytest.mark.parametrize("fn", [unilosses.mse, unilosses.mae, unilosses.huber,
                                unilosses.binary_cross_entropy_with_logits])
def test_fully_masked_mean_is_zero(ad_backend, fn):
    b = ad_backend
    p, t = rng.normal(size=(3,)), rng.random(3)
    v, g = b.value_and_grad(lambda x, y: fn(x, y, where=b.asarray(np.zeros(3, bool))),
                            b.asarray(p), b.asarray(t))
    assert v == 0 and np.all(g == 0)


# -- rmse ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [None, 0, 1, (0, 1)])
def test_rmse(xp, axis, dtype):
    p, t = _regression_inputs()
    p, t = p.astype(dtype), t.astype(dtype)
    w = rng.uniform(0.5, 2, SHAPE).astype(dtype)
    m = rng.random(SHAPE) > 0.2
    m[0, :] = m[:, 0] = False  # a row and a column wholly masked: groups of axis 1 and 0
    out = unilosses.rmse(xp.asarray(p), xp.asarray(t), axis=axis, weights=xp.asarray(w),
                         where=xp.asarray(m))
    se = (p.astype(np.float64) - t) ** 2 * w
    count = m.sum(axis=axis)
    # a group with every element masked is 0, the documented rule (the reference took 0 / 0
    # where the module's generator, whose draws depend on the tests before, made one)
    expected = np.sqrt(np.where(m, se, 0).sum(axis=axis) / np.maximum(count, 1))
    assert_close(xp, out, expected, dtype, scale=5)


def test_rmse_gradient_and_zero_error(ad_backend):
    b = ad_backend
    p, t = _regression_inputs()
    v, g = b.value_and_grad(lambda x, y: unilosses.rmse(x, y), b.asarray(p), b.asarray(t))
    r = np.sqrt(np.mean((p - t) ** 2))
    np.testing.assert_allclose(v, r, rtol=1e-13)
    np.testing.assert_allclose(g, (p - t) / (p.size * r), rtol=1e-12, atol=1e-15)
    # zero error everywhere: sqrt's infinite slope must not give NaN
    v0, g0 = b.value_and_grad(lambda x, y: unilosses.rmse(x, y), b.asarray(p), b.asarray(p))
    assert v0 == 0 and np.all(g0 == 0)


# -- extremes and ties ------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_logits_extremes_finite(ad_backend, gamma, dtype):
    b = ad_backend
    x = np.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4] * 2, dtype)
    t = np.array([0.0] * 7 + [1.0] * 7, dtype)
    v, g = b.value_and_grad(
        lambda a, y: unilosses.binary_focal_loss_with_logits(a, y, gamma=gamma, reduction="sum"),
        b.asarray(x), b.asarray(t))
    val, dref = ref.focal_logits(x, t, 0.25, gamma)
    assert np.isfinite(v) and np.all(np.isfinite(g))
    tol = 256 * np.finfo(dtype).eps
    np.testing.assert_allclose(v, val.sum(), rtol=tol)
    np.testing.assert_allclose(g, dref, rtol=tol, atol=tol)


@pytest.mark.parametrize("fn", [unilosses.binary_cross_entropy_with_logits,
                                unilosses.binary_focal_loss_with_logits])
def test_logits_extremes_float32(ad_backend, fn):
    b = ad_backend
    x = np.array([-1e4, 1e4, -1e4, 1e4, 0.0], np.float32)
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0], np.float32)
    v, g = b.value_and_grad(lambda a, y: fn(a, y, reduction="sum"), b.asarray(x), b.asarray(t))
    assert np.isfinite(v) and np.all(np.isfinite(g))
    # confidently wrong logits of 1e4 cost ~1e4 each (times alpha for the focal loss)
    assert v > 1e3


@pytest.mark.parametrize("fn", [unilosses.binary_cross_entropy, unilosses.binary_focal_loss])
def test_exact_probabilities_finite(ad_backend, fn):
    b = ad_backend
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    v, g = b.value_and_grad(lambda a, y: fn(a, y, reduction="none")[2] * 0 + fn(a, y),
                            b.asarray(p), b.asarray(t))
    assert np.isfinite(v) and np.all(np.isfinite(g))
    # a confidently wrong exact probability is charged -log(1e-7)
    expected = fn(np.array([0.0]), np.array([1.0]), alpha=None, gamma=0.0) if fn is \
        unilosses.binary_focal_loss else fn(np.array([0.0]), np.array([1.0]))
    np.testing.assert_allclose(expected, -np.log(1e-7), rtol=1e-6)


def test_regression_huge_errors_float32(ad_backend):
    b = ad_backend
    p = np.array([1e30, -1e30, 0.0], np.float32)
    t = np.zeros(3, np.float32)
    for fn in (unilosses.huber, unilosses.smooth_l1, unilosses.log_cosh, unilosses.mae):
        v, g = b.value_and_grad(lambda a, y, fn=fn: fn(a, y, reduction="sum"),
                                b.asarray(p), b.asarray(t))
        assert np.isfinite(v) and np.all(np.isfinite(g)), fn.__name__
        np.testing.assert_allclose(g, [1.0, -1.0, 0.0], rtol=1e-6)


@pytest.mark.parametrize("dtype,betas", [("float32", (1e-39, 1e-60)),
                                         ("float64", (1e-310, 5e-324))])
@pytest.mark.parametrize("where", [False, True])
def test_smooth_l1_of_a_subnormal_beta_is_l1(ad_backend, dtype, betas, where):
    # 1 / beta overflows for a beta subnormal in the dtype (NumPy gave inf, JAX and TensorFlow
    # NaN); below the dtype's range beta is 0 there: L1 (torch's kernel's reading), not 0 / 0.
    # Errors of normal size lie in the linear branch: |d| - beta / 2 rounds to |d|, slope sign(d)
    # (0 at d = 0).  ``where`` takes torch off its fused kernel, onto the written-once formula.
    b = ad_backend
    p = np.array([0.0, 0.5, -3.0, 1e30, 1e-30], dtype)
    t = np.zeros(5, dtype)
    for beta in betas:
        mask = {"where": b.asarray(np.ones(5, bool))} if where else {}
        v = b.to_numpy(unilosses.smooth_l1(b.asarray(p), b.asarray(t), beta=beta,
                                           reduction="none", **mask))
        np.testing.assert_array_equal(v, np.abs(p))
        _, g = b.value_and_grad(
            lambda a, y, beta=beta, mask=mask: unilosses.smooth_l1(
                a, y, beta=beta, reduction="sum", **mask),
            b.asarray(p), b.asarray(t))
        np.testing.assert_array_equal(g, np.sign(p))


def test_ties_agree_across_backends(ad_backend):
    """Zero error and logit 0: the same, correct derivative on every backend."""
    b = ad_backend
    z = np.zeros(3)
    _, g = b.value_and_grad(lambda a, y: unilosses.mae(a, y, reduction="sum"),
                            b.asarray(z), b.asarray(z))
    assert np.all(g == 0)
    _, g = b.value_and_grad(lambda a, y: unilosses.huber(a, y, reduction="sum"),
                            b.asarray(np.array([1.0, -1.0])), b.asarray(np.zeros(2)))
    np.testing.assert_array_equal(g, [1.0, -1.0])
    _, g = b.value_and_grad(
        lambda a, y: unilosses.binary_cross_entropy_with_logits(a, y, reduction="sum"),
        b.asarray(np.zeros(2)), b.asarray(np.array([0.0, 1.0])))
    np.testing.assert_allclose(g, [0.5, -0.5], rtol=1e-15)
    _, g = b.value_and_grad(
        lambda a, y: unilosses.binary_focal_loss_with_logits(a, y, reduction="sum", gamma=2.0),
        b.asarray(np.zeros(2)), b.asarray(np.array([0.0, 1.0])))
    _, dref = ref.focal_logits(np.zeros(2), np.array([0.0, 1.0]), 0.25, 2.0)
    np.testing.assert_allclose(g, dref, rtol=1e-13)


def test_focal_soft_label_equal_prediction_gamma_half(ad_backend):
    """0 < gamma < 1 where p equals a soft label: no derivative exists; we return 0 + CE part."""
    b = ad_backend
    t = np.array([0.5, 0.3])
    x = np.log(t / (1 - t))  # sigmoid(x) == t up to rounding
    _, g = b.value_and_grad(
        lambda a, y: unilosses.binary_focal_loss_with_logits(a, y, gamma=0.5, reduction="sum"),
        b.asarray(x), b.asarray(t))
    assert np.all(np.isfinite(g))


def _focal_target_grad(x, t, alpha, gamma):  # type: ignore[no-untyped-def]
    """d/dt of -|t - s|^gamma (a t log s + (1 - a)(1 - t) log(1 - s)), s = sigmoid(x), in
    float64 (its derivative in t exists at t = 0 and 1, where s is not t)."""
    s = 1 / (1 + np.exp(-x))
    a1, a0 = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    ce = a1 * t * np.log(s) + a0 * (1 - t) * np.log1p(-s)
    m = t - s
    return -(gamma * np.abs(m) ** (gamma - 1) * np.sign(m) * ce
             + np.abs(m) ** gamma * (a1 * np.log(s) - a0 * np.log1p(-s)))


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0, 3.0])
@pytest.mark.parametrize("alpha", [0.25, None])
@pytest.mark.parametrize("dtype", DTYPES)
def test_focal_logits_gradient_in_hard_targets(ad_backend, gamma, alpha, dtype):
    """Targets of exactly 0 or 1 differentiated (a teacher's rounded sigmoid, say): the factor
    |t - p|^gamma is computed in log space as log p or log(1 - p) there, constant in t, so
    its slope in t is carried separately; the anchor focal loss shares it."""
    b = ad_backend
    x = np.array([2.0, -1.0, 0.5, 3.0, -4.0, 1.5, 0.0, -0.7])
    t = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.3])  # hard but one
    want = _focal_target_grad(x, t, alpha, gamma)
    tol = 256 * np.finfo(dtype).eps
    _, g = b.value_and_grad(
        lambda y, a: unilosses.binary_focal_loss_with_logits(a, y, alpha=alpha, gamma=gamma,
                                                             reduction="sum"),
        b.asarray(t, dtype), b.asarray(x, dtype))
    np.testing.assert_allclose(g, want, rtol=tol, atol=tol)
    state = np.ones(2, dtype=np.int64)  # every anchor an object: normalised by 2
    _, g = b.value_and_grad(
        lambda y, a, s: unilosses.anchor_focal_loss_with_logits(a, y, s, alpha=alpha,
                                                                gamma=gamma),
        b.asarray(t.reshape(2, 4), dtype), b.asarray(x.reshape(2, 4), dtype), b.asarray(state))
    np.testing.assert_allclose(g, want.reshape(2, 4) / 2, rtol=tol, atol=tol)


#: errors for log_cosh's derivatives: tiny (where ``|d| - min(|d|, tail)`` through autodiff
#: had quantised the slope to multiples of 2^-24 in float32), around float32's tail (12),
#: and from 29 to 40 (where JAX's derivative of ``m^2 / (2 + 2m)`` underflowed to 2x)
_LOG_COSH_ERRORS = np.array([1e-30, 3e-8, 1e-6, -4e-4, 1e-2, 0.5, -3.0, 11.9, 12.0, 12.5, 25.0,
                             -29.5, 35.0, 39.9, 40.0, 45.0, 1e30, 0.0])


def _log_cosh_call(b, mode, dtype):  # type: ignore[no-untyped-def]
    """log_cosh(x, y) summed: ``plain`` (the closed forms), or through the composition that
    autodiff differentiates (``where``/``weights``: all kept, weight 1)."""
    n = len(_LOG_COSH_ERRORS)
    kw = {}
    if mode == "where":
        kw["where"] = b.asarray(np.ones(n, bool))
    elif mode == "weights":
        kw["weights"] = b.asarray(np.ones(n), dtype)
    return lambda x, y: unilosses.log_cosh(x, y, reduction="sum", **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["plain", "where", "weights", "targets"])
def test_log_cosh_slope_to_a_few_eps_relative(ad_backend, mode, dtype):
    """tanh(d) to a few eps of itself, however small or large: in the predictions, and in
    the targets (which take the composition on torch)."""
    b = ad_backend
    d = _LOG_COSH_ERRORS.astype(dtype)
    zeros = b.asarray(np.zeros(len(d)), dtype)
    if mode == "targets":
        f = _log_cosh_call(b, "plain", dtype)
        _, g = b.value_and_grad(lambda y, x: f(x, y), zeros, b.asarray(d))
        g = -g
    else:
        _, g = b.value_and_grad(_log_cosh_call(b, mode, dtype), b.asarray(d), zeros)
    want = np.tanh(d.astype(np.float64))
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(g, want, rtol=8 * eps, atol=0)


def _second_derivative(b, f, a, c, outer=0):  # type: ignore[no-untyped-def]
    """d/d(a, c)[outer] of the sum of d/da of the elementwise sum ``f(a, c)``, element by
    element: with ``outer`` 0 the diagonal of the Hessian in ``a``, with 1 the mixed
    derivative in ``a`` and then ``c``."""
    if b.name == "torch":
        import torch

        a, c = a.clone().requires_grad_(True), c.clone().requires_grad_(outer == 1)
        (g,) = torch.autograd.grad(f(a, c), a, create_graph=True)
        return torch.autograd.grad(g.sum(), (a, c)[outer])[0].detach().cpu().numpy()
    if b.name == "jax":
        import jax

        inner = jax.grad(f)
        if outer == 0:
            return np.asarray(jax.grad(lambda u: inner(u, c).sum())(a))
        return np.asarray(jax.grad(lambda v: inner(a, v).sum())(c))
    import tensorflow as tf

    with tf.GradientTape() as tape_outer:
        tape_outer.watch((a, c)[outer])
        with tf.GradientTape() as tape_inner:
            tape_inner.watch(a)
            v = f(a, c)
        g = tf.reduce_sum(tape_inner.gradient(v, a))
    return tape_outer.gradient(g, (a, c)[outer]).numpy()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["plain", "where"])
def test_log_cosh_curvature(ad_backend, mode, dtype):
    """1 - tanh(d)^2 to a few eps (absolute: it cancels), through the closed forms and the
    composition, eagerly and under jit."""
    b = ad_backend
    d = _LOG_COSH_ERRORS.astype(dtype)
    f = _log_cosh_call(b, mode, dtype)
    x, y = b.asarray(d), b.asarray(np.zeros(len(d)), dtype)
    want = 1.0 - np.tanh(d.astype(np.float64)) ** 2
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(_second_derivative(b, f, x, y), want, rtol=0, atol=8 * eps)
    if b.name == "jax":
        import jax

        np.testing.assert_allclose(_second_derivative(b, jax.jit(f), x, y), want, rtol=0,
                                   atol=8 * eps)


def _focal_target_curvature(x, t, alpha, gamma):  # type: ignore[no-untyped-def]
    """d2/dt2 of the focal loss of :func:`_focal_target_grad` (ce is linear in t)."""
    s = 1 / (1 + np.exp(-x))
    a1, a0 = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    ce = -(a1 * t * np.log(s) + a0 * (1 - t) * np.log1p(-s))
    dce = -(a1 * np.log(s) - a0 * np.log1p(-s))
    m = t - s
    return (gamma * (gamma - 1) * np.abs(m) ** (gamma - 2) * ce
            + 2 * gamma * np.abs(m) ** (gamma - 1) * np.sign(m) * dce)


@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
@pytest.mark.parametrize("alpha", [0.25, None])
def test_focal_logits_curvature_in_hard_targets(ad_backend, gamma, alpha):
    """The second derivative in 0/1 targets, and the mixed one in targets and logits (against
    central differences of the first), of the binary and the anchor focal losses on logits:
    the log-space factor's term in t carries every derivative in t (its slope alone had left
    the curvature out: +0.68 for -0.12 at x = 0.7, t = 1, gamma 2)."""
    b = ad_backend
    x = np.array([2.0, -1.0, 0.5, 3.0, -4.0, 1.5, 0.0, -0.7])
    t = np.array([1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.3])
    state = b.asarray(np.ones(2, dtype=np.int64))

    def binary(y, a):  # type: ignore[no-untyped-def]
        return unilosses.binary_focal_loss_with_logits(a, y, alpha=alpha, gamma=gamma,
                                                       reduction="sum")

    def anchor(y, a):  # type: ignore[no-untyped-def]
        # every anchor an object: normalised by 2
        return 2 * unilosses.anchor_focal_loss_with_logits(a, y, state, alpha=alpha,
                                                           gamma=gamma)

    want = _focal_target_curvature(x, t, alpha, gamma)
    h = 1e-6
    for f, shape in ((binary, (8,)), (anchor, (2, 4))):
        y, a = b.asarray(t.reshape(shape)), b.asarray(x.reshape(shape))
        got = _second_derivative(b, f, y, a).reshape(-1)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        fd = (b.value_and_grad(f, y, b.asarray((x + h).reshape(shape)))[1]
              - b.value_and_grad(f, y, b.asarray((x - h).reshape(shape)))[1]) / (2 * h)
        np.testing.assert_allclose(_second_derivative(b, f, y, a, outer=1), fd, rtol=1e-6,
                                   atol=1e-8)


def test_numpy_reductions_are_numpy_scalars():
    # the README: "NumPy reductions return NumPy scalars, as np.sum does"; "weighted_mean"
    # with weights and rmse gave 0-d arrays (np.where's result) where the rest gave scalars
    p = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    t, w = np.zeros((2, 2), np.float32), np.array([1.0, 3.0], np.float32)
    labels = np.array([0, 1])
    for out in (unilosses.mse(p, t, weights=w, reduction="weighted_mean"),
                unilosses.mse(p, t, where=p > 1.5, weights=w, reduction="weighted_mean"),
                unilosses.sparse_categorical_cross_entropy_with_logits(
                    p, labels, class_weights=w, reduction="weighted_mean"),
                unilosses.dice_loss(p / 4, t, axis=0, weights=w, reduction="weighted_mean"),
                unilosses.rmse(p, t), unilosses.rmse(p, t, axis=(0, 1))):
        assert isinstance(out, np.float32), repr(out)
    assert float(unilosses.mse(p, t, weights=w, reduction="weighted_mean")) == 8.75
    np.testing.assert_allclose(float(unilosses.rmse(p, t)), np.sqrt(7.5), rtol=1e-6)
