"""unilosses.torch: the nn.Module front end.

Values and gradients against the float64 references of reference.py and, for the drop-in
modules, against ``torch.nn``'s own modules on the same inputs; then the module surface:
defaults, ``state_dict``, ``.to()``, ``torch.compile``, autocast, errors, and the ImportError
without torch.
"""

from __future__ import annotations

import io
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed: unilosses.torch needs it")

import reference as ref  # noqa: E402
import unilosses  # noqa: E402
import unilosses.torch as ut  # noqa: E402
from conftest import Backend, assert_close, tolerance  # noqa: E402

nn = torch.nn
TB = Backend("torch")
DTYPES = ("float32", "float64")
SHAPE = (4, 5)
rng = np.random.default_rng(7)

# inputs shared by the tests: regression errors of both signs and sizes, logits, probabilities
P = rng.normal(size=SHAPE) * 2
T = rng.normal(size=SHAPE) * 2
X = rng.normal(size=SHAPE) * 3
Y01 = (rng.random(SHAPE) > 0.5).astype(np.float64)
PROB = rng.uniform(0.02, 0.98, SHAPE)
W = rng.uniform(0.5, 2.0, size=(SHAPE[1],))           # weights broadcast over the rows
MASK = rng.random(SHAPE) > 0.25


def _t(a, dtype="float64", grad=False):  # type: ignore[no-untyped-def]
    out = torch.from_numpy(np.array(a, dtype=dtype))
    return out.requires_grad_(True) if grad else out


def _np(x):  # type: ignore[no-untyped-def]
    return x.detach().cpu().numpy()


# -- every public loss has a module ------------------------------------------------------------
FUNCTION_OF = {
    ut.MSELoss: "mse", ut.RMSELoss: "rmse", ut.MAELoss: "mae", ut.HuberLoss: "huber",
    ut.SmoothL1Loss: "smooth_l1", ut.LogCoshLoss: "log_cosh",
    ut.BCELoss: "binary_cross_entropy",
    ut.BCEWithLogitsLoss: "binary_cross_entropy_with_logits",
    ut.CategoricalCrossEntropyLoss: "categorical_cross_entropy",
    ut.CategoricalCrossEntropyWithLogitsLoss: "categorical_cross_entropy_with_logits",
    ut.SparseCategoricalCrossEntropyLoss: "sparse_categorical_cross_entropy",
    ut.SparseCategoricalCrossEntropyWithLogitsLoss: "sparse_categorical_cross_entropy_with_logits",
    ut.BinaryFocalLoss: "binary_focal_loss",
    ut.BinaryFocalWithLogitsLoss: "binary_focal_loss_with_logits",
    ut.AnchorFocalLoss: "anchor_focal_loss",
    ut.AnchorFocalWithLogitsLoss: "anchor_focal_loss_with_logits",
    ut.MSLELoss: "msle", ut.MAPELoss: "mape", ut.QuantileLoss: "quantile_loss",
    ut.CosineSimilarityLoss: "cosine_similarity_loss",
    ut.CategoricalFocalLoss: "categorical_focal_loss",
    ut.CategoricalFocalWithLogitsLoss: "categorical_focal_loss_with_logits",
    ut.SparseCategoricalFocalLoss: "sparse_categorical_focal_loss",
    ut.SparseCategoricalFocalWithLogitsLoss: "sparse_categorical_focal_loss_with_logits",
    ut.Poly1CrossEntropyWithLogitsLoss: "poly1_cross_entropy_with_logits",
    ut.HingeLoss: "hinge", ut.SquaredHingeLoss: "squared_hinge",
    ut.CategoricalHingeLoss: "categorical_hinge",
    ut.KLDivLoss: "kl_divergence", ut.PoissonNLLLoss: "poisson_nll",
    ut.GaussianNLLLoss: "gaussian_nll",
    ut.DiceLoss: "dice_loss", ut.TverskyLoss: "tversky_loss",
    ut.GIoULoss: "giou_loss", ut.DIoULoss: "diou_loss", ut.CIoULoss: "ciou_loss",
}
METRICS = {"in_top_k", "top_k_accuracy"}


def test_every_public_loss_has_a_module():
    losses = set(unilosses.__all__) - METRICS
    assert set(FUNCTION_OF.values()) == losses
    exported = {getattr(ut, name) for name in ut.__all__}
    assert set(FUNCTION_OF) | {ut.CrossEntropyLoss} == exported
    assert ut.L1Loss is ut.MAELoss
    for cls in exported:
        assert issubclass(cls, nn.Module)
        assert cls.__doc__
        assert cls.__name__ in ut.__doc__, f"{cls.__name__} is missing from the module table"


# -- values and gradients against the float64 references ---------------------------------------
# name -> (module class, options, elementwise reference (value, d/dinput), input, target)
ELEMENTWISE = {
    "mse": (ut.MSELoss, {}, ref.mse, P, T),
    "mae": (ut.MAELoss, {}, ref.mae, P, T),
    "huber": (ut.HuberLoss, {"delta": 0.3}, lambda p, t: ref.huber(p, t, 0.3), P, T),
    "smooth_l1": (ut.SmoothL1Loss, {"beta": 2.0}, lambda p, t: ref.smooth_l1(p, t, 2.0), P, T),
    "log_cosh": (ut.LogCoshLoss, {}, ref.log_cosh, P, T),
    "bce": (ut.BCELoss, {}, ref.bce, PROB, Y01),
    "bce_logits": (ut.BCEWithLogitsLoss, {"pos_weight": 3.0},
                   lambda x, t: ref.bce_logits(x, t, 3.0), X, Y01),
    "focal": (ut.BinaryFocalLoss, {"alpha": 0.4, "gamma": 1.5},
              lambda p, t: ref.focal_probs(p, t, 0.4, 1.5), PROB, Y01),
    "focal_logits": (ut.BinaryFocalWithLogitsLoss, {"alpha": None, "gamma": 0.5},
                     lambda x, t: ref.focal_logits(x, t, None, 0.5), X, Y01),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_module_matches_reference(name, reduction, dtype):
    cls, options, reference, a, b = ELEMENTWISE[name]
    module = cls(reduction=reduction, **options)
    x = _t(a, dtype, grad=True)
    out = module(x, _t(b, dtype), weights=_t(W, dtype), where=torch.from_numpy(MASK))
    # the gradient of the sum of the outputs: for "none" that is the elementwise derivative
    out.sum().backward()
    val, dval = reference(a.astype(dtype), b.astype(dtype))
    expected = ref.reduce(val, reduction, W, MASK)
    grad = ref.reduce_grad(dval, "sum" if reduction == "none" else reduction, W, MASK)
    assert_close(TB, out.detach(), expected, dtype, scale=4)
    assert_close(TB, x.grad, grad, dtype, scale=4)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rmse_module(dtype):
    x = _t(P, dtype, grad=True)
    out = ut.RMSELoss(axis=1)(x, _t(T, dtype))
    out.sum().backward()
    d = P.astype(dtype).astype(np.float64) - T.astype(dtype)
    rms = np.sqrt((d * d).mean(axis=1))
    assert_close(TB, out.detach(), rms, dtype)
    assert_close(TB, x.grad, d / (SHAPE[1] * rms[:, None]), dtype)
    # all axes, with where: the mean over the unmasked elements only
    whole = ut.RMSELoss()(_t(P, dtype), _t(T, dtype), where=torch.from_numpy(MASK))
    assert_close(TB, whole, np.sqrt((d[MASK] ** 2).mean()), dtype)


N, C = 6, 4
LOGITS = rng.normal(size=(N, C)) * 3
LABELS = rng.integers(0, C, size=N)
SOFT = rng.dirichlet(np.ones(C), size=N)
PROBS = rng.dirichlet(np.ones(C), size=N)
CE_W = np.array([0.5, 2.0, 1.0, 0.25])                # per-class weights


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_categorical_modules(ls, dtype):
    x = LOGITS.astype(dtype)
    val, grad = ref.cce_logits(x, SOFT, label_smoothing=ls)
    xt = _t(x, dtype, grad=True)
    out = ut.CategoricalCrossEntropyWithLogitsLoss(label_smoothing=ls)(xt, _t(SOFT, dtype))
    out.backward()
    assert_close(TB, out.detach(), val.mean(), dtype, scale=4)
    assert_close(TB, xt.grad, grad / N, dtype, scale=4)

    onehot = ref.one_hot(LABELS, C)
    val, grad = ref.cce_logits(x, onehot, label_smoothing=ls)
    xt = _t(x, dtype, grad=True)
    out = ut.SparseCategoricalCrossEntropyWithLogitsLoss(label_smoothing=ls, reduction="sum")(
        xt, torch.from_numpy(LABELS))
    out.backward()
    assert_close(TB, out.detach(), val.sum(), dtype, scale=4)
    assert_close(TB, xt.grad, grad, dtype, scale=4)

    p = PROBS.astype(dtype)
    out = ut.CategoricalCrossEntropyLoss(label_smoothing=ls, reduction="none")(
        _t(p, dtype), _t(SOFT, dtype))
    assert_close(TB, out, ref.cce_probs(p, SOFT, label_smoothing=ls), dtype, scale=4)
    out = ut.SparseCategoricalCrossEntropyLoss(label_smoothing=ls, reduction="none")(
        _t(p, dtype), torch.from_numpy(LABELS))
    assert_close(TB, out, ref.cce_probs(p, onehot, label_smoothing=ls), dtype, scale=4)


def test_sparse_module_options():
    """axis=1 on (N, C, d) inputs, ignore_index, and forward's weights."""
    x = rng.normal(size=(3, C, 5))
    y = rng.integers(0, C, size=(3, 5))
    y[0, :2] = 9
    w = rng.uniform(0.5, 2.0, size=(3, 5))
    out = ut.SparseCategoricalCrossEntropyWithLogitsLoss(axis=1, ignore_index=9)(
        _t(x), torch.from_numpy(y), weights=_t(w))
    val, _ = ref.cce_logits(np.moveaxis(x, 1, -1), ref.one_hot(np.where(y == 9, 0, y), C))
    keep = y != 9
    assert_close(TB, out, (w * val)[keep].sum() / keep.sum(), "float64")


def _anchor_seed(p, t, state, alpha, gamma):  # type: ignore[no-untyped-def]
    """The RetinaNet seed's formula on probabilities, written out directly in float64."""
    p = np.clip(p, 1e-7, 1 - 1e-7)
    t = np.where((state == 1)[..., None], t, 0.0)
    alpha_factor = np.where(t == 1, alpha, 1 - alpha)
    focal_weight = alpha_factor * np.where(t == 1, 1 - p, p) ** gamma
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    keep = (state != -1)[..., None]
    return (focal_weight * bce * keep).sum() / max(1.0, (state == 1).sum())


@pytest.mark.parametrize("dtype", DTYPES)
def test_anchor_modules(dtype):
    x = rng.normal(size=(2, 7, 3)) * 2
    t = (rng.random((2, 7, 3)) > 0.7).astype(np.float64)
    state = rng.integers(-1, 2, size=(2, 7))
    p = 1 / (1 + np.exp(-x.astype(dtype).astype(np.float64)))
    expected = _anchor_seed(p, t, state, 0.3, 1.5)
    out = ut.AnchorFocalWithLogitsLoss(alpha=0.3, gamma=1.5)(
        _t(x, dtype), _t(t, dtype), torch.from_numpy(state))
    assert_close(TB, out, expected, dtype, scale=4)
    out = ut.AnchorFocalLoss(alpha=0.3, gamma=1.5)(
        _t(p, dtype), _t(t, dtype), torch.from_numpy(state), normalizer=10.0)
    assert_close(TB, out, expected * max(1, (state == 1).sum()) / 10.0, dtype, scale=4)


# -- the catalogue's modules: forward is the functional loss with the constructor's options ---
BOX_A = np.concatenate([rng.uniform(0, 4, (N, 2)), rng.uniform(5, 8, (N, 2))], axis=1)
BOX_B = np.concatenate([rng.uniform(0, 4, (N, 2)), rng.uniform(5, 8, (N, 2))], axis=1)
ALPHA_C = [0.1, 0.4, 0.6, 0.9]
# module, options, functional loss, input, target (the function gets the same options)
MODULES = {
    "msle": (ut.MSLELoss, {}, unilosses.msle, PROBS * 3, SOFT * 3),
    "mape": (ut.MAPELoss, {}, unilosses.mape, LOGITS, SOFT + 0.5),
    "quantile_levels": (ut.QuantileLoss, {"quantiles": ALPHA_C}, unilosses.quantile_loss,
                        LOGITS, SOFT),
    "cosine": (ut.CosineSimilarityLoss, {"eps": 1e-3}, unilosses.cosine_similarity_loss,
               LOGITS, SOFT),
    "hinge": (ut.HingeLoss, {}, unilosses.hinge, LOGITS, (SOFT > 0.25) * 1.0),
    "squared_hinge": (ut.SquaredHingeLoss, {}, unilosses.squared_hinge, LOGITS,
                      (SOFT > 0.25) * 1.0),
    "categorical_hinge": (ut.CategoricalHingeLoss, {}, unilosses.categorical_hinge, LOGITS,
                          ref.one_hot(LABELS, C)),
    "poly1": (ut.Poly1CrossEntropyWithLogitsLoss, {"epsilon": -1.0},
              unilosses.poly1_cross_entropy_with_logits, LOGITS, SOFT),
    "categorical_focal": (ut.CategoricalFocalLoss, {"alpha": ALPHA_C, "gamma": 1.5},
                          unilosses.categorical_focal_loss, PROBS, SOFT),
    "categorical_focal_logits": (ut.CategoricalFocalWithLogitsLoss,
                                 {"alpha": None, "label_smoothing": 0.1},
                                 unilosses.categorical_focal_loss_with_logits, LOGITS, SOFT),
    "sparse_focal": (ut.SparseCategoricalFocalLoss, {"gamma": 0.5},
                     unilosses.sparse_categorical_focal_loss, PROBS, LABELS),
    "sparse_focal_logits": (ut.SparseCategoricalFocalWithLogitsLoss,
                            {"alpha": ALPHA_C, "ignore_index": int(LABELS[0])},
                            unilosses.sparse_categorical_focal_loss_with_logits, LOGITS,
                            LABELS),
    "binary_focal_alpha": (ut.BinaryFocalWithLogitsLoss, {"alpha": ALPHA_C},
                           unilosses.binary_focal_loss_with_logits, LOGITS,
                           (SOFT > 0.25) * 1.0),
    "cce_class_weights": (ut.CategoricalCrossEntropyWithLogitsLoss,
                          {"class_weights": CE_W.tolist(), "reduction": "weighted_mean"},
                          unilosses.categorical_cross_entropy_with_logits, LOGITS,
                          ref.one_hot(LABELS, C)),
    "bce_smoothing": (ut.BCEWithLogitsLoss, {"label_smoothing": 0.2},
                      unilosses.binary_cross_entropy_with_logits, LOGITS, (SOFT > 0.25) * 1.0),
    "kl_rows": (ut.KLDivLoss, {"axis": -1}, unilosses.kl_divergence, np.log(PROBS), SOFT),
    "poisson": (ut.PoissonNLLLoss, {}, unilosses.poisson_nll, LOGITS / 3, SOFT * 4),
    "dice": (ut.DiceLoss, {"axis": 1, "smooth": 1.0}, unilosses.dice_loss, PROBS,
             ref.one_hot(LABELS, C)),
    "tversky": (ut.TverskyLoss, {"alpha": 0.3, "beta": 0.7, "axis": 1},
                unilosses.tversky_loss, PROBS, ref.one_hot(LABELS, C)),
    "giou": (ut.GIoULoss, {}, unilosses.giou_loss, BOX_A, BOX_B),
    "diou": (ut.DIoULoss, {}, unilosses.diou_loss, BOX_A, BOX_B),
    "ciou": (ut.CIoULoss, {"eps": 1e-6}, unilosses.ciou_loss, BOX_A, BOX_B),
}


def _function_options(options, dtype):  # type: ignore[no-untyped-def]
    # the module holds sequences as tensors (buffers); the function gets the same tensor
    return {k: _t(v, dtype) if isinstance(v, list) else v for k, v in options.items()}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(MODULES))
def test_catalogue_module_is_its_function(name, dtype):
    """Value and gradient of the module equal the functional loss's (with per-call weights),
    and the float64 references of the functions are tested in test_catalogue_*.py."""
    cls, options, fn, a, b = MODULES[name]
    target = torch.from_numpy(b) if b.dtype.kind == "i" else _t(b, dtype)
    module = cls(**options).to(getattr(torch, dtype))
    kw = _function_options(options, dtype)
    x1, x2 = _t(a, dtype, grad=True), _t(a, dtype, grad=True)
    w = _t(rng.uniform(0.5, 2.0, size=N), dtype)
    if name.startswith(("quantile", "binary", "bce", "mape", "msle", "hinge", "squared",
                        "poisson")):
        w = w[:, None]                                   # elementwise losses: per row
    if name in ("dice", "tversky"):
        w = None                                         # one coefficient per row already
    v1 = module(x1, target, weights=w)
    v2 = fn(x2, target, weights=w, **kw)
    v1.backward()
    v2.backward()
    assert torch.equal(v1, v2) and torch.equal(x1.grad, x2.grad)
    assert np.isfinite(_np(v1)) and v1.dtype == getattr(torch, dtype)


def test_per_class_options_are_buffers():
    m = ut.CategoricalFocalWithLogitsLoss(alpha=ALPHA_C).double()
    assert set(m.state_dict()) == {"alpha"} and m.alpha.dtype == torch.float64
    assert ut.CategoricalFocalWithLogitsLoss(alpha=0.5).state_dict() == {}
    assert set(ut.QuantileLoss(quantiles=torch.tensor([0.1, 0.9])).state_dict()) == \
        {"quantiles"}
    m = ut.SparseCategoricalCrossEntropyWithLogitsLoss(class_weights=CE_W.tolist())
    assert set(m.state_dict()) == {"class_weights"}
    assert set(ut.CrossEntropyLoss(_t(CE_W)).state_dict()) == {"weight"}


@pytest.mark.parametrize("dtype", DTYPES)
def test_anchor_module_per_image(dtype):
    """normalize="image": each image's sum over max(1, its positives), then the mean."""
    x = rng.normal(size=(3, 7, 2)) * 2
    t = (rng.random((3, 7, 2)) > 0.6).astype(np.float64)
    state = rng.integers(-1, 2, size=(3, 7))
    state[2] = 0                                         # an image without positives
    out = ut.AnchorFocalWithLogitsLoss(normalize="image")(_t(x, dtype), _t(t, dtype),
                                                          torch.from_numpy(state))
    xr = x.astype(dtype).astype(np.float64)
    assert_close(TB, out, ref.anchor_focal_image(xr, t, state), dtype, scale=4)


# -- drop-in: the same numbers as torch.nn's modules ------------------------------------------
def _ce_index_inputs():  # type: ignore[no-untyped-def]
    x = rng.normal(size=(3, C, 5)) * 2
    y = rng.integers(0, C, size=(3, 5))
    y[1, 1:3] = -100                                     # torch's default ignore_index
    return x, torch.from_numpy(y)


def _ce_prob_inputs():  # type: ignore[no-untyped-def]
    x = rng.normal(size=(N, C)) * 2
    return x, _t(SOFT)


BCE_W = rng.uniform(0.5, 2.0, size=(C,))
POS_W = np.array([1.0, 2.0, 0.5, 3.0])
# name -> (ours, torch's, input builder); each builder returns (input, target)
DROP_IN = {
    "MSELoss": (ut.MSELoss, nn.MSELoss, {}, lambda: (P, _t(T))),
    "L1Loss": (ut.L1Loss, nn.L1Loss, {}, lambda: (P, _t(T))),
    "HuberLoss": (ut.HuberLoss, nn.HuberLoss, {"delta": 0.6}, lambda: (P, _t(T))),
    "SmoothL1Loss": (ut.SmoothL1Loss, nn.SmoothL1Loss, {"beta": 0.6}, lambda: (P, _t(T))),
    "BCELoss": (ut.BCELoss, nn.BCELoss, {"weight": _t(BCE_W)},
                lambda: (PROBS, _t((rng.random((N, C)) > 0.5) * 1.0))),
    "BCEWithLogitsLoss": (ut.BCEWithLogitsLoss, nn.BCEWithLogitsLoss,
                          {"weight": _t(BCE_W), "pos_weight": _t(POS_W)},
                          lambda: (LOGITS, _t(rng.random((N, C))))),
    "CrossEntropyLoss_indices": (ut.CrossEntropyLoss, nn.CrossEntropyLoss,
                                 {"label_smoothing": 0.1}, _ce_index_inputs),
    "CrossEntropyLoss_probabilities": (ut.CrossEntropyLoss, nn.CrossEntropyLoss,
                                       {"label_smoothing": 0.2}, _ce_prob_inputs),
    # per-class weights: torch's weighted mean over the non-ignored labels (class indices),
    # the plain mean over the samples (probabilities)
    "CrossEntropyLoss_weight_indices": (ut.CrossEntropyLoss, nn.CrossEntropyLoss,
                                        {"weight": _t(CE_W)}, _ce_index_inputs),
    "CrossEntropyLoss_weight_smoothing": (ut.CrossEntropyLoss, nn.CrossEntropyLoss,
                                          {"weight": _t(CE_W), "label_smoothing": 0.1},
                                          _ce_index_inputs),
    "CrossEntropyLoss_weight_probabilities": (ut.CrossEntropyLoss, nn.CrossEntropyLoss,
                                              {"weight": _t(CE_W), "label_smoothing": 0.2},
                                              _ce_prob_inputs),
    "KLDivLoss": (ut.KLDivLoss, nn.KLDivLoss, {},
                  lambda: (np.log(PROBS), _t(SOFT))),
    "KLDivLoss_log_target": (ut.KLDivLoss, nn.KLDivLoss, {"log_target": True},
                             lambda: (np.log(PROBS), _t(np.log(SOFT)))),
    "PoissonNLLLoss": (ut.PoissonNLLLoss, nn.PoissonNLLLoss, {"full": True},
                       lambda: (LOGITS / 3, _t(rng.poisson(2.0, (N, C)) * 1.0))),
    "PoissonNLLLoss_rates": (ut.PoissonNLLLoss, nn.PoissonNLLLoss, {"log_input": False},
                             lambda: (PROBS * 3, _t(rng.poisson(2.0, (N, C)) * 1.0))),
}


@pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss:UserWarning")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", sorted(DROP_IN))
def test_drop_in_matches_torch_nn(name, reduction, dtype):
    ours_cls, theirs_cls, kwargs, inputs = DROP_IN[name]
    a, target = inputs()
    if target.is_floating_point():
        target = target.to(getattr(torch, dtype))
    ours, theirs = ours_cls(reduction=reduction, **kwargs), theirs_cls(reduction=reduction,
                                                                        **kwargs)
    ours, theirs = ours.to(getattr(torch, dtype)), theirs.to(getattr(torch, dtype))
    x1, x2 = _t(a, dtype, grad=True), _t(a, dtype, grad=True)
    v1, v2 = ours(x1, target), theirs(x2, target)
    v1.sum().backward()
    v2.sum().backward()
    assert v1.dtype == v2.dtype and v1.shape == v2.shape
    tol = tolerance(dtype)
    np.testing.assert_allclose(_np(v1), _np(v2), rtol=4 * tol["rtol"], atol=4 * tol["atol"])
    np.testing.assert_allclose(_np(x1.grad), _np(x2.grad), rtol=4 * tol["rtol"],
                               atol=4 * tol["atol"])


def test_cross_entropy_unbatched_like_torch():
    x = _t(LOGITS[0], grad=True)
    y = torch.tensor(2)
    v = ut.CrossEntropyLoss()(x, y)
    v.backward()
    x2 = _t(LOGITS[0], grad=True)
    v2 = nn.CrossEntropyLoss()(x2, y)
    v2.backward()
    tol = tolerance("float64")
    np.testing.assert_allclose(_np(v), _np(v2), **tol)
    np.testing.assert_allclose(_np(x.grad), _np(x2.grad), **tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kl_div_batchmean_like_torch(dtype):
    a, t = np.log(PROBS), _t(SOFT, dtype)
    x1, x2 = _t(a, dtype, grad=True), _t(a, dtype, grad=True)
    v1 = ut.KLDivLoss(reduction="batchmean")(x1, t)
    v2 = nn.KLDivLoss(reduction="batchmean")(x2, t)
    v1.backward()
    v2.backward()
    assert_close(TB, v1.detach(), _np(v2), dtype, scale=4)
    assert_close(TB, x1.grad, _np(x2.grad), dtype, scale=4)


def test_kl_div_bad_reduction_names_batchmean():
    """The refusal lists every name the module takes, torch's "batchmean" among them."""
    with pytest.raises(ValueError, match=r"reduction='bogus' is not supported; .*'batchmean'"):
        ut.KLDivLoss(reduction="bogus")
    with pytest.raises(ValueError, match=r"reduction='batchmean' is not supported"):
        ut.MSELoss(reduction="batchmean")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_gaussian_nll_like_torch(reduction, dtype):
    """Three inputs, one variance per row (torch's (N,) form) and one below eps: torch clamps
    it outside autograd, and so do we (the gradient there is the gradient at eps)."""
    p, t = P.astype(dtype), _t(T, dtype)
    var = rng.uniform(0.2, 2.0, size=SHAPE)
    var[0, 0] = 1e-9
    for v in (var, var[:, 0]):
        grads = []
        for cls in (ut.GaussianNLLLoss, nn.GaussianNLLLoss):
            x, vt = _t(p, dtype, grad=True), _t(v, dtype, grad=True)
            out = cls(full=True, reduction=reduction)(x, t, vt)
            out.sum().backward()
            grads.append((out.detach(), x.grad, vt.grad))
        for ours, theirs in zip(*grads):
            assert_close(TB, ours, _np(theirs), dtype, scale=4)


PAIRS = [(ut.MSELoss, nn.MSELoss), (ut.L1Loss, nn.L1Loss), (ut.HuberLoss, nn.HuberLoss),
         (ut.SmoothL1Loss, nn.SmoothL1Loss), (ut.BCELoss, nn.BCELoss),
         (ut.BCEWithLogitsLoss, nn.BCEWithLogitsLoss), (ut.CrossEntropyLoss, nn.CrossEntropyLoss),
         (ut.KLDivLoss, nn.KLDivLoss), (ut.PoissonNLLLoss, nn.PoissonNLLLoss),
         (ut.GaussianNLLLoss, nn.GaussianNLLLoss)]


@pytest.mark.parametrize("ours,theirs", PAIRS, ids=[p[1].__name__ for p in PAIRS])
def test_drop_in_defaults_equal_torch(ours, theirs):
    a, b = ours(), theirs()
    shared = [k for k in ("reduction", "delta", "beta", "ignore_index", "label_smoothing",
                          "weight", "pos_weight", "log_target", "log_input", "full", "eps")
              if hasattr(b, k)]
    assert shared and "reduction" in shared
    for k in shared:
        assert getattr(a, k) == getattr(b, k), k
    assert a.state_dict().keys() == b.state_dict().keys()


# -- module surface -------------------------------------------------------------------------------
def test_state_dict_round_trip_and_torch_state_dict_loads():
    theirs = nn.BCEWithLogitsLoss(weight=_t(BCE_W), pos_weight=_t(POS_W))
    ours = ut.BCEWithLogitsLoss(weight=torch.ones(C, dtype=torch.float64),
                                pos_weight=torch.ones(C, dtype=torch.float64))
    assert set(ours.state_dict()) == {"weight", "pos_weight"}
    ours.load_state_dict(theirs.state_dict())            # torch's names and layout
    x, t = _t(LOGITS), _t(rng.random((N, C)))
    np.testing.assert_allclose(_np(ours(x, t)), _np(theirs(x, t)), **tolerance("float64"))
    # and through torch.save / torch.load into a fresh module
    buf = io.BytesIO()
    torch.save(ours.state_dict(), buf)
    buf.seek(0)
    fresh = ut.BCEWithLogitsLoss(weight=torch.zeros(C, dtype=torch.float64),
                                 pos_weight=torch.zeros(C, dtype=torch.float64))
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh.pos_weight, _t(POS_W)) and torch.equal(fresh.weight, _t(BCE_W))
    assert torch.equal(fresh(x, t), ours(x, t))
    # options that are not tensors are constructor arguments, not state (as in torch.nn)
    assert ut.HuberLoss(delta=0.5).state_dict() == {}


def test_float_pos_weight_is_a_buffer():
    m = ut.BCEWithLogitsLoss(pos_weight=2.0)
    assert "pos_weight" in dict(m.named_buffers())
    m = m.double()
    assert m.pos_weight.dtype == torch.float64
    x, t = _t(X), _t(Y01)
    val, _ = ref.bce_logits(X, Y01, 2.0)
    assert_close(TB, m(x, t), val.mean(), "float64")


def test_to_moves_buffers_and_outputs_follow_the_input_device():
    """The meta device stands in for an accelerator: every tensor a loss creates must be put
    on its inputs' device, or the call fails.  (Meta tensors have no values, so the eager value
    checks are turned off.)"""
    m = ut.BCEWithLogitsLoss(pos_weight=_t(POS_W, "float32")).to("meta")
    assert m.pos_weight.device.type == "meta"
    with unilosses.checks(False):
        out = m(torch.empty(N, C, device="meta"), torch.empty(N, C, device="meta"))
        assert out.device.type == "meta" and out.shape == ()
        out = ut.CrossEntropyLoss(label_smoothing=0.1).to("meta")(
            torch.empty(N, C, device="meta"), torch.zeros(N, dtype=torch.int64, device="meta"))
        assert out.device.type == "meta" and out.shape == ()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available here")
def test_cuda():
    m = ut.BCEWithLogitsLoss(pos_weight=_t(POS_W, "float32")).to("cuda")
    x = _t(LOGITS, "float32").cuda().requires_grad_(True)
    t = _t(rng.random((N, C)), "float32").cuda()
    v = m(x, t)
    v.backward()
    assert v.device.type == "cuda" and x.grad.device.type == "cuda"
    xr = _t(LOGITS, "float32", grad=True)
    vr = nn.BCEWithLogitsLoss(pos_weight=_t(POS_W, "float32"))(xr, t.cpu())
    vr.backward()
    tol = tolerance("float32")
    np.testing.assert_allclose(_np(v), _np(vr), **tol)
    np.testing.assert_allclose(_np(x.grad), _np(xr.grad), **tol)


# one module with a buffer, one choosing its function from the target's dtype, one with three
# inputs, one forwarding its options generically (a per-class buffer among them); the
# functional losses themselves are compiled one by one in test_compile.py
COMPILED = {
    "CategoricalFocalWithLogitsLoss": (
        lambda: ut.CategoricalFocalWithLogitsLoss(alpha=ALPHA_C, label_smoothing=0.1),
        lambda: (LOGITS, (_t(SOFT, "float32"),))),
    "BCEWithLogitsLoss": (lambda: ut.BCEWithLogitsLoss(pos_weight=_t(POS_W, "float32")),
                          lambda: (LOGITS, (_t(rng.random((N, C)), "float32"),))),
    "CrossEntropyLoss": (lambda: ut.CrossEntropyLoss(label_smoothing=0.1),
                         lambda: (_ce_index_inputs()[0], (_ce_index_inputs()[1],))),
    "AnchorFocalWithLogitsLoss": (
        ut.AnchorFocalWithLogitsLoss,
        lambda: (rng.normal(size=(2, 7, 3)),
                 (_t(rng.random((2, 7, 3)) > 0.7, "float32"),
                  torch.from_numpy(rng.integers(-1, 2, size=(2, 7)))))),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(COMPILED))
def test_torch_compile_fullgraph(name):
    """No graph breaks (fullgraph=True), and compiled value and gradient equal eager ones.

    backend="aot_eager" traces with Dynamo and AOTAutograd (where graph breaks and
    functionalisation problems show) without Inductor's C++ code generation, which would take
    ~30 s per module on two CPU cores."""
    make, inputs = COMPILED[name]
    torch._dynamo.reset()
    module = make()
    a, rest = inputs()
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    x1, x2 = _t(a, "float32", grad=True), _t(a, "float32", grad=True)
    v1, v2 = compiled(x1, *rest), module(x2, *rest)
    v1.backward()
    v2.backward()
    tol = tolerance("float32")
    np.testing.assert_allclose(_np(v1), _np(v2), **tol)
    np.testing.assert_allclose(_np(x1.grad), _np(x2.grad), **tol)


def test_autocast_bfloat16_is_computed_in_float32():
    lin = nn.Linear(C, C)
    inp = _t(rng.normal(size=(N, C)), "float32")
    t = _t(rng.random((N, C)), "float32")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = lin(inp)
        logits.retain_grad()
        loss = ut.BCEWithLogitsLoss()(logits, t)
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    assert logits.grad.dtype == torch.bfloat16
    # the loss of the bf16 logits, computed exactly: a float32 result within float32 rounding
    xb = logits.detach().double().numpy()
    val, grad = ref.bce_logits(xb, _np(t))
    assert_close(TB, loss.detach(), val.mean(), "float32")
    # the gradient reaches the bf16 input rounded to bf16 (8 significant bits)
    np.testing.assert_allclose(_np(logits.grad.double()), grad / grad.size, rtol=2.0**-8,
                               atol=2.0**-8 / grad.size)


def test_float16_input_returns_float32():
    x = _t(P, "float16", grad=True)
    out = ut.MSELoss()(x, _t(T, "float16"))
    out.backward()
    assert out.dtype == torch.float32 and x.grad.dtype == torch.float16
    val, _ = ref.mse(_np(x).astype(np.float64), _np(_t(T, "float16")).astype(np.float64))
    assert_close(TB, out.detach(), val.mean(), "float32")


# -- errors and imports ---------------------------------------------------------------------------
def test_options_are_checked_at_construction():
    with pytest.raises(ValueError, match="delta"):
        ut.HuberLoss(delta=0.0)
    with pytest.raises(ValueError, match="reduction"):
        ut.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match="alpha"):
        ut.BinaryFocalLoss(alpha=1.5)
    with pytest.raises(TypeError, match="ignore_index"):
        ut.SparseCategoricalCrossEntropyLoss(ignore_index=1.0)
    with pytest.raises(TypeError, match="pos_weight"):
        ut.BCEWithLogitsLoss(pos_weight="2")
    with pytest.raises(TypeError, match="`weight` must be a tensor"):
        ut.CrossEntropyLoss("balanced")
    with pytest.raises(ValueError, match="gamma"):
        ut.CategoricalFocalWithLogitsLoss(gamma=-1.0)
    with pytest.raises(ValueError, match="quantiles"):
        ut.QuantileLoss(quantiles=1.5)
    with pytest.raises(ValueError, match="normalize"):
        ut.AnchorFocalWithLogitsLoss(normalize="anchor")
    # options checked together, as the function checks them (at the first call before)
    for make in (lambda: ut.DiceLoss(eps=0.0), lambda: ut.TverskyLoss(smooth=0, eps=0.0)):
        with pytest.raises(ValueError, match="`smooth` and `eps` are both 0"):
            make()
    p, t = _t(PROB), _t(Y01)
    assert_close(TB, ut.DiceLoss(eps=0.0, smooth=1.0)(p, t),
                 ref.dice(PROB, Y01, smooth=1.0, eps=0.0), "float64")
    with pytest.raises(TypeError):
        ut.MSELoss(True)          # torch's first positional is its deprecated size_average
    with pytest.raises(TypeError):
        ut.BCEWithLogitsLoss(None, True)                   # the same, after `weight`


def test_sequence_options_are_checked_at_construction():
    """Per-class values given as a sequence are checked entry by entry when the module is made,
    as the same option given as a number is, under the option's name: out of range was
    refused only at the first call, and float() parsed "0.5", took True as 1.0 and failed on
    "a" without naming the option."""
    for make, exc, text in [
        (lambda: ut.BinaryFocalLoss(alpha=[1.5, 0.3]), ValueError, "`alpha` must lie in [0, 1]"),
        (lambda: ut.QuantileLoss(quantiles=(0.1, -0.2)), ValueError,
         "`quantiles` must lie in [0, 1]"),
        (lambda: ut.CategoricalCrossEntropyLoss(class_weights=[1.0, -1.0]), ValueError,
         "`class_weights` must be >= 0"),
        (lambda: ut.CrossEntropyLoss([1.0, float("nan")]), ValueError, "`weight` must be finite"),
        (lambda: ut.SparseCategoricalFocalLoss(alpha=["0.5", 0.5]), TypeError,
         "`alpha` must be a Python number, got str"),
        (lambda: ut.AnchorFocalLoss(alpha=[True, 0.5]), TypeError,
         "`alpha` must be a Python number, got the boolean"),
        (lambda: ut.SparseCategoricalCrossEntropyLoss(class_weights=["a", 1.0]), TypeError,
         "`class_weights` must be a Python number, got str"),
    ]:
        with pytest.raises(exc, match=re.escape(text)):
            make()
    # valid entries (NumPy scalars among them) are kept as given, in float64
    m = ut.BinaryFocalLoss(alpha=[np.float32(0.5), 1, 0.0])
    assert torch.equal(m.alpha, torch.tensor([0.5, 1.0, 0.0], dtype=torch.float64))
    x, t = _t(X[:, :3]), _t(Y01[:, :3])
    val, _ = ref.focal_logits(X[:, :3], Y01[:, :3], alpha=np.array([0.5, 1.0, 0.0]))
    assert_close(TB, ut.BinaryFocalWithLogitsLoss(alpha=(0.5, 1, 0.0))(x, t), val.mean(),
                 "float64")


def test_numpy_arrays_as_options():
    """A NumPy array is a sequence where a module takes one (alpha, quantiles, per-class
    weights, which sklearn's compute_class_weight returns as an array), as the Keras classes
    take it; where a module takes a tensor or a number (pos_weight, BCE's weight, as torch's
    modules) the refusal says so.  Both were refused with the functional losses' advice for
    jax.jit ("`alpha` must be a Python number, got ndarray. Options are fixed when a loss is
    traced: ..."), a list pos_weight with "must be a Python number"."""
    alpha = np.array([0.5, 1.0, 0.0])
    m = ut.BinaryFocalWithLogitsLoss(alpha=alpha)
    assert torch.equal(m.alpha, torch.from_numpy(alpha))
    val, _ = ref.focal_logits(X[:, :3], Y01[:, :3], alpha=alpha)
    assert_close(TB, m(_t(X[:, :3]), _t(Y01[:, :3])), val.mean(), "float64")
    x, y = _ce_index_inputs()
    ours = ut.CrossEntropyLoss(CE_W, label_smoothing=0.1)(_t(x), y)
    theirs = nn.CrossEntropyLoss(_t(CE_W), label_smoothing=0.1)(_t(x), y)
    assert_close(TB, ours, _np(theirs), "float64")
    q = ut.QuantileLoss(quantiles=np.array([0.1, 0.9]))
    assert torch.equal(q.quantiles, torch.tensor([0.1, 0.9], dtype=torch.float64))
    with pytest.raises(ValueError, match=re.escape("`quantiles` must lie in [0, 1]")):
        ut.QuantileLoss(quantiles=np.array([0.1, 1.9]))
    for make, got in [(lambda: ut.BCEWithLogitsLoss(pos_weight=np.array([1.0, 2.0])), "ndarray"),
                      (lambda: ut.BCEWithLogitsLoss(pos_weight=[1.0, 2.0]), "list"),
                      (lambda: ut.BCELoss(weight=np.array([1.0, 2.0])), "ndarray")]:
        with pytest.raises(TypeError, match=r"must be a tensor, a (float|number >= 0) or None, "
                                            rf"got {got}") as info:
            make()
        assert "jax" not in str(info.value)


def test_axes_options_are_checked_at_construction():
    """The ``axis`` of Dice, Tversky and RMSE (None, an int or a tuple of ints) is checked when
    the module is made, as every other module's ``axis`` is: it was stored as given and
    refused only at the first call.  NumPy integers are the ints they hold."""
    for make in (lambda: ut.DiceLoss(axis="a"), lambda: ut.TverskyLoss(axis=(1, 1.5)),
                 lambda: ut.RMSELoss(axis=1.5), lambda: ut.DiceLoss(axis=True)):
        with pytest.raises(TypeError, match=re.escape("`axis` must be None, an int or a tuple "
                                                      "of ints")):
            make()
    m = ut.DiceLoss(axis=[np.int64(1)])
    assert m.axis == (1,) and type(m.axis[0]) is int
    p, t = _t(PROB), _t(Y01)
    val = ref.dice(PROB, Y01, axis=(1,))
    assert_close(TB, m(p, t), np.mean(val), "float64")
    assert ut.RMSELoss(axis=np.int64(0)).axis == 0
    assert ut.TverskyLoss(axis=None).axis is None


def test_positional_options_in_torchs_order():
    """Where torch's constructor takes an option positionally with the same meaning, the
    module reads it the same way: value and gradient as torch's module."""
    gen = torch.Generator().manual_seed(3)
    x, t = torch.randn(6, 4, generator=gen, dtype=torch.float64), torch.rand(6, 4, generator=gen,
                                                                           dtype=torch.float64)
    w = torch.rand(4, generator=gen, dtype=torch.float64)
    cases = [(ut.HuberLoss("sum", 0.5), nn.HuberLoss("sum", 0.5), x, t),
             (ut.BCELoss(w), nn.BCELoss(w), torch.sigmoid(x), t.round()),
             (ut.BCEWithLogitsLoss(w), nn.BCEWithLogitsLoss(w), x, t),
             (ut.PoissonNLLLoss(False, True), nn.PoissonNLLLoss(False, True), x.exp(), 3 * t)]
    for ours, theirs, inp, target in cases:
        a, b = inp.clone().requires_grad_(True), inp.clone().requires_grad_(True)
        va, vb = ours(a, target), theirs(b, target)
        va.backward()
        vb.backward()
        assert_close(TB, va.detach(), vb.detach().numpy(), "float64")
        assert_close(TB, a.grad, b.grad.numpy(), "float64")


def test_forward_errors_come_from_the_functional_loss():
    with pytest.raises(ValueError, match="must match exactly"):
        ut.MSELoss()(torch.zeros(3, 1), torch.zeros(3))


def test_repr_shows_the_options():
    assert repr(ut.HuberLoss(delta=0.5)) == "HuberLoss(reduction='mean', delta=0.5)"
    assert repr(ut.AnchorFocalLoss(gamma=1.0)) == \
        "AnchorFocalLoss(alpha=0.25, gamma=1.0, normalize='batch')"


def test_import_without_torch_says_what_to_install():
    code = ("import sys\n"
            "sys.modules['torch'] = None  # what Python does for a package that is absent\n"
            "try:\n"
            "    import unilosses.torch\n"
            "except ImportError as e:\n"
            "    print(e)\n"
            "else:\n"
            "    raise SystemExit('no ImportError')\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert 'pip install "unilosses[torch]"' in out


def test_import_unilosses_does_not_import_the_front_ends():
    code = ("import sys, unilosses\n"
            "bad = [m for m in ('unilosses.torch', 'unilosses.keras', 'torch', 'keras') "
            "if m in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
