"""Keyword options given as other types, or invalid: the same value as the Python number on
every backend and path, or a clear error naming the option (from an option-value audit)."""

from __future__ import annotations

import numpy as np
import pytest

import unilosses
from conftest import dynamo_message

# (2, 3, 4) anchors: probabilities, targets and states
_R = np.random.default_rng(0)
_ANCHOR = (_R.random((2, 3, 4)) * 0.9 + 0.05, (_R.random((2, 3, 4)) < 0.3).astype(float),
           np.array([[1, 0, -1], [0, 1, 1]]))


@pytest.mark.parametrize("normalizer,error,match", [
    (float("nan"), ValueError, r"`normalizer` must be finite"),
    (float("inf"), ValueError, r"`normalizer` must be finite"),
    (-2.0, ValueError, r"`normalizer` must be > 0"),
    (0, ValueError, r"`normalizer` must be > 0"),
    (True, TypeError, r"`normalizer` must be .*got the boolean"),
    ("3", TypeError, r"`normalizer` must be an array \(or a Python number"),
    ([3.0], ValueError, r"`normalizer` has shape \(1,\); it must be a number or a 0-d array"),
])
def test_anchor_normalizer_is_checked(xp, normalizer, error, match):
    # nan gave a NaN loss, inf 0, -2 a negative loss and True divided by 1, silently; a
    # string or list an AttributeError naming nothing.  (Both anchor losses share the check.)
    p, t, s = (xp.asarray(a) for a in _ANCHOR)
    with pytest.raises(error, match=match):
        unilosses.anchor_focal_loss(p, t, s, normalizer=normalizer)


@pytest.mark.parametrize("fn", ["anchor_focal_loss", "anchor_focal_loss_with_logits"])
def test_anchor_normalizer_as_numpy_scalar_or_array(xp, fn):
    # np.float32(3) and a 0-d NumPy array on torch raised AttributeError ('... has no
    # attribute to'); an array of the inputs' framework divides as the number does
    p, t, s = (xp.asarray(a) for a in _ANCHOR)
    f = getattr(unilosses, fn)
    want = xp.to_numpy(f(p, t, s, normalizer=3.0))
    for n in (3, np.float32(3.0), np.int64(3), xp.asarray(np.asarray(3.0))):
        np.testing.assert_allclose(xp.to_numpy(f(p, t, s, normalizer=n)), want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"`normalizer` holds a value that is not a finite"):
        f(p, t, s, normalizer=xp.asarray(np.asarray(-1.0)))


_LOGITS = np.array([[0.3, -1.2, 2.0], [-0.5, 0.8, 0.1]])
_BINARY = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])


@pytest.mark.parametrize("pos_weight,error,match", [
    (float("nan"), ValueError, r"`pos_weight` must be finite"),
    (float("inf"), ValueError, r"`pos_weight` must be finite"),
    (-1.0, ValueError, r"`pos_weight` must be >= 0"),
    (True, TypeError, r"`pos_weight` must be .*got the boolean"),
    ([1.0, float("nan"), 2.0], ValueError, r"`pos_weight` holds values outside \[0, "),
    # (an infinite weight as an array: the check's upper bound is the dtype's maximum)
    ([1.0, float("inf"), 2.0], ValueError, r"`pos_weight` holds values outside \[0, "),
    ([1.0, -1.0, 2.0], ValueError, r"`pos_weight` holds values outside \[0, "),
])
def test_pos_weight_is_checked(xp, pos_weight, error, match):
    # nan and inf gave a NaN loss, -1 a negative one and True the loss without pos_weight,
    # silently (torch's BCEWithLogitsLoss does not check either)
    with pytest.raises(error, match=match):
        unilosses.binary_cross_entropy_with_logits(xp.asarray(_LOGITS), xp.asarray(_BINARY),
                                                   pos_weight=pos_weight)


def test_pos_weight_front_ends_check_at_construction():
    torch = pytest.importorskip("torch")
    import unilosses.torch as ut

    with pytest.raises(ValueError, match="`pos_weight` must be >= 0"):
        ut.BCEWithLogitsLoss(pos_weight=-1.0)
    with pytest.raises(ValueError, match="`pos_weight` must be finite"):
        ut.BCEWithLogitsLoss(pos_weight=float("nan"))
    m = ut.BCEWithLogitsLoss(pos_weight=np.float32(2.0))
    x, t = torch.tensor(_LOGITS), torch.tensor(_BINARY)
    np.testing.assert_allclose(m(x, t).item(), unilosses.binary_cross_entropy_with_logits(
        _LOGITS, _BINARY, pos_weight=2.0), rtol=1e-12)


def test_pos_weight_keras_checks_at_construction():
    pytest.importorskip("keras")
    import unilosses.keras as uk

    for bad, error in ((-1.0, ValueError), (float("inf"), ValueError), (True, TypeError),
                       ([1.0, -1.0], ValueError), (np.array([1.0, -2.0]), ValueError),
                       (np.ones((2, 2)), TypeError)):
        with pytest.raises(error, match="`pos_weight`"):
            uk.BinaryCrossentropy(from_logits=True, pos_weight=bad)
    for good in ((1.0, 2.0, 3.0), np.array([1.0, 2.0, 3.0], dtype=np.float32)):
        loss = uk.BinaryCrossentropy(from_logits=True, pos_weight=good)
        again = uk.BinaryCrossentropy.from_config(loss.get_config())
        assert again.pos_weight == [1.0, 2.0, 3.0]
        assert all(type(v) is float for v in again.pos_weight)  # (JSON in get_config)


_P = np.linspace(0.1, 0.9, 8).reshape(4, 2)


@pytest.mark.parametrize("call", [
    lambda a, v: unilosses.huber(a, a, delta=v),
    lambda a, v: unilosses.binary_cross_entropy(a, a, label_smoothing=v),
    lambda a, v: unilosses.binary_focal_loss(a, a, gamma=v),
    lambda a, v: unilosses.poly1_cross_entropy_with_logits(a, a, epsilon=v),
    lambda a, v: unilosses.tversky_loss(a, a, alpha=v),
], ids=["delta", "label_smoothing", "gamma", "epsilon", "tversky-alpha"])
def test_a_string_is_not_a_number(xp, call):
    # float("0.5") parsed it: label_smoothing="0.1" smoothed, a typo in a config went unseen
    with pytest.raises(TypeError, match=r"must be a Python number, got str"):
        call(xp.asarray(_P), "0.5")


@pytest.mark.parametrize("fn", ["in_top_k", "top_k_accuracy"])
def test_k_infinite(xp, fn):
    # int(inf) raised a bare OverflowError naming nothing
    with pytest.raises(TypeError, match=r"`k` must be an integer, got inf"):
        getattr(unilosses, fn)(xp.asarray(_P), xp.asarray(np.array([0, 1, 1, 0])),
                               k=float("inf"))


def test_torch_option_tensor_requiring_grad_is_refused():
    torch = pytest.importorskip("torch")
    # float() detached it: the loss ran, and delta.grad stayed None without a word
    p = torch.tensor(_P)
    delta = torch.tensor(2.0, requires_grad=True)
    for n in (16, 5000):  # (the plain path and the generic one)
        x = torch.linspace(0.1, 0.9, n, dtype=torch.float64)
        with pytest.raises(TypeError, match=r"`delta` is a tensor that requires grad"):
            unilosses.huber(x, x.flip(0), delta=delta)
    # a 0-d tensor without grad is the number it holds
    assert unilosses.huber(p, p * 2, delta=torch.tensor(0.3)).item() == pytest.approx(
        unilosses.huber(p, p * 2, delta=0.3).item())


def test_torch_compile_option_tensor_says_how_to_pass_it():
    torch = pytest.importorskip("torch")
    # a 0-d tensor option became an unbacked symbolic float: "AssertionError: sympy
    # expression is NaN" from inside torch's shape machinery
    f = torch.compile(lambda a, d: unilosses.huber(a, a * 2, delta=d), backend="aot_eager",
                      fullgraph=True)
    with pytest.raises(Exception) as info:
        f(torch.tensor(_P), torch.tensor(0.3))
    assert dynamo_message(str(info.value), r"`delta` must be a Python number.*traced")


def test_tensorflow_eager_option_closed_over_by_tf_function():
    tf = pytest.importorskip("tensorflow")
    # an eager tensor closed over holds its value: read as the number, as outside
    d = tf.constant(0.3)
    p = tf.constant(_P)
    f = tf.function(lambda a: unilosses.huber(a, a * 2, delta=d))
    assert float(f(p)) == pytest.approx(float(unilosses.huber(p, p * 2, delta=0.3)))
    g = tf.function(lambda a, v: unilosses.huber(a, a * 2, delta=v))
    with pytest.raises(TypeError, match=r"`delta` must be a Python number.*traced"):
        g(p, d)


@pytest.mark.parametrize("flag", ["no", 0, None], ids=["str", "int", "None"])
def test_torch_modules_flags_must_be_bools(flag):
    pytest.importorskip("torch")
    import unilosses.torch as ut

    # bool("no") is True: PoissonNLLLoss(full="no") added Stirling's term, silently (the
    # functions refuse it)
    for make in (lambda: ut.PoissonNLLLoss(full=flag), lambda: ut.PoissonNLLLoss(log_input=flag),
                 lambda: ut.GaussianNLLLoss(full=flag), lambda: ut.KLDivLoss(log_target=flag)):
        with pytest.raises(TypeError, match=r"`(full|log_input|log_target)` must be True or"):
            make()
    assert ut.PoissonNLLLoss(full=np.True_).full is True


def test_keras_options_are_checked_at_construction():
    pytest.importorskip("keras")
    import json

    import unilosses.keras as uk

    # bool("no") is True: from_logits="no" read logits
    for cls in (uk.BinaryCrossentropy, uk.CategoricalCrossentropy, uk.Poisson):
        with pytest.raises(TypeError, match=r"`(from_logits|log_input)` must be True or"):
            cls(**{"log_input" if cls is uk.Poisson else "from_logits": "no"})
    # a string was taken as the sequence of its characters: "123" gave [1.0, 2.0, 3.0]
    with pytest.raises(TypeError, match=r"`class_weights` must be a sequence of numbers, "
                                        r"got str"):
        uk.CategoricalCrossentropy(class_weights="123")
    with pytest.raises(TypeError, match=r"`alpha` must be a Python number, got str"):
        uk.CategoricalFocalCrossentropy(alpha=["0.25", "0.5"])
    with pytest.raises(ValueError, match=r"`class_weights` must be finite"):
        uk.CategoricalCrossentropy(class_weights=[1.0, float("nan")])
    # a NumPy scalar alpha is the number it holds (it was refused as "not a sequence"), and
    # the config keeps Python floats (JSON)
    loss = uk.BinaryFocalCrossentropy(alpha=np.float32(0.5), apply_class_balancing=True)
    assert loss.alpha == 0.5 and type(loss.alpha) is float
    again = uk.BinaryFocalCrossentropy.from_config(json.loads(json.dumps(loss.get_config())))
    assert again.alpha == 0.5



def test_quantiles_as_a_0d_array(xp):
    # a 0-d torch/JAX/TF array was refused as "with several quantiles it must be 1-D", where
    # a 0-d NumPy one (and every other number option's 0-d array) was the number it holds
    p, t = xp.asarray(_P), xp.asarray(_P[::-1].copy())
    want = xp.to_numpy(unilosses.quantile_loss(p, t, quantiles=0.3))
    for q in (np.float32(0.3), np.asarray(0.3), xp.asarray(np.asarray(0.3))):
        np.testing.assert_allclose(xp.to_numpy(unilosses.quantile_loss(p, t, quantiles=q)),
                                   want, rtol=1e-6)
    with pytest.raises(ValueError, match=r"`quantiles` must lie in \[0, 1\]"):
        unilosses.quantile_loss(p, t, quantiles=xp.asarray(np.asarray(1.5)))



def test_numpy_integers_for_axis_and_ignore_index(xp):
    # np.int64(1) (an argmax, a config read with NumPy) was refused as "must be an int",
    # where NumPy and every framework take it as an axis
    x = xp.asarray(_LOGITS)
    y = xp.asarray(np.array([2, 1]))
    f = unilosses.sparse_categorical_cross_entropy_with_logits
    want = xp.to_numpy(f(x, y, axis=-1, ignore_index=1))
    for kind in (np.int64, np.int32):
        got = f(x, y, axis=kind(-1), ignore_index=kind(1))
        np.testing.assert_allclose(xp.to_numpy(got), want, rtol=1e-12)
        got = unilosses.sparse_categorical_focal_loss_with_logits(x, y, axis=kind(1),
                                                                  ignore_index=kind(1))
        np.testing.assert_allclose(
            xp.to_numpy(got), xp.to_numpy(unilosses.sparse_categorical_focal_loss_with_logits(
                x, y, axis=1, ignore_index=1)), rtol=1e-12)
        got = unilosses.rmse(x, x * 2.0, axis=(kind(0),))
        np.testing.assert_allclose(xp.to_numpy(got),
                                   xp.to_numpy(unilosses.rmse(x, x * 2.0, axis=0)), rtol=1e-12)
    with pytest.raises(TypeError, match="`axis` must be an int"):
        f(x, y, axis=np.float64(1.0))
    with pytest.raises(TypeError, match="`ignore_index` must be an int or None"):
        f(x, y, ignore_index=np.bool_(True))


def test_front_ends_take_numpy_integers_for_axis_and_ignore_index():
    torch = pytest.importorskip("torch")
    import unilosses.torch as ut

    x, y = torch.tensor(_LOGITS), torch.tensor([2, 1])
    got = ut.CrossEntropyLoss(ignore_index=np.int64(1))(x, y)
    assert got.item() == ut.CrossEntropyLoss(ignore_index=1)(x, y).item()
    assert type(ut.CrossEntropyLoss(ignore_index=np.int64(1)).ignore_index) is int


# -- regression sweep: each number option, as a NumPy scalar, a 0-d array of the inputs'
# framework and bad values, on every backend (torch: the plain path's 16 elements and the
# generic path's 4096) --------------------------------------------------------------------------
def _inputs(kind, n):
    r = np.random.default_rng(3)
    if kind == "reg":
        return r.random(n) + 0.1, r.random(n) + 0.1
    if kind == "bin":
        return r.random(n) * 0.9 + 0.05, (r.random(n) < 0.5).astype(float)
    if kind == "cat":
        p = r.random((n // 4, 4)) + 0.05
        return p / p.sum(1, keepdims=True), np.eye(4)[r.integers(0, 4, n // 4)]
    if kind == "sparse":
        p = r.random((n // 4, 4)) + 0.05
        return p / p.sum(1, keepdims=True), r.integers(0, 4, n // 4)
    return (r.random((n // 4, 4)) < 0.5) * 1.0, r.random((n // 4, 4))  # overlap


_SWEEP = [  # (loss, inputs, option, a valid value, a value out of range)
    ("huber", "reg", "delta", 2.0, 0.0),
    ("smooth_l1", "reg", "beta", 0.5, -1.0),
    ("binary_cross_entropy", "bin", "label_smoothing", 0.1, 1.5),
    ("binary_cross_entropy_with_logits", "bin", "label_smoothing", 0.0, -0.1),
    ("binary_cross_entropy_with_logits", "bin", "pos_weight", 2.0, -1.0),
    ("binary_focal_loss", "bin", "gamma", 2, -1.0),
    ("binary_focal_loss_with_logits", "bin", "alpha", 0.25, 1.5),
    ("categorical_cross_entropy", "cat", "label_smoothing", 0.2, 2.0),
    ("sparse_categorical_cross_entropy_with_logits", "sparse", "label_smoothing", 0.0, -1.0),
    ("sparse_categorical_focal_loss", "sparse", "gamma", 1.0, -0.5),
    ("poly1_cross_entropy_with_logits", "cat", "epsilon", 1.0, None),
    ("quantile_loss", "reg", "quantiles", 0.3, 1.5),
    ("dice_loss", "ovl", "smooth", 1.0, -1.0),
    ("tversky_loss", "ovl", "alpha", 0.3, -0.1),
    ("cosine_similarity_loss", "cat", "eps", 1e-3, 0.0),
    ("top_k_accuracy", "sparse", "k", 2, 0),
]


@pytest.mark.parametrize("fn,kind,option,value,out", _SWEEP,
                         ids=[f"{c[0]}-{c[2]}" for c in _SWEEP])
def test_option_types_sweep(xp, fn, kind, option, value, out):
    f = getattr(unilosses, fn)
    extra = {"axis": 1} if kind == "ovl" else {}
    sizes = (16, 4096) if xp.name == "torch" else (16,)
    for n in sizes:
        p, t = (xp.asarray(a) for a in _inputs(kind, n))

        def call(v, p=p, t=t):
            return xp.to_numpy(f(p, t, **{option: v}, **extra))

        want = call(value)
        same = [np.asarray(value), np.int64(value)] if option == "k" else [
            np.float32(value), np.float64(value)]
        if option in ("alpha", "pos_weight"):
            # (arrays, per element: a 0-d one is of a framework, NumPy's on NumPy only)
            if xp.name == "numpy":
                same.append(np.asarray(value))
        elif option != "k":
            same.append(np.asarray(value))  # a 0-d array is the number it holds
        if xp.name != "array_api_strict":
            same.append(xp.asarray(np.asarray(value)))
        if option != "k" and float(value) == int(value):
            same.append(np.int64(int(value)))
        for v in same:
            np.testing.assert_allclose(call(v), want, rtol=1e-6, err_msg=repr(v))
        bad = [(float("nan"), TypeError if option == "k" else ValueError), ("1", TypeError),
               (True, TypeError),
               (np.True_, TypeError), (None, TypeError)]
        if out is not None:
            bad.append((out, ValueError))
        if option != "k":
            bad.append((float("inf"), ValueError))
        for v, error in bad:
            if v is None and option in ("alpha", "pos_weight"):
                continue  # (None: no balancing, no pos_weight)
            with pytest.raises(error, match=f"`{option}`"):
                call(v)


@pytest.mark.parametrize("fn,kind,option,value", [
    ("huber", "reg", "delta", 0.3), ("binary_focal_loss_with_logits", "bin", "gamma", 2),
    ("categorical_cross_entropy_with_logits", "cat", "label_smoothing", 0.1),
], ids=["huber-delta", "focal-gamma", "cce-label_smoothing"])
def test_option_types_same_gradient(ad_backend, fn, kind, option, value):
    xp = ad_backend
    f = getattr(unilosses, fn)
    p, t = (xp.asarray(a) for a in _inputs(kind, 16))
    want_v, want_g = xp.value_and_grad(lambda a, b: f(a, b, **{option: value}), p, t)
    for v in (np.float32(value), xp.asarray(np.asarray(value))):
        got_v, got_g = xp.value_and_grad(lambda a, b, v=v: f(a, b, **{option: v}), p, t)
        np.testing.assert_allclose(got_v, want_v, rtol=1e-6)  # (NumPy already)
        np.testing.assert_allclose(got_g, want_g, rtol=1e-6)


def test_option_types_closed_over_under_jit():
    jax = pytest.importorskip("jax")
    # a NumPy scalar or a concrete jax array closed over is a constant of the trace
    p, t = (jax.numpy.asarray(a) for a in _inputs("reg", 16))
    want = unilosses.huber(p, t, delta=0.3)
    for d in (np.float32(0.3), jax.numpy.asarray(0.3)):
        np.testing.assert_allclose(jax.jit(lambda a, b, d=d: unilosses.huber(a, b, delta=d))(
            p, t), want, rtol=1e-6)
