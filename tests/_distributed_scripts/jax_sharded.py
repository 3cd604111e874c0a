"""JAX on 8 host devices: sharded losses equal unsharded ones; the shard_map recipe.

Run by tests/test_distributed.py in a fresh interpreter (XLA_FLAGS must be set before jax is
imported): ``python jax_sharded.py OUT.npz``.  It writes the numbers; the test asserts on them.
"""

from __future__ import annotations

import os
import sys

import numpy as np

if __name__ == "__main__":  # (pytest --doctest-modules imports this file: no side effects)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + " --xla_force_host_platform_device_count=8").strip()
    os.environ["JAX_ENABLE_X64"] = "1"
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import unilosses
    from unilosses.distributed import (
        anchor_normalizer,
        global_mean,
        global_sum,
        positive_count,
    )

B, C, A, F = 16, 4, 6, 5
NOGRAD = {"in_top_k", "top_k_accuracy"}


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def anchor_states(rng: np.random.Generator, positives: list[int], anchors: int) -> np.ndarray:
    """One row per image: ``positives[i]`` anchors in state 1, one ignored (-1), the rest 0."""
    s = np.zeros((len(positives), anchors), np.int32)
    for i, k in enumerate(positives):
        assert k < anchors
        s[i, :k] = 1
        s[i, k] = -1
        s[i] = rng.permutation(s[i])
    return s


def make_data(rng: np.random.Generator) -> dict[str, np.ndarray]:
    logit = rng.normal(size=(B, C)) * 2.0
    labels = rng.integers(0, C, B).astype(np.int32)
    ignore = labels.copy()
    ignore[::3] = -1
    return {
        "reg_p": rng.normal(size=(B, C)) * 2.0,
        "reg_t": rng.normal(size=(B, C)),
        "prob": rng.uniform(0.02, 0.98, (B, C)),
        "t01": rng.integers(0, 2, (B, C)).astype(np.float64),
        "logit": logit,
        "prob_cat": softmax(logit),
        "soft": softmax(rng.normal(size=(B, C))),
        "labels": labels,
        "ignore": ignore,
        "mask": rng.uniform(size=(B, C)) > 0.3,
        "w": rng.uniform(0.5, 2.0, (B, C)),
        "mask1": rng.uniform(size=B) > 0.3,
        "w1": rng.uniform(0.5, 2.0, B),
        "anc_x": rng.normal(size=(B, A, C)) * 2.0,
        "anc_p": rng.uniform(0.02, 0.98, (B, A, C)),
        "anc_t": np.eye(C)[rng.integers(0, C, (B, A))],
        "state": anchor_states(rng, [int(k) for k in rng.integers(0, 4, B)], A),
        "onehot": np.eye(C)[labels],
        "var": rng.uniform(0.1, 2.0, (B, C)),
        "counts": rng.poisson(2.0, (B, C)).astype(np.float64),
        "box": boxes(rng),
        "box_t": boxes(rng),
        "q_t": rng.normal(size=B),
    }


def boxes(rng: np.random.Generator) -> np.ndarray:
    """(B, 4) boxes (x1, y1, x2, y2), x1 < x2 and y1 < y2."""
    lo = rng.uniform(0.0, 4.0, (B, 2))
    return np.concatenate([lo, lo + rng.uniform(0.5, 3.0, (B, 2))], axis=1)


def cases(d: dict[str, jax.Array]) -> dict[str, tuple[str, tuple, dict]]:
    """case name -> (loss name, positional arrays, keywords): every public loss once or twice,
    "/masked" with ``where`` and ``weights`` (the masked mean divides by a count that spans the
    shards)."""
    m2 = {"where": d["mask"], "weights": d["w"]}  # elementwise loss (B, C)
    m1 = {"where": d["mask1"], "weights": d["w1"]}  # elementwise loss (B,)
    reg, binary = (d["reg_p"], d["reg_t"]), (d["logit"], d["t01"])
    table: list[tuple[str, str, tuple, dict]] = [
        # regression
        ("mse", "", reg, {}),
        ("mse", "/masked", reg, m2),
        ("mse", "/sum", reg, {"reduction": "sum"}),
        ("mae", "/none", reg, {"reduction": "none"}),
        ("huber", "/masked", reg, {"delta": 0.5, **m2}),
        ("smooth_l1", "", reg, {"beta": 0.5}),
        ("log_cosh", "/masked", reg, m2),
        ("rmse", "", reg, {}),
        ("mape", "/masked", reg, m2),
        ("msle", "", reg, {}),
        ("gaussian_nll", "/masked", (*reg, d["var"]), m2),
        ("poisson_nll", "", (d["reg_p"], d["counts"]), {}),
        ("quantile_loss", "", reg, {"quantiles": 0.3}),
        ("quantile_loss", "/4", (d["reg_p"], d["q_t"]), {"quantiles": [0.1, 0.3, 0.7, 0.9]}),
        ("cosine_similarity_loss", "/masked", reg, m1),
        # binary; hinge maps 0/1 labels to -1/1 when the whole batch is 0/1
        ("binary_cross_entropy", "", (d["prob"], d["t01"]), {}),
        ("binary_cross_entropy_with_logits", "/masked", binary, m2),
        ("binary_cross_entropy_with_logits", "/pos_weight", binary, {"pos_weight": 3.0}),
        ("binary_focal_loss", "/masked", (d["prob"], d["t01"]), m2),
        ("binary_focal_loss_with_logits", "", binary, {}),
        ("hinge", "/masked", binary, m2), ("squared_hinge", "", binary, {}),
        # categorical (class axis removed)
        ("categorical_cross_entropy", "", (d["prob_cat"], d["soft"]), {"label_smoothing": 0.1}),
        ("categorical_cross_entropy_with_logits", "/masked", (d["logit"], d["soft"]), m1),
        ("categorical_focal_loss", "", (d["prob_cat"], d["soft"]), {}),
        ("categorical_focal_loss_with_logits", "/masked", (d["logit"], d["soft"]), m1),
        ("poly1_cross_entropy_with_logits", "", (d["logit"], d["soft"]), {}),
        ("categorical_hinge", "", (d["logit"], d["onehot"]), {}),
        ("kl_divergence", "/masked", (jnp.log(d["prob_cat"]), d["soft"]), m1),
        # integer labels (gather the label's entry)
        ("sparse_categorical_cross_entropy", "", (d["prob_cat"], d["labels"]), {}),
        ("sparse_categorical_cross_entropy_with_logits", "/masked", (d["logit"], d["labels"]),
         m1),
        ("sparse_categorical_cross_entropy_with_logits", "/ignore", (d["logit"], d["ignore"]),
         {"ignore_index": -1}),
        ("sparse_categorical_focal_loss", "", (d["prob_cat"], d["labels"]), {}),
        ("sparse_categorical_focal_loss_with_logits", "/ignore", (d["logit"], d["ignore"]),
         {"ignore_index": -1}),
        ("in_top_k", "", (d["prob_cat"], d["labels"]), {"k": 2}),
        ("top_k_accuracy", "/masked", (d["prob_cat"], d["labels"]),
         {"k": 2, "where": d["mask1"]}),
        # overlap (one coefficient over everything, or one per row)
        ("dice_loss", "", (d["prob"], d["t01"]), {}),
        ("dice_loss", "/rows", (d["prob"], d["t01"]), {"axis": 1, "smooth": 1.0}),
        ("tversky_loss", "", (d["prob"], d["t01"]), {"alpha": 0.3, "beta": 0.7}),
        # boxes
        ("giou_loss", "/masked", (d["box"], d["box_t"]), m1),
        ("diou_loss", "", (d["box"], d["box_t"]), {}),
        ("ciou_loss", "", (d["box"], d["box_t"]), {}),
        # anchors
        ("anchor_focal_loss", "", (d["anc_p"], d["anc_t"], d["state"]), {}),
        ("anchor_focal_loss_with_logits", "", (d["anc_x"], d["anc_t"], d["state"]), {}),
    ]
    # the table may run ahead of the package (a loss being added): keep what exists; the
    # coverage test checks the other direction
    return {name + suffix: (name, args, kw) for name, suffix, args, kw in table
            if hasattr(unilosses, name)}


def one_loss(name: str, args: tuple, kw: dict) -> tuple[jax.Array, jax.Array]:
    """(value, gradient with respect to the first argument; 0 where there is none)."""
    fn = getattr(unilosses, name)
    if name in NOGRAD or kw.get("reduction") == "none":
        return fn(*args, **kw), jnp.zeros(())
    return jax.value_and_grad(lambda x, *r: fn(x, *r, **kw))(*args)


def all_losses(ds: tuple[dict[str, jax.Array], ...],
               plan: tuple[tuple[str, int], ...]) -> dict[str, tuple]:
    """Every case of ``plan`` (case name, index of its input dict in ``ds``), in one program."""
    cs = [cases(d) for d in ds]
    return {key: one_loss(*cs[i][key]) for key, i in plan}


def spec(key: str, a: np.ndarray, classes: bool) -> P:
    """Batch axis over "data"; with ``classes`` the last (class) axis also over "model".

    Never split: anchor states (no class axis) and box coordinates (4 numbers a box).
    """
    if a.ndim == 1 or key in ("state", "box", "box_t") or not classes:
        return P("data")
    return P("data", *([None] * (a.ndim - 2)), "model")


def _mesh(kind: str) -> jax.sharding.Mesh:
    axis_type = getattr(jax.sharding.AxisType, kind)
    return jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type, axis_type))


def _put(data: dict[str, np.ndarray], mesh: jax.sharding.Mesh,
         classes: bool) -> dict[str, jax.Array]:
    return {k: jax.device_put(v, NamedSharding(mesh, spec(k, v, classes)))
            for k, v in data.items()}


def _run(res: dict[str, np.ndarray], tag: str, ds: tuple, plan: list[tuple[str, int]]) -> None:
    got = jax.jit(all_losses, static_argnums=1)(ds, tuple(plan))
    for key, _ in plan:
        res[f"jit/{tag}/{key}/value"] = np.asarray(got[key][0])
        res[f"jit/{tag}/{key}/grad"] = np.asarray(got[key][1])


def part_sharded_jit(res: dict[str, np.ndarray]) -> None:
    """Each case under jit on a (4, 2) mesh: batch axis over "data", class axis over "model".

    The ``Explicit`` mesh (sharding in types; what ``jax.make_mesh`` gives by default in recent
    JAX) runs every case; one that cannot be traced there with its class axis sharded is
    recorded (``.../error``), runs with only its batch axis sharded, and runs class-sharded on
    an ``Auto`` mesh (the compiler propagates shardings) instead.  Three compiles in all: the
    unsharded reference, the Explicit mesh, the Auto mesh.
    """
    data = make_data(np.random.default_rng(0))
    whole = {k: jax.device_put(v, jax.devices()[0]) for k, v in data.items()}
    keys = tuple(cases(whole))
    res["covered"] = np.array(sorted({name for name, _, _ in cases(whole).values()}))
    _run(res, "whole", (whole,), [(k, 0) for k in keys])

    explicit = _mesh("Explicit")
    both = (_put(data, explicit, True), _put(data, explicit, False))
    res["jit/shards"] = np.array(
        [len({str(s.index) for s in both[0][k].addressable_shards}) for k in sorted(data)])
    plan, failed = [], []
    for key, case in cases(both[0]).items():
        try:  # tracing only (cheap)
            jax.eval_shape(lambda case=case: one_loss(*case))
            plan.append((key, 0))
        except Exception as e:  # recorded; the test judges it
            res[f"jit/Explicit/{key}/error"] = np.array(f"{type(e).__name__}: {e}")
            plan.append((key, 1))
            failed.append((key, 0))
    _run(res, "Explicit", both, plan)
    if failed:
        _run(res, "Auto", (_put(data, _mesh("Auto"), True),), failed)


# -- shard_map: anchor focal loss of a linear head, 8 shards with different positive counts ---

POSITIVES = [3, 0, 1, 5, 0, 2, 1, 4]  # per image = per shard


def model(params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    return x @ params["w"] + params["b"]


def full_loss(params, x, t, s):  # type: ignore[no-untyped-def]
    return unilosses.anchor_focal_loss_with_logits(model(params, x), t, s)


def recipe(params, x, t, s):  # type: ignore[no-untyped-def]
    n = anchor_normalizer(s, axis_name="data")
    return global_sum(unilosses.anchor_focal_loss_with_logits(model(params, x), t, s,
                                                              normalizer=n), axis_name="data")


def recipe_mean(params, x, t, s):  # type: ignore[no-untyped-def]
    local_sum = unilosses.anchor_focal_loss_with_logits(model(params, x), t, s, normalizer=1.0)
    return global_mean(local_sum, positive_count(s), axis_name="data")


def local_normalizer(params, x, t, s):  # type: ignore[no-untyped-def]
    # wrong on purpose: each shard divides by its own positives
    return global_sum(unilosses.anchor_focal_loss_with_logits(model(params, x), t, s),
                      axis_name="data")


def grad_inside(params, x, t, s):  # type: ignore[no-untyped-def]
    return jax.value_and_grad(recipe)(params, x, t, s)


def pmap_grad(params, x, t, s):  # type: ignore[no-untyped-def]
    # under pmap psum transposes to psum: each device holds W/N dS_r, so pmean (as DDP)
    return jax.lax.pmean(jax.grad(recipe)(params, x, t, s), "data")


def part_shard_map(res: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    n = len(POSITIVES)
    x = rng.normal(size=(n, A, F))
    t = np.eye(3)[rng.integers(0, 3, (n, A))]
    s = anchor_states(rng, POSITIVES, A)
    params = {"w": jnp.asarray(rng.normal(size=(F, 3))), "b": jnp.asarray(rng.normal(size=3))}
    mesh = jax.make_mesh((n,), ("data",))
    res["sm/positives_per_shard"] = (s == 1).sum(axis=1)
    v, g = jax.jit(jax.value_and_grad(full_loss))(params, x, t, s)
    res["sm/full/value"], res["sm/full/grad_w"] = np.asarray(v), np.asarray(g["w"])
    res["sm/full/grad_b"] = np.asarray(g["b"])
    with jax.set_mesh(mesh):
        put = [jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (x, t, s)]
        specs = dict(mesh=mesh, in_specs=(P(), P("data"), P("data"), P("data")))
        for name, fn in (("recipe", recipe), ("recipe_mean", recipe_mean),
                         ("local_normalizer", local_normalizer)):
            sm = jax.shard_map(fn, out_specs=P(), **specs)
            v, g = jax.jit(jax.value_and_grad(sm))(params, *put)
            res[f"sm/{name}/value"] = np.asarray(v)
            res[f"sm/{name}/grad_w"], res[f"sm/{name}/grad_b"] = np.asarray(g["w"]), np.asarray(
                g["b"])
        sm = jax.shard_map(grad_inside, out_specs=(P(), P()), **specs)
        v, g = jax.jit(sm)(params, *put)
        res["sm/grad_inside/value"] = np.asarray(v)
        res["sm/grad_inside/grad_w"], res["sm/grad_inside/grad_b"] = np.asarray(
            g["w"]), np.asarray(g["b"])
    # pmap (outside the mesh context: it is built on shard_map with its own mesh)
    g = jax.pmap(pmap_grad, axis_name="data", in_axes=(None, 0, 0, 0))(params, x, t, s)
    res["sm/pmap/grad_w"], res["sm/pmap/grad_b"] = np.asarray(g["w"][0]), np.asarray(g["b"][0])


# -- shard_map: a weighted mean (class weights) whose global weight sum is below 1 -----------

CLASS_WEIGHTS = [0.02, 0.05, 0.01]
LABELS = [0, -1, 2, 1, -1, 1, 0, 2]  # one row per shard; shards 1 and 4 have only ignored rows


def weighted_ce(z, labels, reduction):  # type: ignore[no-untyped-def]
    return unilosses.sparse_categorical_cross_entropy_with_logits(
        z, labels, class_weights=jnp.asarray(CLASS_WEIGHTS), ignore_index=-1,
        reduction=reduction)


def weighted_recipe(z, labels):  # type: ignore[no-untyped-def]
    weight_sum = jnp.sum(jnp.where(labels != -1, jnp.asarray(CLASS_WEIGHTS)[labels], 0.0))
    return global_mean(weighted_ce(z, labels, "sum"), weight_sum, axis_name="data")


def part_weighted_mean(res: dict[str, np.ndarray]) -> None:
    z = np.random.default_rng(2).normal(size=(len(LABELS), 3)) * 2.0
    labels = np.array(LABELS, np.int32)
    res["wm/logits"], res["wm/labels"] = z, labels
    res["wm/class_weights"] = np.array(CLASS_WEIGHTS)
    v, g = jax.jit(jax.value_and_grad(lambda z, l: weighted_ce(z, l, "weighted_mean")))(
        z, labels)
    res["wm/full/value"], res["wm/full/grad"] = np.asarray(v), np.asarray(g)
    mesh = jax.make_mesh((len(LABELS),), ("data",))
    with jax.set_mesh(mesh):
        put = [jax.device_put(a, NamedSharding(mesh, P("data"))) for a in (z, labels)]
        sm = jax.shard_map(weighted_recipe, mesh=mesh, in_specs=(P("data"), P("data")),
                           out_specs=P())
        v, g = jax.jit(jax.value_and_grad(sm))(*put)
    res["wm/recipe/value"], res["wm/recipe/grad"] = np.asarray(v), np.asarray(g)


def main() -> None:
    # XLA's optimisation passes are most of the compile time on 2 cores; the SPMD partitioner
    # and the collectives, which are what is tested here, run regardless
    jax.config.update("jax_disable_most_optimizations", True)
    assert jax.device_count() == 8, jax.devices()
    res: dict[str, np.ndarray] = {}
    part_sharded_jit(res)
    part_shard_map(res)
    part_weighted_mean(res)
    np.savez(sys.argv[1], **res)


if __name__ == "__main__":
    main()
