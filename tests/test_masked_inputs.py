"""Masked elements whose inputs hold NaN or inf: the value leaves them out whether or not the
inputs are replaced first, and the gradient in any argument (predictions, targets, weights) is
zero there and finite.  The elementwise losses replace masked inputs only where a gradient can
reach them (``Call.clean(..., grad_only=True)``; ``Adapter.no_gradient``)."""

from __future__ import annotations

import numpy as np
import pytest

import unilosses
from conftest import assert_close, installed

rng = np.random.default_rng(7)
SHAPE = (4, 6)

# name -> (function, options, whether it takes `reduction`)
CASES = {
    "mse": (unilosses.mse, {}, True),
    "mae": (unilosses.mae, {}, True),
    "huber": (unilosses.huber, {"delta": 0.5}, True),
    "smooth_l1": (unilosses.smooth_l1, {"beta": 2.0}, True),
    "log_cosh": (unilosses.log_cosh, {}, True),
    "msle": (unilosses.msle, {}, True),
    "mape": (unilosses.mape, {}, True),
    "quantile": (unilosses.quantile_loss, {"quantiles": 0.3}, True),
    "rmse": (unilosses.rmse, {}, False),
    "bce_logits": (unilosses.binary_cross_entropy_with_logits, {}, True),
    "bce_logits_pos_weight": (unilosses.binary_cross_entropy_with_logits,
                              {"pos_weight": 3.0}, True),
    "focal_logits": (unilosses.binary_focal_loss_with_logits, {}, True),
    "focal_logits_alpha": (unilosses.binary_focal_loss_with_logits,
                           {"alpha": np.linspace(0.2, 0.7, SHAPE[1]), "gamma": 1.5}, True),
    # per row (the class axis last): the mask, the weights and the loss of shape SHAPE[:1]
    "categorical_logits": (unilosses.categorical_cross_entropy_with_logits,
                           {"label_smoothing": 0.1}, True),
    "categorical_probs": (unilosses.categorical_cross_entropy, {}, True),
    "sparse_logits": (unilosses.sparse_categorical_cross_entropy_with_logits,
                      {"label_smoothing": 0.1}, True),
    "sparse_logits_class_weights": (unilosses.sparse_categorical_cross_entropy_with_logits,
                                    {"class_weights": np.linspace(0.5, 2.0, SHAPE[1])}, True),
    "poly1_logits": (unilosses.poly1_cross_entropy_with_logits, {"epsilon": 2.0}, True),
}
ROWS = ("categorical_logits", "categorical_probs", "sparse_logits",
        "sparse_logits_class_weights", "poly1_logits")


def _inputs(name: str):  # type: ignore[no-untyped-def]
    """Clean inputs, their copies with NaN/inf where the mask is False, and the mask."""
    if name in ROWS:
        return _row_inputs(name)
    p = rng.normal(size=SHAPE) * 2
    t = rng.random(SHAPE) if name[:3] in ("bce", "foc") else rng.normal(size=SHAPE) * 2
    if name == "msle":
        p, t = np.abs(p), np.abs(t)
    w = rng.uniform(0.5, 2.0, SHAPE)
    m = rng.random(SHAPE) > 0.3
    m[0] = False
    m[1, 0] = True
    bad = []
    for a, fills in ((p, (np.nan, np.inf, -np.inf)), (t, (np.inf, np.nan, -np.inf)),
                     (w, (np.nan, np.inf, np.inf))):
        b = a.copy()
        b[0, 0::3], b[0, 1::3], b[0, 2::3] = fills
        b[~m & (np.arange(SHAPE[1]) % 2 == 1)] = fills[1]
        bad.append(b)
    return (p, t, w), tuple(bad), m


def _row_inputs(name: str):  # type: ignore[no-untyped-def]
    """As _inputs, for the losses over the class axis: rows 0 and 2 masked."""
    rows, classes = SHAPE
    p = rng.normal(size=SHAPE) * 2
    if name == "categorical_probs":
        p = rng.dirichlet(np.ones(classes), size=rows)
    if name.startswith("sparse"):
        t = rng.integers(0, classes, size=rows)
    else:
        t = rng.dirichlet(np.ones(classes), size=rows)
    w = rng.uniform(0.5, 2.0, rows)
    m = np.array([False, True, False, True])
    pb, tb, wb = p.copy(), t.copy(), w.copy()
    pb[0, :3], pb[2, 3:] = np.nan, np.inf
    if name == "categorical_probs":  # (its probabilities are checked, masked rows too)
        pb = p.copy()
    if name.startswith("sparse"):
        tb[0], tb[2] = classes + 5, -3  # out of range where masked
    else:
        tb[0, 1:], tb[2, :2] = np.inf, np.nan
    wb[0], wb[2] = np.nan, np.inf
    return (p, t, w), (pb, tb, wb), m


def _call(name, x, y, w, m, reduction, like=None):  # type: ignore[no-untyped-def]
    """The loss ``name``; ``like``: converts its array options (alpha, class weights) to the
    inputs' framework and dtype."""
    fn, kw, reduces = CASES[name]
    kw = {k: like(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()}
    if reduces:
        kw = {**kw, "reduction": reduction}
    return fn(x, y, weights=w, where=m, **kw)


def _converted(xp, arrays, dtype):  # type: ignore[no-untyped-def]
    """``arrays`` in ``xp`` and ``dtype``, integer labels left integer."""
    return [xp.asarray(a) if a.dtype.kind == "i" else xp.asarray(a, dtype) for a in arrays]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("reduction", ["mean", "none", "weighted_mean"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_masked_nan_leaves_the_value_alone(xp, name, reduction, dtype):
    (p, t, w), (pb, tb, wb), m = _inputs(name)
    conv = _converted(xp, (p, t, w, pb, tb, wb), dtype)
    mask = xp.asarray(m)

    def like(a):  # type: ignore[no-untyped-def]
        return xp.asarray(a, dtype)

    want = _call(name, conv[0], conv[1], conv[2], mask, reduction, like)
    got = _call(name, conv[3], conv[4], conv[5], mask, reduction, like)
    out = xp.to_numpy(want)
    assert np.all(np.isfinite(out))
    assert_close(xp, got, out, dtype)
    # weights broadcast (here a scalar) take the full path
    got = _call(name, conv[3], conv[4], xp.asarray(w[1], dtype), mask, reduction, like)
    want = _call(name, conv[0], conv[1], xp.asarray(w[1], dtype), mask, reduction, like)
    assert_close(xp, got, xp.to_numpy(want), dtype)


def _grads(backend: str, name: str, arrays, m, argnum: int):  # type: ignore[no-untyped-def]
    """The value and the gradient of the summed masked loss in ``arrays[argnum]`` alone."""
    if backend == "torch":
        import torch

        xs = [torch.tensor(a) for a in arrays]
        xs[argnum].requires_grad_(True)
        v = _call(name, *xs, torch.tensor(m), "sum", torch.tensor)
        (g,) = torch.autograd.grad(v, xs[argnum])
        return v.detach().numpy(), g.numpy()
    if backend == "jax":
        import jax

        xs = [jax.numpy.asarray(a) for a in arrays]

        def f(a):  # type: ignore[no-untyped-def]
            args = list(xs)
            args[argnum] = a
            return _call(name, *args, jax.numpy.asarray(m), "sum", jax.numpy.asarray)

        v, g = jax.value_and_grad(f)(xs[argnum])
        return np.asarray(v), np.asarray(g)
    import tensorflow as tf

    xs = [tf.constant(a) for a in arrays]
    with tf.GradientTape() as tape:
        tape.watch(xs[argnum])
        v = _call(name, *xs, tf.constant(m), "sum", tf.constant)
    return v.numpy(), tape.gradient(v, xs[argnum]).numpy()


@pytest.mark.parametrize(("name", "argnum"), [
    pytest.param(name, argnum, id=f"{name}-{what}") for name in sorted(CASES)
    for argnum, what in enumerate(("predictions", "targets", "weights"))
    if not (argnum == 1 and name.startswith("sparse"))])  # (integer labels: no gradient)
def test_masked_nan_gradient_in_any_argument(ad_backend, name, argnum):
    clean, bad, m = _inputs(name)
    v_want, g_want = _grads(ad_backend.name, name, clean, m, argnum)
    v, g = _grads(ad_backend.name, name, bad, m, argnum)
    assert np.all(np.isfinite(g)) and np.all(g[~m] == 0)
    np.testing.assert_allclose(v, v_want, rtol=1e-13)
    np.testing.assert_allclose(g, g_want, rtol=1e-13, atol=1e-15)


torch_only = pytest.mark.skipif(not installed("torch"), reason="torch is not installed")


def _where_count(fn):  # type: ignore[no-untyped-def]
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            out = func(*args, **(kwargs or {}))
            if func.overloadpacket is torch.ops.aten.where and out.dim() > 0:
                Count.n += 1  # (not the 0-d one of a masked mean's count)
            return out

    with Count():
        out = fn()
    return out, Count.n


@torch_only
@pytest.mark.parametrize("full_path", [False, True])
@pytest.mark.parametrize("name", ["mse", "huber", "bce_logits"])
def test_torch_without_gradient_masks_only_the_loss(name, full_path):
    """Under ``torch.no_grad`` (or with nothing requiring grad) the loss is masked once; with
    a gradient wanted the inputs and weights are replaced too."""
    import torch

    (p, t, w), (pb, tb, wb), m = _inputs(name)
    if full_path:  # weights broadcast along the rows: prepare's full path
        w, wb = w[1], w[1]
    x, y, wt, mask = (torch.tensor(a, dtype=torch.float32) for a in (pb, tb, wb, m))
    mask = mask.bool()
    want = _call(name, *(torch.tensor(a, dtype=torch.float32) for a in (p, t, w)), mask, "sum")
    x.requires_grad_(True)
    with torch.no_grad():
        got, n = _where_count(lambda: _call(name, x, y, wt, mask, "sum"))
    assert n == 1
    torch.testing.assert_close(got, want)
    got, n = _where_count(lambda: _call(name, x.detach(), y, wt, mask, "sum"))
    assert n == 1
    torch.testing.assert_close(got, want)
    got, n_grad = _where_count(lambda: _call(name, x, y, wt, mask, "sum"))
    assert n_grad > 1
    (g,) = torch.autograd.grad(got, x)
    assert torch.isfinite(g).all() and (g[~mask] == 0).all()


@torch_only
@pytest.mark.parametrize("name", sorted(CASES))
def test_torch_func_grad_and_forward_ad_under_no_grad(name):
    """torch.func.grad differentiates inside ``no_grad`` (its inputs require grad there), and
    forward-mode tangents pass the final select as they are: both stay finite."""
    import torch
    import torch.autograd.forward_ad as fwAD

    clean, bad, m = _inputs(name)
    mask = torch.tensor(m)
    c = [torch.tensor(a) for a in clean]
    b = [torch.tensor(a) for a in bad]
    with torch.no_grad():
        want = torch.func.grad(lambda a: _call(name, a, c[1], c[2], mask, "sum",
                                               torch.tensor))(c[0])
        got = torch.func.grad(lambda a: _call(name, a, b[1], b[2], mask, "sum",
                                              torch.tensor))(b[0])
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-15)
    tangent = torch.tensor(rng.normal(size=clean[0].shape))
    tangents = []
    for args in (c, b):
        with fwAD.dual_level():
            dual = fwAD.make_dual(args[0], tangent)
            out = _call(name, dual, args[1], args[2], mask, "sum", torch.tensor)
            tangents.append(fwAD.unpack_dual(out).tangent)
    assert torch.isfinite(tangents[1])
    torch.testing.assert_close(tangents[1], tangents[0], rtol=1e-13, atol=1e-15)


# -- torch's CPU select of a mask applied several times (_torch_kernels.mask_selector) -----------
LARGE = (256, 300)  # over MASK_SELECT_MIN elements


def _large(dtype):  # type: ignore[no-untyped-def]
    import torch

    g = torch.Generator().manual_seed(3)
    mask = torch.rand(LARGE, generator=g) > 0.4
    x = torch.randn(LARGE, generator=g, dtype=torch.float64)
    x[0, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    x[1, :4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0])
    mask[0, :4], mask[1, :4] = False, True
    if dtype in ("int32", "int64"):
        x = (torch.nan_to_num(x) * 100).to(getattr(torch, dtype))
    return mask, x.to(getattr(torch, dtype))


@torch_only
@pytest.mark.parametrize("dtype", ["float32", "float64", "int32", "int64"])
def test_mask_select_is_where_bit_for_bit(dtype):
    import torch

    from unilosses.backends import _torch_kernels as tk

    mask, x = _large(dtype)
    select = tk.mask_selector(mask)
    assert select is not None
    want = torch.where(mask, x, 0)
    got = select(x)
    assert got.dtype == x.dtype and got.shape == x.shape
    kind = tk._BITS[x.dtype]
    assert torch.equal(got.view(kind), want.view(kind))  # NaN, -0.0 and +0.0 alike
    # a transposed view, and an array of another shape (torch.where's broadcast)
    assert torch.equal(select(x.T.contiguous().T).view(kind), want.view(kind))
    assert torch.equal(select(x[:1]).view(kind), torch.where(mask, x[:1], 0).view(kind))
    # masks off the CPU or without values keep torch.where, and so do small arrays
    assert tk.mask_selector(mask.to("meta")) is None
    assert tk.mask_selector(mask.float()) is None
    small = tk.mask_selector(mask[:1, :10])
    assert small is not None
    got, n = _where_count(lambda: small(x[:1, :10]))
    assert n == 1 and torch.equal(got.view(kind), want[:1, :10].view(kind))
    # along an extra axis, the mask broadcast along it (a row mask of class scores)
    rows = mask[:, 0]
    for axis, xs in ((1, x), (0, x.T), (1, x[:, :3])):
        got, n = _where_count(lambda: tk.mask_selector(rows)(xs, axis))  # noqa: B023
        w = torch.where(rows.unsqueeze(axis), xs, 0)
        assert n == (xs.numel() < tk.MASK_SELECT_MIN)
        assert torch.equal(got.view(kind), w.view(kind))


@torch_only
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mask_select_derivatives(dtype):
    import torch
    import torch.autograd.forward_ad as fwAD

    from unilosses.backends import _torch_kernels as tk

    mask, x = _large(dtype)
    x = torch.nan_to_num(x).requires_grad_(True)
    select = tk.mask_selector(mask)
    assert select is not None
    g = torch.randn(LARGE, dtype=x.dtype)
    y = select(x)
    (dx,) = torch.autograd.grad(y, x, g, create_graph=True)
    assert torch.equal(dx, torch.where(mask, g, 0))
    # second order, through the select's own derivative
    (ddx,) = torch.autograd.grad((dx * x).sum(), x)
    assert torch.equal(ddx, torch.where(mask, g, 0))
    # forward mode
    t = torch.randn(LARGE, dtype=x.dtype)
    with fwAD.dual_level():
        out = select(fwAD.make_dual(x.detach(), t))
        assert torch.equal(fwAD.unpack_dual(out).tangent, torch.where(mask, t, 0))
    # torch.func: wrapped arrays take torch.where
    got = torch.func.grad(lambda a: (select(a) * g).sum())(x.detach())
    assert torch.equal(got, torch.where(mask, g, 0))
    # along an extra axis
    rows = mask[:, 0]
    (dx,) = torch.autograd.grad(tk.mask_selector(rows)(x, 1), x, g)
    assert torch.equal(dx, torch.where(rows[:, None], g, 0))


@torch_only
@pytest.mark.parametrize("kernels", ["kernels", "generic"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "weighted_mean", "none"])
@pytest.mark.parametrize("name", ["mse", "mae", "huber", "smooth_l1", "log_cosh", "bce_logits",
                                  "sparse_ce", "categorical_ce"])
def test_large_masked_calls_against_float64(name, reduction, kernels, monkeypatch):
    """Large CPU calls with a mask and weights (the selector on every select of the mask's
    shape) against the float64 formula on the kept elements alone, value and gradient in
    the predictions; NaN and inf in the masked inputs and weights; with torch's kernels and
    without (the generic path narrows the mask by ignore_index after the first select)."""
    import torch
    import torch.nn.functional as F

    from unilosses.backends import _torch_kernels as tk

    if kernels == "generic":
        for k in list(tk.KERNELS):
            monkeypatch.delitem(tk.KERNELS, k)

    g = torch.Generator().manual_seed(5)
    per_row = name in ("sparse_ce", "categorical_ce")
    shape = (LARGE[0] * LARGE[1], 4) if per_row else LARGE  # per row: the mask's rows
    rows = shape[:1] if per_row else shape
    mask = torch.rand(rows, generator=g) > 0.3
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2
    w = torch.rand(rows, generator=g, dtype=torch.float64) + 0.5
    if name == "sparse_ce":
        y = torch.randint(0, 4, rows, generator=g)
        y[::7] = -100  # ignored (restrict: the mask narrowed after the selector's first use)
        y_bad = torch.where(mask, y, 99)  # out of range where masked
        keep = mask & (y != -100)
    elif name == "categorical_ce":
        y = torch.rand(shape, generator=g, dtype=torch.float64)
        y_bad = torch.where(mask[:, None], y, float("nan"))
        keep = mask
    else:
        y = torch.rand(shape, generator=g, dtype=torch.float64)
        y_bad = torch.where(mask, y, float("nan"))
        keep = mask
    x_bad = torch.where(mask if x.dim() == mask.dim() else mask[:, None], x, float("inf"))
    w_bad = torch.where(mask, w, float("nan"))

    def formula(x, y):  # type: ignore[no-untyped-def]
        if name == "mse":
            return (x - y) ** 2
        if name == "huber":
            return F.huber_loss(x, y, reduction="none")
        if name == "mae":
            return F.l1_loss(x, y, reduction="none")
        if name == "smooth_l1":
            return F.smooth_l1_loss(x, y, reduction="none")
        if name == "log_cosh":
            return torch.log(torch.cosh(x - y))
        if name == "bce_logits":
            return F.binary_cross_entropy_with_logits(x, y, reduction="none")
        if name == "categorical_ce":
            return -(y * torch.log_softmax(x, -1)).sum(-1)
        return F.cross_entropy(x, y, reduction="none", ignore_index=-100)

    xk = x.detach().requires_grad_(True)
    loss = formula(xk, y) * w * keep
    if reduction == "mean":
        want = loss.sum() / keep.sum()
    elif reduction == "sum":
        want = loss.sum()
    elif reduction == "weighted_mean":
        want = loss.sum() / (w * keep).sum()
    else:
        want = loss
    fn = {"mse": unilosses.mse, "huber": unilosses.huber, "log_cosh": unilosses.log_cosh,
          "mae": unilosses.mae, "smooth_l1": unilosses.smooth_l1,
          "bce_logits": unilosses.binary_cross_entropy_with_logits,
          "sparse_ce": unilosses.sparse_categorical_cross_entropy_with_logits,
          "categorical_ce": unilosses.categorical_cross_entropy_with_logits}[name]
    kw = {"ignore_index": -100} if name == "sparse_ce" else {}
    for dtype in (torch.float64, torch.float32):
        xb = x_bad.to(dtype).requires_grad_(True)
        yb = y_bad if name == "sparse_ce" else y_bad.to(dtype)
        if name == "categorical_ce":  # (the targets' gradient too)
            yb = yb.detach().requires_grad_(True)
        got = fn(xb, yb, weights=w_bad.to(dtype), where=mask, reduction=reduction, **kw)
        tol = {"rtol": 256 * torch.finfo(dtype).eps, "atol": 256 * torch.finfo(dtype).eps}
        torch.testing.assert_close(got.double(), want.detach(), **tol)
        seed = torch.rand(got.shape, generator=g, dtype=dtype)
        if name == "categorical_ce":
            dx, dy = torch.autograd.grad(got, (xb, yb), seed)
            assert torch.isfinite(dy).all() and (dy[~mask] == 0).all()
            torch.testing.assert_close(
                dy[mask].double(), (-torch.log_softmax(x, -1) * (w * seed.double())[:, None]
                                    * (1.0 if reduction != "mean" else 1 / keep.sum().double())
                                    / (1.0 if reduction != "weighted_mean"
                                       else (w * keep).sum()))[mask], **tol)
        else:
            (dx,) = torch.autograd.grad(got, xb, seed)
        (dref,) = torch.autograd.grad(want, xk, seed.double(), retain_graph=True)
        assert torch.isfinite(dx).all()
        torch.testing.assert_close(dx.double(), dref, **tol)
        with torch.no_grad():
            again = fn(xb, yb, weights=w_bad.to(dtype), where=mask, reduction=reduction, **kw)
        torch.testing.assert_close(again, got.detach(), rtol=0, atol=0)


@torch_only
@pytest.mark.parametrize("name", ["mse", "huber", "bce_logits"])
def test_large_masked_calls_take_the_selector(name):
    """No torch.where on a large CPU call's mask: the inputs, the weights and the loss are
    selected by their bits (with and without a gradient wanted)."""
    import torch

    (p, t, w), (pb, tb, wb), m = _inputs(name)
    reps = (LARGE[0] // SHAPE[0], LARGE[1] // SHAPE[1])
    x, y, wt = (torch.tensor(a).tile(reps) for a in (pb, tb, wb))
    mask = torch.tensor(m).tile(reps)
    want = _call(name, *(torch.tensor(a).tile(reps) for a in (p, t, w)), mask, "mean")
    x.requires_grad_(True)
    got, n = _where_count(lambda: _call(name, x, y, wt, mask, "mean"))
    assert n == 0
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)
    with torch.no_grad():
        got, n = _where_count(lambda: _call(name, x, y, wt, mask, "mean"))
    assert n == 0
    torch.testing.assert_close(got, want, rtol=1e-13, atol=0)


@torch_only
@pytest.mark.parametrize("kernels", ["kernels", "generic"])
@pytest.mark.parametrize("name", ["mse", "mae", "huber", "smooth_l1", "rmse", "bce_logits",
                                  "categorical", "log_cosh", "msle", "focal_logits", "poly1"])
def test_large_masked_calls_mask_the_gradient_not_the_inputs(name, kernels, monkeypatch):
    """Where a gradient is wanted, a large CPU call of a loss that reads each element (row)
    alone leaves its masked inputs as they are and masks their gradients
    (``Call.clean_inputs``): no select of the predictions or targets forward, one guard per
    input that wants a gradient; the value, and a gradient finite and zero where masked,
    as the replaced inputs give them (``test_large_masked_calls_against_float64``)."""
    import torch

    from unilosses.backends import _torch_kernels as tk
    from unilosses.backends.torch import TorchAdapter

    if kernels == "generic":
        for k in list(tk.KERNELS):
            monkeypatch.delitem(tk.KERNELS, k)
    # (the weighted block sums, which serve some of these where no gradient is wanted in the
    # weights, select in blocks: tests/test_native.py)
    monkeypatch.setattr(TorchAdapter, "weighted_block_sum", lambda *a, **k: None)
    guards, selects = [], []
    real_apply, real_forward = tk._MaskGradient.apply, tk._MaskSelect.forward
    monkeypatch.setattr(tk._MaskGradient, "apply",
                        lambda x, b: guards.append(x.shape) or real_apply(x, b))
    monkeypatch.setattr(tk._MaskSelect, "forward",
                        staticmethod(lambda x, b: selects.append(x.shape) or real_forward(x, b)))
    g = torch.Generator().manual_seed(11)
    rows = LARGE[0] * LARGE[1]
    per_row = name in ("categorical", "poly1")
    shape = (rows, 4) if per_row else (rows,)
    mask = torch.rand(rows, generator=g) > 0.3
    full = mask[:, None] if per_row else mask
    x = torch.where(full, torch.randn(shape, generator=g), float("nan"))
    y = torch.where(full, torch.rand(shape, generator=g), float("inf"))
    w = torch.where(mask, torch.rand(rows, generator=g), float("nan"))
    fn = {"mse": unilosses.mse, "mae": unilosses.mae, "huber": unilosses.huber,
          "smooth_l1": unilosses.smooth_l1, "rmse": lambda *a, reduction, **k: unilosses.rmse(
              *a, **k), "bce_logits": unilosses.binary_cross_entropy_with_logits,
          "categorical": unilosses.categorical_cross_entropy_with_logits,
          "log_cosh": unilosses.log_cosh, "msle": unilosses.msle,
          "focal_logits": unilosses.binary_focal_loss_with_logits,
          "poly1": unilosses.poly1_cross_entropy_with_logits}[name]
    for wanted in ((True, False), (True, True), (False, True)):
        guards.clear()
        xg, yg, wg = x.clone().requires_grad_(wanted[0]), y.clone(), w.clone()
        if per_row:
            yg.requires_grad_(wanted[1])
        else:
            wg.requires_grad_(wanted[1])
        selects.clear()
        got = fn(xg, yg, weights=wg, where=mask, reduction="sum")
        # selected: the weights and the loss, of the rows' shape (the predictions' too where
        # elementwise); the inputs not
        assert sum(1 for s in selects if s == shape) == (0 if per_row else 2)
        assert len(guards) == (wanted[0] + (wanted[1] and per_row))
        clean = [torch.where(full, a, 0.0) for a in (x, y)]
        want = fn(*clean, weights=torch.where(mask, w, 0.0), where=mask, reduction="sum")
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        inputs = [a for a, on in ((xg, wanted[0]), (yg if per_row else wg, wanted[1])) if on]
        for grad in torch.autograd.grad(got, inputs):
            assert torch.isfinite(grad).all()
            masked = ~full if grad.shape == shape else ~mask
            assert (grad[masked.expand(grad.shape)] == 0).all()
    # forward mode (over reverse, the predictions wanting a gradient too): the replacement,
    # whose select has a forward-mode rule, where the guard has none
    import torch.autograd.forward_ad as fwAD

    tangent = torch.randn(shape, generator=g)
    want = None
    for grad_too in (False, True):
        with fwAD.dual_level():
            dual = fwAD.make_dual(x.clone().requires_grad_(grad_too), tangent)
            value, jvp = fwAD.unpack_dual(fn(dual, y, weights=w, where=mask, reduction="sum"))
        assert torch.isfinite(value).all() and torch.isfinite(jvp).all()
        if want is not None:
            torch.testing.assert_close((value, jvp), want)
        want = (value.detach(), jvp.detach())


@torch_only
def test_large_masked_categorical_on_probabilities_guards_its_targets(monkeypatch):
    """Categorical CE on probabilities replaces its masked probabilities (it reads them: they
    must not be negative) and leaves its masked targets as they are where it can, their
    gradient masked (``Call.clean_inputs``): no select of the targets; the value and a
    gradient finite and zero where masked, as the replaced inputs give them."""
    import torch

    from unilosses.backends import _torch_kernels as tk

    selects = []
    real_forward = tk._MaskSelect.forward
    monkeypatch.setattr(tk._MaskSelect, "forward",
                        staticmethod(lambda x, b: selects.append(x.shape) or real_forward(x, b)))
    g = torch.Generator().manual_seed(12)
    rows = LARGE[0] * LARGE[1]
    mask = torch.rand(rows, generator=g) > 0.3
    p = torch.where(mask[:, None], torch.rand((rows, 4), generator=g) + 0.01, float("nan"))
    t = torch.where(mask[:, None], torch.softmax(torch.randn((rows, 4), generator=g), -1),
                    float("nan"))
    clean = [torch.where(mask[:, None], a, 0.5) for a in (p, t)]
    want_p, want_t = (a.clone().requires_grad_() for a in clean)
    want = unilosses.categorical_cross_entropy(want_p, want_t, where=mask, reduction="sum")
    want_grads = torch.autograd.grad(want, (want_p, want_t))
    pg, tg = p.clone().requires_grad_(), t.clone().requires_grad_()
    selects.clear()
    got = unilosses.categorical_cross_entropy(pg, tg, where=mask, reduction="sum")
    assert not [s for s in selects if s == t.shape]
    torch.testing.assert_close(got, want)
    for grad, ref in zip(torch.autograd.grad(got, (pg, tg)), want_grads, strict=True):
        assert torch.isfinite(grad).all() and (grad[~mask] == 0).all()
        torch.testing.assert_close(grad, ref)
