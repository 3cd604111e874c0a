"""Rendering a :class:`~unilosses.parity.results.Report`: terminal table, Markdown, JSON."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable
from typing import Any

from .. import __version__
from .results import Check, Report, Row
from .tolerance import FD_RTOL, Deviation

COLUMNS = ("loss", "backend", "value rel", "value abs", "grad rel", "grad abs", "grad ref",
           "x-backend", "peers (framework's own loss: rel)", "compiled", "status")

_GRAD_REF = {"analytic": "analytic", "finite differences": "fd"}


def _num(x: float) -> str:
    if x == 0.0:
        return "0"
    if x != x or x in (float("inf"), float("-inf")):
        return str(x)
    return f"{x:.1e}"


def _dev(d: Deviation | None, attr: str, ok: bool) -> str:
    if d is None:
        return "-"
    return _num(getattr(d, attr)) + ("" if ok else "!")


def _peer_cells(row: Row) -> list[str]:
    out = []
    for p in row.peer_summaries():
        worst = max((d.rel for d in (p.value, p.grad) if d is not None), default=None)
        text = p.name + " " + ("error" if p.errors else _num(worst) if worst is not None else "-")
        if p.known:
            text += " (known)"
        elif not p.ok:
            text += "!"
        out.append(text)
    return out or ["-"]


def _status(row: Row) -> str:
    if row.errors:
        return "ERROR"
    return "ok" if row.ok else "FAIL"


def row_cells(row: Row) -> list[list[str]]:
    """The cells of a row; the peers column may span several lines."""
    refs = "+".join(_GRAD_REF.get(r, r) for r in row.grad_references) or "-"
    first = [
        row.loss, row.backend,
        _dev(row.value, "rel", row.value_ok), _dev(row.value, "abs", row.value_ok),
        _dev(row.grad, "rel", row.grad_ok), _dev(row.grad, "abs", row.grad_ok),
        refs if row.grad is not None else "-",
        _dev(row.cross, "rel", row.cross_ok),
    ]
    peers = _peer_cells(row)
    compiled = row.compile_status
    if compiled in ("ok", "FAIL") and row.compiled is not None:
        compiled = f"{compiled} {_num(row.compiled.rel)}"
    lines = [first + [peers[0], compiled, _status(row)]]
    for extra in peers[1:]:
        lines.append([""] * 8 + [extra, "", ""])
    return lines


def _dtype_header(report: Report, dtype: str) -> str:
    t = report.tolerances["per_dtype"][dtype]
    fd = max(t["tol"], FD_RTOL)
    return (f"{dtype}: tol = {t['rule']} = {t['tol']:.2e}  (x-backend and peers: 2 tol; "
            f"gradients against finite differences: {fd:.0e})")


def _backend_lines(report: Report) -> list[str]:
    lines = []
    width = max((len(b.name) for b in report.backends), default=0)
    for b in report.backends:
        if b.available:
            lines.append(f"  {b.name:<{width}}  {b.version or ''}")
        elif b.install is not None:
            lines.append(f"  {b.name:<{width}}  not installed: {b.install}")
        else:
            lines.append(f"  {b.name:<{width}}  {b.reason}  (a failure)")
    return lines


def _failure_lines(report: Report, limit: int = 40) -> list[str]:
    lines = []
    for row, case, chk in report.failures():
        where = f"{row.loss} / {row.backend} / {row.dtype} / case {case.case!r}"
        if chk is None:
            lines.append(f"{where}: raised {case.error}")
        else:
            lines.append(f"{where}: {_describe(chk)}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more (see --json)"]
    return lines


def _describe(chk: Check) -> str:
    if chk.error is not None:
        return f"{chk.what} against {chk.against}: {chk.error}"
    d = chk.deviation
    assert d is not None
    return (f"{chk.what} deviates from {chk.against}: rel {_num(d.rel)} (abs {_num(d.abs)}) "
            f"> tol {_num(chk.tol)}")


def _summary(report: Report) -> str:
    checks = sum(len(c.checks()) for r in report.rows for c in r.cases)
    failed = len(report.failures())
    if report.exit_code == 0:
        return (f"PASS: {len(report.rows)} loss x backend x dtype rows, {checks} comparisons "
                f"within tolerance ({report.elapsed:.1f} s)")
    if report.exit_code == 3:
        names = ", ".join(b.name for b in report.missing_requested)
        return f"INCOMPLETE: requested backend(s) not installed: {names} (exit 3)"
    broken = ", ".join(b.name for b in report.broken)
    extra = f"; backend(s) failed to load: {broken}" if broken else ""
    return f"FAIL: {failed} of {checks} comparisons out of tolerance or raising{extra} (exit 1)"


def _title(report: Report) -> str:
    return (f"unilosses {__version__} parity report: seed {report.seed}, "
            f"dtypes {', '.join(report.dtypes)}, {len(report.losses)} losses")


def _intro(report: Report) -> list[str]:
    """What was compared with what, one sentence a line."""
    lines = [
        "reference: independent float64 NumPy formulas (unilosses.parity.references) on the "
        "inputs as each dtype holds them; gradients (w.r.t. predictions/logits) analytic, or "
        "Ridders finite differences (fd) of the reference on smooth cases",
        "deviation: max|got - expected| / max|expected| (normwise relative), worst over cases; "
        "'!' marks one over tolerance",
    ]
    for name, how in report.compilers.items():
        lines.append(f"compiled: {name} under {how} (ordinary and masked cases)")
    lines += list(report.peer_notes)
    if report.uncovered:
        lines.append(f"not checked (public losses with no parity spec registered in "
                     f"unilosses.parity.cases): {', '.join(report.uncovered)}")
    return lines


def _header_lines(report: Report) -> list[str]:
    intro = [w for line in _intro(report)
             for w in textwrap.wrap(line, 100, subsequent_indent="    ")]
    return [_title(report), *intro, "backends:", *_backend_lines(report)]


def _table(rows: list[list[str]], headers: Iterable[str]) -> list[str]:
    headers = list(headers)
    widths = [len(h) for h in headers]
    for r in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, r)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [fmt.format(*headers), fmt.format(*("-" * w for w in widths))]
    out.extend(fmt.format(*r).rstrip() for r in rows)
    return out


def _known_lines(report: Report) -> list[str]:
    """Documented peer differences that showed up, once each."""
    seen: dict[tuple[str, str], str] = {}
    for r in report.rows:
        for p in r.peer_summaries():
            if p.known:
                seen.setdefault((p.name, r.dtype), p.known)
    return [f"{name} ({dtype}): {why}" for (name, dtype), why in seen.items()]


def render_text(report: Report) -> str:
    lines = _header_lines(report)
    for dtype in report.dtypes:
        rows = [r for r in report.rows if r.dtype == dtype]
        if not rows:
            continue
        lines += ["", _dtype_header(report, dtype)]
        cells = [line for r in rows for line in row_cells(r)]
        lines += _table(cells, COLUMNS)
    known = _known_lines(report)
    if known:
        lines += ["", "known differences of peers (shown, not failed):"]
        lines += ["  " + k for k in known]
    fails = _failure_lines(report)
    if fails:
        lines += ["", "out of tolerance:"] + ["  " + f for f in fails]
    lines += ["", _summary(report)]
    return "\n".join(lines) + "\n"


def render_summary(report: Report) -> str:
    """Missing backends, failures and the verdict: what a terminal needs when the report goes
    to a file."""
    lines = [f"{b.name}: {b.reason}" + (f" ({b.install})" if b.install else "")
             for b in report.missing]
    if report.uncovered:
        lines.append(f"not checked (no parity spec): {', '.join(report.uncovered)}")
    fails = _failure_lines(report)
    if fails:
        lines += ["out of tolerance:"] + ["  " + f for f in fails]
    lines.append(_summary(report))
    return "\n".join(lines) + "\n"


def _md_escape(s: str) -> str:
    return s.replace("|", "\\|")


def render_markdown(report: Report) -> str:
    lines = [f"# {_title(report)}", ""] + [f"- {line}" for line in _intro(report)]
    lines += ["", "## Backends", ""]
    for b in report.backends:
        if b.available:
            lines.append(f"- **{b.name}** {b.version or ''}")
        elif b.install is not None:
            lines.append(f"- **{b.name}**: not installed (`{b.install}`)")
        else:
            lines.append(f"- **{b.name}**: {b.reason} (a failure)")
    for dtype in report.dtypes:
        rows = [r for r in report.rows if r.dtype == dtype]
        if not rows:
            continue
        lines += ["", f"## {_dtype_header(report, dtype)}", ""]
        lines.append("| " + " | ".join(COLUMNS) + " |")
        lines.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        for r in rows:
            cells = row_cells(r)
            merged = list(cells[0])
            merged[8] = "<br>".join(c[8] for c in cells)
            lines.append("| " + " | ".join(_md_escape(c) for c in merged) + " |")
    known = _known_lines(report)
    if known:
        lines += ["", "## Known differences of peers (shown, not failed)", ""]
        lines += [f"- {_md_escape(k)}" for k in known]
    fails = _failure_lines(report)
    if fails:
        lines += ["", "## Out of tolerance", ""] + [f"- {_md_escape(f)}" for f in fails]
    lines += ["", f"**{_summary(report)}**", ""]
    return "\n".join(lines)


def render_json(report: Report) -> str:
    return json.dumps(report.as_dict(), indent=2, default=_jsonable) + "\n"


def _jsonable(x: Any) -> Any:
    return str(x)


__all__ = ["COLUMNS", "render_json", "render_markdown", "render_summary", "render_text",
           "row_cells"]
