"""Property-based tests (hypothesis): invariants over shapes, dtypes, masks, weights and
hyperparameters, on every backend.

``HYPOTHESIS_PROFILE=thorough`` runs 500 examples per property instead of CI's 12 (each
property runs on every backend, so CI still draws several hundred examples in all).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import unilosses
from conftest import BACKENDS, Backend, installed

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

REGRESSION = ["mse", "mae", "huber", "smooth_l1", "log_cosh"]
BINARY_LOGITS = ["binary_cross_entropy_with_logits", "binary_focal_loss_with_logits"]
BINARY_PROBS = ["binary_cross_entropy", "binary_focal_loss"]

shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6)
dtypes = st.sampled_from(["float32", "float64"])
finite = {"allow_nan": False, "allow_infinity": False}


@st.composite
def pair(draw, kind):  # type: ignore[no-untyped-def]
    shape = draw(shapes)
    if kind == "regression":
        el = st.floats(-1e3, 1e3, width=32, **finite)
        p = draw(hnp.arrays(np.float64, shape, elements=el))
        t = draw(hnp.arrays(np.float64, shape, elements=el))
    elif kind == "logits":
        p = draw(hnp.arrays(np.float64, shape, elements=st.floats(-50, 50, width=32, **finite)))
        t = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0, 0.3])))
    else:
        p = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1, width=32, **finite)))
        t = draw(hnp.arrays(np.float64, shape, elements=st.sampled_from([0.0, 1.0])))
    mask = draw(hnp.arrays(np.bool_, shape))
    w = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 4, width=32, **finite)))
    return p, t, mask, w


def _kind(name: str) -> str:
    return ("regression" if name in REGRESSION else
            "logits" if name.endswith("_with_logits") else "probs")


ALL = REGRESSION + BINARY_LOGITS + BINARY_PROBS


@pytest.mark.parametrize("name", ALL)
def test_invariants(xp, name):
    fn = getattr(unilosses, name)

    @given(data=pair(_kind(name)), dtype=dtypes)
    def check(data, dtype):  # type: ignore[no-untyped-def]
        p, t, mask, w = data
        tol = 256 * float(np.finfo(dtype).eps)
        P, T = xp.asarray(p, dtype), xp.asarray(t, dtype)
        none = xp.to_numpy(fn(P, T, reduction="none")).astype(np.float64)
        # non-negative everywhere
        assert np.all(none >= 0)
        # "sum" equals the sum of "none"; "mean" its mean
        s = float(xp.to_numpy(fn(P, T, reduction="sum")))
        np.testing.assert_allclose(s, none.sum(), rtol=tol * 4, atol=tol)
        m = float(xp.to_numpy(fn(P, T)))
        np.testing.assert_allclose(m, none.mean(), rtol=tol * 4, atol=tol)
        # weights of one change nothing
        ones = float(xp.to_numpy(fn(P, T, weights=xp.asarray(np.ones_like(p), dtype))))
        np.testing.assert_allclose(ones, m, rtol=tol, atol=tol)
        # where= equals slicing the kept elements
        masked = float(xp.to_numpy(fn(P, T, where=xp.asarray(mask), weights=xp.asarray(w,
                                                                                       dtype))))
        kept = (none * w.astype(dtype))[mask]
        expected = kept.sum() / max(mask.sum(), 1)
        np.testing.assert_allclose(masked, expected, rtol=tol * 4, atol=tol)

    check()


@pytest.mark.parametrize("logits", [True, False])
def test_focal_gamma0_alpha_none_is_bce(xp, logits):
    focal = unilosses.binary_focal_loss_with_logits if logits else unilosses.binary_focal_loss
    bce = (unilosses.binary_cross_entropy_with_logits if logits
           else unilosses.binary_cross_entropy)

    @given(data=pair("logits" if logits else "probs"), dtype=dtypes)
    def check(data, dtype):  # type: ignore[no-untyped-def]
        p, t, _, _ = data
        P, T = xp.asarray(p, dtype), xp.asarray(t, dtype)
        a = xp.to_numpy(focal(P, T, gamma=0.0, alpha=None, reduction="none"))
        b = xp.to_numpy(bce(P, T, reduction="none"))
        # the dtype's tolerance, not a few ulp: on torch BCE is torch's own kernel, whose
        # log(exp(-m) + exp(-x-m)) is ~10 ulp off log1p, and 0 for terms below eps
        tol = 256 * float(np.finfo(dtype).eps)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)

    check()


def test_huber_relations(xp):
    @given(data=pair("regression"), dtype=dtypes,
           delta=st.floats(1e-3, 1e2, allow_nan=False, allow_infinity=False))
    def check(data, dtype, delta):  # type: ignore[no-untyped-def]
        p, t, _, _ = data
        P, T = xp.asarray(p, dtype), xp.asarray(t, dtype)
        tol = 256 * float(np.finfo(dtype).eps)
        # huge delta: every error is in the quadratic branch, i.e. MSE / 2
        big = xp.to_numpy(unilosses.huber(P, T, delta=1e9, reduction="none"))
        half_mse = xp.to_numpy(unilosses.mse(P, T, reduction="none")) / 2
        np.testing.assert_allclose(big, half_mse, rtol=tol)
        # smooth_l1(beta) == huber(delta=beta) / beta
        s = xp.to_numpy(unilosses.smooth_l1(P, T, beta=delta, reduction="none"))
        h = xp.to_numpy(unilosses.huber(P, T, delta=delta, reduction="none"))
        np.testing.assert_allclose(s, h / np.asarray(delta, dtype), rtol=tol, atol=tol * 1e-3)

    check()


@st.composite
def class_problem(draw):  # type: ignore[no-untyped-def]
    n = draw(st.integers(1, 6))
    c = draw(st.integers(2, 6))
    x = draw(hnp.arrays(np.float64, (n, c), elements=st.floats(-30, 30, width=32, **finite)))
    y = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    ls = draw(st.sampled_from([0.0, 0.1, 0.5]))
    return x, y, ls


def test_sparse_equals_categorical_one_hot(xp):
    @given(data=class_problem(), dtype=dtypes)
    def check(data, dtype):  # type: ignore[no-untyped-def]
        x, y, ls = data
        oh = np.eye(x.shape[1])[y]
        a = xp.to_numpy(unilosses.sparse_categorical_cross_entropy_with_logits(
            xp.asarray(x, dtype), xp.asarray(y), label_smoothing=ls, reduction="none"))
        b = xp.to_numpy(unilosses.categorical_cross_entropy_with_logits(
            xp.asarray(x, dtype), xp.asarray(oh, dtype), label_smoothing=ls, reduction="none"))
        tol = 256 * float(np.finfo(dtype).eps)
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(x).max())
        # label smoothing 0 is exactly no smoothing
        c = xp.to_numpy(unilosses.sparse_categorical_cross_entropy_with_logits(
            xp.asarray(x, dtype), xp.asarray(y), label_smoothing=0.0, reduction="none"))
        d = xp.to_numpy(unilosses.sparse_categorical_cross_entropy_with_logits(
            xp.asarray(x, dtype), xp.asarray(y), reduction="none"))
        np.testing.assert_array_equal(c, d)

    check()


_OTHERS = [b for b in BACKENDS if b != "numpy" and installed(b)]


@pytest.mark.parametrize("name", ALL + ["categorical_cross_entropy_with_logits"])
def test_backends_agree(name):
    """Every installed backend gives NumPy's value on the same inputs."""
    fn = getattr(unilosses, name)
    backends = [Backend(b) for b in _OTHERS]
    kind = "logits" if name.startswith("categorical") else _kind(name)

    @given(data=pair(kind), dtype=dtypes)
    def check(data, dtype):  # type: ignore[no-untyped-def]
        p, t, mask, _ = data
        if name.startswith("categorical"):  # the class axis (the last) leaves the loss
            mask = mask[..., 0]
        ref = np.asarray(fn(p.astype(dtype), t.astype(dtype), where=mask), np.float64)
        tol = 256 * float(np.finfo(dtype).eps)
        for b in backends:
            got = b.to_numpy(fn(b.asarray(p, dtype), b.asarray(t, dtype),
                                where=b.asarray(mask)))
            np.testing.assert_allclose(got, ref, rtol=tol * 4, atol=tol, err_msg=b.name)

    check()
