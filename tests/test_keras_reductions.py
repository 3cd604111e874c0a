"""unilosses.keras against Keras's own classes: what Keras's ``Loss.__call__`` does around
``call`` (reductions, sample weights, masks, input conversion), under every Keras backend.

As in test_keras_losses.py, the ``keras_check_*`` functions run in one subprocess per backend
(``_training_scripts/keras_worker.py``), here in workers of this module's own, so that this
file runs alone in seconds.  Both sides compute in float32; values agree to a few times
``tolerance("float32")``.

This module imports neither Keras nor any framework at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _training_scripts import keras_runner
from conftest import tolerance

TOL32 = tolerance("float32")
rng = np.random.default_rng(23)
B, T, K = 3, 4, 3
X = (rng.normal(size=(B, T, K)) * 2).astype("float32")
Y = (rng.normal(size=(B, T, K)) * 2).astype("float32")
Y01 = (rng.random((B, T, K)) > 0.5).astype("float32")
PROB = rng.uniform(0.02, 0.98, (B, T, K)).astype("float32")
LABELS = rng.integers(0, K, size=(B, T))
LABELS[0, 1] = 2
ONEHOT = np.eye(K, dtype="float32")[LABELS]
MASK = np.ones((B, T), bool)
MASK[0, 2:] = False
MASK[1] = False                                                  # a fully masked sample
SW = rng.uniform(0.2, 2.0, B).astype("float32")
SW[2] = 0.0
SWT = rng.uniform(0.0, 2.0, (B, T)).astype("float32")
#: the classes the reduction check runs (an audit compared every class, at greater cost)
REDUCED = ("mse", "bce_logits", "cce", "sparse_logits", "sparse_ignore", "categorical_focal",
           "cosine", "dice")
REDUCTIONS = (None, "none", "sum", "sum_over_batch_size", "mean", "mean_with_sample_weight")


def _close(actual: Any, expected: Any, scale: float = 4.0) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected,
                               rtol=TOL32["rtol"] * scale, atol=TOL32["atol"] * scale)


def _pairs(keras: Any) -> list[tuple[str, Any, Any, Any, Any]]:
    """(label, ours, Keras's, y_true, y_pred) on sequences: (batch, time, classes) and
    (batch, time) labels."""
    import unilosses.keras as uk

    kl = keras.losses
    return [
        ("mse", uk.MeanSquaredError(), kl.MeanSquaredError(), Y, X),
        ("huber", uk.Huber(0.7), kl.Huber(0.7), Y, X),
        ("bce_logits", uk.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
         kl.BinaryCrossentropy(from_logits=True, label_smoothing=0.1), Y01, X),
        ("cce", uk.CategoricalCrossentropy(), kl.CategoricalCrossentropy(), ONEHOT, PROB),
        ("sparse_logits", uk.SparseCategoricalCrossentropy(from_logits=True),
         kl.SparseCategoricalCrossentropy(from_logits=True), LABELS, X),
        ("sparse_ignore", uk.SparseCategoricalCrossentropy(from_logits=True, ignore_class=2),
         kl.SparseCategoricalCrossentropy(from_logits=True, ignore_class=2), LABELS, X),
        ("focal", uk.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.3),
         kl.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.3), Y01, PROB),
        ("categorical_focal", uk.CategoricalFocalCrossentropy(from_logits=True),
         kl.CategoricalFocalCrossentropy(from_logits=True), ONEHOT, X),
        ("kl_divergence", uk.KLDivergence(), kl.KLDivergence(), ONEHOT, PROB),
        ("poisson", uk.Poisson(), kl.Poisson(), np.round(Y * Y), PROB * 3),
        ("hinge", uk.Hinge(), kl.Hinge(), Y01, X),
        ("categorical_hinge", uk.CategoricalHinge(), kl.CategoricalHinge(), ONEHOT, X),
        ("cosine", uk.CosineSimilarity(), kl.CosineSimilarity(), Y, X),
        ("mape", uk.MeanAbsolutePercentageError(), kl.MeanAbsolutePercentageError(), Y + 5, X),
        ("dice", uk.Dice(axis=(2,)), kl.Dice(axis=(2,)), Y01, PROB),
        ("tversky", uk.Tversky(alpha=0.3, beta=0.7, axis=(2,)),
         kl.Tversky(alpha=0.7, beta=0.3, axis=(2,)), Y01, PROB),
    ]


# -- the checks (run in the worker) -----------------------------------------------------------
def keras_check_keras_variable_inputs(tmp: Path) -> None:
    """A ``keras.Variable`` as y_pred (optimised directly) or y_true, and as sample_weight,
    gives Keras's value and gradient.  On TensorFlow ``Loss.__call__``'s conversion hands the
    Keras variable itself to ``call`` (its ``dtype`` a string), which the functions refused
    with ``AttributeError: 'str' object has no attribute 'is_floating'``."""
    import keras

    for label, ours, theirs, y_true, y_pred in _pairs(keras):
        if label not in ("mse", "sparse_ignore", "categorical_focal", "dice"):
            continue  # (every class failed alike; JAX's eager gradients are slow)
        values = []
        for loss in (theirs, ours):
            p = keras.Variable(y_pred)
            # (not trainable: Keras multiplies a weight in place when it applies a mask)
            t = keras.Variable(y_true.astype("float32"), trainable=False)
            w = keras.Variable(SWT, trainable=False)
            value, grad = _value_and_grad(
                keras, lambda v, loss=loss, t=t, w=w: loss(t, v, sample_weight=w), p)
            values.append((value, grad))
        (want, want_g), (got, got_g) = values
        try:
            _close(got, want)
            _close(got_g, want_g)
        except AssertionError as e:
            raise AssertionError(label) from e


def _value_and_grad(keras: Any, f: Any, variable: Any) -> tuple[np.ndarray, np.ndarray]:
    """f(variable) and its gradient with respect to the variable, on Keras's backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            value = f(variable)
        grad = tape.gradient(value, variable.value)
    elif backend == "jax":
        import jax

        def pure(v: Any) -> Any:
            with keras.StatelessScope(state_mapping=[(variable, v)]):
                return f(variable)

        value, grad = jax.value_and_grad(pure)(variable.value)
    else:
        value = f(variable)
        value.backward()
        grad = variable.value.grad
    return keras.ops.convert_to_numpy(value), keras.ops.convert_to_numpy(grad)


def keras_check_reductions_and_masks_match_keras(tmp: Path) -> None:
    """Every reduction, with no, per-sample ((batch,) and (batch, 1), zeros included),
    per-timestep and all-zero sample weights, on sequences with and without a Keras mask on
    y_pred (as Keras's tests set it; one sample fully masked): value, dtype and shape equal
    Keras's own class's (both are reduced by Keras's ``Loss.__call__``; ``call`` must hand it
    the same per-sample values and mask)."""
    import keras
    from keras.src.backend import set_keras_mask

    ops = keras.ops
    weights = {"none": None, "batch1": SW[:, None], "time": SWT,
               "zeros": np.zeros((B, T), "float32")}
    for label, ours, theirs, y_true, y_pred in _pairs(keras):
        if label not in REDUCED:
            continue
        for masked in (False, True):
            for reduction in REDUCTIONS:
                for name, sw in weights.items():
                    if name == "batch1" and (masked or label == "sparse_ignore"):
                        continue  # Keras's own fails on torch (its in-place weight * mask)
                    out = []
                    for loss in (theirs, ours):
                        loss.reduction = reduction
                        p = ops.convert_to_tensor(y_pred)
                        if masked:
                            set_keras_mask(p, ops.convert_to_tensor(MASK))
                        out.append(loss(y_true, p, sample_weight=sw))
                    want, got = out
                    where = f"{label}, masked={masked}, reduction={reduction}, sw={name}"
                    assert got.shape == want.shape, (where, got.shape, want.shape)
                    assert got.dtype == want.dtype, (where, got.dtype, want.dtype)
                    try:
                        _close(ops.convert_to_numpy(got), ops.convert_to_numpy(want))
                    except AssertionError as e:
                        raise AssertionError(where) from e
    # (batch,) weights on per-sample losses
    for label, ours, theirs, y_true, y_pred in _pairs(keras):
        if label in ("dice", "tversky"):
            continue  # (their axis is the last of three)
        for reduction in REDUCTIONS:
            ours.reduction = theirs.reduction = reduction
            _close(ops.convert_to_numpy(ours(y_true[:, 0], y_pred[:, 0], sample_weight=SW)),
                   ops.convert_to_numpy(theirs(y_true[:, 0], y_pred[:, 0], sample_weight=SW)))


def keras_check_masked_training_matches_keras(tmp: Path) -> None:
    """model.train_on_batch on a Masking model with two outputs, a dict of losses and
    loss_weights, per-timestep sample weights: the loss and the weights after one SGD step
    equal those with Keras's own classes."""
    import keras

    import unilosses.keras as uk

    x = rng.normal(size=(B, T, 2)).astype("float32")
    x[0, 2:] = 0.0
    x[1] = 0.0                                                    # fully masked
    results = []
    for losses in (keras.losses, uk):
        keras.utils.set_random_seed(3)
        inputs = keras.Input((T, 2))
        h = keras.layers.Masking(0.0)(inputs)
        h = keras.layers.Dense(4, activation="tanh")(h)
        outputs = {"tags": keras.layers.Dense(K, name="tags")(h),
                   "reg": keras.layers.Dense(K, name="reg")(h)}
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss={"tags": losses.SparseCategoricalCrossentropy(from_logits=True),
                            "reg": losses.Huber(0.5)},
                      loss_weights={"tags": 1.0, "reg": 0.3})
        value = model.train_on_batch(x, {"tags": LABELS, "reg": Y},
                                     sample_weight={"tags": SWT, "reg": SWT})
        results.append((value, np.concatenate([np.ravel(keras.ops.convert_to_numpy(w))
                                               for w in model.trainable_weights])))
    (want, want_w), (got, got_w) = results
    _close(got, want)
    _close(got_w, want_w)


# -- pytest side ----------------------------------------------------------------------------------
CHECKS = keras_runner.check_names(globals())
MODULES = (Path(__file__).resolve(),)


@pytest.mark.slow
@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("backend", keras_runner.backend_params())
def test_keras(backend: str, check: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    keras_runner.assert_check(backend, check, tmp_path_factory, MODULES)
