"""torch's fast paths agree with the generic composition they replace (same inputs).

Every kernel in ``unilosses.backends._torch_kernels.KERNELS`` and ``PLAIN`` (plain small
calls) and the block-wise focal sums are compared, value and gradient, with the generic path
(kernels switched off) at ties, the Huber/Smooth-L1 boundary, extreme and infinite values,
every reduction, both dtypes, small inputs (logits clamped) and large ones (logits
range-checked instead), and the paths are shown to be taken.  Tolerances: 256 eps of the
dtype, relative to the magnitude of the values, times sqrt(n) for sums (the two paths add in
different orders).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import unilosses  # noqa: E402
from conftest import tolerance  # noqa: E402
from unilosses.backends import _torch_kernels as kernels  # noqa: E402
from unilosses.backends.torch import TorchAdapter  # noqa: E402

DTYPES = [torch.float32, torch.float64]


def _eps(dtype):  # type: ignore[no-untyped-def]
    return tolerance("float64" if dtype == torch.float64 else "float32")["rtol"]


def _close(a, b, dtype, n: int = 1) -> None:  # type: ignore[no-untyped-def]
    a, b = a.detach().double(), b.detach().double()
    assert a.shape == b.shape
    same_nonfinite = (~torch.isfinite(a)) & (~torch.isfinite(b)) & ((a == b) | (a != a) & (b != b))
    finite = torch.isfinite(a) & torch.isfinite(b)
    assert bool((finite | same_nonfinite).all()), (a, b)
    tol = _eps(dtype) * math.sqrt(max(n, 1))
    scale = max(float(b[finite].abs().max()) if bool(finite.any()) else 0.0, 1.0)
    err = float((a[finite] - b[finite]).abs().max()) if bool(finite.any()) else 0.0
    assert err <= tol * scale, f"max error {err:.3g} > {tol * scale:.3g}"


class Used:
    """Counts calls of the torch kernels (and switches them off with ``off()``)."""

    def __init__(self, monkeypatch) -> None:  # type: ignore[no-untyped-def]
        self.calls: dict[str, int] = {}  # either table's kernel served the call
        self.plain: dict[str, int] = {}  # a plain call's kernel (kernels.PLAIN) served it
        self.monkeypatch = monkeypatch
        # the first call with an array type loads its adapter, on the generic path
        unilosses.mse(torch.zeros(1), torch.zeros(1))
        for table, counts in ((kernels.KERNELS, [self.calls]),
                              (kernels.PLAIN, [self.calls, self.plain])):
            for name, k in dict(table).items():
                def wrapped(*a, _k=k, _name=name, _counts=counts, **kw):  # type: ignore[no-untyped-def]
                    out = _k(*a, **kw)
                    if out is not None:
                        for c in _counts:
                            c[_name] = c.get(_name, 0) + 1
                    return out
                monkeypatch.setitem(table, name, wrapped)

    def generic(self, fn, *args, **kw):  # type: ignore[no-untyped-def]
        """``fn`` on the generic path: no kernels, no block-wise sums."""
        current, plain = dict(kernels.KERNELS), dict(kernels.PLAIN)
        kernels.KERNELS.clear()
        kernels.PLAIN.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(kernels, "_CHUNK_MIN", 1 << 62)
            mp.setattr(kernels, "_CLOSED_MIN", 1 << 62)
            mp.setattr(kernels, "_CLOSED_GRAD_MIN", 1 << 62)
            mp.setattr(kernels, "_FUSED_ON", False)
            try:
                return fn(*args, **kw)
            finally:
                kernels.KERNELS.update(current)
                kernels.PLAIN.update(plain)


@pytest.fixture
def used(monkeypatch):  # type: ignore[no-untyped-def]
    return Used(monkeypatch)


@pytest.fixture
def no_plain(monkeypatch):  # type: ignore[no-untyped-def]
    """The plain kernels off: small inputs take the generic path, as calls that those
    kernels decline do (weights, masks, alpha arrays, ...)."""
    for name in list(kernels.PLAIN):
        monkeypatch.delitem(kernels.PLAIN, name)


def _value_and_grad(fn, x, *rest, reduction="mean", **kw):  # type: ignore[no-untyped-def]
    x = x.detach().clone().requires_grad_(True)
    out = fn(x, *rest, reduction=reduction, **kw)
    # a fixed, non-uniform cotangent for "none" (1 for a scalar)
    cot = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    if out.ndim == 0:
        cot = torch.ones((), dtype=out.dtype)
    (g,) = torch.autograd.grad((out * cot).sum(), x)
    return out, g


def _compare(used, name, fn, x, *rest, n=1, **kw):  # type: ignore[no-untyped-def]
    before = used.calls.get(name, 0)
    v1, g1 = _value_and_grad(fn, x, *rest, **kw)
    assert used.calls.get(name, 0) == before + 1, f"{name}: the kernel was not used"
    v2, g2 = used.generic(_value_and_grad, fn, x, *rest, **kw)
    _close(v1, v2, x.dtype, n)
    _close(g1, g2, x.dtype)


REGRESSION = [("mse", {}), ("mae", {}), ("huber", {"delta": 0.7}), ("smooth_l1", {"beta": 0.7})]


def _regression_inputs(dtype, n):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(0)
    p = torch.randn(n, generator=g, dtype=dtype) * 2
    t = torch.randn(n, generator=g, dtype=dtype) * 2
    # ties (zero error), the branch boundary |d| == 0.7 both ways, huge errors
    special = torch.tensor([0.0, 0.7, -0.7, 1e30, -1e30, 3.0], dtype=dtype)
    p[:6] = special
    t[:6] = torch.tensor([0.0, 0.0, 0.0, 0.0, 0.0, 3.0], dtype=dtype)
    return p, t


@pytest.mark.parametrize("name,kw", REGRESSION, ids=[r[0] for r in REGRESSION])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_regression_kernels_match_the_composition(used, name, kw, reduction, dtype):  # type: ignore[no-untyped-def]
    p, t = _regression_inputs(dtype, 1000)
    if name == "mse":
        p[3:5] = 1e10  # squared, still finite in float32
    _compare(used, name, getattr(unilosses, name), p, t, reduction=reduction, n=1000, **kw)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_rmse_takes_its_plain_kernel_or_the_mse_kernel(used, dtype):  # type: ignore[no-untyped-def]
    """A plain call is ``sqrt(mse)`` (its safe form where a gradient is wanted); others take
    the mse kernel after the generic checks."""
    p, t = _regression_inputs(dtype, 1000)
    p[3:5] = 1e10
    _compare(used, "rmse", lambda a, b, reduction: unilosses.rmse(a, b), p, t, n=1000)
    with torch.no_grad():  # the plain sqrt
        _close(unilosses.rmse(p, t), used.generic(unilosses.rmse, p, t), dtype, 1000)
    x = t.clone().requires_grad_(True)  # zero error: the safe sqrt's gradient is 0, not NaN
    (g,) = torch.autograd.grad(unilosses.rmse(x, t), x)
    assert used.plain["rmse"] == 3 and torch.equal(g, torch.zeros_like(t))
    (h,) = torch.autograd.grad(torch.autograd.grad(unilosses.rmse(x, t), x, create_graph=True)[0]
                               .sum(), x)  # (and the curvature there: the safe form's, 0)
    assert torch.equal(h, torch.zeros_like(t))
    for grad in (False, True):  # a NaN error is NaN, not an RMSE of 0
        nan = p.clone()
        nan[0] = math.nan
        assert bool(torch.isnan(unilosses.rmse(nan.requires_grad_(grad), t)))
    assert used.plain["rmse"] == 6
    # mixed dtypes (cast first) and float16 decline: the generic path and its mse kernel
    other = torch.float64 if dtype == torch.float32 else torch.float32
    _compare(used, "mse", lambda a, b, reduction: unilosses.rmse(a, b), p, t.to(other), n=1000)
    assert used.plain["rmse"] == 6


def test_the_gradient_at_a_tie_is_zero_on_the_kernel_path(used):  # type: ignore[no-untyped-def]
    p = torch.zeros(3, requires_grad=True)
    for name in ("mae", "huber", "smooth_l1"):
        (g,) = torch.autograd.grad(getattr(unilosses, name)(p, torch.zeros(3)), p)
        assert torch.equal(g, torch.zeros(3))
    assert used.calls["mae"] == 1


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "smooth_l1"])
def test_empty_mean_is_zero_not_nan(used, name):  # type: ignore[no-untyped-def]
    out = getattr(unilosses, name)(torch.zeros(0), torch.zeros(0))
    assert float(out) == 0.0
    assert used.calls.get(name, 0) == 0  # torch's kernel would give NaN: generic path


def _weighted_value_and_grads(fn, x, t, w, m, reduction, **kw):  # type: ignore[no-untyped-def]
    """The loss with weights ``w`` and mask ``m`` and its gradients in ``x`` and ``w``."""
    x = x.detach().clone().requires_grad_(True)
    w = w.detach().clone().requires_grad_(True)
    out = fn(x, t, weights=w, where=m, reduction=reduction, **kw)
    cot = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    gx, gw = torch.autograd.grad((out * cot).sum(), (x, w))
    return out, gx, gw


def _rmse(x, t, reduction, **kw):  # type: ignore[no-untyped-def]
    return unilosses.rmse(x, t, **kw)  # (its reduction is the mean's)


def _weighted_cases(dtype):  # type: ignore[no-untyped-def]
    """(kernel, loss, x, t, options, masks taken): each kernel's loss on inputs with its
    special values, and with NaN where the mask leaves elements out."""
    p, t = _regression_inputs(dtype, 1000)
    p[3:5] = 1e10  # (squared, still finite in float32)
    pb, tb = _bce_inputs(dtype, 16, exact=True)
    x = _logits(dtype, (50, 10))
    x[0, :4] = torch.tensor([1e4, -1e4, 0.0, 30.0], dtype=dtype)
    g = torch.Generator().manual_seed(2)
    tl = (torch.rand((50, 10), generator=g, dtype=dtype) < 0.3).to(dtype)
    tl[1] = torch.rand(10, generator=g, dtype=dtype)
    y = _labels((50,), 10)
    soft = torch.softmax(_logits(dtype, (50, 10), seed=5), dim=1)
    return [(name, getattr(unilosses, name), p, t, kw, True) for name, kw in REGRESSION] + [
        ("mse", _rmse, p, t, {}, True),
        ("binary_cross_entropy", unilosses.binary_cross_entropy, pb, tb,
         {"label_smoothing": 0.2}, True),
        ("binary_cross_entropy_with_logits", unilosses.binary_cross_entropy_with_logits, x,
         tl, {}, True),
        ("binary_cross_entropy_with_logits", unilosses.binary_cross_entropy_with_logits, x,
         tl, {"pos_weight": torch.linspace(0.5, 3.0, 10, dtype=dtype)}, True),
        # masked rows' labels made valid, their logits as given: the kernel where they are
        # finite (as here), the generic path where not (below)
        ("cross_entropy_with_logits", unilosses.sparse_categorical_cross_entropy_with_logits,
         x, y, {"label_smoothing": 0.1}, "finite"),
        # masked rows (logits and targets) replaced before the kernel
        ("cross_entropy_with_logits", unilosses.categorical_cross_entropy_with_logits, x, soft,
         {}, True),
    ]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("masked", [False, True], ids=["weights", "weights+where"])
def test_weights_and_masks_reduce_the_kernels_elementwise_loss(used, reduction, dtype, masked):  # type: ignore[no-untyped-def]
    for name, fn, x, t, kw, masks in _weighted_cases(dtype):
        loss_shape = x.shape if name != "cross_entropy_with_logits" else x.shape[:-1]
        g = torch.Generator().manual_seed(6)
        w = torch.rand(loss_shape, generator=g, dtype=dtype) * 2
        w.view(-1)[1] = 0.0
        m = None
        if masked:
            m = torch.rand(loss_shape, generator=g) > 0.3
            m.view(-1)[0] = False
            if masks is True:  # NaN where masked reaches neither the value nor a gradient
                x = torch.where(m.reshape(m.shape + (1,) * (x.ndim - m.ndim)), x, math.nan)
            elif masks == "finite":
                y_bad = torch.where(m, t, -7)  # masked labels out of range: left out
                _check_weighted(used, name, fn, x, y_bad, w, m, reduction, dtype, kw, 1)
                x = torch.where(m[:, None], x, math.nan)  # the generic path replaces them
                masks = False
        _check_weighted(used, name, fn, x, t, w, m, reduction, dtype, kw,
                        1 if masks or not masked else 0)


def _check_weighted(used, name, fn, x, t, w, m, reduction, dtype, kw, taken):  # type: ignore[no-untyped-def]
    before = used.calls.get(name, 0)
    v1, gx1, gw1 = _weighted_value_and_grads(fn, x, t, w, m, reduction, **kw)
    assert used.calls.get(name, 0) - before == taken, (name, fn.__name__)
    v2, gx2, gw2 = used.generic(_weighted_value_and_grads, fn, x, t, w, m, reduction, **kw)
    for a, b in ((v1, v2), (gx1, gx2), (gw1, gw2)):
        assert bool(torch.isfinite(a).all()), (fn.__name__, a)
        _close(a, b, dtype, x.numel())


def test_weights_broadcast_against_the_kernels_elementwise_loss(used):  # type: ignore[no-untyped-def]
    x = _logits(torch.float64, (6, 5))
    y = _labels((6,), 5)
    w = torch.tensor([[1.0], [2.0], [0.5], [0.0], [3.0], [1.5]], dtype=torch.float64)
    t = (x > 0).double()
    got = unilosses.binary_cross_entropy_with_logits(x, t, weights=w, reduction="weighted_mean")
    assert used.calls.get("binary_cross_entropy_with_logits", 0) == 1
    want = used.generic(unilosses.binary_cross_entropy_with_logits, x, t, weights=w,
                        reduction="weighted_mean")
    _close(got, want, torch.float64, x.numel())
    # per-row weights of a per-row loss; a (6, 1) weight against the loss of shape (6,) is
    # refused on both paths alike
    rows = w[:, 0]
    got = unilosses.sparse_categorical_cross_entropy_with_logits(x, y, weights=rows,
                                                                 reduction="sum")
    want = used.generic(unilosses.sparse_categorical_cross_entropy_with_logits, x, y,
                        weights=rows, reduction="sum")
    _close(got, want, torch.float64, x.numel())
    for path in (lambda f, *a, **k: f(*a, **k), used.generic):
        with pytest.raises(ValueError, match="weights"):
            path(unilosses.sparse_categorical_cross_entropy_with_logits, x, y,
                 weights=w[:, :, None])


def _logits(dtype, shape, scale=3.0, seed=1):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype) * scale


# sizes on both sides of the clamp/check switch
SIZES = [(50, 10), (kernels._CHECK_MIN // 10 + 7, 10)]


@pytest.mark.parametrize("shape", SIZES, ids=["small", "large"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("options", [{}, {"pos_weight": 2.5}, {"label_smoothing": 0.2}],
                         ids=["plain", "pos_weight", "smoothing"])
def test_bce_with_logits_kernel(used, shape, reduction, dtype, options):  # type: ignore[no-untyped-def]
    x = _logits(dtype, shape)
    x[0, :4] = torch.tensor([1e4, -1e4, 0.0, 30.0], dtype=dtype)
    g = torch.Generator().manual_seed(2)
    t = (torch.rand(shape, generator=g, dtype=dtype) < 0.3).to(dtype)
    t[1] = torch.rand(shape[1], generator=g, dtype=dtype)  # a soft row
    _compare(used, "binary_cross_entropy_with_logits", unilosses.binary_cross_entropy_with_logits,
             x, t, reduction=reduction, n=x.numel(), **options)


def _bce_inputs(dtype, n, exact: bool):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(4)
    p = torch.rand(n, generator=g, dtype=dtype) * 0.98 + 0.01
    t = (torch.rand(n, generator=g, dtype=dtype) < 0.4).to(dtype)
    t[: n // 4] = torch.rand(n // 4, generator=g, dtype=dtype)  # soft targets
    if exact:  # exact 0/1 probabilities and others beyond the clip: the clipped path
        p[:6] = torch.tensor([0.0, 1.0, 0.0, 1.0, 1e-9, 1.0 - 1e-12], dtype=dtype)
        t[:6] = torch.tensor([0.0, 1.0, 1.0, 0.0, 0.5, 1.0], dtype=dtype)
    return p, t


@pytest.mark.parametrize("n", [16, kernels._BCE_CPU_MAX[1]], ids=["16", "at-limit"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("exact", [False, True], ids=["inside", "clipped"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_bce_on_probabilities_kernel(used, n, reduction, dtype, exact, smoothing):  # type: ignore[no-untyped-def]
    p, t = _bce_inputs(dtype, n, exact)
    _compare(used, "binary_cross_entropy", unilosses.binary_cross_entropy, p, t,
             reduction=reduction, n=n, label_smoothing=smoothing)


@pytest.mark.parametrize("n, grad", [(16, False), (1500, True)], ids=["plain", "kernel"])
def test_bce_targets_outside_0_1_are_taken_as_elsewhere(n, grad):  # type: ignore[no-untyped-def]
    # torch's kernel refuses a target outside [0, 1] or NaN on the CPU, which unilosses
    # takes as given (as NumPy, JAX and TensorFlow do, and torch's path for larger inputs)
    unilosses.mse(torch.zeros(1), torch.zeros(1))  # (plain calls from the adapter's second)
    p = torch.linspace(0.05, 0.95, n, dtype=torch.float64)
    for bad in (1.5, -0.25, math.nan):
        t = torch.full((n,), 0.5, dtype=torch.float64)
        t[n // 2] = bad
        want = unilosses.binary_cross_entropy(p.numpy(), t.numpy(), reduction="none")
        pg = p.clone().requires_grad_(grad)
        got = unilosses.binary_cross_entropy(pg, t, reduction="none")
        np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-13, atol=0)
        total = unilosses.binary_cross_entropy(pg, t, reduction="sum")
        np.testing.assert_allclose(float(total.detach()), np.sum(want), rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_bce_with_logits_pos_weight_targets_gradient_stays_finite(used, dtype):  # type: ignore[no-untyped-def]
    """With pos_weight, torch's kernel's gradient in the targets overflows at a clamped logit
    (it scales the cotangent by pos_weight times the logit before the mean's division); where
    the targets want a gradient the composition runs: d/dt = pw softplus(-x) - softplus(x)
    of the clamped logit, divided by the count."""
    bound = torch.finfo(dtype).max / 4
    x = torch.tensor([-math.inf, -bound, math.inf, 3.0], dtype=dtype)
    t = torch.full((4,), 0.5, dtype=dtype, requires_grad=True)
    loss = unilosses.binary_cross_entropy_with_logits(x, t, pos_weight=2.5)
    (g,) = torch.autograd.grad(loss * 3.0, t)
    assert used.calls.get("binary_cross_entropy_with_logits", 0) == 0
    xc = x.double().clamp(-float(bound), float(bound))
    sp = torch.nn.functional.softplus
    want = torch.where(xc.abs() > 1e6, torch.where(xc < 0, -2.5 * xc, -xc),
                       2.5 * sp(-xc, threshold=1e308) - sp(xc, threshold=1e308)) * (3.0 / 4)
    assert bool(torch.isfinite(g).all())
    _close(g, want.to(dtype), dtype)
    v, gx = _value_and_grad(unilosses.binary_cross_entropy_with_logits,
                            torch.linspace(-3, 3, 40, dtype=dtype), torch.rand(40, dtype=dtype),
                            pos_weight=2.5)
    assert used.calls["binary_cross_entropy_with_logits"] == 1  # (targets without a gradient)


def test_bce_on_probabilities_kernel_only_where_it_is_faster(used):  # type: ignore[no-untyped-def]
    """On the CPU torch's kernel is a scalar loop: beyond the limits the composition runs;
    forward alone has the lower limit.  A target that needs a gradient (torch's kernel has
    none for it) takes the composition too, and its gradient is -log(p / (1 - p))."""
    lo, hi = kernels._BCE_CPU_MAX
    p, t = _bce_inputs(torch.float64, hi + 1, exact=False)
    _value_and_grad(unilosses.binary_cross_entropy, p, t)
    with torch.no_grad():
        unilosses.binary_cross_entropy(p[: lo + 1], t[: lo + 1])
    assert used.calls.get("binary_cross_entropy", 0) == 0
    with torch.no_grad():
        unilosses.binary_cross_entropy(p[:lo], t[:lo])
    assert used.calls["binary_cross_entropy"] == 1
    p, t = _bce_inputs(torch.float64, 16, exact=False)
    t = t.clone().requires_grad_(True)
    (gt,) = torch.autograd.grad(unilosses.binary_cross_entropy(p, t, reduction="sum"), t)
    assert used.calls["binary_cross_entropy"] == 1
    _close(gt, -torch.log(p / (1 - p)), torch.float64)


def test_bce_kernel_off_the_cpu_only_after_the_range_check(used):  # type: ignore[no-untyped-def]
    """Off the CPU torch's kernel asserts ``0 <= p <= 1`` on the device, which a NaN fails
    (the clip keeps it): an assert that ends the process's CUDA context, where the formula
    gives NaN.  Only probabilities the range check has read (and so found free of NaN) may
    reach it.  ('meta' stands for such a device here: nothing is read on it, as when checks
    are off.)"""
    p = torch.full((64,), 0.25, device="meta")
    for on in (True, False):
        with unilosses.checks(on):
            out = unilosses.binary_cross_entropy(p, p, reduction="sum")
        assert out.device.type == "meta" and out.shape == ()
    assert used.calls.get("binary_cross_entropy", 0) == 0
    with unilosses.checks(False):  # on the CPU the kernel refuses NaN with an error instead
        unilosses.binary_cross_entropy(torch.full((64,), 0.25), torch.full((64,), 0.25))
    assert used.calls["binary_cross_entropy"] == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available here")
def test_bce_of_a_nan_probability_on_cuda(used):  # type: ignore[no-untyped-def]
    p = torch.tensor([0.25, math.nan, 0.75], device="cuda")
    t = torch.tensor([0.0, 1.0, 1.0], device="cuda")
    with unilosses.checks(False):
        assert torch.isnan(unilosses.binary_cross_entropy(p, t)).item()
    with pytest.raises(ValueError, match="outside \\[0, 1\\] \\(or NaN\\)"):
        unilosses.binary_cross_entropy(p, t)
    assert used.calls.get("binary_cross_entropy", 0) == 0
    torch.cuda.synchronize()  # (a device-side assert would surface here)


@pytest.mark.parametrize("shape", SIZES, ids=["small", "large"])
def test_infinite_logits_stay_finite_on_the_kernel_path(used, shape):  # type: ignore[no-untyped-def]
    x = _logits(torch.float32, shape)
    x[0, :2] = torch.tensor([math.inf, -math.inf])
    t = torch.zeros(shape)
    t[0, :2] = torch.tensor([1.0, 0.0])
    y = torch.zeros(shape[0], dtype=torch.int64)
    for name, f, target in [
        ("binary_cross_entropy_with_logits", unilosses.binary_cross_entropy_with_logits, t),
        ("cross_entropy_with_logits", unilosses.sparse_categorical_cross_entropy_with_logits, y),
    ]:
        _compare(used, name, f, x, target, n=x.numel())
        v, g = _value_and_grad(f, x, target)
        assert bool(torch.isfinite(v)) and bool(torch.isfinite(g).all())


def _labels(shape, classes, seed=3):  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, shape, generator=g)


@pytest.mark.parametrize("shape", SIZES + [(4, 6, 5)], ids=["small", "large", "3d"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignore", [None, -100], ids=["all-kept", "ignore_index"])
def test_sparse_cross_entropy_kernel(used, shape, reduction, dtype, smoothing, ignore):  # type: ignore[no-untyped-def]
    x = _logits(dtype, shape)
    x.view(-1)[:3] = torch.tensor([1e4, -1e4, 0.0], dtype=dtype)
    y = _labels(shape[:-1], shape[-1])
    kw = {} if ignore is None else {"ignore_index": ignore}
    if ignore is not None:  # torch's own ignore_index
        y.view(-1)[1::3] = ignore
    _compare(used, "cross_entropy_with_logits",
             unilosses.sparse_categorical_cross_entropy_with_logits, x, y,
             reduction=reduction, label_smoothing=smoothing, n=x.numel(), **kw)
    # torch's own, with the classes on axis 1 ("weighted_mean" without weights is the mean)
    got = unilosses.sparse_categorical_cross_entropy_with_logits(
        x, y, reduction=reduction, label_smoothing=smoothing, **kw)
    want = torch.nn.functional.cross_entropy(
        x.movedim(-1, 1), y, label_smoothing=smoothing,
        reduction="mean" if reduction == "weighted_mean" else reduction, **kw)
    _close(got, want, dtype, x.numel())


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_cross_entropy_kernel_with_the_class_axis_first(used, dtype):  # type: ignore[no-untyped-def]
    x = _logits(dtype, (3, 5, 4, 2))  # (N, C, H, W), torch's layout
    y = _labels((3, 4, 2), 5)
    _compare(used, "cross_entropy_with_logits",
             unilosses.sparse_categorical_cross_entropy_with_logits, x, y, axis=1,
             reduction="none", n=x.numel())
    onehot = torch.nn.functional.one_hot(y, 5).movedim(-1, 1).to(dtype)
    _compare(used, "cross_entropy_with_logits", unilosses.categorical_cross_entropy_with_logits,
             x, onehot, axis=1, label_smoothing=0.1, n=x.numel())


@pytest.mark.parametrize("shape", SIZES, ids=["small", "large"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_soft_target_cross_entropy_kernel(used, shape, dtype):  # type: ignore[no-untyped-def]
    x = _logits(dtype, shape)
    g = torch.Generator().manual_seed(4)
    t = torch.softmax(torch.randn(shape, generator=g, dtype=dtype), dim=-1)
    for reduction in ("mean", "none"):
        _compare(used, "cross_entropy_with_logits", unilosses.categorical_cross_entropy_with_logits,
                 x, t, reduction=reduction, label_smoothing=0.05, n=x.numel())


def test_bad_labels_still_get_unilosses_errors(used):  # type: ignore[no-untyped-def]
    x = _logits(torch.float32, (4, 3))
    for bad in (3, -1, -100):
        y = torch.tensor([0, 1, bad, 2])
        with pytest.raises(ValueError, match="`labels` holds values outside"):
            unilosses.sparse_categorical_cross_entropy_with_logits(x, y)
    # with checks off the generic path clamps an out-of-range label, and so does this one
    y = torch.tensor([0, 1, 7, 2])
    with unilosses.checks(False):
        fast = unilosses.sparse_categorical_cross_entropy_with_logits(x, y)
        slow = used.generic(unilosses.sparse_categorical_cross_entropy_with_logits, x, y)
    _close(fast, slow, torch.float32)


def _plain_cases(dtype):  # type: ignore[no-untyped-def]
    """Small plain calls of each loss with a plain kernel (``kernels.PLAIN``): ties, +-1e4,
    +-inf, probabilities beyond the clip."""
    x = _logits(dtype, (4, 5))
    x[0, :4] = torch.tensor([1e4, -1e4, math.inf, -math.inf], dtype=dtype)
    x[1, 2] = 0.0
    g = torch.Generator().manual_seed(5)
    t = (torch.rand((4, 5), generator=g, dtype=dtype) < 0.4).to(dtype)
    t[2] = torch.rand(5, generator=g, dtype=dtype)  # a soft row
    soft = torch.softmax(torch.randn((4, 5), generator=g, dtype=dtype), dim=-1)
    y = torch.tensor([0, 2, 4, 1])
    p = torch.rand((4, 5), generator=g, dtype=dtype) * 0.98 + 0.01
    clipped = p.clone()
    clipped[0, :3] = torch.tensor([0.0, 1.0, 1e-9], dtype=dtype)  # beyond the clip
    # soft labels equal to the prediction: |t - p| = 0, whose factor's gradient is 0
    tied = t.clone()
    tied[3, :2] = torch.sigmoid(x[3, :2])
    tied[3, 2:4] = clipped[3, 2:4]
    # finite logits: where a gradient is wanted, read instead of clamped (_plain_finite)
    xf = x.clone()
    xf[0, 2:4] = torch.tensor([30.0, -30.0], dtype=dtype)
    focal, focal_p = unilosses.binary_focal_loss_with_logits, unilosses.binary_focal_loss
    return [("binary_focal_loss_with_logits", focal, x, tied, {}),
            ("binary_focal_loss_with_logits", focal, xf, tied, {"alpha": 0.5}),
            ("binary_cross_entropy_with_logits", unilosses.binary_cross_entropy_with_logits,
             xf, t, {}),
            ("cross_entropy_with_logits", unilosses.sparse_categorical_cross_entropy_with_logits,
             xf, y, {}),
            ("binary_focal_loss_with_logits", focal, x, tied, {"alpha": None, "gamma": 1.0}),
            ("binary_focal_loss_with_logits", focal, x, tied, {"alpha": 0, "gamma": 0}),
            ("binary_focal_loss", focal_p, clipped, tied, {}),
            ("binary_focal_loss", focal_p, clipped, tied, {"alpha": 0.75, "gamma": 1}),
            # (gamma 0 with a gradient is the generic path's: its closed form keeps the
            # digits of (p - t) / (p (1 - p)), tests/test_accuracy.py)
            ("binary_focal_loss", focal_p, p, tied, {"alpha": None, "gamma": 2.0}),
            # unnormalised rows, soft targets
            ("categorical_cross_entropy", unilosses.categorical_cross_entropy, clipped * 3,
             soft, {}),
            ("rmse", lambda a, b, reduction: unilosses.rmse(a, b), p, t, {}),
            # zero, tiny and huge errors, either side of float32's tail (12), +-inf
            ("log_cosh", unilosses.log_cosh, torch.where(torch.isfinite(x), x, 0.0)
             + torch.tensor([0.0, 1e-6, -11.9, 13.0, 45.0], dtype=dtype),
             torch.where(torch.isfinite(x), x, x.clamp(-1.0, 1.0)), {}),
            ("binary_cross_entropy_with_logits", unilosses.binary_cross_entropy_with_logits,
             x, t, {}),
            ("binary_cross_entropy", unilosses.binary_cross_entropy, p, t, {}),
            ("binary_cross_entropy", unilosses.binary_cross_entropy, clipped, t, {}),
            # unnormalised rows, the label's entry 0 in the first (clipped)
            ("sparse_categorical_cross_entropy", unilosses.sparse_categorical_cross_entropy,
             torch.where(clipped == 1.0, 0.0, clipped * 3), y, {}),
            ("cross_entropy_with_logits", unilosses.sparse_categorical_cross_entropy_with_logits,
             x, y, {"label_smoothing": 0.1}),
            ("cross_entropy_with_logits", unilosses.categorical_cross_entropy_with_logits,
             x, soft, {"label_smoothing": 0.1})]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_plain_calls_take_the_plain_kernels_and_match_the_composition(used, reduction, dtype):  # type: ignore[no-untyped-def]
    """Small plain CPU calls skip the generic checks (``kernels.PLAIN``): the same values and
    gradients as the composition, the gradient finite at +-inf (the logits there are clamped
    to +-max/4 of the dtype, and a sum of several such terms may overflow on either path)."""
    for name, f, x, target, kw in _plain_cases(dtype):
        before = used.plain.get(name, 0)
        _compare(used, name, f, x, target, reduction=reduction, n=x.numel(), **kw)
        assert used.plain.get(name, 0) == before + 1, name
        v, g = _value_and_grad(f, x, target, reduction=reduction, **kw)
        assert bool(torch.isfinite(g).all())
        with unilosses.checks(False):  # (probabilities: clipped unread)
            _compare(used, name, f, x, target, reduction=reduction, n=x.numel(), **kw)
        assert used.plain.get(name, 0) == before + 3, name


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_plain_sparse_probabilities_row_by_row(used, monkeypatch, reduction, dtype):  # type: ignore[no-untyped-def]
    """From ``_SPARSE_ROWS_MIN`` elements a plain call of sparse CE on probabilities picks
    each label's probability before renormalising, clipping and logging it (no full-size
    intermediates): the composition's values and gradients, with unnormalised rows, a
    label's probability 0 and one of nearly all the row's mass (beyond the clip on both
    sides); a label out of range gets unilosses's error, or, checks off, the clamp."""
    rows = kernels._SPARSE_ROWS_MIN // 100 + 3
    g = torch.Generator().manual_seed(13)
    p = torch.softmax(2.0 * torch.randn(rows, 100, generator=g, dtype=dtype), -1) * 3.0
    y = torch.randint(0, 100, (rows,), generator=g)
    p[0, y[0]] = 0.0
    p[1] = 1e-12
    p[1, y[1]] = 5.0
    f = unilosses.sparse_categorical_cross_entropy
    _compare(used, "sparse_categorical_cross_entropy", f, p, y, reduction=reduction,
             n=p.numel())
    gather = _spy(monkeypatch, torch, "gather", lambda out, a, kw: True)
    f(p, y, reduction=reduction)
    assert used.plain["sparse_categorical_cross_entropy"] == 2 and gather == [True]
    small = p[:kernels._SPARSE_ROWS_MIN // 100 - 1]
    f(small, y[:len(small)], reduction=reduction)
    assert used.plain["sparse_categorical_cross_entropy"] == 3 and gather == [True]
    bad = y.clone()
    bad[5] = 100
    with pytest.raises(ValueError, match="labels"):
        f(p, bad, reduction=reduction)
    with unilosses.checks(False):
        _close(f(p, bad, reduction=reduction),
               used.generic(f, p, bad.clamp(0, 99), reduction=reduction), dtype, p.numel())


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_probabilities_skip_an_idle_clip(used, monkeypatch, dtype):  # type: ignore[no-untyped-def]
    """CE on probabilities (plain calls): where the value check's read shows every
    renormalised probability within [eps, 1 - eps] (``lo >= 4 eps C hi``), the clip is left
    out, forward and in the closed-form backward: values and gradients as composed, small and
    large, categorical and sparse, with the clip idle and with it acting (one tiny entry);
    whenever the read says idle, the renormalised rows do lie within the clip, in the dtype,
    down to the bound itself; negative values and NaN decline, zeros and one class are not
    idle, and without checks nothing is read.  Where the clip acts on finite rows (no zero,
    no inf), backward zeroes its derivative by bits (``_clip_bits``) from
    ``_SELECT_BITS_MIN`` elements, with ``where`` below, and with ``masked_fill`` otherwise."""
    inside = _spy(monkeypatch, kernels, "_renormalised_inside", lambda out, a, kw: out)
    # (the closed-form node's bits; those of _ClampBits, the generic path's clip, read NaN)
    bits = _spy(monkeypatch, kernels, "_clip_bits", lambda out, a, kw: kw.get("nan", False))
    g = torch.Generator().manual_seed(21)
    eps = 1e-7
    cat, sparse = unilosses.categorical_cross_entropy, unilosses.sparse_categorical_cross_entropy
    for rows in (10, kernels._SELECT_BITS_MIN // 100 + 1, kernels._CHUNK_MIN // 100 + 7):
        p = torch.softmax(torch.randn(rows, 100, generator=g, dtype=dtype), -1) * 2.5
        t = torch.softmax(torch.randn(rows, 100, generator=g, dtype=dtype), -1)
        y = torch.randint(0, 100, (rows,), generator=g)
        for idle in (True, False):
            if not idle:
                p[2, y[2]] = 1e-12  # (the sparse loss's own label: its clip acts)
            del inside[:], bits[:]
            _compare(used, "categorical_cross_entropy", cat, p, t, n=p.numel())
            assert [b for b in bits if not b] == ([] if idle or rows == 10 else [False])
            if rows * 100 < kernels._CHECK_MIN:  # (larger: the generic path)
                _compare(used, "sparse_categorical_cross_entropy", sparse, p, y, n=p.numel())
            with torch.no_grad():
                _close(cat(p, t), used.generic(cat, p, t), dtype, p.numel())
            assert inside and set(inside) == {(idle, True)}
    rows = kernels._SPARSE_ROWS_MIN // 100 + 3  # the sparse loss row by row
    p = torch.softmax(torch.randn(rows, 100, generator=g, dtype=dtype), -1)
    y = torch.randint(0, 100, (rows,), generator=g)
    del inside[:]
    _compare(used, "sparse_categorical_cross_entropy", sparse, p, y, n=p.numel())
    assert inside == [(True, True)]
    # soundness: rows of C values in [lo, hi] with lo at the bound or just above
    for classes in (2, 3, 10, 100):
        for scale in (1.0, 1e-30, 3e20):
            hi = scale
            lo = float(torch.tensor(4.0 * eps * classes * hi, dtype=dtype).nextafter(
                torch.tensor(math.inf, dtype=dtype)))
            u = torch.rand(64, classes, generator=g, dtype=dtype)
            x = (lo + (hi - lo) * u).to(dtype)
            x[:, 0], x[0, :] = lo, hi  # (each row a lo; one row all hi but its first)
            x[1] = lo
            x[1, 1] = hi  # (one row of lows but one high: r near 1 - eps)
            got = kernels._renormalised_inside(x, eps, lambda: True)[0]
            if got:
                r = x / x.sum(1, keepdim=True)
                assert bool(((r >= eps) & (r <= 1.0 - eps)).all()), (classes, scale)
            else:
                assert float(x.min()) < 4.0 * eps * classes * float(x.max())
            for f in (0.1, 0.25):  # (lower: rows where the clip does act are never idle)
                lo = float(torch.tensor(f * eps * classes * hi, dtype=dtype).nextafter(
                    torch.tensor(math.inf, dtype=dtype)))
                x = torch.full((2, classes), hi, dtype=dtype)
                x[0, 0], x[1, 1:] = lo, lo
                r = x / x.sum(1, keepdim=True)
                assert bool(((r < eps) | (r > 1.0 - eps)).any())
                assert kernels._renormalised_inside(x, eps, lambda: True) == (False, True)
    check = kernels._renormalised_inside
    assert check(torch.tensor([[0.5, -0.1]], dtype=dtype), eps, lambda: True) is None
    assert check(torch.tensor([[0.5, math.nan]], dtype=dtype), eps, lambda: True) is None
    assert check(torch.zeros(2, 3, dtype=dtype), eps, lambda: True) == (False, False)
    assert check(torch.ones(3, 1, dtype=dtype), eps, lambda: True) == (False, True)
    assert check(torch.ones(3, 4, dtype=dtype), eps, lambda: True) == (True, True)
    assert check(torch.ones(3, 4, dtype=dtype), eps, lambda: False) == (False, False)
    huge = torch.tensor([[1.0, math.inf]], dtype=dtype)
    assert check(huge, eps, lambda: True) == (False, False)
    # the bits: all ones where the clip passed, 0 where it acted, for each dtype's width
    q = torch.tensor([0.0, 1e-30, 1e-7, 0.5, 1.0 - 1e-7, 1.0, 2.0], dtype=dtype)
    c = torch.clamp(q, eps, 1.0 - eps)
    want = torch.where(q == c, -1, 0).to(kernels._BITS[dtype])
    assert torch.equal(kernels._clip_bits(q, c), want)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_torch_clip_backward_by_bits(dtype):  # type: ignore[no-untyped-def]
    """``TorchAdapter.clip`` of a large CPU input that autograd records, between two bounds:
    ``_ClampBits``, whose values and derivative are torch.clamp's bit for bit (the bounds
    themselves, NaN, +-inf, -0.0; a given cotangent left as it is, an expanded one, retained
    graphs), and whose derivative of the derivative and batched cotangents take torch's rule;
    one-sided, small, unrecorded, in forward mode and under torch.func, torch.clamp."""
    clip = TorchAdapter().clip
    n = 5 * (kernels._SELECT_BITS_MIN // 5 + 2)
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(n, generator=g, dtype=dtype) * 0.6 + 0.5).reshape(-1, 5)
    x.view(-1)[:8] = torch.tensor([1e-7, 1 - 1e-7, 0.0, 1.0, math.nan, math.inf, -math.inf,
                                   -0.0], dtype=dtype)
    w = torch.randn(x.shape, generator=g, dtype=dtype)
    for lo, hi in ((1e-7, 1.0 - 1e-7), (-0.3, 0.5), (None, 0.5), (0.2, None)):
        a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
        ca, cb = clip(a, lo, hi), torch.clamp(b, lo, hi)
        assert ("ClampBits" in ca.grad_fn.name()) == (lo is not None and hi is not None)
        assert torch.equal(ca.nan_to_num(), cb.nan_to_num())
        w0 = w.clone()
        (ga,) = torch.autograd.grad(ca, a, w, retain_graph=True)
        (gb,) = torch.autograd.grad(cb, b, w, retain_graph=True)
        assert torch.equal(ga, gb) and torch.equal(w, w0)
        (ga2,) = torch.autograd.grad(ca.sum(), a, retain_graph=True)
        (gb2,) = torch.autograd.grad(cb.sum(), b, retain_graph=True)
        assert torch.equal(ga2, gb2)
        (ga3,) = torch.autograd.grad(ca, a, w)  # (again, retained)
        assert torch.equal(ga3, gb)
        cot = torch.stack([w, -2.0 * w])
        (gab,) = torch.autograd.grad(clip(a, lo, hi), a, cot, is_grads_batched=True)
        (gbb,) = torch.autograd.grad(torch.clamp(b, lo, hi), b, cot, is_grads_batched=True)
        assert torch.equal(gab, gbb)
        y = x.nan_to_num(0.5, 2.0, -2.0)  # (finite: a second derivative without NaN)

        def second(f, y=y, lo=lo, hi=hi):  # type: ignore[no-untyped-def]
            z = y.clone().requires_grad_()
            (d,) = torch.autograd.grad((f(z, lo, hi) ** 3 * w).sum(), z, create_graph=True)
            return torch.autograd.grad((d * d).sum(), z)[0]

        assert torch.equal(second(clip), second(torch.clamp))
    small = x.reshape(-1)[:100].clone().requires_grad_()
    assert "ClampBits" not in clip(small, 0.2, 0.5).grad_fn.name()
    assert clip(x, 0.2, 0.5).grad_fn is None
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        d = fwAD.make_dual(x.clone(), torch.ones_like(x))
        assert torch.equal(fwAD.unpack_dual(clip(d, 0.2, 0.5)).tangent,
                           fwAD.unpack_dual(torch.clamp(d, 0.2, 0.5)).tangent)
    y = x.nan_to_num(0.5)
    assert torch.equal(torch.func.grad(lambda z: (clip(z, 0.2, 0.5) * w).sum())(y),
                       torch.func.grad(lambda z: (torch.clamp(z, 0.2, 0.5) * w).sum())(y))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_plain_constants_as_cached_tensors_equal_python_numbers(dtype, monkeypatch):  # type: ignore[no-untyped-def]
    # plain calls pass their constants as cached 0-d tensors: values and gradients are those
    # of the same ops with Python numbers, bit for bit (products, differences, selects,
    # comparisons; inf and NaN among the operands); constants first made inside
    # inference_mode still serve ops that autograd records later
    monkeypatch.setattr(kernels, "_CONSTANTS", {})
    c = kernels._const
    with torch.inference_mode():
        c(0.1, dtype)
    with torch.device("meta"):  # (a default device set by the user)
        assert c(1.0, dtype).device.type == "cpu"
    x = torch.randn(1000, dtype=dtype, generator=torch.Generator().manual_seed(5)) * 10
    x[:3] = torch.tensor([math.inf, -math.inf, math.nan], dtype=dtype)
    keep = x > 0
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    for got, want in ((a * c(0.1, dtype), b * 0.1), (torch.sub(c(1.0, dtype), a), 1.0 - b),
                      (torch.where(keep, a, c(0.5, dtype)), torch.where(keep, b, 0.5)),
                      (a * c(-1.0 / 7, dtype), b * (-1.0 / 7))):
        assert got.dtype == want.dtype == dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
        w = torch.arange(1000, dtype=dtype)
        ga, = torch.autograd.grad((got.nan_to_num() * w).sum(), a)
        gb, = torch.autograd.grad((want.nan_to_num() * w).sum(), b)
        torch.testing.assert_close(ga, gb, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(torch.lt(x, c(3, dtype)), x < 3, rtol=0, atol=0)
    assert len(kernels._CONSTANTS) == 5


def test_plain_logits_are_read_instead_of_clamped_where_autograd_records_them(used,
                                                                             monkeypatch):  # type: ignore[no-untyped-def]
    """A plain call's small logits are clamped (one kernel) unless autograd records them and
    one read shows every |x| within max/4 (the clamp's backward node costs more than the
    read); an inf, or no gradient wanted, keeps the clamp.  Values and gradients are the
    composition's either way (``test_plain_calls_take_the_plain_kernels...``)."""
    clamps = []
    real = kernels._clamped
    monkeypatch.setattr(kernels, "_clamped", lambda a: clamps.append(1) or real(a))
    finite = _logits(torch.float32, (4, 5))
    finite[0, :2] = torch.tensor([1e4, -1e4])
    wild = finite.clone()
    wild[1, 1] = math.inf
    y = torch.tensor([0, 2, 4, 1])
    t = (finite > 0).float()
    calls = [lambda a: unilosses.sparse_categorical_cross_entropy_with_logits(a, y),
             lambda a: unilosses.binary_cross_entropy_with_logits(a, t),
             lambda a: unilosses.binary_focal_loss_with_logits(a, t)]
    for f in calls:
        for x, grad, clamped in ((finite, True, False), (wild, True, True),
                                 (finite, False, True)):
            clamps.clear()
            x = x.clone().requires_grad_(grad)
            f(x)
            assert clamps == ([1] if clamped else [])
        with torch.no_grad():
            clamps.clear()
            f(finite.clone().requires_grad_())
            assert clamps == [1]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_plain_categorical_probabilities_take_a_closed_form_derivative(used, reduction, dtype):  # type: ignore[no-untyped-def]
    """With a gradient wanted in the probabilities alone, a small plain call of categorical
    CE on probabilities is one autograd node whose backward is the closed form (the
    composition's five nodes cost more): its values and gradients, the clip's own bounds
    included, where ``clamp`` passes the gradient, entries beyond it (0 and 1), unnormalised
    rows, soft and one-hot targets.  A gradient in the targets, or none, keeps the
    composition."""
    eps = 1e-7
    p = torch.tensor([[eps, 1.0 - eps, 0.0, 0.0],  # exactly at both bounds (float64)
                      [0.0, 3.0, 0.0, 0.0],        # beyond both after renormalising
                      [0.5, 1.25, 2.0, 0.25],
                      [0.1, 0.2, 0.3, 0.4]], dtype=dtype)
    if dtype == torch.float64:
        assert float(p[0].sum()) == 1.0 and float(p[0, 0]) == eps
    g = torch.Generator().manual_seed(11)
    t = torch.softmax(torch.randn((4, 4), generator=g, dtype=dtype), dim=-1)
    t[3] = torch.tensor([0.0, 0.0, 1.0, 0.0], dtype=dtype)
    f = unilosses.categorical_cross_entropy
    x = p.clone().requires_grad_()
    assert "_PlainCategoricalProbabilities" in f(x, t, reduction=reduction).grad_fn.name()
    _compare(used, "categorical_cross_entropy", f, p, t, reduction=reduction, n=p.numel())
    # the bounds pass the gradient: the tied row's is not 0
    _, grad = _value_and_grad(f, p, t, reduction=reduction)
    assert float(grad[0].abs().sum()) > 0.0
    with torch.no_grad():
        assert f(x, t, reduction=reduction).grad_fn is None
    tg = t.clone().requires_grad_()
    assert "Plain" not in f(x, tg, reduction=reduction).grad_fn.name()


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_large_categorical_probabilities_take_the_closed_form_before_the_blocks(
        used, monkeypatch, dtype):  # type: ignore[no-untyped-def]
    """From 2^18 elements, with a gradient, categorical CE on probabilities is the plain
    call's one node up to ``_CATEGORICAL_CLOSED_MAX`` elements (faster than the blocks
    there), then the blocks: values and gradients as composed, zeros and an almost one-hot
    row beyond the clip; the value alone composed."""
    rows = kernels._CHUNK_MIN // 100 + 7
    g = torch.Generator().manual_seed(12)
    p = torch.softmax(3.0 * torch.randn(rows, 100, generator=g, dtype=dtype), -1) * 2.5
    p[0, :7] = 0.0
    p[-1] = 1e-9
    p[-1, 3] = 1.0
    t = torch.softmax(torch.randn(rows, 100, generator=g, dtype=dtype), -1)
    f = unilosses.categorical_cross_entropy
    blocks = _blockwise_calls(monkeypatch)
    x = p.clone().requires_grad_()
    assert "_PlainCategoricalProbabilities" in f(x, t).grad_fn.name() and blocks == []
    _compare(used, "categorical_cross_entropy", f, p, t, n=p.numel())
    with torch.no_grad():
        assert f(x, t).grad_fn is None
    assert used.plain["categorical_cross_entropy"] >= 1
    # backward's buffer, filled in place (large) or not (small): a second backward
    # (retain_graph) equal to the first, a batch of cotangents, and a derivative of the
    # derivative as composed
    for k in (50, rows):
        xs = p[:k].clone().requires_grad_()
        out = f(xs, t[:k]) * 3.0
        (g1,) = torch.autograd.grad(out, xs, retain_graph=True)
        (g2,) = torch.autograd.grad(out, xs, retain_graph=True)
        assert torch.equal(g1, g2)
        cot = torch.tensor([1.0, -2.0], dtype=dtype)
        (gb,) = torch.autograd.grad(out, xs, cot, is_grads_batched=True, retain_graph=True)
        _close(gb, torch.stack([g1, -2.0 * g1]), dtype)

    def hvp(a):  # type: ignore[no-untyped-def]
        a = a.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(a, t[:50], reduction="sum"), a, create_graph=True)
        return torch.autograd.grad((g * g).sum(), a)[0]

    _close(hvp(p[:50]), used.generic(hvp, p[:50]), dtype, 100)
    monkeypatch.setattr(kernels, "_CATEGORICAL_CLOSED_MAX", p.numel())
    assert "_BlockwiseSum" in f(x, t).grad_fn.name() and blocks == [True]


def test_other_calls_decline_the_plain_kernels(used):  # type: ignore[no-untyped-def]
    """Anything a plain kernel does not check for goes the generic way: converted, served by
    the kernels after the generic checks, composed, or refused with unilosses's errors."""
    x, t = _logits(torch.float32, (4, 5)), torch.zeros(4, 5)
    y, soft = torch.tensor([0, 2, 4, 1]), torch.full((4, 5), 0.2)
    bce = unilosses.binary_cross_entropy_with_logits
    sparse = unilosses.sparse_categorical_cross_entropy_with_logits
    cat = unilosses.categorical_cross_entropy_with_logits
    big = _logits(torch.float32, (kernels._CHECK_MIN // 5 + 1, 5))
    served = [  # by the kernels, after the generic checks
        lambda: bce(x, t, label_smoothing=0.2), lambda: bce(x, t, pos_weight=2.0),
        lambda: bce(x.half(), t.half()), lambda: bce(x, t.double()),
        lambda: sparse(x, y.int()), lambda: sparse(x, y, label_smoothing=np.float64(0.1)),
        lambda: sparse(x.reshape(2, 2, 5), y.reshape(2, 2)),
        lambda: cat(x, soft.double()),
        lambda: sparse(big, torch.zeros(len(big), dtype=torch.int64)),
        lambda: sparse(torch.nn.Parameter(x), y),
    ]
    p = torch.full((4, 5), 0.5)
    bce_p = unilosses.binary_cross_entropy
    served += [lambda: bce_p(p, t, label_smoothing=0.2), lambda: bce_p(p.double(), t),
               lambda: bce_p(p, t.clone().requires_grad_(True))]
    for call in served:
        call()
    assert used.plain == {}
    assert used.calls == {"binary_cross_entropy_with_logits": 4, "cross_entropy_with_logits": 6,
                          "binary_cross_entropy": 2}  # (targets with a gradient: composed)
    others = [  # the composition (broadcast weights, masks with ignore_index, "mean" of
        # ignored labels and class weights, the classes first in 2-D), or the kernel after
        # the generic path's label clamp (torch.func)
        lambda: bce(x, t, weights=torch.ones(5)), lambda: bce(x, t, where=t[0] == 0),
        lambda: sparse(x, y, where=y > 0, ignore_index=4),
        lambda: sparse(x, y, weights=torch.ones(4, dtype=torch.float64)),
        lambda: sparse(x, y, weights=torch.ones(4, dtype=torch.int64)),
        lambda: cat(x, soft, where=torch.tensor(True)),
        lambda: sparse(x, y, ignore_index=4, class_weights=torch.ones(5)),
        lambda: cat(x, soft, class_weights=torch.ones(5)),
        lambda: sparse(x.T, y, axis=0), lambda: torch.func.grad(lambda a: sparse(a, y))(x),
        lambda: unilosses.sparse_categorical_cross_entropy(soft, y, label_smoothing=0.1),
        lambda: unilosses.sparse_categorical_cross_entropy(soft, y.int()),
    ]
    focal, focal_p = unilosses.binary_focal_loss_with_logits, unilosses.binary_focal_loss
    cat_p, rmse = unilosses.categorical_cross_entropy, unilosses.rmse
    others += [  # alpha an array or 1, gamma not 0/1/2 or not a Python number, weights and
        # masks broadcast, mixed dtypes, smoothing, class weights, 3-D, the classes first,
        # int32 labels
        lambda: focal(x, t, alpha=torch.full((5,), 0.25)), lambda: focal(x, t, gamma=0.5),
        lambda: focal(x, t, alpha=1.0), lambda: focal(x, t, gamma=np.float64(2.0)),
        lambda: focal(x, t, weights=torch.ones(5)), lambda: focal(x, t.double()),
        lambda: focal_p(p, t, gamma=3.0), lambda: focal_p(p, t, where=t[0] == 0),
        lambda: unilosses.log_cosh(x, t, weights=torch.ones(4, 5, dtype=torch.float64)),
        lambda: cat_p(soft, soft, label_smoothing=0.1),
        lambda: cat_p(soft, soft, class_weights=torch.ones(5)),
        lambda: cat_p(soft.reshape(2, 2, 5), soft.reshape(2, 2, 5)),
        lambda: cat_p(soft.T, soft.T, axis=0), lambda: cat_p(soft, soft.double()),
        lambda: rmse(p, t, axis=0), lambda: rmse(p, t, weights=torch.ones(4, 5)),
        lambda: unilosses.in_top_k(x, y.int(), k=2),
        lambda: unilosses.in_top_k(x, y, k=np.int64(2)),
        # logits above _FOCAL_GRAD_MAX with a gradient: the closed form
        lambda: focal(torch.zeros(kernels._FOCAL_GRAD_MAX + 1, requires_grad=True),
                      torch.zeros(kernels._FOCAL_GRAD_MAX + 1)).backward(),
    ]
    for call in others:
        call()
    assert used.plain == {}
    # a label out of range: gather refuses it, and the generic path gives False for its row
    hit = unilosses.in_top_k(x, torch.tensor([0, 5, 4, -1]), k=5)
    assert hit.tolist() == [True, False, True, False] and used.plain == {}
    refused = [
        (lambda: bce(x, t[:, :4]), ValueError, "shape"),
        (lambda: sparse(x, y[:3]), ValueError, "shape"),
        (lambda: cat(x, soft, reduction="avg"), ValueError, "reduction"),
        (lambda: cat(x, soft, where=(y > 0).float()), TypeError, "boolean mask"),
        (lambda: sparse(x, y, label_smoothing=1.5), ValueError, "label_smoothing"),
        (lambda: sparse(x, y, label_smoothing=math.nan), ValueError, "label_smoothing"),
        (lambda: sparse(x, y, axis=2), ValueError, "axis"),
        (lambda: bce(x, t.numpy()), TypeError, "two frameworks"),
        (lambda: sparse(x, torch.tensor([0, 2, 5, 1])), ValueError, "labels"),
        (lambda: bce_p(p + 1.0, t), ValueError, "outside"),
        (lambda: bce_p(torch.full((4, 5), math.nan), t), ValueError, "outside"),
        (lambda: unilosses.sparse_categorical_cross_entropy(soft - 0.5, y), ValueError,
         "negative"),
        (lambda: unilosses.sparse_categorical_cross_entropy(soft, y + 1), ValueError, "labels"),
        # options of other types: unilosses's errors, not the comparisons' own
        (lambda: bce(x, t, reduction=["mean"]), ValueError, "reduction"),
        (lambda: bce(x, t, label_smoothing=np.array([0.1, 0.2])), TypeError, "label_smoothing"),
        (lambda: bce_p(p, t, label_smoothing=torch.tensor([0.0, 0.1])), TypeError,
         "label_smoothing"),
        (lambda: sparse(x, y, axis=torch.tensor([1, 1])), TypeError, "axis"),
        (lambda: focal(x, t, gamma=-1.0), ValueError, "gamma"),
        (lambda: focal(x, t, alpha=1.5), ValueError, "alpha"),
        (lambda: focal(x, t[:, :4]), ValueError, "shape"),
        (lambda: focal_p(p + 1.0, t), ValueError, "outside"),
        (lambda: cat_p(soft - 0.5, soft), ValueError, "negative"),
        (lambda: cat_p(soft, soft[:, :4]), ValueError, "shape"),
        (lambda: rmse(p, t[:, :4]), ValueError, "shape"),
        (lambda: rmse(p, t.numpy()), TypeError, "two frameworks"),
        (lambda: unilosses.in_top_k(x, y, k=0), ValueError, "k"),
        (lambda: unilosses.in_top_k(x, y[:3], k=1), ValueError, "shape"),
    ]
    for call, error, match in refused:
        with pytest.raises(error, match=match):
            call()
    assert used.plain == {}


@pytest.mark.parametrize("tiles", [1, 137], ids=["small", "row-bits"])
@pytest.mark.parametrize("logits", [True, False], ids=["logits", "probabilities"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_plain_anchor_focal_matches_the_composition(used, monkeypatch, tiles, logits, dtype):  # type: ignore[no-untyped-def]
    """Ignored anchors (NaN and +-inf there) weigh nothing, background anchors' targets are
    0, the sum is divided by max(1, positives); values and gradients as the composition's.
    Tiled along the anchors past ``_ROW_BITS_MIN`` elements, the row masks select by their
    bits (logits with a gradient then take the blocks: the value alone there)."""
    x = _logits(dtype, (2, 6, 5))
    x[0, 0, :2] = torch.tensor([1e4, -1e4], dtype=dtype)  # a positive anchor
    x[0, 2, :2] = torch.tensor([math.inf, math.nan], dtype=dtype)  # an ignored one
    g = torch.Generator().manual_seed(7)
    t = (torch.rand((2, 6, 5), generator=g, dtype=dtype) < 0.4).to(dtype)
    t[0, 2, 3] = math.nan
    state = torch.tensor([[1, 0, -1, 1, 0, 1], [0, -1, -1, 1, 1, 0]])
    f = unilosses.anchor_focal_loss_with_logits
    if not logits:
        f = unilosses.anchor_focal_loss
        x = torch.sigmoid(x)
        x[0, 0, 2] = 0.0  # beyond the clip
        x[1, 0, 3] = t[1, 0, 3] = 1.0  # (a background anchor: its target 0 is used)
        x[1, 3, 1] = t[1, 3, 1]  # a zero error
    x, t, state = x.repeat(1, tiles, 1), t.repeat(1, tiles, 1), state.repeat(1, tiles)
    bits = _spy(monkeypatch, kernels, "_mask_bits", lambda out, a, kw: True)
    name = f.__name__
    for kw in ({}, {"alpha": None, "gamma": 1}, {"alpha": 0.75, "gamma": 0}):
        for on in (True, False):
            before = used.plain.get(name, 0)
            with unilosses.checks(on):
                v1, g1 = _value_and_grad(lambda a, *r, reduction, **k: f(a, *r, **k), x, t,
                                         state, **kw)
                v2, g2 = used.generic(_value_and_grad, lambda a, *r, reduction, **k: f(a, *r, **k),
                                      x, t, state, **kw)
                with torch.no_grad():
                    v3 = f(x, t, state, **kw)
            # (with a gradient, probabilities at gamma 0, and logits beyond _FOCAL_GRAD_MAX,
            # decline: see _plain_focal_inputs)
            taken = (kw.get("gamma") != 0 if not logits
                     else x.numel() <= kernels._FOCAL_GRAD_MAX)
            assert used.plain[name] == before + taken + 1
            _close(v1, v2, dtype, x.numel())
            _close(v3, v2, dtype, x.numel())
            _close(g1, g2, dtype)
            assert bool(torch.isfinite(g1).all()) and bool((g1[state == -1] == 0).all())
    assert bool(bits) == (x.numel() >= kernels._ROW_BITS_MIN)
    # declined: other normalisations, a normaliser, states of another dtype, alpha arrays
    declined = [lambda: f(x, t, state, normalize="image"), lambda: f(x, t, state, normalizer=3.0),
                lambda: f(x, t, state.float()), lambda: f(x, t, state.int()),
                lambda: f(x, t, state, alpha=torch.full((5,), 0.25, dtype=dtype))]
    before = dict(used.plain)
    for call in declined:
        call()
    assert used.plain == before
    with pytest.raises(ValueError, match="anchor_state"):
        f(x, t, state + 1)
    assert used.plain == before
    with unilosses.checks(False):  # unchecked, a state of 2 is kept, not positive, as there
        _close(f(x, t, state * 2), used.generic(f, x, t, state * 2), dtype, x.numel())
    assert used.plain[name] == before[name] + 1


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_plain_in_top_k_matches_the_composition(used, dtype):  # type: ignore[no-untyped-def]
    """Ties count in the label's favour; a row with NaN or +-inf scores gives False; k above
    the class count gives True."""
    x = _logits(dtype, (6, 5))
    x[1] = x[1, 2]  # all tied
    x[2, 3], x[3, 0], x[4, 1] = math.nan, math.inf, -math.inf
    x[5, :3] = x[5, 4]  # the label's score tied with two others
    y = torch.tensor([0, 2, 1, 0, 3, 4])
    for k in (1, 2, 3, 5, 7):
        before = used.plain.get("in_top_k", 0)
        hit = unilosses.in_top_k(x, y, k=k)
        assert used.plain["in_top_k"] == before + 1
        assert hit.dtype == torch.bool and hit.shape == (6,)
        assert torch.equal(hit, used.generic(unilosses.in_top_k, x, y, k=k))
    assert unilosses.in_top_k(x, y, k=1)[2:5].tolist() == [False] * 3


def test_plain_kernels_stay_out_of_torch_compile(used):  # type: ignore[no-untyped-def]
    """Compiled, the generic path chooses (on the CPU cross-entropy is the composition)."""
    x, y = _logits(torch.float32, (4, 5)), torch.tensor([0, 2, 4, 1])
    f = torch.compile(unilosses.sparse_categorical_cross_entropy_with_logits,
                      backend="aot_eager", fullgraph=True)
    _close(f(x, y), used.generic(unilosses.sparse_categorical_cross_entropy_with_logits, x, y),
           torch.float32)
    assert used.plain == {}


def _plain_sparse_inputs(dtype):  # type: ignore[no-untyped-def]
    """Small logits with +-1e4 and a tie, labels with ignored (-100) rows, class weights with
    a zero."""
    x = _logits(dtype, (6, 5))
    x[0, :3] = torch.tensor([1e4, -1e4, 0.0], dtype=dtype)
    x[3, 1] = x[3, 2]
    y = torch.tensor([0, -100, 3, 2, -100, 4])
    cw = torch.tensor([0.5, 1.0, 2.0, 0.0, 3.0], dtype=dtype)
    return x, y, cw


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("options", ["ignore_index", "class_weights", "both"])
def test_plain_sparse_cross_entropy_options(used, reduction, dtype, smoothing, options):  # type: ignore[no-untyped-def]
    """Small plain calls with ``ignore_index`` and/or ``class_weights`` take torch's own
    (``ignore_index=``, ``weight=``): the composition's values and gradients, and torch's
    ``F.cross_entropy`` where their reductions mean the same; but for "mean" with both
    (the kept rows' count would need a read), which the generic path serves."""
    x, y, cw = _plain_sparse_inputs(dtype)
    kw: dict = {"label_smoothing": smoothing}
    if options != "class_weights":
        kw["ignore_index"] = -100
    else:
        y = torch.where(y == -100, 1, y)
    if options != "ignore_index":
        kw["class_weights"] = cw
    loss = unilosses.sparse_categorical_cross_entropy_with_logits
    v1, g1 = _value_and_grad(loss, x, y, reduction=reduction, **kw)
    taken = not (reduction == "mean" and options == "both")
    assert used.plain == ({"cross_entropy_with_logits": 1} if taken else {})
    v2, g2 = used.generic(_value_and_grad, loss, x, y, reduction=reduction, **kw)
    _close(v1, v2, dtype, x.numel())
    _close(g1, g2, dtype)
    with torch.no_grad():  # (clamped, not read)
        _close(loss(x, y, reduction=reduction, **kw),
               used.generic(loss, x, y, reduction=reduction, **kw), dtype, x.numel())
    if reduction == "mean" and "class_weights" in kw:
        return  # (torch's mean divides by the summed weight: "weighted_mean")
    want = torch.nn.functional.cross_entropy(
        x, y, weight=kw.get("class_weights"), ignore_index=kw.get("ignore_index", -100),
        label_smoothing=smoothing, reduction="mean" if reduction == "weighted_mean" else reduction)
    _close(loss(x, y, reduction=reduction, **kw), want, dtype, x.numel())


@pytest.mark.parametrize("shape", SIZES + [(4, 6, 5)], ids=["small", "large", "3d"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("ignore", [None, -100], ids=["all-kept", "ignore_index"])
def test_class_weights_kernel(used, no_plain, shape, reduction, dtype, smoothing, ignore):  # type: ignore[no-untyped-def]
    """Class weights go to torch's ``weight=`` (eager CPU, logits read finite): the
    composition's values and gradients, and torch's own where the reductions mean the same;
    "mean" with ``ignore_index`` (the kept rows' count unknown without a read) is the
    composition's."""
    x = _logits(dtype, shape)
    x.view(-1)[:3] = torch.tensor([1e4, -1e4, 0.0], dtype=dtype)
    classes = shape[-1]
    y = _labels(shape[:-1], classes)
    cw = torch.linspace(0.0, 2.0, classes, dtype=dtype)  # (a zero weight among them)
    kw = {"class_weights": cw, "label_smoothing": smoothing}
    if ignore is not None:
        kw["ignore_index"] = ignore
        y.view(-1)[1::3] = ignore
    loss = unilosses.sparse_categorical_cross_entropy_with_logits
    v1, g1 = _value_and_grad(loss, x, y, reduction=reduction, **kw)
    taken = not (reduction == "mean" and ignore is not None)
    assert used.calls == ({"cross_entropy_with_logits": 1} if taken else {})
    v2, g2 = used.generic(_value_and_grad, loss, x, y, reduction=reduction, **kw)
    _close(v1, v2, dtype, x.numel())
    _close(g1, g2, dtype)
    if reduction != "mean":
        want = torch.nn.functional.cross_entropy(
            x.movedim(-1, 1), y, weight=cw, label_smoothing=smoothing,
            ignore_index=-100 if ignore is None else ignore,
            reduction="mean" if reduction == "weighted_mean" else reduction)
        _close(v1, want, dtype, x.numel())


def test_class_weights_kernel_declines_what_the_generic_path_answers(used, no_plain):  # type: ignore[no-untyped-def]
    """A zero summed weight (0, where torch's mean is 0 / 0), weights that want a gradient
    (torch has none for them), NaN logits, weights or a mask alongside: the composition."""
    loss = unilosses.sparse_categorical_cross_entropy_with_logits
    x = _logits(torch.float64, (50, 4))
    y = _labels((50,), 4)
    cw = torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64)
    a = x.clone().requires_grad_(True)
    got = loss(a, torch.zeros(50, dtype=torch.int64), class_weights=cw,
               reduction="weighted_mean")
    (g,) = torch.autograd.grad(got, a)
    assert float(got.detach()) == 0.0 and bool((g == 0).all())
    nan_logits = x.clone()
    nan_logits[3, 1] = math.nan
    for inputs, kw in ((x, {"class_weights": cw.clone().requires_grad_(True)}),
                       (nan_logits, {"class_weights": cw}),
                       (x, {"class_weights": cw, "weights": torch.ones(50, dtype=torch.float64)}),
                       (x, {"class_weights": cw, "where": y != 2})):
        for reduction in ("sum", "weighted_mean"):
            got = loss(inputs, y, reduction=reduction, **kw)
            want = used.generic(loss, inputs, y, reduction=reduction, **kw)
            _close(got, want, torch.float64, x.numel())
    assert used.calls == {}


def test_plain_sparse_options_decline_what_the_generic_path_answers(used):  # type: ignore[no-untyped-def]
    """Means over nothing (0, where torch's are 0 / 0), NaN logits in ignored rows where a
    gradient is wanted, class weights that are negative, NaN, of another dtype or shape, or
    that want a gradient, and an ignore_index that is not a Python int: the generic path's
    values, gradients and errors."""
    loss = unilosses.sparse_categorical_cross_entropy_with_logits
    x, y, cw = _plain_sparse_inputs(torch.float64)
    ignored = torch.full((6,), -100)
    nan_rows = x.clone()
    nan_rows[1] = math.nan
    nan_rows[4, 0] = math.inf
    cases = [
        (x, ignored, {"ignore_index": -100}, 0.0),
        (x, torch.full((6,), 3), {"class_weights": cw, "reduction": "weighted_mean"}, 0.0),
        (x, torch.where(y == -100, -100, 3), {"class_weights": cw, "ignore_index": -100,
                                              "reduction": "weighted_mean"}, 0.0),
        (nan_rows, y, {"ignore_index": -100}, None),
        (nan_rows, y, {"ignore_index": -100, "class_weights": cw, "reduction": "sum"}, None),
        (x, y, {"ignore_index": np.int64(-100)}, None),
        (x, y.clamp(0), {"class_weights": cw.float()}, None),
        (x, y.clamp(0), {"class_weights": cw.clone().requires_grad_(True)}, None),
    ]
    for inputs, labels, kw, value in cases:
        a = inputs.clone().requires_grad_(True)
        got = loss(a, labels, **kw)
        (g,) = torch.autograd.grad(got, a)
        want, gw = used.generic(_value_and_grad, loss, inputs, labels, **kw)
        _close(got, want, torch.float64, x.numel())
        _close(g, gw, torch.float64)
        assert bool(torch.isfinite(g).all())
        if value is not None:
            assert float(got.detach()) == value and bool((g == 0).all())
    assert used.plain == {}
    # with no gradient wanted, NaN in ignored rows is the plain kernel's (torch leaves those
    # rows out of the value)
    with torch.no_grad():
        got = loss(nan_rows, y, ignore_index=-100, reduction="none")
    assert used.plain == {"cross_entropy_with_logits": 1}
    _close(got, used.generic(loss, nan_rows, y, ignore_index=-100, reduction="none"),
           torch.float64)
    for bad in (-cw, torch.where(cw == 0, math.nan, cw)):
        with pytest.raises(ValueError, match="class_weights` holds negative"):
            loss(x, y.clamp(0), class_weights=bad)
    with unilosses.checks(False):  # (negative weights unread: the same formula either way)
        _close(loss(x, y.clamp(0), class_weights=-cw, reduction="sum"),
               used.generic(loss, x, y.clamp(0), class_weights=-cw, reduction="sum"),
               torch.float64, x.numel())
    with pytest.raises(ValueError, match="other than ignore_index=-100"):
        loss(x, torch.where(y == 3, 7, y), ignore_index=-100, class_weights=cw)


def _plain_option_cases(dtype):  # type: ignore[no-untyped-def]
    """(kernel, loss, x, targets) of the plain kernels that take weights and masks: logits
    with +-1e4 and a tie, soft targets in a row, probabilities with exact 0 and 1."""
    x = _logits(dtype, (6, 5))
    x[0, :3] = torch.tensor([1e4, -1e4, 0.0], dtype=dtype)
    x[3, 1] = x[3, 2]
    g = torch.Generator().manual_seed(3)
    t = (torch.rand((6, 5), generator=g) < 0.4).to(dtype)
    t[1] = torch.rand(5, generator=g, dtype=dtype)
    p = torch.rand((6, 5), generator=g, dtype=dtype) * 0.9 + 0.05
    p[0, :2] = torch.tensor([0.0, 1.0], dtype=dtype)
    soft = torch.softmax(_logits(dtype, (6, 5), seed=5), dim=1)
    return [
        ("cross_entropy_with_logits", unilosses.sparse_categorical_cross_entropy_with_logits,
         x, torch.tensor([0, 4, 3, 2, 1, 4])),
        ("cross_entropy_with_logits", unilosses.categorical_cross_entropy_with_logits, x, soft),
        ("binary_cross_entropy_with_logits", unilosses.binary_cross_entropy_with_logits, x, t),
        ("binary_cross_entropy", unilosses.binary_cross_entropy, p, t),
        ("binary_focal_loss_with_logits", unilosses.binary_focal_loss_with_logits, x, t),
        ("binary_focal_loss", unilosses.binary_focal_loss, p, t),
        ("log_cosh", unilosses.log_cosh, x, soft * 3),
    ]


def _peer_elementwise(name, x, t):  # type: ignore[no-untyped-def]
    """What a torch user writes for the unreduced loss (probabilities clipped as unilosses
    clips them)."""
    F = torch.nn.functional
    if name == "log_cosh":  # (Keras's formula, of |d|: no overflow, float64's digits here)
        d = (x - t).abs()
        return d + F.softplus(-2.0 * d) - math.log(2.0)
    if name.startswith("binary_focal_loss"):
        # torchvision's formula, alpha 0.25, gamma 2, for soft labels as unilosses defines
        # it (the same for hard ones): alpha weighs the positive term, |t - p| is its 1 - p_t
        if name.endswith("logits"):
            p, log_p, log_q = torch.sigmoid(x), F.logsigmoid(x), F.logsigmoid(-x)
        else:
            p = x
            log_p, log_q = torch.log(x.clamp(1e-7, 1 - 1e-7)), torch.log1p(-x.clamp(1e-7,
                                                                                1 - 1e-7))
        return -(0.25 * t * log_p + 0.75 * (1 - t) * log_q) * (t - p) ** 2
    if name == "binary_cross_entropy_with_logits":
        return F.binary_cross_entropy_with_logits(x, t, reduction="none")
    if name == "binary_cross_entropy":
        return F.binary_cross_entropy(x.clamp(1e-7, 1 - 1e-7), t, reduction="none")
    return F.cross_entropy(x, t, reduction="none")


def _options_value_and_grads(fn, x, t, w, m, reduction):  # type: ignore[no-untyped-def]
    """The loss with weights ``w`` and/or mask ``m`` and its gradients in ``x`` and ``w``
    (None where w is)."""
    x = x.detach().clone().requires_grad_(True)
    if w is not None:
        w = w.detach().clone().requires_grad_(True)
    out = fn(x, t, weights=w, where=m, reduction=reduction)
    cot = torch.linspace(0.5, 1.5, out.numel(), dtype=out.dtype).reshape(out.shape)
    grads = torch.autograd.grad((out * cot).sum(), (x,) if w is None else (x, w))
    return out, grads[0], None if w is None else grads[1]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("options", ["weights", "where", "both"])
def test_plain_calls_with_weights_and_masks(used, reduction, dtype, options):  # type: ignore[no-untyped-def]
    """Small plain calls with sample weights and/or a ``where`` mask of the loss's shape take
    the plain kernels (the unreduced loss, weighed and masked in a select or two and a
    ``dot``): the composition's values and gradients (in the inputs and the weights), with
    or without a gradient wanted, and the formula a torch user writes,
    ``where(m, F.<loss>(..., reduction="none") * w, 0)`` reduced.  Masked elements hold
    values that the loss refuses elsewhere (a label out of range, a NaN weight) and get
    exactly zero gradient."""
    for name, fn, x, t in _plain_option_cases(dtype):
        loss_shape = x.shape if name != "cross_entropy_with_logits" else x.shape[:1]
        g = torch.Generator().manual_seed(6)
        w = m = None
        if options != "where":
            w = torch.rand(loss_shape, generator=g, dtype=dtype) * 2
            w.view(-1)[1] = 0.0
        if options != "weights":
            m = torch.rand(loss_shape, generator=g) > 0.3
            m.view(-1)[0] = False
            m.view(-1)[2] = True
            if w is not None:
                w = torch.where(m, w, math.nan)
            if t.dtype == torch.int64:
                t = torch.where(m, t, -1)
        before = used.plain.get(name, 0)
        v1, gx1, gw1 = _options_value_and_grads(fn, x, t, w, m, reduction)
        assert used.plain.get(name, 0) == before + 1, (fn.__name__, "not taken")
        v2, gx2, gw2 = used.generic(_options_value_and_grads, fn, x, t, w, m, reduction)
        for a, b in ((v1, v2), (gx1, gx2), (gw1, gw2)):
            if a is not None:
                assert bool(torch.isfinite(a).all()), (fn.__name__, a)
                _close(a, b, dtype, x.numel())
        if m is not None:
            rows = m if m.shape == x.shape else m[:, None].expand(x.shape)
            assert bool((gx1[~rows] == 0).all())
            if gw1 is not None:
                assert bool((gw1[~m] == 0).all())
        with torch.no_grad():  # (nothing read: the loss's product selected once)
            got = fn(x, t, weights=w, where=m, reduction=reduction)
        assert used.plain.get(name, 0) == before + 2, (fn.__name__, "not taken")
        _close(got, v2, dtype, x.numel())
        # the torch formula
        keep = torch.ones(loss_shape, dtype=torch.bool) if m is None else m
        wk = torch.where(keep, 1.0 if w is None else w, 0.0).to(dtype)
        ref = _peer_elementwise(fn.__name__, x, t.clamp(0) if t.dtype == torch.int64 else t)
        ref = torch.where(keep, ref * wk, 0.0)
        if reduction != "none":
            ref = ref.sum() / (1 if reduction == "sum" else keep.sum()
                               if reduction == "mean" or w is None else wk.sum())
        _close(got, ref, dtype, x.numel())


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_plain_masks_select_by_their_bits(used, monkeypatch, reduction, dtype):  # type: ignore[no-untyped-def]
    """From ``_SELECT_BITS_MIN`` elements (where autograd records the selected array, from
    ``MASK_SELECT_MIN``) a plain call's ``where`` mask selects by its bits (torch's CPU
    ``where`` is a scalar loop): the composition's values and gradients, in the inputs and
    the weights, masked elements' gradients exactly 0; without a gradient, NaN and inf in
    the masked inputs and weights selected away."""
    n = kernels.MASK_SELECT_MIN + 5
    rows = kernels._SELECT_BITS_MIN + 5  # (rows of 5 classes: a plain call below 2^16)
    g = torch.Generator().manual_seed(14)
    x = torch.randn(n, generator=g, dtype=dtype) * 3
    t = (torch.rand(n, generator=g) < 0.3).to(dtype)
    xr = torch.randn(rows, 5, generator=g, dtype=dtype)
    y = torch.randint(0, 5, (rows,), generator=g)
    cases = [("log_cosh", unilosses.log_cosh, x, t * 3),
             ("binary_cross_entropy_with_logits", unilosses.binary_cross_entropy_with_logits,
              x, t),
             ("cross_entropy_with_logits",
              unilosses.sparse_categorical_cross_entropy_with_logits, xr, y)]
    bits = _spy(monkeypatch, kernels, "_mask_bits", lambda out, a, kw: True)
    nan = torch.tensor(math.nan, dtype=dtype)
    for name, fn, a, b in cases:
        k = a.shape[0]
        w = torch.rand(k, generator=g, dtype=dtype) * 2
        m = torch.rand(k, generator=g) > 0.3
        for weights in (None, torch.where(m, w, nan)):
            before = used.plain.get(name, 0)
            bits.clear()
            v1, ga1, gw1 = _options_value_and_grads(fn, a, b, weights, m, reduction)
            assert used.plain.get(name, 0) == before + 1, name
            # (a gradient wanted, in the inputs and the weights: from MASK_SELECT_MIN)
            assert bool(bits) == (k >= kernels.MASK_SELECT_MIN), name
            v2, ga2, gw2 = used.generic(_options_value_and_grads, fn, a, b, weights, m,
                                        reduction)
            for got, want in ((v1, v2), (ga1, ga2), (gw1, gw2)):
                if got is not None:
                    _close(got, want, dtype, a.numel())
            kept = m if m.shape == a.shape else m[:, None].expand(a.shape)
            assert bool((ga1[~kept] == 0).all())
            if gw1 is not None:
                assert bool((gw1[~m] == 0).all())
            bad = torch.where(kept, a, nan if name == "log_cosh" else math.inf)
            bits.clear()
            with torch.no_grad():
                got = fn(bad, b, weights=weights, where=m, reduction=reduction)
            assert used.plain.get(name, 0) == before + 2 and bits, name
            _close(got, v2, dtype, a.numel())


def test_plain_masked_calls_with_nonfinite_masked_inputs(used):  # type: ignore[no-untyped-def]
    """NaN and inf in masked logits, targets and weights: without a gradient the plain
    kernels select the loss's product away; with one wanted (in the inputs or the weights)
    they decline, and the generic path replaces the masked inputs first; either way the
    composition's values, and finite gradients, zero where masked."""
    dtype = torch.float64
    for name, fn, x, t in _plain_option_cases(dtype):
        rows = name == "cross_entropy_with_logits"
        loss_shape = x.shape[:1] if rows else x.shape
        m = torch.tensor([True, False, True, True, False, True])
        if not rows:
            m = m[:, None].expand(x.shape).clone()
            m[0, 0] = False
        mx = m[:, None].expand(x.shape) if rows else m
        # (probabilities: torch's kernel refuses NaN and values outside [0, 1] wherever they
        # are, and the generic path answers; their weights only, then)
        logits = name not in ("binary_cross_entropy", "binary_focal_loss")
        if logits:
            bad = torch.tensor([math.nan, math.inf, -math.inf], dtype=dtype).repeat(10)
            x = torch.where(mx, x, bad[:x.numel()].reshape(x.shape))
            if t.dtype != torch.int64:
                t = torch.where(mx, t, math.nan)
        w = torch.where(m, torch.linspace(0.5, 2.0, m.numel(), dtype=dtype).reshape(loss_shape),
                        math.inf)
        for reduction in ("sum", "none", "weighted_mean"):
            before = used.plain.get(name, 0)
            with torch.no_grad():  # (weights that would want one, but for no_grad)
                got = fn(x, t, weights=w.clone().requires_grad_(True), where=m,
                         reduction=reduction)
            assert used.plain.get(name, 0) == before + 1, fn.__name__
            want = used.generic(fn, x, t, weights=w, where=m, reduction=reduction)
            assert bool(torch.isfinite(got).all())
            _close(got, want, dtype, x.numel())
            for wanted in ("x", "w"):  # a gradient in either: declined where x is not finite
                before = used.plain.get(name, 0)
                xa = x.clone().requires_grad_(wanted == "x")
                wa = w.clone().requires_grad_(wanted == "w")
                out = fn(xa, t, weights=wa, where=m, reduction=reduction)
                (grad,) = torch.autograd.grad(out.sum(), xa if wanted == "x" else wa)
                assert used.plain.get(name, 0) == before + (0 if logits else 1), fn.__name__
                _close(out, want, dtype, x.numel())
                masked = ~mx if wanted == "x" else ~m
                assert bool(torch.isfinite(grad).all()) and bool((grad[masked] == 0).all())
        if t.dtype != torch.int64 and logits:  # finite logits, NaN targets where masked
            xa = torch.where(mx, x, 0.0).requires_grad_(True)
            before = used.plain.get(name, 0)
            out = fn(xa, t, weights=w, where=m, reduction="sum")
            (grad,) = torch.autograd.grad(out, xa)
            assert used.plain.get(name, 0) == before, fn.__name__
            _close(out, used.generic(fn, xa.detach(), t, weights=w, where=m, reduction="sum"),
                   dtype, x.numel())
            assert bool(torch.isfinite(grad).all()) and bool((grad[~mx] == 0).all())


def test_plain_masked_means_over_nothing_decline(used):  # type: ignore[no-untyped-def]
    """A mean over no unmasked element, or a weighted mean over a zero weight sum, is the
    generic path's 0 with a zero gradient (torch's 0 / 0 is NaN)."""
    x = _logits(torch.float32, (4, 5)).requires_grad_(True)
    y = torch.tensor([0, 2, 4, 1])
    loss = unilosses.sparse_categorical_cross_entropy_with_logits
    nothing = torch.zeros(4, dtype=torch.bool)
    some = torch.tensor([True, False, True, False])
    for kw in ({"where": nothing, "reduction": "mean"},
               {"where": nothing, "weights": torch.ones(4), "reduction": "weighted_mean"},
               {"where": some, "weights": torch.tensor([0.0, 1.0, 0.0, 2.0]),
                "reduction": "weighted_mean"},
               {"weights": torch.zeros(4), "reduction": "weighted_mean"}):
        out = loss(x, y, **kw)
        (g,) = torch.autograd.grad(out, x)
        assert float(out.detach()) == 0.0 and bool((g == 0).all())
    assert used.plain == {}
    # the same calls with a weight or an element left: the plain kernel
    out = loss(x, y, where=some, weights=torch.tensor([1.0, 1.0, 0.0, 2.0]),
               reduction="weighted_mean")
    assert used.plain == {"cross_entropy_with_logits": 1}
    _close(out, torch.nn.functional.cross_entropy(x, y, reduction="none")[0], torch.float32)


def test_ignore_index_with_weights_and_a_mask(used):  # type: ignore[no-untyped-def]
    x = _logits(torch.float64, (50, 10))
    y = _labels((50,), 10)
    y[::4] = 3  # ignored, where the mask does not leave them out already
    m = torch.arange(50) % 3 != 0
    y[::6] = -1  # masked (rows 0, 6, ...; multiples of 3): out of range there, left out
    w = torch.linspace(0.0, 2.0, 50, dtype=torch.float64)
    for reduction in ("mean", "sum", "none", "weighted_mean"):
        _check_weighted(used, "cross_entropy_with_logits", lambda *a, **k: (
            unilosses.sparse_categorical_cross_entropy_with_logits(*a, ignore_index=3, **k)),
            x, y, w, m, reduction, torch.float64, {}, 1)


def test_ignore_index_with_nothing_kept(used):  # type: ignore[no-untyped-def]
    x = _logits(torch.float32, (5, 4)).requires_grad_(True)
    y = torch.full((5,), -100)
    loss = unilosses.sparse_categorical_cross_entropy_with_logits(x, y, ignore_index=-100)
    (g,) = torch.autograd.grad(loss, x)
    assert used.calls.get("cross_entropy_with_logits", 0) == 1
    assert float(loss) == 0.0 and bool((g == 0).all())  # (torch's own mean: NaN)


def test_ignore_index_rows_with_nan_logits_take_the_generic_path(used):  # type: ignore[no-untyped-def]
    x = _logits(torch.float64, (6, 4))
    y = torch.tensor([0, -100, 1, 2, -100, 3])
    x[1] = math.nan
    x[4, 0] = math.inf
    x = x.requires_grad_(True)
    loss = unilosses.sparse_categorical_cross_entropy_with_logits(x, y, ignore_index=-100)
    (g,) = torch.autograd.grad(loss, x)
    assert used.calls.get("cross_entropy_with_logits", 0) == 0
    keep = torch.tensor([0, 2, 3, 5])
    want = torch.nn.functional.cross_entropy(x.detach()[keep], y[keep])
    _close(loss, want, torch.float64)
    assert bool(torch.isfinite(g).all()) and bool((g[[1, 4]] == 0).all())


# -- block-wise focal sums ---------------------------------------------------------------------

N_BLOCKWISE = kernels._CHUNK_MIN + 12345  # over the threshold, not a multiple of the block


def _focal_inputs(dtype, soft: bool):  # type: ignore[no-untyped-def]
    x = _logits(dtype, (N_BLOCKWISE,), scale=4.0, seed=5)
    x[:6] = torch.tensor([1e4, -1e4, 0.0, math.inf, -math.inf, 100.0], dtype=dtype)
    g = torch.Generator().manual_seed(6)
    t = (torch.rand(N_BLOCKWISE, generator=g, dtype=dtype) < 0.2).to(dtype)
    t[:6] = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 1.0], dtype=dtype)
    if soft:
        t[1000:3000] = torch.rand(2000, generator=g, dtype=dtype)
        # a soft label equal to the prediction: |t - p| = 0, whose factor has gradient 0
        t[3000] = torch.sigmoid(x[3000])
    return x, t


def _spy(monkeypatch, owner, name, record):  # type: ignore[no-untyped-def]
    """Wrap ``owner.name``; each call appends ``record(out, args, kwargs)`` to the list returned."""
    calls = []
    real = getattr(owner, name)

    def spy(*a, **kw):  # type: ignore[no-untyped-def]
        out = real(*a, **kw)
        calls.append(record(out, a, kw))
        return out
    monkeypatch.setattr(owner, name, spy)
    return calls


def _blockwise_calls(monkeypatch):  # type: ignore[no-untyped-def]
    # True: with a closed-form derivative (the second argument of apply); the value alone,
    # with no gradient wanted, is the closed form's, summed without the Function
    calls = _spy(monkeypatch, kernels._BlockwiseSum, "apply", lambda out, a, kw: a[1] is not None)
    real = kernels._value_sum

    def value_sum(*a, **kw):  # type: ignore[no-untyped-def]
        calls.append(True)
        return real(*a, **kw)
    monkeypatch.setattr(kernels, "_value_sum", value_sum)
    return calls


@pytest.mark.parametrize("gamma", [2.0, 0.0, 1.0, 0.5, 3.0])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_blockwise_binary_focal_matches_the_composition(used, monkeypatch, gamma, soft, dtype):  # type: ignore[no-untyped-def]
    x, t = _focal_inputs(dtype, soft)
    calls = _blockwise_calls(monkeypatch)
    for reduction, alpha in (("mean", 0.25), ("sum", None)):
        f = unilosses.binary_focal_loss_with_logits
        v1, g1 = _value_and_grad(f, x, t, reduction=reduction, alpha=alpha, gamma=gamma)
        v2, g2 = used.generic(_value_and_grad, f, x, t, reduction=reduction, alpha=alpha,
                              gamma=gamma)
        _close(v1, v2, dtype, N_BLOCKWISE)
        _close(g1, g2, dtype)
        assert bool(torch.isfinite(g1).all())
        # no gradient wanted: the closed form's value alone
        v3 = f(x, t, reduction=reduction, alpha=alpha, gamma=gamma)
        _close(v3, v2, dtype, N_BLOCKWISE)
    assert calls == [True, True, True, True]  # the closed form was used


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_blockwise_log_cosh_matches_the_composition(used, monkeypatch, dtype):  # type: ignore[no-untyped-def]
    """The closed form (value and tanh(d) per block) against the composition, with zero
    errors, the +-40 clamp of the error on both sides of it, and huge and infinite errors."""
    p = _logits(dtype, (N_BLOCKWISE,), scale=3.0, seed=7)
    t = _logits(dtype, (N_BLOCKWISE,), scale=1.0, seed=8)
    p[:8] = torch.tensor([0.0, 40.0, -40.0, 40.5, -39.5, 1e4, -1e30, math.inf], dtype=dtype)
    t[:8] = 0.0
    t[8:12] = p[8:12]  # zero error
    calls = _blockwise_calls(monkeypatch)
    for reduction in ("mean", "sum"):
        v1, g1 = _value_and_grad(unilosses.log_cosh, p, t, reduction=reduction)
        v2, g2 = used.generic(_value_and_grad, unilosses.log_cosh, p, t, reduction=reduction)
        _close(v1, v2, dtype, N_BLOCKWISE)
        _close(g1, g2, dtype)
        assert torch.equal(g1[8:12], torch.zeros(4, dtype=dtype))
    p, t = p[8:], t[8:]  # finite: compared with float64 log(cosh) and tanh
    v, g = _value_and_grad(unilosses.log_cosh, p, t, reduction="sum")
    d = (p - t).double()
    _close(v, torch.log(torch.cosh(d)).sum(), dtype, N_BLOCKWISE)
    _close(g, torch.tanh(d), dtype)
    assert calls == [True, True, True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available here")
def test_blockwise_on_cuda_takes_the_device_block(used, monkeypatch):  # type: ignore[no-untyped-def]
    """On a GPU the blocks are _DEVICE_BLOCK elements (the CPU's would cost ~30 launches per
    64K elements); two of them here, the second partial, against the composition."""
    monkeypatch.setattr(kernels, "_FUSED_ON", False)  # (the default there: one fused kernel)
    n = kernels._DEVICE_BLOCK + 12345
    g = torch.Generator(device="cuda").manual_seed(3)
    x = torch.randn(n, generator=g, device="cuda") * 4.0
    x[:4] = torch.tensor([1e4, -1e4, math.inf, -math.inf])
    t = (torch.rand(n, generator=g, device="cuda") < 0.2).float()
    rows = _spy(monkeypatch, kernels._BlockwiseSum, "apply", lambda out, a, kw: a[2])
    for f, kw in ((unilosses.binary_focal_loss_with_logits, {"gamma": 2.0, "alpha": 0.25}),
                  (unilosses.log_cosh, {})):
        v1, g1 = _value_and_grad(f, x[4:], t[4:], **kw)
        v2, g2 = used.generic(_value_and_grad, f, x[4:], t[4:], **kw)
        _close(v1, v2, torch.float32, n)
        _close(g1, g2, torch.float32)
        assert v1.device.type == "cuda" and g1.device.type == "cuda"
    v, gr = _value_and_grad(unilosses.binary_focal_loss_with_logits, x, t, gamma=2.0)
    assert bool(torch.isfinite(v)) and bool(torch.isfinite(gr).all())
    assert rows == [kernels._DEVICE_BLOCK] * 3


def _probability_inputs(dtype, soft: bool):  # type: ignore[no-untyped-def]
    x, t = _focal_inputs(dtype, soft)
    p = torch.sigmoid(x)
    # exact 0 and 1, the clip's edges, and a soft label equal to its prediction
    p[:6] = torch.tensor([0.0, 1.0, 1e-7, 1.0 - 1e-7, 0.5, 1e-9], dtype=dtype)
    if soft:
        t[3000] = p[3000]
    return p, t


@pytest.mark.parametrize("gamma", [2.0, 0.0, 1.0, 0.5, 3.0])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_blockwise_binary_focal_on_probabilities(used, monkeypatch, gamma, soft, dtype):  # type: ignore[no-untyped-def]
    p, t = _probability_inputs(dtype, soft)
    calls = _blockwise_calls(monkeypatch)
    f = unilosses.binary_focal_loss
    for reduction, alpha in (("mean", 0.25), ("sum", None)):
        v1, g1 = _value_and_grad(f, p, t, reduction=reduction, alpha=alpha, gamma=gamma)
        v2, g2 = used.generic(_value_and_grad, f, p, t, reduction=reduction, alpha=alpha,
                              gamma=gamma)
        _close(v1, v2, dtype, N_BLOCKWISE)
        _close(g1, g2, dtype)
        _close(f(p, t, reduction=reduction, alpha=alpha, gamma=gamma), v2, dtype, N_BLOCKWISE)
    assert calls == [True] * 4


@pytest.mark.parametrize("gamma", [2.0, 0.0, 1.0, 0.5])
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("anchors", [False, True], ids=["binary", "anchor"])
def test_probabilities_inside_the_clip_drop_it(used, monkeypatch, gamma, soft, anchors):  # type: ignore[no-untyped-def]
    from unilosses.losses import focal
    x, t = _focal_inputs(torch.float64, soft)
    p = torch.sigmoid(x.clamp(-4.0, 4.0))  # inside [1e-7, 1 - 1e-7]
    seen = _spy(monkeypatch, focal, "_focal_probabilities_value_grad",
                lambda out, a, kw: kw.get("inside"))
    if anchors:
        p, t = p[:N_BLOCKWISE // 8 * 8].reshape(-1, 8), t[:N_BLOCKWISE // 8 * 8].reshape(-1, 8)
        state = torch.randint(-1, 2, p.shape[:-1], generator=torch.Generator().manual_seed(3))
        f, args, kw = unilosses.anchor_focal_loss, (t, state), {"gamma": gamma}
    else:
        f, args, kw = unilosses.binary_focal_loss, (t,), {"gamma": gamma, "alpha": 0.25}
    v1, g1 = _value_and_grad(f, p, *args, reduction="sum", **kw) if not anchors else \
        _value_and_grad(lambda p, *a, reduction: f(p, *a, **kw), p, *args)
    assert seen and all(seen), seen
    v2, g2 = used.generic(_value_and_grad, f, p, *args, reduction="sum", **kw) if not anchors \
        else used.generic(_value_and_grad, lambda p, *a, reduction: f(p, *a, **kw), p, *args)
    _close(v1, v2, torch.float64, p.numel())
    _close(g1, g2, torch.float64)


def test_range_checks_read_extrema_and_still_refuse():  # type: ignore[no-untyped-def]
    p = torch.full((N_BLOCKWISE,), 0.5)
    t = torch.zeros(N_BLOCKWISE)
    for bad in (math.nan, 1.5, -0.1):
        q = p.clone()
        q[777] = bad
        with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
            unilosses.binary_focal_loss(q, t)
        with pytest.raises(ValueError, match="outside \\[0, 1\\]"):
            unilosses.binary_focal_loss(q.numpy(), t.numpy())
    x = torch.zeros(50, 4)
    for label in (4, -1):
        y = torch.zeros(50, dtype=torch.int64)
        y[7] = label
        with pytest.raises(ValueError, match="labels` holds values outside \\[0, 4\\)"):
            unilosses.sparse_categorical_cross_entropy(torch.softmax(x, -1), y)
    ad = unilosses.backends.adapter_named("torch")
    assert ad.extrema(torch.tensor([3, -2, 5])) == (-2, 5)
    assert ad.extrema(torch.tensor([], dtype=torch.float32)) is None
    lo, hi = ad.extrema(torch.tensor([0.5, math.nan]))
    assert math.isnan(lo) and math.isnan(hi)


def _anchor_inputs(logits: bool, dtype=torch.float64):  # type: ignore[no-untyped-def]
    anchors, classes = (N_BLOCKWISE // 80) + 1, 80
    x = _logits(dtype, (2, anchors // 2 + 1, classes), seed=7)
    if not logits:
        x = torch.sigmoid(x)
    g = torch.Generator().manual_seed(8)
    state = torch.randint(-1, 2, x.shape[:-1], generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, x.shape[:-1], generator=g),
                                    classes).to(x.dtype)
    x[state == -1] = math.nan  # ignored anchors may hold anything
    return x, y, state


@pytest.mark.parametrize("logits", [True, False], ids=["logits", "probabilities"])
def test_blockwise_anchor_focal_matches_the_composition(used, monkeypatch, logits):  # type: ignore[no-untyped-def]
    x, y, state = _anchor_inputs(logits)
    calls = _blockwise_calls(monkeypatch)
    f = unilosses.anchor_focal_loss_with_logits if logits else unilosses.anchor_focal_loss

    def run(x):  # type: ignore[no-untyped-def]
        x = x.detach().clone().requires_grad_(True)
        out = f(x, y, state)
        return out, torch.autograd.grad(out, x)[0]

    v1, g1 = run(x)
    v2, g2 = used.generic(run, x)
    _close(v1, v2, torch.float64, x.numel())
    _close(g1, g2, torch.float64)
    assert bool(torch.isfinite(g1).all())
    _close(f(x, y, state), v2, torch.float64, x.numel())  # forward only
    assert calls == [True, True]


def test_known_binary_reads_0_1_labels_only():  # type: ignore[no-untyped-def]
    ad = unilosses.backends.adapter_named("torch")
    assert ad.known_binary(torch.tensor([0.0, 1.0, 1.0, 0.0]))
    assert ad.known_binary(torch.tensor([[0.0, 1.0]], dtype=torch.float64))
    for bad in ([0.0, 0.5], [0.0, 2.0], [-1.0, 1.0], [1.0, math.nan], [0.0, math.inf],
                [1e-10, 1.0], [1.0 - 1e-7, 0.0]):
        assert not ad.known_binary(torch.tensor(bad)), bad
    assert not ad.known_binary(torch.tensor([0, 1]))  # integer: never read
    assert not unilosses.backends.adapter_named("numpy").known_binary(np.array([0.0, 1.0]))


@pytest.mark.parametrize("n", [16, 1024, kernels._CHECK_MIN],
                         ids=["list-read", "numpy-read", "torch-read"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_the_bound_read_holds_exactly_when_x_dot_x_is_finite(n, dtype):  # type: ignore[no-untyped-def]
    # tiny 1-D and 2-D inputs are read through their Python floats (hypot), small ones
    # through NumPy, large ones (and what NumPy cannot view) through torch: the same test,
    # whose True means that the clamp to +-max/4 changes nothing
    assert (n <= kernels._LIST_MAX) == (n == 16)
    root = math.sqrt(torch.finfo(dtype).max)
    base = torch.linspace(-3.0, 3.0, n, dtype=dtype)
    assert kernels._bounded(base)
    assert kernels._bounded(base.clone().requires_grad_(True))
    assert kernels._bounded(base.reshape(-1, 8 if n == 16 else 256))
    assert kernels._bounded(base.reshape(2, 2, -1))  # (3-D: NumPy's read)
    one = base.clone()
    one[n // 2] = root * 0.5  # its square is finite
    assert kernels._bounded(one)
    assert kernels._bounded(torch._neg_view(one))
    for bad in (math.inf, -math.inf, math.nan, root * 2.0, torch.finfo(dtype).max / 4 * 1.5):
        x = base.clone()
        x[n // 3] = bad
        assert not kernels._bounded(x), bad
        assert not kernels._bounded(x.reshape(-1, 8 if n == 16 else 256)), bad
        if bad != bad:  # NaN next to an inf
            x[n // 2] = math.inf
            assert not kernels._bounded(x), "NaN and inf"
        # (a negative view: NumPy refuses it, torch reads it)
        assert not kernels._bounded(torch._neg_view(x)), bad
        assert not kernels._bounded(x.requires_grad_(True)), bad
    # not read at all: strided, integer, or off the layout the dot needs
    assert not kernels._bounded(base.reshape(-1, 2).T)
    assert not kernels._bounded(torch.arange(n))
    # float16 (no NumPy read there) goes through torch's dot
    assert kernels._bounded(base[:16].to(torch.float16))
    assert not kernels._bounded(torch.full((n,), 300.0, dtype=torch.float16))  # 9e4 > 65504


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_the_extrema_read(dtype, threads):  # type: ignore[no-untyped-def]
    # read through Python's numbers up to _EXTREMA_LIST_MAX elements, through NumPy between
    # _NUMPY_EXTREMA's sizes on one thread, else through torch's aminmax: the minimum and
    # maximum exactly, NaN as both
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(5)
        assert kernels._EXTREMA_LIST_MAX == 16
        for n in (16, 64, kernels._NUMPY_EXTREMA[0], kernels._NUMPY_EXTREMA[0] * 3 + 5):
            x = torch.rand(n, generator=g, dtype=dtype) * 6.0 - 3.0
            x[n // 3] = -7.5
            x[n // 2] = 9.25
            expected = (-7.5, 9.25)
            assert kernels._extrema(x) == expected
            assert kernels._extrema(x.clone().requires_grad_(True)) == expected
            if n % 4 == 0:
                assert kernels._extrema(x.reshape(-1, 4)) == expected  # (a block's 2-D view)
            assert kernels._extrema(torch._neg_view(x)) == (-9.25, 7.5)  # (NumPy refuses it)
            assert kernels._extrema(x[::2]) == (float(x[::2].min()), float(x[::2].max()))
            for bad in (math.nan, math.inf, -math.inf):
                y = x.clone()
                y[n - 1] = bad
                lo, hi = kernels._extrema(y)
                if math.isnan(bad):
                    assert math.isnan(lo) and math.isnan(hi)
                else:
                    assert (lo, hi) == ((bad, 9.25) if bad < 0 else (-7.5, bad))
            y = x.clone()
            y[0] = math.nan  # (where min and max would pass over it)
            assert all(map(math.isnan, kernels._extrema(y)))
            if n % 4 == 0:
                assert all(map(math.isnan, kernels._extrema(y.reshape(-1, 4))))
            y[0], y[1] = -math.inf, math.inf  # (a NaN sum, no NaN)
            assert kernels._extrema(y) == (-math.inf, math.inf)
            states = torch.remainder(torch.arange(n), 3) - 1  # (int64: the anchor states)
            assert kernels._extrema(states) == (-1, 1)
            assert kernels._extrema(states[:16].clamp(0, 1).reshape(-1, 2)) == (0, 1)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_the_hard_label_form_is_taken_for_0_1_labels_only(monkeypatch, soft):  # type: ignore[no-untyped-def]
    from unilosses.losses import focal
    x, t = _focal_inputs(torch.float32, soft)
    calls = _spy(monkeypatch, focal, "_hard_focal_logits_value_grad", lambda out, a, kw: True)
    unilosses.binary_focal_loss_with_logits(x.requires_grad_(True), t).backward()
    blocks = math.ceil(x.numel() / kernels._BLOCK)
    # soft labels: only the blocks that hold none (the first 1000 elements' block has some)
    assert (len(calls) < blocks) if soft else (len(calls) == blocks)


@pytest.mark.parametrize("gamma", [2.0, 0.0, 1.0, 0.5])
@pytest.mark.parametrize("soft", [False, True], ids=["one-hot", "soft"])
@pytest.mark.parametrize("alpha", [0.25, None])
def test_blockwise_anchor_focal_with_finite_logits(used, monkeypatch, gamma, soft, alpha):  # type: ignore[no-untyped-def]
    # finite logits: ignored anchors are cleaned by a product with the mask (0/1 labels:
    # weighted by it in the closed form); targets at anchors that are not positive must not
    # matter (NaN, or with 0/1 labels random ones)
    from unilosses.losses import focal
    anchors, classes = (N_BLOCKWISE // 20) + 1, 20
    x = _logits(torch.float64, (2, anchors // 2 + 1, classes), seed=11).clamp(-1e4, 1e4)
    g = torch.Generator().manual_seed(12)
    state = torch.randint(-1, 2, x.shape[:-1], generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, classes, x.shape[:-1], generator=g),
                                    classes).to(x.dtype)
    if soft:
        y = y * 0.9 + 0.005
        y[state != 1] = math.nan
    else:  # 0/1 labels (the hard form reads them whole): ones where background is scored 0
        y[state != 1] = (torch.rand(y[state != 1].shape, generator=g, dtype=y.dtype) > 0.5
                         ).to(y.dtype)
    calls = _blockwise_calls(monkeypatch)
    weighted = _spy(monkeypatch, focal, "_hard_focal_logits_value_grad",
                    lambda out, a, kw: kw.get("weight") is not None)
    f = unilosses.anchor_focal_loss_with_logits

    def run(x):  # type: ignore[no-untyped-def]
        x = x.detach().clone().requires_grad_(True)
        out = f(x, y, state, alpha=alpha, gamma=gamma)
        return out, torch.autograd.grad(out, x)[0]

    v1, g1 = run(x)
    blocks = len(weighted)
    v2, g2 = used.generic(run, x)
    assert bool(torch.isfinite(v1)) and bool(torch.isfinite(g1).all())
    _close(v1, v2, torch.float64, x.numel())
    _close(g1, g2, torch.float64)
    _close(f(x, y, state, alpha=alpha, gamma=gamma), v2, torch.float64, x.numel())  # value only
    assert calls == [True, True]
    # one-hot labels: every block took the hard form, weighted by the anchors kept
    assert blocks == (0 if soft else math.ceil(x.numel() / kernels._BLOCK))
    assert all(weighted)


@pytest.mark.parametrize("gamma", [2.0, 0.0, 1.0, 0.5, 3.0])
@pytest.mark.parametrize("alpha", [0.25, None, 1.0, 0.0])
def test_hard_label_form_matches_the_general_form_elementwise(gamma, alpha):  # type: ignore[no-untyped-def]
    from unilosses._core.call import prepare
    from unilosses.losses import focal
    x, t = _focal_inputs(torch.float64, soft=False)
    x = x.clamp(-1e300, 1e300)  # finite, as the block driver hands them over
    call, _ = prepare(("logits", "targets"), (x, t))
    v1, g1 = focal._hard_focal_logits_value_grad(call, x, t, alpha, gamma)
    v2, g2 = focal._focal_logits_value_grad(call, x, t, alpha, gamma)
    # elementwise and relative to each element: the two forms take the same logs; a power
    # q ** gamma taken as exp(gamma log q) carries the log's rounding times gamma |log q|
    bound = 64 * torch.finfo(torch.float64).eps * (1.0 + gamma * x.abs().clamp_max(750.0))
    for a, b in ((v1, v2), (g1, g2)):
        err = (a - b).abs() / b.abs().clamp_min(1e-300)
        assert bool(torch.isfinite(a).all())
        assert bool((err <= bound).all()), float((err / bound).max())


def test_blockwise_focal_second_derivatives_and_repeated_backward(used):  # type: ignore[no-untyped-def]
    x, t = _focal_inputs(torch.float64, soft=False)
    x = x.clamp(-30, 30)
    f = unilosses.binary_focal_loss_with_logits

    def hvp(x):  # type: ignore[no-untyped-def]
        x = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(x, t), x, create_graph=True)
        return torch.autograd.grad((g * g).sum(), x)[0]

    _close(hvp(x), used.generic(hvp, x), torch.float64)

    xr = x.detach().clone().requires_grad_(True)
    out = f(xr, t) * 3.0  # a cotangent other than 1
    (g1,) = torch.autograd.grad(out, xr, retain_graph=True)
    kept = g1.clone()
    (g2,) = torch.autograd.grad(out, xr)
    # the first backward handed its buffer on, scaled in place; the second recomputed it
    assert torch.equal(g1, g2) and torch.equal(g1, kept)
    loss = f(xr, t)
    (one,) = torch.autograd.grad(loss, xr, retain_graph=True)
    loss.backward(retain_graph=True)
    loss.backward()
    assert torch.equal(xr.grad, 2 * one) and torch.equal(one * 3.0, g1)
    def grad(x):  # type: ignore[no-untyped-def]
        x = x.detach().clone().requires_grad_(True)
        return torch.autograd.grad(f(x, t) * 3.0, x)[0]

    _close(g1, used.generic(grad, x), torch.float64)


WEIGHTED_BLOCKS = ["binary_focal_loss_with_logits", "binary_focal_loss", "log_cosh",
                   "binary_cross_entropy"]


def _weighted_block_case(name, dtype):  # type: ignore[no-untyped-def]
    """Inputs of a weighted block sum: (loss, inputs, weights, mask), the mask leaving out
    elements whose inputs and weights are NaN or inf; the shape not a multiple of the block."""
    x, t = _focal_inputs(dtype, soft=True)
    g = torch.Generator().manual_seed(8)
    shape = (x.numel() // 3, 3)
    x, t = x[:shape[0] * 3].reshape(shape), t[:shape[0] * 3].reshape(shape)
    w = torch.rand(shape, generator=g, dtype=dtype) * 2
    mask = torch.rand(shape, generator=g) > 0.25
    mask.view(-1)[3:5] = False  # the infinite logits
    if name in ("binary_focal_loss", "binary_cross_entropy"):
        x = torch.sigmoid(x.clamp(-30, 30))
        x.view(-1)[:2] = torch.tensor([1.0, 0.0], dtype=dtype)  # beyond the clip
    elif name == "log_cosh":
        t = torch.randn(shape, generator=g, dtype=dtype)
        x = x.clamp(-60, 60)
    nan = torch.tensor(math.nan, dtype=dtype)
    return getattr(unilosses, name), torch.where(mask, x, nan), torch.where(mask, t, nan), \
        torch.where(mask, w, nan), mask


@pytest.mark.parametrize("name", WEIGHTED_BLOCKS)
@pytest.mark.parametrize("options", ["weights", "where", "weights, where"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_weighted_block_sums_match_the_composition(used, monkeypatch, name, options,
                                                    reduction, dtype):  # type: ignore[no-untyped-def]
    """Weighted or masked calls of the elementwise losses with a closed form, on large CPU
    inputs, are reduced block by block (``weighted_block_sum``: each block weighed and
    selected by the mask's bits): the composition's value and gradient (the masked inputs
    replaced, the loss weighed and masked whole), NaN and inf in the masked inputs and
    weights reaching neither, with and without a gradient wanted."""
    calls = _blockwise_calls(monkeypatch)
    f, x, t, w, mask = _weighted_block_case(name, dtype)
    kw = {"reduction": reduction}
    if "weights" in options:
        kw["weights"] = w if "where" in options else torch.where(mask, w, 0.5)
    if "where" in options:
        kw["where"] = mask
    else:
        x, t = (torch.where(mask, a, 0.5) for a in (x, t))
    v1, g1 = _value_and_grad(f, x, t, **kw)
    assert calls == [True]
    v2, g2 = used.generic(_value_and_grad, f, x, t, **kw)
    _close(v1, v2, dtype, x.numel())
    _close(g1, g2, dtype)
    assert bool(torch.isfinite(g1).all()) and bool((g1[~mask] == 0).all() or "where" not in kw)
    with torch.no_grad():
        _close(f(x, t, **kw), v2, dtype, x.numel())
    assert calls == [True, True]


@pytest.mark.parametrize("shape", [(2700, 100), (9, 300, 101)], ids=["2-D", "3-D"])
@pytest.mark.parametrize("options", ["weights", "where", "weights, where"])
@pytest.mark.parametrize("reduction", ["sum", "mean", "weighted_mean"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_weighted_row_block_sums_match_the_composition(used, monkeypatch, shape, options,
                                                       reduction, dtype):  # type: ignore[no-untyped-def]
    """Categorical CE on probabilities, weighted or masked per row, with a gradient, from
    2^18 elements: block by block as without weights (``weighted_block_sum`` with the
    classes as columns: the weights and the mask's bits one per row, along the rows of the
    derivative), the composition's value and gradient; NaN in the masked rows' targets and
    weights and zeros in its probabilities; the value alone composed, as unweighted."""
    calls = _blockwise_calls(monkeypatch)
    g = torch.Generator().manual_seed(9)
    p = torch.rand(shape, generator=g, dtype=dtype) * 2
    p.view(-1, shape[-1])[:5, :3] = 0.0  # beyond the clip once renormalised
    t = torch.softmax(torch.randn(shape, generator=g, dtype=dtype), dim=-1)
    rows = shape[:-1]
    w = torch.rand(rows, generator=g, dtype=dtype) + 0.5
    mask = torch.rand(rows, generator=g) > 0.25
    kw = {"reduction": reduction}
    if "where" in options:
        kw["where"] = mask
        t = torch.where(mask[..., None], t, math.nan)
        w = torch.where(mask, w, math.nan)
    if "weights" in options:
        kw["weights"] = w
    f = unilosses.categorical_cross_entropy
    v1, g1 = _value_and_grad(f, p, t, **kw)
    assert calls == [True]
    v2, g2 = used.generic(_value_and_grad, f, p, t, **kw)
    _close(v1, v2, dtype, p.numel())
    _close(g1, g2, dtype)
    assert bool(torch.isfinite(g1).all())
    if "where" in kw:
        assert bool((g1[~mask] == 0).all())
    _close(f(p, t, **kw), v2, dtype, p.numel())
    assert calls == [True]


def test_weighted_block_sums_decline_what_the_composition_answers(used, monkeypatch):  # type: ignore[no-untyped-def]
    """A gradient wanted in the weights (the Function gives them none), a divisor of 0 (no
    element kept, weights summing to 0: the composition's 0 with a zero gradient) and
    reduction "none" take the composition; a derivative of the derivative and a repeated
    backward go through the blocks' Function as unweighted calls do."""
    calls = _blockwise_calls(monkeypatch)
    f, x, t, w, mask = _weighted_block_case("binary_focal_loss_with_logits", torch.float64)
    wg = torch.where(mask, w, 0.0).requires_grad_(True)
    xg = x.clone().requires_grad_(True)
    out = f(xg, t, weights=wg, where=mask)
    gx, gw = torch.autograd.grad(out, (xg, wg))
    assert calls == []
    ref = f(torch.where(mask, x, 0.0), torch.where(mask, t, 0.0), reduction="none").detach()
    _close(gw, torch.where(mask, ref, 0.0) / int(mask.sum()), torch.float64)
    none = torch.zeros_like(mask)
    for kw in ({"where": none}, {"weights": torch.zeros_like(w), "reduction": "weighted_mean"},
               {"weights": w, "where": none, "reduction": "weighted_mean"}):
        v, g = _value_and_grad(f, x.nan_to_num(0.0), t.nan_to_num(0.0), **kw)
        assert float(v.detach()) == 0.0 and not bool(g.any())
    assert f(x, t, where=mask, reduction="none").shape == x.shape and calls == []
    # through the blocks: create_graph (the composition per block, with autograd), and the
    # buffer handed on by a first backward, recomputed by a second
    keep = torch.where(mask, w, 0.0)
    xf, tf = (torch.where(mask, a, 0.0).clamp(-30, 30) for a in (x, t))

    def hvp(a, **kw):  # type: ignore[no-untyped-def]
        a = a.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(a, tf, where=mask, **kw), a, create_graph=True)
        return torch.autograd.grad((g * g).sum(), a)[0]

    for kw in ({}, {"weights": keep}):  # (unweighted, the masked elements count but for the mask)
        _close(hvp(xf, **kw), used.generic(hvp, xf, **kw), torch.float64)
    assert calls == [True, True]
    calls.clear()
    xr = xf.clone().requires_grad_(True)
    out = f(xr, tf, weights=keep, where=mask) * 3.0
    (g1,) = torch.autograd.grad(out, xr, retain_graph=True)
    kept = g1.clone()
    (g2,) = torch.autograd.grad(out, xr)
    assert torch.equal(g1, g2) and torch.equal(g1, kept) and calls == [True]


@pytest.mark.parametrize("n", [1, 16, 1000])
@pytest.mark.parametrize("name", ["binary_focal_loss_with_logits", "binary_focal_loss",
                                  "anchor_focal_loss_with_logits", "log_cosh"])
def test_small_inputs_take_the_closed_form_when_a_gradient_is_wanted(used, no_plain,
                                                                     monkeypatch, name,
                                                                     n):  # type: ignore[no-untyped-def]
    calls = _blockwise_calls(monkeypatch)
    g = torch.Generator().manual_seed(n)
    x = 4.0 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    x[0, 0] = 0.0
    t = (torch.rand(n, 3, generator=g, dtype=torch.float64) < 0.3).to(x.dtype)
    args: tuple = (x, t)  # type: ignore[type-arg]
    if name == "binary_focal_loss":
        args = (torch.sigmoid(x), t)
    elif name == "log_cosh":
        args = (x, torch.randn(n, 3, generator=g, dtype=torch.float64))
    elif name.startswith("anchor"):
        args = (x, t, torch.randint(-1, 2, (n,), generator=g))
    f = getattr(unilosses, name)

    def run(x0):  # type: ignore[no-untyped-def]
        xg = x0.detach().clone().requires_grad_(True)
        out = f(xg, *args[1:])
        return out, torch.autograd.grad(out, xg)[0]

    v1, g1 = run(args[0])
    v2, g2 = used.generic(run, args[0])
    _close(v1, v2, torch.float64, args[0].numel())
    _close(g1, g2, torch.float64)
    assert calls == [True]
    _close(f(*args), v2, torch.float64, args[0].numel())  # the value alone: below
    closed = [True] * (1 + (args[0].numel() >= kernels._CLOSED_MIN))  # _CLOSED_MIN composed
    assert calls == closed
    # forward mode has no rule through the Function: the composition, whose JVP agrees
    from torch.autograd import forward_ad
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(args[0].detach().clone().requires_grad_(True),
                                    torch.ones_like(args[0]))
        jvp = forward_ad.unpack_dual(f(dual, *args[1:])).tangent
    _close(jvp, g1.sum(), torch.float64)
    assert calls == closed


@pytest.mark.parametrize("rows", [kernels._CHUNK_MIN // 100 + 7])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_blockwise_categorical_on_probabilities(used, monkeypatch, rows, smoothing, dtype):  # type: ignore[no-untyped-def]
    # by rows in closed form (renormalised and clipped probabilities): zeros and a row that
    # holds nearly all its mass in one class put entries outside the clip on both sides.
    # (Plain calls take the blocks only beyond _CATEGORICAL_CLOSED_MAX elements: lowered
    # here, the blocks' own test at a size that runs quickly)
    monkeypatch.setattr(kernels, "_CATEGORICAL_CLOSED_MAX", kernels._CHUNK_MIN)
    calls = _blockwise_calls(monkeypatch)
    g = torch.Generator().manual_seed(rows)
    p = torch.softmax(3.0 * torch.randn(rows, 100, generator=g, dtype=dtype), -1) * 2.5
    p[0, :7] = 0.0
    p[-1] = 1e-9
    p[-1, 3] = 1.0
    t = torch.softmax(torch.randn(rows, 100, generator=g, dtype=dtype), -1)
    t[0] = torch.nn.functional.one_hot(torch.tensor(2), 100).to(dtype)
    f = unilosses.categorical_cross_entropy

    def run(x):  # type: ignore[no-untyped-def]
        xg = x.detach().clone().requires_grad_(True)
        out = f(xg, t, label_smoothing=smoothing)
        return out, torch.autograd.grad(out * 3.0, xg)[0]

    v1, g1 = run(p)
    v2, g2 = used.generic(run, p)
    _close(v1, v2, dtype, p.numel())
    _close(g1, g2, dtype)
    assert calls == [True]
    # the value alone, small inputs, a class axis other than the last, and weights keep the
    # composition
    _close(f(p, t, label_smoothing=smoothing, reduction="sum"),
           used.generic(f, p, t, label_smoothing=smoothing, reduction="sum"), dtype, p.numel())
    small = p[:40].detach().clone().requires_grad_(True)
    torch.autograd.grad(f(small, t[:40]), small)
    f(p.T.contiguous(), t.T.contiguous(), axis=0)
    f(p, t, weights=torch.ones(rows, dtype=dtype))
    assert calls == [True]


def test_the_bound_read_is_made_only_for_a_closed_form_that_uses_it(no_plain, monkeypatch):  # type: ignore[no-untyped-def]
    # one read of the logits (and a host sync) tells the logit forms that the clamp is a
    # no-op; log_cosh and the forms on probabilities take no such flag
    reads = _spy(monkeypatch, kernels, "_bounded", lambda out, a, kw: True)
    x = torch.randn(64, 3, dtype=torch.float64, requires_grad=True)
    t = (torch.rand(64, 3, dtype=torch.float64) > 0.5).to(x.dtype)
    state = torch.randint(-1, 2, (64,))
    for f, args in ((unilosses.log_cosh, (t,)), (unilosses.binary_focal_loss, (t,)),
                    (unilosses.anchor_focal_loss, (t, state))):
        xs = torch.sigmoid(x.detach()).requires_grad_(True)
        torch.autograd.grad(f(xs, *args), xs)
    assert reads == []
    for f, args in ((unilosses.binary_focal_loss_with_logits, (t,)),
                    (unilosses.anchor_focal_loss_with_logits, (t, state))):
        torch.autograd.grad(f(x, *args), x)
    assert reads == [True, True]


def test_blockwise_sum_is_not_used_under_compile_or_when_targets_need_grad(used, monkeypatch):  # type: ignore[no-untyped-def]
    calls = _blockwise_calls(monkeypatch)
    x, t = _focal_inputs(torch.float32, soft=False)
    unilosses.binary_focal_loss_with_logits(x, t.clone().requires_grad_(True))
    unilosses.binary_focal_loss_with_logits(x[:1000], t[:1000])
    unilosses.binary_focal_loss_with_logits(x, t, reduction="none")
    assert calls == []


def test_kernels_are_torch_only():  # type: ignore[no-untyped-def]
    p, t = np.zeros(3), np.ones(3)
    assert float(unilosses.mse(p, t)) == 1.0
    from unilosses.backends import adapter_named
    assert adapter_named("numpy").kernels == {} and adapter_named("numpy").plain == {}


# -- fused closed forms (eager on a GPU; here on the CPU through aot_eager) ---------------------


@pytest.fixture
def fused(monkeypatch):  # type: ignore[no-untyped-def]
    """The fused path on this machine's device (the CPU included) through ``aot_eager``
    (dynamo's trace and autograd's, no code generation); returns the record of its runs
    (True where the compiled closed form answered)."""
    monkeypatch.setattr(kernels, "_FUSED_DEVICES", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(kernels, "_FUSED_BACKEND", "aot_eager")
    monkeypatch.setattr(kernels, "_FUSED_ON", True)
    return _spy(monkeypatch, kernels, "_run_fused", lambda out, a, kw: out is not None)


def _fused_cases():  # type: ignore[no-untyped-def]
    """(id, loss, inputs(dtype), two sets of options): every loss with a closed form."""
    def categorical(dtype):  # type: ignore[no-untyped-def]
        g = torch.Generator().manual_seed(11)
        p = torch.softmax(3.0 * torch.randn(N_BLOCKWISE // 100, 100, generator=g,
                                            dtype=dtype), -1) * 2.5
        p[0, :7] = 0.0
        p[-1] = 1e-9
        p[-1, 3] = 1.0
        return p, torch.softmax(torch.randn(p.shape, generator=g, dtype=dtype), -1)

    def log_cosh(dtype):  # type: ignore[no-untyped-def]
        p = _logits(dtype, (N_BLOCKWISE,), scale=30.0, seed=12)
        t = _logits(dtype, (N_BLOCKWISE,), scale=1.0, seed=13)
        p[:3] = t[:3] + torch.tensor([0.0, 1e4, -1e4], dtype=dtype)  # zero error, far out
        return p, t

    mean, total = {"reduction": "mean"}, {"reduction": "sum"}
    return [
        ("focal-logits-hard", unilosses.binary_focal_loss_with_logits,
         lambda d: _focal_inputs(d, False), [{"gamma": 2.0, **mean}, {"gamma": 2.0, **total}]),
        ("focal-logits-soft", unilosses.binary_focal_loss_with_logits,
         # gamma 2: the soft label equal to its prediction is a tie for one sigmoid only;
         # compiled, p is the exp(-|x|) form's, a rounding away, where the derivative of
         # |t - p|^gamma is singular for gamma < 1 and steep for gamma < 2
         lambda d: _focal_inputs(d, True), [{"gamma": 2.0, "alpha": None, **r}
                                            for r in (mean, total)]),
        ("focal-probabilities", unilosses.binary_focal_loss,
         lambda d: _probability_inputs(d, True), [{"gamma": 3.0, **r} for r in (mean, total)]),
        ("anchor-logits", unilosses.anchor_focal_loss_with_logits,
         lambda d: _anchor_inputs(True, d), [{}, {"normalizer": 50.0}]),
        ("anchor-probabilities", unilosses.anchor_focal_loss,
         lambda d: _anchor_inputs(False, d), [{}, {"normalizer": 50.0, "gamma": 0.5}]),
        ("log-cosh", unilosses.log_cosh, log_cosh, [mean, total]),
        ("categorical-probabilities", unilosses.categorical_cross_entropy, categorical,
         [{"label_smoothing": 0.1, **r} for r in (mean, total)]),
    ]


FUSED_CASES = _fused_cases()


@pytest.mark.parametrize("case", FUSED_CASES, ids=[c[0] for c in FUSED_CASES])
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fused_closed_forms_match_the_composition(used, fused, case, dtype):  # type: ignore[no-untyped-def]
    """Value, gradient (a cotangent other than 1 too) and the value alone, against the
    composition on the same inputs, with ±1e4, ±inf, exact 0/1 and NaN in ignored anchors."""
    _, f, make, variants = case
    x, *rest = make(dtype)

    def run(x, options):  # type: ignore[no-untyped-def]
        xg = x.detach().clone().requires_grad_(True)
        out = f(xg, *rest, **options)
        return out, torch.autograd.grad(out * 3.0, xg)[0]

    for options in variants:
        v1, g1 = run(x, options)
        v2, g2 = used.generic(run, x, options)
        _close(v1, v2, dtype, x.numel())
        _close(g1, g2, dtype)
        assert bool(torch.isfinite(g1).all())
        _close(f(x, *rest, **options), v2, dtype, x.numel())
    # categorical CE on probabilities keeps the composition for the value alone
    assert fused == [True] * (2 if case[0] == "categorical-probabilities" else 4)


def test_fused_backward_twice_and_the_second_derivative(used, fused):  # type: ignore[no-untyped-def]
    # retain_graph: the gradient handed on the first time is computed again; create_graph:
    # the composition's graph, as on the blocks' path
    x, t = _focal_inputs(torch.float64, soft=True)
    x = x.clone().requires_grad_(True)
    out = unilosses.binary_focal_loss_with_logits(x, t, gamma=2.0)
    (a,) = torch.autograd.grad(out, x, retain_graph=True)
    (b,) = torch.autograd.grad(out * 2.0, x)
    _close(b, 2.0 * a, torch.float64)
    assert fused == [True, True]  # (the second backward ran the compiled form again)

    def second(x):  # type: ignore[no-untyped-def]
        xg = x.detach().clone()[6:].requires_grad_(True)  # away from ±inf
        (g,) = torch.autograd.grad(unilosses.binary_focal_loss_with_logits(xg, t[6:]), xg,
                                   create_graph=True)
        return torch.autograd.grad((g * g).sum(), xg)[0]

    _close(second(x), used.generic(second, x), torch.float64)


def test_fused_backward_with_a_batch_of_cotangents(used, fused):  # type: ignore[no-untyped-def]
    # is_grads_batched=True runs backward under vmap, which refused the in-place scaling of
    # the handed-on derivative by a batched cotangent ("vmap: aten::mul_ ... is not possible")
    x, t = _focal_inputs(torch.float64, soft=True)
    x = x[6:].clone().requires_grad_(True)  # away from ±inf
    (g0,) = torch.autograd.grad(unilosses.binary_focal_loss_with_logits(x, t[6:]), x)
    out = unilosses.binary_focal_loss_with_logits(x, t[6:])
    cot = torch.tensor([1.0, -2.0], dtype=torch.float64)
    (g,) = torch.autograd.grad(out, x, cot, is_grads_batched=True)
    _close(g[0], g0, torch.float64)
    _close(g[1], -2.0 * g0, torch.float64)
    assert fused == [True, True]


def test_fused_compiles_once_for_every_size(fused):  # type: ignore[no-untyped-def]
    # dynamic shapes: one graph for three sizes (and the bound check adds no size guard)
    counters = torch._dynamo.utils.counters["stats"]
    before = counters["unique_graphs"]
    for n in (kernels._FUSED_MIN, kernels._FUSED_MIN * 3 + 7, kernels._FUSED_MIN * 5 + 1):
        x, t = _logits(torch.float32, (n,), seed=n), torch.zeros(n)
        # gamma 1.75: a key of its own, compiled afresh in this test
        unilosses.binary_focal_loss_with_logits(x.requires_grad_(True), t, gamma=1.75).backward()
    assert counters["unique_graphs"] - before == 1
    assert fused == [True] * 3
    x = _logits(torch.float32, (kernels._FUSED_MIN - 1,))
    unilosses.binary_focal_loss_with_logits(x.requires_grad_(True), torch.zeros_like(x))
    assert fused == [True] * 3  # below the threshold: blocks


def test_fused_thresholds(fused, no_plain, monkeypatch):  # type: ignore[no-untyped-def]
    # a GPU (any device but the CPU) from any size, the CPU from _FUSED_MIN elements; the
    # categorical form on probabilities only where its blocks would serve (a gradient, from
    # _CHUNK_MIN elements)
    monkeypatch.setattr(kernels, "_FUSED_DEVICES", frozenset({"cpu", "meta"}))
    assert kernels._fusable(torch.empty(1, device="meta"))
    assert not kernels._fusable(torch.empty(kernels._FUSED_MIN - 1))
    assert kernels._fusable(torch.empty(kernels._FUSED_MIN))
    monkeypatch.setattr(kernels, "_FUSED_MIN", 1)
    x = _logits(torch.float64, (10, 100)).requires_grad_(True)
    t = torch.softmax(_logits(torch.float64, (10, 100), seed=2), -1)
    unilosses.binary_focal_loss_with_logits(x, t).backward()
    assert fused == [True]
    unilosses.categorical_cross_entropy(torch.softmax(x, -1), t).backward()
    assert fused == [True]


def test_a_failed_compilation_falls_back_with_one_warning(used, fused, monkeypatch):  # type: ignore[no-untyped-def]
    import warnings

    def broken(gm, inputs):  # type: ignore[no-untyped-def]
        raise RuntimeError("no Triton here")

    monkeypatch.setattr(kernels, "_FUSED_BACKEND", broken)
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_warned", [])
    attempts = _spy(monkeypatch, kernels, "_compiled", lambda out, a, kw: a[1].__name__)
    f = unilosses.binary_focal_loss_with_logits
    x, t = _focal_inputs(torch.float32, soft=False)
    with pytest.warns(RuntimeWarning, match="no Triton here.*UNILOSSES_TORCH_FUSED=0"):
        v1, g1 = _value_and_grad(f, x, t)
    v2, g2 = used.generic(_value_and_grad, f, x, t)
    _close(v1, v2, torch.float32, x.numel())
    _close(g1, g2, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # one warning in all
        _close(_value_and_grad(f, x, t)[1], g2, torch.float32)  # no second attempt
        assert attempts == ["_fused_value_grad"]
        _close(f(x, t), v2, torch.float32, x.numel())  # the value alone: a body of its own
    assert attempts == ["_fused_value_grad", "_fused_value"]
    assert fused == [False] * 3
    assert list(kernels._COMPILED.values()) == [None, None]


def test_torch_compile_refused_falls_back(used, fused, monkeypatch):  # type: ignore[no-untyped-def]
    # torch.compile itself raises where dynamo is unsupported (some Pythons, platforms)
    def refuse(*a, **kw):  # type: ignore[no-untyped-def]
        raise RuntimeError("torch.compile is not supported here")

    monkeypatch.setattr(torch, "compile", refuse)
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_warned", [])
    x, t = _focal_inputs(torch.float64, soft=True)
    with pytest.warns(RuntimeWarning, match="not supported here"):
        v1, g1 = _value_and_grad(unilosses.binary_focal_loss_with_logits, x, t)
    v2, g2 = used.generic(_value_and_grad, unilosses.binary_focal_loss_with_logits, x, t)
    _close(v1, v2, torch.float64, x.numel())
    _close(g1, g2, torch.float64)
    assert fused == [False]


def test_fused_off_by_environment():  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys
    code = ("from unilosses.backends import _torch_kernels as k; "
            "print(k._FUSED_ON, sorted(k._FUSED_DEVICES))")
    out = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "UNILOSSES_TORCH_FUSED": v}, check=True).stdout
           for v in ("0", "1", "all")]
    assert out == ["False ['cuda']\n", "True ['cuda']\n", "True ['cpu', 'cuda']\n"]


def test_fused_through_inductor(used, fused, monkeypatch):  # type: ignore[no-untyped-def]
    # inductor's own kernels (C++ here, Triton on a GPU) for one closed form
    monkeypatch.setattr(kernels, "_FUSED_BACKEND", "inductor")
    x, t = _focal_inputs(torch.float32, soft=True)
    v1, g1 = _value_and_grad(unilosses.binary_focal_loss_with_logits, x, t, gamma=2.0)
    v2, g2 = used.generic(_value_and_grad, unilosses.binary_focal_loss_with_logits, x, t,
                          gamma=2.0)
    _close(v1, v2, torch.float32, x.numel())
    _close(g1, g2, torch.float32)
    assert fused == [True]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available here")
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_fused_on_cuda(used, monkeypatch, dtype):  # type: ignore[no-untyped-def]
    """The default on a GPU: inductor's Triton kernel, against the composition."""
    runs = _spy(monkeypatch, kernels, "_run_fused", lambda out, a, kw: out is not None)
    for _, f, make, variants in FUSED_CASES:
        x, *rest = (a.cuda() for a in make(dtype))

        def run(x, f=f, rest=rest, options=variants[0]):  # type: ignore[no-untyped-def]
            xg = x.detach().clone().requires_grad_(True)
            out = f(xg, *rest, **options)
            return out, torch.autograd.grad(out * 3.0, xg)[0]

        v1, g1 = run(x)
        v2, g2 = used.generic(run, x)
        _close(v1, v2, dtype, x.numel())
        _close(g1, g2, dtype)
        assert g1.device.type == "cuda" and bool(torch.isfinite(g1).all())
    assert runs == [True] * len(FUSED_CASES)


# -- TensorFlow's fused softmax cross-entropy ---------------------------------------------------

@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "categorical"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["eager", "graph", "jit_compile"])
def test_tensorflow_cross_entropy_kernel(monkeypatch, sparse, reduction, dtype, mode):  # type: ignore[no-untyped-def]
    """The fused ops against the composition, eagerly and in a graph; under XLA the sparse
    op declines (XLA's lowering of it is slower than the composition's)."""
    tf = pytest.importorskip("tensorflow")
    from unilosses.backends import _tf_kernels

    rng = np.random.default_rng(9)
    x = (3 * rng.standard_normal((40, 7, 5))).astype(dtype)
    x[0, 0, :3] = [1e4, -1e4, np.inf]
    y = rng.integers(0, 5, (40, 7))
    t = np.eye(5, dtype=dtype)[y]
    used = []
    real = _tf_kernels.cross_entropy

    def spy(*a, **kw):  # type: ignore[no-untyped-def]
        out = real(*a, **kw)
        used.append(out is not None)
        return out

    f = (unilosses.sparse_categorical_cross_entropy_with_logits if sparse
         else unilosses.categorical_cross_entropy_with_logits)
    target = tf.constant(y) if sparse else tf.constant(t)

    def value_and_grad(x):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = f(x, target, reduction=reduction)
            weights = tf.reshape(tf.range(1, tf.size(out) + 1), tf.shape(out))
            total = tf.reduce_sum(out * tf.cast(weights, out.dtype)
                                  / tf.cast(tf.size(out), out.dtype))
        return out, tape.gradient(total, x)

    def compile():  # type: ignore[no-untyped-def]
        if mode == "eager":
            return value_and_grad
        return tf.function(value_and_grad, jit_compile=mode == "jit_compile")

    monkeypatch.setitem(_tf_kernels.KERNELS, "cross_entropy_with_logits", spy)
    v1, g1 = compile()(tf.constant(x))
    monkeypatch.delitem(_tf_kernels.KERNELS, "cross_entropy_with_logits")
    v2, g2 = compile()(tf.constant(x))
    assert used == [not (sparse and mode == "jit_compile")]
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    _close(torch.from_numpy(np.asarray(v1)), torch.from_numpy(np.asarray(v2)), tdtype, x.size)
    _close(torch.from_numpy(np.asarray(g1)), torch.from_numpy(np.asarray(g2)), tdtype)
    assert np.isfinite(np.asarray(g1)).all()


@pytest.mark.parametrize("rows", [6, 20000], ids=["small", "large"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("mode", ["eager", "graph", "jit_compile"])
def test_tensorflow_dense_cross_entropy_of_targets_not_summing_to_one(mode, dtype, rows):  # type: ignore[no-untyped-def]
    """The dense op's own gradient is softmax - t, the loss's only where each row of targets
    sums to 1; multi-hot, unnormalised and all-zero rows need s softmax - t.  Value and both
    gradients against a float64 formula, with the rows summing to 1 (which take the op's own
    gradient eagerly on small inputs) and without, 2-D and 3-D, with and without a tape on
    the targets; the plain eager call on small inputs included."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(31)
    x = (2 * rng.standard_normal((rows, 5))).astype(dtype)
    x[0, :2] = [1e4, -1e4]
    onehot = np.eye(5, dtype=dtype)[rng.integers(0, 5, rows)]
    other = rng.random((rows, 5)).astype(dtype)  # soft, unnormalised
    other[1] = [1, 1, 0, 0, 1]  # multi-hot
    other[2] = 0  # nothing to predict
    other[3] = np.array([0.2, 0.3, 0.5, 0, 0], dtype) * 3
    cases = [(onehot, None), (other, None), (onehot, 0.1), (other.reshape(2, -1, 5), None)]

    def reference(x, t, ls):  # type: ignore[no-untyped-def]
        x, t = x.astype(np.float64).reshape(t.shape), t.astype(np.float64)
        if ls:
            t = t * (1 - ls) + ls / t.shape[-1]
        lsm = x - x.max(-1, keepdims=True)
        lsm -= np.log(np.exp(lsm).sum(-1, keepdims=True))
        weights = np.arange(1, t[..., 0].size + 1).reshape(t.shape[:-1]) / t[..., 0].size
        gx = weights[..., None] * (t.sum(-1, keepdims=True) * np.exp(lsm) - t)
        gt = -weights[..., None] * lsm * (1 - ls if ls else 1)
        return -(t * lsm).sum(-1), gx, gt

    def run(x, t, ls, watch_targets):  # type: ignore[no-untyped-def]
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            if watch_targets:
                tape.watch(t)
            out = unilosses.categorical_cross_entropy_with_logits(x, t, label_smoothing=ls,
                                                                  reduction="none")
            weights = tf.reshape(tf.range(1, tf.size(out) + 1), tf.shape(out))
            total = tf.reduce_sum(out * tf.cast(weights, out.dtype)
                                  / tf.cast(tf.size(out), out.dtype))
        return out, tape.gradient(total, x), (tape.gradient(total, t) if watch_targets
                                              else tf.zeros_like(t))

    eps = np.finfo(dtype).eps
    for t, ls in cases:
        want, gx_want, gt_want = reference(x, t, ls)
        xs = x.reshape(t.shape)
        for watch_targets in (False, True):
            f = run if mode == "eager" else tf.function(run, jit_compile=mode == "jit_compile")
            out, gx, gt = (np.asarray(a) for a in f(tf.constant(xs), tf.constant(t),
                                                    ls or 0.0, watch_targets))
            scale = np.abs(want).max()
            assert np.abs(out - want).max() <= 64 * eps * scale, (ls, t.shape)
            assert np.abs(gx - gx_want).max() <= 64 * eps, (ls, t.shape, watch_targets)
            if watch_targets:
                assert np.abs(gt - gt_want).max() <= 64 * eps * np.abs(gt_want).max()
    if mode == "eager":  # outside a tape: the op alone, its value
        out = unilosses.categorical_cross_entropy_with_logits(tf.constant(x), tf.constant(other),
                                                              reduction="none")
        assert np.abs(np.asarray(out) - reference(x, other, None)[0]).max() <= (
            64 * eps * np.abs(reference(x, other, None)[0]).max())
        # forward mode (a ForwardAccumulator alone), and forward over reverse (a Hessian-vector
        # product): eagerly the op's own JVP comes from its registered gradient
        v = rng.standard_normal(x.shape).astype(dtype)
        x64, t64, v64 = x.astype(np.float64), other.astype(np.float64), v.astype(np.float64)
        sm = np.exp(x64 - x64.max(-1, keepdims=True))
        sm /= sm.sum(-1, keepdims=True)
        s = t64.sum(-1, keepdims=True)
        hv = s * (sm * v64 - sm * (sm * v64).sum(-1, keepdims=True))
        xt = tf.constant(x)
        with tf.autodiff.ForwardAccumulator(xt, tf.constant(v)) as acc:
            out = unilosses.categorical_cross_entropy_with_logits(xt, tf.constant(other),
                                                                  reduction="sum")
            with tf.GradientTape() as tape:
                tape.watch(xt)
                inner = unilosses.categorical_cross_entropy_with_logits(
                    xt, tf.constant(other), reduction="sum")
            g = tape.gradient(inner, xt)
        jvp = ((s * sm - t64) * v64).sum()
        assert abs(float(acc.jvp(out)) - jvp) <= 64 * eps * np.abs((s * sm - t64) * v64).sum()
        assert np.abs(np.asarray(acc.jvp(g)) - hv).max() <= 64 * eps * max(np.abs(hv).max(), 1)


@pytest.mark.parametrize("rows", [13108, 4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", ["sparse", "categorical", "bce_logits", "focal_logits"])
def test_tensorflow_eager_logits_skip_the_clamp_where_a_read_bounds_them(monkeypatch, name,
                                                                         dtype, rows):  # type: ignore[no-untyped-def]
    """Eagerly, from 2^16 elements, and on fewer where a tape records them, logits whose
    Euclidean norm is finite are not clipped (``TensorflowAdapter.bounded``, and the plain
    call's read: the clip and its gradient are several eager ops); with an inf or a logit
    beyond max/4 among them they are, and so are small logits outside a tape (there the clip
    is one op, cheaper than the read).  Value and gradient equal the clipped path's (the
    read switched off) either way."""
    tf = pytest.importorskip("tensorflow")
    from unilosses.backends import tensorflow as tfb

    rng = np.random.default_rng(21)
    shape = (rows, 5)  # 65540 elements, or 20
    f, target = {
        "sparse": (unilosses.sparse_categorical_cross_entropy_with_logits,
                   rng.integers(0, 5, shape[0])),
        "categorical": (unilosses.categorical_cross_entropy_with_logits,
                        np.eye(5, dtype=dtype)[rng.integers(0, 5, shape[0])]),
        "bce_logits": (unilosses.binary_cross_entropy_with_logits,
                       rng.random(shape).astype(dtype)),
        "focal_logits": (unilosses.binary_focal_loss_with_logits,
                         (rng.random(shape) < 0.3).astype(dtype)),
    }[name]
    finite = (3 * rng.standard_normal(shape)).astype(dtype)
    finite[0, :2] = [1e4, -1e4]
    wild = finite.copy()
    wild[1, :3] = [np.inf, -np.inf, np.finfo(dtype).max / 2]
    clips = []
    real_clipped = tfb._clipped

    def clipped(x, lo, hi):  # type: ignore[no-untyped-def]
        if float(lo) == -float(hi):  # the logits' clamp (not a clip of probabilities)
            clips.append(x.shape.num_elements())
        return real_clipped(x, lo, hi)

    monkeypatch.setattr(tfb, "_clipped", clipped)
    unilosses.mse(tf.zeros(1), tf.zeros(1))  # (a first call loads the adapter, generically)

    def run(x):  # type: ignore[no-untyped-def]
        x = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(x)
            out = f(x, tf.constant(target))
        return out, tape.gradient(out, x)

    # (small, the closed forms' derivative is recomputed in backward, where no tape records
    # the logits: there they are clipped, one op, so only forward's clips are counted)
    counted = rows > 4 or name in ("sparse", "categorical")
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    for x, bounded in ((finite, True), (wild, False)):
        clips.clear()
        v1, g1 = run(x)
        full = [n for n in clips if n == x.size]
        if counted:
            assert (not full) if bounded else full
        else:
            assert len(full) == 1 + (not bounded)
        with monkeypatch.context() as mp:
            mp.setattr(tfb, "_read_bounded", lambda a: False)
            v2, g2 = run(x)
        v1, g1, v2, g2 = (torch.from_numpy(np.array(a)) for a in (v1, g1, v2, g2))
        _close(v1, v2, tdtype, x.size)
        _close(g1, g2, tdtype)
        assert bool(torch.isfinite(v1)) and bool(torch.isfinite(g1).all())
    clips.clear()
    f(tf.constant(finite), tf.constant(target))  # no tape
    assert (clips == [finite.size]) if rows == 4 else not clips


def _tf_closed_form_cases(dtype):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(12)
    x = (3 * rng.standard_normal((60, 9))).astype(dtype)
    x[0, :5] = [1e4, -1e4, 0.0, 60.0, -45.0]
    t = rng.random((60, 9)).astype(dtype)
    t[1] = (t[1] > 0.5)  # a hard row
    p = (0.5 + 0.5 * np.tanh(x / 2)).astype(dtype)  # the sigmoid, without overflow
    p[2, :3] = [0.0, 1.0, 0.5]  # exact 0/1 probabilities (clipped)
    xa = (3 * rng.standard_normal((3, 20, 5))).astype(dtype)
    ya = np.eye(5, dtype=dtype)[rng.integers(0, 5, (3, 20))]
    state = rng.choice([-1.0, 0.0, 1.0], size=(3, 20)).astype(dtype)
    zero = x.copy()  # log_cosh at zero error in a row
    zero[3] = t[3]
    return [
        ("log_cosh", unilosses.log_cosh, zero, t, {}),
        ("focal_logits", unilosses.binary_focal_loss_with_logits, x, t, {}),
        ("focal_probs", unilosses.binary_focal_loss, p, t, {"gamma": 1.5}),
        ("anchor_logits", unilosses.anchor_focal_loss_with_logits, xa, ya, {"state": state}),
        ("anchor_probs", unilosses.anchor_focal_loss, (0.5 + 0.5 * np.tanh(xa / 2)), ya,
         {"state": state}),
        ("bce_logits", unilosses.binary_cross_entropy_with_logits, x, t,
         {"label_smoothing": 0.1}),
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(6), ids=["log_cosh", "focal_logits", "focal_probs",
                                                "anchor_logits", "anchor_probs", "bce_logits"])
def test_tensorflow_closed_form_under_jit_matches_the_composition(monkeypatch, dtype, case):  # type: ignore[no-untyped-def]
    """Traced (tf.function(jit_compile=True)), the closed-form sums replace the composition:
    value, and gradients in the predictions (the closed form) and the soft targets (the
    composition's, inside the custom gradient), against the eager composition.  BCE with
    logits, whose composed derivative is light, stays composed there."""
    tf = pytest.importorskip("tensorflow")
    from unilosses.backends import tensorflow as tfb

    name, f, a, t, kw = _tf_closed_form_cases(dtype)[case]
    state = kw.pop("state", None)
    extra = () if state is None else (tf.constant(state),)
    used = _spy(monkeypatch, tfb, "_closed_form_sum", lambda out, args, kwa: True)

    def value_and_grads(a, t, reduction):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            tape.watch([a, t])
            out = f(a, t, *extra, **kw) if state is not None else f(a, t, reduction=reduction,
                                                                       **kw)
        return (out,) + tuple(tape.gradient(out, [a, t]))

    tdtype = torch.float64 if dtype == "float64" else torch.float32
    for reduction in (("mean", "sum") if state is None else ("mean",)):
        eager = value_and_grads(tf.constant(a), tf.constant(t), reduction)
        assert used == []
        jit = tf.function(value_and_grads, jit_compile=True)(tf.constant(a), tf.constant(t),
                                                             reduction)
        assert used == ([] if name == "bce_logits" else [True])
        used.clear()
        for e, c in zip(eager, jit):
            assert np.isfinite(np.asarray(c)).all()
            _close(torch.from_numpy(np.asarray(c)), torch.from_numpy(np.asarray(e)), tdtype,
                   a.size)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", range(6), ids=["log_cosh", "focal_logits", "focal_probs",
                                                "anchor_logits", "anchor_probs", "bce_logits"])
def test_tensorflow_eager_closed_form_where_the_targets_are_not_watched(dtype, case):  # type: ignore[no-untyped-def]
    """Eagerly, a tape that watches the predictions only gets the closed form (value forward,
    derivative recomputed backward); one that also watches the targets gets the composition.
    Value, gradient, a second derivative through nested tapes and a forward-mode JVP agree."""
    tf = pytest.importorskip("tensorflow")
    from unilosses.backends import tensorflow as tfb

    name, f, a, t, kw = _tf_closed_form_cases(dtype)[case]
    state = kw.pop("state", None)
    extra = () if state is None else (tf.constant(state),)
    w = tf.constant(np.random.default_rng(5).uniform(0.5, 1.5, np.shape(a)).astype(dtype))
    a, t = tf.constant(a), tf.constant(t)
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    calls = []
    real = tfb._eager_closed_form_sum

    def spy(*args):  # type: ignore[no-untyped-def]
        out = real(*args)
        calls.append(out is not None)
        return out

    def run(watch_targets):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as outer:
            outer.watch(a)
            with tf.GradientTape() as inner:
                inner.watch([a, t] if watch_targets else a)
                out = f(a, t, *extra, **kw)
            g = inner.gradient(out, a)
            s = tf.reduce_sum(g * w)  # w: the diagonal of the second derivative, weighted
        h = outer.gradient(s, a)  # through the recomputed derivative
        with tf.autodiff.ForwardAccumulator(a, tf.ones_like(a)) as acc:
            jvp_out = f(a, t, *extra, **kw)
        return out, g, h, acc.jvp(jvp_out)

    orig, tfb._eager_closed_form_sum = tfb._eager_closed_form_sum, spy
    try:
        closed = run(False)
        assert calls[0] is True
        calls.clear()
        composed = run(True)
        assert calls[0] is False
        plain = f(a, t, *extra, **kw)  # no tape: the closed form's value alone
    finally:
        tfb._eager_closed_form_sum = orig
    for c, e in zip(closed + (plain,), composed + (composed[0],)):
        assert np.isfinite(np.asarray(c)).all()
        _close(torch.from_numpy(np.asarray(c)), torch.from_numpy(np.asarray(e)), tdtype,
               int(np.size(a)))


def test_tensorflow_log_cosh_backward_computes_the_derivative_alone(monkeypatch):  # type: ignore[no-untyped-def]
    # the closed form's backward asks for the derivative only (value=False): tanh(d), not the
    # value's expm1 and log1p again
    tf = pytest.importorskip("tensorflow")
    from unilosses.losses import regression
    calls = _spy(monkeypatch, regression, "_log_cosh_terms", lambda out, a, kw: True)
    rng = np.random.default_rng(9)
    p, t = tf.constant(rng.normal(size=300)), tf.constant(rng.normal(size=300))
    with tf.GradientTape() as tape:
        tape.watch(p)
        out = unilosses.log_cosh(p, t)
    assert len(calls) == 1
    g = tape.gradient(out, p)
    assert len(calls) == 1
    np.testing.assert_allclose(g.numpy(), np.tanh(p.numpy() - t.numpy()) / 300, rtol=1e-13)


def test_tensorflow_kernel_keeps_label_checks_and_smoothing(monkeypatch):  # type: ignore[no-untyped-def]
    """Eagerly on the CPU the sparse op refuses out-of-range labels itself (no read of them
    first); the generic path then gives unilosses's error, or with checks off clamps them as
    the composition does."""
    tf = pytest.importorskip("tensorflow")
    from unilosses.backends import _tf_kernels
    x = tf.constant(np.linspace(-2.0, 2.0, 12, dtype=np.float32).reshape(3, 4))
    for bad in ([0, 4, 1], [0, -1, 1]):
        with pytest.raises(ValueError, match="`labels` holds values outside"):
            unilosses.sparse_categorical_cross_entropy_with_logits(x, tf.constant(bad))
        with unilosses.checks(False):
            fast = unilosses.sparse_categorical_cross_entropy_with_logits(x, tf.constant(bad))
            with monkeypatch.context() as m:
                m.delitem(_tf_kernels.KERNELS, "cross_entropy_with_logits")
                slow = unilosses.sparse_categorical_cross_entropy_with_logits(
                    x, tf.constant(bad))
        assert abs(float(fast) - float(slow)) <= 1e-6 * abs(float(slow))
    x = tf.constant(np.zeros((3, 4), np.float32))
    # label smoothing on sparse labels takes the generic path: log(4) for uniform logits
    out = unilosses.sparse_categorical_cross_entropy_with_logits(
        x, tf.constant([0, 3, 1]), label_smoothing=0.3)
    assert abs(float(out) - math.log(4.0)) < 1e-6


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "categorical"])
def test_compiled_cross_entropy_is_the_composition_on_the_cpu(used, sparse):  # type: ignore[no-untyped-def]
    """Under torch.compile on the CPU the cross-entropies are the composition (inductor fuses
    it better than F.cross_entropy of the clamped logits), equal to the eager kernel, values
    and gradients, ±1e4 and ±inf logits included."""
    x = _logits(torch.float32, (64, 7))
    x[0, :4] = torch.tensor([1e4, -1e4, math.inf, -math.inf])
    y = _labels((64,), 7)
    target = y if sparse else torch.softmax(_logits(torch.float32, (64, 7)), dim=-1)
    f = (unilosses.sparse_categorical_cross_entropy_with_logits if sparse
         else unilosses.categorical_cross_entropy_with_logits)
    v2, g2 = _value_and_grad(f, x, target)  # eagerly: the kernel
    before = used.calls.get("cross_entropy_with_logits", 0)
    torch._dynamo.reset()
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    v1, g1 = _value_and_grad(compiled, x, target)
    assert used.calls.get("cross_entropy_with_logits", 0) == before
    _close(v1, v2, torch.float32, x.numel())
    _close(g1, g2, torch.float32)
    assert bool(torch.isfinite(g1).all())


@pytest.mark.parametrize("name", ["binary_focal_loss_with_logits", "binary_focal_loss",
                                  "anchor_focal_loss_with_logits"])
def test_compiled_focal_uses_the_closed_form(used, monkeypatch, name):  # type: ignore[no-untyped-def]
    calls = _spy(monkeypatch, kernels, "closed_form_sum", lambda out, a, kw: out is not None)
    x, t = _focal_inputs(torch.float32, soft=True)
    x, t = x[:4000].clone(), t[:4000].clone()
    args: tuple = (x, t)  # type: ignore[type-arg]
    if name == "binary_focal_loss":
        args = (torch.sigmoid(x), t)
    elif name.startswith("anchor"):
        state = torch.tensor([-1, 0, 1, 0, 1]).repeat(80)
        args = (x.reshape(400, 10), t.reshape(400, 10), state)
    f = getattr(unilosses, name)
    f(*args)  # an eager call loads the torch adapter (dynamo cannot trace the import)
    calls.clear()
    torch._dynamo.reset()
    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)

    def run(fn, x0):  # type: ignore[no-untyped-def]
        xg = x0.detach().clone().requires_grad_(True)
        out = fn(xg, *args[1:])
        return out, torch.autograd.grad(out * 3.0, xg)[0]

    v1, g1 = run(compiled, args[0])
    v2, g2 = used.generic(run, f, args[0])
    _close(v1, v2, torch.float32, args[0].numel())
    _close(g1, g2, torch.float32)
    with torch.no_grad():
        _close(compiled(*args), v2, torch.float32, args[0].numel())
    assert calls and all(calls)  # traced through the closed form
    # a derivative of the derivative is refused, not silently wrong
    xg = args[0].detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(compiled(xg, *args[1:]), xg, create_graph=True)
    with pytest.raises(RuntimeError):
        torch.autograd.grad(g.sum(), xg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_compiled_sigmoid_logs_match_the_eager_ones(dtype):  # type: ignore[no-untyped-def]
    # compiled, one exp (selects fuse); eagerly, two sigmoids: the same four values, each to
    # a few eps of itself (the smaller sigmoid and both logs to full relative precision)
    ad = unilosses.backends.adapter_named("torch")
    big = torch.finfo(dtype).max / 4
    x = torch.cat([torch.tensor([0.0, -0.0, 1e-30, -1e-30, 20.0, -20.0, 80.0, -80.0, 700.0,
                                 -700.0, 1e4, -1e4, big, -big], dtype=dtype),
                   _logits(dtype, (4000,), scale=8.0, seed=21)])
    torch._dynamo.reset()
    compiled = torch.compile(ad.sigmoid_logs, backend="aot_eager", fullgraph=True)
    eps = torch.finfo(dtype).eps
    for c, e in zip(compiled(x), ad.sigmoid_logs(x)):
        assert bool(torch.isfinite(c).all())
        err = (c - e).abs() / e.abs().clamp_min(torch.finfo(dtype).tiny)
        assert bool((err <= 4 * eps).all()), float(err.max() / eps)


# -- JAX: the focal closed form as a custom JVP ------------------------------------------------

@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_jax_cross_entropy_curvature_is_softmax_s_minus_s_st(smoothing):  # type: ignore[no-untyped-def]
    # the one-sided clip min(x - m, 0) meets its bound at each row's largest logit: its
    # custom derivative gives that element 1, and so must the derivative of that derivative
    # (a Hessian; jnp.minimum's own splits the tie, which halved the curvature there)
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    x = np.array([[0.3, -1.2, 2.0, 0.5], [1.5, 1.5, -0.5, 0.0], [1e4, -2.0, 0.0, 1.0]])
    y = np.array([1, 0, 3])
    t = (1 - smoothing) * np.eye(4)[y] + smoothing / 4

    def sparse(a):  # type: ignore[no-untyped-def]
        return unilosses.sparse_categorical_cross_entropy_with_logits(
            a, jnp.asarray(y), label_smoothing=smoothing, reduction="sum")

    def dense(a):  # type: ignore[no-untyped-def]
        return unilosses.categorical_cross_entropy_with_logits(a, jnp.asarray(t),
                                                               reduction="sum")

    s = np.exp(x - x.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    want = np.stack([np.diag(r) - np.outer(r, r) for r in s])  # t sums to 1 in each row
    for f in (sparse, dense):
        for h in (jax.hessian(f), jax.jit(jax.hessian(f))):
            got = np.asarray(h(jnp.asarray(x)))
            got = np.stack([got[i, :, i, :] for i in range(3)])
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
            assert np.all(np.asarray(h(jnp.asarray(x)))[0, :, 1, :] == 0)  # rows apart


@pytest.mark.parametrize("name", ["binary_focal_loss_with_logits", "binary_focal_loss",
                                  "anchor_focal_loss_with_logits"])
@pytest.mark.parametrize("gamma", [2.0, 0.5])
def test_jax_focal_closed_form_matches_the_composition(monkeypatch, name, gamma):  # type: ignore[no-untyped-def]
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    from unilosses.backends import jax as jax_backend

    rng = np.random.default_rng(10)
    x = 4.0 * rng.standard_normal((50, 8))
    x[0, :4] = [1e4, -1e4, 0.0, np.inf]
    t = (rng.random((50, 8)) < 0.3).astype(np.float64)
    t[1] = rng.random(8)  # a soft row
    args = [x, t]
    if name == "binary_focal_loss":
        args = [1.0 / (1.0 + np.exp(-np.clip(x, -50, 50))), t]
    elif name.startswith("anchor"):
        args.append(rng.integers(-1, 2, 50))
    args = [jnp.asarray(a) for a in args]
    f = getattr(unilosses, name)
    calls = []
    real = jax_backend._closed_form_sum

    def spy(*a):  # type: ignore[no-untyped-def]
        calls.append(True)
        return real(*a)

    def everything(*a):  # type: ignore[no-untyped-def]
        def loss(p, tt):  # type: ignore[no-untyped-def]
            return f(p, tt, *a[2:], gamma=gamma)
        value, (gx, gt) = jax.value_and_grad(loss, argnums=(0, 1))(a[0], a[1])
        return value, gx, gt

    monkeypatch.setattr(jax_backend, "_closed_form_sum", spy)
    fast = jax.jit(everything)(*args)
    eager = everything(*args)
    assert calls
    monkeypatch.setattr(jax_backend.JaxAdapter, "chunked_sum", lambda self, *a, **k: None)
    slow = everything(*args)
    for a, b in zip(fast, slow):
        _close(torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b)), torch.float64,
               x.size)
    for a, b in zip(eager, slow):
        _close(torch.from_numpy(np.asarray(a)), torch.from_numpy(np.asarray(b)), torch.float64,
               x.size)
    assert np.isfinite(np.asarray(fast[1])).all()
    if gamma == 2.0:  # a second derivative through the custom JVP, logit 0 included
        w = jnp.asarray(rng.uniform(0.5, 1.5, x.shape))

        def curvature(p):  # type: ignore[no-untyped-def]
            g = jax.grad(lambda q: f(q, args[1], *args[2:], gamma=gamma))(p)
            return jnp.sum(g * w)  # the diagonal of the second derivative, weighted

        slow_h = jax.grad(curvature)(args[0])
        monkeypatch.undo()
        fast_h = jax.grad(curvature)(args[0])
        _close(torch.from_numpy(np.asarray(fast_h)), torch.from_numpy(np.asarray(slow_h)),
               torch.float64, x.size)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_bce_with_logits_closed_form_only_where_it_replaces_eager_ops(monkeypatch,
                                                                     label_smoothing):  # type: ignore[no-untyped-def]
    """BCE with logits has a closed-form derivative (sigmoid(x) - t, 0 where the clamp acts),
    taken by TensorFlow eagerly (where no tape watches the targets) and equal to the
    composition's there, at +-1e4, 0 and +-inf; its composed derivative is light, so JAX under
    jit and TensorFlow under tf.function keep the composition (measured faster)."""
    tf = pytest.importorskip("tensorflow")
    jax = pytest.importorskip("jax")
    from unilosses.backends import jax as jax_backend
    from unilosses.backends import tensorflow as tfb

    rng = np.random.default_rng(11)
    x = 4.0 * rng.standard_normal((40, 6))
    x[0, :5] = [1e4, -1e4, 0.0, np.inf, -np.inf]
    t = (rng.random((40, 6)) < 0.3).astype(np.float64)
    t[1] = rng.random(6)  # a soft row

    def loss(p, q):  # type: ignore[no-untyped-def]
        return unilosses.binary_cross_entropy_with_logits(p, q, label_smoothing=label_smoothing)

    eager = _spy(monkeypatch, tfb, "_eager_closed_form_sum", lambda out, a, kw: out is not None)
    traced = _spy(monkeypatch, tfb, "_closed_form_sum", lambda out, a, kw: True)
    a, b = tf.constant(x), tf.constant(t)

    def value_and_grad(watch_targets):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            tape.watch([a, b] if watch_targets else a)
            out = loss(a, b)
        return out, tape.gradient(out, a)

    closed, composed = value_and_grad(False), value_and_grad(True)
    assert eager == [True, False]
    for c, e in zip(closed, composed):
        assert np.isfinite(np.asarray(c)).all()
        _close(torch.from_numpy(np.array(c)), torch.from_numpy(np.array(e)), torch.float64,
               x.size)
    assert float(closed[1][0, 3]) == 0.0 and float(closed[1][0, 4]) == 0.0  # the clamp's zero
    tf.function(lambda: value_and_grad(False), jit_compile=True)()
    assert traced == []
    calls = _spy(monkeypatch, jax_backend, "_closed_form_sum", lambda out, a, kw: True)
    jax.jit(jax.value_and_grad(loss))(jax.numpy.asarray(x), jax.numpy.asarray(t))
    assert calls == []


def test_log_cosh_curvature_at_zero_on_every_path():  # type: ignore[no-untyped-def]
    """log cosh''(d) = 1 - tanh(d)^2, 1 at an error of exactly 0, through the composition and
    every closed form that a framework differentiates twice."""
    d0 = np.array([0.0, 0.5, -2.0, 41.0])
    want = 1.0 - np.tanh(d0) ** 2

    def check(h):  # type: ignore[no-untyped-def]
        np.testing.assert_allclose(np.asarray(h)[:4], want, rtol=1e-12, atol=1e-12)

    # small: the composition; large: blocks, which take the composition under create_graph
    for n in (4, 1 << 18):
        x = torch.zeros(n, dtype=torch.float64)
        x[:4] = torch.from_numpy(d0)
        x.requires_grad_(True)
        (g,) = torch.autograd.grad(unilosses.log_cosh(x, torch.zeros_like(x), reduction="sum"),
                                   x, create_graph=True)
        check(torch.autograd.grad(g.sum(), x)[0])
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    y, t = jnp.asarray(d0), jnp.zeros(4)
    for where in (None, jnp.ones(4, bool)):  # the closed form (custom_jvp), the composition
        def slope(p, where=where):  # type: ignore[no-untyped-def]
            return jax.grad(lambda q: unilosses.log_cosh(q, t, reduction="sum", where=where))(p)
        check(jax.grad(lambda p: jnp.sum(slope(p)))(y))
    tf = pytest.importorskip("tensorflow")
    a, b = tf.constant(d0), tf.constant(np.zeros(4))

    def curvature(watch_targets):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as outer:
            outer.watch(a)
            with tf.GradientTape() as inner:
                inner.watch([a, b] if watch_targets else a)
                out = unilosses.log_cosh(a, b, reduction="sum")
            s = tf.reduce_sum(inner.gradient(out, a))
        return outer.gradient(s, a)

    check(curvature(False))  # the eager closed form
    check(curvature(True))  # the composition
    check(tf.function(lambda: curvature(False))())  # traced: the closed form


def _targets_vmap_cases():  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(21)
    u = unilosses
    cases = []
    for n in (16, 1000, 4096, 100_000):  # plain calls, the generic path, blocks
        x = torch.randn(n, generator=g, dtype=torch.float64)
        p = torch.sigmoid(x)
        t = torch.stack([(torch.rand(n, generator=g) < 0.5).double(),
                         torch.rand(n, generator=g, dtype=torch.float64)])
        cases += [(u.binary_focal_loss_with_logits, x, t), (u.binary_focal_loss, p, t),
                  (u.log_cosh, x, t), (u.rmse, x, t), (u.mse, x, t),
                  (u.binary_cross_entropy_with_logits, x, t), (u.binary_cross_entropy, p, t)]
    x = torch.randn(6, 5, generator=g, dtype=torch.float64)
    soft = torch.softmax(torch.randn(2, 6, 5, generator=g, dtype=torch.float64), -1)
    state = torch.tensor([[1, 0, -1], [1, 1, 0]])
    cases += [(u.categorical_cross_entropy_with_logits, x, soft),
              (u.categorical_cross_entropy, torch.softmax(x, -1), soft),
              (lambda a, b: u.anchor_focal_loss_with_logits(a.reshape(2, 3, 5),
                                                            b.reshape(2, 3, 5), state),
               x, soft)]
    return cases


def test_vmap_and_grad_over_the_targets_alone():
    """torch.func over the targets while the predictions stay plain tensors (per-example
    target gradients, a batch of teachers): the plain calls and the block-wise Functions
    look at every array, not the first alone (a wrapped target had reached a Function
    without functorch rules, or a read of its values)."""
    for fn, x, t in _targets_vmap_cases():
        unilosses.mse(x, x)  # (the adapter loaded: the plain paths are live)
        loop = torch.stack([fn(x, t[0]), fn(x, t[1])])
        _close(torch.func.vmap(lambda b, f=fn, a=x: f(a, b))(t), loop, torch.float64, x.numel())
        grads = torch.func.vmap(torch.func.grad(lambda b, f=fn, a=x: f(a, b)))(t)
        for i in range(2):
            ti = t[i].clone().requires_grad_(True)
            (want,) = torch.autograd.grad(fn(x, ti), ti)
            _close(grads[i], want, torch.float64)
        # and over the predictions, the targets plain
        xs = torch.stack([x, x * 0.5])
        _close(torch.func.vmap(lambda a, f=fn, b=t[1]: f(a, b))(xs),
               torch.stack([fn(xs[0], t[1]), fn(xs[1], t[1])]), torch.float64, x.numel())


def test_rmse_forward_mode_at_zero_error():
    """A dual tensor does not require grad: at zero error the tangent is the safe square
    root's, 0, as reverse mode and torch.func.jvp give (sqrt's was inf * 0 = NaN)."""
    import torch.autograd.forward_ad as fwAD

    p = torch.randn(40, dtype=torch.float64)
    unilosses.mse(p, p)
    for a, b in ((p, p), (p, p + 1.0)):
        with fwAD.dual_level():
            d = fwAD.make_dual(a.clone(), torch.ones_like(a))
            tangent = fwAD.unpack_dual(unilosses.rmse(d, b)).tangent
        want = torch.func.jvp(lambda q, c=b: unilosses.rmse(q, c), (a,), (torch.ones_like(a),))[1]
        assert torch.isfinite(tangent) and torch.equal(tangent, want), (tangent, want)
    assert float(tangent) == pytest.approx(-1.0)  # d/dq sqrt(mean((q - p - 1)^2)) . 1


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_torch_log_cosh_terms_to_three_eps(monkeypatch, dtype):  # type: ignore[no-untyped-def]
    """``TorchAdapter.log_cosh``, the blocks' value and derivative: log cosh within 3 eps
    (relative) of mpmath's from 1e-30 to 1e4 and across both tails, and tanh from its
    ``sinh(|d|/2)`` too, tiny errors included (where ``cosh(d) - 1`` underflows); 0, +-inf
    and NaN; and the block sums (value alone, and with the gradient) use it."""
    d = np.concatenate([np.geomspace(1e-30, 1e4, 3000), np.linspace(11.0, 13.0, 401),
                        np.linspace(39.0, 41.0, 401)])
    d = np.concatenate([d, -d]).astype(str(dtype).split(".")[1])
    x = torch.from_numpy(d)
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 120
    value = np.array([float(mpmath.log1p(2 * mpmath.sinh(mpmath.mpf(float(v)) / 2) ** 2))
                      for v in d])
    slope = np.array([float(mpmath.tanh(mpmath.mpf(float(v)))) for v in d])
    v, g = TorchAdapter().log_cosh(x, True)
    v_alone, none = TorchAdapter().log_cosh(x, False)
    assert none is None and torch.equal(v_alone, v)
    info = torch.finfo(dtype)
    for got, want in ((v, value), (g, slope)):
        got = got.double().numpy()
        normal = np.abs(want) > info.tiny / info.eps  # (below: the dtype's own underflow)
        err = np.abs(got - want)
        assert float(np.max(err[normal] / np.abs(want[normal]))) <= 3 * info.eps
        assert float(np.max(err[~normal], initial=0.0)) <= info.tiny
    odd = torch.tensor([0.0, -0.0, math.inf, -math.inf, math.nan], dtype=dtype)
    v, g = TorchAdapter().log_cosh(odd, True)
    assert v[:4].tolist() == [0.0, 0.0, math.inf, math.inf] and math.isnan(v[4].item())
    assert g[:4].tolist() == [0.0, -0.0, 1.0, -1.0] and math.isnan(g[4].item())
    calls = _spy(monkeypatch, kernels, "log_cosh_terms", lambda out, a, kw: a[1])
    p = _logits(dtype, (N_BLOCKWISE,), scale=3.0, seed=7)
    t = torch.zeros_like(p)
    with torch.no_grad():
        unilosses.log_cosh(p, t)
    _value_and_grad(unilosses.log_cosh, p, t)
    assert False in calls and True in calls


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_log_cosh_unclamped_below_its_overflow(monkeypatch, used, dtype):  # type: ignore[no-untyped-def]
    """Where every |d| is at most 80 in float32, 700 in float64 (the read's ``aminmax``), the
    value is ``log1p(2 sinh(d/2)^2)``, unclamped, and tanh comes from that signed ``sinh``:
    both within 3 eps (relative) of mpmath's, the ends included, in the blocks' terms, in
    plain calls' values and in their gradients, below and from ``_TANH_FROM_SINH_MIN``
    elements (``torch.tanh`` below); just beyond either end the clamped form serves, with
    the same figures; NaN is not within."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 120
    limit = 80.0 if dtype == torch.float32 else 700.0
    assert kernels._LOG_COSH_FINITE[dtype] == limit
    np_dtype = str(dtype).split(".")[1]
    inner = np.concatenate([np.geomspace(1e-30, limit, 3000), [limit, 0.0]])
    info = torch.finfo(dtype)

    def check(x, v, g):  # type: ignore[no-untyped-def]
        for got, f in ((v, lambda u: mpmath.log1p(2 * mpmath.sinh(u / 2) ** 2)),
                       (g, mpmath.tanh)):
            if got is None:
                continue
            want = np.array([float(f(mpmath.mpf(float(u)))) for u in x.tolist()])
            got = got.double().numpy()
            normal = np.abs(want) > info.tiny / info.eps  # (below: the dtype's underflow)
            err = np.abs(got - want)
            assert float(np.max(err[normal] / np.abs(want[normal]))) <= 3 * info.eps
            assert float(np.max(err[~normal], initial=0.0)) <= info.tiny
            assert np.array_equal(np.signbit(got[want != 0]), np.signbit(want[want != 0]))
            assert normal.sum() > len(want) // 2

    within = _spy(monkeypatch, kernels, "_within", lambda out, a, kw: out)
    beyond = float(np.nextafter(np.array(limit, np_dtype), np.array(np.inf, np_dtype)))
    for case, taken in ((inner, True), (-inner, True), (np.concatenate([inner, [beyond]]), False),
                        (np.concatenate([inner, [-beyond]]), False)):
        x = torch.from_numpy(case.astype(np_dtype))
        del within[:]
        check(x, *TorchAdapter().log_cosh(x, True))
        assert within == [taken]
        for n in (100, kernels._TANH_FROM_SINH_MIN + 7):  # torch.tanh; tanh from sinh
            # (spread over the range; the last element, beyond or not, kept)
            part = x[torch.linspace(0, len(x) - 1, n).round().long()]
            v = unilosses.log_cosh(part, torch.zeros_like(part), reduction="none")
            q = part.clone().requires_grad_(True)
            (g,) = torch.autograd.grad(unilosses.log_cosh(q, torch.zeros_like(q),
                                                          reduction="sum"), q)
            check(part, v, g)
    assert used.plain["log_cosh"] >= 16 and not kernels._within(
        torch.tensor([0.0, math.nan], dtype=dtype), limit)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_plain_log_cosh_value_to_three_eps(used, dtype):
    """The plain call's form, max(log1p(2 sinh(h)^2), |d| - log 2), within 3 eps (relative)
    of log cosh from 1e-18 to 1e4 and across both tails (12 and 40); +-inf and NaN kept."""
    d = np.concatenate([np.geomspace(1e-18, 1e4, 4000), np.linspace(11.0, 13.0, 1001),
                        np.linspace(39.0, 41.0, 1001)])
    d = np.concatenate([d, -d]).astype(str(dtype).split(".")[1])
    x = torch.from_numpy(d)
    mpmath = pytest.importorskip("mpmath")  # (torch's sympy brings it)
    mpmath.mp.dps = 100  # (cosh(1e-18) - 1 is 1e-36)
    want = np.array([float(mpmath.log(mpmath.cosh(mpmath.mpf(float(v))))) for v in d])
    for k in range(0, len(d), 8000):  # (plain calls: below 2^16 elements each)
        part = x[k:k + 8000]
        got = unilosses.log_cosh(part, torch.zeros_like(part), reduction="none").double()
        w = want[k:k + 8000]
        err = float(np.max(np.abs(got.numpy() - w) / w))
        assert err <= 3 * torch.finfo(dtype).eps, err
    assert used.plain["log_cosh"] == (len(d) + 7999) // 8000
    odd = torch.tensor([math.inf, -math.inf, math.nan], dtype=dtype)
    got = unilosses.log_cosh(odd, torch.zeros_like(odd), reduction="none")
    assert got[:2].tolist() == [math.inf, math.inf] and math.isnan(got[2].item())
