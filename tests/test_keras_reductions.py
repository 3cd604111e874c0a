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


# -- pytest side ----------------------------------------------------------------------------------
CHECKS = keras_runner.check_names(globals())
MODULES = (Path(__file__).resolve(),)


@pytest.mark.slow
@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("backend", keras_runner.backend_params())
def test_keras(backend: str, check: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    keras_runner.assert_check(backend, check, tmp_path_factory, MODULES)
