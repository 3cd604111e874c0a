"""Real training with unilosses losses: PyTorch, Keras (JAX, TensorFlow and torch backends) and
JAX/optax, on a small separable problem, against each framework's own loss.

Each run trains a 2-8-1 tanh network with full-batch SGD (learning rate 0.5, 40 steps) on two
Gaussian blobs (256 points, centres (1, 1) and (-1, -1), standard deviation 0.6), twice from the
same initial weights: once with a unilosses loss, once with the framework's native binary
cross-entropy on logits.  Asserted:

* the loss falls: the last step's loss is at most 0.3 times the first (it starts near log 2);
* the trained model classifies at least 95% of the points correctly (the blobs overlap on
  about 0.1% of the points);
* step by step, the unilosses loss tracks the native one:
  ``|ours_k - native_k| <= (k + 1) * 64 * eps32 * max(1, |native_k|)``.  Both losses are float32
  evaluations of the same function that differ in rounding only (a few eps32 per element, the
  mean of 256 terms adds ~log2(256) eps32); the parameters drift apart by at most the sum of
  the per-step gradient roundings, which grows linearly in the step count k.  A loss that is
  wrong by anything visible (a missing smoothing, a weight, a sign) is off by far more.

The Keras run is a ``keras_check_*`` function executed per backend in a subprocess by
``_training_scripts/keras_worker.py`` (Keras fixes its backend at import).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _training_scripts import keras_runner

STEPS = 40
LR = 0.5
N_POINTS = 256
HIDDEN = 8
EPS32 = float(np.finfo(np.float32).eps)
MIN_ACCURACY = 0.95
MAX_LOSS_RATIO = 0.3


def blobs(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two Gaussian blobs in the plane, labels 0/1, float32."""
    rng = np.random.default_rng(seed)
    y = (rng.random(N_POINTS) < 0.5).astype(np.float32)
    centre = np.where(y[:, None] == 1.0, 1.0, -1.0)
    x = centre + 0.6 * rng.normal(size=(N_POINTS, 2))
    return x.astype(np.float32), y


def init_params(seed: int = 0) -> dict[str, np.ndarray]:
    """Glorot-uniform weights and zero biases, float32."""
    rng = np.random.default_rng(seed)

    def glorot(n_in: int, n_out: int) -> np.ndarray:
        lim = np.sqrt(6.0 / (n_in + n_out))
        return rng.uniform(-lim, lim, size=(n_in, n_out)).astype(np.float32)

    return {"w1": glorot(2, HIDDEN), "b1": np.zeros(HIDDEN, np.float32),
            "w2": glorot(HIDDEN, 1), "b2": np.zeros(1, np.float32)}


def assert_trained(name: str, ours: list[float], native: list[float], accuracy: float) -> None:
    ours_a, native_a = np.asarray(ours, np.float64), np.asarray(native, np.float64)
    assert ours_a.shape == native_a.shape == (STEPS,), (ours_a.shape, native_a.shape)
    assert np.all(np.isfinite(ours_a)), ours_a
    assert ours_a[-1] <= MAX_LOSS_RATIO * ours_a[0], f"{name}: loss {ours_a[0]} -> {ours_a[-1]}"
    assert accuracy >= MIN_ACCURACY, f"{name}: accuracy {accuracy}"
    steps = np.arange(STEPS)
    bound = (steps + 1) * 64 * EPS32 * np.maximum(1.0, np.abs(native_a))
    gap = np.abs(ours_a - native_a)
    bad = np.nonzero(gap > bound)[0]
    assert bad.size == 0, (
        f"{name}: the unilosses loss leaves the native one at step {bad[0]}: "
        f"{ours_a[bad[0]]} vs {native_a[bad[0]]} (gap {gap[bad[0]]:.3g} > {bound[bad[0]]:.3g})")


# -- PyTorch ------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_torch_training_tracks_bce_with_logits():
    import torch

    import unilosses.torch as ut

    x_np, y_np = blobs()
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)[:, None]
    params = init_params()

    def make() -> torch.nn.Module:
        model = torch.nn.Sequential(torch.nn.Linear(2, HIDDEN), torch.nn.Tanh(),
                                    torch.nn.Linear(HIDDEN, 1))
        with torch.no_grad():
            model[0].weight.copy_(torch.from_numpy(params["w1"].T))
            model[0].bias.copy_(torch.from_numpy(params["b1"]))
            model[2].weight.copy_(torch.from_numpy(params["w2"].T))
            model[2].bias.copy_(torch.from_numpy(params["b2"]))
        return model

    def train(loss_fn: torch.nn.Module) -> tuple[list[float], float]:
        model = make()
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        history = []
        for _ in range(STEPS):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            history.append(loss.item())
        with torch.no_grad():
            accuracy = ((model(x) > 0).float() == y).float().mean().item()
        return history, accuracy

    ours, accuracy = train(ut.BCEWithLogitsLoss())
    native, _ = train(torch.nn.BCEWithLogitsLoss())
    assert_trained("torch", ours, native, accuracy)


# -- JAX / optax --------------------------------------------------------------------------------
needs_optax = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None or importlib.util.find_spec("optax") is None,
    reason="jax/optax is not installed")


def _jax_forward(params: Any, x: Any) -> Any:
    import jax.numpy as jnp

    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return (h @ params["w2"] + params["b2"])[:, 0]


@pytest.mark.slow
@needs_optax
def test_jax_optax_training_tracks_sigmoid_binary_cross_entropy():
    """``jax.value_and_grad`` of a unilosses loss inside a jitted optax step."""
    import jax
    import jax.numpy as jnp
    import optax

    import unilosses

    x_np, y_np = blobs()
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)

    def ours(params: Any) -> Any:
        return unilosses.binary_cross_entropy_with_logits(_jax_forward(params, x), y)

    def native(params: Any) -> Any:
        return optax.sigmoid_binary_cross_entropy(_jax_forward(params, x), y).mean()

    def train(loss_fn: Any) -> tuple[list[float], float]:
        params = jax.tree_util.tree_map(jnp.asarray, init_params())
        opt = optax.sgd(LR)
        state = opt.init(params)

        @jax.jit
        def step(params: Any, state: Any) -> Any:
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, state = opt.update(grads, state, params)
            return optax.apply_updates(params, updates), state, loss

        history = []
        for _ in range(STEPS):
            params, state, loss = step(params, state)
            assert loss.dtype == jnp.float32
            history.append(float(loss))
        accuracy = float(jnp.mean((_jax_forward(params, x) > 0) == (y == 1)))
        return history, accuracy

    ours_history, accuracy = train(ours)
    native_history, _ = train(native)
    assert_trained("jax/optax", ours_history, native_history, accuracy)


@needs_optax
def test_jax_vmap_per_example_losses_and_gradients():
    """reduction="none" gives per-example losses; vmap over a per-example loss gives the same
    values, and vmap(grad) the per-example gradients (x_i (sigmoid(w.x_i + b) - y_i) for a
    linear model), whose mean is the gradient of the mean loss."""
    import jax
    import jax.numpy as jnp

    import unilosses

    x_np, y_np = blobs(1)
    x, y = jnp.asarray(x_np[:32]), jnp.asarray(y_np[:32])
    params = {"w": jnp.asarray([0.7, -0.4], jnp.float32), "b": jnp.asarray(0.1, jnp.float32)}

    def example_loss(params: Any, xi: Any, yi: Any) -> Any:
        return unilosses.binary_cross_entropy_with_logits(xi @ params["w"] + params["b"], yi)

    def batch_loss(params: Any, reduction: str = "mean") -> Any:
        return unilosses.binary_cross_entropy_with_logits(x @ params["w"] + params["b"], y,
                                                          reduction=reduction)

    per_example = jax.jit(jax.vmap(example_loss, in_axes=(None, 0, 0)))(params, x, y)
    unreduced = batch_loss(params, "none")
    grads = jax.vmap(jax.grad(example_loss), in_axes=(None, 0, 0))(params, x, y)

    z = x_np[:32].astype(np.float64) @ np.array([0.7, -0.4]) + 0.1
    t = y_np[:32].astype(np.float64)
    want = np.logaddexp(0, z) - t * z                      # softplus(z) - t z
    resid = 1 / (1 + np.exp(-z)) - t
    tol = {"rtol": 256 * 1.2e-7, "atol": 256 * 1.2e-7}
    assert per_example.shape == unreduced.shape == (32,)
    np.testing.assert_allclose(np.asarray(per_example), want, **tol)
    np.testing.assert_allclose(np.asarray(unreduced), want, **tol)
    np.testing.assert_allclose(np.asarray(grads["w"]), resid[:, None] * x_np[:32], **tol)
    np.testing.assert_allclose(np.asarray(grads["b"]), resid, **tol)
    mean_grad = jax.grad(batch_loss)(params)
    np.testing.assert_allclose(np.asarray(mean_grad["w"]), np.asarray(grads["w"]).mean(0), **tol)


# -- Keras, one subprocess per backend -----------------------------------------------------------
def keras_check_training_tracks_binary_crossentropy(tmp: Path) -> None:
    """Keras training with unilosses.keras.BinaryCrossentropy(from_logits=True) against
    keras.losses.BinaryCrossentropy(from_logits=True), from the same weights."""
    import keras

    import unilosses.keras as uk

    x, y = blobs()
    params = init_params()

    def train(loss: Any) -> tuple[list[float], float]:
        model = keras.Sequential([keras.Input((2,)),
                                  keras.layers.Dense(HIDDEN, activation="tanh"),
                                  keras.layers.Dense(1)])
        model.set_weights([params["w1"], params["b1"], params["w2"], params["b2"]])
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=LR), loss=loss)
        # Keras's compiled train step on the full batch; it returns the loss before its update.
        # (model.fit runs the same step with more per-epoch machinery.)  y has shape (256,)
        # against outputs of shape (256, 1), which Keras's rank rule aligns.
        history = [float(model.train_on_batch(x, y)) for _ in range(STEPS)]
        logits = model.predict(x, batch_size=N_POINTS, verbose=0)[:, 0]
        return history, float(np.mean((logits > 0) == (y == 1)))

    ours, accuracy = train(uk.BinaryCrossentropy(from_logits=True))
    native, _ = train(keras.losses.BinaryCrossentropy(from_logits=True))
    assert_trained(f"keras-{keras.backend.backend()}", ours, native, accuracy)


@pytest.mark.slow
@pytest.mark.parametrize("backend", keras_runner.backend_params())
def test_keras_training(backend: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    keras_runner.assert_check(backend, "keras_check_training_tracks_binary_crossentropy",
                              tmp_path_factory)
