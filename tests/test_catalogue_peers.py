"""The loss catalogue of issue 9 against the frameworks' own losses, values and gradients on
the same inputs: torch.nn.functional (cross_entropy with weight=, kl_div, poisson_nll_loss,
gaussian_nll_loss, binary_cross_entropy_with_logits), torchvision's box losses (restated in
torch: torchvision is not installable here) and optax (poly_loss_cross_entropy,
kl_divergence, hinge_loss, sigmoid_focal_loss, dice_loss, cosine_similarity).

Where a peer follows another convention the inputs are restricted to where both are defined,
and the comment at the case says why.
"""

from __future__ import annotations

import numpy as np
import pytest

import unilosses
from conftest import Backend, assert_close, installed

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


def _optax_takes_per_class_alpha() -> bool:
    """optax 0.2.3 (the lowest pyproject allows) branches on ``alpha`` in Python: an array
    alpha raises TypeError "Pred must be a scalar"; later releases take one per class."""
    try:
        optax.losses.sigmoid_focal_loss(jnp.zeros(2), jnp.zeros(2), alpha=jnp.full(2, 0.5))
    except TypeError:
        return False
    return True


needs_optax_per_class_alpha = pytest.mark.skipif(
    optax is None or not _optax_takes_per_class_alpha(),
    reason="jax/optax is not installed, or this optax takes no per-class alpha (0.2.3)")
needs_optax_dice = pytest.mark.skipif(
    optax is None or not hasattr(optax.losses, "dice_loss"),
    reason="jax/optax is not installed, or this optax has no losses.dice_loss (0.2.3)")
DTYPES = ("float32", "float64")
REDUCTIONS = ("mean", "sum", "none")


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(list(repr(key).encode()))


def _cot(shape: tuple[int, ...], dtype: str) -> np.ndarray:
    if shape == ():
        return np.asarray(1.0, dtype)
    return np.random.default_rng(7).normal(size=shape).astype(dtype)


def check_torch(ours, peer, x: np.ndarray, rest: tuple, dtype: str, *,  # type: ignore[no-untyped-def]
                scale: float = 1.0) -> None:
    """Value and vector-Jacobian product w.r.t. ``x`` of ``ours`` and ``peer``, both torch."""
    b = Backend("torch")
    rest_t = tuple(torch.from_numpy(np.array(r)) for r in rest)
    xo = torch.from_numpy(x.astype(dtype)).requires_grad_(True)
    xq = torch.from_numpy(x.astype(dtype)).requires_grad_(True)
    vo, vq = ours(xo, *rest_t), peer(xq, *rest_t)
    assert_close(b, vo, vq.detach().numpy(), dtype, scale=scale)
    cot = torch.from_numpy(_cot(tuple(vq.shape), dtype))
    (go,) = torch.autograd.grad(vo, xo, cot)
    (gq,) = torch.autograd.grad(vq, xq, cot)
    assert_close(b, go, gq.numpy(), dtype, scale=scale)


def check_jax(ours, peer, x: np.ndarray, rest: tuple, dtype: str, *,  # type: ignore[no-untyped-def]
              scale: float = 1.0) -> None:
    b = Backend("jax")
    rest_j = tuple(jnp.asarray(r) for r in rest)
    xj = jnp.asarray(x.astype(dtype))
    vo, vjp_o = jax.vjp(lambda a: ours(a, *rest_j), xj)
    vq, vjp_q = jax.vjp(lambda a: peer(a, *rest_j), xj)
    assert_close(b, vo, np.asarray(vq), dtype, scale=scale)
    cot = jnp.asarray(_cot(tuple(vq.shape), dtype))
    (go,), (gq,) = vjp_o(cot), vjp_q(cot)
    assert_close(b, go, np.asarray(gq), dtype, scale=scale)


def _optax(elementwise, reduction: str):  # type: ignore[no-untyped-def]
    def fn(*args):  # type: ignore[no-untyped-def]
        v = elementwise(*args)
        return {"none": v, "mean": jnp.mean(v), "sum": jnp.sum(v)}[reduction]
    return fn


CW = np.array([0.5, 1.0, 2.0, 0.25, 3.0])


# -- torch: cross_entropy with weight= ----------------------------------------------------------
def _class_logits(shape: tuple[int, ...], ignore: int | None) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng("ce", shape, ignore)
    x = rng.normal(size=shape) * 3
    y = rng.integers(0, shape[1], size=shape[:1] + shape[2:])
    if ignore is not None:
        y.reshape(-1)[[1, -1]] = ignore
    return x, y


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("ignore_index", [None, 2])
@pytest.mark.parametrize("shape", [(8, 5), (3, 5, 4)], ids=str)
def test_torch_cross_entropy_class_weights(shape, ignore_index, label_smoothing, dtype):
    """torch's weighted "mean" is our "weighted_mean"; "sum" and "none" are the same."""
    x, y = _class_logits(shape, ignore_index)
    cw = torch.from_numpy(CW.astype(dtype))
    kw = {} if ignore_index is None else {"ignore_index": ignore_index}
    for ours_r, torch_r in (("weighted_mean", "mean"), ("sum", "sum"), ("none", "none")):
        check_torch(
            lambda a, b, r=ours_r: unilosses.sparse_categorical_cross_entropy_with_logits(
                a, b, axis=1, class_weights=cw, label_smoothing=label_smoothing,
                ignore_index=ignore_index, reduction=r),
            lambda a, b, r=torch_r: F.cross_entropy(a, b, weight=cw, reduction=r,
                                                    label_smoothing=label_smoothing, **kw),
            x, (y,), dtype)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_cross_entropy_class_weights_probability_targets(dtype):
    """Probability targets: torch's weighted "mean" divides by the number of rows (our
    "mean"), and class weights scale each class's term."""
    x, _ = _class_logits((3, 5, 4), None)
    t = np.moveaxis(_rng("ce-p").dirichlet(np.ones(5), size=(3, 4)), -1, 1)
    cw = torch.from_numpy(CW.astype(dtype))
    for reduction in REDUCTIONS:
        check_torch(
            lambda a, b, r=reduction: unilosses.categorical_cross_entropy_with_logits(
                a, b, axis=1, class_weights=cw, label_smoothing=0.1, reduction=r),
            lambda a, b, r=reduction: F.cross_entropy(a, b, weight=cw, reduction=r,
                                                      label_smoothing=0.1),
            x, (t.astype(dtype),), dtype)


@needs_torch
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_torch_cross_entropy_one_hot_weighted_mean_equals_sparse(label_smoothing):
    """One-hot probability targets with "weighted_mean" are torch's class-index weighted mean;
    with label smoothing too, whose divisor is the summed weight of the unsmoothed labels
    (mutant: the divisor of the smoothed targets)."""
    x, y = _class_logits((8, 5), None)
    t = np.eye(5)[y]
    cw = torch.from_numpy(CW)
    check_torch(
        lambda a, b: unilosses.categorical_cross_entropy_with_logits(
            a, b, class_weights=cw, reduction="weighted_mean", label_smoothing=label_smoothing),
        lambda a, b: F.cross_entropy(a, b.argmax(-1), weight=cw, label_smoothing=label_smoothing),
        x, (t,), "float64")


# -- torch: binary cross-entropy with Keras's label smoothing -----------------------------------
@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_torch_bce_with_logits_label_smoothing(dtype):
    """torch has no label smoothing for BCE: its loss on the Keras-smoothed targets."""
    rng = _rng("bce-ls")
    x, t = rng.normal(size=(6, 4)) * 2, (rng.random((6, 4)) > 0.5) * 1.0
    pw = torch.from_numpy(np.array([0.5, 1.0, 2.0, 4.0]).astype(dtype))
    for reduction in REDUCTIONS:
        check_torch(
            lambda a, b, r=reduction: unilosses.binary_cross_entropy_with_logits(
                a, b, label_smoothing=0.2, pos_weight=pw, reduction=r),
            lambda a, b, r=reduction: F.binary_cross_entropy_with_logits(
                a, b * 0.8 + 0.1, pos_weight=pw, reduction=r),
            x, (t.astype(dtype),), dtype)


# -- torch: kl_div, poisson_nll_loss, gaussian_nll_loss ------------------------------------------
@needs_torch
@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log_target", [False, True])
def test_torch_kl_div(log_target, dtype):
    rng = _rng("kl", log_target)
    x = np.log(rng.dirichlet(np.ones(5), size=(2, 3)))
    t = rng.dirichlet(np.ones(5), size=(2, 3))
    if log_target:
        t = np.log(t)
    for ours_r, axis, torch_r in (("batchmean", None, "batchmean"), ("mean", None, "mean"),
                                  ("sum", -1, "sum"), ("none", None, "none"),
                                  ("batchmean", -1, "batchmean")):
        check_torch(
            lambda a, b, r=ours_r, ax=axis: unilosses.kl_divergence(
                a, b, axis=ax, log_target=log_target, reduction=r),
            lambda a, b, r=torch_r: F.kl_div(a, b, reduction=r, log_target=log_target),
            x, (t.astype(dtype),), dtype)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("log_input", [True, False])
def test_torch_poisson_nll_loss(log_input, full, dtype):
    rng = _rng("poisson", log_input, full)
    x = rng.normal(size=(4, 6)) if log_input else rng.uniform(0.05, 4.0, (4, 6))
    k = rng.integers(0, 7, (4, 6)) * 1.0          # counts 0 and 1 too: no Stirling term there
    for reduction in REDUCTIONS:
        check_torch(
            lambda a, b, r=reduction: unilosses.poisson_nll(
                a, b, log_input=log_input, full=full, reduction=r),
            lambda a, b, r=reduction: F.poisson_nll_loss(a, b, log_input=log_input, full=full,
                                                         reduction=r),
            x, (k.astype(dtype),), dtype)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("var_shape", ["same", "per_row", "last_1"])
def test_torch_gaussian_nll_loss(var_shape, full, dtype):
    rng = _rng("gaussian", var_shape, full)
    p, t = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    v = rng.uniform(0.1, 2.0, {"same": (4, 6), "per_row": (4,), "last_1": (4, 1)}[var_shape])
    v.reshape(-1)[0] = 1e-8                        # below eps: clamped in value by both
    vt = torch.from_numpy(v.astype(dtype))
    for reduction in REDUCTIONS:
        check_torch(
            lambda a, b, r=reduction: unilosses.gaussian_nll(a, b, vt, full=full, reduction=r),
            lambda a, b, r=reduction: F.gaussian_nll_loss(a, b, vt, full=full, reduction=r),
            p, (t.astype(dtype),), dtype)


def _variance_grads(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p, t = np.array([0.3, -1.0, 2.0]), np.array([0.0, 0.5, 1.0])
    vo = torch.from_numpy(v).requires_grad_(True)
    vq = torch.from_numpy(v).requires_grad_(True)
    (go,) = torch.autograd.grad(unilosses.gaussian_nll(torch.from_numpy(p),
                                                       torch.from_numpy(t), vo), vo)
    (gq,) = torch.autograd.grad(F.gaussian_nll_loss(torch.from_numpy(p), torch.from_numpy(t),
                                                    vq), vq)
    return go.numpy(), gq.numpy()


@needs_torch
def test_torch_gaussian_nll_variance_gradient_above_eps():
    go, gq = _variance_grads(np.array([0.5, 1.0, 3.0]))
    np.testing.assert_allclose(go, gq, rtol=1e-14)


@needs_torch
def test_torch_gaussian_nll_variance_gradient_below_eps():
    go, gq = _variance_grads(np.array([1e-9, 1.0, 3.0]))
    np.testing.assert_allclose(go, gq, rtol=1e-14)


# -- torchvision's box losses -------------------------------------------------------------------
def torchvision_box_losses(boxes1, boxes2, eps: float = 1e-7):  # type: ignore[no-untyped-def]
    """torchvision.ops generalized_box_iou_loss, distance_box_iou_loss and
    complete_box_iou_loss (torchvision 0.15+, giou_loss.py, diou_loss.py, ciou_loss.py,
    _utils._loss_inter_union), line for line with reduction="none": (giou, diou, ciou)."""
    x1, y1, x2, y2 = boxes1.unbind(dim=-1)
    x1g, y1g, x2g, y2g = boxes2.unbind(dim=-1)
    xkis1, ykis1 = torch.max(x1, x1g), torch.max(y1, y1g)
    xkis2, ykis2 = torch.min(x2, x2g), torch.min(y2, y2g)
    intsctk = torch.zeros_like(x1)
    mask = (ykis2 > ykis1) & (xkis2 > xkis1)
    intsctk[mask] = (xkis2[mask] - xkis1[mask]) * (ykis2[mask] - ykis1[mask])
    unionk = (x2 - x1) * (y2 - y1) + (x2g - x1g) * (y2g - y1g) - intsctk
    iouk = intsctk / (unionk + eps)
    xc1, yc1 = torch.min(x1, x1g), torch.min(y1, y1g)
    xc2, yc2 = torch.max(x2, x2g), torch.max(y2, y2g)
    area_c = (xc2 - xc1) * (yc2 - yc1)
    giou = 1 - (iouk - ((area_c - unionk) / (area_c + eps)))
    diagonal_distance_squared = ((xc2 - xc1) ** 2) + ((yc2 - yc1) ** 2) + eps
    x_p, y_p = (x2 + x1) / 2, (y2 + y1) / 2
    x_g, y_g = (x1g + x2g) / 2, (y1g + y2g) / 2
    centers_distance_squared = ((x_p - x_g) ** 2) + ((y_p - y_g) ** 2)
    diou = 1 - iouk + (centers_distance_squared / diagonal_distance_squared)
    w_pred, h_pred = x2 - x1, y2 - y1
    w_gt, h_gt = x2g - x1g, y2g - y1g
    v = (4 / (torch.pi**2)) * torch.pow((torch.atan(w_gt / h_gt) - torch.atan(w_pred / h_pred)),
                                        2)
    with torch.no_grad():
        alpha = v / (1 - iouk + v + eps)
    return giou, diou, diou + alpha * v


def _boxes(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = _rng("boxes", n)

    def boxes():  # type: ignore[no-untyped-def]
        xy = rng.uniform(0, 4, (n, 2))
        return np.concatenate([xy, xy + rng.uniform(0.3, 3, (n, 2))], -1)
    b, g = boxes(), boxes()
    g[1] = b[1] + 6.0                     # disjoint
    g[2] = b[2]                           # identical: every max/min a tie
    g[3] = b[3] * np.array([1.0, 1.0, 1.2, 1.1])   # shared corner: ties in x1 and y1
    return b, g


BOX = {"giou": (unilosses.giou_loss, 0), "diou": (unilosses.diou_loss, 1),
       "ciou": (unilosses.ciou_loss, 2)}


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["giou", "diou"])
def test_torchvision_box_losses(name, dtype):
    """Values and gradients, ties included: our maxima share a tie's gradient as torch.max."""
    fn, i = BOX[name]
    b, g = _boxes()
    for reduction in REDUCTIONS:
        def peer(a, t, r=reduction):  # type: ignore[no-untyped-def]
            v = torchvision_box_losses(a, t)[i]
            return {"none": v, "mean": v.mean(), "sum": v.sum()}[r]
        check_torch(lambda a, t, r=reduction: fn(a, t, reduction=r), peer, b,
                    (g.astype(dtype),), dtype, scale=4)


@needs_torch
@pytest.mark.parametrize("dtype", DTYPES)
def test_torchvision_ciou_values(dtype):
    b, g = _boxes()
    out = unilosses.ciou_loss(torch.from_numpy(b.astype(dtype)),
                              torch.from_numpy(g.astype(dtype)), reduction="none")
    want = torchvision_box_losses(torch.from_numpy(b.astype(dtype)),
                                  torch.from_numpy(g.astype(dtype)))[2]
    assert_close(Backend("torch"), out, want.numpy(), dtype, scale=4)


@needs_torch
def test_torchvision_ciou_gradient():
    b, g = _boxes()
    check_torch(lambda a, t: unilosses.ciou_loss(a, t, reduction="none"),
                lambda a, t: torchvision_box_losses(a, t)[2], b, (g,), "float64")


@needs_torch
def test_torchvision_ciou_gradient_matches_where_aspect_ratios_agree():
    """Where the aspect ratios are equal v = 0 and so is the alpha term's gradient: there the
    gradient is torchvision's exactly."""
    b, g = _boxes()
    g = b * 0.9 + 0.05                         # similar boxes: the same aspect ratio
    check_torch(lambda a, t: unilosses.ciou_loss(a, t, reduction="none"),
                lambda a, t: torchvision_box_losses(a, t)[2], b, (g,), "float64")


# -- optax --------------------------------------------------------------------------------------
@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("epsilon", [2.0, -1.0])
def test_optax_poly_loss_cross_entropy(epsilon, dtype):
    rng = _rng("poly", epsilon)
    x, t = rng.normal(size=(6, 5)) * 2, rng.dirichlet(np.ones(5), 6)
    # optax's losses are unreduced: the reductions are Call.reduce's, tested with every loss
    for reduction in ("none",):
        check_jax(lambda a, b, r=reduction: unilosses.poly1_cross_entropy_with_logits(
                      a, b, epsilon=epsilon, reduction=r),
                  _optax(lambda a, b: optax.losses.poly_loss_cross_entropy(
                      a, b, epsilon=epsilon), reduction),
                  x, (t.astype(dtype),), dtype)


@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("log_target", [False, True])
def test_optax_kl_divergence(log_target, dtype):
    rng = _rng("optax-kl", log_target)
    x, t = np.log(rng.dirichlet(np.ones(5), 6)), rng.dirichlet(np.ones(5), 6)
    peer = optax.losses.kl_divergence_with_log_targets if log_target else \
        optax.losses.kl_divergence
    if log_target:
        t = np.log(t)
    # optax's losses are unreduced: the reductions are Call.reduce's, tested with every loss
    for reduction in ("none",):
        check_jax(lambda a, b, r=reduction: unilosses.kl_divergence(
                      a, b, log_target=log_target, reduction=r),
                  _optax(peer, reduction), x, (t.astype(dtype),), dtype)


@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
def test_optax_hinge_loss(dtype):
    # optax's maximum shares the kink's gradient 1/2-1/2: inputs stay off the kink
    rng = _rng("hinge")
    t = np.where(rng.random((6, 4)) > 0.5, 1.0, -1.0)
    x = rng.normal(size=(6, 4)) * 2
    x = np.where(np.abs(1 - t * x) < 0.05, x + 0.2, x)
    # optax's losses are unreduced: the reductions are Call.reduce's, tested with every loss
    for reduction in ("none",):
        check_jax(lambda a, b, r=reduction: unilosses.hinge(a, b, reduction=r),
                  _optax(optax.losses.hinge_loss, reduction), x, (t.astype(dtype),), dtype)


@needs_optax_per_class_alpha
@pytest.mark.parametrize("dtype", DTYPES)
def test_optax_sigmoid_focal_loss_per_class_alpha(dtype):
    rng = _rng("focal-alpha")
    x, t = np.clip(rng.normal(size=(6, 4)) * 2, -4, 4), (rng.random((6, 4)) > 0.5) * 1.0
    alpha = np.array([0.1, 0.25, 0.5, 0.9])
    # optax's losses are unreduced: the reductions are Call.reduce's, tested with every loss
    for reduction in ("none",):
        check_jax(lambda a, b, r=reduction: unilosses.binary_focal_loss_with_logits(
                      a, b, alpha=jnp.asarray(alpha.astype(dtype)), reduction=r),
                  _optax(lambda a, b: optax.losses.sigmoid_focal_loss(
                      a, b, alpha=jnp.asarray(alpha.astype(dtype))), reduction),
                  x, (t.astype(dtype),), dtype)


@needs_optax_dice
@pytest.mark.parametrize("alpha_beta", [(0.5, 0.5), (0.3, 0.7)])
def test_optax_dice_loss(alpha_beta):
    """optax.dice_loss(apply_softmax=False) is our Tversky loss with eps=0, per image and
    class over the spatial axes, then the mean over the classes."""
    alpha, beta = alpha_beta
    rng = _rng("optax-dice", alpha_beta)
    p = rng.dirichlet(np.ones(3), (2, 4, 4))
    t = np.eye(3)[rng.integers(0, 3, (2, 4, 4))]

    def ours(a, b):  # type: ignore[no-untyped-def]
        per_class = unilosses.tversky_loss(a, b, alpha=alpha, beta=beta, axis=(1, 2),
                                           smooth=1.0, eps=0.0, reduction="none")
        return jnp.mean(per_class, axis=-1)

    check_jax(ours, lambda a, b: optax.losses.dice_loss(
        a, b, smooth=1.0, alpha=alpha, beta=beta, apply_softmax=False), p, (t,), "float64")


@needs_optax
@pytest.mark.parametrize("dtype", DTYPES)
def test_optax_cosine_similarity(dtype):
    rng = _rng("cos")
    p, t = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    check_jax(lambda a, b: -unilosses.cosine_similarity_loss(a, b, reduction="none"),
              optax.losses.cosine_similarity, p, (t.astype(dtype),), dtype, scale=2)

