"""Derivatives beyond the gradient: Hessian-vector products and forward-mode JVPs.

The truth is float64: the Hessian-vector product ``H v`` as central differences of the loss's
own float64 gradient, ``(g(x + h v) - g(x - h v)) / 2h`` (gradients are checked against
independent references elsewhere), and the JVP as ``g(x) . v``.  Inputs lie away from kinks
(Huber's delta, hinge margins, clips) so that the differences are valid.
"""

from __future__ import annotations

import numpy as np
import pytest

import unilosses

F64_TOL = 1e-6   # float64 against differences with h ~ 1e-5: truncation ~1e-10, rounding ~1e-11


def _fd_hvp(grad, x: np.ndarray, v: np.ndarray, h: float = 1e-5) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Central differences of ``grad`` (float64 NumPy in and out) along ``v``."""
    step = h * max(float(np.abs(x).max()), 1.0)
    return (grad(x + step * v) - grad(x - step * v)) / (2 * step)


def _check(got: np.ndarray, want: np.ndarray, dtype: str, scale: float | None = None) -> None:
    """``got`` within a dtype-sized multiple of eps of ``want``, relative to its magnitude
    (``scale``: that of the terms it sums, where they cancel)."""
    got = np.asarray(got, np.float64)
    assert np.isfinite(got).all(), got
    tol = F64_TOL if dtype == "float64" else 64 * float(np.finfo(np.float32).eps)
    if scale is None:
        scale = float(np.abs(want).max())
    scale = max(scale, 1e-30)
    err = float(np.abs(got - want).max())
    assert err <= tol * scale, f"max error {err:.3g} > {tol * scale:.3g} ({dtype})"


# -- torch: forward mode over a native kernel's backward ------------------------------------

@pytest.mark.parametrize(("name", "reduction"), [
    ("mse", "mean"), ("mse", "sum"), ("mse", "none"), ("rmse", None),
    ("huber", "mean"), ("huber", "sum"), ("huber", "none")])
@pytest.mark.parametrize("how", ["torch.func", "forward_ad"])
def test_torch_forward_over_reverse_through_native_kernels(name, reduction, how):  # type: ignore[no-untyped-def]
    """torch.func's Hessian-vector product recipe, ``jvp(grad(f))``, and forward_ad dual
    tensors under ``autograd.grad(create_graph=True)`` differentiate the backward of the
    kernel in forward mode: torch has no such rule for ``huber_loss_backward``
    (NotImplementedError), and ``mse_loss``'s mean writes into an immutable ZeroTensor
    (RuntimeError).  The composition has both."""
    torch = pytest.importorskip("torch")
    from torch.autograd import forward_ad

    rng = np.random.default_rng(0)
    x0, t0, v0 = (rng.normal(size=(8, 5)) for _ in range(3))
    x0 = x0 * 2.0  # errors up to ~6: both of Huber's branches (delta 1), none near |d| = 1
    x0 = np.where(np.abs(np.abs(x0 - t0) - 1.0) < 0.05, x0 + 0.2, x0)
    kw = {} if reduction is None else {"reduction": reduction}
    fn = getattr(unilosses, name)

    def loss(a, t):  # type: ignore[no-untyped-def]
        return fn(a, t, **kw).sum()

    def grad64(a: np.ndarray) -> np.ndarray:
        xa = torch.tensor(a, requires_grad=True)
        return torch.autograd.grad(loss(xa, torch.tensor(t0)), xa)[0].numpy()

    want = _fd_hvp(grad64, x0, v0)
    for dtype in ("float64", "float32"):
        x, t, v = (torch.tensor(a.astype(dtype)) for a in (x0, t0, v0))
        if how == "torch.func":
            got = torch.func.jvp(torch.func.grad(lambda a, t=t: loss(a, t)), (x,), (v,))[1]
        else:
            with forward_ad.dual_level():
                dual = forward_ad.make_dual(x.clone().requires_grad_(True), v)
                (g,) = torch.autograd.grad(loss(dual, t), dual, create_graph=True)
                got = forward_ad.unpack_dual(g).tangent
        _check(got.detach().numpy(), want, dtype)


# -- every loss, every differentiable backend ------------------------------------------------

#: what each backend runs: every case of the catalogue on torch (fast eagerly), and at the
#: large size the losses that have a kernel, a plain call or a block-wise form there (the
#: others are the same composition at every size).  On JAX and TensorFlow (seconds a loss
#: on 2 cores) the first case of the losses with derivative rules of their own there: JAX's
#: custom JVPs (the closed forms, safe_abs, the one-sided clips, the clamped log-softmax),
#: TensorFlow's custom gradients (the eager closed forms, the fused softmax cross-entropy
#: ops, the watched pick, log1p); every other loss there is a composition of the
#: framework's own primitives.  JAX's closed forms serve every size alike (no large path);
#: TensorFlow's large path for the losses whose eager forms depend on the size (read
#: bounds, row-sum checks, BCE's plain form)
_CLOSED = ("binary_focal_loss", "binary_focal_loss_with_logits", "anchor_focal_loss",
           "anchor_focal_loss_with_logits", "log_cosh", "binary_cross_entropy",
           "binary_cross_entropy_with_logits", "categorical_cross_entropy")
_OWN_RULES = {
    "jax": _CLOSED + ("mae", "quantile_loss", "categorical_cross_entropy_with_logits",
                      "sparse_categorical_cross_entropy_with_logits"),
    "tensorflow": _CLOSED + ("categorical_cross_entropy_with_logits",
                             "sparse_categorical_cross_entropy_with_logits",
                             "sparse_categorical_cross_entropy", "msle"),
}
#: losses whose masked, weighted or unreduced calls take rules of their own on JAX and
#: TensorFlow too (``Adapter.elementwise_closed_form``): their first masked or weighted case
#: is checked there as well
_MASKED_RULES = ("binary_cross_entropy",)
_TORCH_LARGE = ("mse", "rmse", "mae", "huber", "smooth_l1", "log_cosh", "cross_entropy", "focal")
_TF_LARGE = ("categorical_cross_entropy_with_logits",
             "sparse_categorical_cross_entropy_with_logits", "binary_cross_entropy_with_logits")
#: dtypes evaluated (float64's truth is computed apart): float64 too on torch, small path,
#: first case of each loss
_DTYPES = {"torch": ("float64", "float32"), "jax": ("float32",), "tensorflow": ("float32",)}


def _cases() -> list:  # type: ignore[type-arg]
    """(backend, path, loss, case) for every differentiable loss: the parity catalogue's
    cases whose differences are valid (no kinks, clips or saturation within a step), masked
    ones with their NaN under the mask (it must reach no derivative)."""
    from conftest import installed
    from unilosses.parity.cases import REGISTRY

    out = []
    for backend in ("torch", "jax", "tensorflow"):
        missing = f"{backend} is not installed"
        marks = [] if installed(backend) else [pytest.mark.skip(reason=missing)]
        for name, spec in REGISTRY.items():
            if not spec.differentiable or name not in _OWN_RULES.get(backend, (name,)):
                continue
            cases = [c for c in spec.make_cases(0) if c.fd]
            if backend != "torch":
                cases = cases[:1] + ([c for c in cases if c.arrays][:1]
                                     if name in _MASKED_RULES else [])
            paths = ["small"]
            if ((backend == "torch" and any(k in name for k in _TORCH_LARGE))
                    or (backend == "tensorflow" and name in _TF_LARGE)):
                paths.append("large")
            for path in paths:
                for case in cases:
                    if path == "large" and ("where" in case.arrays or "weights" in case.arrays):
                        continue  # (masked or weighted: the generic path at every size)
                    out.append(pytest.param(backend, path, spec, case, marks=marks,
                                            id=f"{backend}-{path}-{name}-{case.name}"))
    return out


CASES = _cases()


class _Torch:
    def __init__(self) -> None:
        import torch

        self.torch = torch

    def array(self, a, dtype):  # type: ignore[no-untyped-def]
        a = np.asarray(a)
        return self.torch.tensor(a.astype(dtype) if a.dtype.kind == "f" else a)

    def total(self, out):  # type: ignore[no-untyped-def]
        return out.sum()

    def numpy(self, a):  # type: ignore[no-untyped-def]
        # (+ zeros: a ZeroTensor, which torch gives for a constant gradient, into memory)
        return (a.detach() + self.torch.zeros(a.shape, dtype=a.dtype)).numpy()

    def grad(self, f, x):  # type: ignore[no-untyped-def]
        x = x.detach().clone().requires_grad_(True)
        return self.numpy(self.torch.autograd.grad(f(x), x)[0])

    def derivatives(self, f, x, v):  # type: ignore[no-untyped-def]
        """{how: H v or the JVP}: reverse over reverse (create_graph), torch.func's forward
        over reverse, forward_ad's JVP."""
        torch = self.torch
        from torch.autograd import forward_ad

        xg = x.detach().clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(xg), xg, create_graph=True)
        s = (g * v).sum()
        rr = (torch.autograd.grad(s, xg, materialize_grads=True)[0] if s.requires_grad
              else torch.zeros_like(x))  # (a gradient that does not depend on x)
        fr = torch.func.jvp(torch.func.grad(f), (x,), (v,))[1]
        with forward_ad.dual_level():
            jvp = forward_ad.unpack_dual(f(forward_ad.make_dual(x, v))).tangent
        return {"hvp rev-rev": self.numpy(rr), "hvp fwd-rev": self.numpy(fr),
                "jvp": self.numpy(jvp)}


class _Jax:
    def __init__(self) -> None:
        import jax

        self.jax, self.jnp = jax, jax.numpy

    def array(self, a, dtype):  # type: ignore[no-untyped-def]
        a = np.asarray(a)
        return self.jnp.asarray(a.astype(dtype) if a.dtype.kind == "f" else a)

    def total(self, out):  # type: ignore[no-untyped-def]
        return self.jnp.sum(out)

    def numpy(self, a):  # type: ignore[no-untyped-def]
        return np.asarray(a)

    def grad(self, f, x):  # type: ignore[no-untyped-def]
        return np.asarray(self.jax.jit(self.jax.grad(f))(x))

    def derivatives(self, f, x, v):  # type: ignore[no-untyped-def]
        """Forward over reverse (jvp of grad), reverse over reverse, forward mode, in one
        jitted function (one compilation, where op by op each primitive compiles)."""
        jax, jnp = self.jax, self.jnp
        g = jax.grad(f)

        def all_three(x, v):  # type: ignore[no-untyped-def]
            return (jax.jvp(g, (x,), (v,))[1], jax.grad(lambda y: jnp.vdot(g(y), v))(x),
                    jax.jvp(f, (x,), (v,))[1])

        fr, rr, jvp = (np.asarray(a) for a in jax.jit(all_three)(x, v))
        return {"hvp fwd-rev": fr, "hvp rev-rev": rr, "jvp": jvp}


class _Tensorflow:
    def __init__(self) -> None:
        import tensorflow as tf

        self.tf = tf

    def array(self, a, dtype):  # type: ignore[no-untyped-def]
        a = np.asarray(a)
        return self.tf.constant(a.astype(dtype) if a.dtype.kind == "f" else a)

    def total(self, out):  # type: ignore[no-untyped-def]
        return self.tf.reduce_sum(out)

    def numpy(self, a):  # type: ignore[no-untyped-def]
        return np.asarray(a)

    def grad(self, f, x):  # type: ignore[no-untyped-def]
        tf = self.tf
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = f(x)
        return tf.convert_to_tensor(tape.gradient(y, x)).numpy()

    def derivatives(self, f, x, v):  # type: ignore[no-untyped-def]
        """Nested tapes (reverse over reverse), a ForwardAccumulator over a tape (forward
        over reverse), a ForwardAccumulator alone (forward mode)."""
        tf = self.tf
        zero = tf.UnconnectedGradients.ZERO
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = f(x)
            s = tf.reduce_sum(tf.convert_to_tensor(inner.gradient(y, x)) * v)
        rr = outer.gradient(s, x, unconnected_gradients=zero)
        with tf.autodiff.ForwardAccumulator(x, v) as acc:
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = f(x)
            g = tf.convert_to_tensor(inner.gradient(y, x))
        fr = acc.jvp(g, unconnected_gradients=zero)
        with tf.autodiff.ForwardAccumulator(x, v) as acc:
            y = f(x)
        jvp = acc.jvp(y, unconnected_gradients=zero)
        return {"hvp rev-rev": tf.convert_to_tensor(rr).numpy(), "hvp fwd-rev": fr.numpy(),
                "jvp": jvp.numpy()}


_HARNESS = {"torch": _Torch, "jax": _Jax, "tensorflow": _Tensorflow}


def _held_ciou_hvp(spec, case, x: np.ndarray, v: np.ndarray) -> np.ndarray:  # type: ignore[no-untyped-def]
    """CIoU holds its alpha constant (computed without gradient, as torchvision): its Hessian
    is that of the loss with alpha held at x, by mixed second differences of the float64
    reference (errors ~1e-8 relative: enough for float32, and float64 is held to it)."""
    held = spec.held(x, *case.args[1:], **case.options)
    rest, kw = case.args[1:], {**case.options, **case.arrays, "dtype": "float64"}
    h = k = 1e-4 * max(float(np.abs(x).max()), 1.0)
    out = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = k
        out[i] = sum(s * float(np.sum(held(x + a * h * v + b * e, *rest, **kw)))
                     for a, b, s in ((1, 1, 1), (1, -1, -1), (-1, 1, -1), (-1, -1, 1)))
    return out / (4 * h * k)


def _large(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The "large" path: every size threshold lowered, so that the parity cases (small: torch's
    plain calls, eager TensorFlow's small-input forms) take torch's native kernels and
    block-wise closed forms (blocks of 16) and TensorFlow's read bounds and row-sum checks,
    as ``tests/test_native.py`` forces them."""
    try:
        from unilosses.backends import _torch_kernels as kernels
    except ImportError:
        pass
    else:
        for name, value in (("_CHECK_MIN", 1), ("_CHUNK_MIN", 1), ("_CLOSED_MIN", 1),
                            ("_BLOCK", 16), ("_FOCAL_GRAD_MAX", 0), ("_BCE_CPU_MAX", (0, 0))):
            monkeypatch.setattr(kernels, name, value)
        try:
            from unilosses.backends import _tf_kernels
            from unilosses.backends import tensorflow as tfb
        except ImportError:
            pass
        else:
            monkeypatch.setattr(tfb, "_BOUND_CHECK_MIN", 1)
            monkeypatch.setattr(_tf_kernels, "_READ_SUMS_BELOW", 0)


@pytest.mark.parametrize(("backend", "path", "spec", "case"), CASES)
def test_second_derivatives_and_jvps(monkeypatch, backend, path, spec, case):  # type: ignore[no-untyped-def]
    """H v (reverse over reverse and forward over reverse) and the JVP of every loss against
    central differences of its float64 gradient and ``g . v``."""
    if path == "large":
        _large(monkeypatch)
    b = _HARNESS[backend]()
    x0 = np.asarray(case.args[0], np.float64)
    v0 = np.random.default_rng(1).normal(size=x0.shape)
    if spec.name.endswith("iou_loss"):
        v0 *= 0.3  # the corners keep their order and the targets' margin within a step
    nan = np.isnan(x0)
    v0[nan] = 0.0

    def loss(dtype):  # type: ignore[no-untyped-def]
        rest = [b.array(a, dtype) for a in case.args[1:]]
        arrays = {k: b.array(a, dtype) for k, a in case.arrays.items()}
        return lambda x: b.total(spec.fn(x, *rest, **case.options, **arrays))

    f64 = loss("float64")
    g0 = b.grad(f64, b.array(x0, "float64"))
    if spec.held is not None:
        want = _held_ciou_hvp(spec, case, np.where(nan, 0.0, x0), v0)
    else:
        step = 1e-5 * max(float(np.nanmax(np.abs(x0))), 1.0)
        if np.nanmax(x0) <= 1.0 and np.nanmin(x0) >= 0.0:
            step = 1e-6  # probabilities: the steps stay inside (0, 1)
        want = (b.grad(f64, b.array(x0 + step * v0, "float64"))
                - b.grad(f64, b.array(x0 - step * v0, "float64"))) / (2 * step)
    want = np.where(nan, 0.0, want)
    terms = np.where(nan, 0.0, g0) * v0
    jvp, size = float(np.sum(terms)), float(np.sum(np.abs(terms)))
    first = spec.make_cases(0)[0].name == case.name
    for dtype in _DTYPES[backend] if path == "small" and first else _DTYPES[backend][-1:]:
        got = b.derivatives(loss(dtype), b.array(x0, dtype), b.array(v0, dtype))
        for how, value in got.items():
            if how == "jvp":
                _check(np.sum(value), jvp, dtype, size)
            else:
                _check(value, want, dtype)


@pytest.mark.parametrize(("reduction", "array"), [("none", None), ("weighted_mean", "weights"),
                                                  ("mean", "where")])
@pytest.mark.parametrize("name", ["binary_cross_entropy", "binary_focal_loss"])
@pytest.mark.parametrize("backend", sorted(_HARNESS))
def test_elementwise_closed_forms(backend, name, reduction, array):  # type: ignore[no-untyped-def]
    """BCE on probabilities and the binary focal loss at gamma 0, reduced after their
    elementwise closed form (``Adapter.elementwise_closed_form``: weights, a mask, reduction
    "none"): H v and the JVP as in :func:`test_second_derivatives_and_jvps`."""
    from conftest import installed

    if not installed(backend):
        pytest.skip(f"{backend} is not installed")
    b = _HARNESS[backend]()
    rng = np.random.default_rng(4)
    x0, t, w = (rng.uniform(lo, hi, (6, 5)) for lo, hi in ((0.05, 0.95), (0, 1), (0.5, 2)))
    keep, v0 = rng.uniform(0, 1, (6, 5)) < 0.7, rng.normal(size=(6, 5))
    extra = {"gamma": 0.0} if name == "binary_focal_loss" else {}
    fn = getattr(unilosses, name)

    def loss(dtype):  # type: ignore[no-untyped-def]
        kw = {} if array is None else {array: b.array(w if array == "weights" else keep, dtype)}
        return lambda x: b.total(fn(x, b.array(t, dtype), reduction=reduction, **extra, **kw))

    f64, step = loss("float64"), 1e-6
    g0 = b.grad(f64, b.array(x0, "float64"))
    want = (b.grad(f64, b.array(x0 + step * v0, "float64"))
            - b.grad(f64, b.array(x0 - step * v0, "float64"))) / (2 * step)
    terms = g0 * v0
    for dtype in _DTYPES[backend]:
        got = b.derivatives(loss(dtype), b.array(x0, dtype), b.array(v0, dtype))
        for how, value in got.items():
            if how == "jvp":
                _check(np.sum(value), float(np.sum(terms)), dtype, float(np.sum(np.abs(terms))))
            else:
                _check(value, want, dtype)
