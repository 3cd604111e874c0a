"""The peers: each framework's own implementation of each benchmarked loss.

A peer is the fastest way a user of that framework would compute the same number without
unilosses: the framework's loss where it has one (``torch.nn.functional``, optax, ``tf.nn``,
``keras.losses``), otherwise a short composition of its primitives, marked "inline".  Every
peer gets the same arrays as the unilosses call, with the options of
:data:`benchmarks.cases.CASES`, and must agree with it in value and gradient (checked in the
run and in ``tests/test_benchmarks.py``).  Conventions that make them agree:

* Probability cross-entropies go through the framework's log-softmax cross-entropy on
  ``log p`` (``F.cross_entropy(log p, ...)``, optax's ``softmax_cross_entropy(log p, ...)``),
  which renormalises ``p`` as unilosses (and Keras) do, so the gradients agree too.
* The focal peers are torchvision's ``sigmoid_focal_loss`` formula
  (``torchvision.ops.focal_loss``, written inline: torchvision is not a dependency), with
  ``reduction="mean"``; on probabilities the cross-entropy term is
  ``binary_cross_entropy(p, t)``.
* The anchor focal peers are that formula summed over the non-ignored anchors (a mask, no
  boolean indexing, so the shapes stay static under the compilers), background anchors scored
  as all-negative, divided by ``max(1, positives)``: the batch normalisation of the Keras
  RetinaNet tutorial and unilosses's default (torchvision's head normalises per image).
* ``in_top_k`` peers use the framework's ``top_k`` (``tf.math.in_top_k`` on TensorFlow); the
  inputs have no ties, where the rules differ.

JAX has two peers where optax is weak or has no loss: optax's function and a plain jnp
composition (both under ``jax.jit`` in compiled mode); the faster is the "best available".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .cases import CASES

LOG2 = math.log(2.0)
EPS = 1e-7  # unilosses's (and Keras's) probability clip


@dataclass(frozen=True)
class Peer:
    name: str
    fn: Callable[..., Any]
    #: what the peer is, when the name does not say it
    detail: str = ""


def _opt(loss: str, name: str) -> Any:
    return CASES[loss].options[name]


DELTA = _opt("huber", "delta")
BETA = _opt("smooth_l1", "beta")
ALPHA = _opt("binary_focal_loss_with_logits", "alpha")
GAMMA = _opt("binary_focal_loss_with_logits", "gamma")
K = _opt("in_top_k", "k")

TORCHVISION = "torchvision.ops.sigmoid_focal_loss formula, inline"
ANCHOR = "masked sum over non-ignored anchors / max(1, positives)"


def peers_for(backend: str) -> dict[str, list[Peer]]:
    """``{loss: [peers]}`` for ``backend`` (imports the framework)."""
    build = {"numpy": _numpy, "torch": _torch, "jax": _jax, "tensorflow": _tensorflow}
    return build[backend]()


# -- torch ---------------------------------------------------------------------------------------
def _torch() -> dict[str, list[Peer]]:
    import torch
    import torch.nn.functional as F

    def focal_terms(x: Any, t: Any) -> Any:
        # torchvision.ops.sigmoid_focal_loss (torchvision 0.2x), reduction="none"
        p = torch.sigmoid(x)
        ce_loss = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce_loss * ((1 - p_t) ** GAMMA)
        alpha_t = ALPHA * t + (1 - ALPHA) * (1 - t)
        return alpha_t * loss

    def focal_terms_prob(p: Any, t: Any) -> Any:
        ce_loss = F.binary_cross_entropy(p, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        loss = ce_loss * ((1 - p_t) ** GAMMA)
        alpha_t = ALPHA * t + (1 - ALPHA) * (1 - t)
        return alpha_t * loss

    def anchor(terms: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        def fn(x: Any, t: Any, state: Any) -> Any:
            keep = (state != -1).unsqueeze(-1)
            pos = state == 1
            t = torch.where(pos.unsqueeze(-1), t, 0.0)
            return (terms(x, t) * keep).sum() / pos.sum().clamp(min=1)

        return fn

    def log_cosh(p: Any, t: Any) -> Any:
        d = p - t
        return torch.mean(d + F.softplus(-2.0 * d) - LOG2)

    return {
        "mse": [Peer("F.mse_loss", F.mse_loss)],
        "mae": [Peer("F.l1_loss", F.l1_loss)],
        "huber": [Peer("F.huber_loss", lambda p, t: F.huber_loss(p, t, delta=DELTA))],
        "smooth_l1": [Peer("F.smooth_l1_loss",
                           lambda p, t: F.smooth_l1_loss(p, t, beta=BETA))],
        "log_cosh": [Peer("inline d+softplus(-2d)-log2", log_cosh,
                          "Keras's log-cosh formula in torch ops")],
        "rmse": [Peer("sqrt(F.mse_loss)", lambda p, t: torch.sqrt(F.mse_loss(p, t)))],
        "binary_cross_entropy": [Peer("F.binary_cross_entropy", F.binary_cross_entropy)],
        "binary_cross_entropy_with_logits": [
            Peer("F.binary_cross_entropy_with_logits", F.binary_cross_entropy_with_logits)],
        "categorical_cross_entropy": [
            Peer("F.cross_entropy(log p)", lambda p, t: F.cross_entropy(torch.log(p), t))],
        "categorical_cross_entropy_with_logits": [Peer("F.cross_entropy", F.cross_entropy)],
        "sparse_categorical_cross_entropy": [
            Peer("F.cross_entropy(log p)", lambda p, y: F.cross_entropy(torch.log(p), y))],
        "sparse_categorical_cross_entropy_with_logits": [
            Peer("F.cross_entropy", F.cross_entropy)],
        "binary_focal_loss": [Peer("torchvision focal (inline, on p)",
                                   lambda p, t: focal_terms_prob(p, t).mean(),
                                   TORCHVISION + ", with F.binary_cross_entropy(p, t)")],
        "binary_focal_loss_with_logits": [
            Peer("torchvision sigmoid_focal_loss (inline)",
                 lambda x, t: focal_terms(x, t).mean(), TORCHVISION)],
        "anchor_focal_loss": [Peer("torchvision focal, anchors (inline, on p)",
                                   anchor(focal_terms_prob), f"{TORCHVISION}; {ANCHOR}")],
        "anchor_focal_loss_with_logits": [
            Peer("torchvision focal, anchors (inline)", anchor(focal_terms),
                 f"{TORCHVISION}; {ANCHOR}")],
        "in_top_k": [Peer("torch.topk", lambda x, y: (
            torch.topk(x, K, dim=-1).indices == y.unsqueeze(-1)).any(-1))],
    }


# -- jax -----------------------------------------------------------------------------------------
def _jax() -> dict[str, list[Peer]]:
    import importlib.util

    import jax
    import jax.numpy as jnp

    has_optax = importlib.util.find_spec("optax") is not None
    out: dict[str, list[Peer]] = {}

    def add(loss: str, name: str, fn: Callable[..., Any], detail: str = "") -> None:
        out.setdefault(loss, []).append(Peer(name, fn, detail))

    def focal_terms(x: Any, t: Any) -> Any:
        p = jax.nn.sigmoid(x)
        ce = jax.nn.softplus(x) - x * t
        p_t = p * t + (1 - p) * (1 - t)
        return (ALPHA * t + (1 - ALPHA) * (1 - t)) * ce * (1 - p_t) ** GAMMA

    def focal_terms_prob(p: Any, t: Any) -> Any:
        ce = -(t * jnp.log(p) + (1 - t) * jnp.log1p(-p))
        p_t = p * t + (1 - p) * (1 - t)
        return (ALPHA * t + (1 - ALPHA) * (1 - t)) * ce * (1 - p_t) ** GAMMA

    def anchor(terms: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        def fn(x: Any, t: Any, state: Any) -> Any:
            keep = (state != -1)[..., None]
            pos = state == 1
            t = jnp.where(pos[..., None], t, 0.0)
            total = jnp.sum(jnp.where(keep, terms(x, t), 0.0))
            return total / jnp.maximum(jnp.sum(pos), 1).astype(x.dtype)

        return fn

    def bce(p: Any, t: Any) -> Any:
        p = jnp.clip(p, EPS, 1 - EPS)
        return -jnp.mean(t * jnp.log(p) + (1 - t) * jnp.log1p(-p))

    def sparse_nll(logp: Any, y: Any) -> Any:
        return -jnp.mean(jnp.take_along_axis(logp, y[..., None], axis=-1))

    if has_optax:
        import optax

        add("mse", "optax.squared_error", lambda p, t: jnp.mean(optax.squared_error(p, t)))
        add("huber", "optax.huber_loss",
            lambda p, t: jnp.mean(optax.huber_loss(p, t, delta=DELTA)))
        add("smooth_l1", "optax.huber_loss / beta",
            lambda p, t: jnp.mean(optax.huber_loss(p, t, delta=BETA)) / BETA)
        add("log_cosh", "optax.log_cosh", lambda p, t: jnp.mean(optax.log_cosh(p, t)))
        add("binary_cross_entropy_with_logits", "optax.sigmoid_binary_cross_entropy",
            lambda x, t: jnp.mean(optax.sigmoid_binary_cross_entropy(x, t)))
        add("categorical_cross_entropy", "optax.softmax_cross_entropy(log p)",
            lambda p, t: jnp.mean(optax.softmax_cross_entropy(jnp.log(p), t)))
        add("categorical_cross_entropy_with_logits", "optax.softmax_cross_entropy",
            lambda x, t: jnp.mean(optax.softmax_cross_entropy(x, t)))
        add("sparse_categorical_cross_entropy",
            "optax.softmax_cross_entropy_with_integer_labels(log p)",
            lambda p, y: jnp.mean(
                optax.softmax_cross_entropy_with_integer_labels(jnp.log(p), y)))
        add("sparse_categorical_cross_entropy_with_logits",
            "optax.softmax_cross_entropy_with_integer_labels",
            lambda x, y: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(x, y)))
        add("binary_focal_loss_with_logits", "optax.sigmoid_focal_loss",
            lambda x, t: jnp.mean(optax.sigmoid_focal_loss(x, t, alpha=ALPHA, gamma=GAMMA)))

        def optax_anchor(x: Any, t: Any, state: Any) -> Any:
            return anchor(lambda a, b: optax.sigmoid_focal_loss(a, b, alpha=ALPHA,
                                                                gamma=GAMMA))(x, t, state)

        add("anchor_focal_loss_with_logits", "optax.sigmoid_focal_loss, anchors",
            optax_anchor, ANCHOR)

    # plain jnp compositions: the best available where optax is weak or has nothing
    add("mse", "jnp (inline)", lambda p, t: jnp.mean(jnp.square(p - t)))
    add("mae", "jnp (inline)", lambda p, t: jnp.mean(jnp.abs(p - t)))
    add("rmse", "jnp (inline)", lambda p, t: jnp.sqrt(jnp.mean(jnp.square(p - t))))
    add("binary_cross_entropy", "jnp (inline)", bce, "Keras's formula: clip to [1e-7, 1-1e-7]")
    add("binary_cross_entropy_with_logits", "jnp (inline)",
        lambda x, t: jnp.mean(jax.nn.softplus(x) - x * t))
    add("categorical_cross_entropy_with_logits", "jnp (inline)",
        lambda x, t: -jnp.mean(jnp.sum(t * jax.nn.log_softmax(x, axis=-1), axis=-1)))
    add("sparse_categorical_cross_entropy_with_logits", "jnp (inline)",
        lambda x, y: sparse_nll(jax.nn.log_softmax(x, axis=-1), y))
    add("binary_focal_loss", "torchvision focal (jnp, on p)",
        lambda p, t: jnp.mean(focal_terms_prob(p, t)), TORCHVISION)
    add("binary_focal_loss_with_logits", "torchvision focal (jnp)",
        lambda x, t: jnp.mean(focal_terms(x, t)), TORCHVISION)
    add("anchor_focal_loss", "torchvision focal, anchors (jnp, on p)",
        anchor(focal_terms_prob), f"{TORCHVISION}; {ANCHOR}")
    add("anchor_focal_loss_with_logits", "torchvision focal, anchors (jnp)",
        anchor(focal_terms), f"{TORCHVISION}; {ANCHOR}")
    add("in_top_k", "jax.lax.top_k",
        lambda x, y: jnp.any(jax.lax.top_k(x, K)[1] == y[..., None], axis=-1))
    return out


# -- tensorflow ----------------------------------------------------------------------------------
def _tensorflow() -> dict[str, list[Peer]]:
    import tensorflow as tf

    out: dict[str, list[Peer]] = {}

    def add(loss: str, name: str, fn: Callable[..., Any], detail: str = "") -> None:
        out.setdefault(loss, []).append(Peer(name, fn, detail))

    def focal_terms(x: Any, t: Any) -> Any:
        p = tf.sigmoid(x)
        ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=x)
        p_t = p * t + (1 - p) * (1 - t)
        return (ALPHA * t + (1 - ALPHA) * (1 - t)) * ce * (1 - p_t) ** GAMMA

    def focal_terms_prob(p: Any, t: Any) -> Any:
        ce = -(t * tf.math.log(p) + (1 - t) * tf.math.log1p(-p))
        p_t = p * t + (1 - p) * (1 - t)
        return (ALPHA * t + (1 - ALPHA) * (1 - t)) * ce * (1 - p_t) ** GAMMA

    def anchor(terms: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        def fn(x: Any, t: Any, state: Any) -> Any:
            keep = (state != -1)[..., None]
            pos = state == 1
            t = tf.where(pos[..., None], t, tf.zeros_like(t))
            total = tf.reduce_sum(tf.where(keep, terms(x, t), tf.zeros_like(x)))
            count = tf.cast(tf.reduce_sum(tf.cast(pos, tf.int32)), x.dtype)
            return total / tf.maximum(count, 1.0)

        return fn

    add("binary_cross_entropy_with_logits", "tf.nn.sigmoid_cross_entropy_with_logits",
        lambda x, t: tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=t,
                                                                            logits=x)))
    add("categorical_cross_entropy_with_logits", "tf.nn.softmax_cross_entropy_with_logits",
        lambda x, t: tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=t,
                                                                            logits=x)))
    add("sparse_categorical_cross_entropy_with_logits",
        "tf.nn.sparse_softmax_cross_entropy_with_logits",
        lambda x, y: tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=y, logits=x)))
    # the same ops without tf.nn's Python wrappers (rank 2, as the cases are): eagerly, on
    # small inputs, the wrappers' conversions and shape juggling cost more than the op, and
    # unilosses calls the ops themselves there
    raw = "the fused op itself, without tf.nn's wrapper"
    add("categorical_cross_entropy_with_logits", "tf.raw_ops.SoftmaxCrossEntropyWithLogits",
        lambda x, t: tf.reduce_mean(tf.raw_ops.SoftmaxCrossEntropyWithLogits(
            features=x, labels=t)[0]), raw)
    add("sparse_categorical_cross_entropy_with_logits",
        "tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits",
        lambda x, y: tf.reduce_mean(tf.raw_ops.SparseSoftmaxCrossEntropyWithLogits(
            features=x, labels=y)[0]), raw)
    add("in_top_k", "tf.math.in_top_k", lambda x, y: tf.math.in_top_k(y, x, K))
    add("anchor_focal_loss", "torchvision focal, anchors (tf, on p)", anchor(focal_terms_prob),
        f"{TORCHVISION}; {ANCHOR}")
    add("anchor_focal_loss_with_logits", "torchvision focal, anchors (tf)", anchor(focal_terms),
        f"{TORCHVISION}; {ANCHOR}")

    keras = _keras_on_tensorflow()
    if keras is None:
        # Keras runs on another backend here: tf compositions instead
        add("mse", "tf (inline)", lambda p, t: tf.reduce_mean(tf.square(p - t)))
        add("mae", "tf (inline)", lambda p, t: tf.reduce_mean(tf.abs(p - t)))
        add("binary_focal_loss", "torchvision focal (tf, on p)",
            lambda p, t: tf.reduce_mean(focal_terms_prob(p, t)), TORCHVISION)
        add("binary_focal_loss_with_logits", "torchvision focal (tf)",
            lambda x, t: tf.reduce_mean(focal_terms(x, t)), TORCHVISION)
        return out
    L = keras.losses
    # Keras takes (y_true, y_pred); the loss objects are built once, outside the timing
    table = (
        ("mse", "MeanSquaredError", L.MeanSquaredError()),
        ("mae", "MeanAbsoluteError", L.MeanAbsoluteError()),
        ("huber", "Huber", L.Huber(delta=DELTA)),
        ("log_cosh", "LogCosh", L.LogCosh()),
        ("binary_cross_entropy", "BinaryCrossentropy", L.BinaryCrossentropy()),
        ("categorical_cross_entropy", "CategoricalCrossentropy", L.CategoricalCrossentropy()),
        ("sparse_categorical_cross_entropy", "SparseCategoricalCrossentropy",
         L.SparseCategoricalCrossentropy()),
        ("binary_focal_loss", "BinaryFocalCrossentropy",
         L.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=ALPHA, gamma=GAMMA)),
        ("binary_focal_loss_with_logits", "BinaryFocalCrossentropy(from_logits)",
         L.BinaryFocalCrossentropy(apply_class_balancing=True, alpha=ALPHA, gamma=GAMMA,
                                   from_logits=True)),
    )
    for loss, cls, obj in table:
        add(loss, f"keras.losses.{cls}", _keras_call(obj))
    mse_obj, huber_beta = L.MeanSquaredError(), L.Huber(delta=BETA)
    add("rmse", "sqrt(keras MeanSquaredError)", lambda p, t: tf.sqrt(mse_obj(t, p)))
    add("smooth_l1", "keras Huber(delta=beta) / beta", lambda p, t: huber_beta(t, p) / BETA)
    return out


def _keras_call(obj: Any) -> Callable[..., Any]:
    return lambda p, t: obj(t, p)


def _keras_on_tensorflow() -> Any:
    """Keras, if it is installed and runs on TensorFlow here (else None)."""
    import importlib.util
    import os
    import sys

    if importlib.util.find_spec("keras") is None:
        return None
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras if keras.backend.backend() == "tensorflow" else None


# -- numpy ---------------------------------------------------------------------------------------
def _numpy() -> dict[str, list[Peer]]:
    import numpy as np

    def huber(d: Any, delta: float) -> Any:
        a = np.abs(d)
        return np.where(a <= delta, 0.5 * d * d, delta * (a - 0.5 * delta))

    def log_softmax(x: Any) -> Any:
        z = x - x.max(axis=-1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    def normalized_log(p: Any) -> Any:
        return np.log(np.clip(p / p.sum(axis=-1, keepdims=True), EPS, 1 - EPS))

    def focal_terms(x: Any, t: Any) -> Any:
        p = 1 / (1 + np.exp(-x))
        ce = np.logaddexp(0, x) - x * t
        p_t = p * t + (1 - p) * (1 - t)
        return (ALPHA * t + (1 - ALPHA) * (1 - t)) * ce * (1 - p_t) ** GAMMA

    def focal_terms_prob(p: Any, t: Any) -> Any:
        ce = -(t * np.log(p) + (1 - t) * np.log1p(-p))
        p_t = p * t + (1 - p) * (1 - t)
        return (ALPHA * t + (1 - ALPHA) * (1 - t)) * ce * (1 - p_t) ** GAMMA

    def anchor(terms: Callable[[Any, Any], Any]) -> Callable[..., Any]:
        def fn(x: Any, t: Any, state: Any) -> Any:
            keep = (state != -1)[..., None]
            pos = state == 1
            t = np.where(pos[..., None], t, 0.0).astype(x.dtype)
            return np.sum(np.where(keep, terms(x, t), 0.0)) / max(int(pos.sum()), 1)

        return fn

    def bce(p: Any, t: Any) -> Any:
        p = np.clip(p, EPS, 1 - EPS)
        return -np.mean(t * np.log(p) + (1 - t) * np.log1p(-p))

    def sparse(logp: Any, y: Any) -> Any:
        return -np.mean(np.take_along_axis(logp, y[..., None], axis=-1))

    def top_k(x: Any, y: Any) -> Any:
        top = np.argpartition(-x, K - 1, axis=-1)[..., :K]
        return np.any(top == y[..., None], axis=-1)

    def inline(fn: Callable[..., Any]) -> list[Peer]:
        return [Peer("numpy (inline)", fn)]

    return {
        "mse": inline(lambda p, t: np.mean(np.square(p - t))),
        "mae": inline(lambda p, t: np.mean(np.abs(p - t))),
        "huber": inline(lambda p, t: np.mean(huber(p - t, DELTA))),
        "smooth_l1": inline(lambda p, t: np.mean(huber(p - t, BETA)) / BETA),
        "log_cosh": inline(lambda p, t: np.mean(np.logaddexp(p - t, t - p) - LOG2)),
        "rmse": inline(lambda p, t: np.sqrt(np.mean(np.square(p - t)))),
        "binary_cross_entropy": inline(bce),
        "binary_cross_entropy_with_logits": inline(
            lambda x, t: np.mean(np.logaddexp(0, x) - x * t)),
        "categorical_cross_entropy": inline(
            lambda p, t: -np.mean(np.sum(t * normalized_log(p), axis=-1))),
        "categorical_cross_entropy_with_logits": inline(
            lambda x, t: -np.mean(np.sum(t * log_softmax(x), axis=-1))),
        "sparse_categorical_cross_entropy": inline(lambda p, y: sparse(normalized_log(p), y)),
        "sparse_categorical_cross_entropy_with_logits": inline(
            lambda x, y: sparse(log_softmax(x), y)),
        "binary_focal_loss": inline(lambda p, t: np.mean(focal_terms_prob(p, t))),
        "binary_focal_loss_with_logits": inline(lambda x, t: np.mean(focal_terms(x, t))),
        "anchor_focal_loss": inline(anchor(focal_terms_prob)),
        "anchor_focal_loss_with_logits": inline(anchor(focal_terms)),
        "in_top_k": inline(top_k),
    }


__all__ = ["Peer", "peers_for"]
