"""Checks that need the data's values (label ranges, probability ranges, anchor states).

They run eagerly only: while a function is being traced (``jax.jit``, ``torch.compile``,
``tf.function``) the values do not exist yet, so the checks are skipped there.  Each costs one
reduction over a comparison and one host read; turn them off for the last microseconds with
``unilosses.set_checks(False)``, the ``unilosses.checks(False)`` context manager, or the
environment variable ``UNILOSSES_CHECKS=0``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_OFF = ("0", "false", "off", "no")
_default = os.environ.get("UNILOSSES_CHECKS", "1").strip().lower() not in _OFF
_override: ContextVar[bool | None] = ContextVar("unilosses_checks", default=None)
#: while an eager call is traced into one compiled function (:mod:`._core.eager`): the
#: checks' predicates (boolean arrays, all True when the check passes), returned by that
#: function, where a traced check would otherwise be skipped
_deferred: ContextVar[list[object] | None] = ContextVar("unilosses_deferred", default=None)


def set_checks(enabled: bool) -> None:
    """Turn the value checks on or off for the whole process."""
    global _default
    _default = bool(enabled)


def checks_enabled() -> bool:
    """Whether value checks run (the innermost :func:`checks` context wins)."""
    o = _override.get()
    return _default if o is None else o


@contextmanager
def checks(enabled: bool) -> Iterator[None]:
    """Run the body with value checks on or off, restoring the previous state afterwards.

    The setting is a context variable: it holds in this thread (or asyncio task) only, and
    threads started inside the body do not inherit it; :func:`set_checks` sets the process's
    default."""
    token = _override.set(bool(enabled))
    try:
        yield
    finally:
        _override.reset(token)


def deferred() -> list[object] | None:
    """The list a traced check appends its predicate to, or None (the check is skipped)."""
    return _deferred.get() if checks_enabled() else None


@contextmanager
def deferring(collect: bool = True) -> Iterator[list[object] | None]:
    """Collect the predicates of the checks traced in the body (see :func:`deferred`); with
    ``collect=False``, skip them, whatever an enclosing body collects (its list would get
    another trace's values)."""
    found: list[object] | None = [] if collect else None
    token = _deferred.set(found)
    try:
        yield found
    finally:
        _deferred.reset(token)
