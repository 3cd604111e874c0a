"""``python -m benchmarks.options``: calls with weights, masks, ``ignore_index`` or class weights.

The main table times plain calls.  This one times the options a training loop adds (sample
weights, a ``where`` mask of padding, labels equal to ``ignore_index``, class weights),
eagerly on torch's CPU, each next to the torch formula a user writes today (the peer:
``F.<loss>`` with
``reduction="none"`` (torchvision's focal formula and Keras's log-cosh formula in torch ops,
unreduced, as in the main table; ``F.cross_entropy(log p)`` for probabilities), times the
weights, ``torch.where`` of the mask, summed;
``F.cross_entropy(ignore_index=-100)``, ``F.cross_entropy(weight=)``) and next to
unilosses's own generic composition (every fast path off: torch's kernels, the plain calls'
kernels, ``prepare``'s short path and the masks' selects; what these calls took before they
reached them), in
one process and interleaved (:mod:`benchmarks.timing`), with the
allocator settings of the main runner.  It is not part of the main table.

    python -m benchmarks.options --sizes 16,1e3,1e6 --threads 1
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from .cases import parse_size
from .memory import MALLOC_SETTINGS, configure_malloc
from .peers import ALPHA, GAMMA, LOG2
from .timing import Timing, time_group


def _cases(torch: Any, n: int) -> list[tuple[str, Callable[..., Any], Callable[..., Any],
                                             tuple[Any, ...], dict[str, Any], Any, Any]]:
    """(label, unilosses loss, peer's elementwise loss, inputs, options, weights, mask)."""
    import torch.nn.functional as F

    import unilosses

    g = torch.Generator().manual_seed(0)
    p, t = torch.randn(n, generator=g), torch.randn(n, generator=g)
    w, m = torch.rand(n, generator=g), torch.rand(n, generator=g) > 0.2
    pr = torch.rand(n, generator=g) * 0.96 + 0.02
    tb = (torch.rand(n, generator=g) < 0.3).float()
    classes = min(n, 100)
    rows = max(1, n // classes)
    x = torch.randn(rows, classes, generator=g)
    y = torch.randint(0, classes, (rows,), generator=g)
    wr = torch.rand(rows, generator=g)
    mr = torch.rand(rows, generator=g) > 0.2
    soft = torch.softmax(torch.randn(rows, classes, generator=g), -1)
    ignored = y.clone()
    ignored[1::5] = -100  # (every fifth row from the second: a row kept at 16 elements)

    def focal_terms(x: Any, t: Any, reduction: str = "none") -> Any:
        # torchvision.ops.sigmoid_focal_loss's formula, unreduced (as the main table's peer)
        q = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
        p_t = q * t + (1 - q) * (1 - t)
        return (ALPHA * t + (1 - ALPHA) * (1 - t)) * (ce * ((1 - p_t) ** GAMMA))

    def ce_of_log(p: Any, t: Any, reduction: str = "none") -> Any:
        return F.cross_entropy(torch.log(p), t, reduction=reduction)

    def log_cosh_terms(p: Any, t: Any, reduction: str = "none") -> Any:
        d = p - t
        return d + F.softplus(-2.0 * d) - LOG2

    out: list[Any] = []
    for mask in (None, m):
        tag = "weights" if mask is None else "weights, where"
        out += [
            (f"mse, {tag}", unilosses.mse, F.mse_loss, (p, t), {}, w, mask),
            (f"huber, {tag}", unilosses.huber, F.huber_loss, (p, t), {}, w, mask),
            (f"bce, {tag}", unilosses.binary_cross_entropy, F.binary_cross_entropy, (pr, tb),
             {}, w, mask),
            (f"bce with logits, {tag}", unilosses.binary_cross_entropy_with_logits,
             F.binary_cross_entropy_with_logits, (p, tb), {}, w, mask),
            (f"focal with logits, {tag}", unilosses.binary_focal_loss_with_logits,
             focal_terms, (p, tb), {}, w, mask),
            (f"log_cosh, {tag}", unilosses.log_cosh, log_cosh_terms, (p, t), {}, w, mask),
        ]
    for mask in (None, mr):
        tag = "weights" if mask is None else "weights, where"
        out += [
            (f"sparse CE, {tag}", unilosses.sparse_categorical_cross_entropy_with_logits,
             F.cross_entropy, (x, y), {}, wr, mask),
            (f"categorical CE, {tag}", unilosses.categorical_cross_entropy_with_logits,
             F.cross_entropy, (x, soft), {}, wr, mask),
            (f"categorical CE on probabilities, {tag}", unilosses.categorical_cross_entropy,
             ce_of_log, (torch.softmax(x, -1), soft), {}, wr, mask),
        ]
    out += [
        ("sparse CE, ignore_index", unilosses.sparse_categorical_cross_entropy_with_logits,
         F.cross_entropy, (x, ignored), {"ignore_index": -100}, None, None),
        ("sparse CE, class_weights", unilosses.sparse_categorical_cross_entropy_with_logits,
         F.cross_entropy, (x, y), {"class_weights": torch.linspace(0.5, 2.0, classes)}, None,
         None),
    ]
    return out


def _declined(*args: Any, **kwargs: Any) -> None:
    return None


def _never(*args: Any) -> bool:
    return False


def _steps(torch: Any, case: tuple[Any, ...],
           grad: bool) -> tuple[tuple[Callable[[], Any], ...], Any]:
    """(unilosses, its composition, the peer), each returning the loss; and the input that
    the backward pass differentiates."""
    from unilosses._core import call as call_module
    from unilosses.backends import _torch_kernels as kernels
    from unilosses.backends._base import Adapter
    from unilosses.backends.torch import TorchAdapter

    _, loss, peer, inputs, options, w, mask = case
    first = inputs[0].clone().requires_grad_(grad)
    rest = inputs[1:]
    reduction = "sum" if w is not None else "mean"
    peer_options = dict(options)
    if "class_weights" in options:  # (torch's mean with weight= is the "weighted_mean")
        peer_options["weight"] = peer_options.pop("class_weights")
        reduction = "weighted_mean"

    def ours() -> Any:
        out = loss(first, *rest, weights=w, where=mask, reduction=reduction, **options)
        if grad:
            out.backward()
        return out

    def composition() -> Any:
        # every fast path off: the kernels, the plain calls' kernels, prepare's short path,
        # the masks' (inputs replaced with or without a gradient, torch.where, the mask's
        # count cast) and the weighted block sums
        saved, plain = dict(kernels.KERNELS), dict(kernels.PLAIN)
        kernels.KERNELS.clear()
        kernels.PLAIN.clear()
        short = call_module._prepare_plain
        setattr(call_module, "_prepare_plain", _declined)  # noqa: B010 (a module's function)
        masks = {name: TorchAdapter.__dict__[name]
                 for name in ("no_gradient", "mask_selector", "count", "weighted_block_sum")}
        for name, off in (("no_gradient", _never), ("mask_selector", _declined),
                          ("count", Adapter.count), ("weighted_block_sum", _declined)):
            setattr(TorchAdapter, name, off)
        try:
            return ours()
        finally:
            kernels.KERNELS.update(saved)
            kernels.PLAIN.update(plain)
            setattr(call_module, "_prepare_plain", short)  # noqa: B010
            for name, method in masks.items():
                setattr(TorchAdapter, name, method)

    def theirs() -> Any:
        if w is None:
            out = peer(first, *rest, **peer_options)
        else:
            out = peer(first, *rest, reduction="none") * w
            out = (out if mask is None else torch.where(mask, out, 0.0)).sum()
        if grad:
            out.backward()
        return out

    return (ours, composition, theirs), first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.options",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="16,1e3,1e6")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--min-time", type=float, default=0.05,
                        help="seconds per sample (calls are repeated to fill it)")
    parser.add_argument("--malloc", choices=tuple(MALLOC_SETTINGS), default="retain")
    parser.add_argument("--cases", default="",
                        help="comma-separated words; only the cases whose label holds one "
                             "(e.g. focal,log_cosh)")
    args = parser.parse_args(argv)
    words = [word.strip() for word in args.cases.split(",") if word.strip()]
    import torch

    configure_malloc(args.malloc)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, CPU, {args.threads} thread(s), malloc {args.malloc}; "
          f"median of {args.repeats} interleaved samples")
    print()
    print("| case | elements | pass | unilosses (ms) | composition (ms) | peer (ms) "
          "| / composition | / peer |")
    print("|---|---|---|---|---|---|---|---|")
    for text in args.sizes.split(","):
        n = parse_size(text).elements
        for case in _cases(torch, n):
            if words and not any(word in case[0] for word in words):
                continue
            for grad in (False, True):
                steps, _ = _steps(torch, case, grad)
                timings = [Timing() for _ in steps]
                time_group(steps, repeats=args.repeats, warmup=2, min_time=args.min_time,
                           timings=timings)
                med = [tm.median_s for tm in timings]
                if any(v is None for v in med):
                    errors = "; ".join(str(tm.error) for tm in timings if tm.error)
                    print(f"| {case[0]} | {n} | {'fwd+bwd' if grad else 'fwd'} | {errors} |")
                    continue
                a, b, c = (float(v) for v in med)  # type: ignore[arg-type]
                print(f"| {case[0]} | {n:g} | {'fwd+bwd' if grad else 'fwd'} | {a * 1e3:.4g} "
                      f"| {b * 1e3:.4g} | {c * 1e3:.4g} | {a / b:.2f} | {a / c:.2f} |",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
