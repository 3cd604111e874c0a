"""Framework transformations that wrap a loss beyond jit and grad: batched cotangents
(``torch.autograd.grad(is_grads_batched=True)``, ``autograd.functional.jacobian(vectorize=
True)``), checkpointing, scans, numeric gradient checks.  The truth is the same loss without
the transformation (or per example), in float64."""

from __future__ import annotations

import numpy as np
import pytest

import unilosses

F64 = {"rtol": 1e-10, "atol": 1e-12}


def _torch_inputs(shape=(6, 4), seed=0):  # type: ignore[no-untyped-def]
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(seed)
    x = torch.tensor(2.0 * rng.normal(size=shape))
    t = torch.tensor((rng.uniform(size=shape) > 0.5) * 1.0)
    return x, t


# -- torch: a batch of cotangents through the custom Functions' backward ---------------------

# (each takes a custom torch.autograd.Function on small inputs with a gradient wanted: the
# plain log_cosh's, and the closed form's blocks for gamma 1.5)
TORCH_FUNCTION_LOSSES = [
    ("log_cosh", lambda x, t: unilosses.log_cosh(x, t)),
    ("log_cosh-sum", lambda x, t: unilosses.log_cosh(x, t, reduction="sum")),
    ("focal-gamma-1.5", lambda x, t: unilosses.binary_focal_loss_with_logits(x, t, gamma=1.5)),
    ("focal-probabilities", lambda x, t: unilosses.binary_focal_loss(
        torch_sigmoid(x), t, gamma=3.0)),
    ("anchor-focal", lambda x, t: unilosses.anchor_focal_loss_with_logits(
        x, t, anchor_states(x), gamma=1.5)),
]


def torch_sigmoid(x):  # type: ignore[no-untyped-def]
    import torch
    return torch.sigmoid(x)


def anchor_states(x):  # type: ignore[no-untyped-def]
    import torch
    return torch.tensor([1, 0, -1, 1, 0, 1][: x.shape[0]])


def _torch_grad(f, x, t, cotangent=1.0):  # type: ignore[no-untyped-def]
    import torch
    xg = x.detach().clone().requires_grad_(True)
    return torch.autograd.grad(f(xg, t) * cotangent, xg)[0]


@pytest.mark.parametrize("case", TORCH_FUNCTION_LOSSES, ids=[c[0] for c in TORCH_FUNCTION_LOSSES])
def test_torch_batched_cotangents(case):  # type: ignore[no-untyped-def]
    """``is_grads_batched=True`` runs backward under vmap: a Function's backward that scaled
    its gradient in place by the cotangent (``mul_``) or read it (``bool(g == 1)``) raised
    "vmap: aten::mul_(self, *extra_args) is not possible" / "Batching rule not implemented
    for aten::is_nonzero", where torch's own losses take it."""
    torch = pytest.importorskip("torch")
    _, f = case
    x, t = _torch_inputs()
    g0 = _torch_grad(f, x, t)
    xg = x.clone().requires_grad_(True)
    out = f(xg, t)
    cot = torch.tensor([1.0, 2.0, -0.5], dtype=torch.float64)
    (g,) = torch.autograd.grad(out, xg, cot, is_grads_batched=True)
    for i, c in enumerate(cot.tolist()):
        torch.testing.assert_close(g[i], c * g0, **F64)
    jac = torch.autograd.functional.jacobian(lambda a: f(a, t), x, vectorize=True)
    torch.testing.assert_close(jac, g0, **F64)


def test_torch_gradient_in_pos_weight():  # type: ignore[no-untyped-def]
    """A gradient in ``pos_weight`` (a learned class balance, a BCEWithLogitsLoss buffer
    under functional_call): torch's kernel has none ("not differentiable with respect to
    argument 'pos_weight'", F.binary_cross_entropy_with_logits alike); the composition has."""
    torch = pytest.importorskip("torch")
    import unilosses.torch as ut
    x, t = _torch_inputs((5, 3))
    pw = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    bce = unilosses.binary_cross_entropy_with_logits
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(
            lambda p, r=reduction: bce(x, t, pos_weight=p, reduction=r), (pw,))
    want = torch.func.grad(lambda p: unilosses.binary_cross_entropy_with_logits(
        x, t, pos_weight=p))(pw.detach())
    (got,) = torch.autograd.grad(unilosses.binary_cross_entropy_with_logits(
        x, t, pos_weight=pw), pw)
    torch.testing.assert_close(got, want, **F64)
    module = ut.BCEWithLogitsLoss(pos_weight=pw.detach())
    (name,) = dict(module.named_buffers())
    (got,) = torch.autograd.grad(torch.func.functional_call(module, {name: pw}, (x, t)), pw)
    torch.testing.assert_close(got, want, **F64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_vmap_over_labels_with_label_smoothing(reduction):  # type: ignore[no-untyped-def]
    """torch.func.vmap over the integer labels alone, with label smoothing: torch's
    cross-entropy kernel raised "vmap: inplace arithmetic(self, *extra_args) is not possible"
    (F.cross_entropy alike); the loss per example is the answer."""
    torch = pytest.importorskip("torch")
    x, _ = _torch_inputs((5, 3))
    labels = torch.tensor([[0, 2, 1, 1, 0], [2, 2, 0, 1, 1]])

    def f(a, y):  # type: ignore[no-untyped-def]
        return unilosses.sparse_categorical_cross_entropy_with_logits(
            a, y, label_smoothing=0.2, reduction=reduction)

    got = torch.func.vmap(lambda y: f(x, y), chunk_size=1)(labels)
    grads = torch.func.vmap(lambda y: torch.func.grad(lambda a: f(a, y).sum())(x))(labels)
    for i in range(2):
        torch.testing.assert_close(got[i], f(x, labels[i]), **F64)
        torch.testing.assert_close(grads[i], _torch_grad(lambda a, y: f(a, y).sum(), x,
                                                         labels[i]), **F64)


def test_torch_range_checks_read_forward_ad_duals_where_aminmax_has_no_rule(monkeypatch):  # type: ignore[no-untyped-def]
    # older torch (2.5.1 and 2.6.0 seen; not 2.13) has no forward-AD rule for aminmax, which the
    # probabilities' range checks read: torch.func.jvp of BCE raised NotImplementedError
    # there.  torch.aminmax is made to refuse duals as old torch does; the JVP must still
    # equal the gradient's contraction with the tangent.
    torch = pytest.importorskip("torch")
    import torch.autograd.forward_ad as fwAD

    real = torch.aminmax

    def aminmax(x, *args, **kwargs):  # type: ignore[no-untyped-def]
        if fwAD.unpack_dual(x).tangent is not None:
            raise NotImplementedError("Trying to use forward AD with aten::aminmax that does "
                                      "not support it.")
        return real(x, *args, **kwargs)

    monkeypatch.setattr(torch, "aminmax", aminmax)
    p = torch.tensor([0.2, 0.7, 0.9, 0.4], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 1.0, 0.5], dtype=torch.float64)
    v = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    for f in (unilosses.binary_cross_entropy, unilosses.binary_focal_loss,
              unilosses.categorical_cross_entropy):
        with fwAD.dual_level():
            jvp = fwAD.unpack_dual(f(fwAD.make_dual(p, v), t)).tangent
        q = p.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(f(q, t), q)
        torch.testing.assert_close(jvp, (g * v).sum(), rtol=1e-12, atol=0)
