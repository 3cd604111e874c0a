"""Long training runs: nothing grows per step, nothing compiles per step.

A run of days calls a loss millions of times with values that change: a new batch size, an
option on a schedule (``gamma``, ``alpha``, ``label_smoothing``).  The library's own caches
(constants, compiled closed forms, adapters) must stay bounded whatever those values are, and
compile no more than the framework's own loss does in the same loop.  Each check here is a
count after a number of distinct values, not a timing.
"""

from __future__ import annotations

import pytest

import unilosses

# -- torch: the fused closed forms (torch.compile inside an eager call) ---------------------------

@pytest.fixture
def fused_counted(monkeypatch):  # type: ignore[no-untyped-def]
    """The fused path on the CPU, with torch.compile replaced by a counter (the body runs
    uncompiled: what is counted is how often the library asks to compile)."""
    torch = pytest.importorskip("torch")
    from unilosses.backends import _torch_kernels as kernels

    monkeypatch.setattr(kernels, "_FUSED_DEVICES", frozenset({"cpu", "cuda"}))
    monkeypatch.setattr(kernels, "_FUSED_ON", True)
    monkeypatch.setattr(kernels, "_COMPILED", {})
    monkeypatch.setattr(kernels, "_VARIANTS", {})
    compiled: list[str] = []

    def count(fn, **kw):  # type: ignore[no-untyped-def]
        compiled.append(fn.__name__)
        return fn

    monkeypatch.setattr(torch, "compile", count)
    return kernels, compiled


@pytest.mark.parametrize("option", ["gamma", "alpha"])
def test_fused_closed_form_compiles_boundedly_under_an_option_schedule(fused_counted, option):  # type: ignore[no-untyped-def]
    # A gamma (or alpha) schedule, a new value every step: each value was a compiled body of
    # its own (a new key of _COMPILED: seconds of inductor per step on a GPU, and a cache
    # that grew for the whole run), where torchvision's focal loss compiles nothing
    import torch

    kernels, compiled = fused_counted
    n = kernels._FUSED_MIN
    g = torch.Generator().manual_seed(0)
    x0, t = torch.randn(n, generator=g), (torch.rand(n, generator=g) > 0.5).float()
    bound = kernels._FUSED_VARIANTS
    steps = bound + 4
    for step in range(steps):
        value = {"gamma": 1.0 + step / steps, "alpha": 0.1 + 0.8 * step / steps}[option]
        x = x0.clone().requires_grad_(True)
        loss = unilosses.binary_focal_loss_with_logits(x, t, **{option: value})
        loss.backward()
        with torch.no_grad():  # the value alone: a body of its own
            unilosses.binary_focal_loss_with_logits(x0, t, **{option: value})
        assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert len(compiled) <= 2 * bound
    assert len(kernels._COMPILED) <= 2 * bound
    # values past the bound are still the loss's (on the eager blocks)
    x = x0.clone().requires_grad_(True)
    loss = unilosses.binary_focal_loss_with_logits(x, t, **{option: 0.5})
    loss.backward()
    with torch.no_grad():
        p = torch.sigmoid(x0)
        ce = torch.nn.functional.binary_cross_entropy_with_logits(x0, t, reduction="none")
        pt = p * t + (1 - p) * (1 - t)
        a = {"gamma": 0.25, "alpha": 0.5}[option]
        gm = {"gamma": 0.5, "alpha": 2.0}[option]
        want = ((a * t + (1 - a) * (1 - t)) * (1 - pt) ** gm * ce).mean()
    assert abs(float(loss.detach()) - float(want)) <= 1e-5 * float(want)
