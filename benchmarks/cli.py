"""``python -m benchmarks``: the command line.

Examples::

    python -m benchmarks                                     # the default: a few minutes
    python -m benchmarks --backends torch,jax --sizes 16,1e3,1e6 --modes eager
    python -m benchmarks --losses mse,binary_focal_loss_with_logits --sizes 1.6e7
    python -m benchmarks --focal-shape --losses binary_focal_loss_with_logits
    python -m benchmarks --device cuda --backends torch,jax --torch-compile   # on a GPU
    python -m benchmarks --full --out results/              # every size, the focal shape and
                                                            # torch.compile: long
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from .backends import BACKENDS, DEFAULT_BACKENDS, DEVICES, ON_DEVICE, installed
from .cases import DEFAULT_SIZES, FOCAL_SHAPE, FULL_SIZES, LOSSES, focal_size, parse_size
from .memory import MALLOC_SETTINGS
from .run import MODES, PASSES, Config, run, worker

#: thread-count variables set for every framework (and inherited by the worker processes)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def _list(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _number(kind: type, low: float, strict: bool = False) -> Callable[[str], Any]:
    """An argparse type: a ``kind`` at least (``strict``: above) ``low``; a value outside
    (``--repeats 0`` timed nothing and exited 0) is a usage error naming the option."""
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if v < low or (strict and v == low):
            raise argparse.ArgumentTypeError(f"{text!r}: must be {'>' if strict else '>='} "
                                             f"{low:g}")
        return v

    return parse


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="unilosses against each framework's own losses, side by side: median "
                    "time, ratio, multiple of the memory-bandwidth floor, peak extra memory.")
    p.add_argument("--backends", type=_list, default=None,
                   help=f"comma-separated, from {', '.join(BACKENDS)} (default: those of "
                        f"{', '.join(DEFAULT_BACKENDS)} that are installed)")
    p.add_argument("--losses", type=_list, default=None,
                   help="comma-separated unilosses names (default: all: "
                        + ", ".join(LOSSES) + ")")
    p.add_argument("--sizes", type=_list, default=None,
                   help="comma-separated element counts (16,1e3,1e6,1.6e7) or shapes "
                        "(8x19x384x384); default " + ",".join(map(str, DEFAULT_SIZES)))
    p.add_argument("--focal-shape", nargs="?", const="x".join(map(str, FOCAL_SHAPE)),
                   default=None, metavar="SHAPE",
                   help="also run the focal losses on this shape (default "
                        + "x".join(map(str, FOCAL_SHAPE)) + ")")
    p.add_argument("--full", action="store_true",
                   help="sizes " + ",".join(map(str, FULL_SIZES)) + ", the focal shape and "
                        "torch.compile (long)")
    p.add_argument("--device", choices=DEVICES, default=Config.device,
                   help="where the arrays live: cpu, or cuda (torch and jax on the GPU; the "
                        "floor is then the GPU's copy bandwidth)")
    p.add_argument("--modes", type=_list, default=list(MODES), help="eager,compiled")
    p.add_argument("--passes", type=_list, default=list(PASSES), help="fwd,fwd+bwd")
    p.add_argument("--torch-compile", action="store_true",
                   help="include torch.compile (inductor) in the compiled mode (slow to compile)")
    p.add_argument("--repeats", type=_number(int, 1), default=Config.repeats,
                   help="timed rounds (median reported)")
    p.add_argument("--warmup", type=_number(int, 0), default=Config.warmup,
                   help="calls before timing, after the first")
    p.add_argument("--min-time", type=_number(float, 0), default=Config.min_time,
                   help="seconds a sample lasts at least (back-to-back calls)")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                   help="run large sizes in a fresh process (default on)")
    p.add_argument("--isolate-min", type=lambda s: int(float(s)), default=Config.isolate_min,
                   help="smallest size run in a fresh process (default 1e6)")
    p.add_argument("--threads", type=_number(int, 1), default=None,
                   help="threads per framework (default: the CPUs this process may use)")
    p.add_argument("--malloc", choices=tuple(MALLOC_SETTINGS), default=Config.malloc,
                   help="glibc allocator policy (see benchmarks/memory.py)")
    p.add_argument("--no-checks", action="store_true",
                   help="turn unilosses's eager value checks off")
    p.add_argument("--no-memory", action="store_true", help="do not measure peak memory")
    p.add_argument("--memory-min", type=lambda s: int(float(s)), default=Config.memory_min,
                   help="smallest size whose peak memory is measured (default 1e5)")
    p.add_argument("--bandwidth-mb", type=_number(float, 0, strict=True),
                   default=Config.bandwidth_bytes / 1e6,
                   help="size of the arrays of the bandwidth copy (MB)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="start no new measurement after this long; report what finished")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmark-results",
                   help="directory for results.md and results.json")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument("--worker", nargs=2, metavar=("SPEC", "OUT"), help=argparse.SUPPRESS)
    return p


def config_from(args: argparse.Namespace) -> Config:
    backends = args.backends or [b for b in DEFAULT_BACKENDS
                                 if installed(b) and b in ON_DEVICE[args.device]]
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown:
        raise SystemExit(f"unknown backend(s) {unknown}; choose from {', '.join(BACKENDS)}")
    off = [b for b in backends if b not in ON_DEVICE[args.device]]
    if off:
        raise SystemExit(f"backend(s) {off} do not run with --device {args.device}; choose "
                         f"from {', '.join(ON_DEVICE[args.device])}")
    missing = [b for b in backends if not installed(b)]
    if missing:
        raise SystemExit(f"not installed: {', '.join(missing)}")
    losses = args.losses or list(LOSSES)
    bad = [n for n in losses if n not in LOSSES]
    if bad:
        raise SystemExit(f"unknown loss(es) {bad}; choose from {', '.join(LOSSES)}")
    texts = args.sizes or [str(n) for n in (FULL_SIZES if args.full else DEFAULT_SIZES)]
    focal = args.focal_shape or ("x".join(map(str, FOCAL_SHAPE)) if args.full else None)
    try:
        sizes = [focal_size() if t == "focal" else parse_size(t) for t in texts]
        if focal:
            sizes.append(parse_size(focal.replace(",", "x")))
    except ValueError as exc:
        raise SystemExit(f"{exc}; a size is an element count (1e6) or a shape "
                         f"(8x19x384x384)") from None
    for m in args.modes:
        if m not in MODES:
            raise SystemExit(f"unknown mode {m!r}; choose from {', '.join(MODES)}")
    for p_ in args.passes:
        if p_ not in PASSES:
            raise SystemExit(f"unknown pass {p_!r}; choose from {', '.join(PASSES)}")
    config = Config(backends=backends, losses=losses, sizes=sizes, device=args.device,
                    modes=list(args.modes),
                    passes=list(args.passes), repeats=args.repeats, warmup=args.warmup,
                    min_time=args.min_time, torch_compile=args.torch_compile or args.full,
                    isolate=args.isolate, isolate_min=args.isolate_min, malloc=args.malloc,
                    checks=not args.no_checks, memory=not args.no_memory,
                    memory_min=args.memory_min,
                    bandwidth_bytes=int(args.bandwidth_mb * 1e6), seed=args.seed,
                    quiet=args.quiet,
                    deadline=None if args.time_limit is None else time.time() + args.time_limit)
    if args.threads is not None:
        config.threads = args.threads
    return config


def set_environment(threads: int) -> None:
    """Thread counts and quiet logs, before any framework is imported (workers inherit them)."""
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.worker:
        return worker(*args.worker)
    config = config_from(args)
    set_environment(config.threads)
    from .report import markdown, write

    result = run(config, argv=sys.argv[1:] if argv is None else list(argv))
    md, js = write(result, args.out)
    print(markdown(result))
    print(f"wrote {md} and {js}", file=sys.stderr)
    return 0


__all__ = ["main", "parser"]
