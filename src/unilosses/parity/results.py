"""What a parity run found: per case, per loss x backend x dtype row, and the whole report."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends import BackendStatus
from .tolerance import Deviation


@dataclass
class Check:
    """One comparison: a deviation against a tolerance (or an error instead of a result)."""

    what: str                 # "value", "grad", "cross-backend value", "peer F.mse_loss grad"...
    deviation: Deviation | None
    tol: float
    error: str | None = None
    against: str = ""         # what it was compared with ("reference", "torch", ...)
    #: a documented difference (of a peer): reported, never a failure
    known: str | None = None

    @property
    def within(self) -> bool:
        return self.error is None and (self.deviation is None or self.deviation.within(self.tol))

    @property
    def ok(self) -> bool:
        return self.known is not None or self.within

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"what": self.what, "against": self.against, "tol": self.tol,
                             "ok": self.ok}
        if self.deviation is not None:
            d.update(self.deviation.as_dict())
        if self.error is not None:
            d["error"] = self.error
        if self.known is not None:
            d["known"] = self.known
            d["within"] = self.within
        return d


@dataclass
class CaseResult:
    """One loss on one backend in one dtype on one case."""

    loss: str
    backend: str
    dtype: str
    case: str
    kind: str
    #: how the gradient reference was obtained: "analytic", "finite differences" or None
    grad_reference: str | None = None
    value: Check | None = None
    grad: Check | None = None
    cross: list[Check] = field(default_factory=list)
    peers: list[Check] = field(default_factory=list)
    compiled: list[Check] = field(default_factory=list)
    #: anything else that must hold (the result's dtype)
    other: list[Check] = field(default_factory=list)
    error: str | None = None
    # raw outputs, for the cross-backend comparison (not serialised)
    out_value: np.ndarray | None = field(default=None, repr=False)
    out_grad: np.ndarray | None = field(default=None, repr=False)

    def checks(self) -> list[Check]:
        own = [c for c in (self.value, self.grad) if c is not None]
        return own + self.cross + self.peers + self.compiled + self.other

    @property
    def ok(self) -> bool:
        return self.error is None and all(c.ok for c in self.checks())

    def failures(self) -> list[Check]:
        return [c for c in self.checks() if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        return {
            "case": self.case, "kind": self.kind, "ok": self.ok, "error": self.error,
            "grad_reference": self.grad_reference,
            "value": None if self.value is None else self.value.as_dict(),
            "grad": None if self.grad is None else self.grad.as_dict(),
            "cross_backend": [c.as_dict() for c in self.cross],
            "peers": [c.as_dict() for c in self.peers],
            "compiled": [c.as_dict() for c in self.compiled],
            "other": [c.as_dict() for c in self.other],
        }


def _worst(checks: list[Check]) -> Deviation | None:
    """The largest absolute and the largest relative deviation (each maximised separately)."""
    devs = [c.deviation for c in checks if c.deviation is not None]
    if not devs:
        return None
    return Deviation(max(d.abs for d in devs), max(d.rel for d in devs))


@dataclass
class PeerSummary:
    name: str
    value: Deviation | None
    grad: Deviation | None
    cases: int
    ok: bool
    #: the documented difference, where one was declared and the deviation exceeded the tol
    known: str | None = None
    errors: list[str] = field(default_factory=list)


@dataclass
class Row:
    """A loss on a backend in a dtype: the worst over its cases."""

    loss: str
    backend: str
    dtype: str
    tol: float
    cases: list[CaseResult]
    #: whether --compile was asked for and this backend has a compiler
    compile_checked: bool = False

    def _checks(self, attr: str) -> list[Check]:
        out: list[Check] = []
        for c in self.cases:
            v = getattr(c, attr)
            if isinstance(v, list):
                out.extend(v)
            elif v is not None:
                out.append(v)
        return out

    @property
    def value(self) -> Deviation | None:
        return _worst(self._checks("value"))

    @property
    def grad(self) -> Deviation | None:
        return _worst(self._checks("grad"))

    @property
    def value_ok(self) -> bool:
        return all(c.ok for c in self._checks("value"))

    @property
    def grad_ok(self) -> bool:
        return all(c.ok for c in self._checks("grad"))

    @property
    def grad_references(self) -> list[str]:
        found = {c.grad_reference for c in self.cases if c.grad_reference}
        return sorted(found)

    @property
    def cross(self) -> Deviation | None:
        return _worst(self._checks("cross"))

    @property
    def cross_ok(self) -> bool:
        return all(c.ok for c in self._checks("cross"))

    def peer_summaries(self) -> list[PeerSummary]:
        names: dict[str, list[Check]] = {}
        for c in self._checks("peers"):
            names.setdefault(c.against, []).append(c)
        out = []
        for name, checks in names.items():
            vals = [c for c in checks if c.what.endswith("value")]
            grads = [c for c in checks if c.what.endswith("grad")]
            known = next((c.known for c in checks if c.known and not c.within), None)
            errors = [c.error for c in checks if c.error]
            out.append(PeerSummary(name, _worst(vals), _worst(grads), len(vals),
                                   all(c.ok for c in checks), known, errors))
        return out

    @property
    def compile_status(self) -> str:
        """"-" not asked, "ok", "FAIL" (deviates) or "no trace" (raised while tracing)."""
        checks = self._checks("compiled")
        if not self.compile_checked or not checks:
            return "-"
        if any(c.error for c in checks):
            return "no trace"
        return "ok" if all(c.ok for c in checks) else "FAIL"

    @property
    def compiled(self) -> Deviation | None:
        return _worst(self._checks("compiled"))

    @property
    def errors(self) -> list[str]:
        return [f"{c.case}: {c.error}" for c in self.cases if c.error]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.cases)

    def failures(self) -> list[tuple[CaseResult, Check | None]]:
        out: list[tuple[CaseResult, Check | None]] = []
        for c in self.cases:
            if c.error:
                out.append((c, None))
            out.extend((c, chk) for chk in c.failures())
        return out

    def as_dict(self) -> dict[str, Any]:
        def dev(d: Deviation | None) -> Any:
            return None if d is None else d.as_dict()

        return {
            "loss": self.loss, "backend": self.backend, "dtype": self.dtype, "tol": self.tol,
            "ok": self.ok, "value": dev(self.value), "grad": dev(self.grad),
            "grad_reference": self.grad_references, "cross_backend": dev(self.cross),
            "peers": [{"name": p.name, "value": dev(p.value), "grad": dev(p.grad),
                       "cases": p.cases, "ok": p.ok, "known": p.known, "errors": p.errors}
                      for p in self.peer_summaries()],
            "compile": {"status": self.compile_status, "deviation": dev(self.compiled)},
            "errors": self.errors,
            "cases": [c.as_dict() for c in self.cases],
        }


@dataclass
class Report:
    """A whole run."""

    seed: int
    dtypes: list[str]
    losses: list[str]
    backends: list[BackendStatus]
    rows: list[Row]
    #: the backends named with --backends (a missing one of these is an error)
    requested: list[str] | None = None
    compile: bool = False
    compilers: dict[str, str] = field(default_factory=dict)
    peer_notes: list[str] = field(default_factory=list)
    #: public losses with no registered spec (not checked; listed, not failed)
    uncovered: list[str] = field(default_factory=list)
    tolerances: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def available(self) -> list[str]:
        return [b.name for b in self.backends if b.available]

    @property
    def missing(self) -> list[BackendStatus]:
        return [b for b in self.backends if not b.available]

    @property
    def missing_requested(self) -> list[BackendStatus]:
        req = self.requested or []
        return [b for b in self.missing if b.name in req]

    @property
    def broken(self) -> list[BackendStatus]:
        return [b for b in self.backends if b.broken]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows) and not self.broken

    @property
    def exit_code(self) -> int:
        """0 all within tolerance; 1 a deviation, error or broken backend; 3 a backend named
        with --backends is not installed (and nothing else failed)."""
        if not self.ok:
            return 1
        if self.missing_requested:
            return 3
        return 0

    def failures(self) -> list[tuple[Row, CaseResult, Check | None]]:
        return [(r, c, chk) for r in self.rows for c, chk in r.failures()]

    def as_dict(self) -> dict[str, Any]:
        from .. import __version__

        return {
            "unilosses": __version__,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "seed": self.seed,
            "dtypes": self.dtypes,
            "losses": self.losses,
            "compile": self.compile,
            "compilers": self.compilers,
            "tolerances": self.tolerances,
            "backends": [b.as_dict() for b in self.backends],
            "peer_notes": self.peer_notes,
            "uncovered": self.uncovered,
            "elapsed_s": round(self.elapsed, 3),
            "failures": [
                {"loss": r.loss, "backend": r.backend, "dtype": r.dtype, "case": c.case,
                 **({"error": c.error} if chk is None else chk.as_dict())}
                for r, c, chk in self.failures()
            ],
            "rows": [r.as_dict() for r in self.rows],
        }
