"""PyTorch adapter: torch's own fused kernels, with autograd, on the tensor's device."""

from __future__ import annotations

import types
from typing import Any

import array_api_compat.torch as xp_torch
import torch
import torch.nn.functional as F

from . import _torch_kernels
from ._base import Adapter, Array


def _sign(x: Array, /) -> Array:
    # array_api_compat's sign puts NaN back with a boolean-mask assignment, which torch.func
    # (vmap, grad) cannot batch; a select can
    return torch.where(torch.isnan(x), x, torch.sign(x))


def _sum(x: Array, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False,
         **kwargs: Any) -> Array:
    # array_api_compat 1.11's sum starts with torch.asarray(x), which before torch's change of
    # asarray's requires_grad default returned x detached: a masked loss on torch 2.3 had no
    # gradient ("element 0 of tensors does not require grad").  Tensors that carry a gradient
    # (floating ones) are summed here; the rest as array_api_compat does.
    if not (isinstance(x, torch.Tensor) and x.requires_grad):
        return xp_torch.sum(x, axis=axis, dtype=dtype, keepdims=keepdims, **kwargs)
    if axis == ():
        return x.clone() if dtype is None else x.to(dtype)
    if axis is None:
        out = torch.sum(x, dtype=dtype)
        return out.reshape((1,) * x.ndim) if keepdims else out
    return torch.sum(x, axis, dtype=dtype, keepdim=keepdims)


def _compat_sum_detaches() -> bool:
    """Whether array_api_compat's sum drops the autograd graph (feature test, at load)."""
    return not xp_torch.sum(torch.zeros(1, requires_grad=True)).requires_grad


def _namespace() -> Any:
    """array_api_compat.torch, with a sign that torch.func can batch (and, where its sum
    detaches, one that does not)."""
    ns = types.ModuleType(xp_torch.__name__, xp_torch.__doc__)
    ns.__dict__.update(xp_torch.__dict__)
    ns.sign = _sign  # type: ignore[attr-defined]
    if _compat_sum_detaches():
        ns.sum = _sum  # type: ignore[attr-defined]
    return ns


class TorchAdapter(Adapter):
    name = "torch"

    def __init__(self) -> None:
        super().__init__(_namespace())

    plain_dtypes = (torch.float32, torch.float64)
    label_dtypes = (torch.int64, torch.int32)

    def device(self, x: Array) -> Any:
        return x.device

    def is_floating(self, x: Array) -> bool:
        return x.is_floating_point()

    def is_integral(self, x: Array) -> bool:
        return not (x.is_floating_point() or x.is_complex())

    def is_half(self, dtype: Any) -> bool:
        return dtype in (torch.float16, torch.bfloat16)

    def is_tracing(self, x: Array) -> bool:
        return _torch_kernels.tracing(x)

    def no_gradient(self, *xs: Array) -> bool:
        # (torch.func.grad's inputs require grad, even under no_grad; forward-mode tangents
        # pass a select as they are; the tracing test last, 3 us where the others take 0.3)
        if torch.is_grad_enabled() and any(x.requires_grad for x in xs):
            return False
        return not _torch_kernels.tracing(*xs)

    def extrema(self, x: Array) -> tuple[Any, Any] | None:
        # one read and one host transfer, where comparisons make temporaries and several passes
        if x.numel() == 0 or x.dtype == torch.bool or x.is_complex():
            return None
        lo, hi = _torch_kernels._aminmax(x)  # (a forward-AD dual too, on older torch)
        if x.is_cpu:  # two reads of memory cost less than the stack's op
            return lo.item(), hi.item()
        lo, hi = torch.stack((lo, hi)).tolist()  # one device-to-host transfer
        return lo, hi

    def bounded(self, x: Array) -> bool:
        # (below _CHECK_MIN elements the clamp is one small op, cheaper than a read and a sync)
        # (compiling first: a symbolic size compared with a constant would add a guard)
        return (not torch.compiler.is_compiling() and x.numel() >= _torch_kernels._CHECK_MIN
                and not self.is_tracing(x) and _torch_kernels._bounded(x))

    def known_binary(self, y: Array) -> bool:
        # eager CPU only: elsewhere the answer would stall the device or cannot be read.
        # (y - y^2)^2 sums to 0 exactly when every y is 0 or 1 (NaN and inf give NaN); only
        # |y| < 1e-19 underflows, and the forms differ there by O(y)
        if not y.is_cpu or not y.is_floating_point() or self.is_tracing(y):
            return False
        u = torch.addcmul(y, y, y, value=-1.0).reshape(-1)  # y - y^2 in one kernel
        return bool(torch.dot(u, u) == 0)

    def dense(self, x: Array) -> Array:
        # torch sums a view that is not dense (an expanded tensor's zero stride, a step over
        # rows) one element at a time along its outer dimension, where a dense tensor's sum is
        # pairwise: per-class float32 weights broadcast over 1e5 rows summed 2e-4 off, 2000x
        # eps.  (contiguous() is x itself where x already is.)
        return x.contiguous()

    def asarray(self, value: Any, *, dtype: Any = None, like: Array | None = None) -> Array:
        device = None if like is None else like.device
        return torch.as_tensor(value, dtype=dtype, device=device)

    def astype(self, x: Array, dtype: Any) -> Array:
        return x if x.dtype == dtype else x.to(dtype)

    differentiable = True

    def to_numpy(self, x: Array) -> Any:
        x = x.detach().cpu()
        if x.dtype == torch.bfloat16:
            # NumPy has no bfloat16; ml_dtypes (installed with JAX/TF) has, else widen
            try:
                import ml_dtypes
            except ImportError:
                return x.float().numpy()
            return x.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return x.numpy()

    def from_numpy(self, a: Any) -> Array:
        if a.dtype.name == "bfloat16":
            return torch.from_numpy(a.view("int16").copy()).view(torch.bfloat16)
        return torch.from_numpy(a.copy())

    def value_and_grad(self, fn: Any, x: Array, *rest: Array) -> tuple[Array, Array]:
        x = x.detach().clone().requires_grad_(True)
        out = fn(x, *rest)
        (g,) = torch.autograd.grad(out, x)
        return out.detach(), g

    kernels = _torch_kernels.KERNELS
    plain = _torch_kernels.PLAIN

    def chunked_sum(self, elementwise: Any, *arrays: Array, value_and_grad: Any = None,
                    scale: float = 1.0, columns: int = 1, blocks_only: bool = False,
                    bounds: bool = False, light: bool = False) -> Array | None:
        if torch.compiler.is_compiling():
            # compiled: no blocks (the compiler fuses), but the closed-form derivative still
            # spares backward the composition's intermediates, unless they are few
            if blocks_only or light:
                return None
            return _torch_kernels.closed_form_sum(value_and_grad, *arrays, scale=scale)
        # (any of them: vmap over the targets wraps them alone, and the Functions of the
        # block-wise sums have no functorch rules)
        if _torch_kernels.tracing(*arrays):
            return None
        return _torch_kernels.chunked_sum(elementwise, *arrays, value_and_grad=value_and_grad,
                                          scale=scale, columns=columns,
                                          blocks_only=blocks_only, bounds=bounds)

    def log_cosh(self, d: Array, grad: bool) -> tuple[Array, Array | None] | None:
        return _torch_kernels.log_cosh_terms(d, grad)

    def weighted_block_sum(self, elementwise: Any, *arrays: Array, value_and_grad: Any,
                           weights: Array | None, mask: Array | None, reduction: str,
                           columns: int = 1, blocks_only: bool = False,
                           bounds: bool = False) -> Array | None:
        return _torch_kernels.weighted_block_sum(elementwise, *arrays,
                                                 value_and_grad=value_and_grad,
                                                 weights=weights, mask=mask,
                                                 reduction=reduction, columns=columns,
                                                 blocks_only=blocks_only, bounds=bounds)

    def elementwise_closed_form(self, elementwise: Any, value_and_grad: Any,
                                *arrays: Array) -> Array | None:
        # compiled, the Function is traced with its backward; under torch.func transforms
        # (vmap, grad, jvp) it has no rules, and on the meta device or fake tensors nothing
        # gains: the composition
        if not torch.compiler.is_compiling() and _torch_kernels.tracing(*arrays):
            return None
        return _torch_kernels.closed_form_elementwise(value_and_grad, *arrays)

    def where(self, cond: Array, x: Any, y: Any) -> Array:
        return torch.where(cond, x, y)

    def safe_abs(self, x: Array) -> Array:
        # torch.abs's gradient is sign(x): 0 at 0 already, in one kernel instead of two
        return torch.abs(x)

    def mask_selector(self, mask: Array) -> Any:
        return _torch_kernels.mask_selector(mask)

    def count(self, mask: Array, axis: Any, dtype: Any) -> Array:
        # summed as bytes, cast on the fly (1e6 elements: 0.41 ms, against 0.88 for the cast
        # and the sum)
        return torch.sum(mask.view(torch.uint8), dim=axis, dtype=dtype)

    def select_finite(self, mask: Array, x: Array) -> Array:
        # on CPU torch.where costs several times a product (measured 1.8 against 0.3 ns per
        # element with a broadcast mask)
        return x * mask.to(x.dtype)

    def add_product(self, a: Array, b: Array, c: Array, k: float = 1.0) -> Array:
        return torch.addcmul(a, b, c, value=k)

    def affine(self, y: Array, a: float, b: float) -> Array:
        # rsub(y, a, alpha) = a - alpha y: one kernel, where `a + b * y` is two and the
        # Python number on the left is first copied into a tensor
        return torch.rsub(y, a, alpha=-b)

    def relu(self, x: Array) -> Array:
        return torch.relu(x)

    def clip(self, x: Array, lo: float | None, hi: float | None) -> Array:
        # torch.clamp's backward passes the gradient on the closed interval [lo, hi] and zero
        # outside, the same rule as the generic double select, in one fused kernel (on a
        # large CPU input, with its backward by bits: _torch_kernels.clip)
        return _torch_kernels.clip(x, lo, hi)

    def take_along_axis(self, x: Array, indices: Array, axis: int) -> Array:
        return torch.gather(x, axis, indices.to(torch.int64))

    def stop_gradient(self, x: Array) -> Array:
        return x.detach()

    def sigmoid(self, x: Array) -> Array:
        return torch.sigmoid(x)

    def log_sigmoid(self, x: Array) -> Array:
        return F.logsigmoid(x)

    def sigmoid_logs(self, x: Array) -> tuple[Array, Array, Array, Array]:
        # torch never differentiates a closed-form derivative (blocks take the composition
        # under create_graph, the compiled one is once_differentiable), so ties at 0 are moot
        if torch.compiler.is_compiling():
            # fused, a select costs nothing: one exp, one division and one log1p, where two
            # sigmoids are two of each.  e r is the smaller sigmoid to full relative precision
            e = torch.exp(-torch.abs(x))
            r = 1.0 / (1.0 + e)
            s = e * r
            positive = x > 0
            lm = -torch.log1p(e)
            return (torch.where(positive, r, s), torch.where(positive, s, r),
                    torch.clamp(x, max=0.0) + lm, lm - torch.clamp(x, min=0.0))
        # eagerly with a min (a select costs 7x as much on the CPU)
        p, q = torch.sigmoid(x), torch.sigmoid(-x)
        lm = torch.log1p(-torch.minimum(p, q))
        return p, q, torch.clamp(x, max=0.0) + lm, lm - torch.clamp(x, min=0.0)

    def softplus(self, x: Array) -> Array:
        # F.softplus switches to the identity above a threshold (an error of exp(-20) in
        # float64); -logsigmoid(-x) is exact everywhere and has the exact gradient sigmoid(x).
        return -F.logsigmoid(-x)

    def logsumexp(self, x: Array, axis: int, keepdims: bool = False) -> Array:
        return torch.logsumexp(x, dim=axis, keepdim=keepdims)

    def log_softmax(self, x: Array, axis: int) -> Array:
        return torch.log_softmax(x, dim=axis)


def load() -> Adapter:
    return TorchAdapter()
