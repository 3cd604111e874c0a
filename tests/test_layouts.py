"""A loss's value and gradient depend on its inputs' values, not on how they are laid out.

Strided, transposed, expanded (stride 0) and offset views, NumPy's Fortran order, negative
strides, read-only, broadcast and byte-swapped arrays, JAX arrays made from them, TensorFlow
variables: each is compared with the same loss on a plain contiguous copy of the same values
(which the other tests check against float64 references), on the sizes that take each of
torch's paths.
"""

from __future__ import annotations

import numpy as np
import pytest

import unilosses
from conftest import assert_close, tolerance


@pytest.mark.parametrize("wshape", [(2,), (1, 2), "full"], ids=["per-class", "row", "full"])
def test_weighted_mean_of_broadcast_weights_is_accurate(xp, wshape):  # type: ignore[no-untyped-def]
    """"weighted_mean" divides by the sum of the weights broadcast to the loss; torch sums a
    view with a zero stride (and other non-dense views) element by element along it, where a
    dense tensor's sum is pairwise: per-class weights over 1e5 rows were 2e-4 off in float32."""
    rng = np.random.default_rng(0)
    n, c = 100_000, 2
    p, t = rng.normal(size=(n, c)), rng.normal(size=(n, c))
    w = rng.uniform(0.5, 2.0, size=(c,) if wshape == "full" else wshape)
    full = np.broadcast_to(w, (n, c))
    expected = ((p - t) ** 2 * full).sum() / full.sum()
    f32 = [xp.asarray(a, "float32") for a in (p, t)]
    weights = xp.asarray(w, "float32")
    if wshape == "full":  # the caller's own broadcast view (stride 0 where the framework has them)
        weights = xp.xp.broadcast_to(weights, (n, c))
    out = unilosses.mse(*f32, weights=weights, reduction="weighted_mean")
    assert_close(xp, out, expected, "float32")


# -- every loss, torch: layouts and tensor flavours against a contiguous copy ---------------------
# The parity catalogue's cases (every loss, its reductions, masks, weights, axis options and
# anchor states), rows tiled to reach each path: as they are (small plain calls), and tiled 24x
# with torch's thresholds lowered so that the same ~1e3 elements take the generic path, read
# their bound instead of clamping, and go through the block-wise and closed-form sums.

CATALOGUE = pytest.importorskip("unilosses.parity.cases").REGISTRY
TILE = 24


def _tiled(a, k):  # type: ignore[no-untyped-def]
    return a if k == 1 or a.ndim == 0 else np.concatenate([a] * k, 0)


def _inputs(spec, case, k):  # type: ignore[no-untyped-def]
    """The case's arrays, float32, rows tiled k times (those with the predictions' rows);
    anchor states also as int64, which the plain anchor kernels take."""
    n0 = np.shape(case.args[0])[0]

    def prep(a):  # type: ignore[no-untyped-def]
        a = np.asarray(a)
        a = _tiled(a, k) if a.ndim and a.shape[0] == n0 else a
        return a.astype(np.float32) if a.dtype.kind == "f" else a

    args = [prep(a) for a in case.args]
    if spec.name.startswith("anchor"):
        args[2] = args[2].astype(np.int64)
    return args, {key: prep(v) for key, v in case.arrays.items()}


def _torch_flavours(torch):  # type: ignore[no-untyped-def]
    """name -> (tensor -> the same values laid out or flagged otherwise, or None: n/a)."""

    def transposed(t):  # type: ignore[no-untyped-def]
        rev = tuple(reversed(range(t.ndim)))
        return None if t.ndim < 2 else t.permute(rev).contiguous().permute(rev)

    def rows_stepped(t):  # type: ignore[no-untyped-def]
        return None if t.ndim < 1 else torch.stack([t, torch.zeros_like(t)], 1).flatten(0, 1)[::2]

    def columns_stepped(t):  # type: ignore[no-untyped-def]
        if t.ndim < 1:
            return None
        return torch.stack([t, torch.zeros_like(t)], -1).flatten(-2)[..., ::2]

    def offset(t):  # type: ignore[no-untyped-def]
        s = torch.zeros(t.numel() + 3, dtype=t.dtype)
        s[3:] = t.reshape(-1)
        return s[3:].view(t.shape)

    def negative_bit(t):  # type: ignore[no-untyped-def]
        return torch._neg_view(-t) if t.is_floating_point() else None

    def channels_last(t):  # type: ignore[no-untyped-def]
        return t.contiguous(memory_format=torch.channels_last) if t.ndim == 4 else None

    def parameter(t):  # type: ignore[no-untyped-def]
        return torch.nn.Parameter(t, requires_grad=False) if t.is_floating_point() else None

    def inference_tensor(t):  # type: ignore[no-untyped-def]
        with torch.inference_mode():
            return t.clone()

    def int32(t):  # type: ignore[no-untyped-def]
        return t.int() if t.dtype == torch.int64 else None

    return {"transposed": transposed, "rows_stepped": rows_stepped,
            "columns_stepped": columns_stepped, "offset": offset, "negative_bit": negative_bit,
            "channels_last": channels_last, "parameter": parameter,
            "inference_tensor": inference_tensor, "int32": int32}


def _allclose(got, want, what: str) -> None:  # type: ignore[no-untyped-def]
    """Within 256 float32 eps, relative to the magnitude of ``want`` (the contiguous copy's)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    finite = np.isfinite(want)
    scale = max(float(np.abs(want[finite]).max()) if finite.any() else 0.0, 1e-30)
    tol = tolerance("float32")["rtol"]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, equal_nan=True,
                               err_msg=what)


def _torch_loss(torch, spec, case, args, arrays, mode: str, flavour=None):  # type: ignore[no-untyped-def]
    """(value, gradients) of the loss on the arrays, each laid out by ``flavour`` (None:
    as they are; a flavour's None: n/a, as they are).  ``mode``: the gradient in "leaf"
    predictions; in "non-leaf" ones, the flavour applied to a leaf (its view's backward
    then carries the gradient); in the predictions and a float second argument
    ("targets"); none, the call under "no_grad" (predictions requiring grad) or inside
    "inference_mode"."""

    def laid(t):  # type: ignore[no-untyped-def]
        f = None if flavour is None else flavour(t)
        return t if f is None else f

    args, arrays = [laid(a) for a in args], {k: laid(v) for k, v in arrays.items()}
    leaves = []
    if args[0].is_floating_point() and mode in ("leaf", "targets", "no_grad"):
        if getattr(flavour, "__name__", "") == "inference_tensor":
            args[0] = args[0].clone()  # (not one made in inference mode: it cannot require grad)
        args[0].requires_grad_(True)
        leaves.append(args[0])
    if mode == "non-leaf":
        leaf = args[0].detach().clone(memory_format=torch.contiguous_format)
        leaves.append(leaf.requires_grad_(True))
        name = getattr(flavour, "__name__", "")
        view = None if flavour is None or name in ("parameter", "inference_tensor") else \
            flavour(leaf)
        args[0] = leaf * 1.0 if view is None else view
    if mode == "targets" and len(args) > 1 and args[1].is_floating_point():
        leaves.append(args[1].requires_grad_(True))
    if mode == "no_grad":
        leaves = []
        with torch.no_grad():
            out = spec.fn(*args, **case.options, **arrays)
    elif mode == "inference_mode":
        with torch.inference_mode():
            out = spec.fn(*args, **case.options, **arrays)
    else:
        out = spec.fn(*args, **case.options, **arrays)
    grads = []
    if leaves and spec.differentiable:
        grads = [g.detach().numpy() for g in torch.autograd.grad(out.sum(), leaves)]
    return out.detach().numpy(), grads


def _first_row(t):  # type: ignore[no-untyped-def]
    return t if t.ndim == 0 else t[:1].expand(t.shape).clone()


def _expanded(t):  # type: ignore[no-untyped-def]
    return None if t.ndim == 0 else t[:1].expand(t.shape)


def _low_thresholds(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from unilosses.backends import _torch_kernels as kernels

    # ~1e3 elements then take the paths of ~1e5 and more (bound read, blocks, closed forms)
    for name, value in [("_CHECK_MIN", 512), ("_CHUNK_MIN", 1024), ("_BLOCK", 256),
                        ("_CLOSED_MIN", 512), ("_FOCAL_GRAD_MAX", 128)]:
        monkeypatch.setattr(kernels, name, value)


@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_torch_layouts_and_flavours_match_a_contiguous_copy(name, size, monkeypatch):  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    # (tiny tensors: on a loaded machine waking torch's thread pool costs more than the ops)
    torch.set_num_threads(1)
    try:
        _torch_layouts(torch, name, size, monkeypatch)
    finally:
        torch.set_num_threads(threads)


def _torch_layouts(torch, name, size, monkeypatch):  # type: ignore[no-untyped-def]
    if size == "large":
        _low_thresholds(monkeypatch)
    spec = CATALOGUE[name]
    flavours = _torch_flavours(torch)
    if size == "large":  # (these three take the same paths as a contiguous tensor there)
        for fname in ("columns_stepped", "parameter", "inference_tensor"):
            del flavours[fname]
    # (blocks and closed forms are taken only without a gradient in the targets)
    modes = (["leaf", "targets", "no_grad"] if size == "small" else
             ["leaf", "non-leaf", "inference_mode"]) if spec.differentiable else ["none"]
    for case in spec.make_cases(0):
        args, arrays = _inputs(spec, case, 1 if size == "small" else TILE)
        args = [torch.from_numpy(a.copy()) for a in args]
        arrays = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
        for mode in modes:
            want = _torch_loss(torch, spec, case, args, arrays, mode)
            for fname, flavour in flavours.items():
                if fname == "inference_tensor" and mode not in ("no_grad", "inference_mode"):
                    # autograd cannot save an inference tensor: torch's own error, as F.*'s
                    continue
                got = _torch_loss(torch, spec, case, args, arrays, mode, flavour)
                what = f"{case.name}, {mode}, {fname}"
                _allclose(got[0], want[0], what)
                for g, w in zip(got[1], want[1], strict=True):
                    _allclose(g, w, what + " (gradient)")
            if mode != "non-leaf":  # (a leaf's expand() sends every row's gradient to one)
                # expanded (stride 0): every array's rows equal to its first
                same = [_first_row(a) for a in args]
                same_arrays = {k: _first_row(v) for k, v in arrays.items()}
                want = _torch_loss(torch, spec, case, same, same_arrays, mode)
                got = _torch_loss(torch, spec, case, same, same_arrays, mode, _expanded)
                what = f"{case.name}, {mode}, expanded"
                _allclose(got[0], want[0], what)
                for g, w in zip(got[1], want[1], strict=True):
                    _allclose(g, w, what + " (gradient)")


# -- NumPy, JAX, TensorFlow -----------------------------------------------------------------------

def _numpy_flavours():  # type: ignore[no-untyped-def]
    def swapped(a):  # type: ignore[no-untyped-def]
        return a.astype(a.dtype.newbyteorder(">")) if a.dtype.kind in "fi" else None

    def read_only(a):  # type: ignore[no-untyped-def]
        a = a.copy()
        a.setflags(write=False)
        return a

    return {"fortran": lambda a: np.asfortranarray(a) if a.ndim > 1 else None,
            "negative_strides": lambda a: a[::-1].copy()[::-1] if a.ndim else None,
            "columns_stepped": lambda a: np.stack([a, a], -1).reshape(*a.shape[:-1], -1)[..., ::2]
            if a.ndim else None,
            "read_only": read_only, "byte_swapped": swapped}


def _laid(arrays, flavour):  # type: ignore[no-untyped-def]
    out = [flavour(a) for a in arrays]
    return [a if f is None else f for a, f in zip(arrays, out)]


def _cases(size: int = 1):  # type: ignore[no-untyped-def]
    """Each loss's first and last case (the last: masked, or an edge of its own)."""
    for name in sorted(CATALOGUE):
        spec = CATALOGUE[name]
        cases = spec.make_cases(0)
        for case in (cases[0], cases[-1]):
            args, arrays = _inputs(spec, case, size)
            yield spec, case, args, arrays


def test_numpy_layouts_match_a_contiguous_copy():  # type: ignore[no-untyped-def]
    """Also a broadcast view (read-only, stride 0) of the first row, and NumPy scalars."""
    for spec, case, args, arrays in _cases(TILE):
        slots = args + list(arrays.values())
        want = _numpy_loss(spec, case, len(args), slots)
        for fname, flavour in _numpy_flavours().items():
            _allclose(_numpy_loss(spec, case, len(args), _laid(slots, flavour)), want,
                      f"{spec.name}, {case.name}, {fname}")
        same = [a if a.ndim == 0 else np.ascontiguousarray(np.broadcast_to(a[:1], a.shape))
                for a in slots]
        broadcast = [a if a.ndim == 0 else np.broadcast_to(a[:1], a.shape) for a in slots]
        _allclose(_numpy_loss(spec, case, len(args), broadcast),
                  _numpy_loss(spec, case, len(args), same), f"{spec.name}, {case.name}, broadcast")


def _numpy_loss(spec, case, n_args, slots):  # type: ignore[no-untyped-def]
    """The loss on the case's positional arrays and keyword arrays, in ``slots``."""
    kw = dict(zip(case.arrays, slots[n_args:]))
    return np.asarray(spec.fn(*slots[:n_args], **case.options, **kw), np.float64)


def test_numpy_scalars_stand_for_numbers():  # type: ignore[no-untyped-def]
    p, t = np.float32([0.5, 2.0]), np.float32([1.0, 1.0])
    want = unilosses.mse(p, t, weights=2.0)
    assert unilosses.mse(p, t, weights=np.float32(2.0)) == want
    assert unilosses.mse(p, t, weights=np.array(2.0, np.float32)) == want
    assert unilosses.mse(np.float32(3.0), np.float32(1.0)) == 4.0


JAX_LOSSES = ["binary_focal_loss_with_logits", "sparse_categorical_cross_entropy_with_logits"]


@pytest.mark.parametrize("name", JAX_LOSSES)
def test_jax_arrays_from_numpy_layouts_match(name):  # type: ignore[no-untyped-def]
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    spec = CATALOGUE[name]
    args, arrays = _inputs(spec, spec.make_cases(0)[0], 1)

    def value_and_grad(*a):  # type: ignore[no-untyped-def]
        return jax.value_and_grad(lambda p, *rest: spec.fn(p, *rest))(*a)

    want = value_and_grad(*map(jnp.asarray, args))
    flavours = _numpy_flavours()
    del flavours["byte_swapped"]  # (JAX refuses non-native byte order itself)
    for fname, flavour in flavours.items():
        got = value_and_grad(*map(jnp.asarray, _laid(args, flavour)))
        for g, w in zip(got, want):
            _allclose(g, w, fname)
    cpu = jax.devices("cpu")[0]
    committed = [jax.device_put(jnp.asarray(a), cpu) for a in args]
    for g, w in zip(jax.jit(value_and_grad)(*committed), want):
        _allclose(g, w, "committed, jit")


TF_LOSSES = ["binary_cross_entropy_with_logits", "binary_focal_loss_with_logits",
             "sparse_categorical_cross_entropy_with_logits"]


@pytest.mark.parametrize("name", TF_LOSSES)
def test_tensorflow_variables_and_layouts_match(name):  # type: ignore[no-untyped-def]
    """A tf.Variable as predictions (eagerly: tracing takes seconds here),
    int32 labels, tensors from strided NumPy arrays, tf.convert_to_tensor."""
    tf = pytest.importorskip("tensorflow")
    spec = CATALOGUE[name]
    args, arrays = _inputs(spec, spec.make_cases(0)[0], 1)
    args = [a.astype(np.int32) if a.dtype == np.int64 else a for a in args]

    def value_and_grad(p, *rest):  # type: ignore[no-untyped-def]
        with tf.GradientTape() as tape:
            tape.watch(p)
            out = spec.fn(p, *rest)
        return out, tf.convert_to_tensor(tape.gradient(out, p))

    rest = [tf.constant(a) for a in args[1:]]
    want = [w.numpy() for w in value_and_grad(tf.constant(args[0]), *rest)]
    variable = tf.Variable(args[0])
    tries = {"variable": value_and_grad(variable, *rest),
             "convert_to_tensor": value_and_grad(*map(tf.convert_to_tensor, args))}
    for fname in ("fortran", "negative_strides", "columns_stepped"):
        tries[fname] = value_and_grad(*map(tf.constant, _laid(args, _numpy_flavours()[fname])))
    for what, got in tries.items():
        for g, w in zip(got, want):
            _allclose(np.asarray(g), w, what)


# -- errors ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_arrays_of_two_frameworks_get_the_clear_error_on_small_torch_calls(name):  # type: ignore[no-untyped-def]
    """torch's plain-call kernels come before the generic checks: they must decline another
    framework's array, which the generic path then names."""
    torch = pytest.importorskip("torch")
    spec = CATALOGUE[name]
    case = spec.make_cases(0)[0]
    args, _ = _inputs(spec, case, 1)
    for i in range(1, len(args)):
        mixed = [torch.from_numpy(a) for a in args]
        mixed[i] = args[i]
        with pytest.raises(TypeError, match=r"two frameworks.*Convert `\w+`"):
            spec.fn(*mixed, **case.options)
