"""TensorFlow-specific checks: tf.Tensor/tf.Variable inputs, TF and Keras peers, gradients
against torch and JAX, tf.function (with and without XLA, with unknown dimensions), mixed
dtypes and accurate large float32 reductions.

The references here are float64 NumPy formulas written in this file, independently of the
implementation and of tests/reference.py.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

import numpy as np
import pytest

import unilosses
from conftest import Backend, assert_close, installed, tolerance

tf = pytest.importorskip("tensorflow", reason="tensorflow is not installed")

TF = Backend("tensorflow")
rng = np.random.default_rng(3)
EPS = 1e-7  # the probability clip of the losses (Keras's epsilon)


# -- float64 NumPy references ----------------------------------------------------------------
def _log_sigmoid(x):  # type: ignore[no-untyped-def]
    return -np.logaddexp(0.0, -x)


def _log_softmax(x, axis=-1):  # type: ignore[no-untyped-def]
    m = x.max(axis=axis, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=axis, keepdims=True))


def _huber(d, delta):  # type: ignore[no-untyped-def]
    a = np.abs(d)
    return np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))


def _bce(p, t):  # type: ignore[no-untyped-def]
    pc = np.clip(p, EPS, 1 - EPS)
    return -(t * np.log(pc) + (1 - t) * np.log(1 - pc))


def _focal(p, t, alpha, gamma, logits):  # type: ignore[no-untyped-def]
    if logits:
        log_p, log_q, p = _log_sigmoid(p), _log_sigmoid(-p), np.exp(_log_sigmoid(p))
    else:
        pc = np.clip(p, EPS, 1 - EPS)
        log_p, log_q = np.log(pc), np.log(1 - pc)
    a_pos, a_neg = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    return np.abs(t - p) ** gamma * -(a_pos * t * log_p + a_neg * (1 - t) * log_q)


def _cce(p, t, ls, logits):  # type: ignore[no-untyped-def]
    c = p.shape[-1]
    t = t * (1 - ls) + ls / c
    logq = _log_softmax(p) if logits else np.log(np.clip(p / p.sum(-1, keepdims=True),
                                                         EPS, 1 - EPS))
    return -(t * logq).sum(-1)


def _sparse(p, y, axis, ignore, logits):  # type: ignore[no-untyped-def]
    p = np.moveaxis(p, axis, -1)
    logq = _log_softmax(p) if logits else np.log(np.clip(p / p.sum(-1, keepdims=True),
                                                         EPS, 1 - EPS))
    keep = y != ignore
    nll = -np.take_along_axis(logq, np.where(keep, y, 0)[..., None], -1)[..., 0]
    return np.where(keep, nll, 0.0).sum() / max(keep.sum(), 1)


def _anchor(p, t, s, alpha, gamma, logits):  # type: ignore[no-untyped-def]
    t = np.where((s == 1)[..., None], t, 0.0)
    fl = _focal(p, t, alpha, gamma, logits)
    return np.where((s != -1)[..., None], fl, 0.0).sum() / max((s == 1).sum(), 1)


def _in_top_k(p, y, k):  # type: ignore[no-untyped-def]
    return np.array([np.all(np.isfinite(r)) and (r > r[c]).sum() < k for r, c in zip(p, y)])


# -- the cases: every public loss --------------------------------------------------------------
SHAPE = (4, 5)


def _regression():  # type: ignore[no-untyped-def]
    p, t = rng.normal(size=SHAPE) * 2, rng.normal(size=SHAPE) * 2
    t[0, 0] = p[0, 0]  # a zero error
    return p, t


def _binary_logits():  # type: ignore[no-untyped-def]
    return rng.normal(size=SHAPE) * 3, (rng.random(SHAPE) > 0.5) * 1.0


def _binary_probs():  # type: ignore[no-untyped-def]
    return rng.uniform(0.02, 0.98, SHAPE), (rng.random(SHAPE) > 0.5) * 1.0


def _labels():  # type: ignore[no-untyped-def]
    return rng.integers(0, SHAPE[1], SHAPE[0])


def _anchors(logits):  # type: ignore[no-untyped-def]
    def make():  # type: ignore[no-untyped-def]
        shape = (2, 6, 3)
        p = rng.normal(size=shape) * 2 if logits else rng.uniform(0.02, 0.98, shape)
        s = rng.integers(-1, 2, shape[:2])
        s[0, 0] = 1
        return p, (rng.random(shape) > 0.6) * 1.0, s
    return make


def _ignored_labels():  # type: ignore[no-untyped-def]
    y = _labels()
    y[1] = -100
    return y


# name -> (loss, kwargs, input builder (predictions first), integer-array argument positions,
#          float64 reference of the "mean"/default reduction)
CASES = {
    "mse": (unilosses.mse, {}, _regression, (), lambda p, t: np.mean((p - t) ** 2)),
    "mae": (unilosses.mae, {}, _regression, (), lambda p, t: np.mean(np.abs(p - t))),
    "rmse": (unilosses.rmse, {}, _regression, (), lambda p, t: np.sqrt(np.mean((p - t) ** 2))),
    "huber": (unilosses.huber, {"delta": 0.7}, _regression, (),
              lambda p, t: np.mean(_huber(p - t, 0.7))),
    "smooth_l1": (unilosses.smooth_l1, {"beta": 2.0}, _regression, (),
                  lambda p, t: np.mean(_huber(p - t, 2.0) / 2.0)),
    "log_cosh": (unilosses.log_cosh, {}, _regression, (),
                 lambda p, t: np.mean(np.logaddexp(p - t, t - p) - np.log(2.0))),
    "bce": (unilosses.binary_cross_entropy, {}, _binary_probs, (),
            lambda p, t: np.mean(_bce(p, t))),
    "bce_logits": (unilosses.binary_cross_entropy_with_logits, {"pos_weight": 2.5},
                   _binary_logits, (),
                   lambda x, t: np.mean(-2.5 * t * _log_sigmoid(x)
                                        - (1 - t) * _log_sigmoid(-x))),
    "focal": (unilosses.binary_focal_loss, {"alpha": 0.3, "gamma": 2.0}, _binary_probs, (),
              lambda p, t: np.mean(_focal(p, t, 0.3, 2.0, False))),
    "focal_logits": (unilosses.binary_focal_loss_with_logits, {"alpha": 0.25, "gamma": 0.5},
                     _binary_logits, (),
                     lambda x, t: np.mean(_focal(x, t, 0.25, 0.5, True))),
    "cce": (unilosses.categorical_cross_entropy, {},
            lambda: (rng.dirichlet(np.ones(5), 4) * 1.3, rng.dirichlet(np.ones(5), 4)), (),
            lambda p, t: np.mean(_cce(p, t, 0.0, False))),
    "cce_logits": (unilosses.categorical_cross_entropy_with_logits, {"label_smoothing": 0.1},
                   lambda: (rng.normal(size=SHAPE) * 3, rng.dirichlet(np.ones(5), 4)), (),
                   lambda x, t: np.mean(_cce(x, t, 0.1, True))),
    "sparse": (unilosses.sparse_categorical_cross_entropy, {},
               lambda: (rng.dirichlet(np.ones(5), 4), _labels()), (1,),
               lambda p, y: _sparse(p, y, -1, None, False)),
    "sparse_logits": (unilosses.sparse_categorical_cross_entropy_with_logits,
                      {"ignore_index": -100},
                      lambda: (rng.normal(size=SHAPE) * 3, _ignored_labels()), (1,),
                      lambda x, y: _sparse(x, y, -1, -100, True)),
    # class axis in the middle: take_along_axis transposes around tf.gather
    "sparse_logits_axis1": (unilosses.sparse_categorical_cross_entropy_with_logits,
                            {"axis": 1},
                            lambda: (rng.normal(size=(3, 4, 2)), rng.integers(0, 4, (3, 2))),
                            (1,), lambda x, y: _sparse(x, y, 1, None, True)),
    "anchor_focal": (unilosses.anchor_focal_loss, {}, _anchors(False), (2,),
                     lambda p, t, s: _anchor(p, t, s, 0.25, 2.0, False)),
    "anchor_focal_logits": (unilosses.anchor_focal_loss_with_logits, {"gamma": 0.5},
                            _anchors(True), (2,),
                            lambda x, t, s: _anchor(x, t, s, 0.25, 0.5, True)),
    "in_top_k": (unilosses.in_top_k, {"k": 2}, lambda: (rng.normal(size=SHAPE), _labels()),
                 (1,), lambda p, y: _in_top_k(p, y, 2)),
    "top_k_accuracy": (unilosses.top_k_accuracy, {"k": 2},
                       lambda: (rng.normal(size=SHAPE), _labels()), (1,),
                       lambda p, y: np.mean(_in_top_k(p, y, 2))),
}
INPUTS = {name: case[2]() for name, case in CASES.items()}
METRICS = ("in_top_k", "top_k_accuracy")
DIFFERENTIABLE = sorted(set(CASES) - set(METRICS))


def test_every_public_loss_has_a_case():
    covered = {CASES[c][0].__name__ for c in CASES} | set(LATER)
    missing = sorted(set(unilosses.__all__) - covered)
    assert not missing, f"public losses without a TensorFlow case here: {missing}"


def _rounded(name, dtype):  # type: ignore[no-untyped-def]
    """The case's inputs, floating ones rounded to ``dtype`` (what the loss really sees)."""
    ints = CASES[name][3]
    return [a if i in ints else a.astype(dtype) for i, a in enumerate(INPUTS[name])]


def _tf_args(name, dtype, variable=False):  # type: ignore[no-untyped-def]
    make = tf.Variable if variable else tf.constant
    return [make(a) for a in _rounded(name, dtype)]


def _check(out, name, dtype):  # type: ignore[no-untyped-def]
    ints = CASES[name][3]
    expected = CASES[name][4](*[a if i in ints else a.astype(np.float64)
                                for i, a in enumerate(_rounded(name, dtype))])
    if name == "in_top_k":
        assert out.dtype == tf.bool
        np.testing.assert_array_equal(out.numpy(), expected)
    else:
        # means of up to 36 rounded terms
        assert_close(TF, out, expected, dtype, scale=6)


# -- eager: tf.Tensor and tf.Variable ----------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variable", [False, True], ids=["tensor", "variable"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_eager_tensor_and_variable(name, variable, dtype):
    fn, kw = CASES[name][:2]
    out = fn(*_tf_args(name, dtype, variable), **kw)
    assert isinstance(out, tf.Tensor) and not isinstance(out, tf.Variable)
    _check(out, name, dtype)


@pytest.mark.parametrize("name", sorted(set(CASES) - {"in_top_k", "top_k_accuracy"}))
def test_gradient_through_a_variable_under_a_tape(name):
    """A tape differentiates a loss of a tf.Variable as it does one of a watched tensor (the
    eager fast paths ask a tape about tensors; a variable is read as one first)."""
    fn, kw = CASES[name][:2]
    args = _rounded(name, "float64")
    with tf.GradientTape() as tape:
        v = tf.Variable(args[0])
        out_v = fn(v, *[tf.constant(a) for a in args[1:]], **kw)
    g_v = tape.gradient(out_v, v)
    x = tf.constant(args[0])
    with tf.GradientTape() as tape:
        tape.watch(x)
        out_x = fn(x, *[tf.constant(a) for a in args[1:]], **kw)
    g_x = tape.gradient(out_x, x)
    assert g_v is not None and g_x is not None
    np.testing.assert_allclose(np.asarray(out_v), np.asarray(out_x), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(g_v), np.asarray(g_x), rtol=1e-12, atol=1e-15)


def test_importing_the_backend_leaves_tensorflows_runtime_unstarted():
    """A program may configure TensorFlow's devices after importing unilosses's backend (no
    tensor is made at import: that would start the runtime)."""
    import subprocess

    code = ("import tensorflow as tf; import unilosses.backends.tensorflow; "
            "import unilosses.distributed; cpu = tf.config.list_physical_devices('CPU')[0]; "
            "tf.config.set_logical_device_configuration("
            "cpu, [tf.config.LogicalDeviceConfiguration()] * 2); "
            "print(len(tf.config.list_logical_devices('CPU')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.split()[-1] == "2", out.stderr[-2000:]


def test_variable_dispatches_to_the_tensorflow_adapter():
    from unilosses.backends import adapter_for

    assert adapter_for(tf.Variable([1.0])) is TF.ad
    assert adapter_for(tf.constant([1.0])) is TF.ad


def test_numpy_behaviour_is_not_switched_on():
    # tf.experimental.numpy.experimental_enable_numpy_behavior() would add NumPy methods to
    # every tf.Tensor of the user's program
    unilosses.mse(tf.constant([1.0]), tf.constant([2.0]))
    assert not hasattr(tf.constant([1.0]), "astype")


# -- TensorFlow's own losses -------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tf_nn_peers(dtype):
    x, t = INPUTS["bce_logits"]
    x, t = x.astype(dtype), t.astype(dtype)
    assert_close(TF, unilosses.binary_cross_entropy_with_logits(tf.constant(x), tf.constant(t),
                                                               reduction="none"),
                 tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=x).numpy(), dtype)
    x, t = (a.astype(dtype) for a in INPUTS["cce_logits"])
    assert_close(TF, unilosses.categorical_cross_entropy_with_logits(
        tf.constant(x), tf.constant(t), reduction="none"),
        tf.nn.softmax_cross_entropy_with_logits(labels=t, logits=x).numpy(), dtype)
    x, y = INPUTS["sparse_logits_axis1"]
    x = np.moveaxis(x, 1, -1).astype(dtype)
    assert_close(TF, unilosses.sparse_categorical_cross_entropy_with_logits(
        tf.constant(x), tf.constant(y), reduction="none"),
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=x).numpy(), dtype)


@pytest.mark.parametrize("path", ["kernel", "composition", "xla"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_in_top_k_matches_tf_math_in_top_k_with_ties(monkeypatch, k, path):
    """Eagerly on float32 unilosses calls tf.math.in_top_k itself; the composition (float64,
    or traced for XLA, where its one fused reduction is faster) must give the same answers.
    (A plain eager call takes the op by a shorter way, tested below; here the generic path.)"""
    from unilosses.backends import _tf_kernels
    from unilosses.backends import tensorflow as tf_backend

    monkeypatch.delitem(tf_backend.PLAIN, "in_top_k")

    p = np.array([[0.5, 0.5, 0.5, 0.1],      # a three-way tie at the top
                  [0.2, 0.9, 0.2, 0.2],      # ties below the leader
                  [0.3, 0.7, 0.7, 0.1],
                  [1.0, 1.0, 1.0, 1.0],      # all equal
                  [0.0, np.inf, 0.0, 1.0],   # non-finite rows: False everywhere
                  [0.0, 0.2, np.nan, 1.0],
                  [0.4, 0.3, 0.2, 0.1]],     # with a label out of range: False
                 np.float32)
    outs = []  # what the kernel gave: None where it declined
    real = _tf_kernels.in_top_k
    monkeypatch.setitem(_tf_kernels.KERNELS, "in_top_k",
                        lambda *a: outs.append(real(*a)) or outs[-1])
    if path == "composition":
        monkeypatch.delitem(_tf_kernels.KERNELS, "in_top_k")
    ours = functools.partial(unilosses.in_top_k, k=k)
    if path == "xla":
        ours = tf.function(ours, jit_compile=True)
    for labels, dtype in (([0, 0, 1, 3, 0, 3, 4], np.int64), ([3, 2, 0, 1, 1, 0, -1], np.int32),
                          ([2, 1, 2, 0, 3, 1, 0], np.int64)):
        y = np.array(labels, dtype)
        got = ours(tf.constant(p), tf.constant(y))
        theirs = tf.math.in_top_k(tf.constant(y), tf.constant(p), k)
        np.testing.assert_array_equal(got.numpy(), theirs.numpy())
    used = [out is not None for out in outs]
    if path == "xla":  # (traced once per label dtype)
        assert used and not any(used)
    else:
        assert used == ([True] * 3 if path == "kernel" else [])


def _keras():  # type: ignore[no-untyped-def]
    if "keras" in sys.modules:
        keras = sys.modules["keras"]
        if keras.backend.backend() != "tensorflow":
            pytest.skip(f"keras was already imported with the {keras.backend.backend()!r} "
                        f"backend; its losses would not take tf.Tensors")
        return keras
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed: no Keras losses to compare with")
    before = os.environ.get("KERAS_BACKEND")
    os.environ["KERAS_BACKEND"] = "tensorflow"  # read once, at import
    try:
        import keras
    finally:
        # keep the variable as it was for subprocesses that other tests start
        if before is None:
            del os.environ["KERAS_BACKEND"]
        else:
            os.environ["KERAS_BACKEND"] = before
    return keras


_CAT_PROBS = (rng.dirichlet(np.ones(5), 4), rng.dirichlet(np.ones(5), 4))


def _keras_cases(keras):  # type: ignore[no-untyped-def]
    """(unilosses call, Keras loss object, inputs as (predictions, targets))."""
    L = keras.losses
    reg, logits, probs = INPUTS["mse"], INPUTS["bce_logits"], INPUTS["bce"]
    # Keras computes focal losses from logits through the (clipped) sigmoid: keep logits
    # moderate so no probability reaches the clip
    moderate = (np.clip(logits[0], -3, 3), logits[1])
    sp = INPUTS["sparse"]
    return {
        "huber": (lambda p, t: unilosses.huber(p, t, delta=0.7), L.Huber(delta=0.7), reg),
        "log_cosh": (unilosses.log_cosh, L.LogCosh(), reg),
        "bce": (unilosses.binary_cross_entropy, L.BinaryCrossentropy(), probs),
        "bce_logits": (unilosses.binary_cross_entropy_with_logits,
                       L.BinaryCrossentropy(from_logits=True), logits),
        "cce": (unilosses.categorical_cross_entropy, L.CategoricalCrossentropy(), _CAT_PROBS),
        "cce_logits_ls": (
            lambda x, t: unilosses.categorical_cross_entropy_with_logits(
                x, t, label_smoothing=0.1),
            L.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
            INPUTS["cce_logits"]),
        "sparse": (unilosses.sparse_categorical_cross_entropy,
                   L.SparseCategoricalCrossentropy(), sp),
        "sparse_logits": (unilosses.sparse_categorical_cross_entropy_with_logits,
                          L.SparseCategoricalCrossentropy(from_logits=True),
                          (INPUTS["cce_logits"][0], sp[1])),
        "focal": (lambda p, t: unilosses.binary_focal_loss(p, t, alpha=0.3, gamma=2.0),
                  L.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.3, gamma=2.0),
                  probs),
        "focal_logits": (
            lambda x, t: unilosses.binary_focal_loss_with_logits(x, t, alpha=0.25, gamma=0.5),
            L.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.25, gamma=0.5,
                                      from_logits=True), moderate),
    }


KERAS_CASES = ("huber", "log_cosh", "bce", "bce_logits", "cce", "cce_logits_ls", "sparse",
               "sparse_logits", "focal", "focal_logits")


@pytest.mark.parametrize("name", KERAS_CASES)
def test_keras_peers(name):
    keras = _keras()
    ours, theirs, (p, t) = _keras_cases(keras)[name]
    # Keras losses compute in floatx (float32).  Keras means over the last axis and then over
    # the rest; with equal row lengths that is our overall mean.
    p = p.astype(np.float32)
    t = t if t.dtype.kind == "i" else t.astype(np.float32)
    expected = theirs(tf.constant(t), tf.constant(p))
    assert_close(TF, ours(tf.constant(p), tf.constant(t)), expected.numpy(), "float32")


# -- gradients against torch and JAX -----------------------------------------------------------
def _other(name):  # type: ignore[no-untyped-def]
    if not installed(name):
        pytest.skip(f"{name} is not installed: nothing to compare TensorFlow's gradient with")
    return Backend(name)


def _args(b, arrays, ints, dtype):  # type: ignore[no-untyped-def]
    return [b.asarray(a) if i in ints else b.asarray(a, dtype) for i, a in enumerate(arrays)]


def _main_cases():  # type: ignore[no-untyped-def]
    out = {}
    for name in DIFFERENTIABLE:
        fn, kw, _, ints, _ = CASES[name]
        out[name] = ((lambda *a, fn=fn, kw=kw: fn(*a, **kw)), INPUTS[name], ints)
    return out


_EXTREME_X = np.array([[-1e4, 1e4, -1e4, 1e4, 0.0], [-30.0, 30.0, 1e4, -1e4, 2.0]])
_EXTREME_T = np.array([[0.0, 1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.3, 0.7, 0.5]])
_EXACT_P = np.array([[0.0, 1.0, 0.0, 1.0, 0.5], [1.0, 0.0, 0.2, 0.9, 1.0]])
_EXACT_T = np.array([[0.0, 1.0, 1.0, 0.0, 1.0], [1.0, 0.0, 0.0, 1.0, 0.0]])


def _extreme_cases():  # type: ignore[no-untyped-def]
    """Logits of +-1e4, zero errors, exact 0/1 probabilities, focal gamma in {0, 0.5, 2}."""
    U = unilosses
    p, t = INPUTS["mse"]
    zero_err = (p, np.where(rng.random(p.shape) > 0.5, p, t))
    onehot = np.eye(5)[[0, 4]]

    def bind(f, **kw):  # type: ignore[no-untyped-def]
        return lambda *a: f(*a, **kw)

    cases = {f"{f.__name__}_zero_error": (f, zero_err, ())
             for f in (U.mse, U.mae, U.huber, U.smooth_l1, U.log_cosh)}
    cases["rmse_all_zero_error"] = (U.rmse, (p, p), ())
    cases["bce_logits_1e4"] = (U.binary_cross_entropy_with_logits, (_EXTREME_X, _EXTREME_T), ())
    cases["bce_exact"] = (U.binary_cross_entropy, (_EXACT_P, _EXACT_T), ())
    cases["cce_logits_1e4"] = (U.categorical_cross_entropy_with_logits, (_EXTREME_X, onehot), ())
    cases["sparse_logits_1e4"] = (U.sparse_categorical_cross_entropy_with_logits,
                                  (_EXTREME_X, np.array([0, 3])), (1,))
    cases["cce_exact"] = (U.categorical_cross_entropy, (_EXACT_P, onehot), ())
    cases["sparse_exact"] = (U.sparse_categorical_cross_entropy, (_EXACT_P, np.array([1, 4])),
                             (1,))
    for g in (0.0, 0.5, 2.0):
        cases[f"focal_logits_1e4_g{g}"] = (bind(U.binary_focal_loss_with_logits, gamma=g),
                                           (_EXTREME_X, _EXTREME_T), ())
        cases[f"focal_exact_g{g}"] = (bind(U.binary_focal_loss, gamma=g),
                                      (_EXACT_P, _EXACT_T), ())
    # the anchor losses share the elementwise focal code; one gamma each covers their masking
    state = np.array([[1, 0]])
    cases["anchor_logits_1e4_g0.5"] = (bind(U.anchor_focal_loss_with_logits, gamma=0.5),
                                       (_EXTREME_X[None], _EXTREME_T[None], state), (2,))
    cases["anchor_exact_g0.0"] = (bind(U.anchor_focal_loss, gamma=0.0),
                                  (_EXACT_P[None], _EXACT_T[None], state), (2,))
    return cases


GRADIENT_GROUPS = {"main": _main_cases(), "extreme": _extreme_cases()}


@functools.cache
def _jax_results(group, dtype):  # type: ignore[no-untyped-def]
    """Every case of ``group`` differentiated by JAX in one jitted program: one compilation
    instead of one per primitive and shape, which would dominate this file's run time."""
    import jax

    jb = Backend("jax")
    cases = GRADIENT_GROUPS[group]
    args = {n: _args(jb, arrays, ints, dtype) for n, (_, arrays, ints) in cases.items()}
    out = jax.jit(lambda a: {n: jax.value_and_grad(cases[n][0])(*a[n]) for n in cases})(args)
    return {n: (np.asarray(v), np.asarray(g)) for n, (v, g) in out.items()}


def _gradients_agree(group, name, dtype, frameworks):  # type: ignore[no-untyped-def]
    fn, arrays, ints = GRADIENT_GROUPS[group][name]
    v_tf, g_tf = TF.value_and_grad(fn, *_args(TF, arrays, ints, dtype))
    assert np.isfinite(v_tf) and np.all(np.isfinite(g_tf))
    assert str(g_tf.dtype) == dtype
    tol = tolerance(dtype)
    for other in frameworks:
        b = _other(other)
        if other == "jax":
            v, g = _jax_results(group, dtype)[name]
        else:
            v, g = b.value_and_grad(fn, *_args(b, arrays, ints, dtype))
        np.testing.assert_allclose(v_tf, v, **tol, err_msg=f"value vs {other}")
        np.testing.assert_allclose(g_tf, g, **tol, err_msg=f"gradient vs {other}")


@pytest.mark.parametrize("name", sorted(GRADIENT_GROUPS["main"]))
def test_gradient_matches_torch_and_jax(name):
    # float64, where all three frameworks agree to a few ulps and differences are real
    _gradients_agree("main", name, "float64", ("torch", "jax"))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(GRADIENT_GROUPS["extreme"]))
def test_extreme_inputs_finite_and_agree(name, dtype):
    # JAX costs one compilation of the whole set per dtype (seconds of CPU): it is compared in
    # float64, and torch (eager, cheap) witnesses float32 too
    _gradients_agree("extreme", name, dtype, ("torch", "jax") if dtype == "float64"
                     else ("torch",))


# -- tf.function, XLA, unknown dimensions ------------------------------------------------------
# The class count must be static where a loss compares labels with it (the sparse losses'
# label check, in_top_k) or divides by it (label smoothing); every other dimension may be None.
_NEEDS_CLASSES = {"in_top_k", "top_k_accuracy", "cce_logits", "sparse", "sparse_logits",
                  "sparse_logits_axis1"}


def _signature(name, args):  # type: ignore[no-untyped-def]
    specs = []
    for a in args:
        dims = [None] * a.shape.rank
        if name in _NEEDS_CLASSES and a.dtype.is_floating:
            axis = CASES[name][1].get("axis", -1)
            dims[axis] = a.shape[axis]
        specs.append(tf.TensorSpec(dims, a.dtype))
    return specs


def _value_and_grad(fn, kw, differentiable):  # type: ignore[no-untyped-def]
    def run(*args):  # type: ignore[no-untyped-def]
        if not differentiable:
            return fn(*args, **kw), tf.zeros(())
        with tf.GradientTape() as tape:
            tape.watch(args[0])
            out = fn(*args, **kw)
        return out, tape.gradient(out, args[0])
    return run


# Per loss: a plain tf.function with static shapes, and XLA with None dimensions (which traces
# the unknown-shape code and compiles every op).  Graph mode with None dimensions, and XLA with
# static shapes, are covered by the broadcast and large-reduction tests below; all four per loss
# would triple this file's run time (tracing a loss and its gradient takes ~0.5 s of CPU).
@pytest.mark.parametrize("mode", ["graph", "xla_none_dims"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_tf_function_matches_eager(name, mode):
    fn, kw = CASES[name][:2]
    args = _tf_args(name, "float32")
    run = _value_and_grad(fn, kw, name not in METRICS)
    v_eager, g_eager = run(*args)
    sig = _signature(name, args) if mode.endswith("none_dims") else None
    compiled = tf.function(run, jit_compile=mode.startswith("xla"), input_signature=sig)
    v, g = compiled(*args)
    if name == "in_top_k":
        np.testing.assert_array_equal(v.numpy(), v_eager.numpy())
        return
    assert_close(TF, v, v_eager.numpy(), "float32")
    assert_close(TF, g, g_eager.numpy(), "float32")


def test_unknown_dims_mask_and_weights_broadcast():
    """Under unknown dimensions, masks and weights are still broadcast to the loss's shape
    before the mean counts them: a (None,) weight and a (None, C) mask that is (1, C) at run
    time against (None, C) predictions, and a (1,) mask against the (None,) loss of a class
    axis."""
    p, t = (a.astype(np.float32) for a in INPUTS["mse"])
    w = rng.uniform(0.5, 2.0, SHAPE[1]).astype(np.float32)
    m = rng.random(SHAPE[1]) > 0.4
    m[0] = True
    expected = unilosses.mse(tf.constant(p), tf.constant(t), weights=tf.constant(w),
                             where=tf.constant(m))
    spec = tf.TensorSpec([None, SHAPE[1]], tf.float32)
    for jit in (False, True):
        f = tf.function(lambda a, b, c, d: unilosses.mse(a, b, weights=c, where=d),
                        jit_compile=jit, input_signature=[
                            spec, spec, tf.TensorSpec([None], tf.float32),
                            tf.TensorSpec([None, SHAPE[1]], tf.bool)])
        out = f(tf.constant(p), tf.constant(t), tf.constant(w), tf.constant(m[None]))
        assert_close(TF, out, expected.numpy(), "float32")
    # with a class axis the loss shape is a slice of the logits' shape; a (1,) mask there
    x, y = INPUTS["sparse_logits"]
    x, y = tf.constant(x.astype(np.float32)), tf.constant(np.where(y < 0, 0, y))
    expected = unilosses.sparse_categorical_cross_entropy_with_logits(x, y)
    for jit in (False, True):
        f = tf.function(
            lambda a, b, d: unilosses.sparse_categorical_cross_entropy_with_logits(a, b, where=d),
            jit_compile=jit, input_signature=[spec, tf.TensorSpec([None], y.dtype),
                                              tf.TensorSpec([None], tf.bool)])
        assert_close(TF, f(x, y, tf.constant([True])), expected.numpy(), "float32")


_CLASS_AXIS = {
    "sparse_ce": lambda x, y, t: unilosses.sparse_categorical_cross_entropy_with_logits(x, y),
    "sparse_ce_smoothed": lambda x, y, t: unilosses.sparse_categorical_cross_entropy_with_logits(
        x, y, label_smoothing=0.1),
    "sparse_ce_ignore_index": lambda x, y, t:
        unilosses.sparse_categorical_cross_entropy_with_logits(x, y, ignore_index=2),
    "sparse_ce_class_weights": lambda x, y, t:
        unilosses.sparse_categorical_cross_entropy_with_logits(
            x, y, label_smoothing=0.1, class_weights=tf.constant([1.0, 2.0, 0.5, 1.0])),
    "sparse_ce_probabilities": lambda x, y, t: unilosses.sparse_categorical_cross_entropy(
        tf.nn.softmax(x), y, weights=tf.ones_like(x[:, 0])),
    "sparse_focal": lambda x, y, t: unilosses.sparse_categorical_focal_loss_with_logits(
        x, y, label_smoothing=0.1),
    "categorical_ce_smoothed": lambda x, y, t: unilosses.categorical_cross_entropy_with_logits(
        x, t, label_smoothing=0.1),
    "categorical_focal": lambda x, y, t: unilosses.categorical_focal_loss_with_logits(
        x, t, label_smoothing=0.1),
    "in_top_k": lambda x, y, t: tf.cast(unilosses.in_top_k(x, y, k=2), tf.float32),
    "top_k_accuracy": lambda x, y, t: unilosses.top_k_accuracy(x, y, k=2),
}


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name", sorted(_CLASS_AXIS))
def test_unknown_class_dimension(name, jit):
    """Traced with the class dimension None too (input_signature [None, None]): the class
    count is read at run time (label range clamp, smoothing's 1/C, in_top_k's range), where
    `classes - 1` with None had failed to trace."""
    x = tf.constant(rng.normal(size=(16, 4)).astype(np.float32))
    y = tf.constant(rng.integers(0, 4, size=16))
    t = tf.one_hot(y, 4)
    fn = _CLASS_AXIS[name]
    f = tf.function(fn, jit_compile=jit, input_signature=[
        tf.TensorSpec([None, None], tf.float32), tf.TensorSpec([None], tf.int64),
        tf.TensorSpec([None, None], tf.float32)])
    assert_close(TF, f(x, y, t), fn(x, y, t).numpy(), "float32")


def test_unknown_class_dimension_clamps_out_of_range_labels():
    """Traced with the class dimension None, the labels cannot be range-checked: one out of
    range is clamped to [0, C - 1] (as the eager path with checks off, and JAX's gather),
    never read out of bounds (mutant: the clamp's upper bound C instead of C - 1, which
    TensorFlow's gather refuses on the CPU)."""
    x = rng.normal(size=(5, 4))
    y = np.array([0, 4, 2, -3, 7])
    f = tf.function(
        lambda a, b: unilosses.sparse_categorical_cross_entropy_with_logits(a, b,
                                                                           reduction="none"),
        input_signature=[tf.TensorSpec([None, None], tf.float64),
                         tf.TensorSpec([None], tf.int64)])
    expected = -_log_softmax(x)[np.arange(5), np.clip(y, 0, 3)]
    assert_close(TF, f(tf.constant(x), tf.constant(y)), expected, "float64")


@pytest.mark.parametrize("loss", [unilosses.dice_loss, unilosses.tversky_loss])
def test_unknown_batch_dimension_with_weights_of_the_overlap_losses(loss):
    # the loss shape (predictions without the summed axes) was built as a tuple holding None,
    # which weights could not be broadcast to
    p = tf.constant(rng.uniform(size=(4, 3)).astype(np.float32))
    t = tf.constant((rng.uniform(size=(4, 3)) < 0.4).astype(np.float32))
    w = tf.constant([1.0, 2.0, 0.5, 1.0])
    m = tf.constant([True, False, True])
    for kw in ({"reduction": "weighted_mean"}, {"where": m}):
        want = loss(p, t, axis=-1, weights=w, **kw)
        for jit in (False, True):
            f = tf.function(lambda a, b, kw=kw: loss(a, b, axis=-1, weights=w, **kw),
                            jit_compile=jit,
                            input_signature=[tf.TensorSpec([None, 3], tf.float32)] * 2)
            assert_close(TF, f(p, t), want.numpy(), "float32")


# -- losses added after this backend: against the NumPy backend ------------------------------
# Their float64 references live in their own tests (which also run on TensorFlow through the
# xp fixture); here they are checked for what is TensorFlow-specific: tf.Tensor/tf.Variable in,
# tf.Tensor out, the NumPy backend's number, and XLA with an unknown batch dimension.
def _boxes():  # type: ignore[no-untyped-def]
    def one():  # type: ignore[no-untyped-def]
        xy = rng.uniform(0, 5, (6, 2))
        return np.concatenate([xy, xy + rng.uniform(0.5, 3, (6, 2))], axis=1)
    return one(), one()


def _onehot(n=4, c=5):  # type: ignore[no-untyped-def]
    return np.eye(c)[rng.integers(0, c, n)]


# name -> (kwargs, input builder, integer-array positions)
LATER = {
    "categorical_focal_loss": ({}, lambda: (rng.dirichlet(np.ones(5), 4), _onehot()), ()),
    "categorical_focal_loss_with_logits": (
        {"gamma": 0.5}, lambda: (rng.normal(size=SHAPE) * 3, rng.dirichlet(np.ones(5), 4)), ()),
    "sparse_categorical_focal_loss": ({}, lambda: (rng.dirichlet(np.ones(5), 4), _labels()),
                                      (1,)),
    "sparse_categorical_focal_loss_with_logits": (
        {}, lambda: (rng.normal(size=SHAPE) * 3, _labels()), (1,)),
    "poly1_cross_entropy_with_logits": ({}, lambda: (rng.normal(size=SHAPE) * 3, _onehot()),
                                        ()),
    "categorical_hinge": ({}, lambda: (rng.normal(size=SHAPE), _onehot()), ()),
    "hinge": ({}, lambda: (rng.normal(size=SHAPE), rng.choice([-1.0, 1.0], SHAPE)), ()),
    "squared_hinge": ({}, lambda: (rng.normal(size=SHAPE), rng.choice([0.0, 1.0], SHAPE)), ()),
    "giou_loss": ({}, _boxes, ()),
    "diou_loss": ({}, _boxes, ()),
    "ciou_loss": ({}, _boxes, ()),
    "cosine_similarity_loss": ({}, lambda: (rng.normal(size=SHAPE), rng.normal(size=SHAPE)),
                               ()),
    "dice_loss": ({"axis": 1}, lambda: (rng.uniform(0, 1, SHAPE),
                                        (rng.random(SHAPE) > 0.5) * 1.0), ()),
    "tversky_loss": ({"alpha": 0.3, "beta": 0.7}, lambda: (rng.uniform(0, 1, SHAPE),
                                                           (rng.random(SHAPE) > 0.5) * 1.0), ()),
    "gaussian_nll": ({}, lambda: (rng.normal(size=SHAPE), rng.normal(size=SHAPE),
                                  rng.uniform(0.5, 2.0, SHAPE)), ()),
    "kl_divergence": ({}, lambda: (_log_softmax(rng.normal(size=SHAPE)),
                                   rng.dirichlet(np.ones(5), 4)), ()),
    "poisson_nll": ({}, lambda: (rng.normal(size=SHAPE), rng.poisson(2.0, SHAPE) * 1.0), ()),
    "mape": ({}, lambda: (rng.normal(size=SHAPE), rng.uniform(0.5, 2, SHAPE)
                          * rng.choice([-1.0, 1.0], SHAPE)), ()),
    "msle": ({}, lambda: (rng.uniform(0, 3, SHAPE), rng.uniform(0, 3, SHAPE)), ()),
    "quantile_loss": ({"quantiles": 0.3}, lambda: (rng.normal(size=SHAPE),
                                                    rng.normal(size=SHAPE)), ()),
}
LATER_INPUTS = {name: case[1]() for name, case in LATER.items()}


@pytest.mark.parametrize("name", sorted(LATER))
def test_later_losses_on_tensorflow(name):
    if not hasattr(unilosses, name):
        pytest.skip(f"unilosses.{name} does not exist in this tree")
    fn = getattr(unilosses, name)
    kw, _, ints = LATER[name]
    arrays = LATER_INPUTS[name]
    expected = fn(*arrays, **kw)  # the NumPy backend, float64
    for make in (tf.constant, tf.Variable):
        out = fn(*[make(a) for a in arrays], **kw)
        assert isinstance(out, tf.Tensor) and not isinstance(out, tf.Variable)
        assert_close(TF, out, np.asarray(expected), "float64", scale=6)
    args = [tf.constant(a if i in ints else a.astype(np.float32)) for i, a in enumerate(arrays)]
    run = _value_and_grad(fn, kw, True)
    v_eager, g_eager = run(*args)
    sig = [tf.TensorSpec([None, *a.shape[1:]], a.dtype) for a in args]
    v, g = tf.function(run, jit_compile=True, input_signature=sig)(*args)
    assert_close(TF, v, v_eager.numpy(), "float32")
    assert_close(TF, g, g_eager.numpy(), "float32")


# -- mixed dtypes and Python values ------------------------------------------------------------
_FLOAT_TARGETS = [n for n in sorted(CASES) if not CASES[n][3] and n != "cce_logits"]


@pytest.mark.parametrize("target_dtype", ["float64", "int32", "int64"])
@pytest.mark.parametrize("name", _FLOAT_TARGETS)
def test_float32_predictions_other_target_dtypes(name, target_dtype):
    fn, kw = CASES[name][:2]
    p, t = INPUTS[name][:2]
    if target_dtype.startswith("int"):
        t = np.round(t)  # hard 0/1 (or integer regression) targets
    out = fn(tf.constant(p.astype(np.float32)), tf.constant(t.astype(target_dtype)), **kw)
    expected = CASES[name][4](p.astype(np.float32).astype(np.float64),
                              t.astype(np.float32).astype(np.float64))
    assert_close(TF, out, expected, "float32", scale=6)


def test_bool_targets_and_masks():
    x, t = (a.astype(np.float32) for a in INPUTS["bce_logits"])
    m = rng.random(SHAPE) > 0.3
    out = unilosses.binary_cross_entropy_with_logits(tf.constant(x), tf.constant(t > 0.5),
                                                     where=tf.constant(m))
    el = -(t * _log_sigmoid(x.astype(np.float64)) + (1 - t) * _log_sigmoid(-x.astype(float)))
    assert_close(TF, out, el[m].mean(), "float32", scale=6)
    # a bool mask broadcast along the rows, and the sparse loss's labels as int32
    x, y = INPUTS["sparse_logits"]
    y = np.where(y < 0, 0, y)
    rows = np.array([True, False, True, True])
    out = unilosses.sparse_categorical_cross_entropy_with_logits(
        tf.constant(x.astype(np.float32)), tf.constant(y.astype(np.int32)),
        where=tf.constant(rows))
    expected = _sparse(x[rows].astype(np.float32).astype(float), y[rows], -1, None, True)
    assert_close(TF, out, expected, "float32", scale=6)


def test_python_scalars_and_lists():
    p, t = (a.astype(np.float32) for a in INPUTS["mse"])
    base = np.mean((p.astype(float) - t) ** 2)
    assert_close(TF, unilosses.mse(tf.constant(p), t.astype(float).tolist()), base, "float32",
                 scale=6)
    assert_close(TF, unilosses.mse(tf.constant(p), tf.constant(t), weights=2.0), 2 * base,
                 "float32", scale=6)
    assert_close(TF, unilosses.mse(tf.constant(p), tf.constant(t), where=True), base,
                 "float32", scale=6)
    x, tt = (a.astype(np.float64) for a in INPUTS["bce_logits"])
    out = unilosses.binary_cross_entropy_with_logits(tf.constant(x), tf.constant(tt),
                                                     pos_weight=2.5)
    assert_close(TF, out, CASES["bce_logits"][4](x, tt), "float64", scale=6)
    # a tensor pos_weight of another dtype, broadcast over the classes
    out = unilosses.binary_cross_entropy_with_logits(tf.constant(x), tf.constant(tt),
                                                     pos_weight=tf.constant([2.5] * 5, tf.float32))
    assert_close(TF, out, CASES["bce_logits"][4](x, tt), "float64", scale=6)
    xa, ta, s = INPUTS["anchor_focal_logits"]
    total = _anchor(xa, ta, s, 0.25, 2.0, True) * max((s == 1).sum(), 1)
    for norm in (3, 3.0, tf.constant(3, tf.int32)):
        out = unilosses.anchor_focal_loss_with_logits(tf.constant(xa), tf.constant(ta),
                                                      tf.constant(s), normalizer=norm)
        assert_close(TF, out, total / 3, "float64", scale=6)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", DIFFERENTIABLE + ["top_k_accuracy"])
def test_half_predictions_compute_in_float32(name, half):
    fn, kw, _, ints, reference = CASES[name]
    args = [tf.constant(a) if i in ints else tf.cast(tf.constant(a, tf.float32), half)
            for i, a in enumerate(INPUTS[name])]
    with tf.GradientTape() as tape:
        tape.watch(args[0])
        out = fn(*args, **kw)
    if name in DIFFERENTIABLE:
        # the gradient comes back in the input's dtype
        assert tape.gradient(out, args[0]).dtype == args[0].dtype
    seen = [a.numpy() if i in ints else tf.cast(a, tf.float64).numpy()
            for i, a in enumerate(args)]
    assert_close(TF, out, reference(*seen), "float32", scale=6)


# -- large float32 reductions ------------------------------------------------------------------
@functools.cache
def _large_inputs():  # type: ignore[no-untyped-def]
    # 16_000_000 + 7 elements: the padding of the staged sum is exercised
    n = 16_000_000 + 7
    p = np.random.default_rng(0).random(n, dtype=np.float32)
    sums = {"sum": p.astype(np.float64).sum(),
            "mse": np.square(p, dtype=np.float32).astype(np.float64).mean()}
    return tf.constant(p), tf.zeros(n, tf.float32), sums


@pytest.mark.slow
@pytest.mark.parametrize("what", ["sum", "mse"])
@pytest.mark.parametrize("mode", ["eager", "xla", "xla_none_dims"])
def test_large_float32_reductions_are_accurate(mode, what):
    """XLA's plain reduce of a 1.6e7-element float32 input is off by ~40 eps here (a serial
    accumulation); the namespace's sum, and a loss's mean through it, must not be."""
    p, t, sums = _large_inputs()

    def f(a, b):  # type: ignore[no-untyped-def]
        return TF.xp.sum(a) if what == "sum" else unilosses.mse(a, b)

    if mode != "eager":
        sig = [tf.TensorSpec([None], tf.float32)] * 2 if mode.endswith("none_dims") else None
        f = tf.function(f, jit_compile=True, input_signature=sig)
    out = float(f(p, t))
    # pairwise summation of positive terms: relative error below eps * log2(n); the final
    # rounding of the mean adds half an eps
    eps = np.finfo(np.float32).eps
    assert abs(out - sums[what]) / sums[what] <= eps * (np.log2(p.shape[0]) + 0.5)


def test_namespace_extras_for_the_closed_forms():
    """expm1, tanh, minimum and copysign (the sign bit of the second argument, -0.0 too) on
    TensorFlow, against NumPy."""
    xp = TF.xp
    a = np.array([1.5, -2.0, 0.0, 3.0, -0.5], np.float32)
    s = np.array([-1.0, 2.0, -0.0, 0.0, -np.inf], np.float32)
    np.testing.assert_array_equal(np.asarray(xp.copysign(tf.constant(a), tf.constant(s))),
                                  np.copysign(a, s))
    assert np.signbit(np.asarray(xp.copysign(tf.constant(a), tf.constant(s)))[2])
    np.testing.assert_allclose(np.asarray(xp.expm1(tf.constant(a))), np.expm1(a), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(xp.tanh(tf.constant(a))), np.tanh(a), rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(xp.minimum(tf.constant(a), 0.5)),
                                  np.minimum(a, 0.5))
    np.testing.assert_array_equal(np.asarray(xp.minimum(0.5, tf.constant(a))),
                                  np.minimum(a, 0.5))


@pytest.mark.parametrize("shape,indices,way", [
    ((4, 5), [[1], [4], [0], [4]], "_watched_pick"),  # a pick, as the losses take it
    ((2, 3, 5), [[[0], [1], [4]], [[4], [0], [3]]], "_watched_pick"),
    ((2, 3, 5), [[[0, 4], [1, 1], [2, 3]], [[4, 4], [0, 0], [3, 1]]],  # repeated indices
     "_watched_gather"),
])
def test_eager_take_along_axis_gradient_under_a_tape(monkeypatch, shape, indices, way):
    """Eagerly, under a tape, the gather's gradient is a select of the picked entries (one
    index per row, on small inputs: a masked select and a row sum, ``_watched_pick``;
    otherwise ``_watched_gather``): the same as TensorFlow's scatter, for a cotangent with
    inf and NaN and a NaN among the entries not picked (the others stay 0), repeated indices
    (summed), and differentiated again."""
    from unilosses.backends import tensorflow as tf_backend
    taken = []
    real = getattr(tf_backend, way)
    monkeypatch.setattr(tf_backend, way, lambda *a: taken.append(1) or real(*a))
    ad = unilosses.backends.adapter_named("tensorflow")
    v = rng.standard_normal(shape)
    v[(0,) * (len(shape) - 1) + (2,)] = np.nan  # (not picked in any case)
    x = tf.constant(v)
    i = tf.constant(indices, dtype=tf.int64)
    w = rng.standard_normal(np.shape(indices))
    w.flat[0], w.flat[1] = np.inf, np.nan
    with tf.GradientTape(persistent=True) as outer:
        outer.watch(x)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            a = ad.take_along_axis(x, i, -1)
            b = tf.gather(x, i, axis=-1, batch_dims=len(shape) - 1)
            la, lb = tf.reduce_sum(a * a * w), tf.reduce_sum(b * b * w)
        ga, gb = tape.gradient(la, x), tape.gradient(lb, x)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    np.testing.assert_array_equal(np.asarray(ga), np.asarray(gb))
    sa, sb = outer.gradient(tf.reduce_sum(ga[..., 2:]), x), outer.gradient(
        tf.reduce_sum(gb[..., 2:]), x)
    np.testing.assert_array_equal(np.asarray(sa), np.asarray(sb))
    # outside any tape: the plain gather
    assert np.array_equal(np.asarray(ad.take_along_axis(x, i, -1)), np.asarray(b))
    assert taken == [1]


def _spy_plain(monkeypatch, name):  # type: ignore[no-untyped-def]
    """Record, per call of the TensorFlow plain kernel ``name``, whether it served the call
    (True) or declined (False); the adapter loaded first (its first call is generic)."""
    from unilosses.backends import tensorflow as tf_backend
    served = []
    real = tf_backend.PLAIN[name]

    def spy(*a, **kw):  # type: ignore[no-untyped-def]
        out = real(*a, **kw)
        served.append(out is not None)
        return out

    monkeypatch.setitem(tf_backend.PLAIN, name, spy)
    unilosses.mse(tf.zeros(1), tf.zeros(1))
    return served


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_eager_cross_entropy_matches_the_generic_path(monkeypatch, reduction, dtype):
    """A plain eager call of cross-entropy with logits (2-D, CPU) goes straight to the clip and
    the fused op (``tensorflow.PLAIN``): the generic path's values and gradients, at +-inf and
    +-1e4, for int32/int64 labels and smoothed soft targets; anything else declines to the
    generic path, which refuses bad arguments with unilosses's errors."""
    from unilosses.backends import tensorflow as tf_backend
    served = _spy_plain(monkeypatch, "cross_entropy_with_logits")
    x = 3.0 * rng.standard_normal((4, 5)).astype(dtype)
    x[0, :3] = [np.inf, -np.inf, 1e4]
    x = tf.constant(x)
    soft = tf.constant(rng.dirichlet(np.ones(5), 4).astype(dtype))
    sparse = unilosses.sparse_categorical_cross_entropy_with_logits
    dense = unilosses.categorical_cross_entropy_with_logits
    cases = [(sparse, tf.constant([0, 2, 4, 1]), {}),
             (sparse, tf.constant([1, 1, 0, 3], dtype=tf.int64), {}),
             (dense, soft, {"label_smoothing": 0.1})]

    def value_and_grad(f, t, kw):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            tape.watch(x)
            v = f(x, t, reduction=reduction, **kw)
        return v, tape.gradient(v, x), f(x, t, reduction=reduction, **kw)

    for f, t, kw in cases:
        v1, g1, w1 = value_and_grad(f, t, kw)
        assert served[-2:] == [True, True]
        with monkeypatch.context() as m:
            m.delitem(tf_backend.PLAIN, "cross_entropy_with_logits")
            v2, g2, w2 = value_and_grad(f, t, kw)
        for a, b in ((v1, v2), (w1, w2), (g1, g2)):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tolerance(dtype)["rtol"])
        assert np.isfinite(np.asarray(g1)).all()
    served.clear()
    declined = [lambda: sparse(tf.reshape(x, (2, 2, 5)), tf.constant([[0, 1], [2, 3]])),
                lambda: sparse(tf.transpose(x), tf.constant([0, 2, 4, 1]), axis=0),
                lambda: sparse(tf.cast(x, tf.float16), tf.constant([0, 2, 4, 1])),
                lambda: dense(x, tf.cast(soft, tf.float16 if dtype == np.float32 else tf.float32)),
                lambda: sparse(x, tf.constant([0, 2, 4, 1]), label_smoothing=0.1),
                lambda: sparse(x, tf.constant([0, 2, 4, 1]), weights=tf.ones(4, x.dtype))]
    for call in declined:
        call()
    assert not any(served)
    for call, match in [
            (lambda: sparse(x, tf.constant([0, 5, 4, 1])), "labels"),
            (lambda: sparse(x, tf.constant([0, 2, 4])), "shape"),
            (lambda: dense(x, soft, label_smoothing=1.5), "label_smoothing"),
            (lambda: dense(x, soft, reduction="avg"), "reduction")]:
        with pytest.raises(ValueError, match=match):
            call()


def test_eager_where_equals_tf_where_in_value_and_gradients(monkeypatch):
    """Eagerly on small inputs the namespace's ``where`` is the op ``Select`` where every
    argument has the condition's shape (Python numbers made constants of it): tf.where's
    values and first and second derivatives, with inf and NaN in the branch not taken, and
    tf.where itself for broadcasting arguments."""
    from unilosses.backends import tensorflow as tf_backend
    selects = []
    real = tf_backend._SELECT
    monkeypatch.setattr(tf_backend, "_SELECT", lambda **kw: selects.append(1) or real(**kw))
    xp = unilosses.backends.adapter_named("tensorflow").xp
    a = rng.standard_normal((3, 4))
    a[0, 0], a[1, 1] = np.inf, np.nan
    b = rng.standard_normal((3, 4))
    x, y = tf.constant(a), tf.constant(b)
    c = tf.constant(rng.random((3, 4)) > 0.5)
    cases = [((c, x, y), 1), ((c, x, 2.5), 1), ((c, 0, y), 1), ((c[0, 0], x[0, 0], -1.0), 1),
             ((c[0], x, y), 0), ((c, x, y[0]), 0), ((c, x, tf.constant(1.0, tf.float64)), 0)]
    for args, took in cases:
        selects.clear()
        with tf.GradientTape(persistent=True) as outer:
            outer.watch([x, y])
            with tf.GradientTape(persistent=True) as tape:
                tape.watch([x, y])
                ours = xp.where(*args)
                theirs = tf.where(*args)
                lo, lt = (tf.reduce_sum(v * v * v) for v in (ours, theirs))
            go, gt = tape.gradient(lo, [x, y]), tape.gradient(lt, [x, y])
            so, st = (sum((tf.reduce_sum(g) for g in gs if g is not None), tf.zeros([], tf.float64))
                      for gs in (go, gt))
        assert len(selects) == took
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
        for u, v in list(zip(go, gt)) + list(zip(outer.gradient(so, [x, y]),
                                                 outer.gradient(st, [x, y]))):
            assert (u is None) == (v is None)
            if u is not None:
                np.testing.assert_array_equal(np.asarray(u), np.asarray(v))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "weighted_mean"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_plain_eager_bce_with_logits_matches_the_generic_path(monkeypatch, reduction, dtype):
    """Outside a tape, a plain eager BCE with logits (CPU, below 2^16 elements, any rank) is the
    generic path's formula as the ops themselves after the clip (``tensorflow.PLAIN``): the
    generic path's values and the float64 reference's at +-inf, +-1e4, 0 and soft and hard
    targets.  Under a tape, with smoothing or mixed dtypes it declines to the generic path,
    which refuses bad arguments with unilosses's errors."""
    import reference as ref
    from unilosses.backends import tensorflow as tf_backend
    name = "binary_cross_entropy_with_logits"
    served = _spy_plain(monkeypatch, name)
    x = (3.0 * rng.standard_normal((4, 5))).astype(dtype)
    x[0] = [np.inf, -np.inf, 1e4, -1e4, 0.0]
    t = rng.random((4, 5)).astype(dtype)
    t[1] = t[1] > 0.5
    f = unilosses.binary_cross_entropy_with_logits
    bound = np.finfo(dtype).max / 4
    expected = ref.reduce(ref.bce_logits(np.clip(x, -bound, bound), t)[0],
                          "mean" if reduction == "weighted_mean" else reduction)
    for shape in ((4, 5), (20,), (2, 2, 5)):
        xs, ts = tf.reshape(tf.constant(x), shape), tf.reshape(tf.constant(t), shape)
        got = f(xs, ts, reduction=reduction)
        assert served[-1]
        with monkeypatch.context() as m:
            m.delitem(tf_backend.PLAIN, name)
            want = f(xs, ts, reduction=reduction)
        assert got.dtype == want.dtype == xs.dtype and got.shape == want.shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), **tolerance(dtype))
        np.testing.assert_allclose(np.asarray(got).reshape(np.shape(expected)), expected,
                                   **tolerance(dtype))
    served.clear()
    xt, tt = tf.constant(x), tf.constant(t)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        f(xt, tt, reduction=reduction)
    declined = [lambda: f(xt, tt, label_smoothing=0.1, reduction=reduction),
                lambda: f(xt, tf.cast(tt, tf.float16), reduction=reduction),
                lambda: f(xt, tt, pos_weight=2.0, reduction=reduction)]
    for call in declined:
        call()
    assert not any(served)
    for call, match in [(lambda: f(xt, tt[:3], reduction=reduction), "shape"),
                        (lambda: f(xt, tt, reduction="avg"), "reduction"),
                        (lambda: f(xt, tt, label_smoothing=1.5), "label_smoothing")]:
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize("label_dtype", [tf.int32, tf.int64])
def test_plain_eager_in_top_k_matches_the_reference(monkeypatch, label_dtype):
    """A plain eager in_top_k (float32 scores, CPU) is InTopKV2 itself (``tensorflow.PLAIN``):
    the float64 reference's answers, and the composition's, with ties straddling the k-th
    place, NaN and +-inf in a row, and labels out of range; anything else declines to the
    generic path, which refuses bad arguments with unilosses's errors."""
    import reference as ref
    from unilosses.backends import tensorflow as tf_backend
    served = _spy_plain(monkeypatch, "in_top_k")
    s = rng.integers(0, 4, (40, 6)).astype(np.float32)  # many ties
    s[1, 2], s[2, 0], s[3, 5] = np.nan, np.inf, -np.inf
    y = rng.integers(0, 6, 40)
    y[1:4] = [0, 1, 5]
    y[4], y[5] = -1, 6
    scores, labels = tf.constant(s), tf.constant(y, dtype=label_dtype)
    for k in (1, 2, 5, 6):
        got = unilosses.in_top_k(scores, labels, k=k)
        assert served[-1] and got.dtype == tf.bool and got.shape == (40,)
        np.testing.assert_array_equal(np.asarray(got), ref.in_top_k(s, y, k))
        with monkeypatch.context() as m:
            m.delitem(tf_backend.PLAIN, "in_top_k")
            m.delitem(tf_backend._tf_kernels.KERNELS, "in_top_k")
            composed = unilosses.in_top_k(scores, labels, k=k)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(composed))
    served.clear()
    declined = [lambda: unilosses.in_top_k(tf.cast(scores, tf.float64), labels, k=2),
                lambda: unilosses.in_top_k(scores, labels, k=np.int64(2)),
                lambda: unilosses.in_top_k(scores, tf.cast(labels, tf.uint8), k=2)]
    for call in declined:
        np.testing.assert_array_equal(np.asarray(call()), ref.in_top_k(s, y, 2))
    assert not any(served)
    with pytest.raises(TypeError, match="two frameworks"):
        unilosses.in_top_k(s, labels, k=2)
    for call, match in [
            (lambda: unilosses.in_top_k(scores, labels, k=0), "k"),
            (lambda: unilosses.in_top_k(scores, labels[:39], k=1), "shape"),
            (lambda: unilosses.in_top_k(tf.reshape(scores, (40, 2, 3)), labels, k=1), "shape"),
            (lambda: unilosses.in_top_k(scores, labels, k=2**24 + 1), "k")]:
        with pytest.raises(ValueError, match=match):
            call()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adapter_log1p_under_xla_is_compensated_to_log1ps_precision(dtype):
    """Under XLA the adapter's log1p is log(u) - ((u - 1) - x) / u with u = 1 + x (faster
    there than XLA's log1p); on the callers' range (-1, 1e30] its value keeps log1p's
    precision, and its first and second derivatives are log1p's, 1/(1+x) and -1/(1+x)^2.
    Eagerly and in a plain graph it is tf.math.log1p."""
    ad = TF.ad
    eps = np.finfo(dtype).eps
    tiny = -30 if dtype == np.float32 else -300
    x = np.concatenate([-np.logspace(tiny, 0, 4001)[:-1], np.logspace(tiny, 30, 4001),
                        np.random.default_rng(0).uniform(-1, 1, 4000),
                        -1 + eps * np.arange(1, 50), [0.0, -0.5, 1.0, 2.0]]).astype(dtype)
    x = x[x > -1]

    def run(a):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as outer:
            outer.watch(a)
            with tf.GradientTape() as inner:
                inner.watch(a)
                y = ad.log1p(a)
            d1 = inner.gradient(y, a)
        return y, d1, outer.gradient(d1, a)

    xt = tf.constant(x)
    y, d1, d2 = (np.asarray(v, np.longdouble) for v in tf.function(run, jit_compile=True)(xt))
    exact = np.longdouble(x)
    ref = np.log1p(exact)
    assert np.all(np.abs(y - ref) <= 1.5 * eps * np.abs(ref))
    r1 = 1 / (1 + exact)
    assert np.all(np.abs(d1 - r1) <= eps * r1)
    r2 = -r1 * r1
    normal = np.abs(r2) >= np.finfo(dtype).tiny  # (below, it underflows: 0 is exact enough)
    assert np.all(np.abs(d2 - r2)[normal] <= 2 * eps * np.abs(r2)[normal])

    def ops(jit):  # type: ignore[no-untyped-def]
        graph = tf.function(ad.log1p, jit_compile=jit).get_concrete_function(xt).graph
        return {op.type for op in graph.get_operations()}

    assert "Log1p" not in ops(True) and "Log" in ops(True)
    assert "Log1p" in ops(False)
    np.testing.assert_array_equal(np.asarray(ad.log1p(xt)), np.asarray(tf.math.log1p(xt)))


@pytest.mark.parametrize("shape, folds, sums", [
    (((1 << 15) + 1,), 0, 2), ((1_000_003,), 0, 2), ((1 << 20,), 8, 1), ((1_000_000,), 6, 1),
    ((1000, 1000), 0, 2), ((1, 50_000, 20), 0, 2), ((50_000, 4), 4, 1),
    ((1, 52_631, 19), 0, 3), ((250, 4001), 0, 2)])
@pytest.mark.parametrize("known", [True, False])
def test_folded_sum_under_jit(shape, folds, sums, known):
    """The traced float32 sum (folded in half up to 8 times, the rest reduced): every element
    counted once, to a few eps, whether the size is a multiple of 256 (8 folds), or the
    count of rows of the last axis halves fewer times into short rows (no remainder), or
    neither: 256 rows or more of at most 2**14 elements are summed first and their sums
    folded (1000 x 1000: 1000 sums, folded 3 times; 52631 sums: 8 times and a remainder),
    fewer (250 x 4001) take 8 folds of the largest multiple of 256, the remainder summed
    apart; known or not (then padded: one sum)."""
    from unilosses.backends.tensorflow import _folded_sum, _folds

    n = int(np.prod(shape))
    row = shape[-1] if len(shape) >= 2 else 1
    assert (8 if n % 256 == 0 else _folds(n // row, row)) == folds
    x = np.random.default_rng(n).uniform(0.5, 1.5, shape).astype(np.float32)
    spec = [tf.TensorSpec(shape if known else [None] * len(shape), tf.float32)]
    f = tf.function(_folded_sum, jit_compile=known, input_signature=spec)
    ops = [op.type for op in f.get_concrete_function().graph.get_operations()]
    # the row sums' reduction, and a remainder's, are apart from the folded sum
    assert ops.count("Sum") == (sums if known else 1)
    got = float(f(tf.constant(x)))
    exact = float(np.sum(x.astype(np.float64)))
    assert abs(got - exact) <= 8 * np.finfo(np.float32).eps * exact


@pytest.mark.parametrize("jit", [True, False])
def test_large_sums_are_folded_only_under_xla(jit):
    """XLA sums float32 almost serially, so its large sums are folded; TensorFlow's own kernels
    (eagerly, or in a plain tf.function) sum pairwise, and there each fold would be an op
    writing its half out."""
    x = tf.constant(np.random.default_rng(0).uniform(0.5, 1.5, 1 << 16).astype(np.float32))
    f = tf.function(lambda a: unilosses.mse(a, tf.zeros_like(a), reduction="sum"),
                    jit_compile=jit)
    ops = [op.type for op in f.get_concrete_function(x).graph.get_operations()]
    assert ("Split" in ops) == jit
    exact = float(np.sum(np.asarray(x, np.float64) ** 2))
    assert abs(float(f(x)) - exact) <= 4 * np.finfo(np.float32).eps * exact


def test_autograph_converts_every_function_without_falling_back():
    """Inside a user's tf.function AutoGraph converts what it calls, unilosses included; a
    construct it cannot convert (for/else, say) makes it warn on every trace and run the
    function as-is.  Every function of the modules a TensorFlow call goes through converts."""
    import importlib
    import inspect
    import pkgutil

    import unilosses._core
    import unilosses.losses

    names = ["unilosses.ops", "unilosses.backends._base", "unilosses.backends.tensorflow",
             "unilosses.backends._tf_kernels"]
    for pkg in (unilosses._core, unilosses.losses):
        names += [f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)]
    failed, count = [], 0
    for name in names:
        module = importlib.import_module(name)
        for obj in vars(module).values():
            if getattr(obj, "__module__", None) != name:
                continue
            if inspect.isfunction(obj):
                functions = [obj]
            elif inspect.isclass(obj):
                functions = [f for f in vars(obj).values() if inspect.isfunction(f)]
            else:
                continue
            for f in functions:
                count += 1
                try:
                    tf.autograph.to_code(f)
                except Exception as e:  # noqa: BLE001 - any conversion error is the finding
                    failed.append(f"{name}.{f.__qualname__}: {str(e).splitlines()[0]}")
    assert count > 150 and not failed, failed


_EMPTY_EXTRA = {
    "kl_divergence": (unilosses.kl_divergence, (5,)),
    "cosine_similarity_loss": (unilosses.cosine_similarity_loss, (5,)),
    "categorical_hinge": (unilosses.categorical_hinge, (5,)),
    "dice_loss": (lambda p, t: unilosses.dice_loss(p, t, axis=1), (5,)),
    "giou_loss": (unilosses.giou_loss, (4,)),
    "quantile_loss": (unilosses.quantile_loss, (5,)),
    "mape": (unilosses.mape, (5,)),
}


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_empty_batch_of_unknown_size_is_zero(jit):
    """Traced with the batch dimension None, an empty batch's mean is 0 as eagerly (the mean
    of nothing), not 0/0: the count, unknown when traced, is read at run time."""
    for name in sorted(CASES):
        fn, kw = CASES[name][:2]
        args = [a[:0] for a in _tf_args(name, "float32")]
        run = _value_and_grad(fn, kw, name not in METRICS)
        v_eager, _ = run(*args)
        v, g = tf.function(run, jit_compile=jit, input_signature=_signature(name, args))(*args)
        np.testing.assert_array_equal(v.numpy(), v_eager.numpy(), err_msg=name)
        if name not in ("in_top_k",):
            assert v.numpy() == 0.0, name
        assert np.all(np.isfinite(g.numpy())), name
    for name, (fn, tail) in sorted(_EMPTY_EXTRA.items()):
        p = tf.zeros((0, *tail))
        spec = tf.TensorSpec([None, *tail], tf.float32)
        out = tf.function(fn, jit_compile=jit, input_signature=[spec, spec])(p, p)
        assert out.numpy() == 0.0 == fn(p, p).numpy(), name


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_captured_eager_targets_and_mask_in_two_traced_functions(jit):
    """A traced loss whose targets and mask are eager tensors closed over (captured) may take
    the eager small-input select; its filled constant must be the graph's own, not kept for
    the next graph (the second tf.function raised "Fill:0 is out of scope")."""
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(8, 5)).astype("float32"))
    t = tf.constant(rng.normal(size=(8, 5)).astype("float32"))
    m = tf.constant(rng.random((8, 5)) < 0.7)
    got = [tf.function(lambda a: unilosses.log_cosh(a, t, where=m), jit_compile=jit)(x)
           for _ in range(2)]  # (traced first: an eager call would have kept an eager fill)
    want = unilosses.log_cosh(x, t, where=m).numpy()
    for v in got:
        np.testing.assert_allclose(v.numpy(), want, **tolerance("float32"))


_MISMATCHED = {  # name -> (loss, predictions' shape, the other array's shape, its dtype)
    "mse": (unilosses.mse, (4, 1), (4, 3), tf.float32),
    "mse_transposed": (unilosses.mse, (1, 3), (3, 1), tf.float32),
    "mse_vector": (unilosses.mse, (1,), (5,), tf.float32),
    "bce_logits": (unilosses.binary_cross_entropy_with_logits, (4, 3), (4, 1), tf.float32),
    "categorical_ce": (unilosses.categorical_cross_entropy_with_logits, (4, 1), (4, 3),
                       tf.float32),
    "dice": (unilosses.dice_loss, (1, 3), (4, 3), tf.float32),
    "sparse_ce": (unilosses.sparse_categorical_cross_entropy_with_logits, (1, 3), (4,),
                  tf.int64),
    "sparse_ce_labels_of_one": (unilosses.sparse_categorical_cross_entropy_with_logits,
                                (4, 3), (1,), tf.int64),
    "in_top_k": (lambda x, y: unilosses.in_top_k(x, y, k=2), (4, 3), (1,), tf.int64),
}


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name", sorted(_MISMATCHED))
def test_shapes_unknown_when_traced_are_checked_at_run_time(name, jit):
    """Traced with None dimensions the shapes cannot be compared when tracing; arrays whose
    shapes differ at run time are refused then, not broadcast: mse of a (4, 1) against a
    (4, 3), traced [None, None], gave the mean of a (4, 3) loss (0.2176 on random inputs),
    and reduction="none" that (4, 3) array."""
    fn, pshape, tshape, dtype = _MISMATCHED[name]
    p = tf.constant(rng.uniform(0.1, 0.9, pshape).astype(np.float32))
    t = (tf.constant(rng.integers(0, pshape[-1], tshape)) if dtype == tf.int64
         else tf.constant(rng.uniform(0.1, 0.9, tshape).astype(np.float32)))
    f = tf.function(fn, jit_compile=jit, input_signature=[
        tf.TensorSpec([None] * len(pshape), tf.float32),
        tf.TensorSpec([None] * len(tshape), dtype)])
    with pytest.raises(tf.errors.InvalidArgumentError) as info:
        f(p, t)
    if not jit:  # (XLA compiles Assert to nothing: its own error names the shapes)
        assert "must have the same shape" in str(info.value)
    # the same function on matching shapes: the eager value
    t_ok = (tf.constant(rng.integers(0, pshape[-1], pshape[:-1])) if dtype == tf.int64
            else tf.constant(rng.uniform(0.1, 0.9, pshape).astype(np.float32)))
    want = fn(p, t_ok)
    np.testing.assert_allclose(f(p, t_ok).numpy(), want.numpy(), rtol=1e-6)


def _per_class(name):  # type: ignore[no-untyped-def]
    v = tf.constant([0.2, 0.5, 0.8])
    return {
        "alpha": lambda x, t: unilosses.binary_focal_loss_with_logits(x, t, alpha=v),
        "pos_weight": lambda x, t: unilosses.binary_cross_entropy_with_logits(
            x, t, pos_weight=v),
        "variance": lambda x, t: unilosses.gaussian_nll(x, t, v),
        "weights": lambda x, t: unilosses.mse(x, t, weights=v),
        "class_weights": lambda x, t: unilosses.categorical_cross_entropy_with_logits(
            x, t, class_weights=v),
        "categorical_alpha": lambda x, t: unilosses.categorical_focal_loss_with_logits(
            x, t, alpha=v),
    }[name]


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("name", ["alpha", "pos_weight", "variance", "weights",
                                  "class_weights", "categorical_alpha"])
def test_per_class_options_are_checked_at_run_time(name, jit):
    """A (3,) per-class option against logits traced [None, None] that are (4, 1) or (4, 5)
    at run time is refused, as eagerly: binary_focal_loss_with_logits(alpha=(3,)) returned
    0.3509 on (4, 1) logits of 1 and targets of 0 (a (4, 3) loss), where the eager call
    raises "`alpha` has shape (3,), which does not broadcast to the logits of shape (4, 1)"."""
    fn = _per_class(name)
    f = tf.function(fn, jit_compile=jit,
                    input_signature=[tf.TensorSpec([None, None], tf.float32)] * 2)
    for shape in ((4, 1), (4, 5)):
        x, t = tf.ones(shape), tf.fill(shape, 0.5)
        with pytest.raises(ValueError):
            fn(x, t)
        with pytest.raises(tf.errors.InvalidArgumentError) as info:
            f(x, t)
        if not jit:
            assert f"`{name.replace('categorical_', '')}`" in str(info.value)
    x = tf.constant(rng.normal(size=(4, 3)).astype(np.float32))
    t = tf.constant(rng.dirichlet(np.ones(3), 4).astype(np.float32))
    np.testing.assert_allclose(f(x, t).numpy(), fn(x, t).numpy(), rtol=1e-6)
