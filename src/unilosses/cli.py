"""The ``unilosses`` command.  ``unilosses parity`` runs the parity report.

Exit status of ``unilosses parity``: 0 when every comparison is within tolerance; 1 when one
is not, a loss raises, or an installed backend fails to load; 2 for a usage error; 3 when a
backend named with ``--backends`` is not installed (and nothing failed).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__

EPILOG = """\
examples:
  unilosses parity                                  every installed backend, float32 and float64
  unilosses parity --backends torch,jax --dtype float32
  unilosses parity --losses 'binary_*' --compile    also under jax.jit / torch.compile / tf.function
  unilosses parity --markdown --out parity.md --plot parity.png
  unilosses parity --json | jq '.rows[] | select(.ok | not)'

exit status: 0 all within tolerance; 1 a deviation over tolerance, a loss that raised or an
installed backend that failed to load; 2 usage error; 3 a backend named in --backends is not
installed.
"""


def _csv(values: Sequence[str] | None) -> list[str] | None:
    if not values:
        return None
    out = [v.strip() for item in values for v in item.split(",") if v.strip()]
    return out or None


def _default_cache() -> str:
    env = os.environ.get("UNILOSSES_CACHE_DIR")
    if env is not None:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "unilosses")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="unilosses", description="unilosses: loss functions written once for every backend.")
    parser.add_argument("--version", action="version", version=f"unilosses {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "parity", help="run every loss on every installed backend against float64 references",
        description="Run every loss on every installed backend on the same generated inputs "
                    "(fixed seed; ordinary, extreme and masked cases; float32 and float64) and "
                    "report the deviation of value and gradient from an independent float64 "
                    "reference, between backends, and from the frameworks' own losses.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sel = p.add_argument_group("selection")
    sel.add_argument("--backends", action="append", metavar="NAMES",
                     help="comma-separated backends (default: all known; missing ones are "
                          "listed with the command that installs them): numpy, "
                          "array_api_strict, torch, jax, tensorflow")
    sel.add_argument("--losses", action="append", metavar="PATTERNS",
                     help="comma-separated loss names or globs, e.g. 'mse,*focal*' "
                          "(default: all registered losses)")
    sel.add_argument("--dtype", action="append", metavar="DTYPES",
                     help="float32, float64 or all (default: all)")
    sel.add_argument("--seed", type=int, default=0, help="input generator seed (default 0)")
    sel.add_argument("--module", action="append", metavar="MODULE",
                     help="also check the losses of MODULE (importable, e.g. mypkg.losses): "
                          "its @unilosses.loss functions and any LossSpec it registers")
    chk = p.add_argument_group("checks")
    chk.add_argument("--compile", action="store_true",
                     help="also run under jax.jit, torch.compile(fullgraph=True) and "
                          "tf.function(jit_compile=True) (slow)")
    chk.add_argument("--torch-compile-backend", default="aot_eager", metavar="NAME",
                     help="torch.compile backend for --compile (default aot_eager: traces "
                          "forward and backward without code generation; inductor is slower)")
    chk.add_argument("--no-peers", action="store_true",
                     help="skip the comparison with the frameworks' own losses")
    out = p.add_argument_group("output")
    fmt = out.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="write the report as JSON")
    fmt.add_argument("--markdown", action="store_true", help="write the report as Markdown")
    out.add_argument("--out", metavar="FILE", help="write the report to FILE instead of stdout")
    out.add_argument("--plot", metavar="FILE.png",
                     help="also save a heatmap of deviation/tolerance (needs matplotlib)")
    out.add_argument("--list", action="store_true",
                     help="list the registered losses, their cases and peers, and exit")
    out.add_argument("--cache-dir", default=None, metavar="DIR",
                     help="where JAX keeps compiled programs between runs (default "
                          "$UNILOSSES_CACHE_DIR or ~/.cache/unilosses; '' disables)")
    return parser


def _list() -> str:
    from .parity import PEERS, REGISTRY

    lines = []
    for spec in REGISTRY.values():
        cases = ", ".join(c.name for c in spec.make_cases(0))
        peers = sorted({f"{p.name} [{p.backend}]" for p in PEERS.peers if p.loss == spec.name})
        lines.append(f"{spec.name}\n  cases: {cases}")
        if peers:
            lines.append(f"  peers: {', '.join(peers)}")
    return "\n".join(lines) + "\n"


def parity_main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from .parity import DTYPES, Options, run
    from .parity.plot import MISSING_MATPLOTLIB, matplotlib_available, save_heatmap
    from .parity.report import render_json, render_markdown, render_summary, render_text

    if args.module:
        from .parity.user import load_module

        sys.path.insert(0, os.getcwd())  # a module of the project the command runs in
        for path in args.module:
            try:
                added = load_module(path)
            except ImportError as exc:
                hint = ""
                if path.endswith(".py"):  # a file name, as `python FILE` takes it
                    name = path[:-3].replace(os.sep, ".").replace("/", ".").strip(".")
                    hint = f"; --module takes a module name, as `import` does: --module {name}"
                print(f"unilosses parity: error: cannot import --module {path}: {exc}{hint}",
                      file=sys.stderr)
                return 2
            if not added:
                print(f"unilosses parity: error: --module {path} defines no @unilosses.loss "
                      f"function and registers no LossSpec", file=sys.stderr)
                return 2
    if args.list:
        sys.stdout.write(_list())
        return 0
    if args.plot and not matplotlib_available():
        print(f"unilosses parity: error: {MISSING_MATPLOTLIB}", file=sys.stderr)
        return 2
    # checked before the run, which takes minutes: a path found unwritable after it lost
    # the report to a traceback
    for flag, path in (("--out", args.out), ("--plot", args.plot)):
        folder = os.path.dirname(os.path.abspath(path)) if path else ""
        if path and not os.path.isdir(folder):
            print(f"unilosses parity: error: cannot write {flag} {path}: the directory "
                  f"{folder} does not exist", file=sys.stderr)
            return 2
    dtypes = _csv(args.dtype) or ["all"]
    if "all" in dtypes:
        dtypes = list(DTYPES)
    cache = _default_cache() if args.cache_dir is None else args.cache_dir
    progress = None
    if sys.stderr.isatty() and not args.out:
        def progress(msg: str) -> None:
            sys.stderr.write(f"\r\033[K  {msg}")
            sys.stderr.flush()
    opts = Options(backends=_csv(args.backends), losses=_csv(args.losses), dtypes=dtypes,
                   seed=args.seed, compile=args.compile,
                   torch_compile_backend=args.torch_compile_backend, peers=not args.no_peers,
                   jax_cache_dir=os.path.join(cache, "jax") if cache else None,
                   progress=progress)
    try:
        report = run(opts)
    except ValueError as exc:
        if progress is not None:
            sys.stderr.write("\r\033[K")
        print(f"unilosses parity: error: {exc}", file=sys.stderr)
        return 2
    if progress is not None:
        sys.stderr.write("\r\033[K")
    if args.json:
        text = render_json(report)
    elif args.markdown:
        text = render_markdown(report)
    else:
        text = render_text(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
        # the terminal still gets what matters: missing backends, failures and the verdict
        print(render_summary(report), end="")
        print(f"report written to {args.out}")
    else:
        sys.stdout.write(text)
    if args.plot:
        save_heatmap(report, args.plot)
        print(f"heatmap written to {args.plot}", file=sys.stderr if not args.out else sys.stdout)
    return report.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``unilosses`` command; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "parity":
        return parity_main(args, parser)
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
