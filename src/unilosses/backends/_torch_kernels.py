"""torch's own fused kernels for whole losses, and block-wise evaluation of long compositions.

A plain composition of torch operators allocates and walks a full-size temporary per operator,
where ``F.huber_loss`` or ``F.cross_entropy`` make one or two passes; in eager mode that is up
to 30x slower (see README "Performance").  So where torch has a kernel with *exactly* the
semantics of a loss, the torch adapter calls it.  The conditions each kernel checks are the
semantics that would otherwise differ:

* torch's mean of an empty tensor is NaN, unilosses's is 0: empty means take the generic path;
* unilosses clamps logits to +-max/4 (so +-inf give finite values); torch's kernels do not: the
  logits are clamped too, or, on large CPU inputs, shown to lie within the bound by a finite
  ``x . x`` (one read instead of a read, a write and a backward pass);
* a label out of range makes ``F.cross_entropy`` raise (CPU): the generic path then gives
  unilosses's own error, or clamps the label when checks are off;
* torch's mean over rows whose labels all equal ``ignore_index`` (or whose class weights,
  ``weight=``, are all 0) is 0 / 0, unilosses's 0; and
  rows left out (``ignore_index``, a mask) keep their logits, where the generic path replaces
  them: only where one read shows every logit finite (eagerly on the CPU);
* torch's mean with class weights (``weight=``) divides by the labels' summed weight, which is
  unilosses's "weighted_mean"; unilosses's "mean" divides by the row count.

Losses without a kernel anywhere but with a closed-form derivative (the focal losses,
``log_cosh``) are evaluated block by block on the CPU (``chunked_sum``) and, on a GPU, through
their closed form compiled into one kernel (``_fused_sum``).

``tests/test_native.py`` compares every kernel with the generic composition on the same inputs,
values and gradients, at ties, the Huber boundary and extreme values.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
import types
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor
from torch.autograd.function import once_differentiable

Array = Any

#: below this many elements logits are clamped (one small op); above it, checked (one read)
_CHECK_MIN = 1 << 16
#: an ignore_index that no valid label can equal (unilosses's own default is "none")
_NO_INDEX = -(2**63)
#: torch's reduction codes, as ``torch.nn._reduction.get_enum`` gives them
_ENUM = {"none": 0, "mean": 1, "sum": 2}
#: the kernels behind ``F.*``.  Eagerly they are called directly: F's Python wrappers
#: (a broadcast, a size warning, the reduction's lookup) cost more than the kernel itself on
#: small inputs, and the shapes are already checked equal.  Compiled, F's are traced as usual
#: (but cross_entropy on the CPU, where the composition compiles better).
_nn: Any = torch._C._nn  # (its stubs type `reduction` as str; it takes the int code)


def _reduction(call: Any, x: Array) -> str | None:
    r = call.reduction
    if r == "weighted_mean":  # without weights (no kernel is used with them) it is the mean
        r = "mean"
    if r == "mean" and x.numel() == 0:
        return None
    return r


def _bounded(x: Array) -> bool:
    """Whether every |x_i| <= max/4 is cheaply shown (then clamping x is the identity).

    x.x is finite only if every |x_i| < sqrt(max) < max/4 and none is NaN: one vectorised
    read, on the CPU (elsewhere reading the answer back would stall the device).
    """
    if not x.is_cpu or not x.is_contiguous() or not x.is_floating_point():
        return False
    if x.dtype in _BOUNDS and x.numel() < _CHECK_MIN:
        if x.numel() <= _LIST_MAX and 1 <= x.ndim <= 2:
            # the Python floats' hypot, |x| (inf for an inf, NaN for a NaN without one: both
            # fail the test): called between torch's calls, NumPy's
            # dot below cost the forward and backward around it more than its own time (16
            # logits, sparse CE with backward: 1.36x F.cross_entropy's time, against 1.67x;
            # the dot alone 0.5 us, the loop 4-5 us longer with it, the list's 0.5)
            v = x.tolist()
            return math.hypot(*(v if x.ndim == 1 else _chain(v))) <= _LIST_BOUNDS[x.dtype]
        # NumPy's dot of the tensor's own memory (a view, no copy): on small inputs torch's
        # dispatch of ``dot`` and the ``.item()`` cost more than the product (16 elements:
        # ~3.6 us against ~6.5).  Not on large ones, though on one thread its BLAS reads
        # faster (1e6 float32 elements: 51-55 us against 75-86): BLAS may start threads of
        # its own there, beyond torch's count (OpenBLAS's float64 dot took two at 1.6e7
        # elements with torch on one), and the saving was within the runs' noise
        a = _host_view(x)
        if a is not None:
            return math.isfinite(_vdot(a, a))
    v = x.detach().view(-1)  # (not recorded by autograd)
    # the scalar read back and tested in Python: torch.isfinite on a 0-d tensor is five
    # small ops (abs, ne, mul, eq, a copy), 20-50 us
    return math.isfinite(torch.dot(v, v).item())


_BOUNDS = {dt: torch.finfo(dt).max / 4 for dt in (torch.float32, torch.float64)}
#: up to this many elements the bound is read through the Python floats of ``tolist``
_LIST_MAX = 64
#: what x.x's finiteness shows, that every |x_i| < sqrt(max) (so that a product of two such
#: values is finite too), for the hypot of ``tolist``: sqrt(max) less 2^-50 of it, since a
#: computed hypot is within one unit in the last place of the true one
_LIST_BOUNDS = {dt: math.sqrt(torch.finfo(dt).max) * (1 - 2.0**-50) for dt in _BOUNDS}
_chain = itertools.chain.from_iterable
#: the dtypes whose ranges are read through ``tolist`` (the anchor states' int64 too)
_LISTED = {torch.float32, torch.float64, torch.int64}
#: up to this many elements a range is read through ``tolist`` (``min``, ``max`` and a sum
#: for NaN cost more per element than the hypot: forward on 32 probabilities in rows of 4,
#: CE on probabilities took 1.1-1.2x the time with ``aminmax``)
_EXTREMA_LIST_MAX = 16
_vdot = np.vdot


def _host_view(x: Array) -> Any:
    """NumPy's view of a CPU tensor's own memory (no copy, not recorded by autograd), or
    None for one NumPy cannot view (a negative or conjugate view): torch reads it then."""
    try:
        return (x.detach() if x.requires_grad else x).numpy()
    except RuntimeError:
        return None


_is_wrapped = getattr(torch._C._functorch, "is_functorch_wrapped_tensor", None)
_Tensor = torch.Tensor


def functorch_wrapped(x: Array) -> bool:
    """Whether ``x`` is wrapped by a torch.func transform (vmap, grad): its values are not
    to be read back."""
    return _is_wrapped is not None and bool(_is_wrapped(x))


_is_legacy_batched = getattr(torch._C._functorch, "is_legacy_batchedtensor", None)


def batched(g: Array) -> bool:
    """Whether ``g`` (a cotangent in a Function's backward) is batched by a vmap: torch.func's,
    or the legacy one that ``autograd.grad(is_grads_batched=True)`` and
    ``autograd.functional.jacobian(vectorize=True)`` run backward under.  Such a ``g`` is
    neither read nor an operand of an op in place into an unbatched tensor (vmap refuses
    both)."""
    return functorch_wrapped(g) or (_is_legacy_batched is not None
                                    and bool(_is_legacy_batched(g)))


def tracing(x: Array, *others: Array) -> bool:
    """Whether ``x`` has no values to read (``TorchAdapter.is_tracing``): under torch.compile
    they are fake; under torch.func transforms (vmap, grad) wrapped, and reading one back
    would be data-dependent control flow; on the meta device there are none, nor in a
    FakeTensorMode outside torch.compile (shape inference, ``make_fx``'s fake tracing), whose
    tensors report a real device.  (``is_meta``: ``x.device.type`` builds a device object, 5x
    the time, which counts on tiny calls; the subclass test only after the exact type's, which
    a plain tensor passes at once.)  ``others``: the call's other arrays, on x's device, which
    a transform may wrap alone (vmap over the targets; the gradient in them)."""
    if (_compiling() or _wrapped(x) or x.is_meta
            or (type(x) is not _Tensor and isinstance(x, FakeTensor))):
        return True
    for a in others:
        if _wrapped(a):
            return True
    return False


# (called as they are, not through a Python function of ours: :func:`tracing` of two
# tensors in 0.46-0.48 us against 0.62-0.68; torch.compile knows is_compiling by the
# function object, whatever its name here)
_compiling = torch.compiler.is_compiling
_wrapped: Callable[[Array], bool] = _is_wrapped or (lambda x: False)


def _clamped(x: Array) -> Array:
    """``x`` clamped to +-max/4 of its floating dtype (``finite_logits``'s clamp)."""
    bound = _BOUNDS.get(x.dtype)
    if bound is None:
        bound = torch.finfo(x.dtype).max / 4
    return torch.clamp(x, -bound, bound)


#: a plain call's constants as 0-d CPU tensors, by (value, dtype): an arithmetic op or a
#: select takes a tensor operand in about half the time of a Python number, which torch wraps
#: in a fresh tensor at every call (``x * c`` ~1.8 us against ~4.0 for ``x * 0.5``,
#: ``torch.where(keep, x, c)`` 2.4-3.3 against 3.9-5.1, on 16 and 1e3 elements; interleaved,
#: fastest of 9).  The results are the same: a number and a 0-d tensor of the operand's dtype
#: both take part in the op in that dtype.  (Not for ``torch.clamp``, whose bounds as numbers
#: take a kernel of their own, as fast or faster.)
_CONSTANTS: dict[tuple[float, Any], Array] = {}


def _const(value: float, dtype: Any) -> Array:
    c = _CONSTANTS.get((value, dtype))
    if c is None:
        if len(_CONSTANTS) >= 256:  # (eps, alpha and the batch size are the user's)
            _CONSTANTS.clear()
        # ordinary tensors even when first asked inside inference_mode (autograd may save
        # them later, which it refuses for inference tensors), on the CPU whatever the
        # default device (plain calls are the CPU's)
        with torch.inference_mode(False):
            c = _CONSTANTS[value, dtype] = torch.tensor(value, dtype=dtype, device="cpu")
    return c


def _plain_finite(x: Array) -> Array:
    """``x`` clamped to +-max/4 (a plain call's small CPU logits), or ``x`` itself where
    autograd records it and one read shows the clamp changes nothing: there the clamp's
    backward node costs more than the read (sparse CE on 16 elements, forward+backward: 1.50x
    ``F.cross_entropy``'s time clamped, 1.25x read), where forward alone the clamp is the
    cheaper (1.24x against 1.69x)."""
    if x.requires_grad and torch.is_grad_enabled() and _bounded(x):
        return x
    return _clamped(x)


def _finite(call: Any, x: Array) -> Array:
    """``x`` clamped to +-max/4 of its dtype, as ``finite_logits`` does (maybe without a copy).

    Traced (compiled, torch.func), no value can be read back; the clamp then fuses anyway."""
    return x if call.ad.bounded(x) else _clamped(x)


def mse(call: Any, p: Array, t: Array) -> Array | None:
    r = _reduction(call, p)
    if r is None:
        return None
    if torch.compiler.is_compiling():
        return F.mse_loss(p, t, reduction=r)
    if r == "mean" and _backward_in_forward_mode(p, t):
        # forward mode over the mean's backward (torch.func.jvp(grad(f)), forward_ad under
        # create_graph) writes into an immutable ZeroTensor in torch (RuntimeError)
        return None
    return _nn.mse_loss(p, t, _ENUM[r])


def mae(call: Any, p: Array, t: Array) -> Array | None:
    # l1_loss's gradient at a tie is sign(0) = 0, unilosses's rule
    r = _reduction(call, p)
    if r is None:
        return None
    if torch.compiler.is_compiling():
        return F.l1_loss(p, t, reduction=r)
    return _nn.l1_loss(p, t, _ENUM[r])


def huber(call: Any, p: Array, t: Array, delta: float) -> Array | None:
    # at |d| == delta both take the quadratic branch's value and gradient (equal there)
    r = _reduction(call, p)
    if r is None:
        return None
    if torch.compiler.is_compiling():
        return F.huber_loss(p, t, reduction=r, delta=delta)
    if _backward_in_forward_mode(p, t):  # huber_loss_backward has no forward-mode rule
        return None
    return _nn.huber_loss(p, t, _ENUM[r], delta)


def smooth_l1(call: Any, p: Array, t: Array, beta: float) -> Array | None:
    # beta > 0 (checked): F.smooth_l1_loss would switch to l1_loss at 0
    r = _reduction(call, p)
    if r is None:
        return None
    if torch.compiler.is_compiling():
        return F.smooth_l1_loss(p, t, reduction=r, beta=beta)
    return _nn.smooth_l1_loss(p, t, _ENUM[r], beta)


def bce_with_logits(call: Any, x: Array, t: Array, pos_weight: Any) -> Array | None:
    r = _reduction(call, x)
    if r is None or (pos_weight is not None and (
            t.requires_grad or getattr(pos_weight, "requires_grad", False))):
        # (the kernel's gradient in the targets multiplies the cotangent by pos_weight times
        # the clamped logit before dividing by the count: inf at a logit of +-max/4 or +-inf,
        # where the composition's is finite; and it has none in pos_weight: "not
        # differentiable with respect to argument 'pos_weight'", where the composition's is)
        return None
    if pos_weight is not None and not isinstance(pos_weight, torch.Tensor):
        pos_weight = torch.tensor(pos_weight, dtype=x.dtype, device=x.device)
    if torch.compiler.is_compiling():
        return F.binary_cross_entropy_with_logits(_finite(call, x), t, pos_weight=pos_weight,
                                                  reduction=r)
    return torch.binary_cross_entropy_with_logits(_finite(call, x), t, None, pos_weight,
                                                  _ENUM[r])


#: on the CPU torch's binary_cross_entropy is a scalar loop (a libm log per element): faster
#: than the composition's vectorised passes only up to these sizes (forward; with backward)
_BCE_CPU_MAX = (1 << 10, 1 << 12)


def bce(call: Any, p: Array, t: Array, checked: Callable[[], bool]) -> Array | None:
    # p is already clipped to [eps, 1 - eps] (or inside it), where log(p) >= -16.2: torch's
    # clamp of the log at -100 never acts, and it computes log1p(-p) as the composition does
    r = _reduction(call, p)
    if r is None or t.requires_grad or torch.compiler.is_compiling():
        return None  # (torch has no gradient for the target; compiled, the composition fuses)
    if p.is_cpu:
        if p.numel() > _BCE_CPU_MAX[p.requires_grad]:
            return None
    elif not checked():
        # off the CPU the kernel asserts p in [0, 1] on the device, which a NaN fails (the
        # clip keeps it): a device-side assert that ends the process's CUDA context, where the
        # formula gives NaN.  Only the range check (``checked()``) has refused NaN beforehand.
        return None
    return _target_checked_bce(p, t, _ENUM[r])


def _target_checked_bce(p: Array, t: Array, r: int) -> Array | None:
    """torch's kernel, or None where it refuses a target outside [0, 1] or NaN (on the CPU),
    which unilosses takes as given (soft targets, as Keras), as the generic path does."""
    try:
        return _nn.binary_cross_entropy(p, t, None, r)
    except RuntimeError:
        return None


def _rows(x: Array, axis: int) -> tuple[int, ...] | None:
    """The (rows, classes) view's shape, or None for a class axis torch cannot take as it is."""
    if axis == x.ndim - 1:
        return (-1, x.shape[axis])
    if axis == 1:
        return tuple(x.shape)
    return None


def cross_entropy(call: Any, x: Array, targets: Array, axis: int, label_smoothing: float,
                  labels: Callable[[], Array] | None = None, ignore_index: int | None = None,
                  left_out: bool = False, class_weights: Array | None = None) -> Array | None:
    """``F.cross_entropy`` for integer labels or probability targets.

    ``labels``: the labels checked and clamped by the generic path's rule.  On the CPU, eagerly,
    torch checks the range itself (cheaper: no extra pass), and a failure falls back to the
    generic path; elsewhere a bad label would be a device-side assert (or, traced, cannot be
    caught), so the labels are checked and clamped first.

    ``left_out``: some rows are left out (labels equal to ``ignore_index``, which torch's own
    ``ignore_index`` leaves out, or masked after this), their logits as given: eagerly on the
    CPU only, where one read shows every logit finite and within the clamp (a NaN in such a row
    would reach its gradient: the generic path replaces them instead).

    ``class_weights`` (with ``left_out``; 1-D, checked, no gradient wanted: torch has none for
    them): torch's ``weight=``, whose mean divides by the labels' summed weight, unilosses's
    "weighted_mean"; its "mean" is the sum over the row count (with ``ignore_index`` the kept
    rows' count, unknown without a read: the generic path).
    """
    r = _reduction(call, x)
    shape = _rows(x, axis)
    if r is None or shape is None:
        return None
    count = None
    if class_weights is not None:
        if class_weights.requires_grad or not left_out:
            return None
        if call.reduction == "mean":  # (not "weighted_mean")
            if ignore_index is not None:
                return None
            r, count = "sum", x.numel() // x.shape[axis]
    sparse = labels is not None or left_out
    compiling = torch.compiler.is_compiling()
    if left_out and (compiling or tracing(x, targets) or not _bounded(x)):
        return None  # (shown finite, the logits below need no clamp either)
    if x.is_cpu and compiling:
        # inductor on the CPU fuses the composition (the clamp inside its passes; for labels a
        # log-sum-exp and one gathered logit per row) better than F.cross_entropy of the
        # clamped logits: at 10000 x 100, in one process, against F.cross_entropy unclamped,
        # sparse 0.57-0.67 with backward (the kernel 0.91-1.10) and 1.13-1.15 forward (1.20-1.22),
        # soft targets 1.06 and 1.05 (1.15, 1.16)
        return None
    if sparse and label_smoothing and not compiling and functorch_wrapped(targets):
        # torch.func.vmap over the labels: torch's kernel smooths in place into a tensor
        # that is not batched ("vmap: inplace arithmetic ... is not possible"; F.cross_entropy
        # alike), the composition batches
        return None
    if labels is not None and (compiling or not x.is_cpu or call.ad.is_tracing(x)):
        targets = labels()
    flat = not (x.ndim == 2 or axis == 1)
    if not flat:  # already torch's layout, whose unreduced loss has the loss's shape
        x2, t2 = x, targets
    else:
        x2 = x.reshape(shape)
        t2 = targets.reshape(-1) if sparse else targets.reshape(shape)
    if not left_out:
        x2 = _finite(call, x2)
    if sparse and t2.dtype != torch.int64:
        t2 = t2.long()
    try:
        if compiling:
            out = F.cross_entropy(x2, t2, reduction=r, label_smoothing=label_smoothing,
                                  ignore_index=_NO_INDEX)
        else:
            out = _nn.cross_entropy_loss(x2, t2, class_weights, _ENUM[r],
                                         _NO_INDEX if ignore_index is None else ignore_index,
                                         label_smoothing)
    except IndexError:  # a label out of range: unilosses's message, or its clamp (checks off)
        return None
    if count is not None:
        return out / count
    if r == "mean" and class_weights is not None:
        # a zero summed weight: torch's 0 / 0, and a NaN gradient from the zero-weight rows
        # (0 times 1 / 0), where unilosses's is 0 with zero gradient: the generic path's (the
        # logits are finite, so NaN means that; read on the CPU, no device to stall)
        return None if math.isnan(out.item()) else out
    if r == "mean" and ignore_index is not None:
        # torch's mean of no kept row is 0 / 0, unilosses's 0; the loss of a finite logit is
        # finite, so NaN means that (and its derivative in it is 0: torch's backward writes
        # nothing for a left-out row)
        return torch.nan_to_num(out, nan=0.0)
    return out.reshape(call.loss_shape) if r == "none" and flat else out


# -- plain calls on small inputs ----------------------------------------------------------

#: reduction codes of a plain call ("weighted_mean" without weights is the mean)
_PLAIN_ENUM = {"mean": 1, "sum": 2, "none": 0, "weighted_mean": 1}

# Each condition costs 0.3-0.9 us here, against 4 us for F.cross_entropy on 16 elements, so
# they are written out inline, the cheapest and most telling first; options are compared only
# once their type is known (an array's comparison would raise its own error, not unilosses's).
# "Small plain logits": a float32/float64 tensor on the CPU, below _CHECK_MIN elements (its
# clamp is one small op; larger ones read their bound instead, on the generic path), outside
# torch.compile and torch.func (``tracing``).


def _code(reduction: Any) -> int | None:
    return _PLAIN_ENUM.get(reduction) if type(reduction) is str else None


def _zero(label_smoothing: Any) -> bool:
    """Whether the option is 0 as a Python float or int (other types, arrays among them,
    are left to the generic path's checks, which refuse what is not a number)."""
    ls = label_smoothing
    return (type(ls) is float or type(ls) is int) and ls == 0


def _plain_options(x: Array, shape: Any, weights: Any, where: Any) -> bool:
    """Whether a plain kernel takes these sample ``weights`` (x's dtype) and ``where`` mask
    (boolean), each None or a tensor of the unreduced loss's ``shape`` (not broadcast), on the
    CPU, not wrapped by a transform (the rest of :func:`tracing` is x's, and the exact type is
    not a FakeTensor's)."""
    if weights is not None and (type(weights) is not _Tensor or weights.dtype != x.dtype
                                or not weights.is_cpu or weights.shape != shape
                                or functorch_wrapped(weights)):
        return False
    return where is None or (type(where) is _Tensor and where.dtype == torch.bool
                             and where.is_cpu and where.shape == shape
                             and not functorch_wrapped(where))


def _gradient_wanted(*arrays: Array | None) -> bool:
    return torch.is_grad_enabled() and any(a is not None and a.requires_grad for a in arrays)


def _masked_finite(where: Array | None, x: Array, t: Array, w: Array | None) -> bool:
    """Whether a plain call's elementwise loss may be masked after the fact (:func:`_weighted`
    selects it): no mask, or no gradient wanted (in x, t or the weights ``w``), or reads show
    x and t finite, so that the loss and its derivatives are finite at the masked elements
    too (a NaN there would reach the gradient through ``0 * NaN``: the generic path replaces
    masked inputs instead)."""
    return (where is None or not _gradient_wanted(x, t, w)
            or (_bounded(x) and _bounded(t)))


def _masked_inputs(x: Array, t: Array | None, w: Array | None) -> Array | None:
    """Logits ``x`` for a masked plain call: clamped where no gradient is wanted (the masked
    elements' losses, NaN or inf maybe, are then selected away after the kernel); where one
    is wanted (in x, the float targets ``t`` or the weights ``w``), x as it is if reads show
    x and t finite, else None: the generic path replaces masked inputs, where a NaN would
    reach a zero derivative through ``0 * NaN``."""
    if _gradient_wanted(x, t, w):
        return x if _bounded(x) and (t is None or _bounded(t)) else None
    return _clamped(x)


#: from this many elements a plain call's mask selects by its bits where autograd records
#: nothing (:func:`_select`; recorded, from ``MASK_SELECT_MIN``)
_SELECT_BITS_MIN = 1 << 13


def _select(mask: Array, a: Array) -> Array:
    """``where(mask, a, 0)``, ``mask`` of a's shape: by the mask's bits (:class:`_MaskSelect`,
    the same numbers and derivative) from :data:`_SELECT_BITS_MIN` elements, or where
    autograd records ``a``, from ``MASK_SELECT_MIN`` (the Function's call costs more below:
    masked BCE with logits with backward at 10,000 elements 1.47x the time with ``where``,
    at 60,000 0.58x).  torch's CPU ``where`` is a scalar loop taking the mask's branch per
    element (a random mask over float32 elements: 25 us at 16,384 and 159 at 65,536, against
    7 and 16 for the bits, built and applied; 4.4 against 4.9 at 4,096)."""
    kind = _BITS.get(a.dtype)
    grad = (a.requires_grad and torch.is_grad_enabled()) or _forward_ad()
    if (kind is None or a.numel() < (MASK_SELECT_MIN if grad else _SELECT_BITS_MIN)
            or mask.shape != a.shape):
        return torch.where(mask, a, _const(0.0, a.dtype))
    bits = _mask_bits(mask, kind)
    return _MaskSelect.apply(a, bits) if grad else _MaskSelect.forward(a, bits)


def _weighted(out: Array, w: Array | None, where: Array | None,
              reduction: str) -> Array | None:
    """A plain kernel's unreduced loss ``out`` times the weights ``w``, masked by ``where``
    (each None or of out's shape), reduced as ``Call.reduce`` reduces it: "mean" over the
    unmasked elements, "weighted_mean" over their weights' sum; None where that count or sum
    is 0 (the generic path's 0 with a zero gradient).  (Sparse CE on 16 elements with
    weights: the generic path's weighing, mask tests and reduction took 2.5x the kernel's
    time.)

    Masked, with a gradient wanted, ``out`` is finite (:func:`_masked_inputs`): the weights
    are selected to 0 there, so that a NaN weight reaches neither value nor derivative, and
    the product's derivative is 0 there; without one, the product is selected, once (out's
    NaN too).  Weighted sums are one ``dot``, where ``(out * w).sum()`` writes the product
    out first."""
    if where is not None:
        if w is None:
            out = _select(where, out)
        elif _gradient_wanted(out, w):
            w = _select(where, w)
        else:
            out = _select(where, torch.mul(out, w))
            if reduction == "weighted_mean":
                wsum = torch.sum(_select(where, w))
                return None if wsum.item() == 0.0 else torch.div(torch.sum(out), wsum)
            w = None  # (inside out now)
    if reduction == "none":
        return out if w is None else torch.mul(out, w)
    if w is None:
        total = torch.sum(out)
    else:
        # (1-D as they are: a reshape costs more than the dot on small inputs)
        total = torch.dot(out, w) if out.ndim == 1 else torch.dot(out.reshape(-1),
                                                                   w.reshape(-1))
    if reduction == "sum":
        return total
    if reduction == "mean" or w is None:  # ("weighted_mean" without weights: the mean)
        if where is None:
            return torch.div(total, _const(float(out.numel()), out.dtype))
        n = int(torch.count_nonzero(where).item())
        return None if n == 0 else torch.div(total, n)
    wsum = torch.sum(w)
    return None if wsum.item() == 0.0 else torch.div(total, wsum)


def plain_bce_with_logits(x: Array, t: Array, label_smoothing: Any, reduction: str, *,
                          weights: Any = None, where: Any = None) -> Array | None:
    r = _code(reduction)
    if (r is None or not _zero(label_smoothing) or type(x) is not _Tensor
            or type(t) is not _Tensor
            or t.dtype != x.dtype or x.dtype not in _BOUNDS or not x.is_cpu or not t.is_cpu
            or t.shape != x.shape or not 0 < x.numel() < _CHECK_MIN or tracing(x, t)):
        return None
    if weights is None and where is None:
        return torch.binary_cross_entropy_with_logits(_plain_finite(x), t, None, None, r)
    if not _plain_options(x, x.shape, weights, where):
        return None
    xc = _plain_finite(x) if where is None else _masked_inputs(x, t, weights)
    if xc is None:
        return None
    out = torch.binary_cross_entropy_with_logits(xc, t, None, None, 0)
    return _weighted(out, weights, where, reduction)


def plain_cross_entropy(x: Array, targets: Array, axis: Any, label_smoothing: Any,
                        reduction: str, sparse: bool, ignore_index: Any = None,
                        class_weights: Any = None,
                        check: Callable[[], bool] | None = None, *,
                        weights: Any = None, where: Any = None) -> Array | None:
    """Integer labels (int64, one per row) where ``sparse`` (the sparse loss), else
    probability targets (x's shape and dtype), the classes along the last axis of a 2-D
    ``x``.  An out-of-range label makes torch raise on the CPU: the generic path then gives
    unilosses's error (or clamps it, checks off); the wrong kind of target for the loss, its
    error.

    Sparse only:

    * ``ignore_index`` (a Python int): torch's own, whose rows torch leaves out of the value
      (0 there, whatever their logits) and of the mean's count.  Their logits stay as given,
      where the generic path replaces them: where a gradient is wanted, only if one read shows
      every logit finite (a NaN in a left-out row would reach its gradient through the
      log-softmax's backward).
    * ``class_weights`` (x's dtype, one per class, no gradient wanted: torch has none for
      them): torch's ``weight=``, whose mean divides by the labels' summed weight, unilosses's
      "weighted_mean"; "mean" divides by the row count instead ("sum" scaled), and with
      ``ignore_index`` (the kept rows' count, unknown without a read) is left to the generic
      path.  Where ``check()`` (value checks on), one read: no weight negative or NaN.

    A mean over nothing (no kept row, or a zero summed weight: torch's 0 / 0) is left to the
    generic path, which gives 0.

    ``weights`` (x's dtype) and ``where`` (boolean), one per row, without ``ignore_index``
    or ``class_weights``: :func:`_weighted`; a masked row's label may be anything (padding,
    out of range), and is replaced by 0 first."""
    r = _code(reduction)
    ls = label_smoothing
    if (r is None or (type(ls) is not float and type(ls) is not int) or not 0 <= ls <= 1
            or type(axis) is not int or (axis != -1 and axis != 1) or type(x) is not _Tensor
            or type(targets) is not _Tensor or x.dtype not in _BOUNDS or x.ndim != 2
            or not x.is_cpu or not targets.is_cpu):
        return None
    if sparse:
        if (targets.dtype != torch.int64 or targets.ndim != 1
                or targets.shape[0] != x.shape[0]):
            return None
    elif targets.dtype != x.dtype or targets.shape != x.shape:
        return None
    if not 0 < x.numel() < _CHECK_MIN or tracing(x, targets):
        return None
    if weights is not None or where is not None:
        if (ignore_index is not None or class_weights is not None
                or not _plain_options(x, x.shape[:1], weights, where)):
            return None
        if where is None:
            xc = _plain_finite(x)
        else:
            xc = _masked_inputs(x, None if sparse else targets, weights)
            if xc is None:
                return None
            if sparse:
                targets = torch.where(where, targets, _const(0, torch.int64))
        try:
            out = _nn.cross_entropy_loss(xc, targets, None, 0, _NO_INDEX, float(ls))
        except IndexError:
            return None
        return _weighted(out, weights, where, reduction)
    index, scale = _NO_INDEX, None
    if ignore_index is not None or class_weights is not None:
        if not sparse:
            return None
        if ignore_index is not None:
            if type(ignore_index) is not int:
                return None
            index = ignore_index
        if class_weights is not None:
            cw = class_weights
            if (type(cw) is not _Tensor or cw.dtype != x.dtype or not cw.is_cpu
                    or cw.shape != x.shape[1:] or cw.requires_grad or tracing(cw)):
                return None
            if reduction == "mean":  # (not "weighted_mean", whose code is the mean's too)
                if index != _NO_INDEX:
                    return None
                r, scale = 2, _const(1.0 / x.shape[0], x.dtype)
            if check is not None and check() and not torch.amin(cw).item() >= 0.0:
                return None  # (NaN too) the generic path's error
        if x.requires_grad and torch.is_grad_enabled():
            if not _bounded(x):
                return None
        else:
            x = _clamped(x)
    else:
        x = _plain_finite(x)
    try:
        out = _nn.cross_entropy_loss(x, targets, class_weights, r, index, float(ls))
    except IndexError:
        return None
    if scale is not None:
        return torch.mul(out, scale)
    if r == 1 and (index != _NO_INDEX or class_weights is not None) and math.isnan(out.item()):
        return None  # (nothing kept or no weight; or NaN logits kept: the generic path's)
    return out


def plain_bce(p: Array, t: Array, label_smoothing: Any, reduction: str, eps: float,
              check: Callable[[], bool], *, weights: Any = None,
              where: Any = None) -> Array | None:
    """Probabilities clipped to [eps, 1 - eps], up to the sizes where torch's kernel is the
    faster (see ``bce``).  Where ``check()`` (value checks on: asked only eagerly, its
    ContextVar cannot be traced), the values are read (one ``aminmax``) and must lie in [0, 1],
    else the generic path refuses them; the same read drops an idle clip.  Without it they
    are clipped unread, as the generic path does on small inputs."""
    r = _code(reduction)
    if (r is None or not _zero(label_smoothing) or type(p) is not _Tensor
            or type(t) is not _Tensor
            or t.dtype != p.dtype or p.dtype not in _BOUNDS or not p.is_cpu or not t.is_cpu
            or t.shape != p.shape or t.requires_grad
            or not 0 < p.numel() <= _BCE_CPU_MAX[p.requires_grad] or tracing(p, t)
            or not _plain_options(p, p.shape, weights, where)):
        return None
    inside = _probabilities_inside(p, eps, check)
    if inside is None:  # (NaN too) the generic path's error
        return None
    if not inside:
        p = torch.clamp(p, eps, 1.0 - eps)
    if weights is None and where is None:
        return _target_checked_bce(p, t, r)
    # (masked too: the kernel refuses NaN, and clipped p is finite, as its loss and
    # derivative are)
    out = _target_checked_bce(p, t, 0)
    return None if out is None else _weighted(out, weights, where, reduction)


def _closed_form_wanted(p: Array, t: Array) -> bool:
    """Whether a plain call on probabilities takes its closed-form derivative: a gradient
    wanted in ``p`` alone (the Functions give the targets none), not in forward mode (they
    have no forward-mode rule; the composition has)."""
    return (p.requires_grad and torch.is_grad_enabled() and not _forward_ad()
            and not t.requires_grad)


class _PlainCategoricalProbabilities(torch.autograd.Function):
    r"""Categorical cross-entropy on probabilities, :math:`-\sum_c t_c \log \hat r_c` per row
    (:math:`\hat r = \mathrm{clip}(r)`, :math:`r = p / S`), with its derivative in ``p`` in
    closed form, as ``_categorical_value_grad`` writes it for the generic path's blocks:
    :math:`(a_j - \sum_c a_c r_c) / S`, :math:`a = -t / \hat r` where the clip passes (at its
    bounds too), else 0.  Backward is one node instead of the composition's five (sum,
    renormalisation, clip, log, product; see ``plain_categorical_probabilities``).  Asked for a
    derivative of the derivative, backward recomputes it from ``p`` with autograd
    recording."""

    @staticmethod
    def forward(ctx: Any, p: Array, t: Array, r: int, eps: float,  # type: ignore[override]
                idle: bool, finite: bool) -> Array:
        s = torch.sum(p, 1, keepdim=True)
        q = torch.div(p, s)
        ctx.save_for_backward(p, t)
        c = q if idle else torch.clamp(q, eps, 1.0 - eps)
        # large: the clipped probabilities are not kept (backward clips again, one op, where
        # keeping them held one more full-size array until then); small, the fewer ops
        small = p.numel() < _CHECK_MIN
        ctx.r, ctx.eps, ctx.idle, ctx.finite = r, eps, idle, finite
        ctx.parts = (s, q, c if small else None)
        log_c = torch.log(c) if small or idle else c.log_()
        if r == 0:
            return torch.mul(t, log_c).sum(1).neg()
        total = torch.dot(t.reshape(-1), log_c.reshape(-1))
        return torch.mul(total, _const(-1.0 / p.shape[0] if r == 1 else -1.0, p.dtype))

    @staticmethod
    def backward(ctx: Any, g: Array) -> Any:  # type: ignore[override]
        p, t = ctx.saved_tensors
        eps = ctx.eps
        # each row's cotangent, negated: per row ("none"), or g / rows ("mean") and g ("sum")
        if ctx.r == 0:
            scale = torch.neg(g).unsqueeze(1)
        else:
            scale = torch.mul(g, _const(-1.0 / p.shape[0] if ctx.r == 1 else -1.0, p.dtype))
        # recorded (create_graph) or small: out of place (small, one op fewer: 16 and 1e3
        # elements with backward, 1.39-1.42x F.cross_entropy(log p)'s time, 1.49-1.55 in place)
        s, q, c = (_categorical_probability_parts(p, eps) if torch.is_grad_enabled()
                   else ctx.parts)
        if c is not None:
            # (a with its sign folded into the scale: t / c where the clip passes)
            recorded = torch.is_grad_enabled()
            if ctx.idle and not recorded:
                a = torch.div(t, q)
            elif ctx.finite and not recorded and p.numel() >= _SELECT_BITS_MIN:
                a = torch.div(t, c)
                a.view(_BITS[a.dtype]).bitwise_and_(_clip_bits(q, c))
            else:
                a = torch.where(q == c, torch.div(t, c), _const(0.0, p.dtype))
            return (torch.mul(torch.sub(a, torch.sum(torch.mul(a, q), 1, keepdim=True)),
                              torch.div(scale, s)), None, None, None, None, None)
        # the same numbers in one full-size buffer (the clip's, then a's, then the
        # derivative's), where each op's own output held ~5 arrays at once at backward's peak
        if ctx.idle:
            a = torch.div(t, q)
        elif ctx.finite:
            c = torch.clamp(q, eps, 1.0 - eps)
            keep = _clip_bits(q, c)
            a = torch.div(t, c, out=c)
            a.view(keep.dtype).bitwise_and_(keep)
        else:
            c = torch.clamp(q, eps, 1.0 - eps)
            clipped = torch.ne(q, c)
            a = torch.div(t, c, out=c).masked_fill_(clipped, 0.0)
        a.sub_(torch.sum(torch.mul(a, q), 1, keepdim=True))
        if batched(g):  # (vmap refuses a batched operand in place into an unbatched array)
            return torch.mul(a, torch.div(scale, s)), None, None, None, None, None
        return a.mul_(torch.div(scale, s)), None, None, None, None, None


def _renormalised_inside(p: Array, eps: float,
                         check: Callable[[], bool]) -> tuple[bool, bool] | None:
    """Where ``check()``, one ``aminmax`` read of the rows ``p`` (classes along axis 1): None
    (decline: the generic path's error) for a negative value or NaN, else ``(idle,
    finite)``: whether every renormalised ``r = p / S`` is shown to lie in [eps, 1 - eps]
    (the clip idle), and to be finite (``0 < lo``, ``hi < inf``: no zero row, no inf; what
    :func:`_clip_bits` relies on).  With ``lo <= p <= hi`` over C >= 2 classes,
    ``r >= lo / (C hi)`` and ``1 - r >= (C - 1) lo / (C hi)``: both hold from
    ``lo >= 4 eps C hi`` with a factor 2 to spare for the rounding of ``S`` and of the
    quotient (float32's ``1 - eps`` is 1 - 1.19e-7).  Without the check, ``(False, False)``
    (clipped unread)."""
    if not check():
        return False, False
    lo, hi = _extrema(p)
    if not lo >= 0.0:
        return None
    finite = 0.0 < lo and hi < math.inf
    return finite and p.shape[1] >= 2 and lo >= 4.0 * eps * p.shape[1] * hi, finite


def _clip_bits(q: Array, c: Array, nan: bool = False) -> Array:
    """For finite ``q`` and its clip ``c``, integers of q's width: all ones where the clip
    passed q (``q == c``), 0 where it acted, to select by ``&``; ``nan``: q may hold NaN,
    read as clipped (one op more).  ``|q - c|`` is 0 or
    positive, its sign 0.0 or 1.0, whose bits shifted right by the width less 3 are 0 or 1
    (the top of 1.0's exponent), less 1: -1 or 0.  torch's CPU comparisons and ``where`` are
    scalar-slow: at 65,500 elements ``where(q == c, ...)`` took 151 us, this and its ``&``
    43 (4,096: 13.1 against 17.3, hence :data:`_SELECT_BITS_MIN` on small calls)."""
    kind = _BITS[q.dtype]
    shift = (32 if kind == torch.int32 else 64) - 3
    unit = torch.sub(q, c).abs_()
    if nan:  # (before the sign: torch's sign of NaN is 0)
        unit.nan_to_num_(1.0)
    return unit.sign_().view(kind).bitwise_right_shift_(shift).sub_(1)


def clip(x: Array, lo: float | None, hi: float | None) -> Array:
    """``TorchAdapter.clip``: ``torch.clamp``, or where autograd records a large CPU ``x``
    eagerly, between two bounds, :class:`_ClampBits`: the same values and derivative (1 on
    the closed interval, 0 outside and at NaN), with a backward that masks by bits, where
    torch's takes two comparisons and a ``where``, scalar-slow on the CPU (1e6 elements of
    confident probabilities: 2.96 ms against 6.47 for the clip's forward and backward; in
    BCE on probabilities with backward that ``where`` was 40% of the call)."""
    # (both bounds: one-sided, an infinite x on the open side gives inf - inf = NaN, read
    # as clipped where it passes)
    if (lo is not None and hi is not None and x.requires_grad and torch.is_grad_enabled()
            and x.numel() >= _SELECT_BITS_MIN and type(x) is _Tensor and x.dtype in _BOUNDS
            and x.is_cpu and not _forward_ad() and not tracing(x)):
        return _ClampBits.apply(x, lo, hi)
    return torch.clamp(x, lo, hi)


class _ClampBits(torch.autograd.Function):
    """``torch.clamp(x, lo, hi)`` whose backward selects the cotangent by :func:`_clip_bits`
    of ``x`` and its clip (NaN read as clipped, as torch's comparisons take it).  Recorded
    (``create_graph``) or batched (``is_grads_batched``), torch's own rule instead."""

    @staticmethod
    def forward(ctx: Any, x: Array, lo: float, hi: float) -> Array:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return torch.clamp(x, lo, hi)

    @staticmethod
    def backward(ctx: Any, g: Array) -> Any:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        lo, hi = ctx.lo, ctx.hi
        if torch.is_grad_enabled() or batched(g) or g.dtype != x.dtype:
            inside = torch.logical_and(x >= lo, x <= hi)
            return torch.where(inside, g, _const(0.0, g.dtype)), None, None
        # (into the bits' own buffer: the cotangent, maybe the caller's, is not ours to write)
        keep = _clip_bits(x, torch.clamp(x, lo, hi), nan=True)
        return keep.bitwise_and_(g.view(keep.dtype)).view(x.dtype), None, None


def _categorical_probability_parts(p: Array, eps: float) -> tuple[Array, Array, Array]:
    """The rows' sums ``S`` (kept as a column), ``r = p / S`` and ``r`` clipped."""
    s = torch.sum(p, 1, keepdim=True)
    q = torch.div(p, s)
    return s, q, torch.clamp(q, eps, 1.0 - eps)


def plain_sparse_probabilities(p: Array, labels: Array, axis: Any, label_smoothing: Any,
                               reduction: str, eps: float,
                               check: Callable[[], bool]) -> Array | None:
    """Sparse cross-entropy on probabilities: each row renormalised, clipped to [eps, 1 - eps]
    and logged, the label's entry picked by ``nll_loss`` (which refuses a label out of range
    on the CPU; the generic path then gives its error, or clamps it, checks off).  Where
    ``check()``, the probabilities must not be negative (one read of their extrema, which
    also shows where the clip is idle and left out: :func:`_renormalised_inside`, and then
    below :data:`_SPARSE_ROWS_MIN` the loss is :func:`_idle_cross_entropy`'s).  From
    :data:`_SPARSE_ROWS_MIN` elements, as the generic path: the label's probability picked
    first and divided by its row's sum, each row's loss on its own (the same numbers), where
    the whole array's renormalisation, clip and log, and their backward, cost more (60,000
    elements: 103 us forward and 410 with backward, against 33 and 158; at 4,000 elements
    the whole array's, 18 and 103 us, against 22 and 116)."""
    r = _code(reduction)
    if (r is None or not _zero(label_smoothing) or type(axis) is not int
            or (axis != -1 and axis != 1) or type(p) is not _Tensor
            or type(labels) is not _Tensor or p.dtype not in _BOUNDS or p.ndim != 2
            or labels.dtype != torch.int64 or labels.ndim != 1 or labels.shape[0] != p.shape[0]
            or not p.is_cpu or not labels.is_cpu or not 0 < p.numel() < _CHECK_MIN
            or tracing(p, labels)):
        return None
    inside = _renormalised_inside(p, eps, check)
    if inside is None:  # (NaN too) the generic path's error
        return None
    idle = inside[0]
    if p.numel() >= _SPARSE_ROWS_MIN:
        try:
            py = torch.gather(p, 1, labels.unsqueeze(1)).squeeze(1)
        except RuntimeError:  # (a label out of range)
            return None
        q = torch.div(py, p.sum(1))
        v = torch.log(q if idle else torch.clamp(q, eps, 1.0 - eps))
        if r == 0:
            return v.neg()
        return torch.mul(v.sum(), _const(-1.0 / p.shape[0] if r == 1 else -1.0, p.dtype))
    try:
        if idle:
            return _idle_cross_entropy(p, labels, r)
        q = torch.clamp(p / p.sum(1, keepdim=True), eps, 1.0 - eps)
        return _nn.nll_loss(torch.log(q), labels, None, r, _NO_INDEX)
    except IndexError:
        return None


def _idle_cross_entropy(p: Array, targets: Array, r: int) -> Array:
    """Cross-entropy on probabilities whose clip is idle (every renormalised one shown inside
    [eps, 1 - eps], so none is 0): torch's own kernel on ``log p``, whose log-softmax is
    ``log(p / sum p)``, as ``F.cross_entropy(log p)`` computes it (the same numbers): two
    kernels where the renormalisation, the log and the pick are four, and backward torch's
    two where it was four nodes (sparse with backward on 16 and 1e3 elements: 1.18-1.21x
    ``F.cross_entropy(log p)``'s time, from 1.50-1.56, interleaved in one process).  Its
    error, through ``exp(log p)``, is up to about twice the quotient's: float32 softmax rows
    of 2 to 1,000 classes, 2.4-11.7 eps absolute at worst against 1.6-4.9 (float64 loss as
    the reference)."""
    return _nn.cross_entropy_loss(torch.log(p), targets, None, r, _NO_INDEX, 0.0)


#: from this many elements sparse CE on probabilities works row by row (see above)
_SPARSE_ROWS_MIN = 1 << 13


#: categorical CE on probabilities with a gradient takes the plain call's closed form up to
#: this many elements (then the blocks)
_CATEGORICAL_CLOSED_MAX = 1 << 22


def plain_categorical_probabilities(p: Array, t: Array, axis: Any, label_smoothing: Any,
                                    reduction: str, eps: float,
                                    check: Callable[[], bool]) -> Array | None:
    """Categorical cross-entropy on probabilities, targets of their shape and dtype: rows
    renormalised, clipped and logged, and the targets' products summed in one ``dot``.
    Where ``check()``, the probabilities must not be negative (one read of their extrema,
    which also shows where the clip is idle and left out, forward (then the loss is
    :func:`_idle_cross_entropy`'s) and in the closed-form
    backward: :func:`_renormalised_inside`; with backward at 65,500 to 1e6 elements, softmax
    rows, 0.50-0.66 of the time with the clip and its mask).  Where a gradient is wanted in
    ``p`` alone, :class:`_PlainCategoricalProbabilities`
    (forward+backward, 16 and 1e3 elements: 1.51-1.60x ``F.cross_entropy(log p)``'s time,
    against 1.59-1.90x composed; two alternating runs each), up to
    :data:`_CATEGORICAL_CLOSED_MAX` elements: from 2^18 on it took 1.36-1.42x the peer's time
    against the blocks' 1.48-2.10 (their ~14 ops per block of 655 rows), keeping one
    full-size array (the renormalised probabilities) where the blocks keep none: peak extra
    memory of forward+backward at 10000 x 100, 13.0 MB against the peer's 20.0; beyond, the
    blocks are the faster."""
    r = _code(reduction)
    if (r is None or not _zero(label_smoothing) or type(axis) is not int
            or (axis != -1 and axis != 1) or type(p) is not _Tensor or type(t) is not _Tensor
            or p.dtype not in _BOUNDS or t.dtype != p.dtype or p.ndim != 2
            or t.shape != p.shape or not p.is_cpu or not t.is_cpu or tracing(p, t)):
        return None
    n = p.numel()
    wanted = _closed_form_wanted(p, t)
    if not 0 < n < (_CATEGORICAL_CLOSED_MAX if wanted else _CHECK_MIN):
        return None
    inside = _renormalised_inside(p, eps, check)
    if inside is None:  # (NaN too) the generic path's error
        return None
    idle, finite = inside
    if wanted:
        return _PlainCategoricalProbabilities.apply(p, t, r, eps, idle, finite)
    if idle:
        return _idle_cross_entropy(p, t, r)
    log_q = torch.log(torch.clamp(p / p.sum(1, keepdim=True), eps, 1.0 - eps))
    if r == 0:
        return torch.mul(t, log_q).sum(1).neg()
    total = torch.dot(t.reshape(-1), log_q.reshape(-1))
    return torch.mul(total, _const(-1.0 / p.shape[0], p.dtype)) if r == 1 else total.neg()


def plain_rmse(p: Array, t: Array) -> Array | None:
    """``sqrt(mse)``, but at a zero error where a gradient is wanted: there sqrt's slope is
    infinite, and the safe square root's gradient 0 (``m * 0``: the same value and
    derivatives).  The 0-d mean is read to tell (its two selects cost more: forward+backward
    on 16 elements 1.40x ``sqrt(mse_loss)``'s time, 1.05x read).  In forward mode (dual
    tensors, which do not require grad) the generic path's safe square root."""
    if (type(p) is not _Tensor or type(t) is not _Tensor or t.dtype != p.dtype
            or p.dtype not in _BOUNDS or not p.is_cpu or not t.is_cpu or t.shape != p.shape
            or p.numel() == 0 or tracing(p, t) or _forward_ad()):
        return None
    m = _nn.mse_loss(p, t, 1)
    if (p.requires_grad or t.requires_grad) and torch.is_grad_enabled() and m.item() <= 0:
        return m * 0.0
    return torch.sqrt(m)


#: half log_cosh's tail by dtype (``unilosses.losses.regression._LOG_COSH_TAIL``): beyond the
#: tail log cosh(d) is |d| - log 2 to every digit of the dtype
_LOG_COSH_HALF_TAIL = {torch.float32: 6.0, torch.float64: 20.0}
#: the largest |d| for which log1p(2 sinh(d/2)^2), unclamped, stays finite with a margin
#: (2 sinh(h)^2 overflows beyond h = 44.7 in float32, 355.2 in float64)
_LOG_COSH_FINITE = {torch.float32: 80.0, torch.float64: 700.0}
_LN2 = math.log(2.0)


def _log_cosh_value(d: Array) -> Array:
    """log cosh(d) as ``max(log1p(2 sinh(h)^2), |d| - log 2)``, ``h = min(|d| / 2, tail / 2)``:
    ``2 sinh(|d|/2)^2 = cosh(d) - 1`` without cancellation, and beyond the tail the formula,
    at the bound, falls below ``|d| - log 2``, which is then log cosh to every digit (below
    it the formula is the larger, by ``log1p(e^(-2|d|))``).  Within 2.5 eps of log cosh, as
    the generic path's ``log1p(m (m / (2 + 2m))) + (|d| - u)`` is, in seven ops against its
    nine (a ``sinh`` for the ``expm1``, one ``addcmul`` for the
    quotient's three, a ``maximum`` for the excess's two; on 16 elements 1.22x the inline
    formula's time against 1.30x, interleaved, fastest of 25); four where every ``|d|`` is
    at most 80 (float32; 700 in float64: :func:`_log_cosh_parts`)."""
    return _log_cosh_parts(d)[0]


def _log_cosh_parts(d: Array) -> tuple[Array, Array, bool]:
    """:func:`_log_cosh_value`, its ``sinh(h)`` (h clamped), and whether that carries d's sign.

    The clamp and the maximum with ``|d| - log 2`` are there for large ``|d|`` only, where
    ``2 sinh(d/2)^2`` would overflow.  Where one read (``aminmax``) shows every ``|d|`` at or
    below ``_LOG_COSH_FINITE`` (80 in float32, 700 in float64, where it is still finite), the
    value is ``log1p(2 sinh(d/2)^2)``, four ops against eight, as accurate (from mpmath's,
    on 14,000 points up to that bound: 2.16 and 2.36 eps at worst, float32 and float64; tanh
    from that ``sinh`` 1.80 and 1.70), and ``sinh`` keeps d's sign for tanh (16 elements:
    9.3 us against 16.3 with the read; 65,535: the read 12 us, the four ops it spares 24)."""
    half, zero, ln2, bound = _log_cosh_constants(d.dtype)
    if _within(d, _LOG_COSH_FINITE[d.dtype]):
        s = torch.sinh(torch.mul(d, half))
        return torch.log1p(torch.addcmul(zero, s, s, value=2.0)), s, True
    a = torch.abs(d)
    s = torch.sinh(torch.clamp_max(torch.mul(a, half), bound))
    v = torch.maximum(torch.log1p(torch.addcmul(zero, s, s, value=2.0)), torch.sub(a, ln2))
    return v, s, False


def _within(d: Array, limit: float) -> bool:
    """Whether every element of ``d`` lies in [-limit, limit] (NaN not): ``aminmax`` and two
    scalars read back, 1.6 us on 16 elements.  Its callers run eagerly on the CPU (the
    plain calls and the blocks, neither traced)."""
    if d.numel() == 0:
        return False
    lo, hi = _extrema(d)
    return -limit <= lo and hi <= limit


def _tanh_from_sinh(d: Array, s: Array, signed: bool) -> Array:
    """tanh(d) from ``s = sinh(d/2)`` (or ``sinh(|d|/2)``, then signed as d):
    ``tanh(2h) = s cosh(h) / (1/2 + s^2)``, ``cosh(h) = sqrt(1 + s^2)`` (``s``, not its
    square, so that a tiny ``d`` keeps its digits); five ops, where ``torch.tanh`` alone costs
    as much as the value's ``sinh`` and ``log1p`` together (from 2^12 elements on: 65,536,
    55 us against 152)."""
    half, one = _const(0.5, d.dtype), _const(1.0, d.dtype)
    c = torch.sqrt(torch.addcmul(one, s, s))
    t = torch.mul(s, c).div_(torch.addcmul(half, s, s))
    return t if signed else torch.copysign(t, d)


def log_cosh_terms(d: Array, grad: bool) -> tuple[Array, Array | None] | None:
    """``TorchAdapter.log_cosh``: log cosh(d) as :func:`_log_cosh_value` (eight ops against
    the generic formula's ten; four where every ``|d|`` is at most 80, 700 in float64), and
    where ``grad``, tanh(d) from its ``sinh`` (:func:`_tanh_from_sinh`).  Beyond the tail
    ``h`` is the tail's, whose tanh rounds to 1, as tanh(d) does there.  None for a dtype
    without its constants, off the CPU (the blocks' device; its constants are the CPU's),
    and traced (inductor fuses the generic form)."""
    if (d.dtype not in _LOG_COSH_HALF_TAIL or not d.is_cpu
            or torch.compiler.is_compiling()):
        return None
    v, s, signed = _log_cosh_parts(d)
    if not grad:
        return v, None
    return v, _tanh_from_sinh(d, s, signed)


_LOG_COSH_CONSTANTS: dict[Any, tuple[Array, Array, Array, float]] = {}


def _log_cosh_constants(dtype: Any) -> tuple[Array, Array, Array, float]:
    """(0.5, 0, log 2) as cached 0-d tensors of ``dtype``, and the half tail: one lookup for
    the four (each ``_const`` is a lookup of its own, ~0.15 us)."""
    c = _LOG_COSH_CONSTANTS.get(dtype)
    if c is None:
        c = _LOG_COSH_CONSTANTS[dtype] = (_const(0.5, dtype), _const(0.0, dtype),
                                          _const(_LN2, dtype), _LOG_COSH_HALF_TAIL[dtype])
    return c


#: from this many elements tanh comes from the value's ``sinh`` (:func:`_tanh_from_sinh`;
#: 4,096: 11.6 us against ``torch.tanh``'s 12.7, 1,000: 9.1 against 4.5)
_TANH_FROM_SINH_MIN = 1 << 12


class _PlainLogCosh(torch.autograd.Function):
    """log cosh(p - t), reduced as ``scale * sum`` (None: per element), with its derivative
    in ``p``, ``tanh(p - t)``, computed with the value; backward only hands it on.  On a
    small input one ``tanh`` costs less than autograd's walk back through the value's seven
    ops (forward+backward on 16 elements: 1.10x the inline formula's time, against 1.9x
    composed); from :data:`_TANH_FROM_SINH_MIN` elements tanh comes from the value's
    ``sinh`` (65,535 elements, forward+backward, with the value's four ops: 0.67x the
    time with ``torch.tanh`` and eight).  Asked for a derivative of the derivative
    (``create_graph``), backward differentiates ``tanh`` itself, whose curvature at 0 is 1."""

    @staticmethod
    def forward(ctx: Any, p: Array, t: Array, scale: float | None) -> Array:  # type: ignore[override]
        d = torch.sub(p, t)
        ctx.save_for_backward(p, t)
        ctx.scale = scale
        v, s, signed = _log_cosh_parts(d)
        grad = torch.tanh(d) if d.numel() < _TANH_FROM_SINH_MIN else \
            _tanh_from_sinh(d, s, signed)
        if scale is None:
            ctx.grad = grad
            return v
        c = _const(scale, d.dtype)
        ctx.grad = grad.mul_(c)
        return v.sum().mul_(c)

    @staticmethod
    def backward(ctx: Any, g: Array) -> Any:  # type: ignore[override]
        p, t = ctx.saved_tensors
        scale = ctx.scale
        if torch.is_grad_enabled():
            return torch.tanh(p - t) * (g if scale is None else g * scale), None, None
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # handed on by an earlier backward (retain_graph): again
            grad = torch.tanh(torch.sub(p, t))
            if scale is not None:
                grad.mul_(_const(scale, grad.dtype))
        # handed on, scaled in place: nothing here keeps it
        try:
            return grad.mul_(g), None, None
        except RuntimeError:
            # a cotangent batched by vmap (``is_grads_batched=True``), which refuses it as
            # an operand in place into the unbatched derivative (asked only here: a test of
            # g costs the plain backward ~0.2 us)
            return grad * g, None, None


def plain_log_cosh(p: Array, t: Array, reduction: Any, *, weights: Any = None,
                   where: Any = None) -> Array | None:
    """log cosh(p - t) on small plain inputs: the value's seven ops (``_log_cosh_value``);
    where a gradient is wanted in ``p``, :class:`_PlainLogCosh`; a gradient in the targets,
    or in forward mode, takes the generic path.  ``weights`` and ``where``: the elementwise
    loss weighed, masked and reduced by :func:`_weighted` (:func:`_masked_finite`)."""
    r = _code(reduction)
    if (r is None or type(p) is not _Tensor or type(t) is not _Tensor or t.dtype != p.dtype
            or p.dtype not in _BOUNDS or not p.is_cpu or not t.is_cpu or t.shape != p.shape
            or not 0 < p.numel() < _CHECK_MIN or tracing(p, t)):
        return None
    options = weights is not None or where is not None
    if options and not (_plain_options(p, p.shape, weights, where)
                        and _masked_finite(where, p, t, weights)):
        return None
    if torch.is_grad_enabled() and (p.requires_grad or t.requires_grad):
        if t.requires_grad or _forward_ad():
            return None
        if options:
            return _weighted(_PlainLogCosh.apply(p, t, None), weights, where, reduction)
        return _PlainLogCosh.apply(p, t, None if r == 0 else 1.0 / p.numel() if r == 1 else 1.0)
    v = _log_cosh_value(torch.sub(p, t))
    if options:
        return _weighted(v, weights, where, reduction)
    return v if r == 0 else v.mean() if r == 1 else v.sum()


def plain_in_top_k(x: Array, labels: Array, k: Any) -> Array | None:
    """Fewer than ``k`` scores above the label's, in a row of finite scores.  A label out of
    range makes ``gather`` raise: the generic path then gives False for its row."""
    if (type(k) is not int or not 1 <= k <= 1 << 24 or type(x) is not _Tensor
            or type(labels) is not _Tensor or x.dtype not in _BOUNDS or x.ndim != 2
            or labels.dtype != torch.int64 or labels.ndim != 1
            or labels.shape[0] != x.shape[0] or not x.is_cpu or not labels.is_cpu
            or not 0 < x.numel() < _CHECK_MIN or tracing(x, labels)):
        return None
    try:
        target = torch.gather(x, 1, labels.unsqueeze(1))
    except RuntimeError:
        return None
    # each higher score counts 1, plus 0 * score: NaN for a non-finite one (NaN included),
    # which makes its row's count NaN and ``< k`` False, in the count's own pass (a separate
    # isfinite(x).all(1) took longer than torch.topk itself)
    return torch.lt(torch.add(x > target, x, alpha=0).sum(1), _const(k, x.dtype))


def _focal_options(alpha: Any, gamma: Any) -> bool:
    """Whether ``alpha`` is None or a Python number in [0, 1) (1 would make torch's
    ``pos_weight`` infinite) and ``gamma`` 0, 1 or 2, whose factors autograd differentiates
    as the generic path does (0 at a zero error)."""
    if alpha is not None and ((type(alpha) is not float and type(alpha) is not int)
                              or not 0 <= alpha < 1):
        return False
    return (type(gamma) is float or type(gamma) is int) and gamma in (0, 1, 2)


def _focal_sum(m: Array, ce: Array, scale: float, gamma: float, r: int,
               keep: Callable[[Array], Array] | None = None) -> Array:
    """``scale * |m|**gamma * ce``, reduced by code ``r`` (the mean over its elements);
    ``keep``: a select (:func:`_row_mask`) of the terms summed.  (``m`` is None where gamma
    is 0.)"""
    f = None if gamma == 0 else torch.abs(m) if gamma == 1 else m * m
    dtype = ce.dtype
    if r == 0:
        v = ce if f is None else f * ce
        return v if scale == 1.0 else v * _const(scale, dtype)
    if keep is not None:
        if f is None:
            ce = keep(ce)
        else:
            f = keep(f)
    total = ce.sum() if f is None else torch.dot(f.reshape(-1), ce.reshape(-1))
    return total * _const(scale / ce.numel() if r == 1 else scale, dtype)


#: above this many logits, where a gradient is wanted, the closed form (``chunked_sum``) is
#: the faster: forward + backward of the binary focal loss with logits took 0.86x the plain
#: composition's time at 8,000 elements, 0.82x at 30,000 (0.67x at 65,000); for the value
#: alone, and on probabilities, the plain composition stays ahead up to _CHECK_MIN (0.5x the
#: closed form's time for the value at 8,000 to 65,000 elements)
_FOCAL_GRAD_MAX = 1 << 13


def _plain_focal_inputs(x: Array, t: Array, alpha: Any, gamma: Any, logits: bool) -> bool:
    """Whether a plain focal kernel takes these: see "Small plain logits" above; on logits
    with a gradient up to _FOCAL_GRAD_MAX elements; on probabilities with a gradient, gamma
    1 or 2 (at gamma 0 autograd's t / p - (1 - t) / (1 - p) cancels where p nears t, up to
    1e7 ulps in float32: the generic path's closed form keeps (p - t) / (p (1 - p)), 2)."""
    return (_focal_options(alpha, gamma) and type(x) is _Tensor and type(t) is _Tensor
            and t.dtype == x.dtype and x.dtype in _BOUNDS and x.is_cpu and t.is_cpu
            and t.shape == x.shape and 0 < x.numel() < _CHECK_MIN and not tracing(x, t)
            and not ((logits and x.numel() > _FOCAL_GRAD_MAX or not logits and gamma == 0)
                     and x.requires_grad and torch.is_grad_enabled()))


def _aminmax(x: Array) -> Any:
    """``torch.aminmax(x)``, read as values only: a forward-AD dual (``torch.func.jvp``,
    ``forward_ad``) is read through ``detach()`` where torch has no forward rule for aminmax
    (NotImplementedError on torch 2.6, not on 2.13), asked only then (a try costs nothing)."""
    try:
        return torch.aminmax(x)
    except NotImplementedError:
        return torch.aminmax(x.detach())


#: element counts from which and below which :func:`_extrema` reads through NumPy
_NUMPY_EXTREMA = (1 << 15, 1 << 22)
_np_min, _np_max = np.minimum.reduce, np.maximum.reduce


def _extrema(x: Array) -> tuple[float, float]:
    """The minimum and maximum of ``x`` (not empty), read back as numbers (NaN: both NaN).

    Between the sizes of ``_NUMPY_EXTREMA``, on one thread, NumPy's ``min`` and ``max`` of
    the tensor's own memory: two vectorised passes over data still in cache read it faster
    than torch's one ``aminmax`` (float32, 1e6 elements: 101 us against 168; 65,536: 7
    against 12), where on larger inputs the second pass comes from memory (1.6e7: 6.2 ms
    against 3.0), on small ones NumPy's calls cost more (1e3: 3.9 us against 2.9), and on
    more threads torch splits its read (two, 1e6: 89 us against 116).

    Tiny 1-D and 2-D inputs (:data:`_EXTREMA_LIST_MAX`) are read through their Python
    numbers (``tolist``): ``aminmax`` and its two ``.item()`` cost the torch calls around
    them more than their own time (16 probabilities, in one process, interleaved: BCE
    1.70-1.68 of ``F.binary_cross_entropy``'s time forward, from 1.79-1.85, and 1.22-1.23
    with backward, from 1.34-1.35; categorical CE with backward 1.27-1.29, from 1.36-1.37;
    CE forward unchanged)."""
    n = x.numel()
    if n <= _EXTREMA_LIST_MAX and 1 <= x.ndim <= 2 and x.dtype in _LISTED:
        v = x.tolist()
        if x.ndim == 2:
            v = list(_chain(v))
        # (min and max skip a NaN or not by its place; the sum is NaN for one, and for
        # inf - inf, told apart by the slow test)
        if math.isnan(sum(v)) and any(e != e for e in v):
            return math.nan, math.nan
        return min(v), max(v)
    if (_NUMPY_EXTREMA[0] <= n < _NUMPY_EXTREMA[1] and x.dtype in _BOUNDS
            and x.is_cpu and x.is_contiguous() and torch.get_num_threads() == 1):
        a = _host_view(x)
        if a is not None:
            return float(_np_min(a, axis=None)), float(_np_max(a, axis=None))
    lo, hi = _aminmax(x)
    return lo.item(), hi.item()


def _probabilities_inside(p: Array, eps: float, check: Callable[[], bool]) -> bool | None:
    """Where ``check()``, one ``aminmax`` read: None (decline: the generic path's error) for
    values outside [0, 1] or NaN, else whether all lie in [eps, 1 - eps] (the clip idle).
    Without it, False (clipped unread)."""
    if not check():
        return False
    lo, hi = _extrema(p)
    if not (lo >= 0.0 and hi <= 1.0):
        return None
    return lo >= eps and hi <= 1.0 - eps


def _logit_terms(x: Array, t: Array, alpha: float | None,
                 gamma: float) -> tuple[Array, Array, float]:
    """(m = t - p, the cross-entropy up to ``scale``, ``scale``) of logits ``x``, clamped.
    The alpha-balanced cross-entropy is torch's kernel with ``pos_weight = alpha / (1 -
    alpha)``, times ``1 - alpha``; ``m`` is ``t q - (1 - t) p`` (no cancellation near 0 or 1,
    as the generic path)."""
    xc = _plain_finite(x)
    if alpha is None:
        ce, scale = torch.binary_cross_entropy_with_logits(xc, t, None, None, 0), 1.0
    else:
        pos_weight = _const(alpha / (1.0 - alpha), x.dtype)
        ce = torch.binary_cross_entropy_with_logits(xc, t, None, pos_weight, 0)
        scale = 1.0 - alpha
    # (not addcmul: its one rounding would break a tie m = 0 that the generic path's two
    # products keep, and with it |m|'s derivative there, 0)
    m = None if gamma == 0 else (t * torch.sigmoid(-xc)
                                 - torch.sub(_const(1.0, t.dtype), t) * torch.sigmoid(xc))
    return m, ce, scale


def _probability_terms(p: Array, t: Array, alpha: float | None, inside: bool,
                       eps: float) -> tuple[Array, Array, float]:
    """As :func:`_logit_terms`, for probabilities: logs of ``p`` clipped to [eps, 1 - eps]
    (unless ``inside``), ``m`` of ``p`` itself."""
    pc = p if inside else torch.clamp(p, eps, 1.0 - eps)
    a, b = t * torch.log(pc), torch.sub(_const(1.0, t.dtype), t) * torch.log1p(-pc)
    ce = a + b if alpha is None else torch.add(a * _const(alpha, t.dtype), b,
                                               alpha=1.0 - alpha)
    return t - p, ce, -1.0


def plain_focal_with_logits(x: Array, t: Array, alpha: Any, gamma: Any,
                            reduction: str, *, weights: Any = None,
                            where: Any = None) -> Array | None:
    """The binary focal loss on small plain logits (:func:`_logit_terms`); ``weights`` and
    ``where``: the elementwise loss weighed, masked and reduced by :func:`_weighted`."""
    r = _code(reduction)
    if r is None or not _plain_focal_inputs(x, t, alpha, gamma, True):
        return None
    if weights is None and where is None:
        return _focal_sum(*_logit_terms(x, t, alpha, gamma), gamma, r)
    if not (_plain_options(x, x.shape, weights, where)
            and _masked_finite(where, x, t, weights)):
        return None
    return _weighted(_focal_sum(*_logit_terms(x, t, alpha, gamma), gamma, 0), weights, where,
                     reduction)


def plain_focal(p: Array, t: Array, alpha: Any, gamma: Any, reduction: str, eps: float,
                check: Callable[[], bool], *, weights: Any = None,
                where: Any = None) -> Array | None:
    """The binary focal loss on small plain probabilities (:func:`_probability_terms`);
    ``weights`` and ``where`` as :func:`plain_focal_with_logits`'s (the range check reads
    the masked probabilities too: a NaN there declines)."""
    r = _code(reduction)
    if r is None or not _plain_focal_inputs(p, t, alpha, gamma, False):
        return None
    options = weights is not None or where is not None
    if options and not (_plain_options(p, p.shape, weights, where)
                        and _masked_finite(where, p, t, weights)):
        return None
    inside = _probabilities_inside(p, eps, check)
    if inside is None:
        return None
    terms = _probability_terms(p, t, alpha, inside, eps)
    if options:
        return _weighted(_focal_sum(*terms, gamma, 0), weights, where, reduction)
    return _focal_sum(*terms, gamma, r)


def _plain_anchor(x: Array, t: Array, state: Array, alpha: Any, gamma: Any, normalizer: Any,
                  normalize: Any, logits: bool, eps: float,
                  check: Callable[[], bool]) -> Array | None:
    """The anchor focal loss on small plain inputs, normalised by the batch's positives:
    ignored anchors' inputs replaced (0 logits, 0.5 probabilities) and their terms left out
    of the sum, non-object anchors' targets 0, as the generic path does.  Where ``check()``,
    the states must lie in [-1, 1] (integers: -1, 0 or 1), else the generic path refuses
    them."""
    if (normalizer is not None or type(normalize) is not str or normalize != "batch"
            or not _plain_focal_inputs(x, t, alpha, gamma, logits)
            or type(state) is not _Tensor or state.dtype != torch.int64 or x.ndim < 2
            or state.shape != x.shape[:-1] or not state.is_cpu or tracing(state)):
        return None
    if check():
        lo, hi = _extrema(state)
        if not (lo >= -1 and hi <= 1):
            return None
    keep = (state != -1).unsqueeze(-1)
    positive = state == 1
    dtype = x.dtype
    kept = _row_mask(keep, x)
    t = _row_mask(positive.unsqueeze(-1), x)(t)
    if logits:
        terms = _logit_terms(kept(x), t, alpha, gamma)
    else:
        p = torch.where(keep, x, _const(0.5, dtype))
        inside = _probabilities_inside(p, eps, check)
        if inside is None:
            return None
        terms = _probability_terms(p, t, alpha, inside, eps)
    total = _focal_sum(*terms, gamma, 2, kept)
    return total / torch.clamp(positive.sum(), min=1)


#: from this many elements the anchors' row masks select by their bits (:func:`_row_mask`)
_ROW_BITS_MIN = 1 << 13


def _row_mask(mask: Array, x: Array) -> Callable[[Array], Array]:
    """``where(mask, a, 0)`` for arrays ``a`` of x's shape and dtype, ``mask`` (boolean)
    broadcast along their last axis: from :data:`_ROW_BITS_MIN` elements, where autograd
    records nothing, by the mask's bits, made once (:class:`_MaskSelect`'s ``and``: the same
    numbers), where torch's CPU ``where`` is a scalar loop (a row mask over 65,520 float32
    elements: 43 us, against 9 for the bits and their ``and``; 4 against 5 at 4,080; the
    anchor focal loss's forward at 65,520 elements 0.80-0.86 of its time with ``where``).
    Recorded, ``where`` (:class:`_MaskSelect`'s Function measured no faster with
    backward)."""
    kind = _BITS.get(x.dtype)
    zero = _const(0.0, x.dtype)
    if kind is None or x.numel() < _ROW_BITS_MIN:
        return lambda a: torch.where(mask, a, zero)
    bits = _mask_bits(mask, kind)

    def select(a: Array) -> Array:
        if (_BITS.get(a.dtype) is not kind or (a.requires_grad and torch.is_grad_enabled())
                or _forward_ad()):
            return torch.where(mask, a, zero)
        return _MaskSelect.forward(a, bits)

    return select


def plain_anchor_focal_with_logits(x: Array, t: Array, state: Array, alpha: Any, gamma: Any,
                                   normalizer: Any, normalize: Any,
                                   check: Callable[[], bool]) -> Array | None:
    return _plain_anchor(x, t, state, alpha, gamma, normalizer, normalize, True, 0.0, check)


def plain_anchor_focal(p: Array, t: Array, state: Array, alpha: Any, gamma: Any,
                       normalizer: Any, normalize: Any, eps: float,
                       check: Callable[[], bool]) -> Array | None:
    return _plain_anchor(p, t, state, alpha, gamma, normalizer, normalize, False, eps, check)


#: whole-loss kernels for plain calls, tried before any of the generic path's checks (see
#: ``Adapter.plain``): eagerly, on small CPU inputs, where those checks, dispatch and the
#: kernel's own conditions cost more than the clamp and the kernel together
PLAIN: dict[str, Callable[..., Array | None]] = {
    "binary_cross_entropy": plain_bce,
    "binary_cross_entropy_with_logits": plain_bce_with_logits,
    "cross_entropy_with_logits": plain_cross_entropy,
    "sparse_categorical_cross_entropy": plain_sparse_probabilities,
    "categorical_cross_entropy": plain_categorical_probabilities,
    "rmse": plain_rmse,
    "log_cosh": plain_log_cosh,
    "in_top_k": plain_in_top_k,
    "binary_focal_loss": plain_focal,
    "binary_focal_loss_with_logits": plain_focal_with_logits,
    "anchor_focal_loss": plain_anchor_focal,
    "anchor_focal_loss_with_logits": plain_anchor_focal_with_logits,
}


KERNELS: dict[str, Callable[..., Array | None]] = {
    "mse": mse,
    "mae": mae,
    "huber": huber,
    "smooth_l1": smooth_l1,
    "binary_cross_entropy": bce,
    "binary_cross_entropy_with_logits": bce_with_logits,
    "cross_entropy_with_logits": cross_entropy,
}


# -- block-wise sums ------------------------------------------------------------------------

#: elements per block on the CPU: its ~15 temporaries stay in the last-level cache
_BLOCK = 1 << 16
#: elements per block elsewhere (a GPU): blocks there only bound the temporaries' memory,
#: and each costs its ~30 kernel launches from Python, which a GPU outruns. Measured on an
#: H200 (python -m benchmarks.blocks), focal loss with logits, forward + backward, 1.6e7
#: elements: 148 ms in blocks of 2^16, 3.7 ms in 2^22, 2.1 ms in 2^24, 3.0 ms composed,
#: torchvision's formula 1.6 ms; peak extra memory 333, 1105, 1237 and 650 MB for the last four
_DEVICE_BLOCK = 1 << 24
#: below this many elements one pass of the composition is as good (no closed form)
_CHUNK_MIN = 1 << 18
#: with a closed-form derivative, where a gradient is wanted: from any size (forward computes
#: it in fewer kernels than the composition, backward only hands it on: at 1e3 elements the
#: binary focal loss's forward+backward takes 350 us against 530)
_CLOSED_GRAD_MIN = 1
#: with a closed form, for the value alone: from this many elements on (below, the
#: Function's own overhead outweighs the kernels it spares)
_CLOSED_MIN = 1 << 11


def _value_sum(value_and_grad: Callable[..., tuple[Array, Array]], bounded: bool, rows: int,
               scale: float, x: Array, rest: tuple[Array, ...]) -> Array:
    """scale * the sum of the closed form's values, block by block (no gradient wanted)."""
    parts = [value_and_grad(x[s:s + rows], *(a[s:s + rows] for a in rest), grad=False,
                            bounded=bounded)[0].sum()
             for s in range(0, x.shape[0], rows)]
    return _total(parts, scale)


def _total(parts: list[Array], scale: float) -> Array:
    """scale * the sum of the blocks' sums (one block: no stack)."""
    return (parts[0] if len(parts) == 1 else torch.stack(parts).sum()) * scale


class _BlockwiseSum(torch.autograd.Function):
    """scale * sum(f(x, *rest)), block by block, keeping nothing full-size but the gradient.

    With ``value_and_grad`` (a closed-form derivative in x, written once with the loss), the
    forward pass computes each block's gradient with its value while the block is in cache,
    and backward only hands it on.  Without it, forward keeps only the inputs (which exist
    anyway) and backward recomputes each block with autograd.  Either way the peak memory of
    forward + backward is the gradient plus one block's temporaries.
    """

    @staticmethod
    def forward(ctx: Any, f: Callable[..., Array],  # type: ignore[override]
                value_and_grad: Callable[..., tuple[Array, Array]] | None, rows: int,
                scale: float, bounds: bool, x: Array, *rest: Array) -> Array:
        ctx.f, ctx.rows, ctx.scale = f, rows, scale
        ctx.value_and_grad, ctx.grad = None, None
        blocks = range(0, x.shape[0], rows)
        if value_and_grad is not None and ctx.needs_input_grad[5]:
            # one read of x (and a host sync), only for a closed form that uses it
            bounded = bounds and _bounded(x)
            grad = torch.empty_like(x)
            parts = [_block_value_grad(value_and_grad, bounded, scale, grad, x, rest, s, rows)
                     for s in blocks]
            # on the context, not saved: backward hands this buffer on, scaled in place
            # (saved tensors are version-checked), and recomputes it if asked again
            ctx.value_and_grad, ctx.bounded, ctx.grad = value_and_grad, bounded, grad
        else:  # (no gradient wanted: the callers sum the closed form's value without this)
            parts = [f(x[s:s + rows], *(a[s:s + rows] for a in rest)).sum() for s in blocks]
        ctx.save_for_backward(x, *rest)
        return _total(parts, scale)

    @staticmethod
    def backward(ctx: Any, g: Array) -> Any:  # type: ignore[override]
        x, *rest = ctx.saved_tensors
        f, rows, scale = ctx.f, ctx.rows, ctx.scale
        none = (None,) * 5
        tail = (None,) * len(rest)
        if torch.is_grad_enabled():
            # a gradient of the gradient (create_graph=True): differentiate the whole
            # composition, with its graph, instead
            full = torch.autograd.grad(f(x, *rest).sum() * scale, x, g, create_graph=True)[0]
            return none + (full,) + tail
        batch = batched(g)  # (is_grads_batched=True, say): read nothing of g
        if ctx.value_and_grad is not None:
            grad, ctx.grad = ctx.grad, None
            if grad is None:  # handed on by an earlier backward (retain_graph): again
                grad = torch.empty_like(x)
                for s in range(0, x.shape[0], rows):
                    _block_value_grad(ctx.value_and_grad, ctx.bounded, scale, grad, x, rest,
                                      s, rows)
            # handed on, and scaled in place where the cotangent is not 1 (a loss divided by
            # its normaliser, or weighted): no full-size copy, and nothing here keeps it
            # (autograd may then take it as .grad as it is); g is read on the CPU alone, where
            # reading it costs no host synchronisation
            if batch:  # nor scale it in place (vmap refuses a batched operand there)
                return none + (grad * g,) + tail
            one = g.is_cpu and bool(g == 1)
            return none + (grad if one else grad.mul_(g),) + tail
        grad, parts = torch.empty_like(x), []
        for s in range(0, x.shape[0], rows):
            with torch.enable_grad():
                xb = x[s:s + rows].detach().requires_grad_(True)
                vb = f(xb, *(a[s:s + rows] for a in rest)).sum() * scale
                (gb,) = torch.autograd.grad(vb, xb, g)
            if batch:  # a batch of block gradients: no copy into an unbatched buffer
                parts.append(gb)
            else:
                grad[s:s + rows] = gb  # our own buffer, in eager mode only
        return none + (torch.cat(parts) if batch else grad,) + tail


def _block_value_grad(value_and_grad: Callable[..., tuple[Array, Array]], bounded: bool,
                      scale: float, grad: Array, x: Array, rest: tuple[Array, ...], s: int,
                      rows: int) -> Array:
    """The closed form on rows ``s:s + rows``: its derivative times ``scale`` written into
    ``grad``, the sum of its value returned."""
    v, g = value_and_grad(x[s:s + rows], *(a[s:s + rows] for a in rest), bounded=bounded)
    torch.mul(g, scale, out=grad[s:s + rows])
    return v.sum()


class _ClosedFormSum(torch.autograd.Function):
    """scale * sum(v), with (v, dv/dx) from a closed form, for torch.compile.

    Compiled, value and derivative fuse into one pass over the inputs, and backward scales the
    saved derivative: no pass through the composition's intermediates.  A derivative of the
    derivative is refused (``once_differentiable``) rather than silently wrong.
    """

    @staticmethod
    def forward(ctx: Any, value_and_grad: Callable[..., tuple[Array, Array]],  # type: ignore[override]
                scale: float, x: Array, *rest: Array) -> Array:
        ctx.rest = len(rest)
        if ctx.needs_input_grad[2]:
            v, g = value_and_grad(x, *rest)
            ctx.save_for_backward(g * scale)
        else:
            v, _ = value_and_grad(x, *rest, grad=False)
        return v.sum() * scale

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g: Array) -> Any:  # type: ignore[override]
        (dx,) = ctx.saved_tensors
        return (None, None, dx * g) + (None,) * ctx.rest


def closed_form_sum(value_and_grad: Callable[..., tuple[Array, Array]] | None, x: Array,
                    *rest: Array, scale: float = 1.0) -> Array | None:
    """The compiled counterpart of :func:`chunked_sum` (no blocks: the compiler fuses)."""
    if value_and_grad is None or any(a.requires_grad for a in rest):
        return None
    return _ClosedFormSum.apply(value_and_grad, scale, x, *rest)


#: the integer dtype of each dtype's width, whose bits a mask's all-ones or zeros select
_BITS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.int32: torch.int32,
         torch.int64: torch.int64}

#: below this many elements an array is selected by torch.where (the Function's call costs
#: more: masked weighted MSE with backward, a random mask, 1.2x the time with ``where`` at
#: 16,384 elements, 0.67-0.80x at 32,768, 0.45-0.58x at 45,000 to 60,000; once 2^16)
MASK_SELECT_MIN = 1 << 15


class _MaskSelect(torch.autograd.Function):
    """``where(mask, x, 0)`` as a bitwise and of x's bits with the mask's (all ones where
    True, zeros elsewhere): the same numbers, NaN and -0.0 included, in a vectorised pass.  On
    the CPU torch.where is a scalar loop, its branch taken by the mask (1e6 float32 elements,
    one thread: 4.0 ms under a random mask, 1.4 under a sorted one, against 0.46 for the
    and); its derivative is the same select, in both modes."""

    @staticmethod
    def forward(x: Array, bits: Array) -> Array:  # type: ignore[override]
        return (x.view(bits.dtype) & bits).view(x.dtype)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.bits = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: Array) -> Any:  # type: ignore[override]
        return _MaskSelect.apply(g, ctx.bits), None

    @staticmethod
    def jvp(ctx: Any, x_t: Array, _: Any) -> Array:  # type: ignore[override]
        return _MaskSelect.apply(x_t, ctx.bits)


class _MaskGradient(_MaskSelect):
    """``x`` itself, its gradient selected by the mask's bits (:class:`_MaskSelect`'s
    backward): for a row-wise or elementwise loss whose masked values the final select drops,
    a NaN in a masked element then reaches neither the value nor the gradient, without the
    copy of ``x`` that replacing it first writes (and the kernel then reads: categorical CE
    with logits under a row mask, forward and backward at 10,000 x 100, spent 2.4 ms per call
    in three selects of the logits, the targets and the gradient, and the same kernels ran
    1.6-1.8x slower than without the copies, out of cache)."""

    @staticmethod
    def forward(x: Array, bits: Array) -> Array:  # type: ignore[override]
        return x.view_as(x)


def _mask_bits(mask: Array, kind: Any) -> Array:
    """A boolean mask as integers of ``kind`` (x's width), all ones where True and zeros
    elsewhere: the operand of :class:`_MaskSelect`'s ``and``."""
    return mask.to(kind).neg_()


def mask_selector(mask: Array) -> Callable[..., Array] | None:
    """``TorchAdapter.mask_selector``: on the CPU, eagerly, a select of ``where(mask, x, 0)``
    (``axis``: x has an extra axis there, along which the mask is broadcast) by
    :class:`_MaskSelect` for arrays of 2^16 elements or more, the mask's bits made once per
    width and kept for the call's other arrays; None elsewhere (torch.where)."""
    if mask.dtype != torch.bool or not mask.is_cpu or tracing(mask):
        return None
    bits: dict[Any, Array] = {}

    def bits_for(x: Array, axis: int | None) -> Array | None:
        """The mask's bits for x (broadcast along ``axis``), or None where torch.where
        serves x (other dtypes, small or traced arrays, a mask that does not broadcast)."""
        m = mask if axis is None else mask.unsqueeze(axis)
        kind = _BITS.get(x.dtype)
        if (kind is None or x.numel() < MASK_SELECT_MIN or x.dim() != m.dim()
                or torch.broadcast_shapes(x.shape, m.shape) != x.shape or tracing(x)):
            return None
        b = bits.get(kind)
        if b is None:
            b = bits[kind] = _mask_bits(mask, kind)
        return b if axis is None else b.unsqueeze(axis)

    def select(x: Array, axis: int | None = None, zero: Any = 0) -> Array:
        b = bits_for(x, axis)
        if b is None:
            return torch.where(mask if axis is None else mask.unsqueeze(axis), x, zero)
        if (x.requires_grad and torch.is_grad_enabled()) or _forward_ad():
            return _MaskSelect.apply(x, b)
        return _MaskSelect.forward(x, b)

    def guard(x: Array, axis: int | None = None) -> Array | None:
        """x with its gradient masked (:class:`_MaskGradient`), x itself where autograd does
        not record it; None where the select would not take x (torch.where's place) or
        forward mode is on (the replacement's select serves it there)."""
        b = None if _forward_ad() else bits_for(x, axis)
        if b is None:
            return None
        if not (x.requires_grad and torch.is_grad_enabled()):
            return x
        return _MaskGradient.apply(x, b)

    select.guard = guard  # type: ignore[attr-defined]
    return select


class _ClosedFormElementwise(torch.autograd.Function):
    """The elementwise value, differentiated in x by a closed form.

    Backward recomputes the derivative from the saved inputs (a few elementwise passes, where
    the composition's backward walks its saved intermediates), with a graph where one is
    wanted (``create_graph=True``): a second derivative then differentiates the closed form.
    """

    @staticmethod
    def forward(ctx: Any, value_and_grad: Callable[..., tuple[Array, Array]],  # type: ignore[override]
                x: Array, *rest: Array) -> Array:
        ctx.value_and_grad = value_and_grad
        ctx.save_for_backward(x, *rest)
        return value_and_grad(x, *rest, grad=False)[0]

    @staticmethod
    def backward(ctx: Any, g: Array) -> Any:  # type: ignore[override]
        x, *rest = ctx.saved_tensors
        dx = g * ctx.value_and_grad(x, *rest, value=False)[1]
        return (None, dx) + (None,) * len(rest)


def closed_form_elementwise(value_and_grad: Callable[..., tuple[Array, Array]], x: Array,
                            *rest: Array) -> Array | None:
    """``Adapter.elementwise_closed_form``: None where no gradient in x is wanted, where one
    in the others is (the Function gives them none), or forward-mode AD is open (it has no
    forward-mode rule)."""
    if (not x.requires_grad or not torch.is_grad_enabled() or _forward_ad()
            or any(a.requires_grad for a in rest)):
        return None
    return _ClosedFormElementwise.apply(value_and_grad, x, *rest)


def _forward_ad() -> bool:
    """Whether a forward-mode AD level is open (``torch.autograd.forward_ad.dual_level``)."""
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0


def _backward_in_forward_mode(p: Array, t: Array) -> bool:
    """Whether the kernel's backward may run under forward mode (a Hessian-vector product in
    forward over reverse mode).  Without a gradient wanted there is no backward: an inference
    call skips the interpreter stack's read (the kernels' forward-mode rules are sound)."""
    return (p.requires_grad or t.requires_grad) and forward_mode()


_interpreters = getattr(torch._C._functorch, "get_interpreter_stack", None)
_JVP = getattr(getattr(torch._C._functorch, "TransformType", None), "Jvp", None)


def forward_mode() -> bool:
    """Whether the call may be differentiated in forward mode: a forward_ad level is open, or
    a torch.func transform that differentiates forward (``jvp``; ``jacfwd`` and ``hessian``
    are built on it) is active (a torch without the interpreter stack: forward_ad alone).
    Kernels whose backward has no sound forward-mode rule decline then: a Hessian-vector
    product in forward over reverse mode runs the backward's own JVP."""
    if _forward_ad():
        return True
    stack = _interpreters() if _interpreters is not None else None
    if not stack:
        return False
    return _JVP is None or any(i.key() == _JVP for i in stack)


# -- fused closed forms (a GPU) --------------------------------------------------------------

#: UNILOSSES_TORCH_FUSED: "1" (the default): on a GPU an eager closed form runs compiled
#: (torch.compile, inductor: one Triton kernel for its value and derivative) instead of as
#: ~25 kernel launches from Python; "all": on the CPU too (inductor's C++: it needs a
#: compiler, and the first call of each form compiles for seconds); "0": never
_FUSED_SETTING = os.environ.get("UNILOSSES_TORCH_FUSED", "1").strip().lower()
_FUSED_ON = _FUSED_SETTING != "0"
#: device types on which the fused form is taken
_FUSED_DEVICES = frozenset({"cuda", "cpu"} if _FUSED_SETTING == "all" else {"cuda"})
#: on the CPU, from this many elements on (below, the compiled call's host overhead outweighs
#: the vectorised passes it spares); on a GPU from any size, where that overhead (~0.15 ms on
#: an H200's host) is less than the launches' (binary focal loss with logits at 1e3
#: elements, forward + backward: 0.57 ms compiled, 1.01 in launches, torchvision's 0.81)
_FUSED_MIN = 1 << 16
_FUSED_DEVICE_MIN = 1
#: torch.compile's backend for them (tests on the CPU take "aot_eager": no code generation)
_FUSED_BACKEND = "inductor"
#: compiled bodies by ``_key``; None: compiling failed
_COMPILED: dict[tuple[Any, ...], Any] = {}
#: at most this many compiled bodies per closed form, dtype and device, whatever the values
#: of the options it closes over: past them a new value runs on the eager blocks.  Each value
#: is a compiled body of its own (dynamo specialises a closure's floats, with or without
#: ``specialize_float``), and an option on a schedule (gamma, alpha, a new value every step)
#: compiled at every step, each kept for the rest of the run (torchvision's focal loss
#: compiles nothing).  (8: dynamo's own recompile limit per function)
_FUSED_VARIANTS = 8
#: how many bodies each closed form, dtype and device has in ``_COMPILED``, by ``_key``
#: without the closure's values
_VARIANTS: dict[tuple[Any, ...], int] = {}
_warned: list[bool] = []
#: torch.OutOfMemoryError is torch.cuda's from torch 2.5 on; torch 2.3 has only the latter
#: (naming the former in the except clause raised AttributeError instead of falling back)
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
#: held around a key's first call: older torch (before its config moved to ContextVars) kept
#: dynamo's config process-wide, where two threads' overlapping ``patch``es restore each
#: other's values (``specialize_float`` then left on for the whole process)
_FIRST_CALL = threading.Lock()


def _fused_value_grad(value_and_grad: Callable[..., tuple[Array, Array]], x: Array,
                      *rest: Array) -> tuple[Array, Array]:
    return value_and_grad(x, *rest)


def _fused_value(value_and_grad: Callable[..., tuple[Array, Array]], x: Array,
                 *rest: Array) -> Array:
    return value_and_grad(x, *rest, grad=False)[0]


def _key(body: Callable[..., Any], fn: Callable[..., Any], x: Array) -> tuple[Any, ...]:
    """What tells compiled bodies apart: the closed form's code, the constants it closes over
    (alpha, gamma, flags), the dtype and the device; the shapes are dynamic."""
    code = getattr(fn, "__code__", None)
    consts = tuple(c.cell_contents if isinstance(c.cell_contents, (bool, int, float, str))
                   or c.cell_contents is None else type(c.cell_contents)
                   for c in getattr(fn, "__closure__", None) or ())
    return (body, _FUSED_BACKEND, code if code is not None else fn, consts, x.dtype, x.device)


def _compiled(key: tuple[Any, ...], body: Callable[..., Any]) -> Any:
    # a code object of its own per key: dynamo keeps its compiled variants (and counts them
    # against its recompile limit, 8) per code object, and every closed form goes through
    # the same two bodies
    code = body.__code__.replace(co_name=f"{body.__name__}_{len(_COMPILED)}")
    fresh = types.FunctionType(code, body.__globals__, code.co_name)
    out = _COMPILED[key] = torch.compile(fresh, backend=_FUSED_BACKEND, fullgraph=True,
                                         dynamic=True)
    return out


def _run_fused(body: Callable[..., Any], value_and_grad: Callable[..., Any], x: Array,
               rest: tuple[Array, ...]) -> Any:
    """``body`` compiled, on detached inputs without grad mode; None where compiling failed
    (the eager blocks then serve: a missing Triton, an unsupported op, too many variants)."""
    key = _key(body, value_and_grad, x)
    fn = _COMPILED.get(key, False)
    first = fn is False
    if fn is None:
        return None
    if first:
        form = key[:3] + key[4:]
        if _VARIANTS.get(form, 0) >= _FUSED_VARIANTS:
            return None
        _VARIANTS[form] = _VARIANTS.get(form, 0) + 1
    args = (value_and_grad, x.detach(), *(a.detach() for a in rest))
    try:
        if first:  # (torch.compile itself refuses some Pythons and platforms)
            fn = _compiled(key, body)
        with torch.no_grad():
            if first:
                # the closure's floats (alpha, gamma) as constants of the graph; left to
                # dynamo they are inputs, read on the host at every call (binary focal loss
                # at 1.6e7 on an H200: 1.2x as long).  The patch costs ~40 us: once per key
                with _FIRST_CALL, torch._dynamo.config.patch(specialize_float=True):
                    return fn(*args)
            return fn(*args)
    except _OOM:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the compiler: fall back, once
        _COMPILED[key] = None
        if not _warned:
            _warned.append(True)
            warnings.warn(f"unilosses: compiling a loss's closed form for {x.device} failed "
                          f"({type(e).__name__}: {' '.join(str(e).split())[:300]}); it runs "
                          "as separate kernels instead (set UNILOSSES_TORCH_FUSED=0 to skip "
                          "the attempt)",
                          RuntimeWarning, stacklevel=4)
        return None


class _FusedSum(torch.autograd.Function):
    """scale * total, where the compiled closed form gave the total and the derivative
    ``grad`` in one pass; backward hands ``grad`` on, scaled in place."""

    @staticmethod
    def forward(ctx: Any, f: Callable[..., Array],  # type: ignore[override]
                value_and_grad: Callable[..., tuple[Array, Array]], scale: float,
                total: Array, grad: Array, x: Array, *rest: Array) -> Array:
        ctx.f, ctx.value_and_grad, ctx.scale, ctx.grad = f, value_and_grad, scale, grad
        ctx.save_for_backward(x, *rest)
        return total * scale

    @staticmethod
    def backward(ctx: Any, g: Array) -> Any:  # type: ignore[override]
        x, *rest = ctx.saved_tensors
        head, tail = (None,) * 5, (None,) * len(rest)
        if torch.is_grad_enabled():  # create_graph=True: the composition, with its graph
            full = torch.autograd.grad(ctx.f(x, *rest).sum() * ctx.scale, x, g,
                                       create_graph=True)[0]
            return head + (full,) + tail
        grad, ctx.grad = ctx.grad, None
        if grad is None:  # handed on by an earlier backward (retain_graph): again
            out = _run_fused(_fused_value_grad, ctx.value_and_grad, x, tuple(rest))
            if out is None:  # (compiled once already: not expected) the composition
                with torch.enable_grad():
                    xg = x.detach().requires_grad_(True)
                    full = torch.autograd.grad(ctx.f(xg, *rest).sum() * ctx.scale, xg, g)[0]
                return head + (full,) + tail
            grad = out[1]
        # no test of g == 1 on the device (a host synchronisation): one scaling pass (out of
        # place for a cotangent batched by vmap, is_grads_batched=True, which refuses mul_)
        if batched(g):
            return head + (grad * (g * ctx.scale),) + tail
        return head + (grad.mul_(g * ctx.scale),) + tail


def _fused_sum(f: Callable[..., Array], value_and_grad: Callable[..., tuple[Array, Array]],
               x: Array, rest: tuple[Array, ...], scale: float) -> Array | None:
    # the compiled form is elementwise (row-wise) only, and the sum is torch's own: inductor
    # splits a reduction into as many parts as suit the first call's size, and keeps that
    # for every size after it (13 parts, sized for 1e5 elements, made the binary focal loss
    # at 1.6e7 take 2.4x as long on an H200), where an elementwise kernel's grid follows
    # the size of each call
    if x.requires_grad and torch.is_grad_enabled():
        out = _run_fused(_fused_value_grad, value_and_grad, x, rest)
        if out is None:
            return None
        return _FusedSum.apply(f, value_and_grad, scale, out[0].sum(), out[1], x, *rest)
    v = _run_fused(_fused_value, value_and_grad, x, rest)
    return None if v is None else v.sum() * scale


def _fusable(x: Array) -> bool:
    # (x.is_cpu before x.device.type, which builds a device object: the CPU's large inputs
    # ask this at every call, and by default the answer is no)
    if not _FUSED_ON:
        return False
    if x.is_cpu:
        return "cpu" in _FUSED_DEVICES and x.numel() >= _FUSED_MIN
    return x.numel() >= _FUSED_DEVICE_MIN and x.device.type in _FUSED_DEVICES


def chunked_sum(f: Callable[..., Array], x: Array, *rest: Array,
                value_and_grad: Callable[..., tuple[Array, Array]] | None = None,
                scale: float = 1.0, columns: int = 1, blocks_only: bool = False,
                bounds: bool = False) -> Array | None:
    n = x.numel()
    wanted = x.requires_grad and torch.is_grad_enabled()
    if value_and_grad is None:
        least = _CHUNK_MIN
    elif blocks_only:
        # a closed form that pays only in blocks, and only for its backward (the value alone
        # is as fast composed, and small inputs lose to the Function's own overhead)
        least = _CHUNK_MIN if wanted else n + 1
    else:
        least = _CLOSED_GRAD_MIN if wanted else _CLOSED_MIN
    # (a form that pays only in blocks, for a gradient, categorical CE on probabilities,
    # keeps the composition where it would: on an H200 fused, the value alone at 1e6
    # elements and more took 0.7-4x the composition's time in three runs, and with a
    # gradient at 1e3 elements 1.33x; from 1e6 on, with a gradient, 0.75-0.86x the blocks')
    fused = (value_and_grad is not None and (not blocks_only or n >= least)
             and _fusable(x))
    if ((n < max(least, 1) and not fused) or torch.compiler.is_compiling() or x.is_meta
            or _forward_ad() or any(a.requires_grad for a in rest)):
        # (the Function has no forward-mode rule, and a meta tensor no values to test)
        return None
    m = n // columns
    # reshape keeps views of contiguous inputs; the gradient flows back through it
    x, rest = x.reshape(m, -1), tuple(a.reshape(m, -1) for a in rest)
    if fused:
        assert value_and_grad is not None
        total = _fused_sum(f, value_and_grad, x, rest, scale)
        if total is not None:
            return total
        if n < max(least, 1):  # (the compiler failed) as without the fused form
            return None
    block = max(1, (_BLOCK if x.is_cpu else _DEVICE_BLOCK) // columns)
    if value_and_grad is not None and not wanted:
        # the value alone needs no Function: its apply and a stack of one part cost ~28 us,
        # a seventh of log_cosh's time on 65,536 elements
        return _value_sum(value_and_grad, bounds and _bounded(x), block, scale, x, rest)
    return _BlockwiseSum.apply(f, value_and_grad, block, scale, bounds, x, *rest)


def weighted_block_sum(f: Callable[..., Array], x: Array, *rest: Array,
                       value_and_grad: Callable[..., tuple[Array, Array]],
                       weights: Array | None, mask: Array | None, reduction: str,
                       columns: int = 1, blocks_only: bool = False,
                       bounds: bool = False) -> Array | None:
    """``TorchAdapter.weighted_block_sum``: the weighted or masked elementwise (``columns``
    1) or row-wise loss (``columns`` classes along x's last axis, the loss one per row),
    reduced as ``Call.reduce`` reduces it, block by block through :class:`_BlockwiseSum` on
    the CPU.

    Each block's value and closed-form derivative are multiplied by the block's weights and
    selected by the mask's bits (as :class:`_MaskSelect`: a NaN in a masked element reaches
    neither), while the block is in cache; the composition wrote each of its ~15
    intermediates at full size and walked them back (the binary focal loss with logits at
    1e6 elements, weighted, forward and backward: 4.6x torchvision's formula's time).  The
    reduction's divisor is read once: the unmasked count ("mean") or the kept weights' sum
    ("weighted_mean"); where it is 0 the composition serves (its 0 with a zero gradient).
    None (the composition) off the CPU (the read would synchronise), traced, in forward
    mode, where a gradient is wanted in the weights or the targets, below ``_CLOSED_MIN``
    elements, or, ``blocks_only`` (a closed form that pays only for its backward, in
    blocks), where no gradient is wanted or below ``_CHUNK_MIN``, as :func:`chunked_sum`."""
    n = x.numel()
    kind = _BITS.get(x.dtype)
    wanted = x.requires_grad and torch.is_grad_enabled()
    if (kind is None or not x.is_floating_point() or not x.is_cpu or n < _CLOSED_MIN
            or (blocks_only and (not wanted or n < _CHUNK_MIN))
            or reduction not in ("sum", "mean", "weighted_mean")
            or torch.compiler.is_compiling() or x.is_meta or _forward_ad()
            or any(a.requires_grad for a in rest)
            or any(a.shape != x.shape for a in rest)
            or (columns != 1 and (x.ndim < 2 or x.shape[-1] != columns))):
        return None
    shape = x.shape if columns == 1 else x.shape[:-1]  # the loss's
    m = n // columns
    w = bits = None
    if weights is not None:
        if (weights.requires_grad and torch.is_grad_enabled()) or weights.dtype != x.dtype \
                or torch.broadcast_shapes(weights.shape, shape) != shape:
            return None
        w = weights.expand(shape).reshape(m)  # (a copy where broadcast)
    if mask is not None:
        if mask.dtype != torch.bool or torch.broadcast_shapes(mask.shape, shape) != shape:
            return None
        bits = _mask_bits(mask.expand(shape).reshape(m), kind)
    if tracing(x, *rest, *(a for a in (weights, mask) if a is not None)):
        return None
    if reduction == "sum":
        scale = 1.0
    elif reduction == "weighted_mean" and w is not None:
        kept = w if bits is None else (w.view(kind) & bits).view(w.dtype)
        wsum = float(torch.sum(kept).item())
        if wsum == 0.0:
            return None
        scale = 1.0 / wsum
    else:
        count = m if mask is None else int(torch.count_nonzero(mask.expand(shape)).item())
        if count == 0:
            return None
        scale = 1.0 / count
    core = len(rest)

    def weigh(v: Array | None, extra: tuple[Array, ...], composed: bool = False) -> Array | None:
        # (a block's weights and bits, one per row, along each row of a value of x's layout:
        # the elementwise loss's (rows, 1), a row-wise loss's derivative)
        if v is None:
            return None
        if w is not None:
            e = extra[0]
            v = v * (e.unsqueeze(-1) if e.ndim < v.ndim else e)
        if bits is not None:
            b = extra[-1]
            if b.ndim < v.ndim:
                b = b.unsqueeze(-1)
            # (composed: a derivative of the derivative differentiates this, which the
            # bits' integer view would not pass)
            v = torch.where(b != 0, v, 0.0) if composed else \
                _MaskSelect.forward(v.contiguous(), b)
        return v

    def elementwise(xb: Array, *rb: Array) -> Array:
        out = weigh(f(xb, *rb[:core]), rb[core:], composed=True)
        assert out is not None
        return out

    def closed(xb: Array, *rb: Array, **kw: Any) -> tuple[Array | None, Array | None]:
        v, g = value_and_grad(xb, *rb[:core], **kw)
        return weigh(v, rb[core:]), weigh(g, rb[core:])

    extra = tuple(a for a in (w, bits) if a is not None)
    x, rest = x.reshape(m, -1), tuple(a.reshape(m, -1) for a in rest) + extra
    block = max(1, _BLOCK // columns)
    if not wanted:  # (as chunked_sum)
        return _value_sum(closed, bounds and _bounded(x), block, scale, x, rest)
    return _BlockwiseSum.apply(elementwise, closed, block, scale, bounds, x, *rest)


__all__ = ["KERNELS", "PLAIN", "chunked_sum", "closed_form_elementwise", "closed_form_sum",
           "functorch_wrapped", "tracing", "weighted_block_sum"]
