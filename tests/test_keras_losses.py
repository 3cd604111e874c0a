"""unilosses.keras: the keras.losses.Loss front end, under every Keras backend.

Keras fixes its backend when it is imported, so the ``keras_check_*`` functions below run in one
subprocess per backend (``_training_scripts/keras_worker.py``, with ``KERAS_BACKEND`` set);
``test_keras`` turns each check's outcome into a test.  References: Keras's own losses on the
same inputs (where Keras has the loss) and float64 NumPy formulas (where it does not).
Tolerances: both sides compute in float32, so values agree to ``tolerance("float32")``
(256 float32 epsilons, relative and absolute), a few times more for sums over a batch.

This module imports neither Keras nor any framework at import time.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _training_scripts import keras_runner
from conftest import tolerance

TOL32 = tolerance("float32")
rng = np.random.default_rng(11)
B, K = 6, 4
X = (rng.normal(size=(B, K)) * 2).astype("float32")                 # logits / regression preds
Y = (rng.normal(size=(B, K)) * 2).astype("float32")                 # regression targets
Y01 = (rng.random((B, K)) > 0.5).astype("float32")
PROB = rng.uniform(0.02, 0.98, (B, K)).astype("float32")
SOFT = rng.dirichlet(np.ones(K), size=B).astype("float32")
LABELS = rng.integers(0, K, size=B)
LABELS[1] = 2                                                       # ignored with ignore_index=2
SW = rng.uniform(0.2, 2.0, size=B).astype("float32")
REDUCTIONS = ("sum_over_batch_size", "sum", None, "mean_with_sample_weight")


def _close(actual: Any, expected: Any, scale: float = 1.0) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected,
                               rtol=TOL32["rtol"] * scale, atol=TOL32["atol"] * scale)


def _native(keras: Any, out: Any) -> np.ndarray:
    """``out`` must be the backend's own float32 tensor; return it as NumPy."""
    assert keras.ops.is_tensor(out), type(out)
    assert keras.backend.standardize_dtype(out.dtype) == "float32", out.dtype
    return keras.ops.convert_to_numpy(out)


# -- the checks (run in the worker) -----------------------------------------------------------
def _keras_pairs(keras: Any) -> list[tuple[str, Any, Any, Any, Any]]:
    """(label, ours, Keras's, y_true, y_pred) for every loss Keras also has."""
    import unilosses.keras as uk

    kl = keras.losses
    smoothed = rng.dirichlet(np.ones(K), size=B).astype("float32") * 1.5   # not normalised
    return [
        ("mse", uk.MeanSquaredError(), kl.MeanSquaredError(), Y, X),
        ("mae", uk.MeanAbsoluteError(), kl.MeanAbsoluteError(), Y, X),
        ("huber", uk.Huber(0.7), kl.Huber(0.7), Y, X),
        ("log_cosh", uk.LogCosh(), kl.LogCosh(), Y, X),
        ("bce", uk.BinaryCrossentropy(), kl.BinaryCrossentropy(), Y01, PROB),
        ("bce_logits_ls", uk.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
         kl.BinaryCrossentropy(from_logits=True, label_smoothing=0.1), Y01, X),
        # (B,) targets against (B, 1) predictions: Keras expands the targets
        ("bce_logits_rank", uk.BinaryCrossentropy(from_logits=True),
         kl.BinaryCrossentropy(from_logits=True), Y01[:, 0], X[:, :1]),
        ("cce", uk.CategoricalCrossentropy(label_smoothing=0.1),
         kl.CategoricalCrossentropy(label_smoothing=0.1), SOFT, smoothed),
        ("cce_logits", uk.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2),
         kl.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2), SOFT, X),
        ("sparse", uk.SparseCategoricalCrossentropy(), kl.SparseCategoricalCrossentropy(),
         LABELS, SOFT),
        # float labels with a trailing axis of 1, as Keras's fit hands them over
        ("sparse_logits", uk.SparseCategoricalCrossentropy(from_logits=True),
         kl.SparseCategoricalCrossentropy(from_logits=True),
         LABELS[:, None].astype("float32"), X),
        ("sparse_ignore", uk.SparseCategoricalCrossentropy(from_logits=True, ignore_index=2),
         kl.SparseCategoricalCrossentropy(from_logits=True, ignore_class=2), LABELS, X),
        ("focal", uk.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.3, gamma=1.5),
         kl.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.3, gamma=1.5),
         Y01, PROB),
        # Keras's defaults: no class balancing, and an alpha without the switch unused
        ("focal_defaults", uk.BinaryFocalCrossentropy(), kl.BinaryFocalCrossentropy(),
         Y01, PROB),
        ("focal_alpha_unswitched", uk.BinaryFocalCrossentropy(alpha=0.3, from_logits=True),
         kl.BinaryFocalCrossentropy(alpha=0.3, from_logits=True), Y01, X),
        ("focal_logits", uk.BinaryFocalCrossentropy(from_logits=True, alpha=None),
         kl.BinaryFocalCrossentropy(from_logits=True, gamma=2.0), Y01, X),
        # Keras's switch for alpha, under its own name
        ("focal_unbalanced", uk.BinaryFocalCrossentropy(apply_class_balancing=False, gamma=1.5),
         kl.BinaryFocalCrossentropy(apply_class_balancing=False, gamma=1.5), Y01, PROB),
        ("focal_balanced_logits",
         uk.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.4, from_logits=True),
         kl.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.4, from_logits=True),
         Y01, X),
        ("sparse_ignore_class", uk.SparseCategoricalCrossentropy(from_logits=True, ignore_class=2),
         kl.SparseCategoricalCrossentropy(from_logits=True, ignore_class=2), LABELS, X),
        # the catalogue of issue 9
        ("categorical_focal", uk.CategoricalFocalCrossentropy(alpha=[0.1, 0.2, 0.3, 0.4]),
         kl.CategoricalFocalCrossentropy(alpha=[0.1, 0.2, 0.3, 0.4]), SOFT, smoothed),
        ("categorical_focal_logits",
         uk.CategoricalFocalCrossentropy(from_logits=True, gamma=1.5, label_smoothing=0.1),
         kl.CategoricalFocalCrossentropy(from_logits=True, gamma=1.5, label_smoothing=0.1),
         SOFT, X),
        ("kl_divergence", uk.KLDivergence(), kl.KLDivergence(), SOFT, PROB),
        ("poisson", uk.Poisson(), kl.Poisson(), np.round(Y * Y), PROB * 3),
        ("hinge", uk.Hinge(), kl.Hinge(), Y01, X),
        ("squared_hinge", uk.SquaredHinge(), kl.SquaredHinge(), Y01, X),
        ("categorical_hinge", uk.CategoricalHinge(), kl.CategoricalHinge(),
         np.eye(K, dtype="float32")[LABELS], X),
        ("cosine", uk.CosineSimilarity(), kl.CosineSimilarity(), Y, X),
        ("msle", uk.MeanSquaredLogarithmicError(), kl.MeanSquaredLogarithmicError(),
         np.abs(Y), PROB * 3),
        ("mape", uk.MeanAbsolutePercentageError(), kl.MeanAbsolutePercentageError(), Y + 5, X),
        ("dice", uk.Dice(axis=(1,)), kl.Dice(axis=(1,)), Y01, PROB),
        # Keras's code weighs the false negatives by alpha (its docstring: false positives)
        ("tversky", uk.Tversky(alpha=0.3, beta=0.7, axis=(1,)),
         kl.Tversky(alpha=0.7, beta=0.3, axis=(1,)), Y01, PROB),
    ]


def keras_check_matches_keras_losses(tmp: Path) -> None:
    """The per-sample losses (reduction=None) and the default reduction with sample_weight
    equal those of Keras's loss of the same name; with ignore_index, every reduction does
    (Keras's mask then changes the count)."""
    import keras

    for label, ours, theirs, y_true, y_pred in _keras_pairs(keras):
        settings = [(None, None), ("sum_over_batch_size", SW)]
        if label.startswith("sparse_ignore"):
            settings = [(r, sw) for r in REDUCTIONS for sw in (None, SW)]
        for reduction, sw in settings:
            ours.reduction = theirs.reduction = reduction
            got = _native(keras, ours(y_true, y_pred, sample_weight=sw))
            want = keras.ops.convert_to_numpy(theirs(y_true, y_pred, sample_weight=sw))
            assert got.shape == want.shape, (label, reduction, got.shape, want.shape)
            try:
                _close(got, want, scale=4)
            except AssertionError as e:
                raise AssertionError(f"{label}, reduction={reduction}, sw={sw is not None}") from e


def keras_check_rank_rule_of_every_keras_peer(tmp: Path) -> None:
    """Keras squeezes or expands a last axis of 1 (``squeeze_or_expand_to_same_rank``) for
    every loss it wraps, those with a class or overlap axis included: a ``(batch, H, W)`` mask
    against a ``(batch, H, W, 1)`` sigmoid output (Dice, Tversky), ``(batch, D, 1)`` targets
    against ``(batch, D)`` (CosineSimilarity, the categorical losses).  Ours reads them as
    Keras does (they were refused as shapes that must match exactly)."""
    import keras

    import unilosses.keras as uk

    kl = keras.losses
    h, w = 3, 5
    mask = (rng.random((B, h, w)) > 0.5).astype("float32")
    prob = rng.uniform(0.02, 0.98, (B, h, w, 1)).astype("float32")
    onehot = np.eye(K, dtype="float32")[LABELS]
    cases = [
        ("dice", uk.Dice(), kl.Dice(), mask, prob),
        ("dice_per_sample", uk.Dice(axis=(1, 2)), kl.Dice(axis=(1, 2)), mask, prob),
        ("dice_reversed", uk.Dice(axis=(1, 2)), kl.Dice(axis=(1, 2)), mask[..., None],
         prob[..., 0]),
        ("tversky", uk.Tversky(alpha=0.3, beta=0.7, axis=(1, 2)),
         kl.Tversky(alpha=0.7, beta=0.3, axis=(1, 2)), mask, prob),
        ("cosine", uk.CosineSimilarity(), kl.CosineSimilarity(), Y[..., None], X),
        ("cosine_reversed", uk.CosineSimilarity(), kl.CosineSimilarity(), Y, X[..., None]),
        ("categorical_hinge", uk.CategoricalHinge(), kl.CategoricalHinge(), onehot[..., None],
         X),
        ("cce", uk.CategoricalCrossentropy(from_logits=True),
         kl.CategoricalCrossentropy(from_logits=True), onehot[..., None], X),
        ("categorical_focal", uk.CategoricalFocalCrossentropy(from_logits=True),
         kl.CategoricalFocalCrossentropy(from_logits=True), onehot[..., None], X),
    ]
    for label, ours, theirs, y_true, y_pred in cases:
        for reduction, sw in [(None, None), ("sum_over_batch_size", SW)]:
            ours.reduction = theirs.reduction = reduction
            want = keras.ops.convert_to_numpy(theirs(y_true, y_pred, sample_weight=sw))
            try:
                got = _native(keras, ours(y_true, y_pred, sample_weight=sw))
                assert got.shape == want.shape, (got.shape, want.shape)
                _close(got, want, scale=4)
            except (AssertionError, ValueError) as e:
                raise AssertionError(f"{label}, reduction={reduction}") from e


def keras_check_losses_without_keras_peer(tmp: Path) -> None:
    """RootMeanSquaredError and SmoothL1 against their float64 formulas."""
    import keras

    import unilosses.keras as uk

    d = X.astype(np.float64) - Y
    rms = np.sqrt((d * d).mean(axis=-1))
    _close(_native(keras, uk.RootMeanSquaredError()(Y, X)), rms.mean())
    _close(_native(keras, uk.RootMeanSquaredError(reduction="sum")(Y, X, sample_weight=SW)),
           (SW * rms).sum(), scale=4)
    a = np.abs(d)
    beta = 0.5
    sl1 = np.where(a < beta, 0.5 * d * d / beta, a - 0.5 * beta).mean(axis=-1)
    _close(_native(keras, uk.SmoothL1(beta)(Y, X, sample_weight=SW)), (SW * sl1).mean())
    _close(_native(keras, uk.SmoothL1(beta, reduction=None)(Y, X)), sl1)
    _catalogue_without_keras_peer(keras)


def _catalogue_without_keras_peer(keras: Any) -> None:
    """The catalogue's classes Keras has no loss for, per sample (reduction=None) and with the
    default reduction and sample_weight, against the functional losses on NumPy float64
    (whose float64 references are tested in test_catalogue_losses.py)."""
    import unilosses as U
    import unilosses.keras as uk

    x64, y64 = X.astype(np.float64), Y.astype(np.float64)
    boxes = np.concatenate([np.abs(X[:, :2]), np.abs(X[:, :2]) + 1 + np.abs(Y[:, :2])], -1)
    targets = np.concatenate([np.abs(Y[:, :2]), np.abs(Y[:, :2]) + 1 + PROB[:, :2]], -1)
    b64, t64 = boxes.astype(np.float64), targets.astype(np.float64)
    cases = [
        (uk.Quantile(quantiles=[0.1, 0.5, 0.9, 0.7]), Y[:, :1], X,
         U.quantile_loss(x64, y64[:, 0], quantiles=np.array([0.1, 0.5, 0.9, 0.7]),
                         reduction="none").mean(-1)),
        (uk.Quantile(quantiles=0.3), Y, X,
         U.quantile_loss(x64, y64, quantiles=0.3, reduction="none").mean(-1)),
        (uk.GaussianNLL(full=True), Y, np.concatenate([X, PROB], -1),
         U.gaussian_nll(x64, y64, PROB.astype(np.float64), full=True,
                        reduction="none").mean(-1)),
        (uk.Poly1Crossentropy(epsilon=-1.0), SOFT, X,
         U.poly1_cross_entropy_with_logits(x64, SOFT.astype(np.float64), epsilon=-1.0,
                                           reduction="none")),
        (uk.SparseCategoricalFocalCrossentropy(from_logits=True, gamma=0.5), LABELS, X,
         U.sparse_categorical_focal_loss_with_logits(x64, LABELS, gamma=0.5,
                                                     reduction="none")),
        (uk.GIoULoss(), targets, boxes, U.giou_loss(b64, t64, reduction="none")),
        (uk.DIoULoss(), targets, boxes, U.diou_loss(b64, t64, reduction="none")),
        (uk.CIoULoss(), targets, boxes, U.ciou_loss(b64, t64, reduction="none")),
    ]
    for loss, y_true, y_pred, want in cases:
        loss.reduction = None
        _close(_native(keras, loss(y_true, y_pred)), want, scale=4)
        loss.reduction = "sum_over_batch_size"
        _close(_native(keras, loss(y_true, y_pred, sample_weight=SW)), (SW * want).mean(),
               scale=4)


def _anchor_seed(p: np.ndarray, t: np.ndarray, state: np.ndarray, alpha: float,
                 gamma: float) -> np.ndarray:
    """Per image: the RetinaNet seed's focal sum over non-ignored anchors (float64)."""
    p = np.clip(p.astype(np.float64), 1e-7, 1 - 1e-7)
    t = np.where((state == 1)[..., None], t, 0.0)
    alpha_factor = np.where(t == 1, alpha, 1 - alpha)
    focal_weight = alpha_factor * np.where(t == 1, 1 - p, p) ** gamma
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    keep = (state != -1)[..., None]
    return (focal_weight * bce * keep).sum(axis=(1, 2))


def keras_check_anchor_focal_seed_layout(tmp: Path) -> None:
    import keras

    import unilosses
    import unilosses.keras as uk

    b, a, c = 3, 7, 2
    x = (rng.normal(size=(b, a, c)) * 2).astype("float32")
    p = (1 / (1 + np.exp(-x.astype(np.float64)))).astype("float32")
    t = (rng.random((b, a, c)) > 0.6).astype("float32")
    state = rng.integers(-1, 2, size=(b, a)).astype("float32")
    state[0, :3] = [1, 0, -1]
    packed = np.concatenate([t, state[..., None]], axis=-1)      # (batch, anchors, classes + 1)
    per_image = _anchor_seed(p, t, state, 0.25, 2.0)
    n = max(1.0, float((state == 1).sum()))

    _close(_native(keras, uk.AnchorFocalCrossentropy()(packed, p)), per_image.sum() / n)
    _close(_native(keras, uk.AnchorFocalCrossentropy(from_logits=True)(packed, x)),
           per_image.sum() / n)
    # the (targets, anchor_state) pair gives the same
    _close(_native(keras, uk.AnchorFocalCrossentropy()((t, state), p)), per_image.sum() / n)
    # per image: batch * S_b / N, whose mean is the loss; sample_weight weights the images
    _close(_native(keras, uk.AnchorFocalCrossentropy(reduction=None)(packed, p)),
           b * per_image / n)
    _close(_native(keras, uk.AnchorFocalCrossentropy()(packed, p, sample_weight=SW[:b])),
           (SW[:b] * per_image).sum() / n)
    # and the same number as the functional loss on the backend's tensors
    ops = keras.ops
    functional = unilosses.anchor_focal_loss(ops.convert_to_tensor(p), ops.convert_to_tensor(t),
                                             ops.convert_to_tensor(state))
    _close(_native(keras, functional), per_image.sum() / n)


def keras_check_config_round_trip(tmp: Path) -> None:
    """get_config/from_config and Keras (de)serialisation under the "unilosses>" names."""
    import keras

    import unilosses
    import unilosses.keras as uk

    instances = [
        uk.MeanSquaredError(reduction="sum", name="m"), uk.RootMeanSquaredError(),
        uk.MeanAbsoluteError(), uk.Huber(0.3), uk.SmoothL1(beta=2.0), uk.LogCosh(dtype="float64"),
        uk.BinaryCrossentropy(from_logits=True, label_smoothing=0.1, pos_weight=[1.0, 2.0]),
        uk.CategoricalCrossentropy(label_smoothing=0.2, axis=1),
        uk.SparseCategoricalCrossentropy(from_logits=True, ignore_index=-1, reduction=None),
        uk.BinaryFocalCrossentropy(alpha=None, gamma=0.5),
        uk.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=0.4, from_logits=True),
        uk.AnchorFocalCrossentropy(from_logits=True, alpha=[0.5, 0.2], normalize="image"),
        uk.CategoricalFocalCrossentropy(from_logits=True, alpha=[0.1, 0.9], gamma=1.0),
        uk.SparseCategoricalFocalCrossentropy(ignore_index=0, label_smoothing=0.1),
        uk.Poly1Crossentropy(epsilon=-1.0), uk.KLDivergence(axis=1), uk.Poisson(full=True),
        uk.GaussianNLL(eps=1e-3), uk.Hinge(), uk.SquaredHinge(), uk.CategoricalHinge(axis=0),
        uk.CosineSimilarity(eps=1e-5), uk.Quantile(quantiles=[0.1, 0.9]),
        uk.MeanSquaredLogarithmicError(), uk.MeanAbsolutePercentageError(),
        uk.Dice(axis=(1, 2), smooth=1.0), uk.Tversky(alpha=0.3, beta=0.7),
        uk.GIoULoss(eps=1e-6), uk.DIoULoss(), uk.CIoULoss(reduction="sum"),
    ]
    assert {type(i).__name__ for i in instances} == set(uk.__all__)
    # and together the classes cover every public loss of unilosses
    functions = {
        "MeanSquaredError": {"mse"}, "RootMeanSquaredError": {"rmse"},
        "MeanAbsoluteError": {"mae"}, "Huber": {"huber"}, "SmoothL1": {"smooth_l1"},
        "LogCosh": {"log_cosh"},
        "BinaryCrossentropy": {"binary_cross_entropy", "binary_cross_entropy_with_logits"},
        "CategoricalCrossentropy": {"categorical_cross_entropy",
                                    "categorical_cross_entropy_with_logits"},
        "SparseCategoricalCrossentropy": {"sparse_categorical_cross_entropy",
                                          "sparse_categorical_cross_entropy_with_logits"},
        "BinaryFocalCrossentropy": {"binary_focal_loss", "binary_focal_loss_with_logits"},
        "AnchorFocalCrossentropy": {"anchor_focal_loss", "anchor_focal_loss_with_logits"},
        "CategoricalFocalCrossentropy": {"categorical_focal_loss",
                                         "categorical_focal_loss_with_logits"},
        "SparseCategoricalFocalCrossentropy": {"sparse_categorical_focal_loss",
                                               "sparse_categorical_focal_loss_with_logits"},
        "Poly1Crossentropy": {"poly1_cross_entropy_with_logits"},
        "KLDivergence": {"kl_divergence"}, "Poisson": {"poisson_nll"},
        "GaussianNLL": {"gaussian_nll"}, "Hinge": {"hinge"}, "SquaredHinge": {"squared_hinge"},
        "CategoricalHinge": {"categorical_hinge"},
        "CosineSimilarity": {"cosine_similarity_loss"}, "Quantile": {"quantile_loss"},
        "MeanSquaredLogarithmicError": {"msle"}, "MeanAbsolutePercentageError": {"mape"},
        "Dice": {"dice_loss"}, "Tversky": {"tversky_loss"}, "GIoULoss": {"giou_loss"},
        "DIoULoss": {"diou_loss"}, "CIoULoss": {"ciou_loss"},
    }
    assert set(functions) == set(uk.__all__)
    assert set().union(*functions.values()) == set(unilosses.__all__) - {"in_top_k",
                                                                         "top_k_accuracy"}
    for obj in instances:
        cls = type(obj)
        config = obj.get_config()
        again = cls.from_config(config)
        assert type(again) is cls and again.get_config() == config, (config, again.get_config())
        serialized = keras.saving.serialize_keras_object(obj)
        assert serialized["registered_name"] == f"unilosses>{cls.__name__}", serialized
        back = keras.saving.deserialize_keras_object(serialized)
        assert type(back) is cls and back.get_config() == config
    assert uk.LogCosh(dtype="float64").get_config()["dtype"] == "float64"


def keras_check_numpy_options_are_the_numbers_they_hold(tmp: Path) -> None:
    """An option read with NumPy (from a config, an array's max) is the Python number it holds,
    as the other options take it, and the config stays JSON: Quantile(quantiles=np.float32(q))
    was refused ("`quantiles` must be a sequence of numbers, got float32")."""
    import json

    import keras

    import unilosses.keras as uk

    x64, y64 = X.astype(np.float64), Y.astype(np.float64)
    loss = uk.Quantile(quantiles=np.float32(0.25))
    assert type(loss.quantiles) is float and loss.quantiles == 0.25
    json.dumps(keras.saving.serialize_keras_object(loss))
    e = y64 - x64
    want = np.maximum(0.25 * e, (0.25 - 1) * e).mean(axis=-1)
    _close(_native(keras, loss(Y, X, sample_weight=SW)), (SW * want).mean())

    # Dice's and Tversky's axes: Dice(axis=np.int64(1)) failed with "'numpy.int64' object is
    # not iterable", and a list kept NumPy integers, which json refuses
    for axis in (np.int64(1), [np.int64(1)], (1,)):
        loss = uk.Dice(axis=axis, reduction=None)
        assert loss.axis in (1, (1,)) and json.dumps(keras.saving.serialize_keras_object(loss))
        p64, t64 = PROB.astype(np.float64), Y01.astype(np.float64)
        want = 1 - 2 * (p64 * t64).sum(1) / ((p64 + t64).sum(1) + 1e-7)
        _close(_native(keras, loss(Y01, PROB)), want)


def keras_check_model_save_and_load(tmp: Path) -> None:
    """A model compiled with a unilosses loss is saved to m.keras and loads back with it."""
    import keras

    import unilosses.keras as uk

    keras.utils.set_random_seed(0)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")
    loss = uk.BinaryCrossentropy(from_logits=True, label_smoothing=0.1, pos_weight=2.0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss=loss)
    path = tmp / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.loss, uk.BinaryCrossentropy), type(loaded.loss)
    assert loaded.loss.get_config() == loss.get_config()
    before = model.evaluate(x, y, batch_size=16, verbose=0)
    after = loaded.evaluate(x, y, batch_size=16, verbose=0)
    logits = model.predict(x, verbose=0).astype(np.float64)
    t = y * 0.9 + 0.05
    want = np.mean(2.0 * t * np.logaddexp(0, -logits) + (1 - t) * np.logaddexp(0, logits))
    _close(before, want)
    _close(after, want)

    # a 3-D model with the anchor loss, trained a step, saved, loaded and evaluated inside
    # Keras's compiled step (jit / tf.function with an unknown batch size / torch)
    b, a, c = 4, 5, 2
    xa = rng.normal(size=(b, a, 3)).astype("float32")
    t = (rng.random((b, a, c)) > 0.6).astype("float32")
    state = rng.integers(-1, 2, size=(b, a)).astype("float32")
    packed = np.concatenate([t, state[..., None]], axis=-1)
    anchor = keras.Sequential([keras.Input((a, 3)), keras.layers.Dense(c)])
    anchor.compile(optimizer="sgd", loss=uk.AnchorFocalCrossentropy(from_logits=True, gamma=1.0))
    anchor.fit(xa, packed, batch_size=b, epochs=1, verbose=0)
    anchor.save(tmp / "anchor.keras")
    back = keras.saving.load_model(tmp / "anchor.keras")
    assert isinstance(back.loss, uk.AnchorFocalCrossentropy) and back.loss.gamma == 1.0
    p = 1 / (1 + np.exp(-back.predict(xa, verbose=0).astype(np.float64)))
    want = _anchor_seed(p, t, state, 0.25, 1.0).sum() / max(1.0, float((state == 1).sum()))
    _close(back.evaluate(xa, packed, batch_size=b, verbose=0), want, scale=4)


def keras_check_mixed_precision_computes_in_float32(tmp: Path) -> None:
    """Under the ``mixed_float16`` policy the model's outputs are float16; Keras's
    ``Loss.__call__`` converts them to the loss's dtype (``floatx()``, float32, unless ``dtype=``
    says otherwise), so ours, like Keras's own losses, computes and returns float32, in a
    compiled training step too (jit_compile=True where Keras compiles with XLA)."""
    import keras

    import unilosses.keras as uk

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        x = rng.normal(size=(16, 3)).astype("float32")
        y = (x.sum(axis=1, keepdims=True) > 0).astype("float32")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        ours = uk.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)
        theirs = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1)
        assert ours.dtype == theirs.dtype == "float32", (ours.dtype, theirs.dtype)
        out = model(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float16", out.dtype
        _close(_native(keras, ours(y, out)), keras.ops.convert_to_numpy(theirs(y, out)))
        model.compile(optimizer="sgd", loss=ours,
                      jit_compile=keras.backend.backend() != "torch")
        model.fit(x, y, batch_size=8, epochs=1, verbose=0)
        logits = model.predict(x, verbose=0).astype(np.float64)
        t = y * 0.9 + 0.05
        want = np.mean(t * np.logaddexp(0, -logits) + (1 - t) * np.logaddexp(0, logits))
        _close(model.evaluate(x, y, batch_size=16, verbose=0), want, scale=4)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def keras_check_ignore_index_in_a_compiled_step(tmp: Path) -> None:
    """ignore_index marks samples with Keras's mask inside the compiled test step too: the
    default reduction is the mean over the other samples."""
    import keras

    import unilosses.keras as uk

    x = rng.normal(size=(8, 3)).astype("float32")
    labels = rng.integers(0, K, size=8)
    labels[[1, 4, 5]] = -1
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(K)])
    model.compile(loss=uk.SparseCategoricalCrossentropy(from_logits=True, ignore_index=-1))
    logits = model.predict(x, verbose=0).astype(np.float64)
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    keep = labels != -1
    want = -logp[keep, labels[keep]].mean()
    _close(model.evaluate(x, labels, batch_size=8, verbose=0), want, scale=4)


def keras_check_positional_options_follow_keras(tmp: Path) -> None:
    """Where Keras has the class, the options ours takes positionally are Keras's first ones,
    in its order (``ignore_index`` for Keras's ``ignore_class``): a call written for Keras
    reads the same, or is refused."""
    import inspect

    import keras

    import unilosses.keras as uk

    def positional(cls: Any) -> list[str]:
        params = list(inspect.signature(cls.__init__).parameters.values())[1:]
        return [p.name for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]

    compared = 0
    for name in uk.__all__:
        theirs = getattr(keras.losses, name, None)
        if theirs is None:
            continue
        ours = [{"ignore_index": "ignore_class"}.get(n, n) for n in positional(getattr(uk, name))]
        assert ours == positional(theirs)[:len(ours)], (name, ours, positional(theirs))
        compared += 1
    assert compared >= 19, compared


def keras_check_errors(tmp: Path) -> None:
    import unilosses.keras as uk

    for make, exc, text in [
        (lambda: uk.BinaryCrossentropy(pos_weight=2.0), ValueError, "from_logits"),
        (lambda: uk.Huber(-1.0), ValueError, "delta"),
        (lambda: uk.BinaryFocalCrossentropy(alpha=2.0), ValueError, "alpha"),
        (lambda: uk.SparseCategoricalCrossentropy(ignore_index=1.5), TypeError, "ignore_index"),
        (lambda: uk.CategoricalFocalCrossentropy(gamma=-1.0), ValueError, "gamma"),
        (lambda: uk.Dice(smooth=-1.0), ValueError, "smooth"),
        (lambda: uk.Dice(eps=0.0), ValueError, "`smooth` and `eps` are both 0"),
        (lambda: uk.Tversky(smooth=0, eps=0.0), ValueError, "`smooth` and `eps` are both 0"),
        (lambda: uk.Quantile(quantile=0.5), TypeError, "unexpected option(s) quantile"),
        (lambda: uk.AnchorFocalCrossentropy(normalize="anchor"), ValueError, "normalize"),
        # Keras's positional order where ours differs: refused, not read as another option
        (lambda: uk.BinaryFocalCrossentropy(True), TypeError, "positional"),
        (lambda: uk.BinaryCrossentropy(True, 0.0, -1, "sum"), TypeError, "positional"),
        (lambda: uk.SparseCategoricalCrossentropy(True, None, "sum"), TypeError, "positional"),
        (lambda: uk.SparseCategoricalCrossentropy(ignore_index=1, ignore_class=1), TypeError,
         "not both"),
        (lambda: uk.SparseCategoricalCrossentropy(ignore_class="1"), TypeError, "ignore_class"),
        (lambda: uk.BinaryFocalCrossentropy(apply_class_balancing=1), TypeError,
         "apply_class_balancing"),
        (lambda: uk.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=None), ValueError,
         "alpha"),
        (lambda: uk.MeanSquaredError()(np.zeros((4, 3), "float32"), np.zeros((4, 2), "float32")),
         ValueError, "must match exactly"),
        (lambda: uk.Dice(axis=1.5), TypeError, "`axis` must be None, an int or a tuple of ints"),
        (lambda: uk.Tversky(axis="ab"), TypeError, "`axis` must be None, an int or a tuple"),
        (lambda: uk.Dice(axis=(1, True)), TypeError, "`axis` must be None, an int or a tuple"),
        # per-class values, entry by entry, as the option given as one number
        (lambda: uk.CategoricalFocalCrossentropy(alpha=[1.5, 0.2]), ValueError,
         "`alpha` must lie in [0, 1]"),
        (lambda: uk.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=[0.2, -0.1]),
         ValueError, "`alpha` must lie in [0, 1]"),
        (lambda: uk.AnchorFocalCrossentropy(alpha=[0.2, 1.1]), ValueError,
         "`alpha` must lie in [0, 1]"),
        (lambda: uk.Quantile(quantiles=[0.1, 1.5]), ValueError, "`quantiles` must lie in [0, 1]"),
        (lambda: uk.CategoricalCrossentropy(class_weights=[1.0, -1.0]), ValueError,
         "`class_weights` must be >= 0"),
        (lambda: uk.SparseCategoricalCrossentropy(class_weights=[-1.0, 1.0]), ValueError,
         "`class_weights` must be >= 0"),
    ]:
        try:
            make()
        except exc as e:
            assert text in str(e), str(e)
        else:
            raise AssertionError(f"no {exc.__name__} mentioning {text!r}")


# -- pytest side ----------------------------------------------------------------------------------
CHECKS = keras_runner.check_names(globals())


@pytest.mark.slow
@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("backend", keras_runner.backend_params())
def test_keras(backend: str, check: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    keras_runner.assert_check(backend, check, tmp_path_factory)


def test_import_without_keras_says_what_to_install():
    code = ("import sys\n"
            "sys.modules['keras'] = None  # what Python does for a package that is absent\n"
            "try:\n"
            "    import unilosses.keras\n"
            "except ImportError as e:\n"
            "    print(e)\n"
            "else:\n"
            "    raise SystemExit('no ImportError')\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert "pip install keras" in out and "unilosses[" in out
