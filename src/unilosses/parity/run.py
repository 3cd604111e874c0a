"""The parity run: every selected loss, on every selected backend, on the same inputs.

For each dtype, loss and case the float64 reference (and gradient reference) is computed once
on the inputs exactly as the backends receive them (rounded to the dtype), then each backend
runs the loss eagerly, with autograd where it has it, beside its framework's own loss (peers)
and, with ``compile=True``, under its compiler.  Cross-backend deviations are taken last, per
case.  See :mod:`unilosses.parity.tolerance` for the measure and tolerances.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import references
from .backends import KNOWN_BACKENDS, BackendStatus, probe, use_jax_cache
from .cases import Case, LossSpec, select, uncovered
from .compiled import COMPILERS, DEFAULT_TORCH_BACKEND, compile_loss, describe
from .peers import PEER_INSTALL, PEERS, Peer, keras_backend, missing_requirements
from .results import CaseResult, Check, Report, Row
from .tolerance import DTYPES, EPS_MULTIPLE, FD_RTOL, deviation, eps, tolerance


@dataclass
class Options:
    """What to run (the command-line flags of ``unilosses parity``)."""

    backends: Sequence[str] | None = None    # None: every known backend that is installed
    losses: Sequence[str] | None = None      # glob patterns; None: every registered loss
    dtypes: Sequence[str] = DTYPES
    seed: int = 0
    compile: bool = False
    torch_compile_backend: str = DEFAULT_TORCH_BACKEND
    peers: bool = True
    #: where JAX keeps compiled programs between runs (None: JAX's own setting)
    jax_cache_dir: str | None = None
    progress: Callable[[str], None] | None = None


def _err(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {msg[0] if msg else ''}"[:300]


@dataclass
class _Reference:
    value: np.ndarray | None
    grad: np.ndarray | None
    method: str | None
    error: str | None = None


def _reference(spec: LossSpec, case: Case, dtype: str, want_grad: bool) -> _Reference:
    """The float64 reference on the widened case: value, and the gradient where defined."""
    kw: dict[str, Any] = {**case.options, **case.arrays, "dtype": dtype}
    try:
        value = np.asarray(spec.value(*case.args, **kw))
        if not want_grad or value.ndim != 0:
            return _Reference(value, None, None)
        grad = None if spec.grad is None else spec.grad(*case.args, **kw)
        if grad is not None:
            return _Reference(value, np.asarray(grad, dtype=np.float64), "analytic")
        if case.fd:
            fn = spec.value if spec.held is None else spec.held(*case.args, **kw)
            g = references.finite_difference(fn, *case.args, fd_step=spec.fd_step, **kw)
            return _Reference(value, g, "finite differences")
        return _Reference(value, None, None)
    except Exception as exc:  # a broken reference (e.g. a user's) is reported per case
        return _Reference(None, None, None, f"reference failed: {_err(exc)}")


def _to_numpy(st: BackendStatus, x: Any) -> np.ndarray:
    assert st.adapter is not None
    return np.asarray(st.adapter.to_numpy(x))


def _loss_closure(spec: LossSpec, case: Case, arrays: dict[str, Any]) -> Callable[..., Any]:
    options = dict(case.options)

    def f(x: Any, *rest: Any) -> Any:
        return spec.fn(x, *rest, **options, **arrays)

    return f


#: backends whose value is taken from value_and_grad alone when a gradient is computed: JAX
#: compiles every operation on first use (0.1-0.2 s each on a small CPU), and a separate
#: plain call would compile all of them a second time to compute the same numbers
_VALUE_FROM_GRAD = frozenset({"jax"})


def _grad_tol(tol: float, method: str | None) -> float:
    return max(tol, FD_RTOL) if method == "finite differences" else tol


def _dtype_check(what: str, got: np.ndarray, dtype: str, tol: float) -> Check | None:
    if np.issubdtype(got.dtype, np.floating) and str(got.dtype) != dtype:
        return Check(what, None, tol, error=f"returned {got.dtype}, expected {dtype}",
                     against="input dtype")
    return None


def _run_case(spec: LossSpec, case: Case, st: BackendStatus, dtype: str, tol: float,
              ref: _Reference, compile_it: bool, opts: Options) -> CaseResult:
    ad = st.adapter
    assert ad is not None
    cr = CaseResult(spec.name, st.name, dtype, case.name, case.kind)
    if ref.error is not None:
        cr.error = ref.error
        return cr
    assert ref.value is not None
    want_grad = spec.differentiable and ad.differentiable and ref.value.ndim == 0
    vtol = 0.0 if spec.exact else tol
    try:
        args = [ad.from_numpy(a) for a in case.args]
        arrays = {k: ad.from_numpy(v) for k, v in case.arrays.items()}
        f = _loss_closure(spec, case, arrays)
        values = []
        if not (want_grad and st.name in _VALUE_FROM_GRAD):
            values.append(_to_numpy(st, f(*args)))
        grad = None
        if want_grad:
            v, g = ad.value_and_grad(f, *args)
            values.append(_to_numpy(st, v))
            grad = _to_numpy(st, g)
    except Exception as exc:
        cr.error = _err(exc)
        return cr
    cr.out_value, cr.out_grad = values[0], grad
    worst = max((deviation(v, ref.value) for v in values), key=lambda d: d.rel)
    cr.value = Check("value", worst, vtol, against="reference")
    bad_dtype = _dtype_check("value dtype", values[0], dtype, tol)
    if grad is not None:
        bad_dtype = bad_dtype or _dtype_check("grad dtype", grad, dtype, tol)
        if ref.grad is not None:
            cr.grad_reference = ref.method
            cr.grad = Check("grad", deviation(grad, ref.grad), _grad_tol(tol, ref.method),
                            against=f"reference ({ref.method})")
    if bad_dtype is not None:
        cr.other.append(bad_dtype)
    # a loss gives a finite answer or an error: the deviation counts inf against inf (or NaN
    # against NaN) as equal, so a reference that agrees must not turn one into a pass
    for what, got in (("value", values), ("grad", [] if grad is None else [grad])):
        if any(not np.all(np.isfinite(g)) for g in got if np.issubdtype(g.dtype, np.floating)):
            cr.other.append(Check(f"{what} finite", None, tol, error=f"non-finite {what}",
                                  against="finite"))
    if opts.peers:
        for peer in PEERS.for_loss(spec.name, st.name):
            if peer.supports(case) and not missing_requirements(peer):
                cr.peers.extend(_run_peer(peer, case, st, args, arrays, dtype, tol, cr, want_grad))
    if compile_it:
        cr.compiled.extend(_run_compiled(spec, st, f, args, ref, dtype, tol, want_grad, opts))
    return cr


def _run_peer(peer: Peer, case: Case, st: BackendStatus, args: list[Any],
              arrays: dict[str, Any], dtype: str, tol: float, cr: CaseResult,
              want_grad: bool) -> list[Check]:
    ad = st.adapter
    assert ad is not None
    ptol = 2.0 * tol  # both sides are within tol of the truth

    def f(x: Any, *rest: Any) -> Any:
        return peer.fn(x, *rest, options=case.options, arrays=arrays, dtype=dtype)

    try:
        if want_grad:
            v, g = ad.value_and_grad(f, *args)
            pv, pg = _to_numpy(st, v), _to_numpy(st, g)
        else:
            pv, pg = _to_numpy(st, f(*args)), None
    except Exception as exc:
        return [Check("peer value", None, ptol, error=_err(exc), against=peer.name)]
    known = peer.known.get(dtype)
    checks = [Check("peer value", deviation(cr.out_value, pv), ptol, against=peer.name,
                    known=known)]
    if pg is not None and cr.out_grad is not None:
        checks.append(Check("peer grad", deviation(cr.out_grad, pg), ptol, against=peer.name,
                            known=known))
    return checks


def _run_compiled(spec: LossSpec, st: BackendStatus, f: Callable[..., Any], args: list[Any],
                  ref: _Reference, dtype: str, tol: float, want_grad: bool,
                  opts: Options) -> list[Check]:
    ad = st.adapter
    assert ad is not None
    name = describe(st.name, opts.torch_compile_backend) or st.name
    try:
        cf = compile_loss(st.name, ad, f, want_grad, opts.torch_compile_backend)
        v, g = cf(*args)
        cv = _to_numpy(st, v)
        cg = None if g is None else _to_numpy(st, g)
    except Exception as exc:
        return [Check("compiled", None, tol, error=f"did not trace: {_err(exc)}", against=name)]
    vtol = 0.0 if spec.exact else tol
    checks = [Check("compiled value", deviation(cv, ref.value), vtol, against=name)]
    if cg is not None and ref.grad is not None:
        checks.append(Check("compiled grad", deviation(cg, ref.grad),
                            _grad_tol(tol, ref.method), against=name))
    return checks


def _cross(results: list[CaseResult], tol: float, exact: bool) -> None:
    """Each backend's largest deviation from any other backend on this case."""
    ok = [r for r in results if r.error is None and r.out_value is not None]
    ctol = 0.0 if exact else 2.0 * tol
    for r in ok:
        for attr, what in (("out_value", "cross-backend value"),
                           ("out_grad", "cross-backend grad")):
            mine = getattr(r, attr)
            if mine is None:
                continue
            worst: Check | None = None
            for other in ok:
                theirs = getattr(other, attr)
                if other is r or theirs is None:
                    continue
                chk = Check(what, deviation(mine, theirs), ctol, against=other.backend)
                assert chk.deviation is not None
                if worst is None or (worst.deviation is not None
                                     and chk.deviation.rel > worst.deviation.rel):
                    worst = chk
            if worst is not None:
                r.cross.append(worst)


def _compile_indices(cases: list[Case]) -> set[int]:
    """Compiled runs are costly: the first ordinary and the first masked case."""
    out: set[int] = set()
    for kind in ("ordinary", "masked"):
        for i, c in enumerate(cases):
            if c.kind == kind:
                out.add(i)
                break
    return out


def _peer_notes(available: list[str], opts: Options) -> list[str]:
    if not opts.peers:
        return ["peers: not run (--no-peers)"]
    notes = []
    needs: dict[str, set[str]] = {}
    for peer in PEERS.peers:
        if peer.backend in available:
            for m in missing_requirements(peer):
                needs.setdefault(m, set()).add(peer.backend)
    for module, backends in sorted(needs.items()):
        how = PEER_INSTALL.get(module, f"pip install {module}")
        notes.append(f"peers: {module} is not installed, its losses are not compared on "
                     f"{', '.join(sorted(backends))} ({how})")
    kb = keras_backend()
    if "keras" not in needs and kb in available and any(p.requires == ("keras",)
                                                         for p in PEERS.peers):
        notes.append(f"peers: Keras losses run under the {kb} backend (Keras's configured "
                     f"backend; set KERAS_BACKEND to compare them on another)")
    return notes


def run(opts: Options | None = None) -> Report:
    """Run the parity checks and return the :class:`~unilosses.parity.results.Report`."""
    opts = opts or Options()
    start = time.perf_counter()
    for d in opts.dtypes:
        if d not in DTYPES:
            raise ValueError(f"unknown dtype {d!r}; choose from {', '.join(DTYPES)}")
    specs = select(opts.losses)
    names = list(opts.backends) if opts.backends is not None else list(KNOWN_BACKENDS)
    for n in names:
        if n not in KNOWN_BACKENDS:
            raise ValueError(f"unknown backend {n!r}; known backends: "
                             f"{', '.join(KNOWN_BACKENDS)}")
    if opts.jax_cache_dir and "jax" in names:
        use_jax_cache(opts.jax_cache_dir)
    statuses = [probe(n) for n in names]
    available = [s for s in statuses if s.available]
    if opts.compile and any(s.name == "torch" for s in available):
        # a misspelt backend failed each loss's compiled run, exit 1 after the whole run
        from torch._dynamo import list_backends

        known = list_backends(exclude_tags=())
        if opts.torch_compile_backend not in known:
            raise ValueError(f"unknown --torch-compile-backend {opts.torch_compile_backend!r}; "
                             f"torch.compile's backends: {', '.join(known)}")
    rows: list[Row] = []
    for dtype in opts.dtypes:
        tol = tolerance(dtype)
        for spec in specs:
            if opts.progress is not None:
                opts.progress(f"{dtype} {spec.name}")
            cases = spec.make_cases(opts.seed)
            to_compile = _compile_indices(cases) if opts.compile else set()
            per_backend: dict[str, list[CaseResult]] = {s.name: [] for s in available}
            for i, case in enumerate(cases):
                cast = case.cast(dtype)
                ref = _reference(spec, cast.widened(), dtype, spec.differentiable)
                found = []
                for st in available:
                    compile_it = i in to_compile and st.name in COMPILERS
                    cr = _run_case(spec, cast, st, dtype, tol, ref, compile_it, opts)
                    per_backend[st.name].append(cr)
                    found.append(cr)
                _cross(found, tol, spec.exact)
            for st in available:
                rows.append(Row(spec.name, st.name, dtype, tol, per_backend[st.name],
                                compile_checked=opts.compile and st.name in COMPILERS))
    compilers = {}
    if opts.compile:
        compilers = {s.name: describe(s.name, opts.torch_compile_backend) or ""
                     for s in available if s.name in COMPILERS}
    return Report(
        seed=opts.seed, dtypes=list(opts.dtypes), losses=[s.name for s in specs],
        backends=statuses, rows=rows,
        requested=list(opts.backends) if opts.backends is not None else None,
        compile=opts.compile, compilers=compilers,
        peer_notes=_peer_notes([s.name for s in available], opts),
        uncovered=uncovered() if opts.losses is None else [],
        tolerances=tolerance_table(opts.dtypes), elapsed=time.perf_counter() - start,
    )


def tolerance_table(dtypes: Sequence[str]) -> dict[str, Any]:
    return {
        "measure": "normwise: max|actual - expected| / max|expected| (absolute if expected is 0)",
        "per_dtype": {d: {"eps": eps(d), "tol": tolerance(d),
                          "rule": f"{EPS_MULTIPLE} * eps"} for d in dtypes},
        "value": "tol against the float64 reference (boolean results: exact)",
        "grad_analytic": "tol against the analytic float64 gradient",
        "grad_finite_differences": f"max(tol, {FD_RTOL:g}) against 4th-order central "
                                   f"differences of the float64 reference (ordinary cases)",
        "cross_backend": "2 * tol between any two backends",
        "peers": "2 * tol between unilosses and the framework's own loss, same backend",
        "compiled": "tol against the float64 reference",
    }


__all__ = ["Options", "run", "tolerance_table"]
