"""Eager JAX calls compiled whole (``unilosses._core.eager``): the same numbers, dtypes and
errors as the op-by-op path, checks deferred to after the run, and the eager path wherever
the compiled one does not apply."""

from __future__ import annotations

import re

import numpy as np
import pytest

import unilosses
from unilosses._core import eager

jax = pytest.importorskip("jax")
jnp = jax.numpy


@pytest.fixture
def op_by_op(monkeypatch):  # type: ignore[no-untyped-def]
    """Run a call on the op-by-op path, as before the compiled one."""
    ad = unilosses.backends.adapter_named("jax")

    def run(f, *args, **kwargs):  # type: ignore[no-untyped-def]
        with monkeypatch.context() as m:
            m.setattr(type(ad), "compile_whole", None)
            return f(*args, **kwargs)

    return run


@pytest.fixture
def compiled(monkeypatch):  # type: ignore[no-untyped-def]
    """The forms compiled during the test (a fresh cache)."""
    monkeypatch.setattr(eager, "_compiled", {})
    monkeypatch.setattr(eager, "_forms", {})
    return eager._compiled


def _inputs(dtype):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6, 5)).astype(dtype)
    p = rng.dirichlet(np.ones(5), size=6).astype(dtype)
    y = rng.integers(0, 5, size=6)
    t = rng.uniform(size=(6, 5)).astype(dtype)
    return x, p, y, t


CALLS = {
    "mse": lambda x, p, y, t: unilosses.mse(x, t),
    "huber": lambda x, p, y, t: unilosses.huber(x, t, delta=0.5, reduction="sum"),
    "log_cosh": lambda x, p, y, t: unilosses.log_cosh(x, t, reduction="none"),
    "bce_logits": lambda x, p, y, t: unilosses.binary_cross_entropy_with_logits(x, t),
    "bce": lambda x, p, y, t: unilosses.binary_cross_entropy(p, t),
    "cce": lambda x, p, y, t: unilosses.categorical_cross_entropy(p, p, label_smoothing=0.1),
    "cce_logits": lambda x, p, y, t: unilosses.categorical_cross_entropy_with_logits(x, p),
    "sparse": lambda x, p, y, t: unilosses.sparse_categorical_cross_entropy(p, y),
    "sparse_logits": lambda x, p, y, t: unilosses.sparse_categorical_cross_entropy_with_logits(
        x, y, weights=t[:, 0], where=t[:, 1] > 0.3),
    "focal": lambda x, p, y, t: unilosses.binary_focal_loss_with_logits(x, t, gamma=1.5),
    "anchor": lambda x, p, y, t: unilosses.anchor_focal_loss_with_logits(
        x[None], (t[None] > 0.5) * 1.0, jnp.asarray(y[None] % 3 - 1)),
    "in_top_k": lambda x, p, y, t: unilosses.in_top_k(x, y, k=2),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("name", list(CALLS))
def test_compiled_calls_give_the_op_by_op_numbers(name, dtype, compiled, op_by_op):  # type: ignore[no-untyped-def]
    if dtype == np.float64 and not jax.config.jax_enable_x64:
        pytest.skip("float64 needs jax_enable_x64")
    x, p, y, t = (jnp.asarray(a) for a in _inputs(dtype))
    call = CALLS[name]
    want = op_by_op(call, x, p, y, t)
    assert not compiled
    got = call(x, p, y, t)
    assert compiled, "the eager call was not compiled"
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == jnp.bool_:
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    else:
        eps = float(jnp.finfo(got.dtype).eps)
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=16 * eps,
                                   atol=16 * eps)
    again = call(x, p, y, t)  # (the same form: no new compilation)
    assert len(compiled) == 1 and np.array_equal(np.asarray(again), np.asarray(got))


BAD = {
    "labels": (lambda: unilosses.sparse_categorical_cross_entropy_with_logits(
        jnp.zeros((2, 3)), jnp.array([0, 3])), "outside [0, 3)"),
    "probabilities": (lambda: unilosses.binary_cross_entropy(
        jnp.array([0.5, 1.5]), jnp.array([0.0, 1.0])), "outside [0, 1]"),
    "anchor states": (lambda: unilosses.anchor_focal_loss_with_logits(
        jnp.zeros((1, 2, 3)), jnp.zeros((1, 2, 3)), jnp.array([[0, 2]])), "other than -1"),
    "class weights": (lambda: unilosses.sparse_categorical_cross_entropy_with_logits(
        jnp.zeros((2, 3)), jnp.array([0, 1]), class_weights=jnp.array([1.0, -1.0, 1.0])),
        "negative"),
    "alpha": (lambda: unilosses.binary_focal_loss_with_logits(
        jnp.zeros(3), jnp.zeros(3), alpha=jnp.array([0.5, 2.0, 0.5])), "alpha"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_deferred_checks_raise_their_errors(case, compiled):  # type: ignore[no-untyped-def]
    call, message = BAD[case]
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
    assert compiled  # (compiled, run, its predicate failed: then raised eagerly)
    with unilosses.checks(False):
        out = call()  # no check: a number, as the op-by-op path gives it
    assert out.shape == ()


def test_eager_path_where_the_compiled_one_does_not_apply(compiled):  # type: ignore[no-untyped-def]
    x = jnp.arange(4.0)
    # a list, a NumPy array (refused as from two frameworks), an unhashable option
    assert float(unilosses.mse(x, [0.0, 1.0, 2.0, 3.0])) == 0.0
    with pytest.raises(TypeError, match="two frameworks"):
        unilosses.mse(x, np.ones(4))
    with pytest.raises(ValueError, match="shape"):
        unilosses.mse(x, jnp.ones(3))  # (traced, raised, raised again eagerly)
    assert [key[1][:2] for key in compiled] == [(eager._ARRAY, eager._ARRAY)]


@pytest.mark.parametrize("transform", ["grad", "jit_grad", "vmap", "hessian"])
def test_tracers_run_compiled_without_checks(transform, compiled, op_by_op):  # type: ignore[no-untyped-def]
    x, p, y, t = (jnp.asarray(a) for a in _inputs(np.float32))

    def loss(x, t):  # type: ignore[no-untyped-def]
        return unilosses.binary_cross_entropy_with_logits(x, t, reduction="sum")

    def f():  # type: ignore[no-untyped-def]  # (a jit of its own each time: jit caches traces)
        return {"grad": lambda: jax.value_and_grad(loss),
                "jit_grad": lambda: jax.jit(jax.grad(loss)), "vmap": lambda: jax.vmap(loss),
                "hessian": lambda: lambda x, t: jax.hessian(loss)(x[0], t[0])}[transform]()

    want = op_by_op(f(), x, t)
    got = f()(x, t)
    # (a tracer's values are not read: compiled with the checks off, as traced code has them)
    assert compiled and all(key[-1] is None for key in compiled)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=4 * np.finfo(np.float32).eps,
                                   atol=4 * np.finfo(np.float32).eps)
    # a probability out of range: refused eagerly, unchecked under grad (op by op alike)
    bad = t.at[0, 0].set(2.0)
    with pytest.raises(ValueError, match="probabilit"):
        unilosses.binary_cross_entropy(bad, t)
    for run in (op_by_op, lambda f, *a: f(*a)):
        run(jax.grad(lambda q: unilosses.binary_cross_entropy(q, t)), bad)


def test_option_types_make_distinct_forms(compiled):  # type: ignore[no-untyped-def]
    x, t = jnp.linspace(-3.0, 3.0, 7), jnp.zeros(7)
    # (1 == 1.0 as keys: each compiled with its own type, as the op-by-op path takes it)
    a = unilosses.huber(x, t, delta=1)
    b = unilosses.huber(x, t, delta=1.0)
    assert len(compiled) == 2 and float(a) == float(b)


def test_forms_per_loss_are_bounded(compiled, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(eager, "_MAX_FORMS", 3)
    x, t = jnp.linspace(-3.0, 3.0, 7), jnp.zeros(7)
    for i in range(6):
        delta = 0.5 + i
        want = float(np.mean(np.where(np.abs(np.asarray(x)) <= delta, 0.5 * np.asarray(x) ** 2,
                                      delta * (np.abs(np.asarray(x)) - 0.5 * delta))))
        assert float(unilosses.huber(x, t, delta=delta)) == pytest.approx(want, rel=1e-6)
    assert len(compiled) == 3


def test_other_backends_run_as_they_are(compiled):  # type: ignore[no-untyped-def]
    assert float(unilosses.mse(np.ones(3), np.zeros(3))) == 1.0
    assert not compiled


def test_a_form_that_cannot_be_traced_stays_eager(compiled):  # type: ignore[no-untyped-def]
    runs = []

    def reads_its_values(x, /):  # type: ignore[no-untyped-def]
        if eager.runs_whole(x):
            return eager.run_whole(reads_its_values, locals())
        runs.append(type(x))
        return x * float(x.sum())  # (concrete only: fails under jit)

    x = jnp.arange(3.0)
    for _ in range(3):
        np.testing.assert_array_equal(np.asarray(reads_its_values(x)), [0.0, 3.0, 6.0])
    # one trace (failed), then eager runs only: never traced again
    tracers = [t for t in runs if issubclass(t, jax.core.Tracer)]
    assert len(tracers) == 1 and len(runs) == 4
    assert list(compiled.values()) == [eager._EAGER]


def test_symbolic_shapes_run_op_by_op(compiled):  # type: ignore[no-untyped-def]
    # (through the inner jit, the second export of a loss found the first one's dimension
    # value, a tracer, among its constants: "No constant handler for type")
    from jax import export

    def value_and_grad(x, t):  # type: ignore[no-untyped-def]
        return jax.value_and_grad(lambda x: unilosses.binary_focal_loss(x, t))(x)

    def exported():  # type: ignore[no-untyped-def]  # (each with dimensions of its own)
        spec = jax.ShapeDtypeStruct(export.symbolic_shape("b, c"), jnp.float32)
        return export.export(jax.jit(value_and_grad))(spec, spec)

    x = jnp.asarray(_inputs(np.float32)[1])
    exports = [exported(), exported()]
    for e in exports:
        for g, w in zip(e.call(x, x), value_and_grad(x, x), strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)


def test_losses_within_a_compiled_loss_run_in_its_trace(compiled, op_by_op):  # type: ignore[no-untyped-def]
    # (inline, their checks are the compiled call's own: each in a jit of its own, their
    # predicates would be values of another trace)
    def outer(p, t, /):  # type: ignore[no-untyped-def]
        if eager.runs_whole(p):
            return eager.run_whole(outer, locals())
        return unilosses.binary_cross_entropy(p, t) + unilosses.mse(p, t)

    p = jnp.asarray([0.2, 0.7, 0.9])
    t = jnp.asarray([0.0, 1.0, 1.0])
    want = (np.mean(-np.log([0.8, 0.7, 0.9])) + np.mean(np.square([0.2, 0.3, 0.1])))
    np.testing.assert_allclose(float(outer(p, t)), want, rtol=1e-6)
    assert len(compiled) == 1
    with pytest.raises(ValueError, match="probabilit"):
        outer(p.at[0].set(1.5), t)  # (the inner loss's check, read after the outer run)
    grad = jax.grad(lambda p: outer(p, t))
    np.testing.assert_allclose(np.asarray(grad(p)), np.asarray(op_by_op(grad, p)), rtol=1e-6)


def test_every_loss_asks_to_run_whole():  # type: ignore[no-untyped-def]
    # (the first thing in each public loss's body; a loss without it is right, but slow
    # eagerly on JAX: nothing else would notice)
    import inspect

    import unilosses.losses as losses

    missing = []
    count = 0
    for module in (getattr(losses, m) for m in dir(losses) if not m.startswith("_")):
        if not inspect.ismodule(module):
            continue
        for name, fn in vars(module).items():
            if (inspect.isfunction(fn) and fn.__module__ == module.__name__
                    and not name.startswith("_") and getattr(unilosses, name, None) is fn):
                count += 1
                if not {"runs_whole", "run_whole"} <= set(fn.__code__.co_names):
                    missing.append(name)
    assert count >= 38 and not missing, (count, missing)
