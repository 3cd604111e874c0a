"""Every public loss traces: ``jax.jit``, ``jax.vmap`` and ``torch.compile(fullgraph=True)``
give the eager result, values and gradients, with ``where=`` and ``weights=`` traced too.

The eager call is the reference here (its correctness against independent references is
tested elsewhere); each eager value is first checked to be non-degenerate, so that agreement
means something.  ``fullgraph=True`` makes any graph break an error: a loss that only works by
falling back to Python between graphs would pass a plain ``torch.compile``.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import unilosses
from conftest import Backend, assert_close, dynamo_message, installed

try:
    import torch
except ImportError:  # pragma: no cover - the nox session without torch
    torch = None
try:
    import jax
    import jax.numpy as jnp
except ImportError:  # pragma: no cover - the nox session without jax
    jax = jnp = None

needs_torch = pytest.mark.skipif(not installed("torch"), reason="torch is not installed")
needs_jax = pytest.mark.skipif(not installed("jax"), reason="jax is not installed")


# -- one small input set per public function ----------------------------------------------------
class Case:
    """Inputs for one call (NumPy, float64 floats) and what the function accepts.

    ``args[0]`` is the predictions; ``loss_shape`` is the shape of the elementwise loss (what
    ``where``/``weights`` broadcast to); ``grad``: a differentiable loss; ``reduction``: takes
    ``reduction=``; ``where``/``weights``: takes those keywords.
    """

    def __init__(self, args: tuple, kw: dict, loss_shape: tuple[int, ...], *,
                 grad: bool = True, reduction: bool = True, where: bool = True,
                 weights: bool = True) -> None:
        self.args, self.kw, self.loss_shape = args, kw, loss_shape
        self.grad, self.reduction, self.where, self.weights = grad, reduction, where, weights


def _regression(rng, kw=None, **flags):  # type: ignore[no-untyped-def]
    return Case((rng.normal(size=(4, 5)) * 2, rng.normal(size=(4, 5)) * 2), kw or {}, (4, 5),
                **flags)


def _probabilities(rng, kw=None):  # type: ignore[no-untyped-def]
    return Case((rng.uniform(0.05, 0.95, (4, 5)), (rng.random((4, 5)) > 0.5) * 1.0),
                kw or {}, (4, 5))


def _logits(rng, kw=None):  # type: ignore[no-untyped-def]
    return Case((rng.normal(size=(4, 5)) * 3, (rng.random((4, 5)) > 0.5) * 1.0), kw or {},
                (4, 5))


def _categorical(rng, logits: bool, kw=None):  # type: ignore[no-untyped-def]
    x = rng.normal(size=(4, 5)) * 3 if logits else rng.dirichlet(np.ones(5), 4) * 1.5
    return Case((x, rng.dirichlet(np.ones(5), 4)), kw or {}, (4,))


def _sparse(rng, logits: bool, kw=None):  # type: ignore[no-untyped-def]
    x = rng.normal(size=(4, 5)) * 3 if logits else rng.dirichlet(np.ones(5), 4)
    y = rng.integers(0, 5, size=4)
    y[1] = 3                      # ignore_index=3 in the kwargs below: one ignored label
    return Case((x, y), kw or {}, (4,))


def _anchor(rng, logits: bool):  # type: ignore[no-untyped-def]
    x = rng.normal(size=(6, 3)) * 2 if logits else rng.uniform(0.05, 0.95, (6, 3))
    t = (rng.random((6, 3)) > 0.6) * 1.0
    state = np.array([1, 0, -1, 1, 0, 1])
    return Case((x, t, state), {"gamma": 1.5}, (6, 3), reduction=False, where=False,
                weights=False)


def _top_k(rng, accuracy: bool):  # type: ignore[no-untyped-def]
    scores, labels = rng.normal(size=(6, 5)), rng.integers(0, 5, size=6)
    labels[:2] = np.argmax(scores[:2], axis=1)      # hits as well as misses, in every batch
    labels[2] = np.argmin(scores[2])
    return Case((scores, labels), {"k": 2}, (6,), grad=False, reduction=False,
                where=accuracy, weights=False)


BUILDERS = {
    "mse": lambda r: _regression(r),
    "mae": lambda r: _regression(r),
    "rmse": lambda r: _regression(r, reduction=False),
    "huber": lambda r: _regression(r, {"delta": 0.7}),
    "smooth_l1": lambda r: _regression(r, {"beta": 1.5}),
    "log_cosh": lambda r: _regression(r),
    "binary_cross_entropy": lambda r: _probabilities(r),
    "binary_cross_entropy_with_logits": lambda r: _logits(r, {"pos_weight": 2.0}),
    "binary_focal_loss": lambda r: _probabilities(r, {"gamma": 0.5}),
    "binary_focal_loss_with_logits": lambda r: _logits(r, {"alpha": None}),
    "categorical_cross_entropy": lambda r: _categorical(r, False, {"label_smoothing": 0.1}),
    "categorical_cross_entropy_with_logits": lambda r: _categorical(r, True),
    "sparse_categorical_cross_entropy": lambda r: _sparse(r, False, {"ignore_index": 3}),
    "sparse_categorical_cross_entropy_with_logits": lambda r: _sparse(
        r, True, {"ignore_index": 3, "label_smoothing": 0.1}),
    "anchor_focal_loss": lambda r: _anchor(r, False),
    "anchor_focal_loss_with_logits": lambda r: _anchor(r, True),
    "in_top_k": lambda r: _top_k(r, False),
    "top_k_accuracy": lambda r: _top_k(r, True),
}
# -- the loss catalogue (issue 9) -----------------------------------------------------------------
def _one_hot(rng, logits: bool, kw=None):  # type: ignore[no-untyped-def]
    x = rng.normal(size=(4, 5)) * 2 if logits else rng.dirichlet(np.ones(5), 4) * 1.5
    return Case((x, np.eye(5)[rng.integers(0, 5, 4)]), kw or {}, (4,))


def _rows(rng, args, kw=None):  # type: ignore[no-untyped-def]
    """One loss per row of (4, d) inputs."""
    return Case(args, kw or {}, (4,))


def _segmentation(rng, kw):  # type: ignore[no-untyped-def]
    # `where` masks pixels, so the Case's loss shape is the predictions' (the mask's shape);
    # weights (its last axis: the classes) broadcast to the (images, classes) loss
    p = rng.dirichlet(np.ones(2), (4, 3, 3))
    return Case((p, np.eye(2)[rng.integers(0, 2, (4, 3, 3))]), kw, (4, 3, 3, 2))


def _boxes(rng):  # type: ignore[no-untyped-def]
    def boxes():  # type: ignore[no-untyped-def]
        xy = rng.uniform(0, 4, (6, 2))
        return np.concatenate([xy, xy + rng.uniform(0.5, 3, (6, 2))], -1)
    return Case((boxes(), boxes()), {}, (6,))


ALPHA5 = [0.1, 0.3, 0.5, 0.7, 0.9]
BUILDERS.update({
    "categorical_focal_loss": lambda r: _categorical(r, False, {"alpha": ALPHA5,
                                                                "gamma": 1.5}),
    "categorical_focal_loss_with_logits": lambda r: _categorical(r, True,
                                                                 {"label_smoothing": 0.1}),
    "sparse_categorical_focal_loss": lambda r: _sparse(r, False, {"ignore_index": 3}),
    "sparse_categorical_focal_loss_with_logits": lambda r: _sparse(
        r, True, {"alpha": ALPHA5, "gamma": 0.5}),
    "poly1_cross_entropy_with_logits": lambda r: _categorical(r, True, {"epsilon": 1.0}),
    "kl_divergence": lambda r: _rows(r, (np.log(r.dirichlet(np.ones(5), 4)),
                                         r.dirichlet(np.ones(5), 4))),
    "poisson_nll": lambda r: Case((r.normal(size=(4, 5)), r.integers(0, 5, (4, 5)) * 1.0),
                                  {"full": True}, (4, 5)),
    "gaussian_nll": lambda r: Case((r.normal(size=(4, 5)), r.normal(size=(4, 5)),
                                    r.uniform(0.2, 2.0, (4, 5))), {}, (4, 5)),
    "hinge": lambda r: _logits(r),
    "squared_hinge": lambda r: _logits(r),
    "categorical_hinge": lambda r: _one_hot(r, True),
    "cosine_similarity_loss": lambda r: _rows(r, (r.normal(size=(4, 5)),
                                                  r.normal(size=(4, 5)))),
    "quantile_loss": lambda r: Case((r.normal(size=(4, 3)), r.normal(size=(4,))),
                                    {"quantiles": [0.1, 0.5, 0.9]}, (4, 3)),
    "msle": lambda r: Case((r.uniform(0.1, 4, (4, 5)), r.uniform(0.1, 4, (4, 5))), {}, (4, 5)),
    "mape": lambda r: _regression(r),
    "dice_loss": lambda r: _segmentation(r, {"axis": (1, 2), "smooth": 1.0}),
    "tversky_loss": lambda r: _segmentation(r, {"axis": (1, 2), "alpha": 0.3, "beta": 0.7}),
    "giou_loss": _boxes,
    "diou_loss": _boxes,
    "ciou_loss": _boxes,
})
NAMES = sorted(unilosses.__all__)
BATCH = 3


def case(name: str, seed: int = 0) -> Case:
    if name not in BUILDERS:
        pytest.fail(f"public function {name!r} has no input builder in test_compile.BUILDERS")
    return BUILDERS[name](np.random.default_rng([seed, len(name)]))


def _flags(name: str) -> Case:
    return BUILDERS[name](np.random.default_rng(0))


REDUCIBLE = [n for n in NAMES if n in BUILDERS and _flags(n).reduction]
MASKABLE = [n for n in NAMES if n in BUILDERS and (_flags(n).where or _flags(n).weights)]


def _reductions(name: str) -> list[dict]:
    return [{"reduction": r} for r in ("mean", "sum", "none")] if name in REDUCIBLE else [{}]


def _cast(a: np.ndarray, dtype: str) -> np.ndarray:
    return a.astype(dtype) if a.dtype.kind == "f" else a


def _nondegenerate(value: np.ndarray) -> None:
    # compiled == eager would hold vacuously for an all-zero or non-finite result
    assert np.all(np.isfinite(value)) and np.any(value != 0), value


def test_every_public_function_has_a_builder():
    assert sorted(BUILDERS) == NAMES


def _mask_and_weights(c: Case) -> tuple[np.ndarray | None, np.ndarray | None]:
    rng = np.random.default_rng(5)
    mask = rng.random(c.loss_shape) > 0.4 if c.where else None
    if mask is not None:
        mask.reshape(-1)[:2] = (False, True)      # at least one element in and one out
    weights = rng.uniform(0.2, 3.0, c.loss_shape[-1:]) if c.weights else None
    return mask, weights


def _full_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The mask over the predictions (the class axis of categorical losses added)."""
    return mask if mask.shape == shape else np.broadcast_to(mask[..., None], shape)


def _poison(c: Case, mask: np.ndarray | None) -> np.ndarray:
    """The predictions with NaN where masked out: it must reach neither value nor gradient."""
    p = c.args[0].copy()
    if mask is not None:
        p[~_full_mask(mask, p.shape)] = np.nan
    return p


def _masked_call(fn, c: Case, mask, weights):  # type: ignore[no-untyped-def]
    def call(x, *rest):  # type: ignore[no-untyped-def]
        extra = {} if weights is None else {"weights": weights}
        return fn(x, *rest, where=mask, **extra, **c.kw)
    return call


# -- JAX ----------------------------------------------------------------------------------------
JAX = Backend("jax") if installed("jax") else None


def _jax_args(c: Case, dtype: str) -> list:
    return [jnp.asarray(_cast(a, dtype)) for a in c.args]


def _jax_everything(fn, c: Case, reductions: list[dict]):  # type: ignore[no-untyped-def]
    """Every reduction and the gradient of the default one, from one function: one compile."""
    def scalar(x, *rest):  # type: ignore[no-untyped-def]
        return jnp.sum(fn(x, *rest, **c.kw))

    def everything(*a):  # type: ignore[no-untyped-def]
        values = tuple(fn(*a, **c.kw, **red) for red in reductions)
        return values, (jax.grad(scalar)(*a) if c.grad else None)
    return everything


def _assert_same(backend: Backend, c: Case, got, expected, dtype: str) -> None:
    """``got`` (traced) equals ``expected`` (eager): to the tolerance for floats (XLA and
    inductor fuse and reorder), exactly for the booleans of in_top_k."""
    expected = np.asarray(expected)
    if expected.dtype.kind == "f":
        assert_close(backend, got, expected, dtype)
    else:
        got = backend.to_numpy(got)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


@needs_jax
@pytest.mark.parametrize("name", NAMES)
def test_jax_jit(name):
    # float32 here, float64 in the where/weights test: the eager reference is what costs
    # (op-by-op dispatch compiles every primitive once per shape and dtype)
    dtype = "float32"
    c, fn = case(name), getattr(unilosses, name)
    args = _jax_args(c, dtype)
    everything = _jax_everything(fn, c, _reductions(name))
    values, grad = jax.jit(everything)(*args)
    e_values, e_grad = everything(*args)
    for got, want in zip(values, e_values, strict=True):
        _nondegenerate(np.asarray(want))
        _assert_same(JAX, c, got, want, dtype)
    if c.grad:
        _nondegenerate(np.asarray(e_grad))
        assert_close(JAX, grad, np.asarray(e_grad), dtype)


@needs_jax
@pytest.mark.parametrize("name", NAMES)
def test_jax_vmap(name):
    """vmap over a leading batch axis equals one eager call per example, stacked: per-example
    means (and sums, and elementwise losses) and per-example gradients."""
    dtype = "float32"
    examples = [case(name, seed) for seed in range(BATCH)]
    batched = [jnp.asarray(_cast(np.stack(col), dtype))
               for col in zip(*(e.args for e in examples), strict=True)]
    c, fn = examples[0], getattr(unilosses, name)
    everything = _jax_everything(fn, c, _reductions(name))
    # jit around vmap only saves the op-by-op dispatch: the batching rules are vmap's
    values, grads = jax.jit(jax.vmap(everything))(*batched)
    eager = [everything(*_jax_args(e, dtype)) for e in examples]
    for i, got in enumerate(values):
        want = np.stack([np.asarray(e[0][i]) for e in eager])
        _nondegenerate(want)
        _assert_same(JAX, c, got, want, dtype)
    if c.grad:
        assert_close(JAX, grads, np.stack([np.asarray(e[1]) for e in eager]), dtype)


@needs_jax
@pytest.mark.parametrize("name", MASKABLE)
def test_jax_jit_where_and_weights(name):
    """Mask and weights as traced arguments; NaN in masked-out predictions stays out."""
    dtype = "float64"
    c, fn = case(name), getattr(unilosses, name)
    mask, weights = _mask_and_weights(c)
    rest = _jax_args(c, dtype)[1:]

    def loss(x, m, w, *r):  # type: ignore[no-untyped-def]
        return _masked_call(fn, c, m, w)(x, *r)

    m = None if mask is None else jnp.asarray(mask)
    w = None if weights is None else jnp.asarray(weights)
    p = jnp.asarray(_poison(c, mask))
    eager = loss(p, m, w, *rest)
    _nondegenerate(np.asarray(eager))
    _assert_same(JAX, c, jax.jit(loss)(p, m, w, *rest), eager, dtype)
    if c.grad:
        g = jax.jit(jax.grad(loss))(p, m, w, *rest)
        assert_close(JAX, g, np.asarray(jax.grad(loss)(p, m, w, *rest)), dtype)
        g = np.asarray(g)
        assert np.all(np.isfinite(g)) and np.all(g[~_full_mask(mask, g.shape)] == 0)


# -- PyTorch ------------------------------------------------------------------------------------
TORCH = Backend("torch") if installed("torch") else None

@pytest.fixture
def fresh_dynamo():  # type: ignore[no-untyped-def]
    # each test compiles new closures over the same code objects; without a reset they would
    # pile up as recompilations of one frame and hit dynamo's recompile limit
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _torch_args(c: Case, dtype: str) -> list:
    return [torch.from_numpy(_cast(a, dtype)) for a in c.args]


def _torch_run(fn, args: list, grad: bool):  # type: ignore[no-untyped-def]
    """``fn(*args)`` (a tuple of outputs) and, per output, its vector-Jacobian product with a
    fixed non-constant cotangent, w.r.t. args[0]; all as NumPy."""
    if not grad:
        return [o.numpy() for o in fn(*args)], None
    x = args[0].detach().clone().requires_grad_(True)
    outs = fn(x, *args[1:])
    grads = []
    for i, o in enumerate(outs):
        # a fresh forward per output: compiled backward graphs donate their buffers and
        # refuse retain_graph=True
        o = fn(x, *args[1:])[i] if i else o
        cot = torch.linspace(0.5, 1.5, o.numel(), dtype=o.dtype).reshape(o.shape)
        (g,) = torch.autograd.grad(o, x, cot)
        grads.append(g.numpy())
    return [o.detach().numpy() for o in outs], grads


def _compare_torch(compiled, eager, args: list, c: Case, dtype: str) -> None:
    v_c, g_c = _torch_run(compiled, args, c.grad)
    v_e, g_e = _torch_run(eager, args, c.grad)
    for got, want in zip(v_c, v_e, strict=True):
        _nondegenerate(want)
        _assert_same(TORCH, c, torch.from_numpy(got), want, dtype)
    for got, want in zip(g_c or (), g_e or (), strict=True):
        _nondegenerate(want)
        assert_close(TORCH, torch.from_numpy(got), want, dtype)


@needs_torch
@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("name", NAMES)
def test_torch_compile_aot_eager(name):
    """Values and gradients (mean and elementwise) under ``fullgraph=True``, also after a
    batch-size change."""
    dtype = "float32"
    c, fn = case(name), getattr(unilosses, name)
    reductions = [red for red in _reductions(name) if red.get("reduction") != "sum"]

    def eager(*a):  # type: ignore[no-untyped-def]
        return tuple(fn(*a, **c.kw, **red) for red in reductions)

    compiled = torch.compile(eager, backend="aot_eager", fullgraph=True)
    _compare_torch(compiled, eager, _torch_args(c, dtype), c, dtype)
    # a smaller last batch: dynamo recompiles with a symbolic leading size, which the shape
    # bookkeeping (the count of a mean, the anchor normaliser) must survive
    smaller = Case(tuple(a[:-1] for a in c.args), c.kw, c.loss_shape, grad=c.grad)
    _compare_torch(compiled, eager, _torch_args(smaller, dtype), c, dtype)


@needs_torch
@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("name", MASKABLE)
def test_torch_compile_where_and_weights(name):
    """Mask and weights as graph inputs, in float64; NaN in masked-out predictions stays out."""
    dtype = "float64"
    c, fn = case(name), getattr(unilosses, name)
    mask, weights = _mask_and_weights(c)

    def eager(x, m, w, *rest):  # type: ignore[no-untyped-def]
        return (_masked_call(fn, c, m, w)(x, *rest),)

    compiled = torch.compile(eager, backend="aot_eager", fullgraph=True)
    as_t = [None if a is None else torch.from_numpy(a) for a in (mask, weights)]
    # the gradient w.r.t. args[0]: the predictions go first, mask and weights after them
    rest = _torch_args(c, dtype)[1:]

    def call(f):  # type: ignore[no-untyped-def]
        return lambda x, *r: f(x, *as_t, *r)

    args = [torch.from_numpy(_poison(c, mask))] + rest
    _compare_torch(call(compiled), call(eager), args, c, dtype)
    if c.grad and mask is not None:
        _, (g,) = _torch_run(call(compiled), args, True)
        assert np.all(np.isfinite(g)) and np.all(g[~_full_mask(mask, g.shape)] == 0)


def _float_options(name: str) -> list[str]:
    """The keyword-only options of ``name`` whose default is a Python float."""
    params = inspect.signature(getattr(unilosses, name)).parameters.values()
    return [p.name for p in params if p.kind is p.KEYWORD_ONLY
            and isinstance(p.default, float)]


VARIED = [n for n in NAMES if _float_options(n)]


@needs_torch
@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("name", VARIED)
def test_torch_compile_varying_float_options(name):
    """Float options passed into the compiled function, changed from call to call (a label
    smoothing or focal gamma on a schedule): after the first change dynamo traces them as
    symbolic floats, which the options' checks must take without breaking the graph."""
    dtype = "float32"
    c, fn = case(name), getattr(unilosses, name)
    names = _float_options(name)
    params = inspect.signature(fn).parameters
    base = {k: c.kw.get(k, params[k].default) for k in names}

    def eager(*a, **options):  # type: ignore[no-untyped-def]
        return (fn(*a, **{**c.kw, **options}),)

    compiled = torch.compile(eager, backend="aot_eager", fullgraph=True)
    args = _torch_args(c, dtype)
    for step in (0, 1, 2):  # within each option's range: probabilities stay below 1
        options = {k: v * (1 + 0.1 * step) + 0.05 * step for k, v in base.items()
                   if isinstance(v, float)}

        def call(f, options=options):  # type: ignore[no-untyped-def]
            return lambda *a: f(*a, **options)
        _compare_torch(call(compiled), call(eager), args, c, dtype)


@needs_torch
@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("dynamic", [True, None], ids=["dynamic", "automatic"])
def test_torch_compile_axis_as_an_argument(dynamic):
    """The axis of rmse, dice and tversky passed into the compiled function and changed from
    call to call: dynamo traces it as a symbolic integer (at once with dynamic=True, after the
    first change otherwise), which the axes' normalisation compares but must not sort or hash
    (a graph break, so an error under fullgraph)."""
    g = torch.Generator().manual_seed(3)
    p, t = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    s = torch.rand(2, 3, 3, 2, generator=g)
    m = (torch.rand(2, 3, 3, 2, generator=g) > 0.5).float()
    calls = [(unilosses.rmse, (p, t), (0, 1, -1, (0, 1))),
             (unilosses.dice_loss, (s, m), ((1, 2), (0, 1, 2), (2, 1), -1)),
             (unilosses.tversky_loss, (s, m), ((1, 2), (1, 2, 3), 3))]
    for fn, args, axes in calls:
        torch._dynamo.reset()  # (one code object: its recompiles, one per axis, add up)
        compiled = torch.compile(lambda a, b, axis, f=fn: f(a, b, axis=axis),
                                 backend="aot_eager", fullgraph=True, dynamic=dynamic)
        for axis in axes:
            want = fn(*args, axis=axis)
            assert_close(TORCH, compiled(*args, axis), want.numpy(), "float32")
    with pytest.raises(ValueError, match="repeats an axis"):  # (the pairwise check, eagerly)
        unilosses.rmse(p, t, axis=(1, -1))



@needs_torch
@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("name", ["sparse_categorical_cross_entropy_with_logits",
                                  "sparse_categorical_cross_entropy",
                                  "sparse_categorical_focal_loss_with_logits"])
def test_torch_compile_a_sparse_loss_itself_with_dynamic_true(name):
    """torch.compile(loss, dynamic=True, fullgraph=True) on the loss function itself traces
    its integer arguments, the class axis among them, as symbolic integers, which
    array_api_compat's squeeze sorted: "Unsupported: sort with non-constant keys".  One graph
    across batch sizes from 2 on, and the eager values and gradients."""
    from torch._dynamo.utils import counters

    fn = getattr(unilosses, name)
    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True, dynamic=True)
    g = torch.Generator().manual_seed(0)
    counters.clear()
    for n in (2, 7, 64):
        x = torch.randn(n, 5, generator=g)
        x = x.softmax(-1) if "with_logits" not in name else x * 3
        y = torch.randint(0, 5, (n,), generator=g)
        x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
        got, want = compiled(x1, y), fn(x2, y)
        assert_close(TORCH, got, want.detach().numpy(), "float32")
        got.backward()
        want.backward()
        assert_close(TORCH, x1.grad, x2.grad.numpy(), "float32")
    assert counters["stats"]["unique_graphs"] == 1


INDUCTOR = {
    # the gather, the ignore mask and label smoothing
    "sparse_categorical_cross_entropy_with_logits": False,
    # the log-space focal factor, with a mask and weights
    "binary_focal_loss_with_logits": True,
    # a softmax reduction along the class axis
    "categorical_cross_entropy_with_logits": False,
}


@needs_torch
@pytest.mark.slow
@pytest.mark.usefixtures("fresh_dynamo")
@pytest.mark.parametrize("name", sorted(INDUCTOR))
def test_torch_compile_inductor(name):
    dtype = "float32"
    c, fn = case(name), getattr(unilosses, name)
    mask, weights = _mask_and_weights(c) if INDUCTOR[name] else (None, None)
    as_t = [None if a is None else torch.from_numpy(a) for a in (mask, weights)]

    def eager(x, *rest):  # type: ignore[no-untyped-def]
        return (_masked_call(fn, c, *as_t)(x, *rest),)

    # inductor generates its own fused C++ kernels: agreement is to the dtype's tolerance
    compiled = torch.compile(eager, fullgraph=True)
    args = [torch.from_numpy(_poison(c, mask).astype(dtype))] + _torch_args(c, dtype)[1:]
    _compare_torch(compiled, eager, args, c, dtype)


@needs_torch
def test_torch_compile_as_the_first_call_in_a_process():
    """Dispatch loads the torch adapter lazily on the first call: under fullgraph=True that
    first call may be inside the compiled function (a fresh training script).  `import
    unilosses` after torch preloads the adapter; imported before torch, the traced call
    fails with a message saying what to do."""
    script = textwrap.dedent("""
        import torch, unilosses
        f = torch.compile(lambda a, b: unilosses.mse(a, b), backend="aot_eager",
                          fullgraph=True)
        x, t = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 2.0])
        print(float(f(x, t)))
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert float(res.stdout.strip().splitlines()[-1]) == 0.5
    res = subprocess.run([sys.executable, "-c", script.replace("import torch, unilosses",
                                                               "import unilosses, torch")],
                         capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode != 0
    assert dynamo_message(res.stderr, r"call unilosses\.backends\.preload\(\)"), res.stderr[-3000:]


@needs_torch
def test_torch_compile_does_not_recompile_for_other_calls_in_the_process():
    """A compiled loss is guarded on the size of dispatch's cache of types: the types known
    early are cached early (a framework's array classes as its adapter loads, the Python
    types of numbers and lists), so neither the compiled call's own first use nor eager
    calls on NumPy arrays, lists or numbers elsewhere in the process recompile it."""
    script = textwrap.dedent("""
        import numpy as np, torch, unilosses
        from torch._dynamo.utils import counters
        f = torch.compile(lambda a, b: unilosses.mse(a, b), backend="aot_eager",
                          fullgraph=True, dynamic=True)
        p, t = torch.randn(4, 5, requires_grad=True), torch.randn(4, 5)
        f(p, t); f(p, t)
        unilosses.mse(np.ones(3), np.zeros(3))
        unilosses.mse([1.0, 2.0], [0.0, 1.0])
        unilosses.mse(1.0, 2.0)
        unilosses.mse(np.ones(3), np.zeros(3), weights=(1.0, 2.0, 3.0))
        f(p, t); f(torch.randn(6, 5, requires_grad=True), torch.randn(6, 5))
        print(counters["stats"]["unique_graphs"])
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "1"


@needs_torch
@pytest.mark.parametrize("name", NAMES)
def test_torch_func_vmap(name):
    """torch.func.vmap over a leading batch axis equals one eager call per example, stacked
    (torch.func cannot batch boolean-mask indexing: every loss must avoid it)."""
    from torch.func import vmap

    examples = [case(name, seed) for seed in range(3)]
    c, fn = examples[0], getattr(unilosses, name)

    def tensor(a):  # type: ignore[no-untyped-def]
        a = np.asarray(a)
        return torch.as_tensor(a.astype(np.float64) if a.dtype.kind == "f" else a)

    batched = [tensor(np.stack(col)) for col in zip(*(e.args for e in examples), strict=True)]

    def one(*args):  # type: ignore[no-untyped-def]
        return fn(*args, **c.kw)

    got = vmap(one)(*batched)
    want = torch.stack([one(*[tensor(a) for a in e.args]) for e in examples])
    _nondegenerate(want.numpy())
    np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-12, atol=1e-12)


# -- torch without values: the meta device and FakeTensorMode -----------------------------------
def _shape_only_calls(name: str) -> list[dict]:
    """Every reduction, and the default one with the mask and the weights."""
    c = _flags(name)
    mask, weights = _mask_and_weights(c)
    extra = {k: v for k, v in (("where", mask), ("weights", weights)) if v is not None}
    return _reductions(name) + ([extra] if extra else [])


def _without_values(a, mode):  # type: ignore[no-untyped-def]
    """``a`` (NumPy or torch) as a tensor of ``mode`` (a FakeTensorMode), or on meta (None)."""
    t = torch.from_numpy(a) if isinstance(a, np.ndarray) else a
    if not isinstance(t, torch.Tensor):
        return t
    return t.to("meta") if mode is None else mode.from_tensor(t)


@needs_torch
@pytest.mark.parametrize("where", ["meta", "fake"])
@pytest.mark.parametrize("name", NAMES)
def test_torch_without_values(name, where):
    """Tensors without values (meta; fake: FakeTensorMode, as shape inference and tracers
    outside torch.compile use it) give the eager result's shape and dtype on their device,
    forward and backward, value checks on: nothing is read back (a read raises there, and on
    a GPU it stalls the device)."""
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    c, fn = case(name), getattr(unilosses, name)
    for kw in _shape_only_calls(name):
        want = fn(*_torch_args(c, "float32"), **c.kw, **{
            k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in kw.items()})
        mode = FakeTensorMode() if where == "fake" else None
        with mode if mode is not None else torch.device("meta"):
            args = [_without_values(a, mode) for a in _torch_args(c, "float32")]
            if c.grad:
                args[0].requires_grad_(True)
            got = fn(*args, **c.kw, **{k: _without_values(v, mode) for k, v in kw.items()})
            assert isinstance(got, FakeTensor) if mode is not None else got.is_meta, kw
            assert got.shape == want.shape and got.dtype == want.dtype, kw
            if c.grad:
                got.sum().backward()
                g = args[0].grad
                assert g is not None and g.shape == args[0].shape and g.device == args[0].device


# loss -> (kwargs, whether the second array holds labels)
_SYMBOLIC = {
    "binary_cross_entropy": ({}, False),
    "binary_focal_loss": ({}, False),
    "sparse_categorical_cross_entropy_with_logits": ({"label_smoothing": 0.1}, True),
    "kl_divergence": ({"reduction": "batchmean"}, False),
    "categorical_cross_entropy_with_logits": ({}, False),
}


@needs_jax
@pytest.mark.parametrize("name", sorted(_SYMBOLIC))
def test_jax_export_with_symbolic_shapes(name):
    """jax.export with symbolic batch and class dimensions ("b, c") exports the loss, and the
    exported function gives the eager value and gradient at other shapes.  The probability
    losses compared the symbolic size with a threshold ("Symbolic dimension comparison 'b*c'
    >= '65536' is inconclusive"), sparse CE and batchmean KL took float() of a dimension
    ("float() argument must be a string or a real number, not '_DimExpr'")."""
    from jax import export

    kw, labels = _SYMBOLIC[name]
    fn = getattr(unilosses, name)
    b, c = export.symbolic_shape("b, c")
    second = (jax.ShapeDtypeStruct((b,), jnp.int32) if labels
              else jax.ShapeDtypeStruct((b, c), jnp.float32))

    def value_and_grad(x, y):  # type: ignore[no-untyped-def]
        return jax.value_and_grad(lambda x: fn(x, y, **kw))(x)

    exported = export.export(jax.jit(value_and_grad))(
        jax.ShapeDtypeStruct((b, c), jnp.float32), second)
    rng = np.random.default_rng(0)
    for n, k in ((5, 4), (1, 3), (3, 1)):
        p = rng.dirichlet(np.ones(k), n).astype(np.float32)
        x = np.log(p) if name == "kl_divergence" else p
        y = (rng.integers(0, k, n).astype(np.int32) if labels
             else rng.dirichlet(np.ones(k), n).astype(np.float32))
        x, y = jnp.asarray(x), jnp.asarray(y)
        value, grad = exported.call(x, y)
        e_value, e_grad = value_and_grad(x, y)
        assert_close(JAX, value, np.asarray(e_value), "float32")
        assert_close(JAX, grad, np.asarray(e_grad), "float32")


@needs_torch
@pytest.mark.parametrize("module", ["SparseCategoricalCrossEntropyWithLogitsLoss",
                                    "CrossEntropyLoss", "KLDivLoss"])
def test_torch_export_with_dynamic_dimensions(module):
    """torch.export.export with Dim batch and class dimensions: the exported module gives the
    eager value at other batch sizes and class counts.  float() of a dimension specialised
    it: the class count of an all-clamped row (sparse CE), the batch count of
    reduction="batchmean" (KL): "Constraints violated (c)! ... your code specialized it to be
    a constant (4)"."""
    from torch.export import Dim, export

    import unilosses.torch as ut

    kl = module == "KLDivLoss"
    loss = ut.KLDivLoss(reduction="batchmean") if kl else getattr(ut, module)()
    rng = np.random.default_rng(0)

    def inputs(n, c):  # type: ignore[no-untyped-def]
        x = torch.tensor(rng.normal(size=(n, c)) * 3, dtype=torch.float32)
        if kl:
            return torch.log_softmax(x, -1), torch.softmax(torch.randn(n, c), -1)
        return x, torch.tensor(rng.integers(0, c, n))

    b, c = Dim("b", min=2, max=4096), Dim("c", min=2, max=1024)
    dims = ({0: b, 1: c}, {0: b, 1: c} if kl else {0: b})
    exported = export(loss, inputs(5, 4), dynamic_shapes=dims).module()
    for n, k in ((5, 4), (2, 9), (64, 3)):
        x, y = inputs(n, k)
        assert_close(TORCH, exported(x, y), loss(x, y).numpy(), "float32")
