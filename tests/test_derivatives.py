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


def _check(got: np.ndarray, want: np.ndarray, dtype: str) -> None:
    """``got`` within a dtype-sized multiple of eps of ``want``, relative to its magnitude."""
    got = np.asarray(got, np.float64)
    assert np.isfinite(got).all(), got
    tol = F64_TOL if dtype == "float64" else 64 * float(np.finfo(np.float32).eps)
    scale = max(float(np.abs(want).max()), 1e-30)
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
