"""Value checks, empty input, half precision, the extreme-value grid and determinism."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import reference as ref
import unilosses

rng = np.random.default_rng(7)


# -- value checks -----------------------------------------------------------------------------
def test_probabilities_outside_unit_interval(xp):
    p = xp.asarray(np.array([0.2, 1.3]))
    t = xp.asarray(np.array([0.0, 1.0]))
    for fn in (unilosses.binary_cross_entropy, unilosses.binary_focal_loss):
        with pytest.raises(ValueError, match=r"`predictions` holds values outside \[0, 1\]"):
            fn(p, t)
    with pytest.raises(ValueError, match="`predictions` holds negative values"):
        unilosses.categorical_cross_entropy(xp.asarray(np.array([[0.5, -0.1]])),
                                            xp.asarray(np.array([[1.0, 0.0]])))
    # a masked element is not looked at
    out = unilosses.binary_cross_entropy(p, t, where=xp.asarray(np.array([True, False])))
    np.testing.assert_allclose(xp.to_numpy(out), -np.log(0.8))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_or_negative_probabilities_of_the_categorical_losses(xp, dtype):
    """A NaN (or negative) probability is refused by both categorical losses on
    probabilities, on small 2-D calls too, which torch's plain kernels take (mutant: their
    check ``not amin >= 0`` as ``amin < 0``, which lets NaN through to a NaN loss)."""
    t = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype)
    y = np.array([0, 2])
    for bad in (np.nan, -0.1):
        p = np.array([[0.5, 0.3, 0.2], [0.1, bad, 0.8]], dtype)
        with pytest.raises(ValueError, match=r"`predictions` holds negative values \(or NaN\)"):
            unilosses.categorical_cross_entropy(xp.asarray(p), xp.asarray(t))
        with pytest.raises(ValueError, match=r"`predictions` holds negative values \(or NaN\)"):
            unilosses.sparse_categorical_cross_entropy(xp.asarray(p), xp.asarray(y))


def test_labels_out_of_range(xp):
    x = xp.asarray(rng.normal(size=(3, 4)))
    for bad in ([0, 4, 1], [0, -1, 2]):
        with pytest.raises(ValueError, match=r"`labels` holds values outside \[0, 4\)"):
            unilosses.sparse_categorical_cross_entropy_with_logits(x, xp.asarray(np.array(bad)))
    # ignore_index is not out of range
    unilosses.sparse_categorical_cross_entropy_with_logits(
        x, xp.asarray(np.array([0, -100, 1])), ignore_index=-100)
    with pytest.raises(ValueError, match="other than ignore_index=-100"):
        unilosses.sparse_categorical_cross_entropy(
            xp.asarray(np.full((3, 4), 0.25)), xp.asarray(np.array([0, 9, 1])), ignore_index=-100)


def test_anchor_state_values(xp):
    x = xp.asarray(np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="`anchor_state` holds values other than -1"):
        unilosses.anchor_focal_loss_with_logits(x, x, xp.asarray(np.array([[0, 2, 1]])))


def test_checks_can_be_turned_off(xp):
    x = xp.asarray(rng.normal(size=(2, 3)))
    y = xp.asarray(np.array([0, 5]))
    with unilosses.checks(False):
        unilosses.sparse_categorical_cross_entropy_with_logits(x, y)  # no error, no value promise
        with unilosses.checks(True), pytest.raises(ValueError):
            unilosses.sparse_categorical_cross_entropy_with_logits(x, y)
    with pytest.raises(ValueError):
        unilosses.sparse_categorical_cross_entropy_with_logits(x, y)
    unilosses.set_checks(False)
    try:
        unilosses.sparse_categorical_cross_entropy_with_logits(x, y)
    finally:
        unilosses.set_checks(True)


def test_checks_env_variable():
    code = ("import numpy as np, unilosses\n"
            "unilosses.binary_cross_entropy(np.array([2.0]), np.array([1.0]))\n")
    env = {**os.environ, "UNILOSSES_CHECKS": "0"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
    env["UNILOSSES_CHECKS"] = "1"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode != 0 and "outside [0, 1]" in r.stderr


def test_checks_skipped_while_tracing():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    # inside jit the labels are abstract: no check, no error, no host sync
    f = jax.jit(lambda x, y: unilosses.sparse_categorical_cross_entropy_with_logits(x, y))
    assert np.isfinite(float(f(jnp.zeros((2, 3)), jnp.array([0, 7]))))


# -- empty input ----------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [unilosses.mse, unilosses.mae, unilosses.huber,
                                unilosses.log_cosh, unilosses.binary_cross_entropy_with_logits,
                                unilosses.binary_focal_loss_with_logits])
def test_empty_arrays(xp, fn):
    e = xp.asarray(np.zeros((0, 3)))
    for reduction in ("mean", "sum"):
        assert float(xp.to_numpy(fn(e, e, reduction=reduction))) == 0.0
    assert xp.to_numpy(fn(e, e, reduction="none")).shape == (0, 3)
    assert float(xp.to_numpy(unilosses.rmse(e, e))) == 0.0


# -- half precision ---------------------------------------------------------------------------
#: NumPy's bfloat16 is ml_dtypes' (JAX's types on NumPy arrays; installed with JAX)
_ML_DTYPES = importlib.util.find_spec("ml_dtypes") is not None
HALF = {"torch": ("float16", "bfloat16"), "jax": ("float16", "bfloat16"),
        "tensorflow": ("float16", "bfloat16"),
        "numpy": ("float16", "bfloat16") if _ML_DTYPES else ("float16",),
        "array_api_strict": ()}


def _half_array(b, a, dtype):  # type: ignore[no-untyped-def]
    if dtype == "bfloat16":
        if b.name == "torch":
            import torch

            return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
        import ml_dtypes

        return b.ad.from_numpy(a.astype(ml_dtypes.bfloat16))
    return b.asarray(a, dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["mse", "huber", "binary_cross_entropy_with_logits",
                                  "binary_focal_loss_with_logits",
                                  "categorical_cross_entropy_with_logits"])
def test_half_precision_computes_in_float32(xp, name, dtype):
    if dtype not in HALF[xp.name]:
        pytest.skip(f"{xp.name} has no {dtype}")
    fn = getattr(unilosses, name)
    x = rng.normal(size=(6, 3))
    t = (rng.random((6, 3)) > 0.5).astype(np.float64)
    xh = _half_array(xp, x, dtype)
    x_rounded = np.asarray(xp.to_numpy(xh), dtype=np.float64)   # what the loss really sees
    out = fn(xh, xp.asarray(t, "float32"))
    got = xp.to_numpy(out)
    assert str(got.dtype) == "float32"
    expected = fn(x_rounded.astype(np.float32), t.astype(np.float32))
    # computed in float32 from the same (rounded) inputs: float32 tolerance, not half's
    np.testing.assert_allclose(got, expected, rtol=256 * np.finfo(np.float32).eps)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_gradient_dtype(ad_backend, dtype):
    b = ad_backend
    if dtype not in HALF[b.name]:
        pytest.skip(f"{b.name} has no {dtype}")
    x = rng.normal(size=(8,))
    t = (rng.random(8) > 0.5) * 1.0
    xh = _half_array(b, x, dtype)
    v, g = b.ad.value_and_grad(
        lambda a, y: unilosses.binary_cross_entropy_with_logits(a, y, reduction="sum"),
        xh, b.asarray(t, "float32"))
    g = b.to_numpy(g)
    assert str(g.dtype) == dtype
    xr = np.asarray(b.to_numpy(xh), np.float64)
    _, dref = ref.bce_logits(xr, t)
    # the gradient is rounded once to the half dtype at the end
    eps = float(np.finfo(np.float16).eps) if dtype == "float16" else 2.0 ** -7
    np.testing.assert_allclose(np.asarray(g, np.float64), dref, rtol=eps, atol=eps)


# -- the extreme grid ---------------------------------------------------------------------------
# Documented in README ("Extreme values"): each row is (loss, kwargs, inputs, targets).
_SUB32 = float(np.finfo(np.float32).smallest_subnormal) * 4
EXTREME_GRID = [
    ("binary_cross_entropy_with_logits", {}, [-1e4, 1e4, 0.0, _SUB32, -_SUB32, 88.0, -88.0]),
    ("binary_focal_loss_with_logits", {"gamma": 0.0}, [-1e4, 1e4, 0.0, _SUB32, 50.0, -50.0]),
    ("binary_focal_loss_with_logits", {"gamma": 0.5}, [-1e4, 1e4, 0.0, _SUB32, 50.0, -50.0]),
    ("binary_focal_loss_with_logits", {"gamma": 2.0}, [-1e4, 1e4, 0.0, _SUB32, 50.0, -50.0]),
    ("binary_focal_loss_with_logits", {"gamma": 5.0}, [-1e4, 1e4, 0.0, _SUB32, 50.0, -50.0]),
    ("huber", {"delta": 1e-6}, [1e30, -1e30, 0.0, 1e-6, _SUB32, 3.0]),
    ("huber", {"delta": 1e6}, [1e30, -1e30, 0.0, 1e6, _SUB32, 3.0]),
    ("smooth_l1", {"beta": 1e-6}, [1e30, -1e30, 0.0, _SUB32, 3.0]),
    ("log_cosh", {}, [1e30, -1e30, 0.0, _SUB32, 1e-4, 100.0]),
    ("mae", {}, [1e30, -1e30, 0.0, _SUB32]),
    ("mse", {}, [1e15, -1e15, 0.0, _SUB32]),
]
_REF = {
    "binary_cross_entropy_with_logits": lambda x, t, kw: ref.bce_logits(x, t),
    "binary_focal_loss_with_logits": lambda x, t, kw: ref.focal_logits(x, t, 0.25, kw["gamma"]),
    "huber": lambda x, t, kw: ref.huber(x, t, kw["delta"]),
    "smooth_l1": lambda x, t, kw: ref.smooth_l1(x, t, kw["beta"]),
    "log_cosh": lambda x, t, kw: ref.log_cosh(x, t),
    "mae": lambda x, t, kw: ref.mae(x, t),
    "mse": lambda x, t, kw: ref.mse(x, t),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("row", range(len(EXTREME_GRID)),
                         ids=[f"{r[0]}{r[1] or ''}" for r in EXTREME_GRID])
def test_extreme_grid(ad_backend, row, dtype):
    name, kw, values = EXTREME_GRID[row]
    x = np.array(values * 2, dtype)
    n = len(values)
    t = np.array([0.0] * n + [1.0] * n if "logits" in name else [0.0] * 2 * n, dtype)
    b = ad_backend
    fn = getattr(unilosses, name)
    v, g = b.value_and_grad(lambda a, y: b.xp.sum(fn(a, y, reduction="none", **kw)),
                            b.asarray(x), b.asarray(t))
    # XLA on CPU flushes subnormals to zero: there the loss really sees 0 (an exact tie),
    # so the reference must see it too
    xr = x.copy()
    sub = (xr != 0) & (np.abs(xr) < np.finfo(dtype).tiny)
    if np.any(sub) and b.to_numpy(b.asarray(x[sub][:1]) * 1.0)[0] == 0:
        xr[sub] = 0.0
    val, dref = _REF[name](xr, t, kw)
    assert np.all(np.isfinite(g)) and np.isfinite(v)
    tol = 256 * np.finfo(dtype).eps
    # an absolute floor of a few smallest normal numbers, for values that are themselves
    # subnormal
    tiny = float(np.finfo(dtype).tiny) * 64
    np.testing.assert_allclose(v, val.sum(), rtol=tol, atol=tiny)
    np.testing.assert_allclose(g, dref, rtol=tol, atol=max(tiny, tol * 1e-3))


# -- determinism --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mse", "log_cosh", "binary_focal_loss_with_logits",
                                  "sparse_categorical_cross_entropy_with_logits"])
def test_bit_identical_repeats(xp, name):
    fn = getattr(unilosses, name)
    x = rng.normal(size=(64, 10)).astype(np.float32)
    if name.startswith("sparse"):
        t = xp.asarray(rng.integers(0, 10, 64))
    else:
        t = xp.asarray(rng.random((64, 10)).round(), "float32")
    xs = xp.asarray(x)
    first = xp.to_numpy(fn(xs, t))
    for _ in range(3):
        np.testing.assert_array_equal(xp.to_numpy(fn(xs, t)), first)
