"""``python -m benchmarks.blocks``: the block size of unilosses's block-wise sums on torch.

The losses that torch evaluates block by block in eager mode (the focal losses, log-cosh,
categorical cross-entropy on probabilities; ``_torch_kernels.chunked_sum``) are timed, and
their peak extra memory read, at several block sizes and with no blocks at all (the plain
composition), next to their peer, in one process and interleaved (:mod:`benchmarks.timing`).
It informs ``_torch_kernels._BLOCK`` (the CPU's) and ``_DEVICE_BLOCK`` (a GPU's), and,
with the variant "fused" (the closed form compiled into one kernel, from any size, on any
device: inductor's C++ on the CPU), ``_FUSED_MIN`` and ``_FUSED_DEVICE_MIN``; it is not
part of the main table.

    python -m benchmarks.blocks --device cuda --sizes 1e6,1.6e7,8x19x384x384
    python -m benchmarks.blocks --device cuda --variants fused,24,none --sizes 1e3,1e5
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from typing import Any

from . import backends as B
from .cases import CASES, parse_size
from .memory import device_peak_extra_bytes, peak_extra_bytes
from .timing import Timing, first_call, time_group

LOSSES = ("binary_focal_loss_with_logits", "anchor_focal_loss_with_logits", "log_cosh",
          "categorical_cross_entropy")
#: a block size in elements; None: no blocks (the composition and autograd); "fused": the
#: closed form compiled (torch.compile, inductor), no blocks
Variant = int | str | None


def _label(v: Variant) -> str:
    if isinstance(v, str):
        return v
    return "composition" if v is None else f"block 2^{v.bit_length() - 1}"


def _variant(text: str) -> Variant:
    """"fused", "none" (the composition) or a block size's power of 2 ("24")."""
    return {"fused": "fused", "none": None}.get(text) if not text.isdigit() else 1 << int(text)


def _with_block(step: B.Step, block: Variant) -> B.Step:
    """``step`` run with the block size ``block`` in force (restored after each call)."""
    from unilosses.backends import _torch_kernels as K

    def setting() -> tuple[Any, ...]:
        return (K._BLOCK, K._DEVICE_BLOCK, K.chunked_sum, K._FUSED_ON, K._FUSED_MIN,
                K._FUSED_DEVICE_MIN, K._FUSED_DEVICES)

    real = K.chunked_sum
    fused = block == "fused"
    size = block if isinstance(block, int) else None

    def apply(values: tuple[Any, ...]) -> None:
        (K._BLOCK, K._DEVICE_BLOCK, K.chunked_sum, K._FUSED_ON, K._FUSED_MIN,
         K._FUSED_DEVICE_MIN, K._FUSED_DEVICES) = values

    def wrapped(fn: Callable[[], Any]) -> Callable[[], Any]:
        def call() -> Any:
            old = setting()
            apply((size or old[0], size or old[1],
                   real if size or fused else (lambda *a, **k: None), fused,
                   1 if fused else old[4], 1 if fused else old[5],
                   frozenset({"cpu", "cuda"}) if fused else old[6]))
            try:
                return fn()
            finally:
                apply(old)
        return call

    out = wrapped(step)
    if hasattr(step, "run"):
        out.run = wrapped(step.run)  # type: ignore[attr-defined]
        out.wait = step.wait  # type: ignore[attr-defined]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.blocks", description=__doc__)
    p.add_argument("--device", choices=B.DEVICES, default="cpu")
    p.add_argument("--sizes", default="1e6,1.6e7")
    p.add_argument("--losses", default=",".join(LOSSES))
    p.add_argument("--passes", default="fwd+bwd,fwd")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--variants", default="16,20,22,24,none",
                   help="block sizes as powers of 2, 'none' (the composition), 'fused'")
    args = p.parse_args(argv)
    variants = tuple(_variant(v) for v in args.variants.split(","))
    import unilosses

    from .peers import peers_for

    peers = peers_for("torch")
    import torch

    where = torch.cuda.get_device_name() if args.device == "cuda" else "CPU"
    print(f"torch {torch.__version__} on {where}, `python -m benchmarks.blocks "
          f"{' '.join(sys.argv[1:] if argv is None else argv)}`: ms per call (median of "
          f"{args.repeats} interleaved samples), then peak extra MB (the allocator's on a GPU, "
          f"the resident high-water mark on the CPU)\n")
    lines = ["| loss | size | pass | " + " | ".join(_label(v) for v in variants)
             + " | peer | peak extra MB (" + ", ".join(_label(v) for v in variants)
             + ", peer) |", "|" + "---|" * (len(variants) + 5)]
    for name in args.losses.split(","):
        case = CASES[name]
        for text in args.sizes.split(","):
            size = parse_size(text)
            if case.shape(size) is None:
                continue
            arrays = tuple(B.to_backend("torch", a, args.device)
                           for a in case.make(size, 0))
            ours = functools.partial(getattr(unilosses, name), **case.options)

            for pass_ in args.passes.split(","):
                steps = [_with_block(B.make_step("torch", "eager", pass_, ours, arrays,
                                                 args.device), v) for v in variants]
                steps.append(B.make_step("torch", "eager", pass_, peers[name][0].fn, arrays,
                                         args.device))
                timings = [Timing() for _ in steps]
                for s in steps:
                    first_call(s)
                time_group(steps, repeats=args.repeats, warmup=2, min_time=0.002,
                           timings=timings)
                probe = (device_peak_extra_bytes if args.device != "cpu"
                         else lambda _b, s: peak_extra_bytes(s))
                mem = [probe("torch", s) for s in steps]
                ms = [t.median_s * 1e3 if t.median_s else float("nan") for t in timings]
                lines.append(f"| {name} | {size.label} | {pass_} | "
                             + " | ".join(f"{m:.3g}" for m in ms) + " | "
                             + ", ".join("–" if b is None else f"{b / 1e6:.0f}" for b in mem)
                             + " |")
                print(lines[-1], file=sys.stderr, flush=True)
            del arrays
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
