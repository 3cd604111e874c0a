"""The loss catalogue of issue 9 on every backend, against the float64 references in
reference.py: values for both dtypes, weights and masks (``"weighted_mean"`` too), masks equal
to slicing and blocking NaN, gradients (analytic where the reference writes one, else
4th-order central differences of the reference), on JAX under ``jax.jit`` with the mask and
weights traced.  (test_compile.py runs each public loss under jit, vmap and torch.compile
against the eager call.)

One table (``SPECS``) drives every test: a new loss is one more row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import reference as ref
import unilosses
from conftest import Backend, assert_close, installed, tolerance

DTYPES = ("float32", "float64")
N, C = 4, 5


class Spec:
    """One loss configuration.

    ``build(rng)``: the positional arrays (NumPy; floats float64, labels int).
    ``ref(*args)``: the float64 elementwise loss.  ``grad(*args)``: its derivative with respect
    to ``args[0]`` where it is elementwise and written out (else finite differences).
    ``norm(*args)``: the per-element weights already inside the loss that "weighted_mean"
    divides by (class weights).  ``pixel_where``: ``where`` masks elements of the predictions
    and drops coefficients with none left (Dice/Tversky) instead of elements of the loss.
    ``scale``: tolerance factor (each use says why).  ``held(*args)``: the reference whose
    differences are the gradient at ``args`` where the loss stops a gradient (CIoU's alpha).
    """

    def __init__(self, fn: Callable[..., Any], build: Callable[[Any], tuple], ref: Callable,
                 kw: dict | None = None, *, grad: Callable | None = None,
                 norm: Callable | None = None, pixel_where: tuple[int, ...] | None = None,
                 scale: float = 5.0, held: Callable | None = None) -> None:
        self.fn, self.build, self.ref, self.kw = fn, build, ref, kw or {}
        self.grad, self.norm, self.pixel_where, self.scale = grad, norm, pixel_where, scale
        self.held = held


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(list(name.encode()))


# -- inputs -------------------------------------------------------------------------------------
def _logits_onehot(r):  # type: ignore[no-untyped-def]
    return r.normal(size=(N, C)) * 2, np.eye(C)[r.integers(0, C, N)]


def _logits_soft(r):  # type: ignore[no-untyped-def]
    return r.normal(size=(N, C)) * 2, r.dirichlet(np.ones(C), N)


def _probs_soft(r):  # type: ignore[no-untyped-def]
    # not normalised: the categorical probability losses renormalise, as Keras does
    return r.dirichlet(np.ones(C), N) * 1.3 + 0.01, r.dirichlet(np.ones(C), N)


def _logits_labels(r):  # type: ignore[no-untyped-def]
    return r.normal(size=(N, C)) * 2, r.integers(0, C, N)


def _probs_labels(r):  # type: ignore[no-untyped-def]
    return r.dirichlet(np.ones(C), N) + 0.01, r.integers(0, C, N)


def _binary_probs(r):  # type: ignore[no-untyped-def]
    return r.uniform(0.02, 0.98, (N, C)), (r.random((N, C)) > 0.5) * 1.0


def _binary_logits(r):  # type: ignore[no-untyped-def]
    return r.normal(size=(N, C)) * 2, (r.random((N, C)) > 0.5) * 1.0


def _log_dists(r):  # type: ignore[no-untyped-def]
    t = r.dirichlet(np.ones(C), N)
    t[0, 1] = 0.0                        # a zero target: the 0 log 0 = 0 convention
    return np.log(r.dirichlet(np.ones(C), N)), t / t.sum(-1, keepdims=True)


def _away_from(x, kinks, margin=0.05):  # type: ignore[no-untyped-def]
    """``x`` with entries near a kink pushed off it (finite differences need smoothness)."""
    for k in kinks:
        near = np.abs(x - k) < margin
        x = np.where(near, k + np.where(x >= k, margin, -margin), x)
    return x


def _hinge01(r):  # type: ignore[no-untyped-def]
    t = (r.random((N, C)) > 0.5) * 1.0
    p = _away_from(r.normal(size=(N, C)) * 1.5, (-1.0, 1.0))
    return p, t


def _hinge_pm(r):  # type: ignore[no-untyped-def]
    p, t = _hinge01(r)
    return p, 2 * t - 1


def _cat_hinge(r):  # type: ignore[no-untyped-def]
    for _ in range(100):
        p, t = r.normal(size=(N, C)), np.eye(C)[r.integers(0, C, N)]
        w = (1 - t) * p
        top2 = np.sort(w, -1)[:, -2:]
        z = w.max(-1) - (t * p).sum(-1) + 1
        if np.all(top2[:, 1] - top2[:, 0] > 0.05) and np.all(np.abs(z) > 0.05):
            return p, t
    raise AssertionError("no smooth categorical-hinge input found")


def _regression(r):  # type: ignore[no-untyped-def]
    t = r.normal(size=(N, C)) * 2
    return t + _away_from(r.normal(size=(N, C)), (0.0,)), t


def _positive(r):  # type: ignore[no-untyped-def]
    return r.uniform(0.1, 4.0, (N, C)), r.uniform(0.1, 4.0, (N, C))


def _counts(r):  # type: ignore[no-untyped-def]
    return r.normal(size=(N, C)), r.integers(0, 6, (N, C)) * 1.0


def _gaussian(r, per_row=False):  # type: ignore[no-untyped-def]
    v = r.uniform(0.2, 2.0, (N,) if per_row else (N, C))
    return r.normal(size=(N, C)), r.normal(size=(N, C)), v


def _quantiles(r):  # type: ignore[no-untyped-def]
    t = r.normal(size=(N,)) * 2
    return t[:, None] + _away_from(r.normal(size=(N, 3)), (0.0,)), t


def _seg(r, classes=None):  # type: ignore[no-untyped-def]
    shape = (N, 3, 3) if classes is None else (N, 3, 3, classes)
    if classes is None:
        return r.uniform(0.05, 0.95, shape), (r.random(shape) > 0.5) * 1.0
    return r.dirichlet(np.ones(classes), shape[:-1]), np.eye(classes)[r.integers(0, classes,
                                                                             shape[:-1])]


def _boxes(r, n=6):  # type: ignore[no-untyped-def]
    def boxes():  # type: ignore[no-untyped-def]
        xy = r.uniform(0, 4, (n, 2))
        return np.concatenate([xy, xy + r.uniform(0.3, 3, (n, 2))], -1)
    b, g = boxes(), boxes()
    g[0] = b[0] + 0.2                    # an overlapping pair
    g[1] = b[1] + np.array([5.0, 5.0, 5.0, 5.0])   # a disjoint one
    return b, g


CW = np.array([1.0, 0.5, 2.0, 0.0, 1.5])          # class weights, one of them 0
ALPHA = np.array([0.1, 0.3, 0.5, 0.7, 0.9])       # per-class focal alpha
Q3 = np.array([0.1, 0.5, 0.9])


def _first(f):  # type: ignore[no-untyped-def]
    return lambda *a: f(*a)[0]


def _second(f):  # type: ignore[no-untyped-def]
    return lambda *a: f(*a)[1]


U = unilosses
SPECS: dict[str, Spec] = {
    # binary label smoothing (Keras: towards 0.5)
    "bce_smoothing": Spec(U.binary_cross_entropy, _binary_probs,
                          lambda p, t: ref.bce(p, ref.smooth_binary(t, 0.2))[0],
                          {"label_smoothing": 0.2},
                          grad=lambda p, t: ref.bce(p, ref.smooth_binary(t, 0.2))[1]),
    "bce_logits_smoothing": Spec(
        U.binary_cross_entropy_with_logits, _binary_logits,
        lambda x, t: ref.bce_logits(x, ref.smooth_binary(t, 0.1), 2.0)[0],
        {"label_smoothing": 0.1, "pos_weight": 2.0},
        grad=lambda x, t: ref.bce_logits(x, ref.smooth_binary(t, 0.1), 2.0)[1]),
    # class weights, torch's normalisation through "weighted_mean"
    "cce_logits_class_weights": Spec(
        U.categorical_cross_entropy_with_logits, _logits_soft,
        lambda x, t: ref.cce_weighted(x, t, CW, 0.1)[0],
        {"class_weights": CW, "label_smoothing": 0.1},
        norm=lambda x, t: ref.cce_weighted(x, t, CW)[1]),
    "cce_probs_class_weights": Spec(
        U.categorical_cross_entropy, _probs_soft,
        lambda p, t: (CW * t * -np.log(np.clip(p / p.sum(-1, keepdims=True), ref.EPS,
                                               1 - ref.EPS))).sum(-1),
        {"class_weights": CW}, norm=lambda p, t: (CW * t).sum(-1)),
    "sparse_logits_class_weights": Spec(
        U.sparse_categorical_cross_entropy_with_logits, _logits_labels,
        lambda x, y: ref.sparse_weighted(x, y, CW, 0.1)[0],
        {"class_weights": CW, "label_smoothing": 0.1},
        norm=lambda x, y: ref.sparse_weighted(x, y, CW)[1]),
    "sparse_probs_class_weights": Spec(
        U.sparse_categorical_cross_entropy, _probs_labels,
        lambda p, y: CW[y] * -np.log(np.take_along_axis(
            p / p.sum(-1, keepdims=True), y[:, None], -1)[:, 0]),
        {"class_weights": CW}, norm=lambda p, y: CW[y]),
    # focal: per-class alpha, categorical and sparse forms
    "binary_focal_logits_alpha": Spec(
        U.binary_focal_loss_with_logits, _binary_logits,
        lambda x, t: ref.focal_logits(x, t, ALPHA, 2.0)[0], {"alpha": ALPHA},
        grad=lambda x, t: ref.focal_logits(x, t, ALPHA, 2.0)[1]),
    "binary_focal_probs_alpha": Spec(
        U.binary_focal_loss, _binary_probs,
        lambda p, t: ref.focal_probs(p, t, ALPHA, 1.5)[0], {"alpha": ALPHA, "gamma": 1.5},
        grad=lambda p, t: ref.focal_probs(p, t, ALPHA, 1.5)[1]),
    "categorical_focal_logits": Spec(
        U.categorical_focal_loss_with_logits, _logits_soft,
        lambda x, t: ref.categorical_focal_logits(x, t, ALPHA, 2.0, 0.1),
        {"alpha": ALPHA, "label_smoothing": 0.1}),
    "categorical_focal_logits_g05": Spec(
        U.categorical_focal_loss_with_logits, _logits_onehot,
        lambda x, t: ref.categorical_focal_logits(x, t, None, 0.5),
        {"alpha": None, "gamma": 0.5}),
    "categorical_focal_probs": Spec(
        U.categorical_focal_loss, _probs_soft,
        lambda p, t: ref.categorical_focal_probs(p, t, 0.25, 2.0)),
    "sparse_focal_logits": Spec(
        U.sparse_categorical_focal_loss_with_logits, _logits_labels,
        lambda x, y: ref.categorical_focal_logits(x, ref.one_hot(y, C), ALPHA, 3.0, 0.2),
        {"alpha": ALPHA, "gamma": 3.0, "label_smoothing": 0.2}),
    "sparse_focal_probs": Spec(
        U.sparse_categorical_focal_loss, _probs_labels,
        lambda p, y: ref.categorical_focal_probs(p, ref.one_hot(y, C), 0.25, 2.0)),
    "poly1": Spec(U.poly1_cross_entropy_with_logits, _logits_soft,
                  lambda x, t: ref.poly1(x, t, 2.0)),
    # distributions
    "kl": Spec(U.kl_divergence, _log_dists, lambda x, t: ref.kl(x, t).sum(-1)),
    "kl_pointwise": Spec(U.kl_divergence, _log_dists, ref.kl, {"axis": None},
                         grad=lambda x, t: -t),
    "poisson_log_full": Spec(U.poisson_nll, _counts, _first(lambda x, k: ref.poisson_nll(
        x, k, full=True)), {"full": True}, grad=_second(ref.poisson_nll)),
    "poisson_rates": Spec(U.poisson_nll, lambda r: (r.uniform(0.1, 3, (N, C)), _counts(r)[1]),
                          _first(lambda x, k: ref.poisson_nll(x, k, False)),
                          {"log_input": False},
                          grad=_second(lambda x, k: ref.poisson_nll(x, k, False))),
    "gaussian_full": Spec(U.gaussian_nll, _gaussian,
                          _first(lambda p, t, v: ref.gaussian_nll(p, t, v, True)),
                          {"full": True}, grad=_second(ref.gaussian_nll)),
    # margins
    "hinge_01": Spec(U.hinge, _hinge01, _first(ref.hinge), grad=_second(ref.hinge)),
    "squared_hinge_pm1": Spec(U.squared_hinge, _hinge_pm, _first(lambda p, t: ref.hinge(
        p, t, True)), grad=_second(lambda p, t: ref.hinge(p, t, True))),
    "categorical_hinge": Spec(U.categorical_hinge, _cat_hinge, ref.categorical_hinge),
    # regression and similarity
    "cosine": Spec(U.cosine_similarity_loss, _regression, ref.cosine_loss),
    "quantile_many": Spec(U.quantile_loss, _quantiles,
                          _first(lambda p, t: ref.quantile(p, t[:, None], Q3)),
                          {"quantiles": Q3},
                          grad=_second(lambda p, t: ref.quantile(p, t[:, None], Q3))),
    "msle": Spec(U.msle, _positive, _first(ref.msle), grad=_second(ref.msle)),
    # a percentage: values ~100x the inputs' scale
    "mape": Spec(U.mape, _regression, _first(ref.mape), grad=_second(ref.mape), scale=50.0),
    # segmentation (ratios of sums over 9 pixels)
    "dice_binary": Spec(U.dice_loss, _seg, lambda p, t, where=None: ref.dice(
        p, t, (1, 2), where=where), {"axis": (1, 2)}, pixel_where=(1, 2)),
    "dice_multiclass_smooth": Spec(
        U.dice_loss, lambda r: _seg(r, 3),
        lambda p, t, where=None: ref.dice(p, t, (1, 2), smooth=1.0, where=where),
        {"axis": (1, 2), "smooth": 1.0}, pixel_where=(1, 2)),
    "tversky_per_class": Spec(
        U.tversky_loss, lambda r: _seg(r, 3),
        lambda p, t, where=None: ref.tversky(p, t, (0, 1, 2), 0.3, 0.7, where=where),
        {"axis": (0, 1, 2), "alpha": 0.3, "beta": 0.7}, pixel_where=(0, 1, 2)),
    # boxes
    "giou": Spec(U.giou_loss, _boxes, lambda b, g: ref.box_losses(b, g)[0]),
    "diou": Spec(U.diou_loss, _boxes, lambda b, g: ref.box_losses(b, g)[1]),
    "ciou": Spec(U.ciou_loss, _boxes, lambda b, g: ref.box_losses(b, g)[2],
                 held=lambda b, g: lambda x, g2: ref.box_losses(x, g2, alpha_at=b)[2]),
}
INPUTS = {name: spec.build(_rng(name)) for name, spec in SPECS.items()}
NAMES = sorted(SPECS)


# -- helpers ------------------------------------------------------------------------------------
def _cast(args: tuple, dtype: str) -> list:
    return [a.astype(dtype) if a.dtype.kind == "f" else a for a in args]


def _backend_kw(b, kw: dict) -> dict:  # type: ignore[no-untyped-def]
    return {k: b.asarray(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}


def _call(b, spec: Spec, args, **extra):  # type: ignore[no-untyped-def]
    return spec.fn(*[b.asarray(a) for a in args], **_backend_kw(b, spec.kw), **extra)


def _loss_shape(spec: Spec, args) -> tuple[int, ...]:  # type: ignore[no-untyped-def]
    return np.shape(spec.ref(*args))


def _weighted(spec: Spec, args, reduction, weights=None, where=None):  # type: ignore[no-untyped-def]
    """The reference reduction, "weighted_mean" included, with a loss-shaped mask."""
    loss = spec.ref(*args)
    if reduction != "weighted_mean":
        return ref.reduce(loss, reduction, weights, where)
    w = np.ones(loss.shape) if weights is None else np.broadcast_to(weights, loss.shape)
    # the class weights are inside the loss already; the divisor counts them too
    norm = w if spec.norm is None else w * spec.norm(*args)
    m = np.ones(loss.shape, bool) if where is None else np.broadcast_to(where, loss.shape)
    den = np.where(m, norm, 0).sum()
    return 0.0 if den == 0 else np.where(m, w * loss, 0).sum() / den


def _row_mask(spec: Spec, args, keep: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """``keep`` along the first axis, shaped to broadcast as ``where``."""
    ndim = args[0].ndim if spec.pixel_where is not None else len(_loss_shape(spec, args))
    return keep.reshape((-1,) + (1,) * (ndim - 1))


def fd_grad(f: Callable[[np.ndarray], float], x: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """4th-order central differences of the float64 scalar ``f`` at ``x``."""
    g = np.zeros_like(x, dtype=np.float64)
    x = x.astype(np.float64)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = (-f(x + 2 * e) + 8 * f(x + e) - 8 * f(x - e) + f(x - 2 * e)) / (12 * h)
    return g


def expected_grad(spec: Spec, args, cot: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """d/d args[0] of sum(cot * loss)."""
    if spec.grad is not None:
        return cot * spec.grad(*args)
    ref = spec.ref if spec.held is None else spec.held(*args)
    return fd_grad(lambda x: float((cot * ref(x, *args[1:])).sum()), args[0])


# -- values -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_values(xp, name):
    spec = SPECS[name]
    # the reductions are Call.reduce's, shared by every loss (the weights test below covers
    # "mean", "weighted_mean" and "none" again, the gradient test "sum")
    for dtype, reduction in (("float32", "mean"), ("float64", "none")):
        args = _cast(INPUTS[name], dtype)
        out = _call(xp, spec, args, reduction=reduction)
        assert_close(xp, out, _weighted(spec, args, reduction), dtype, scale=spec.scale)


@pytest.mark.parametrize("name", NAMES)
def test_weights_mask_and_weighted_mean(xp, name):
    spec = SPECS[name]
    args = INPUTS[name]
    r = _rng(name + "/w")
    shape = _loss_shape(spec, args)
    w = r.uniform(0.5, 2.0, shape[-1:])
    if spec.pixel_where is None:
        m = r.random(shape) > 0.3
        m.reshape(-1)[:2] = (False, True)
        group, ref_args = m, args
    else:
        pixels = r.random(args[0].shape) > 0.3
        m = pixels
        group = pixels.sum(axis=spec.pixel_where) > 0
        ref_args = args

    def reference(reduction):  # type: ignore[no-untyped-def]
        if spec.pixel_where is None:
            return _weighted(spec, ref_args, reduction, w, group)
        masked = Spec(lambda *a: None, spec.build, lambda *a: spec.ref(*a, where=pixels))
        return _weighted(masked, ref_args, reduction, w, group)

    for reduction in ("mean", "weighted_mean", "none"):
        out = _call(xp, spec, args, weights=xp.asarray(w), where=xp.asarray(m),
                    reduction=reduction)
        assert_close(xp, out, reference(reduction), "float64", scale=spec.scale)


@pytest.mark.parametrize("backend", [
    pytest.param(n, marks=[] if installed(n) else [pytest.mark.skip(reason=f"{n} is not "
                                                                     f"installed")])
    for n in ("numpy", "array_api_strict")])
@pytest.mark.parametrize("name", NAMES)
def test_mask_equals_slicing_and_blocks_nan(backend, name):
    """A row masked out (and poisoned with NaN) is the loss of the other rows: compared with
    the reference on the sliced inputs (the sliced call itself is test_values' business).
    The differentiable backends check this in test_gradient's masked pass."""
    xp = Backend(backend)
    spec = SPECS[name]
    args = INPUTS[name]
    keep = np.ones(args[0].shape[0], bool)
    keep[1] = False
    bad = args[0].copy()
    bad[~keep] = np.nan
    masked = _call(xp, spec, (bad,) + tuple(args[1:]), where=xp.asarray(_row_mask(spec, args,
                                                                                 keep)))
    assert_close(xp, masked, _weighted(spec, [a[keep] for a in args], "mean"), "float64",
                 scale=spec.scale)


# -- gradients ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_gradient(ad_backend, name):
    """float32 plain; float64 with the first row masked out and poisoned with inf and NaN,
    which must reach neither the gradient nor the value."""
    spec, b = SPECS[name], ad_backend
    clean = INPUTS[name]
    keep = np.ones(clean[0].shape[0], bool)
    keep[0] = False
    for dtype, masked in (("float32", False), ("float64", True)):
        args = _cast(clean, dtype)
        ref_args = [a.astype(np.float64) if a.dtype.kind == "f" else a for a in args]
        cot = _rng(name + "/cot").uniform(0.5, 1.5, _loss_shape(spec, args))
        extra = {}
        if masked:
            m = _row_mask(spec, args, keep)
            extra["where"] = b.asarray(m)
            poisoned = args[0].copy()
            poisoned[0] = np.inf
            poisoned.reshape(-1)[0] = np.nan
            args = [poisoned] + list(args[1:])
            if spec.pixel_where is None:
                cot = cot * np.broadcast_to(m, cot.shape)
        kw = {**_backend_kw(b, spec.kw), **extra, "weights": b.asarray(cot)}

        def loss(x, *rest, kw=kw):  # type: ignore[no-untyped-def]
            return spec.fn(x, *rest, reduction="sum", **kw)

        if masked and b.name == "jax":
            # under jax.jit, mask and weights traced arguments: no Python branching on
            # values, no boolean indexing, no host reads
            import jax

            traced = jax.jit(lambda x, mask, w, *rest: spec.fn(
                x, *rest, where=mask, weights=w, reduction="sum", **_backend_kw(b, spec.kw)))

            def loss(x, *rest, kw=kw, traced=traced):  # type: ignore[no-untyped-def]  # noqa: F811
                return traced(x, kw["where"], kw["weights"], *rest)

        v, g = b.value_and_grad(loss, *[b.asarray(a) for a in args])
        used = spec
        if masked and spec.pixel_where is not None:
            pixels = np.broadcast_to(m, ref_args[0].shape)
            used = Spec(spec.fn, spec.build, lambda *a, pixels=pixels: spec.ref(*a,
                                                                                where=pixels))
        expected = expected_grad(used, ref_args, cot)
        assert str(g.dtype) == dtype
        assert np.isfinite(v) and np.all(np.isfinite(g))
        if masked:
            assert np.all(g[0] == 0)
            # the masked row is left out, as if sliced away, and its NaN with it
            group = np.broadcast_to(m, cot.shape) if spec.pixel_where is None else \
                pixels.sum(axis=spec.pixel_where) > 0
            np.testing.assert_allclose(v, _weighted(used, ref_args, "sum", cot, group),
                                       rtol=1e-12 * spec.scale, err_msg=name)
        # differences of a float64 reference: ~1e-10 relative at best
        tol = max(tolerance(dtype)["rtol"] * spec.scale, 1e-8)
        np.testing.assert_allclose(g, expected, rtol=tol, atol=tol, err_msg=name)
