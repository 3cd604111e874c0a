"""unilosses.ops and @unilosses.loss: the machinery, public, on every backend."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import reference as ref
import unilosses
from conftest import assert_close
from unilosses import ops

X = np.array([-1e4, -30.0, -1.0, 0.0, 1e-3, 2.0, 40.0, 1e4])


def test_stable_extras(xp):
    x = xp.asarray(X)
    assert_close(xp, ops.sigmoid(x), ref.sigmoid(X), "float64")
    assert_close(xp, ops.log_sigmoid(x), ref.log_sigmoid(X), "float64")
    assert_close(xp, ops.softplus(x), -ref.log_sigmoid(-X), "float64")
    m = np.stack([X[:4], X[4:]])
    assert_close(xp, ops.log_softmax(xp.asarray(m), axis=-1), ref.log_softmax(m), "float64")
    mx = m.max(axis=1)
    lse = mx + np.log(np.exp(m - mx[:, None]).sum(axis=1))
    assert_close(xp, ops.logsumexp(xp.asarray(m), axis=1), lse, "float64")
    idx = np.array([[3], [0]])
    assert_close(xp, ops.take_along_axis(xp.asarray(m), xp.asarray(idx), axis=1),
                 np.take_along_axis(m, idx, axis=1), "float64")
    assert_close(xp, ops.clip(x, -1.0, 1.0), np.clip(X, -1, 1), "float64")
    ad = unilosses.backends.adapter_for(x)
    assert_close(xp, ad.relu(x), np.maximum(X, 0.0), "float64")
    assert_close(xp, ops.where(x > 0, x, 0.0), np.where(X > 0, X, 0), "float64")
    assert_close(xp, ops.safe_abs(x), np.abs(X), "float64")
    assert_close(xp, ops.safe_sqrt(ops.safe_abs(x)), np.sqrt(np.abs(X)), "float64")
    assert_close(xp, ops.safe_pow(ops.safe_abs(x), 0.5), np.abs(X) ** 0.5, "float64")


def test_safe_powers_keep_nan(xp):
    """``safe_sqrt`` and ``safe_pow`` are 0 at 0 and NaN at NaN: a NaN is not hidden as 0
    (an RMSE of a NaN error is NaN)."""
    a = np.array([np.nan, 0.0, 4.0, np.inf])
    assert_close(xp, ops.safe_sqrt(xp.asarray(a)), np.sqrt(a), "float64")
    assert_close(xp, ops.safe_pow(xp.asarray(a), 1.5), a ** 1.5, "float64")
    out = unilosses.rmse(xp.asarray([np.nan, 1.0]), xp.asarray([0.0, 0.0]))
    assert np.isnan(xp.to_numpy(out))


def test_fused_arithmetic(xp):
    # the adapters' a + k b c and a + b y (torch: one kernel each, addcmul and rsub)
    rng = np.random.default_rng(5)
    a, b, c = rng.normal(size=(3, 2, 7))
    ad = unilosses.backends.adapter_for(xp.asarray(a))
    assert_close(xp, ad.add_product(xp.asarray(a), xp.asarray(b), xp.asarray(c), -2.0),
                 a - 2.0 * b * c, "float64")
    assert_close(xp, ad.add_product(xp.asarray(a), xp.asarray(b), xp.asarray(c)), a + b * c,
                 "float64")
    assert_close(xp, ad.affine(xp.asarray(a), 0.75, -0.5), 0.75 - 0.5 * a, "float64")


def test_safe_gradients_at_zero(ad_backend):
    b = ad_backend
    z = b.asarray(np.zeros(3))
    for f in (ops.safe_abs, ops.safe_sqrt, lambda a: ops.safe_pow(a, 0.5),
              lambda a: ops.clip(a, 0.0, 1.0) * 0 + ops.safe_abs(a)):
        _, g = b.value_and_grad(lambda a, f=f: b.xp.sum(f(a)), z)
        np.testing.assert_array_equal(g, 0.0)
    _, g = b.value_and_grad(lambda a: b.xp.sum(ops.softplus(a)), z)
    np.testing.assert_array_equal(g, 0.5)
    _, g = b.value_and_grad(lambda a: b.xp.sum(ops.clip(a, 0.0, 1.0)),
                            b.asarray([0.0, 1.0, 2.0]))
    np.testing.assert_array_equal(g, [1.0, 1.0, 0.0])
    # one-sided clips (None: no bound): the same rule, a tie passes the gradient
    ad = unilosses.backends.adapter_for(z)
    x3 = b.asarray([-np.inf, -1.0, 0.0, 1.0, np.inf])
    for lo, hi, inside in ((None, 0.0, [1, 1, 1, 0, 0]), (0.0, None, [0, 0, 1, 1, 1])):
        v, g = b.value_and_grad(lambda a, lo=lo, hi=hi: b.xp.sum(ad.clip(a, lo, hi) * 3.0),
                                x3)
        np.testing.assert_array_equal(g, 3.0 * np.array(inside, float))
        np.testing.assert_array_equal(b.to_numpy(ad.clip(x3, lo, hi)),
                                      np.clip([-np.inf, -1.0, 0.0, 1.0, np.inf], lo, hi))
    # the adapters' relu (each framework's own): derivative 0 at 0 everywhere
    ad = unilosses.backends.adapter_for(z)
    v, g = b.value_and_grad(lambda a: b.xp.sum(ad.relu(a)), b.asarray([-1.0, 0.0, 2.0]))
    assert float(v) == 2.0
    np.testing.assert_array_equal(g, [0.0, 0.0, 1.0])


@unilosses.loss
def charbonnier(xp, predictions, targets, *, eps=1e-3, alpha=1.0):
    """A generalised Charbonnier loss (Barron, CVPR 2019, with alpha=1)."""
    d = predictions - targets
    return (xp.sqrt(d * d + eps * eps) - eps) * alpha


def test_decorated_loss_conventions(xp):
    rng = np.random.default_rng(3)
    p, t = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    m = rng.random((4, 3)) > 0.3
    w = rng.uniform(0.5, 2, (3,))
    el = np.sqrt((p - t) ** 2 + 1e-4) - 1e-2
    out = charbonnier(xp.asarray(p), xp.asarray(t), eps=1e-2, weights=xp.asarray(w),
                      where=xp.asarray(m))
    assert_close(xp, out, ref.reduce(el, "mean", w, m), "float64")
    out = charbonnier(xp.asarray(p, "float32"), xp.asarray(t), reduction="none")
    assert_close(xp, out, np.sqrt((p.astype("float32") - t) ** 2 + 1e-6) - 1e-3, "float32")
    with pytest.raises(ValueError, match="reduction="):
        charbonnier(xp.asarray(p), xp.asarray(t), reduction="avg")
    with pytest.raises(ValueError, match="must match exactly"):
        charbonnier(xp.asarray(p), xp.asarray(t[:, :1]))
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['epsilon'\]"):
        charbonnier(xp.asarray(p), xp.asarray(t), epsilon=1.0)


def test_decorated_signature_and_masked_nan_gradient(ad_backend):
    sig = inspect.signature(charbonnier)
    assert [p.kind for p in sig.parameters.values()][:2] == [inspect.Parameter.POSITIONAL_ONLY] * 2
    assert list(sig.parameters)[2:] == ["eps", "alpha", "reduction", "weights", "where"]
    b = ad_backend
    p = np.array([1.0, np.nan, 3.0])
    v, g = b.value_and_grad(
        lambda a, t: charbonnier(a, t, where=b.asarray(np.array([True, False, True]))),
        b.asarray(p), b.asarray(np.zeros(3)))
    assert np.isfinite(v) and np.all(np.isfinite(g)) and g[1] == 0



@unilosses.loss
def squared_in_float64(xp, predictions, targets):
    d = predictions - targets
    return xp.astype(d * d, xp.float64)


def test_decorated_loss_of_the_wrong_dtype_is_refused(xp):
    """An elementwise loss in another dtype than its inputs' is an error, like a wrong shape
    (it was returned as it came: float64 from float32 inputs)."""
    p = xp.asarray(np.array([1.0, 2.0]), "float32")
    with pytest.raises(TypeError, match=r"squared_in_float64 returned .* dtype .*float64"):
        squared_in_float64(p, p)
    out = squared_in_float64(xp.asarray(np.array([1.0, 2.0])), xp.asarray(np.zeros(2)))
    assert_close(xp, out, 2.5, "float64")


def test_safe_pow_zero_keeps_the_graph(ad_backend):
    """safe_pow(a, 0) is 1 with gradient 0 everywhere (0 ** 0 included), connected to ``a``:
    it was ones_like(a), so torch's backward() of a loss made of it failed ("does not require
    grad")."""
    b = ad_backend
    a = np.array([-1.0, 0.0, 2.0, np.inf])
    v, g = b.value_and_grad(lambda x: b.xp.sum(ops.safe_pow(x, 0.0)), b.asarray(a))
    assert float(v) == 4.0
    np.testing.assert_array_equal(g, 0.0)
    assert_close(b, ops.safe_pow(b.asarray(np.array([np.nan, 0.0])), 0.0), [1.0, 1.0],
                 "float64")

def test_decorator_rejects_bad_definitions():
    with pytest.raises(TypeError, match="reserved"):
        @unilosses.loss
        def bad(xp, p, t, *, reduction="x"):
            return p
    with pytest.raises(TypeError, match="at least one array"):
        @unilosses.loss
        def bad2(xp):
            return xp


def test_jax_clip_rule_under_jit():
    """JAX's clip: the same values as jnp.clip on every edge, and the derivative 1 on the
    closed interval and 0 outside (jnp.clip splits ties), eagerly and under jit."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from unilosses.backends.jax import JaxAdapter

    clip = JaxAdapter().clip
    x = jnp.array([-np.inf, -2.0, -1.0, -0.0, 0.0, 0.5, 1.0, 2.0, np.inf, 1e30, -1e30])
    inside = np.array([0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0], float)
    for f in (clip, jax.jit(clip, static_argnums=(1, 2))):
        np.testing.assert_array_equal(f(x, -1.0, 1.0), jnp.clip(x, -1.0, 1.0))
        g = jax.grad(lambda a, f=f: jnp.sum(f(a, -1.0, 1.0) * 3.0))(x)
        np.testing.assert_array_equal(g, 3.0 * inside)
    assert np.isnan(clip(jnp.array([np.nan]), -1.0, 1.0)[0])
    # one side (XLA's minimum or maximum, a tie's derivative to x), under jit too
    for lo, hi in ((None, 0.0), (-1.0, None)):
        inside = ((np.asarray(x) <= 0) if lo is None else (np.asarray(x) >= -1)).astype(float)
        for f in (clip, jax.jit(clip, static_argnums=(1, 2))):
            np.testing.assert_array_equal(f(x, lo, hi), np.clip(x, lo, hi))
            g = jax.grad(lambda a, f=f, lo=lo, hi=hi: jnp.sum(f(a, lo, hi) * 3.0))(x)
            np.testing.assert_array_equal(g, 3.0 * inside)
        assert np.isnan(clip(jnp.array([np.nan]), lo, hi)[0])
    # one-sided bounds, as finite_logits and the probability clip use them
    big = float(jnp.finfo(jnp.float32).max) / 4
    y = jnp.array([-np.inf, -3e38, 0.0, 3e38, np.inf], jnp.float32)
    np.testing.assert_array_equal(clip(y, -big, big), jnp.clip(y, -big, big))


def test_jax_clamped_log_softmax_is_the_clipped_one():
    """JAX's one-pass clamped log-softmax gives the numbers of the log-softmax of the clipped
    logits, to the bit (rows beyond the bound both ways, all -inf, NaN, ordinary), eagerly and
    under jit, and its derivative (the clipped composition's) is 0 beyond the bound."""
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    from unilosses.backends.jax import JaxAdapter

    ad = JaxAdapter()
    rng = np.random.default_rng(3)
    big = float(np.finfo(np.float32).max) / 4
    x = rng.normal(size=(9, 5)) * np.array([[1.0], [30.0], [1e4], [1], [1], [1], [1], [1], [1]])
    x[3] = [np.inf, 0.0, -np.inf, 2 * big, -2 * big]
    x[4] = [-np.inf] * 5
    x[5] = [-3 * big, -2 * big, -1.5 * big, -np.inf, -big]
    x[6] = [big, big * (1 - 1e-7), -big, 0.0, 1.0]
    x[7] = [np.nan, 0.0, 1.0, 2.0, 3.0]
    x[8] = [1e4, 9999.0, 0.0, -1e4, 0.5]
    a = jnp.asarray(x.astype(np.float32))
    w = jnp.asarray(rng.normal(size=x.shape).astype(np.float32))
    rows = np.arange(9) != 7  # (the NaN row's gradient is NaN either way)

    def clipped(v):  # type: ignore[no-untyped-def]
        return jax.nn.log_softmax(jnp.where(v > big, big, jnp.where(v < -big, -big, v)), -1)

    for f in (ad.clamped_log_softmax, jax.jit(ad.clamped_log_softmax, static_argnums=(1, 2))):
        np.testing.assert_array_equal(f(a, -1, big), clipped(a))
    g = jax.grad(lambda v: jnp.sum(ad.clamped_log_softmax(v, -1, big)[rows] * w[rows]))(a)
    want = jax.grad(lambda v: jnp.sum(clipped(v)[rows] * w[rows]))(a)
    np.testing.assert_array_equal(g, want)
    assert np.all(np.asarray(g)[np.abs(x) > big] == 0)
