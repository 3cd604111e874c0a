"""The loss catalogue of issue 9 against Keras 3's own losses on shared cases.

Keras fixes its backend when first imported, so its values come from one subprocess with
``KERAS_BACKEND=jax`` (whatever this process has imported), which evaluates every case below
on the same float32 inputs; ours are computed here on NumPy float32.  Keras reduces the last
axis by a mean for its elementwise losses: ours (``reduction="none"``) are averaged the same
way before the comparison.

This module imports neither Keras nor any framework at import time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable

import numpy as np
import pytest

import unilosses as U
from conftest import tolerance

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("keras") is None or importlib.util.find_spec("jax") is None,
    reason="keras (with the jax backend) is not installed")

TOL32 = tolerance("float32")
rng = np.random.default_rng(29)
B, K = 6, 4
LABELS = rng.integers(0, K, B)
INPUTS = {
    "y01": (rng.random((B, K)) > 0.5).astype("float32"),
    "prob": rng.uniform(0.02, 0.98, (B, K)).astype("float32"),
    "x": (rng.normal(size=(B, K)) * 2).astype("float32"),
    "soft": rng.dirichlet(np.ones(K), B).astype("float32"),
    "probn": (rng.dirichlet(np.ones(K), B) * 1.3).astype("float32"),
    "onehot": np.eye(K, dtype="float32")[LABELS],
    "pos": rng.uniform(0.1, 4.0, (B, K)).astype("float32"),
    "pos2": rng.uniform(0.1, 4.0, (B, K)).astype("float32"),
    "counts": rng.integers(0, 5, (B, K)).astype("float32"),
    "reg": (rng.normal(size=(B, K)) * 2).astype("float32"),
    "reg2": (rng.normal(size=(B, K)) * 2).astype("float32"),
    "segp": rng.uniform(0.0, 1.0, (2, 4, 4, 1)).astype("float32"),
    "segt": (rng.random((2, 4, 4, 1)) > 0.5).astype("float32"),
    "sw": rng.uniform(0.2, 2.0, B).astype("float32"),
}
I = INPUTS
ALPHA = [0.1, 0.2, 0.3, 0.4]


def _rows(v: np.ndarray) -> np.ndarray:
    """Keras's mean over the last axis of an elementwise loss."""
    return np.asarray(v).mean(-1)


def _clip(v: np.ndarray) -> np.ndarray:
    return np.clip(v, 1e-7, 1.0)


# name -> (Keras constructor, y_true, y_pred, sample_weight or None, ours() -> numpy)
CASES: dict[str, tuple[str, str, str, str | None, Callable[[], np.ndarray]]] = {
    "bce_label_smoothing": (
        "BinaryCrossentropy(label_smoothing=0.2, reduction=None)", "y01", "prob", None,
        lambda: _rows(U.binary_cross_entropy(I["prob"], I["y01"], label_smoothing=0.2,
                                             reduction="none"))),
    "bce_logits_label_smoothing": (
        "BinaryCrossentropy(from_logits=True, label_smoothing=0.2, reduction=None)", "y01",
        "x", None,
        lambda: _rows(U.binary_cross_entropy_with_logits(I["x"], I["y01"], label_smoothing=0.2,
                                                         reduction="none"))),
    "categorical_focal": (
        "CategoricalFocalCrossentropy(reduction=None)", "onehot", "probn", None,
        lambda: U.categorical_focal_loss(I["probn"], I["onehot"], reduction="none")),
    "categorical_focal_alpha_smoothing": (
        f"CategoricalFocalCrossentropy(alpha={ALPHA}, gamma=1.5, label_smoothing=0.1, "
        "reduction=None)", "soft", "probn", None,
        lambda: U.categorical_focal_loss(I["probn"], I["soft"], alpha=np.array(ALPHA),
                                         gamma=1.5, label_smoothing=0.1, reduction="none")),
    # moderate logits: Keras clips the softmax at 1e-7, the log-space form does not
    "categorical_focal_logits": (
        "CategoricalFocalCrossentropy(from_logits=True, gamma=3.0, reduction=None)", "soft",
        "x", None,
        lambda: U.categorical_focal_loss_with_logits(I["x"], I["soft"], gamma=3.0,
                                                     reduction="none")),
    "sparse_focal_logits": (
        "CategoricalFocalCrossentropy(from_logits=True, reduction=None)", "onehot", "x", None,
        lambda: U.sparse_categorical_focal_loss_with_logits(I["x"], LABELS, reduction="none")),
    # Keras takes probabilities and clips both to [1e-7, 1]
    "kl_divergence": (
        "KLDivergence(reduction=None)", "soft", "prob", None,
        lambda: U.kl_divergence(np.log(_clip(I["prob"])), _clip(I["soft"]),
                                reduction="none")),
    "poisson": (
        "Poisson(reduction=None)", "counts", "pos", None,
        lambda: _rows(U.poisson_nll(I["pos"], I["counts"], log_input=False, eps=1e-7,
                                    reduction="none"))),
    "hinge_01": ("Hinge(reduction=None)", "y01", "x", None,
                 lambda: _rows(U.hinge(I["x"], I["y01"], reduction="none"))),
    "hinge_pm1": ("Hinge(reduction=None)", "ypm", "x", None,
                  lambda: _rows(U.hinge(I["x"], 2 * I["y01"] - 1, reduction="none"))),
    "squared_hinge": ("SquaredHinge(reduction=None)", "y01", "x", None,
                      lambda: _rows(U.squared_hinge(I["x"], I["y01"], reduction="none"))),
    "categorical_hinge": ("CategoricalHinge(reduction=None)", "onehot", "x", None,
                          lambda: U.categorical_hinge(I["x"], I["onehot"], reduction="none")),
    "cosine_similarity": ("CosineSimilarity(axis=-1, reduction=None)", "reg2", "reg", None,
                          lambda: U.cosine_similarity_loss(I["reg"], I["reg2"],
                                                           reduction="none")),
    "msle": ("MeanSquaredLogarithmicError(reduction=None)", "pos2", "pos", None,
             lambda: _rows(U.msle(I["pos"], I["pos2"], reduction="none"))),
    "mape": ("MeanAbsolutePercentageError(reduction=None)", "reg2", "reg", None,
             lambda: _rows(U.mape(I["reg"], I["reg2"], reduction="none"))),
    "dice_per_sample": ("Dice(axis=(1, 2, 3), reduction=None)", "segt", "segp", None,
                        lambda: U.dice_loss(I["segp"], I["segt"], axis=(1, 2, 3),
                                            reduction="none")),
    "dice_all_axes": ("Dice()", "segt", "segp", None,
                      lambda: U.dice_loss(I["segp"], I["segt"])),
    # Keras's code weighs sum(t (1 - p)) by alpha and sum(p (1 - t)) by beta: swapped
    "tversky_per_sample": ("Tversky(alpha=0.3, beta=0.7, axis=(1, 2, 3), reduction=None)",
                           "segt", "segp", None,
                           lambda: U.tversky_loss(I["segp"], I["segt"], alpha=0.7, beta=0.3,
                                                  axis=(1, 2, 3), reduction="none")),
    "mse_mean_with_sample_weight": (
        "MeanSquaredError(reduction='mean_with_sample_weight')", "reg2", "reg", "sw",
        lambda: U.mse(I["reg"], I["reg2"], weights=I["sw"][:, None],
                      reduction="weighted_mean")),
    "cce_mean_with_sample_weight": (
        "CategoricalCrossentropy(from_logits=True, reduction='mean_with_sample_weight')",
        "soft", "x", "sw",
        lambda: U.categorical_cross_entropy_with_logits(I["x"], I["soft"], weights=I["sw"],
                                                        reduction="weighted_mean")),
}

_WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    assert keras.backend.backend() == "jax", keras.backend.backend()
    inputs = dict(np.load(sys.argv[1]))
    inputs["ypm"] = 2 * inputs["y01"] - 1
    cases = json.loads(open(sys.argv[2]).read())
    out = {}
    for name, (ctor, yt, yp, sw) in cases.items():
        loss = eval("keras.losses." + ctor)
        kw = {} if sw is None else {"sample_weight": inputs[sw]}
        out[name] = np.asarray(keras.ops.convert_to_numpy(loss(inputs[yt], inputs[yp], **kw)))
    np.savez(sys.argv[3], **out)
""")


@pytest.fixture(scope="module")
def keras_values(tmp_path_factory) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("keras")
    np.savez(d / "inputs.npz", **INPUTS)
    (d / "cases.json").write_text(json.dumps({k: v[:4] for k, v in CASES.items()}))
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "2",
           "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", _WORKER, str(d / "inputs.npz"),
                          str(d / "cases.json"), str(d / "out.npz")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-4000:]
    return dict(np.load(d / "out.npz"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_against_keras(keras_values, name):
    ours = np.asarray(CASES[name][4]())
    assert ours.dtype == np.float32, ours.dtype
    want = keras_values[name]
    assert ours.shape == want.shape, (ours.shape, want.shape)
    # both float32; MAPE is in percent (values ~100x the inputs')
    scale = 50.0 if name == "mape" else 8.0
    np.testing.assert_allclose(ours, want, rtol=TOL32["rtol"] * scale,
                               atol=TOL32["atol"] * scale, err_msg=name)


def test_keras_dice_docstring_example():
    """The example in keras.losses.Dice's docstring (Keras 3), values as printed there."""
    y_true = np.array([[[[1.0], [1.0]], [[0.0], [0.0]]],
                       [[[1.0], [1.0]], [[0.0], [0.0]]]], dtype="float32")
    y_pred = np.array([[[[0.0], [1.0]], [[0.0], [1.0]]],
                       [[[0.4], [0.0]], [[0.0], [0.9]]]], dtype="float32")
    per_sample = U.dice_loss(y_pred, y_true, axis=(1, 2, 3), reduction="none")
    np.testing.assert_allclose(per_sample, [0.5, 0.75757575], rtol=1e-6)
    np.testing.assert_allclose(U.dice_loss(y_pred, y_true), 0.6164384, rtol=1e-6)
