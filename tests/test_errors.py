"""Bad input gets a clear error naming the argument and the fix, on every backend."""

from __future__ import annotations

import numpy as np
import pytest

import unilosses

P = np.linspace(0.1, 0.9, 6).reshape(3, 2)


def test_shape_mismatch_no_silent_broadcast(xp):
    with pytest.raises(ValueError, match=r"`targets` has shape \(3, 1\).*must match exactly"):
        unilosses.mse(xp.asarray(P), xp.asarray(np.zeros((3, 1))))
    with pytest.raises(ValueError, match="must match exactly"):
        unilosses.mse(xp.asarray(np.zeros((4, 1))), xp.asarray(np.zeros(4)))


def test_weights_and_where_must_broadcast_to_loss(xp):
    with pytest.raises(ValueError, match=r"`weights` has shape \(3,\), which does not broadcast"):
        unilosses.mae(xp.asarray(P), xp.asarray(P), weights=xp.asarray(np.ones(3)))
    with pytest.raises(ValueError, match="`where`"):
        unilosses.mae(xp.asarray(P), xp.asarray(P), where=xp.asarray(np.ones((2, 3), bool)))
    with pytest.raises(TypeError, match="`where` must be a boolean mask"):
        unilosses.mae(xp.asarray(P), xp.asarray(P), where=xp.asarray(np.ones((3, 2))))


def test_non_floating_predictions(xp):
    with pytest.raises(TypeError, match="`predictions` must be a real floating array"):
        unilosses.mse(xp.asarray(np.arange(4)), xp.asarray(np.arange(4)))
    with pytest.raises(TypeError, match="`logits` must be a real floating array"):
        unilosses.binary_cross_entropy_with_logits(xp.asarray(np.arange(4)),
                                                   xp.asarray(np.zeros(4)))



@pytest.mark.parametrize("fn", [unilosses.binary_cross_entropy, unilosses.mse,
                                unilosses.categorical_cross_entropy])
def test_keras_argument_order_is_named(xp, fn):
    # keras.losses take (y_true, y_pred): integer labels first and float predictions second
    # got only "Cast it first", which would compute the loss of the labels
    y_true = xp.asarray(np.array([[0, 1], [1, 0]]), "int64")
    y_pred = xp.asarray(np.array([[0.2, 0.8], [0.6, 0.4]]), "float32")
    with pytest.raises(TypeError, match=r"`predictions` must be a real floating array, got "
                                        r"dtype .*int64.*Cast it first, .*\. If `targets` "
                                        r"holds the predictions: unilosses takes predictions "
                                        r"first, then targets \(keras\.losses take y_true "
                                        r"first\)\.$"):
        fn(y_true, y_pred)
    with pytest.raises(TypeError, match=r"Cast it first, .*\)\.$"):  # no floats to swap with
        fn(y_true, y_true)


@pytest.mark.parametrize("reduction", ["avg", "batchmean", None, "MEAN"])
def test_unknown_reduction(xp, reduction):
    with pytest.raises(ValueError, match="reduction=.* is not supported; use one of"):
        unilosses.mse(xp.asarray(P), xp.asarray(P), reduction=reduction)


@pytest.mark.parametrize("call, match", [
    (lambda a: unilosses.huber(a, a, delta=0), "`delta` must be > 0"),
    (lambda a: unilosses.huber(a, a, delta=-1.0), "`delta` must be > 0"),
    (lambda a: unilosses.huber(a, a, delta=float("nan")), "`delta` must be finite"),
    (lambda a: unilosses.smooth_l1(a, a, beta=0.0), "`beta` must be > 0"),
    (lambda a: unilosses.binary_focal_loss(a, a, gamma=-0.5), "`gamma` must be >= 0"),
    (lambda a: unilosses.binary_focal_loss_with_logits(a, a, alpha=1.5), "`alpha` must lie"),
    (lambda a: unilosses.categorical_cross_entropy(a, a, label_smoothing=1.5),
     "`label_smoothing` must lie in"),
    (lambda a: unilosses.categorical_cross_entropy_with_logits(a, a, label_smoothing=-0.1),
     "`label_smoothing` must lie in"),
    (lambda a: unilosses.categorical_cross_entropy_with_logits(a, a, axis=2), "`axis`=2"),
])
def test_bad_hyperparameters(xp, call, match):
    with pytest.raises(ValueError, match=match):
        call(xp.asarray(P))


def test_traced_hyperparameter_says_how_to_pass_it():
    jax = pytest.importorskip("jax")
    x = np.zeros(3)
    f = jax.jit(lambda a, s: unilosses.binary_cross_entropy_with_logits(a, a,
                                                                        label_smoothing=s))
    with pytest.raises(TypeError, match="`label_smoothing` must be a Python number.*static"):
        f(x, 0.1)


def test_k(xp):
    y = xp.asarray(np.array([0, 1, 1]))
    with pytest.raises(ValueError, match="`k` must be >= 1"):
        unilosses.in_top_k(xp.asarray(P), y, k=0)
    with pytest.raises(TypeError, match="`k` must be an integer"):
        unilosses.in_top_k(xp.asarray(P), y, k=1.5)
    # ranks are counted in the predictions' dtype, exactly up to 2^24 in float32
    with pytest.raises(ValueError, match="`k`=16777217 is above 16777216.*float64"):
        unilosses.in_top_k(xp.asarray(P, "float32"), y, k=2**24 + 1)
    assert xp.to_numpy(unilosses.in_top_k(xp.asarray(P, "float32"), y, k=2**24)).all()


@pytest.mark.parametrize("fn,option,kind", [
    ("in_top_k", "k", "an integer"), ("top_k_accuracy", "k", "an integer"),
    ("huber", "delta", "a Python number"), ("smooth_l1", "beta", "a Python number"),
    ("binary_cross_entropy_with_logits", "label_smoothing", "a Python number"),
    ("sparse_categorical_cross_entropy_with_logits", "label_smoothing", "a Python number"),
    ("binary_focal_loss_with_logits", "gamma", "a Python number"),
    ("binary_focal_loss_with_logits", "alpha", "a number in"),
    ("quantile_loss", "quantiles", "a number in"), ("dice_loss", "smooth", "a Python number"),
])
@pytest.mark.parametrize("boolean", [True, np.True_, np.array([True, False, True])])
def test_a_boolean_option_is_refused_not_taken_as_1(xp, fn, option, kind, boolean):
    # float(True) and int(True) are 1: k=True was top-1, alpha=True silently gave 0
    x = xp.asarray(np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]], np.float32))
    labels = xp.asarray(np.array([0, 2], np.int64))
    top_k = fn in ("in_top_k", "top_k_accuracy")
    second = labels if top_k or fn.startswith("sparse") else x
    f = getattr(unilosses, fn)
    f(x, second, **({"k": 1} if top_k else {}))  # (plain paths are tried from a 2nd call)
    for _ in range(2):
        with pytest.raises(TypeError, match=f"`{option}` must be {kind}.*got the boolean"):
            f(x, second, **{option: boolean})


@pytest.mark.parametrize("axis,error,match", [
    (2, ValueError, r"`axis`=2 is out of range for predictions with 2 dimension"),
    (-3, ValueError, r"`axis`=-3 is out of range"),
    (True, TypeError, r"`axis` must be None, an int or a tuple of ints, got True"),
    ((0, 0), ValueError, r"`axis`=\(0, 0\) repeats an axis"),
    ((0, 1.0), TypeError, r"`axis` must be None, an int or a tuple of ints"),
])
def test_rmse_axis_is_checked(xp, axis, error, match):
    # it went to the reduction unchecked: a bare IndexError, each backend's own error for a
    # repeated axis, and axis=True taken as axis 1 by JAX and TensorFlow
    with pytest.raises(error, match=match):
        unilosses.rmse(xp.asarray(P), xp.asarray(P), axis=axis)


@pytest.mark.parametrize("option", ["weights", "where", "targets"])
def test_a_string_for_an_array_argument_is_named(xp, option):
    # torch and JAX had raised their own conversion errors, naming nothing
    kw = {"targets": xp.asarray(P)}
    kw[option] = "abc"
    with pytest.raises(TypeError, match=f"`{option}` must be an array .*got str"):
        unilosses.mse(xp.asarray(P), kw.pop("targets"), **kw)
    if option == "weights":  # (the overlap losses' weights are per coefficient, their own)
        with pytest.raises(TypeError, match="`weights` must be an array .*got str"):
            unilosses.dice_loss(xp.asarray(P), xp.asarray(P), axis=1, weights="abc")


@pytest.mark.parametrize("call", [
    lambda x, flag: unilosses.gaussian_nll(x, x, x, full=flag),
    lambda x, flag: unilosses.poisson_nll(x, x, full=flag),
    lambda x, flag: unilosses.poisson_nll(x, x, log_input=flag),
    lambda x, flag: unilosses.kl_divergence(x, x, log_target=flag),
], ids=["gaussian_nll-full", "poisson_nll-full", "poisson_nll-log_input", "kl-log_target"])
@pytest.mark.parametrize("flag", ["no", 1, np.array([True, False])], ids=["str", "int", "array"])
def test_a_flag_must_be_a_bool(xp, call, flag):
    # "no" was truthy (poisson_nll(full="no") added Stirling's term), an array ambiguous
    with pytest.raises(TypeError, match=r"`(full|log_input|log_target)` must be True or False"):
        call(xp.asarray(P), flag)
    call(xp.asarray(P), np.True_)  # (NumPy's bools are bools)


def test_labels_must_be_integer(xp):
    with pytest.raises(TypeError, match="`labels` must hold integer class indices"):
        unilosses.sparse_categorical_cross_entropy_with_logits(xp.asarray(P),
                                                               xp.asarray(np.zeros(3)))
    with pytest.raises(ValueError, match=r"`labels` has shape \(2,\)"):
        unilosses.sparse_categorical_cross_entropy_with_logits(
            xp.asarray(P), xp.asarray(np.zeros(2, np.int64)))




@pytest.mark.parametrize("fn", [unilosses.sparse_categorical_cross_entropy_with_logits,
                                unilosses.sparse_categorical_focal_loss_with_logits])
def test_a_class_axis_left_at_its_default_is_named(xp, fn):
    # torch's segmentation layout (N, C, H, W) with the default axis=-1: the error said only
    # "Reshape one of them, e.g. with a squeeze or reshape", where the fix is axis=1
    x = xp.asarray(np.zeros((2, 3, 4, 5)), "float32")
    y = xp.asarray(np.zeros((2, 4, 5)), "int64")
    with pytest.raises(ValueError, match=r"`labels` has shape \(2, 4, 5\) but `logits without "
                                         r"axis 3` has shape \(2, 3, 4\).*`logits`' shape "
                                         r"without axis 1: if that is the class axis \(torch's "
                                         r"\(N, C, \.\.\.\) layout\), pass axis=1\."):
        fn(x, y)
    assert float(xp.to_numpy(fn(x, y, axis=1))) > 0


@pytest.mark.parametrize("fn,sparse", [
    (unilosses.categorical_cross_entropy_with_logits,
     "sparse_categorical_cross_entropy_with_logits"),
    (unilosses.categorical_cross_entropy, "sparse_categorical_cross_entropy"),
    (unilosses.categorical_focal_loss_with_logits, "sparse_categorical_focal_loss_with_logits"),
])
@pytest.mark.parametrize("shape", [(3,), (3, 1)])
def test_integer_labels_given_to_a_categorical_loss_name_the_sparse_form(xp, fn, sparse,
                                                                         shape):
    # Keras's and torch's users hold class indices; the error only said to reshape
    x = xp.asarray(np.full((3, 4), 0.25), "float32")
    y = xp.asarray(np.zeros(shape), "int64")
    with pytest.raises(ValueError, match=r"`targets` has shape .*\. `targets` holds integers, "
                                         r"one per sample: if they are class indices, pass "
                                         rf"them to {sparse}\b"):
        fn(x, y)



@pytest.mark.parametrize("fn", [unilosses.sparse_categorical_cross_entropy_with_logits,
                                unilosses.sparse_categorical_focal_loss_with_logits])
def test_out_of_range_labels_are_shown(xp, fn):
    # torch's cross_entropy skips -100 by default; here it is an error, which named neither
    # the value found nor the option that skips it
    x = xp.asarray(np.zeros((4, 3)), "float32")
    msg = (r"`labels` holds values outside \[0, 3\) for 3 classes along axis 1 "
           r"\(found -100\); fix the labels, or mark entries to skip with `ignore_index=` or "
           r"`where=`\. -100 is torch's default ignore_index: pass ignore_index=-100 to skip "
           r"them\.$")
    with pytest.raises(ValueError, match=msg):
        fn(x, xp.asarray(np.array([0, -100, 2, -100])))
    with pytest.raises(ValueError, match=r"\(found -1, 3, 7\); fix the labels, or mark entries "
                                         r"to skip with `ignore_index=` or `where=`\.$"):
        fn(x, xp.asarray(np.array([3, -1, 7, 0])))
    with pytest.raises(ValueError, match=r"\(other than ignore_index=-1\) \(found 3\);"):
        fn(x, xp.asarray(np.array([3, -1, 2, 0])), ignore_index=-1)
    skipped = fn(x, xp.asarray(np.array([0, -100, 2, -100])), ignore_index=-100)
    kept = fn(xp.asarray(np.zeros((2, 3)), "float32"), xp.asarray(np.array([0, 2])))
    np.testing.assert_allclose(xp.to_numpy(skipped), xp.to_numpy(kept), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "uint32", "uint64"])
def test_labels_of_any_integer_dtype(xp, dtype):
    # MNIST's labels are uint8: TensorFlow's gather takes only int16/32/64 indices (it raised
    # InvalidArgumentError from GatherV2), torch's min/max and comparisons refuse
    # uint16/32/64, and an unsigned array cannot be compared with ignore_index=-100
    # (array-api-strict raised OverflowError); every loss that takes labels gives the
    # int64 labels' value
    x = xp.asarray(np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [1.0, 0.0, 1.0]]), "float32")
    y = np.array([0, 2, 1])
    calls = [
        lambda y, **k: unilosses.sparse_categorical_cross_entropy_with_logits(x, y, **k),
        lambda y, **k: unilosses.sparse_categorical_cross_entropy(x * 0.0 + 0.5, y, **k),
        lambda y, **k: unilosses.sparse_categorical_focal_loss_with_logits(x, y, **k),
    ]
    for call in calls:
        for kw in ({}, {"ignore_index": 2}, {"ignore_index": -100}):
            want = xp.to_numpy(call(xp.asarray(y, "int64"), **kw))
            got = xp.to_numpy(call(xp.asarray(y, dtype), **kw))
            np.testing.assert_allclose(got, want, rtol=1e-6)
            assert str(got.dtype) == "float32"
    for k in (1, 2):
        np.testing.assert_array_equal(
            xp.to_numpy(unilosses.in_top_k(x, xp.asarray(y, dtype), k=k)),
            xp.to_numpy(unilosses.in_top_k(x, xp.asarray(y, "int64"), k=k)))
        np.testing.assert_allclose(
            xp.to_numpy(unilosses.top_k_accuracy(x, xp.asarray(y, dtype), k=k)),
            xp.to_numpy(unilosses.top_k_accuracy(x, xp.asarray(y, "int64"), k=k)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("labels", [np.int64, np.int32])
def test_the_wrong_kind_of_target_is_refused_on_every_path(xp, dtype, labels):
    # the sparse and the categorical loss share the plain kernels of torch and TensorFlow,
    # tried from an adapter's second call on: integer labels given to the categorical loss,
    # or one-hot targets to the sparse one, are still refused there, not taken as the other
    x = xp.asarray(np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]], dtype))
    y = xp.asarray(np.array([0, 1], labels))
    one_hot = xp.asarray(np.eye(3, dtype=dtype)[[0, 1]])
    unilosses.mse(x, x)
    for _ in range(2):
        with pytest.raises(ValueError, match=r"`targets` has shape \(2,\)"):
            unilosses.categorical_cross_entropy_with_logits(x, y)
        with pytest.raises(TypeError, match="`labels` must hold integer class indices"):
            unilosses.sparse_categorical_cross_entropy_with_logits(x, one_hot)
    # and each takes its own kind: the float64 reference, log-sum-exp minus the label's logit
    rows = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    want = np.mean(np.log(np.exp(rows).sum(1)) - [3.0, 5.0])
    for got in (unilosses.sparse_categorical_cross_entropy_with_logits(x, y),
                unilosses.categorical_cross_entropy_with_logits(x, one_hot)):
        assert abs(float(np.asarray(got)) - want) <= 8 * np.finfo(dtype).eps * want

def test_anchor_state_shape(xp):
    x = xp.asarray(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match=r"`anchor_state` has shape \(2, 4\).*\(2, 5\)"):
        unilosses.anchor_focal_loss_with_logits(x, x, xp.asarray(np.zeros((2, 4))))
    with pytest.raises(ValueError, match=r"`anchor_state` has shape \(2, 5, 3\)"):
        unilosses.anchor_focal_loss(x, x, xp.asarray(np.zeros((2, 5, 3))))


def test_two_frameworks_in_one_call():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"arrays from two frameworks.*`predictions` is "
                                        r"torch.Tensor.*`targets` is numpy.ndarray"):
        unilosses.mse(torch.zeros(3), np.zeros(3))
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(TypeError, match=r"`weights` is .*jax"):
        unilosses.mse(torch.zeros(3), torch.zeros(3), weights=jnp.ones(3))


def test_python_values_are_converted(xp):
    """Lists and scalars take the arrays' namespace; all-Python input runs on NumPy."""
    out = unilosses.mse(xp.asarray(np.array([0.0, 2.0])), [1.0, 2.0], weights=2.0)
    assert xp.is_native(out)
    np.testing.assert_allclose(xp.to_numpy(out), 1.0)
    out = unilosses.mse([0.0, 2.0], [1, 2])
    assert isinstance(out, (np.ndarray, np.generic)) and float(out) == 0.5


def test_integer_and_bool_targets_cast(xp):
    p = xp.asarray(np.array([0.2, 0.7]), "float32")
    a = unilosses.binary_cross_entropy(p, xp.asarray(np.array([False, True])))
    b = unilosses.binary_cross_entropy(p, xp.asarray(np.array([0.0, 1.0]), "float32"))
    np.testing.assert_array_equal(xp.to_numpy(a), xp.to_numpy(b))
    assert str(xp.to_numpy(a).dtype) == "float32"


def test_two_devices():
    torch = pytest.importorskip("torch")
    # the meta device stands in for a second device on a CPU-only machine
    with pytest.raises(ValueError, match=r"`predictions` is on device cpu but `targets` is on "
                                         r"device meta"):
        unilosses.mse(torch.zeros(3), torch.zeros(3, device="meta"))
    with pytest.raises(ValueError, match="`weights` is on device meta"):
        unilosses.mse(torch.zeros(3), torch.zeros(3), weights=torch.ones(3, device="meta"))
