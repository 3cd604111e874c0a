"""Users' own losses in the parity report: ``unilosses parity --module mypkg.losses``.

Importing the module may register :class:`~unilosses.parity.cases.LossSpec` objects itself
(with a hand-written reference).  Every ``@unilosses.loss`` function found in the module that
is not registered yet gets a spec too: its inputs are standard normal arrays (plus a masked
case with NaN under the mask), the value reference is the loss itself on float64 NumPy, and
the gradient reference is finite differences of that.  Such a spec checks that every backend
agrees with NumPy in float64, not that the formula is right.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np

from .cases import REGISTRY, SHAPE, Case, LossSpec, register


def _array_count(fn: Any) -> int:
    params = inspect.signature(fn).parameters.values()
    return sum(p.kind is inspect.Parameter.POSITIONAL_ONLY for p in params)


def spec_for(name: str, fn: Any) -> LossSpec:
    """A parity spec for the ``@unilosses.loss`` function ``fn``."""
    n = _array_count(fn)

    def value(*args: Any, dtype: str, **kwargs: Any) -> Any:
        return np.asarray(fn(*(np.asarray(a, np.float64) for a in args), **kwargs), np.float64)

    def cases(rng: np.random.Generator) -> list[Case]:
        args = tuple(rng.normal(size=SHAPE) for _ in range(n))
        where = rng.random(SHAPE) < 0.7
        where.flat[0], where.flat[1] = True, False
        masked = (np.where(where, args[0], np.nan),) + args[1:]
        return [
            Case("ordinary", args),
            Case("reduction sum", args, {"reduction": "sum"}),
            Case("masked", masked, {}, {"where": where}, kind="masked"),
        ]

    # a user's loss may curve on a small scale (a Charbonnier's eps): start the differences
    # small
    return LossSpec(name=name, fn=fn, value=value, cases=cases, fd_step=3e-3)


def load_module(path: str) -> list[str]:
    """Import ``path`` and register its losses; returns the names registered from it."""
    before = set(REGISTRY)
    module = importlib.import_module(path)
    for attr, obj in vars(module).items():
        if attr.startswith("_") or not hasattr(obj, "__wrapped_loss__"):
            continue
        name = f"{path}.{attr}"
        if name not in REGISTRY and not any(s.fn is obj for s in REGISTRY.values()):
            register(spec_for(name, obj))
    return [n for n in REGISTRY if n not in before]
