"""The loss catalogue of issue 9 at its edges: extreme logits, exact ties, degenerate boxes,
empty masks, option semantics (Keras's hinge labels, anchor normalisation per image,
"batchmean", "weighted_mean" with zero weights) and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
import unilosses as U
from conftest import assert_close, tolerance

rng = np.random.default_rng(91)


# -- softmax focal loss at extreme logits ----------------------------------------------------------
EXTREME = np.array([[1e4, -1e4, 0.0, 5.0],       # p of class 0 is 1 to every digit
                    [30.0, 0.0, -2.0, 1.0],      # p rounds to 1 in float32, not in float64
                    [-1e4, 1e4, 1e4, 0.0],       # a tie at the top
                    [0.5, -0.3, 0.1, 0.0]])
EXTREME_LABELS = np.array([0, 0, 0, 3])          # right, right, confidently wrong, moderate


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
def test_categorical_focal_logits_extremes(ad_backend, gamma):
    b = ad_backend
    onehot = ref.one_hot(EXTREME_LABELS, 4)
    want = ref.categorical_focal_logits(EXTREME, onehot, 0.25, gamma)
    grads = {}
    for dtype in ("float32", "float64"):
        x = EXTREME.astype(dtype)
        v, g = b.value_and_grad(
            lambda a, y: U.categorical_focal_loss_with_logits(a, y, gamma=gamma,
                                                              reduction="sum"),
            b.asarray(x), b.asarray(onehot, dtype))
        assert np.isfinite(v) and np.all(np.isfinite(g)), (dtype, v, g)
        # the confidently wrong row costs ~alpha * 2e4: relative accuracy of its logits
        np.testing.assert_allclose(v, want.sum(), rtol=tolerance(dtype)["rtol"])
        grads[dtype] = g
        if gamma != 2.0:
            continue
        # the sparse form is the same function of the logits
        v2, g2 = b.value_and_grad(
            lambda a, y: U.sparse_categorical_focal_loss_with_logits(a, y, gamma=gamma,
                                                                     reduction="sum"),
            b.asarray(x), b.asarray(EXTREME_LABELS))
        np.testing.assert_allclose(v2, v, rtol=tolerance(dtype)["rtol"])
        np.testing.assert_allclose(g2, g, rtol=tolerance(dtype)["rtol"], atol=1e-30)
    np.testing.assert_allclose(grads["float32"], grads["float64"], rtol=1e-4, atol=1e-6)


def test_categorical_focal_logits_near_one_keeps_digits(xp):
    """(1 - p)^gamma for p within 1e-13 of 1: the leave-one-out log keeps every digit."""
    x = np.array([[30.0, 0.0, -1.0], [0.0, 31.0, 2.0]])
    y = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    out = U.categorical_focal_loss_with_logits(xp.asarray(x), xp.asarray(y), gamma=2.0,
                                               alpha=None, reduction="none")
    assert_close(xp, out, ref.categorical_focal_logits(x, y, None, 2.0), "float64")


@pytest.mark.parametrize("fn", [U.categorical_focal_loss_with_logits,
                                U.poly1_cross_entropy_with_logits])
def test_infinite_logits_finite(ad_backend, fn):
    b = ad_backend
    x = np.array([[np.inf, 0.0, -np.inf], [-np.inf, np.inf, 0.0]], np.float32)
    y = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]], np.float32)
    v, g = b.value_and_grad(lambda a, t: fn(a, t, reduction="sum"), b.asarray(x), b.asarray(y))
    assert np.isfinite(v) and np.all(np.isfinite(g))


# logits beyond +-max/4 of float32 (finite and infinite), a row all below -max/4 and an
# ordinary row; the loss is that of the logits clamped to +-max/4, its gradient 0 beyond them
_B32 = float(np.finfo(np.float32).max) / 4
BEYOND = np.array([[np.inf, 0.0, -np.inf, 1.0],
                   [2e38, 1e38, 0.0, -3e38],
                   [-1e38, -2e38, -np.inf, -3e38],
                   [0.5, -0.3, 2.0, 0.0],
                   [1e4, 9999.0, 0.0, -1e4]], np.float32)  # log s is kept apart from the max


def _beyond_reference(ls, y):  # type: ignore[no-untyped-def]
    """The float64 loss per row of BEYOND clamped to +-max/4, and the gradient of its sum."""
    c = np.clip(BEYOND.astype(np.float64), -_B32, _B32)
    lsm = c - c.max(-1, keepdims=True)
    lsm = lsm - np.log(np.exp(lsm).sum(-1, keepdims=True))
    want = -((1 - ls) * lsm[np.arange(5), y] + ls * lsm.mean(-1))
    soft = (1 - ls) * np.eye(4)[y] + ls / 4
    return want, (np.exp(lsm) - soft) * (np.abs(BEYOND) <= _B32)


def _assert_beyond(b, loss, t, want, grad):  # type: ignore[no-untyped-def]
    """``loss(BEYOND, t)`` on backend ``b``: finite, ``want`` per row and the gradient of its
    sum ``grad``, to float32's tolerance."""
    v, g = b.value_and_grad(loss, b.asarray(BEYOND), b.asarray(t))
    rows = b.to_numpy(loss(b.asarray(BEYOND), b.asarray(t), "none"))
    tol = tolerance("float32")
    assert np.isfinite(v) and np.all(np.isfinite(g))
    np.testing.assert_allclose(rows, want, rtol=tol["rtol"], atol=tol["rtol"])
    np.testing.assert_allclose(g, grad, atol=tol["rtol"])


LABEL_SETS = {"a": [0, 1, 2, 3, 1], "b": [2, 3, 0, 1, 0]}


@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("labels", LABEL_SETS.values(), ids=LABEL_SETS.keys())
def test_sparse_logits_beyond_the_clamp(ad_backend, ls, labels):
    """The composition (a mask of all True keeps torch off its kernel) against the float64
    loss of the clamped logits: the row maximum is clamped after it is taken, the elements
    inside the exp's pass (as min(x - m, 0), the row all below -max/4 apart), the label's
    logit after the pick."""
    b = ad_backend
    y = np.array(labels)
    want, grad = _beyond_reference(ls, y)
    def loss(x, t, reduction="sum"):  # type: ignore[no-untyped-def]
        return U.sparse_categorical_cross_entropy_with_logits(
            x, t, label_smoothing=ls, reduction=reduction, where=b.asarray(np.ones(5, bool)))

    _assert_beyond(b, loss, y, want, grad)


def _traced_rows_and_grad(backend, make, t):  # type: ignore[no-untyped-def]
    """BEYOND's loss per row and the gradient of its sum, traced: jax.jit,
    tf.function(jit_compile=True) or torch.compile (aot_eager) on the CPU.  ``make(ones)``
    gives the loss ``(logits, targets, reduction)``, ``ones`` four 1s in the framework."""
    if backend == "jax":
        jax = pytest.importorskip("jax")
        f = make(jax.numpy.ones(4))
        rows = jax.jit(lambda a, y: f(a, y, "none"))(BEYOND, t)
        return rows, jax.jit(jax.grad(lambda a, y: f(a, y, "sum")))(BEYOND, t)
    if backend == "tensorflow":
        tf = pytest.importorskip("tensorflow")
        f = make(tf.ones(4))

        @tf.function(jit_compile=True)
        def value_grad(a, y):  # type: ignore[no-untyped-def]
            with tf.GradientTape() as tape:
                tape.watch(a)
                r = f(a, y, "none")
                total = tf.reduce_sum(r)
            return r, tape.gradient(total, a)

        return value_grad(tf.constant(BEYOND), tf.constant(t))
    torch = pytest.importorskip("torch")
    U.backends.preload()
    f = make(torch.ones(4))
    c = torch.compile(lambda a, y: f(a, y, "none"), backend="aot_eager", fullgraph=True)
    a = torch.tensor(BEYOND, requires_grad=True)
    r = c(a, torch.tensor(t))
    r.sum().backward()
    return r.detach(), a.grad


@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("backend", ["jax", "tensorflow", "torch"])
def test_sparse_logits_beyond_the_clamp_traced(backend, ls):
    """The same composition traced: jax.jit, tf.function(jit_compile=True) and
    torch.compile on the CPU all take it (no kernel); values per row and the gradient."""
    y = np.array(LABEL_SETS["b"])
    want, grad = _beyond_reference(ls, y)

    def make(ones):  # type: ignore[no-untyped-def]
        return lambda a, t, reduction: U.sparse_categorical_cross_entropy_with_logits(
            a, t, label_smoothing=ls, reduction=reduction)

    rows, g = _traced_rows_and_grad(backend, make, y)
    tol = tolerance("float32")
    np.testing.assert_allclose(np.asarray(rows), want, rtol=tol["rtol"], atol=tol["rtol"])
    np.testing.assert_allclose(np.asarray(g), grad, atol=tol["rtol"])


# soft targets for BEYOND, with zeros where a logit is -inf (0 * -inf must not make a NaN)
SOFT_BEYOND = np.array([[0.5, 0.5, 0.0, 0.0],
                        [0.1, 0.2, 0.3, 0.4],
                        [0.25, 0.25, 0.25, 0.25],
                        [0.0, 1.0, 0.0, 0.0],
                        [0.0, 0.7, 0.3, 0.0]], np.float32)


def _beyond_soft_reference(ls):  # type: ignore[no-untyped-def]
    """The float64 soft-target loss per row of BEYOND clamped to +-max/4, and the gradient
    of its sum."""
    c = np.clip(BEYOND.astype(np.float64), -_B32, _B32)
    lsm = c - c.max(-1, keepdims=True)
    lsm = lsm - np.log(np.exp(lsm).sum(-1, keepdims=True))
    soft = SOFT_BEYOND.astype(np.float64) * (1 - ls) + ls / 4
    grad = np.exp(lsm) * soft.sum(-1, keepdims=True) - soft
    return -(soft * lsm).sum(-1), grad * (np.abs(BEYOND) <= _B32)


def _categorical_beyond(kind, ls, ones, where=None):  # type: ignore[no-untyped-def]
    """The loss of ``kind`` whose per-row value is the soft-target reference: categorical CE
    with logits, poly1 with epsilon 0, sparse CE (targets: labels) with class weights
    ``ones`` (four 1s in the logits' framework: its weighted composition)."""
    def loss(x, t, reduction="sum"):  # type: ignore[no-untyped-def]
        if kind == "categorical":
            return U.categorical_cross_entropy_with_logits(
                x, t, label_smoothing=ls, reduction=reduction, where=where)
        if kind == "poly1":
            return U.poly1_cross_entropy_with_logits(x, t, epsilon=0.0, reduction=reduction,
                                                     where=where)
        return U.sparse_categorical_cross_entropy_with_logits(
            x, t, label_smoothing=ls, reduction=reduction, where=where,
            class_weights=ones)
    return loss


CATEGORICAL_KINDS = [("categorical", 0.0), ("categorical", 0.1), ("poly1", 0.0),
                     ("sparse", 0.0), ("sparse", 0.1)]


def _categorical_inputs(kind):  # type: ignore[no-untyped-def]
    y = np.array(LABEL_SETS["b"])
    return (y, np.eye(4, dtype=np.float32)[y]) if kind == "sparse" else (SOFT_BEYOND, None)


@pytest.mark.parametrize("kind, ls", CATEGORICAL_KINDS)
def test_categorical_logits_beyond_the_clamp(ad_backend, kind, ls):
    """The log-softmax of the clamped logits (categorical CE, poly1, weighted sparse CE):
    values per row and the gradient against the float64 loss of the clamped logits, on every
    backend (a mask of all True keeps torch and TensorFlow off their kernels)."""
    b = ad_backend
    t, onehot = _categorical_inputs(kind)
    want, grad = _beyond_soft_reference(ls) if onehot is None else _beyond_reference(ls, t)
    ones = b.asarray(np.ones(4, np.float32))
    loss = _categorical_beyond(kind, ls, ones, where=b.asarray(np.ones(5, bool)))
    _assert_beyond(b, loss, t, want, grad)


@pytest.mark.parametrize("kind, ls", CATEGORICAL_KINDS)
@pytest.mark.parametrize("backend", ["jax", "tensorflow", "torch"])
def test_categorical_logits_beyond_the_clamp_traced(backend, kind, ls):
    """The same traced: jax.jit (forward in one fused pass, its derivative the clipped
    composition's), tf.function(jit_compile=True) and torch.compile on the CPU (aot_eager);
    values per row and the gradient."""
    t, onehot = _categorical_inputs(kind)
    want, grad = _beyond_soft_reference(ls) if onehot is None else _beyond_reference(ls, t)
    rows, g = _traced_rows_and_grad(backend, lambda ones: _categorical_beyond(kind, ls, ones), t)
    tol = tolerance("float32")
    np.testing.assert_allclose(np.asarray(rows), want, rtol=tol["rtol"], atol=tol["rtol"])
    np.testing.assert_allclose(np.asarray(g), grad, atol=tol["rtol"])


def test_log_softmax_keeps_log_s_apart_from_the_max(xp):
    """Soft-target cross-entropy at logits near 1e4 (the adapters' log-softmax), float32."""
    x = np.array([[1e4, 9999.0, 0.0, -1e4], [-1e4, -9998.0, -1e4, -9999.5]], np.float32)
    t = np.array([[0.0, 1.0, 0.0, 0.0], [0.2, 0.3, 0.0, 0.5]], np.float32)
    z = x.astype(np.float64) - x.max(-1, keepdims=True)
    want = -(t * (z - np.log(np.exp(z).sum(-1, keepdims=True)))).sum(-1)
    out = U.categorical_cross_entropy_with_logits(xp.asarray(x), xp.asarray(t),
                                                  reduction="none")
    assert_close(xp, out, want, "float32")


# -- "weighted_mean" ------------------------------------------------------------------------------
def test_weighted_mean_zero_weight_sum_is_zero(ad_backend):
    b = ad_backend
    p, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    for kw in ({"weights": b.asarray(np.zeros(4))},
               {"weights": b.asarray(np.ones(4)), "where": b.asarray(np.zeros((3, 4), bool))}):
        v, g = b.value_and_grad(lambda a, c, kw=kw: U.mse(a, c, reduction="weighted_mean",
                                                          **kw), b.asarray(p), b.asarray(t))
        assert v == 0 and np.all(g == 0)
    # labels whose class weight is 0 only
    x, y = rng.normal(size=(3, 4)), np.array([1, 1, 1])
    v, g = b.value_and_grad(
        lambda a, c: U.sparse_categorical_cross_entropy_with_logits(
            a, c, class_weights=b.asarray(np.array([1.0, 0.0, 1.0, 1.0])),
            reduction="weighted_mean"), b.asarray(x), b.asarray(y))
    assert v == 0 and np.all(g == 0)


def test_weighted_mean_of_weights_summing_below_zero(xp):
    """Only a weight sum of exactly 0 gives 0 (Keras's divide_no_nan): weights summing below 0
    still divide (mutant: ``wsum != 0`` as ``wsum > 0`` made such a mean 0)."""
    p, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    w = np.array([-1.0, -0.5, 0.25, -2.0])
    out = U.mse(xp.asarray(p), xp.asarray(t), weights=xp.asarray(w), reduction="weighted_mean")
    wf = np.broadcast_to(w, p.shape)
    assert_close(xp, out, (wf * (p - t) ** 2).sum() / wf.sum(), "float64")


def test_weighted_mean_without_weights_is_mean(xp):
    p, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    assert_close(xp, U.mae(xp.asarray(p), xp.asarray(t), reduction="weighted_mean"),
                 np.abs(p - t).mean(), "float64")


def test_class_weights_with_ignore_index(xp):
    """ignore_index leaves a label out of the sum and of the divisor (torch's rule)."""
    x, y = rng.normal(size=(5, 3)), np.array([0, 2, -1, 1, 2])
    cw = np.array([1.0, 2.0, 0.5])
    out = U.sparse_categorical_cross_entropy_with_logits(
        xp.asarray(x), xp.asarray(y), class_weights=xp.asarray(cw), ignore_index=-1,
        reduction="weighted_mean")
    keep = y != -1
    loss, wy = ref.sparse_weighted(x[keep], y[keep], cw)
    assert_close(xp, out, loss.sum() / wy.sum(), "float64")


# -- anchor focal loss per image ----------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.25, np.array([0.1, 0.5, 0.9])])
def test_anchor_focal_normalize_image(xp, alpha):
    x = rng.normal(size=(2, 3, 7, 3)) * 2              # two leading "image" axes
    t = (rng.random((2, 3, 7, 3)) > 0.7) * 1.0
    state = rng.integers(-1, 2, size=(2, 3, 7))
    state[0, 0] = 0                                    # an image without positives: max(1, 0)
    a = xp.asarray(alpha) if isinstance(alpha, np.ndarray) else alpha
    out = U.anchor_focal_loss_with_logits(xp.asarray(x), xp.asarray(t), xp.asarray(state),
                                          alpha=a, normalize="image")
    assert_close(xp, out, ref.anchor_focal_image(x, t, state, alpha), "float64", scale=5)


def test_anchor_focal_one_image_is_batch(xp):
    x, t = rng.normal(size=(7, 3)), (rng.random((7, 3)) > 0.7) * 1.0
    state = rng.integers(-1, 2, size=(7,))
    args = [xp.asarray(a) for a in (x, t, state)]
    assert_close(xp, U.anchor_focal_loss_with_logits(*args, normalize="image"),
                 xp.to_numpy(U.anchor_focal_loss_with_logits(*args)), "float64")


def test_anchor_focal_normalize_errors():
    x, t, s = np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), np.zeros((1, 2))
    with pytest.raises(ValueError, match="normalizer.*normalize='batch'"):
        U.anchor_focal_loss_with_logits(x, t, s, normalize="image", normalizer=4.0)
    with pytest.raises(ValueError, match="normalize='images' is not supported"):
        U.anchor_focal_loss(x + 0.5, t, s, normalize="images")


# -- distributions ------------------------------------------------------------------------------
def test_kl_batchmean_with_mask_and_3d(xp):
    logp = np.log(rng.dirichlet(np.ones(4), size=(3, 2)))
    t = rng.dirichlet(np.ones(4), size=(3, 2))
    terms = ref.kl(logp, t)
    out = U.kl_divergence(xp.asarray(logp), xp.asarray(t), reduction="batchmean")
    assert_close(xp, out, terms.sum() / 3, "float64")
    rows = np.array([True, False, True])
    out = U.kl_divergence(xp.asarray(logp), xp.asarray(t), reduction="batchmean",
                          where=xp.asarray(rows[:, None]))
    assert_close(xp, out, terms[rows].sum() / 2, "float64")


def test_kl_batchmean_of_rows_without_elements(xp):
    # the kept-row count took a max over the zero-size axis: an error on NumPy, torch and JAX
    empty = np.zeros((3, 0))
    for where in (None, xp.asarray(np.ones((3, 0), bool))):
        out = U.kl_divergence(xp.asarray(empty), xp.asarray(empty), axis=None,
                              reduction="batchmean", where=where)
        assert_close(xp, out, 0.0, "float64")
    logp = np.log(np.full((2, 1, 3), 1 / 3))
    t = np.array([[[0.2, 0.3, 0.5]], [[0.6, 0.2, 0.2]]])
    terms = ref.kl(logp, t)
    out = U.kl_divergence(xp.asarray(logp), xp.asarray(t), axis=None, reduction="batchmean",
                          where=xp.asarray(np.array([[[True, True, False]], [[False] * 3]])))
    assert_close(xp, out, terms[0, 0, :2].sum() / 1, "float64")


def test_kl_log_target_of_minus_inf_is_a_zero_target(ad_backend):
    """A log-target of -inf is t = 0: its term is 0 with gradient 0, as in the probability
    form (exp(-inf) * (-inf - x) had given NaN, as torch's and optax's do)."""
    b = ad_backend
    logp = np.log(np.array([[0.2, 0.3, 0.5], [0.1, 0.6, 0.3]]))
    t = np.array([[0.0, 0.4, 0.6], [0.5, 0.5, 0.0]])
    logp[1, 2] = -np.inf  # (with its target 0 too)
    with np.errstate(divide="ignore"):
        log_t = np.log(t)
    v, g = b.value_and_grad(lambda a, c: U.kl_divergence(a, c, log_target=True, reduction="sum"),
                            b.asarray(logp), b.asarray(log_t))
    kept = t > 0
    terms = np.where(kept, t * (np.log(np.where(kept, t, 1.0)) - np.where(kept, logp, 0.0)), 0.0)
    np.testing.assert_allclose(v, terms.sum(), rtol=1e-13)
    np.testing.assert_array_equal(g, -t)
    v_probabilities = U.kl_divergence(b.asarray(logp), b.asarray(t), reduction="sum")
    np.testing.assert_allclose(v, b.to_numpy(v_probabilities), rtol=1e-13)


def test_kl_zero_target_with_minus_inf_log_prediction(ad_backend):
    """0 log 0 and 0 * log 0: both 0, gradient 0 (torch's kl_div gives NaN there)."""
    b = ad_backend
    logp = np.array([[-np.inf, np.log(0.5), np.log(0.5)]])
    t = np.array([[0.0, 0.5, 0.5]])
    v, g = b.value_and_grad(lambda a, c: U.kl_divergence(a, c), b.asarray(logp), b.asarray(t))
    assert v == 0 and np.all(np.isfinite(g))
    np.testing.assert_array_equal(g, -t)


def test_poisson_and_gaussian_edges(ad_backend):
    b = ad_backend
    # rate 0 with count 0 (log_input=False): 0 - 0 * log(eps) = 0, finite gradient
    v, g = b.value_and_grad(lambda a, k: U.poisson_nll(a, k, log_input=False, full=True),
                            b.asarray(np.array([0.0, 2.0])), b.asarray(np.array([0.0, 1.0])))
    assert np.isfinite(v) and np.all(np.isfinite(g))
    # a variance of 0 is floored at eps
    v, g = b.value_and_grad(lambda a, c: U.gaussian_nll(a, c, b.asarray(np.zeros(2))),
                            b.asarray(np.array([0.0, 1.0])), b.asarray(np.array([0.0, 1.0])))
    np.testing.assert_allclose(v, 0.5 * np.log(1e-6), rtol=1e-12)
    assert np.all(g == 0)


# -- margins and similarity ----------------------------------------------------------------------
def test_hinge_label_conversion_is_keras_s(xp):
    p = np.array([0.5, -0.5, 2.0])
    # all ones: "binary", so 2t - 1 = 1, all positive
    assert_close(xp, U.hinge(xp.asarray(p), xp.asarray(np.ones(3)), reduction="none"),
                 [0.5, 1.5, 0.0], "float64")
    # {-1, 0, 1}: not binary, used as given (0 gives a margin of 1)
    assert_close(xp, U.hinge(xp.asarray(p), xp.asarray(np.array([-1.0, 0.0, 1.0])),
                             reduction="none"), [1.5, 1.0, 0.0], "float64")
    # a masked label does not take part in the test: {0, 1} still maps to {-1, 1}
    out = U.hinge(xp.asarray(p), xp.asarray(np.array([0.0, 1.0, 7.0])),
                  where=xp.asarray(np.array([True, True, False])), reduction="none")
    assert_close(xp, out, [1.5, 1.5, 0.0], "float64")


def test_margin_kinks_have_zero_gradient(ad_backend):
    b = ad_backend
    for fn in (U.hinge, U.squared_hinge):
        _, g = b.value_and_grad(lambda a, t, fn=fn: fn(a, t, reduction="sum"),
                                b.asarray(np.array([1.0, -1.0])),
                                b.asarray(np.array([1.0, -1.0])))
        np.testing.assert_array_equal(g, [0.0, 0.0])
    _, g = b.value_and_grad(lambda a, t: U.quantile_loss(a, t, quantiles=0.3, reduction="sum"),
                            b.asarray(np.array([1.0, 2.0])), b.asarray(np.array([1.0, 2.0])))
    np.testing.assert_array_equal(g, [0.0, 0.0])


def test_class_axis_1_and_quantile_target_layouts(xp):
    """The focal loss along axis 1 is the loss of the moved axis; several quantiles take the
    targets with or without the quantile axis."""
    x, y = rng.normal(size=(2, 4, 3)), rng.integers(0, 4, size=(2, 3))
    out = U.sparse_categorical_focal_loss_with_logits(xp.asarray(x), xp.asarray(y), axis=1,
                                                      reduction="none")
    want = ref.categorical_focal_logits(np.moveaxis(x, 1, -1), ref.one_hot(y, 4))
    assert_close(xp, out, want, "float64")
    p, t, q = rng.normal(size=(4, 3)), rng.normal(size=(4,)), np.array([0.2, 0.5, 0.8])
    a = U.quantile_loss(xp.asarray(p), xp.asarray(t), quantiles=xp.asarray(q),
                        reduction="none")
    b = U.quantile_loss(xp.asarray(p), xp.asarray(np.repeat(t[:, None], 3, 1)),
                        quantiles=xp.asarray(q), reduction="none")
    assert_close(xp, a, ref.quantile(p, t[:, None], q)[0], "float64")
    assert_close(xp, b, xp.to_numpy(a), "float64")


def test_quantile_half_is_half_mae(xp):
    p, t = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    assert_close(xp, U.quantile_loss(xp.asarray(p), xp.asarray(t)),
                 0.5 * np.abs(p - t).mean(), "float64")


def test_cosine_zero_vector(ad_backend):
    b = ad_backend
    v, g = b.value_and_grad(lambda a, c: U.cosine_similarity_loss(a, c),
                            b.asarray(np.zeros((1, 3))), b.asarray(np.array([[1.0, 2.0, 2.0]])))
    assert v == 0 and np.all(np.isfinite(g))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cosine_of_large_vectors(ad_backend, dtype):
    """Vectors whose squared norm overflows (float32: beyond about 1.8e19) have a finite
    similarity and gradient; the squared norms had made inf / inf = NaN."""
    b = ad_backend
    big = {"float32": 1e30, "float64": 1e300}[dtype]
    u = np.array([[1.0, 1.0, 0.0], [3.0, -4.0, 1e-3], [2.0, 0.0, 1.0]])
    w = np.array([[1.0, 0.0, 0.0], [1.0, 2.0, 2.0], [0.5, 0.25, 2.0]])
    p, t = u * big, w * np.array([[big], [1.0], [1.0]])
    v, g = b.value_and_grad(lambda a, c: U.cosine_similarity_loss(a, c, reduction="sum"),
                            b.asarray(p.astype(dtype)), b.asarray(t.astype(dtype)))
    # float64 reference from the formula on u = p / big and w (the similarity does not
    # depend on the vectors' sizes; its gradient with respect to p is that to u over big)
    nu, nw = np.linalg.norm(u, axis=1, keepdims=True), np.linalg.norm(w, axis=1, keepdims=True)
    dot = (u * w).sum(1, keepdims=True)
    want_v = -(dot / (nu * nw)).sum()
    want_g = -(w / (nu * nw) - dot * u / (nu ** 3 * nw)) / big
    tol = 256 * np.finfo(dtype).eps
    assert np.isfinite(v) and np.all(np.isfinite(g)), (v, g)
    np.testing.assert_allclose(v, want_v, rtol=tol)
    np.testing.assert_allclose(g, want_g, rtol=tol, atol=tol * np.abs(want_g).max())


def test_msle_mape_floors(ad_backend):
    b = ad_backend
    v, g = b.value_and_grad(lambda a, c: U.msle(a, c, reduction="sum"),
                            b.asarray(np.array([-3.0, 1.0])), b.asarray(np.array([0.0, 1.0])))
    assert np.isfinite(v) and g[0] == 0
    v, g = b.value_and_grad(lambda a, c: U.mape(a, c, reduction="sum"),
                            b.asarray(np.array([1.0, 1.0])), b.asarray(np.array([0.0, 1.0])))
    np.testing.assert_allclose(v, 100 / 1e-7, rtol=1e-12)
    assert np.all(np.isfinite(g))


# -- segmentation ---------------------------------------------------------------------------------
def test_dice_empty_and_masked(xp):
    z = np.zeros((2, 3, 3))
    # an empty prediction of an empty target: Dice 1 with smoothing
    assert_close(xp, U.dice_loss(xp.asarray(z), xp.asarray(z), axis=(1, 2), smooth=1.0,
                                 eps=0.0), 0.0, "float64")
    p, t = rng.uniform(0, 1, (2, 3, 3)), (rng.random((2, 3, 3)) > 0.5) * 1.0
    # the second image fully masked: only the first one's coefficient is averaged
    m = np.zeros((2, 3, 3), bool)
    m[0, :2] = True
    out = U.dice_loss(xp.asarray(p), xp.asarray(t), axis=(1, 2), where=xp.asarray(m))
    assert_close(xp, out, ref.dice(p[:1, :2], t[:1, :2], (1, 2))[0], "float64")


# -- boxes ----------------------------------------------------------------------------------------
DEGENERATE = np.array([[1.0, 1.0, 1.0, 3.0],     # zero width
                       [1.0, 1.0, 3.0, 1.0],     # zero height
                       [2.0, 2.0, 2.0, 2.0],     # a point
                       [0.0, 0.0, 2.0, 2.0],     # identical to its target
                       [0.0, 0.0, 0.0, 0.0],     # the empty box at 0, and its target too
                       [1.0, 1.0, 2.0, 2.0]])    # a box against a point target
TARGETS = np.array([[0.0, 0.0, 2.0, 2.0],
                    [0.0, 0.0, 2.0, 2.0],
                    [2.0, 2.0, 2.0, 2.0],
                    [0.0, 0.0, 2.0, 2.0],
                    [0.0, 0.0, 0.0, 0.0],
                    [3.0, 3.0, 3.0, 3.0]])


@pytest.mark.parametrize("fn", [U.giou_loss, U.diou_loss, U.ciou_loss])
def test_degenerate_boxes_are_finite(ad_backend, fn):
    b = ad_backend
    for dtype in ("float32", "float64"):
        v, g = b.value_and_grad(lambda a, c: fn(a, c, reduction="sum"),
                                b.asarray(DEGENERATE.astype(dtype)),
                                b.asarray(TARGETS.astype(dtype)))
        assert np.isfinite(v) and np.all(np.isfinite(g)), (dtype, g)
    out = b.to_numpy(fn(b.asarray(DEGENERATE), b.asarray(TARGETS), reduction="none"))
    assert abs(out[3]) < 1e-6                   # a box equal to its target costs nothing


def test_boxes_against_reference_on_degenerate_values(xp):
    """Where torchvision's formulas are defined (no 0/0 aspect ratio) the values agree."""
    giou, diou, _ = ref.box_losses(DEGENERATE, TARGETS)
    assert_close(xp, U.giou_loss(xp.asarray(DEGENERATE), xp.asarray(TARGETS),
                                 reduction="none"), giou, "float64")
    assert_close(xp, U.diou_loss(xp.asarray(DEGENERATE), xp.asarray(TARGETS),
                                 reduction="none"), diou, "float64")


# -- errors ---------------------------------------------------------------------------------------
X, Y, OH = rng.normal(size=(3, 4)), np.array([0, 1, 3]), np.eye(4)[[0, 1, 3]]


@pytest.mark.parametrize("call, error, match", [
    (lambda: U.sparse_categorical_cross_entropy_with_logits(X, Y, class_weights=np.ones(3)),
     ValueError, r"`class_weights` has shape \(3,\).*one entry per class"),
    (lambda: U.categorical_cross_entropy(np.abs(X), OH, class_weights=-np.ones(4)),
     ValueError, "`class_weights` holds negative"),
    (lambda: U.binary_cross_entropy_with_logits(X, OH, label_smoothing=1.5),
     ValueError, "label_smoothing"),
    (lambda: U.binary_focal_loss_with_logits(X, OH, alpha=np.array([0.1, 0.2, 1.3, 0.4])),
     ValueError, "`alpha` holds values outside"),
    (lambda: U.binary_focal_loss_with_logits(X, OH, alpha=np.ones(3) / 2),
     ValueError, "`alpha` has shape"),
    (lambda: U.categorical_focal_loss_with_logits(X, OH, alpha=np.ones((2, 4)) / 2),
     ValueError, "`alpha` has shape"),
    (lambda: U.categorical_focal_loss_with_logits(X, OH, gamma=-1.0), ValueError, "gamma"),
    (lambda: U.poly1_cross_entropy_with_logits(X, OH, epsilon=float("nan")), ValueError,
     "epsilon"),
    (lambda: U.mse(X, X, reduction="batchmean"), ValueError, "not supported"),
    (lambda: U.kl_divergence(X, -np.abs(X)), ValueError, "negative"),
    (lambda: U.poisson_nll(-np.abs(X), X, log_input=False), ValueError, "negative rates"),
    (lambda: U.gaussian_nll(X, X, -np.ones(4)), ValueError, "`variance` holds negative"),
    (lambda: U.gaussian_nll(X, X, np.ones(5)), ValueError, "`variance` has shape"),
    (lambda: U.quantile_loss(X, Y, quantiles=[0.1, 0.9]), ValueError, "`quantiles` has shape"),
    (lambda: U.quantile_loss(X, X, quantiles=1.2), ValueError, "quantiles"),
    (lambda: U.dice_loss(X, X, smooth=0.0, eps=0.0), ValueError, "both 0"),
    (lambda: U.dice_loss(X, X, axis=(0, 5)), ValueError, "out of range"),
    (lambda: U.tversky_loss(X, X, alpha=-0.1), ValueError, "alpha"),
    (lambda: U.dice_loss(X, X, axis=1, weights=np.ones(4)), ValueError,
     "`weights` has shape"),
    (lambda: U.giou_loss(np.zeros((3, 5)), np.zeros((3, 5))), ValueError, r"\(\.\.\., 4\)"),
    (lambda: U.cosine_similarity_loss(X, X, eps=0.0), ValueError, "eps"),
])
def test_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# -- the reduced axis of list predictions and of 0-d ones -------------------------------------
#: losses that reduce over an axis of their predictions (classes, a vector), with targets
AXIS_LOSSES = {
    "categorical_cross_entropy": (U.categorical_cross_entropy, "soft"),
    "categorical_cross_entropy_with_logits": (U.categorical_cross_entropy_with_logits, "soft"),
    "sparse_categorical_cross_entropy": (U.sparse_categorical_cross_entropy, "labels"),
    "sparse_categorical_cross_entropy_with_logits": (
        U.sparse_categorical_cross_entropy_with_logits, "labels"),
    "poly1_cross_entropy_with_logits": (U.poly1_cross_entropy_with_logits, "soft"),
    "categorical_focal_loss": (U.categorical_focal_loss, "soft"),
    "categorical_focal_loss_with_logits": (U.categorical_focal_loss_with_logits, "soft"),
    "sparse_categorical_focal_loss": (U.sparse_categorical_focal_loss, "labels"),
    "sparse_categorical_focal_loss_with_logits": (U.sparse_categorical_focal_loss_with_logits,
                                                  "labels"),
    "kl_divergence": (U.kl_divergence, "soft"),
    "categorical_hinge": (U.categorical_hinge, "soft"),
    "cosine_similarity_loss": (U.cosine_similarity_loss, "soft"),
}


def _axis_inputs(kind):  # type: ignore[no-untyped-def]
    p = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    if kind == "labels":
        return p, np.array([1, 0])
    return p, np.array([[0.0, 1.0, 0.0], [0.5, 0.25, 0.25]])


@pytest.mark.parametrize("name", sorted(AXIS_LOSSES))
def test_list_predictions_reduce_over_their_last_axis(xp, name):
    """Predictions given as nested Python lists (next to a framework's targets, or alone) have
    the shape of the array they stand for: the loss reduces over their last axis, as over
    an array's (the class axis had been taken as 0, a silently different number)."""
    fn, kind = AXIS_LOSSES[name]
    p, t = _axis_inputs(kind)
    got = fn(p.tolist(), xp.asarray(t))  # (in the framework's default float dtype)
    dtype = str(np.dtype(xp.to_numpy(got).dtype))
    want = fn(xp.asarray(p, dtype), xp.asarray(t, None if kind == "labels" else dtype))
    assert_close(xp, got, xp.to_numpy(want), dtype)
    np.testing.assert_allclose(np.asarray(fn(p.tolist(), t.tolist())),
                               np.asarray(fn(p, t)), rtol=1e-12)


@pytest.mark.parametrize("name", sorted(AXIS_LOSSES))
def test_zero_d_predictions_of_an_axis_loss_are_refused(xp, name):
    """A 0-d prediction has no axis to reduce over: unilosses's error on every backend (NumPy
    and torch had reduced over "axis 0" of it, JAX and TensorFlow raised their own errors)."""
    fn, kind = AXIS_LOSSES[name]
    t = xp.asarray(np.array(1) if kind == "labels" else np.array(1.0))
    with pytest.raises(ValueError, match=r"is 0-d, but this loss reduces over its `axis`=-1"):
        fn(xp.asarray(np.array(0.3)), t)


def test_categorical_hinge_without_classes_is_zero(ad_backend):
    """(N, 0): no wrong class's score (the maximum of none is -inf), a loss of 0 and a zero
    gradient on every backend (TensorFlow's; the others had refused a maximum over nothing)."""
    b = ad_backend
    x = np.zeros((3, 0))
    v, g = b.value_and_grad(lambda p, t: U.categorical_hinge(p, t, reduction="sum"),
                            b.asarray(x), b.asarray(x))
    assert v == 0.0 and g.shape == (3, 0)
    assert_close(b, U.categorical_hinge(b.asarray(x), b.asarray(x), reduction="none"),
                 np.zeros(3), "float64")


def test_list_arguments_whose_shape_is_read_before_conversion():
    """Boxes, in_top_k's scores, gaussian_nll's per-row variance, the anchor focal loss's
    predictions and quantile targets as Python lists: shapes read from the lists (they had
    been refused as 0-d, or taken per element)."""
    boxes, target = np.array([[0.0, 0.0, 2.0, 2.0]]), np.array([[1.0, 1.0, 3.0, 3.0]])
    assert U.giou_loss(boxes.tolist(), target.tolist()) == U.giou_loss(boxes, target)
    s, y = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]]), np.array([1, 2])
    np.testing.assert_array_equal(U.in_top_k(s.tolist(), y.tolist(), k=1), [True, False])
    p, t, v = np.array([[1.0, 2.0], [0.0, 1.0]]), np.array([[0.5, 2.0], [1.0, 1.0]]), [2.0, 0.5]
    assert U.gaussian_nll(p.tolist(), t.tolist(), v) == U.gaussian_nll(p, t, np.array(v))
    state = np.array([[1, 0]])
    x, lab = np.array([[[0.3, -1.0], [2.0, 0.5]]]), np.array([[[1.0, 0.0], [0.0, 0.0]]])
    assert (U.anchor_focal_loss_with_logits(x.tolist(), lab, state)
            == U.anchor_focal_loss_with_logits(x, lab, state))
    q = np.array([0.1, 0.9])
    assert (U.quantile_loss(p.tolist(), t[:, 0].tolist(), quantiles=q)
            == U.quantile_loss(p, t[:, 0], quantiles=q))
