"""unilosses against each framework's own losses: torch.nn.functional, torchvision's focal loss
formula and optax, values and gradients on the same inputs; then the unilosses losses on JAX
against the same losses on PyTorch, at ties and extreme inputs.

The peers are independent implementations, so agreement within the dtype's tolerance is the
test.  Where a peer follows another convention the inputs are restricted to where both are
defined, and the comment at the case says why.
"""

from __future__ import annotations

import numpy as np
import pytest

import reference as ref
import unilosses
from conftest import Backend, assert_close, installed, tolerance

try:
    import torch
    import torch.nn.functional as F
except ImportError:  # pragma: no cover - the nox session without torch
    torch = F = None
try:
    import jax
    import jax.numpy as jnp
    import optax
except ImportError:  # pragma: no cover - the nox sessions without jax/optax
    jax = jnp = optax = None

needs_torch = pytest.mark.skipif(not installed("torch"), reason="torch is not installed")
needs_optax = pytest.mark.skipif(optax is None, reason="jax/optax is not installed")
needs_both = pytest.mark.skipif(not (installed("torch") and installed("jax")),
                                reason="needs torch and jax")

DTYPES = ("float32", "float64")
REDUCTIONS = ("mean", "sum", "none")


def _rng(*key: object) -> np.random.Generator:
    # one stream per input set, so adding a case never changes the inputs of another; not
    # hash(), which is salted per process: failures must reproduce
    return np.random.default_rng(list(repr(key).encode()))


# -- comparison helpers -------------------------------------------------------------------------
def _cotangent(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    # a non-constant cotangent for "none", so every element's derivative is checked on its own
    if shape == ():
        return np.asarray(1.0, dtype)
    return np.random.default_rng(7).normal(size=shape).astype(dtype)


def check_torch(ours, peer, x: np.ndarray, rest: tuple, dtype: str) -> None:  # type: ignore[no-untyped-def]
    """Value and vector-Jacobian product w.r.t. ``x`` of ``ours`` and ``peer``, both torch."""
    b = Backend("torch")
    rest_t = tuple(torch.from_numpy(np.array(r)) for r in rest)
    xo = torch.from_numpy(x.astype(dtype)).requires_grad_(True)
    xq = torch.from_numpy(x.astype(dtype)).requires_grad_(True)
    vo, vq = ours(xo, *rest_t), peer(xq, *rest_t)
    assert_close(b, vo, vq.detach().numpy(), dtype)
    cot = torch.from_numpy(_cotangent(tuple(vq.shape), dtype))
    (go,) = torch.autograd.grad(vo, xo, cot)
    (gq,) = torch.autograd.grad(vq, xq, cot)
    assert_close(b, go, gq.numpy(), dtype)


def check_jax(ours, peer, x: np.ndarray, rest: tuple, dtype: str) -> None:  # type: ignore[no-untyped-def]
    """As :func:`check_torch`, with ``ours`` and ``peer`` both on JAX arrays."""
    b = Backend("jax")
    rest_j = tuple(jnp.asarray(r) for r in rest)
    xj = jnp.asarray(x.astype(dtype))
    vo, vjp_o = jax.vjp(lambda a: ours(a, *rest_j), xj)
    vq, vjp_q = jax.vjp(lambda a: peer(a, *rest_j), xj)
    assert_close(b, vo, np.asarray(vq), dtype)
    cot = jnp.asarray(_cotangent(tuple(vq.shape), dtype))
    (go,), (gq,) = vjp_o(cot), vjp_q(cot)
    assert_close(b, go, np.asarray(gq), dtype)


def _optax_reduce(elementwise, reduction: str):  # type: ignore[no-untyped-def]
    """optax returns the unreduced loss and leaves the reduction to the caller."""
    def fn(*args):  # type: ignore[no-untyped-def]
        v = elementwise(*args)
        return {"none": v, "mean": jnp.mean(v), "sum": jnp.sum(v)}[reduction]
    return fn


# -- inputs -------------------------------------------------------------------------------------
SHAPES = ((7,), (4, 5), (2, 3, 4))


def _regression(shape: tuple[int, ...], tie: float) -> tuple[np.ndarray, np.ndarray]:
    """Errors ~N(0, 2) with exact ties: an error of 0 and errors of exactly +-``tie``."""
    rng = _rng("regression", shape, tie)
    t = np.round(rng.normal(size=shape) * 8) / 4        # multiples of 1/4: p - t is exact
    d = np.round(rng.normal(size=shape) * 8) / 4
    flat = d.reshape(-1)
    flat[0], flat[1], flat[2] = 0.0, tie, -tie
    return t + d, t


def _binary_logits(shape: tuple[int, ...], soft: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng("logits", shape, soft)
    x = rng.normal(size=shape) * 2
    x.reshape(-1)[0] = 0.0                               # the logit-0 tie
    t = rng.random(shape) if soft else (rng.random(shape) > 0.5).astype(np.float64)
    return x, t


# -- torch.nn.functional: regression ------------------------------------------------------------
# (unilosses function, its kwargs, torch's function, torch's kwargs, the tie to plant)
TORCH_REGRESSION = {
    "mse_loss": (unilosses.mse, {}, "mse_loss", {}, 1.0),
    # l1_loss's derivative at zero error is 0 (sign(0)); the planted 0 checks ours is too
    "l1_loss": (unilosses.mae, {}, "l1_loss", {}, 1.0),
    "huber_loss": (unilosses.huber, {}, "huber_loss", {}, 1.0),
    "huber_loss_delta": (unilosses.huber, {"delta": 0.5}, "huber_loss", {"delta": 0.5}, 0.5),
    "smooth_l1_loss": (unilosses.smooth_l1, {}, "smooth_l1_loss", {}, 1.0),
    "smooth_l1_loss_beta": (unilosses.smooth_l1, {"beta": 2.5}, "smooth_l1_loss",
                            {"beta": 2.5}, 2.5),
}


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("case", sorted(TORCH_REGRESSION))
def test_torch_regression(case, shape, reduction, dtype):
    fn, kw, peer_name, peer_kw, tie = TORCH_REGRESSION[case]
    p, t = _regression(shape, tie)
    peer = getattr(F, peer_name)
    check_torch(lambda a, b: fn(a, b, reduction=reduction, **kw),
                lambda a, b: peer(a, b, reduction=reduction, **peer_kw),
                p, (t.astype(dtype),), dtype)


# -- torch.nn.functional: binary cross-entropy --------------------------------------------------
@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_torch_binary_cross_entropy(shape, soft, weighted, reduction, dtype):
    # torch clamps log(p) at -100, unilosses clips p to [1e-7, 1 - 1e-7] (Keras): the two agree
    # only where neither bound acts, so probabilities stay inside [0.02, 0.98] here (the
    # exact 0/1 probabilities are tested across backends below, where both are ours)
    rng = _rng("bce", shape, soft)
    p = rng.uniform(0.02, 0.98, size=shape)
    t = rng.random(shape) if soft else (rng.random(shape) > 0.5).astype(np.float64)
    # torch's `weight` broadcasts against the elementwise loss and its "mean" divides by the
    # element count, not the weights' sum: the same convention as ours
    w = torch.from_numpy(rng.uniform(0.1, 3.0, shape[-1:]).astype(dtype)) if weighted else None
    check_torch(lambda a, b: unilosses.binary_cross_entropy(a, b, weights=w,
                                                            reduction=reduction),
                lambda a, b: F.binary_cross_entropy(a, b, weight=w, reduction=reduction),
                p, (t.astype(dtype),), dtype)


# pos_weight and weights, as numpy arrays or a float, for logits of shape (..., C=4)
BCE_LOGITS_OPTIONS = {
    "plain": (None, None),
    "pos_weight_scalar": (3.0, None),
    "pos_weight_per_class": (np.array([0.5, 1.0, 2.0, 4.0]), None),
    "weights_per_class": (None, np.array([0.25, 1.0, 2.0, 3.0])),
    "weights_elementwise": (None, "full"),
    "both": (np.array([0.5, 1.0, 2.0, 4.0]), np.array([0.25, 1.0, 2.0, 3.0])),
}


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("shape", [(6, 4), (2, 3, 4)], ids=str)
@pytest.mark.parametrize("option", sorted(BCE_LOGITS_OPTIONS))
def test_torch_binary_cross_entropy_with_logits(option, shape, soft, reduction, dtype):
    pos_weight, weights = BCE_LOGITS_OPTIONS[option]
    x, t = _binary_logits(shape, soft)
    if isinstance(weights, str):
        weights = _rng("bce-w", shape).uniform(0.1, 3.0, size=shape)
    w_t = None if weights is None else torch.from_numpy(weights.astype(dtype))
    # torch wants a tensor pos_weight; unilosses takes a float or an array (broadcast over the
    # classes, the last axis, with torch's meaning)
    pw_ours = pos_weight if not isinstance(pos_weight, np.ndarray) else \
        torch.from_numpy(pos_weight.astype(dtype))
    pw_torch = None if pos_weight is None else \
        torch.as_tensor(np.asarray(pos_weight, dtype))
    check_torch(
        lambda a, b: unilosses.binary_cross_entropy_with_logits(
            a, b, pos_weight=pw_ours, weights=w_t, reduction=reduction),
        lambda a, b: F.binary_cross_entropy_with_logits(
            a, b, pos_weight=pw_torch, weight=w_t, reduction=reduction),
        x, (t.astype(dtype),), dtype)


# -- torch.nn.functional: cross_entropy ---------------------------------------------------------
def _class_logits(shape: tuple[int, ...], axis: int, ignore: int | None,
                  ) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng("ce", shape, axis, ignore)
    x = rng.normal(size=shape) * 3
    classes = shape[axis]
    label_shape = shape[:axis] + shape[axis + 1:]
    y = rng.integers(0, classes, size=label_shape)
    if ignore is not None and y.ndim == 0:
        # one label: ignoring it would leave torch's "mean" at 0/0 = nan (ours is 0 by
        # definition, tested elsewhere), so the unbatched case keeps its label
        y = np.asarray((ignore + 1) % classes if y == ignore else y)
    elif ignore is not None:
        flat = y.reshape(-1)
        flat[1] = ignore
        flat[-1] = ignore
    x_rows = np.moveaxis(x, axis, -1).reshape(-1, classes)
    x_rows[0] = 0.0           # a row of equal logits: softmax exactly uniform
    return np.moveaxis(x_rows.reshape(*label_shape, classes), -1, axis), y


# (shape, class axis); torch's class axis is always 1, or 0 for an unbatched (C,) input
CE_LAYOUTS = {"NC": ((8, 5), 1), "NCd": ((3, 5, 4), 1), "C": ((5,), 0)}


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("ignore_index", [None, -100, 2])
@pytest.mark.parametrize("layout", sorted(CE_LAYOUTS))
def test_torch_cross_entropy_class_indices(layout, ignore_index, label_smoothing, reduction,
                                           dtype):
    shape, axis = CE_LAYOUTS[layout]
    x, y = _class_logits(shape, axis, ignore_index)
    kw_torch = {} if ignore_index is None else {"ignore_index": ignore_index}
    check_torch(
        lambda a, b: unilosses.sparse_categorical_cross_entropy_with_logits(
            a, b, axis=axis, ignore_index=ignore_index, label_smoothing=label_smoothing,
            reduction=reduction),
        lambda a, b: F.cross_entropy(a, b, label_smoothing=label_smoothing,
                                     reduction=reduction, **kw_torch),
        x, (y,), dtype)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_cross_entropy_class_weights_as_weights(dtype):
    # torch's per-class `weight` scales each element by weight[label], the same as our
    # elementwise `weights=weight[labels]`.  Only "sum" and "none" share a convention: torch's
    # weighted "mean" divides by the sum of the picked weights, ours by the number of elements.
    x, y = _class_logits((3, 5, 4), 1, None)
    cw = np.array([0.5, 1.0, 2.0, 0.25, 3.0])
    for reduction in ("sum", "none"):
        check_torch(
            lambda a, b, r=reduction: unilosses.sparse_categorical_cross_entropy_with_logits(
                a, b, axis=1, weights=torch.from_numpy(cw.astype(dtype))[b], reduction=r),
            lambda a, b, r=reduction: F.cross_entropy(
                a, b, weight=torch.from_numpy(cw.astype(dtype)), reduction=r),
            x, (y,), dtype)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("layout", sorted(CE_LAYOUTS))
def test_torch_cross_entropy_probabilities(layout, label_smoothing, reduction, dtype):
    shape, axis = CE_LAYOUTS[layout]
    x, _ = _class_logits(shape, axis, None)
    label_shape = shape[:axis] + shape[axis + 1:]
    t = _rng("ce-probs", shape).dirichlet(np.ones(shape[axis]), size=label_shape)
    t = np.moveaxis(t, -1, axis)
    check_torch(
        lambda a, b: unilosses.categorical_cross_entropy_with_logits(
            a, b, axis=axis, label_smoothing=label_smoothing, reduction=reduction),
        lambda a, b: F.cross_entropy(a, b, label_smoothing=label_smoothing,
                                     reduction=reduction),
        x, (t.astype(dtype),), dtype)


# -- torchvision's sigmoid_focal_loss -----------------------------------------------------------
def torchvision_sigmoid_focal_loss(inputs, targets, alpha: float = 0.25, gamma: float = 2,
                                   reduction: str = "none"):  # type: ignore[no-untyped-def]
    """torchvision.ops.focal_loss.sigmoid_focal_loss (torchvision 0.15+), as published.

    torchvision cannot be installed here; this is its formula line for line.  ``alpha < 0``
    turns class balancing off (torchvision's -1, our None).
    """
    p = torch.sigmoid(inputs)
    ce_loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce_loss * ((1 - p_t) ** gamma)
    if alpha >= 0:
        alpha_t = alpha * targets + (1 - alpha) * (1 - targets)
        loss = alpha_t * loss
    if reduction == "mean":
        loss = loss.mean()
    elif reduction == "sum":
        loss = loss.sum()
    return loss


def _focal_inputs(shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    # Hard labels only: for soft labels torchvision's and optax's modulating factor is
    # 1 - p_t = p (1 - t) + (1 - p) t and alpha_t scales the whole cross-entropy, while ours is
    # |t - p| with alpha on each term; the two definitions coincide exactly for t in {0, 1}.
    # Logits stay within +-4: torchvision forms 1 - p_t by subtraction in the input dtype,
    # which beyond that loses more relative accuracy in float32 than the tolerance allows (its
    # rounding, not a difference of definition).  Extremes are tested across backends below.
    x, t = _binary_logits(shape, soft=False)
    return np.clip(x, -4.0, 4.0), t


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [0.25, None])
@pytest.mark.parametrize("shape", [(7,), (2, 3, 4)], ids=str)
def test_torchvision_sigmoid_focal_loss(shape, alpha, gamma, reduction, dtype):
    x, t = _focal_inputs(shape)
    check_torch(
        lambda a, b: unilosses.binary_focal_loss_with_logits(
            a, b, alpha=alpha, gamma=gamma, reduction=reduction),
        lambda a, b: torchvision_sigmoid_focal_loss(
            a, b, alpha=-1.0 if alpha is None else alpha, gamma=gamma, reduction=reduction),
        x, (t.astype(dtype),), dtype)


# -- optax --------------------------------------------------------------------------------------
@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_optax_sigmoid_binary_cross_entropy(shape, soft, reduction, dtype):
    x, t = _binary_logits(shape, soft)
    check_jax(lambda a, b: unilosses.binary_cross_entropy_with_logits(a, b, reduction=reduction),
              _optax_reduce(optax.sigmoid_binary_cross_entropy, reduction),
              x, (t.astype(dtype),), dtype)


@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("layout", [((8, 5), -1), ((3, 5, 4), 1)], ids=["NC", "NCd"])
def test_optax_softmax_cross_entropy(layout, label_smoothing, reduction, dtype):
    shape, axis = layout
    x, y = _class_logits(shape, axis % len(shape), None)
    t = np.moveaxis(np.eye(shape[axis])[y], -1, axis)
    t[(0,) * t.ndim] = 0.3         # not one-hot everywhere: a soft entry (rows need not sum to 1)

    def peer(a, b):  # type: ignore[no-untyped-def]
        # optax.smooth_labels smooths along the last axis, and optax 0.2.3 (the lowest
        # pyproject allows) has no `axis=` on its cross-entropies: the classes are moved last
        b = optax.smooth_labels(jnp.moveaxis(b, axis, -1), label_smoothing)
        return optax.softmax_cross_entropy(jnp.moveaxis(a, axis, -1), b)

    check_jax(lambda a, b: unilosses.categorical_cross_entropy_with_logits(
                  a, b, axis=axis, label_smoothing=label_smoothing, reduction=reduction),
              _optax_reduce(peer, reduction), x, (t.astype(dtype),), dtype)


@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("layout", [((8, 5), -1), ((3, 5, 4), 1)], ids=["NC", "NCd"])
def test_optax_softmax_cross_entropy_with_integer_labels(layout, reduction, dtype):
    shape, axis = layout
    x, y = _class_logits(shape, axis % len(shape), None)
    check_jax(lambda a, b: unilosses.sparse_categorical_cross_entropy_with_logits(
                  a, b, axis=axis, reduction=reduction),
              # (the classes moved last: optax 0.2.3 has no `axis=`)
              _optax_reduce(lambda a, b: optax.softmax_cross_entropy_with_integer_labels(
                  jnp.moveaxis(a, axis, -1), b), reduction),
              x, (y,), dtype)


@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
@pytest.mark.parametrize("alpha", [0.25, None])
def test_optax_sigmoid_focal_loss(alpha, gamma, reduction, dtype):
    x, t = _focal_inputs((4, 5))   # hard labels: see _focal_inputs
    check_jax(lambda a, b: unilosses.binary_focal_loss_with_logits(
                  a, b, alpha=alpha, gamma=gamma, reduction=reduction),
              _optax_reduce(lambda a, b: optax.sigmoid_focal_loss(a, b, alpha=alpha,
                                                                  gamma=gamma), reduction),
              x, (t.astype(dtype),), dtype)


@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("delta", [1.0, 0.5])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_optax_huber_loss(shape, delta, reduction, dtype):
    # optax's derivative at |d| == delta goes through minimum()'s tie rule and still sums to
    # delta * sign(d); the planted ties check that ours agrees there
    p, t = _regression(shape, delta)
    check_jax(lambda a, b: unilosses.huber(a, b, delta=delta, reduction=reduction),
              _optax_reduce(lambda a, b: optax.huber_loss(a, b, delta=delta), reduction),
              p, (t.astype(dtype),), dtype)


@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_optax_log_cosh(shape, reduction, dtype):
    # optax computes logaddexp(d, -d) - log 2, whose absolute error is a few ulps of log 2
    # (relative accuracy is lost for tiny errors); the tolerance's atol covers that, and the
    # errors here (multiples of 1/4) are not tiny
    p, t = _regression(shape, 1.0)
    check_jax(lambda a, b: unilosses.log_cosh(a, b, reduction=reduction),
              _optax_reduce(optax.log_cosh, reduction), p, (t.astype(dtype),), dtype)


# -- unilosses on JAX against unilosses on PyTorch: ties and extremes ---------------------------
def _sum_of(fn, **kw):  # type: ignore[no-untyped-def]
    return lambda a, *rest: fn(a, *rest, reduction="sum", **kw)


# name -> (loss of (x, *rest) returning a scalar, x, rest, expected derivative or None).
# The expected derivatives are written out by hand at the ties (float64), so both backends are
# also held to the right answer, not only to each other.
_D_REG = np.array([0.0, 0.0, 1.0, -1.0, 0.5, 3.0, -2.0, 0.25])
_T_REG = np.array([0.5, -1.25, 0.25, 2.0, -0.5, 1.0, 0.75, 0.0])
_X_BIN = np.array([0.0, 0.0, 1e4, -1e4, 1e4, -1e4, 2.5, -0.5])
_T_BIN = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
_X_CE = np.array([[0.0, 0.0, 0.0], [1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [1.0, 2.0, -1.0]])
_Y_CE = np.array([1, 1, 2, 0])
_P_EXACT = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 0.25, 0.75, 1e-9])
_T_EXACT = np.array([0.0, 1.0, 1.0, 0.0, 0.5, 0.25, 1.0, 1.0])


def _softmax(x):  # type: ignore[no-untyped-def]
    return np.exp(ref.log_softmax(x))


TIES = {
    # zero error: |d|' is 0 on both (jnp.abs' derivative at 0 is 1, so sign(0) must win)
    "mae_zero_error": (_sum_of(unilosses.mae), _T_REG + _D_REG, (_T_REG,), np.sign(_D_REG)),
    # |d| == delta: both branches give delta * sign(d)
    "huber_at_delta": (_sum_of(unilosses.huber), _T_REG + _D_REG, (_T_REG,),
                       np.clip(_D_REG, -1, 1)),
    "huber_delta_half": (_sum_of(unilosses.huber, delta=0.5), _T_REG + _D_REG, (_T_REG,),
                         np.clip(_D_REG, -0.5, 0.5)),
    "smooth_l1_at_beta": (_sum_of(unilosses.smooth_l1, beta=0.5), _T_REG + _D_REG, (_T_REG,),
                          np.clip(_D_REG, -0.5, 0.5) / 0.5),
    "log_cosh": (_sum_of(unilosses.log_cosh), _T_REG + _D_REG, (_T_REG,), np.tanh(_D_REG)),
    "mse": (_sum_of(unilosses.mse), _T_REG + _D_REG, (_T_REG,), 2 * _D_REG),
    # sqrt at zero error: the safe branch gives 0, not 0 * inf = nan
    "rmse_zero_error": (lambda a, b: unilosses.rmse(a, b), _T_REG, (_T_REG,),
                        np.zeros_like(_T_REG)),
    # logit 0 and +-1e4: sigma(x) - t exactly, finite
    "bce_logits": (_sum_of(unilosses.binary_cross_entropy_with_logits), _X_BIN, (_T_BIN,),
                   ref.sigmoid(_X_BIN) - _T_BIN),
    "bce_logits_pos_weight": (_sum_of(unilosses.binary_cross_entropy_with_logits,
                                      pos_weight=2.0), _X_BIN, (_T_BIN,),
                              ref.bce_logits(_X_BIN, _T_BIN, 2.0)[1]),
    # gamma = 0.5 where sigmoid(0) == 0.5 == the soft label: |t - p|^0.5 has no derivative
    # there; unilosses takes 0 on every backend.  The reference's analytic derivative makes the
    # same choice (and is exact elsewhere, +-1e4 included)
    "focal_logits_g05_soft_tie": (
        _sum_of(unilosses.binary_focal_loss_with_logits, gamma=0.5, alpha=None),
        np.array([0.0, 0.0, 0.0, 1e4, -1e4, 1e4, -1e4, 1.5]),
        (np.array([0.5, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5]),),
        ref.focal_logits(np.array([0.0, 0.0, 0.0, 1e4, -1e4, 1e4, -1e4, 1.5]),
                         np.array([0.5, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.5]), None, 0.5)[1]),
    "focal_logits_g2": (_sum_of(unilosses.binary_focal_loss_with_logits), _X_BIN, (_T_BIN,),
                        ref.focal_logits(_X_BIN, _T_BIN, 0.25, 2.0)[1]),
    # a row of equal logits, and +-1e4 rows: softmax - one_hot, finite
    "sparse_ce_logits": (_sum_of(unilosses.sparse_categorical_cross_entropy_with_logits),
                         _X_CE, (_Y_CE,), _softmax(_X_CE) - ref.one_hot(_Y_CE, 3)),
    "sparse_ce_logits_smoothed": (
        _sum_of(unilosses.sparse_categorical_cross_entropy_with_logits, label_smoothing=0.3),
        _X_CE, (_Y_CE,), ref.cce_logits(_X_CE, ref.one_hot(_Y_CE, 3), label_smoothing=0.3)[1]),
    "cce_logits": (_sum_of(unilosses.categorical_cross_entropy_with_logits), _X_CE,
                   (ref.one_hot(_Y_CE, 3) * 0.8 + 0.1,),
                   ref.cce_logits(_X_CE, ref.one_hot(_Y_CE, 3) * 0.8 + 0.1)[1]),
    # exact 0/1 probabilities: the clip's derivative is 0 outside [1e-7, 1 - 1e-7]; values are
    # finite (-log 1e-7 at most).  Inside the clip the derivative is the usual one.
    "bce_exact_probabilities": (_sum_of(unilosses.binary_cross_entropy), _P_EXACT, (_T_EXACT,),
                                ref.bce(_P_EXACT, _T_EXACT)[1]),
    # p == t (0, 1, 0.5, 0.25): the factor |t - p|^0.5 is 0 with derivative taken as 0
    "focal_probs_g05_ties": (_sum_of(unilosses.binary_focal_loss, gamma=0.5), _P_EXACT,
                             (_T_EXACT,), ref.focal_probs(_P_EXACT, _T_EXACT, 0.25, 0.5)[1]),
    "cce_exact_probabilities": (_sum_of(unilosses.categorical_cross_entropy),
                                np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]]),
                                (np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0],
                                           [0.0, 0.0, 1.0]]),), None),
    "sparse_ce_exact_probabilities": (_sum_of(unilosses.sparse_categorical_cross_entropy),
                                      np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
                                      (np.array([0, 0]),), None),
    "anchor_focal_logits_extremes": (
        lambda a, t, s: unilosses.anchor_focal_loss_with_logits(a, t, s, gamma=0.5),
        np.array([[[1e4, -1e4], [0.0, 1e4], [-1e4, 0.0]]]),
        (np.array([[[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]]), np.array([[1, 1, 0]])), None),
}


# In float32 the clip bound 1 - 1e-7 rounds to 1 - 1.19e-7, which moves -log(1 - p) at an
# exact 1 by 1%: the float64 hand-written derivative holds there only in float64 (float32 is
# still held to torch == jax)
CLIPPED = {"bce_exact_probabilities", "focal_probs_g05_ties"}


@needs_both
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(TIES))
def test_jax_and_torch_agree_at_ties_and_extremes(case, dtype):
    fn, x, rest, expected = TIES[case]
    x = np.asarray(x, dtype)
    results = {}
    for name in ("torch", "jax"):
        b = Backend(name)
        args = [b.asarray(r, dtype if np.asarray(r).dtype.kind == "f" else None) for r in rest]
        v, g = b.value_and_grad(fn, b.asarray(x), *args)
        assert np.isfinite(v) and np.all(np.isfinite(g)), (name, v, g)
        assert str(g.dtype) == dtype
        results[name] = (v, g)
    (v_t, g_t), (v_j, g_j) = results["torch"], results["jax"]
    tol = tolerance(dtype)
    np.testing.assert_allclose(v_j, v_t, **tol)
    np.testing.assert_allclose(g_j, g_t, **tol)
    if expected is not None and (dtype == "float64" or case not in CLIPPED):
        for name, (_, g) in results.items():
            np.testing.assert_allclose(g, expected, **tol, err_msg=name)
