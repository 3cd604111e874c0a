"""One MirroredStrategy training step (2 logical CPUs) of a linear anchor head, per recipe.

Run by tests/test_distributed.py in a fresh interpreter (the logical devices must be set up
before TensorFlow initialises): ``python tf_mirrored.py OUT.npz``.  Replica r trains on the
contiguous block of images ``[r * B/2, (r+1) * B/2)`` with a Keras SGD optimizer in a custom
loop (``strategy.run``, ``GradientTape``, ``apply_gradients``).  The single-device, full-batch
loss and gradient are computed first.  It writes the numbers; the test asserts on them.
"""

from __future__ import annotations

import os
import sys

import numpy as np

if __name__ == "__main__":  # (pytest --doctest-modules imports this file: no side effects)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    import unilosses
    from unilosses.distributed import (
        anchor_normalizer,
        global_mean,
        global_sum,
        positive_count,
    )

A, F, C = 6, 5, 3
POSITIVES = [4, 3, 0, 1]  # per image: replica 0 holds 7 positives, replica 1 holds 1
LR = 0.5
WORLD = 2

RECIPES = ("recipe", "recipe_mean", "normalizer_only", "native_all_reduce", "local_normalizer")


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    b = len(POSITIVES)
    x = rng.normal(size=(b, A, F))
    t = np.eye(C)[rng.integers(0, C, (b, A))]
    s = np.zeros((b, A), np.int32)
    for i, k in enumerate(POSITIVES):
        s[i, :k] = 1
        s[i, k] = -1  # one ignored anchor per image
        s[i] = rng.permutation(s[i])
    return x, t, s


def loss_of(recipe: str, logits, t, s):  # type: ignore[no-untyped-def]
    afl = unilosses.anchor_focal_loss_with_logits
    if recipe == "recipe":  # the documented one
        return global_sum(afl(logits, t, s, normalizer=anchor_normalizer(s)))
    if recipe == "recipe_mean":  # the same through global_mean
        return global_mean(afl(logits, t, s, normalizer=1.0), positive_count(s))
    if recipe == "normalizer_only":  # also right here: apply_gradients sums over replicas
        return afl(logits, t, s, normalizer=anchor_normalizer(s))
    if recipe == "native_all_reduce":  # wrong: TF's all_reduce gradient is itself all-reduced
        ctx = tf.distribute.get_replica_context()
        return ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                              afl(logits, t, s, normalizer=anchor_normalizer(s)))
    if recipe == "local_normalizer":  # wrong: each replica divides by its own positives
        return global_sum(afl(logits, t, s))
    raise ValueError(recipe)


def flat(vs) -> np.ndarray:  # type: ignore[no-untyped-def]
    return np.concatenate([np.asarray(v).ravel() for v in vs])


def main() -> None:
    tf.get_logger().setLevel("ERROR")  # one tf.function per recipe: no retracing warnings
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(WORLD)])
    x, t, s = make_data()
    rng = np.random.default_rng(1)
    w0, b0 = rng.normal(size=(F, C)), rng.normal(size=C)
    res: dict[str, np.ndarray] = {"p0": flat([w0, b0])}

    # single device, full batch, no strategy
    w, b = tf.Variable(w0), tf.Variable(b0)
    with tf.GradientTape() as tape:
        loss = unilosses.anchor_focal_loss_with_logits(tf.tensordot(x, w, 1) + b,
                                                       tf.constant(t), tf.constant(s))
    res["full/loss"], res["full/grad"] = loss.numpy(), flat(tape.gradient(loss, [w, b]))

    # outside any strategy: x itself
    res["outside_is_x"] = np.array(global_sum(loss) is loss)

    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(WORLD)])
    res["replicas"] = np.array(strategy.num_replicas_in_sync)
    with strategy.scope():  # cross-replica context: an error that says where to call it
        try:
            global_sum(loss)
            res["cross_replica_error"] = np.array("")
        except RuntimeError as e:
            res["cross_replica_error"] = np.array(str(e))
    per = len(POSITIVES) // WORLD

    def shard(a: np.ndarray):  # type: ignore[no-untyped-def]
        return strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.constant(a[ctx.replica_id_in_sync_group * per:
                                      (ctx.replica_id_in_sync_group + 1) * per]))

    xd, td, sd = shard(x), shard(t), shard(s)
    with strategy.scope():
        model = tf.keras.layers.Dense(C, dtype="float64")
        model.build((None, A, F))
        opt = tf.keras.optimizers.SGD(learning_rate=LR)
    for recipe in RECIPES:
        model.set_weights([w0, b0])

        @tf.function
        def step(x, t, s, recipe=recipe):  # type: ignore[no-untyped-def]
            def replica_fn(x, t, s):  # type: ignore[no-untyped-def]
                with tf.GradientTape() as tape:
                    loss = loss_of(recipe, model(x), t, s)
                grads = tape.gradient(loss, model.trainable_variables)
                opt.apply_gradients(zip(grads, model.trainable_variables))
                return loss, tf.reduce_sum(tf.cast(tf.equal(s, 1), tf.float64))
            return strategy.run(replica_fn, args=(x, t, s))

        loss, positives = step(xd, td, sd)
        res[f"{recipe}/loss"] = np.array([v.numpy() for v in strategy.experimental_local_results(
            loss)])
        res["positives"] = np.array([v.numpy() for v in strategy.experimental_local_results(
            positives)])
        res[f"{recipe}/params"] = flat(model.get_weights())
    np.savez(sys.argv[1], **res)


if __name__ == "__main__":
    main()
